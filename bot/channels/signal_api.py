"""A typed httpx client for the parts of signal-cli-rest-api tipline uses.

The contract is ``shared/contracts/signal-cli-rest-api.swagger.json``. Phone numbers and UUIDs
pass through here but are never logged.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import websockets


class SignalApiError(Exception):
    """A call failed; ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, *, status: int = 0, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class UntrustedIdentity(SignalApiError):
    """The recipient's safety number changed; nothing was sent."""


class RateLimited(SignalApiError):
    """Signal asks us to slow down (and may want a captcha challenge solved)."""

    def __init__(self, message: str, challenge_tokens: list[str]) -> None:
        super().__init__(message, status=429, retryable=True)
        self.challenge_tokens = challenge_tokens


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", "")) if isinstance(body, dict) else ""


class SignalApi:
    """signal-cli-rest-api for one registered number."""

    def __init__(self, base_url: str, number: str, http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.number = number
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self._url(path), **kwargs)
        except httpx.HTTPError as exc:
            raise SignalApiError(f"signal api unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise SignalApiError("signal api server error", status=response.status_code)
        return response

    async def send(self, recipient: str, message: str, attachments: Sequence[str] = ()) -> str:
        """``POST /v2/send`` to one recipient (``attachments``: data URIs); Signal's timestamp."""
        body: dict[str, Any] = {
            "message": message,
            "number": self.number,
            "recipients": [recipient],
        }
        if attachments:
            body["base64_attachments"] = list(attachments)
        response = await self._call("POST", "/v2/send", json=body)
        if response.status_code == 429:
            tokens: list[str] = []
            with contextlib.suppress(ValueError):
                tokens = list(response.json().get("challenge_tokens") or [])
            raise RateLimited("rate limited by signal", tokens)
        if response.status_code != 201:
            text = _error_text(response)
            if "untrusted identity" in text.lower():
                raise UntrustedIdentity("untrusted identity", status=400, retryable=False)
            raise SignalApiError("send refused", status=response.status_code, retryable=False)
        data = response.json()
        errors = data.get("errors") if isinstance(data, dict) else None
        if errors:
            raise SignalApiError("send failed for the recipient", status=201)
        return str(data["timestamp"])

    async def receive(self, wait_seconds: int = 1) -> list[dict[str, Any]]:
        """``GET /v1/receive/{number}`` in normal mode: a JSON array sent as text/plain."""
        response = await self._call(
            "GET",
            f"/v1/receive/{quote(self.number)}",
            params={"timeout": str(wait_seconds)},
            timeout=wait_seconds + 30,
        )
        if response.status_code != 200:
            raise SignalApiError("receive refused", status=response.status_code)
        data = json.loads(response.text or "[]")
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    async def receive_ws(self) -> AsyncIterator[dict[str, Any]]:
        """The same path as a websocket (json-rpc mode): messages as they arrive."""
        parts = urlsplit(self._url(f"/v1/receive/{quote(self.number)}"))
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
        async with websockets.connect(url, open_timeout=10) as socket:
            async for raw in socket:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    yield message

    async def attachment(self, attachment_id: str) -> bytes:
        """``GET /v1/attachments/{id}``."""
        response = await self._call("GET", f"/v1/attachments/{quote(attachment_id)}")
        if response.status_code != 200:
            raise SignalApiError("attachment missing", status=response.status_code, retryable=False)
        return response.content

    async def delete_attachment(self, attachment_id: str) -> None:
        """``DELETE /v1/attachments/{id}``: nothing stays on the signal-cli server."""
        await self._call("DELETE", f"/v1/attachments/{quote(attachment_id)}")

    async def remote_delete(self, recipient: str, timestamp: int) -> None:
        """``DELETE /v1/remote-delete/{number}``: delete a message we sent, on their phone too."""
        body = {"recipient": recipient, "timestamp": timestamp}
        response = await self._call("DELETE", f"/v1/remote-delete/{quote(self.number)}", json=body)
        if response.status_code == 429:
            raise RateLimited("rate limited by signal", [])
        if response.status_code not in (200, 201, 204):
            raise SignalApiError(
                "remote delete refused", status=response.status_code, retryable=False
            )

    async def set_disappearing(self, recipient: str, seconds: int) -> None:
        """``PUT /v1/contacts/{number}`` with ``expiration_in_seconds``."""
        body = {"recipient": recipient, "expiration_in_seconds": seconds}
        await self._call("PUT", f"/v1/contacts/{quote(self.number)}", json=body)

    async def trust(self, recipient: str) -> None:
        """``PUT /v1/identities/{number}/trust/{recipient}``: accept its current keys (TOFU)."""
        await self._call(
            "PUT",
            f"/v1/identities/{quote(self.number)}/trust/{quote(recipient)}",
            json={"trust_all_known_keys": True},
        )
