"""A fake signal-cli-rest-api on 127.0.0.1 whose routes, codes and bodies follow its swagger file.

Every request body tipline sends is validated against the swagger schemas, and every problem is
recorded in ``invalid`` (tests assert it stays empty). Receive in ``normal`` mode is a JSON
array served as text/plain that consumes messages; in ``json-rpc`` mode the same path is a
websocket only, and messages that arrive while nobody listens are lost, as in the real API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from jsonschema import Draft4Validator

SWAGGER = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "contracts"
    / "signal-cli-rest-api.swagger.json"
)
NUMBER = "+15550001000"


def load_swagger() -> dict[str, Any] | None:
    """The contract, or None when ``../shared/contracts`` is not beside the checkout."""
    if not SWAGGER.exists():
        return None
    data: dict[str, Any] = json.loads(SWAGGER.read_text())
    return data


@dataclass
class FakeSignalApi:
    """State of the fake; tests act as Signal users and inspect what tipline did."""

    mode: str = "normal"
    number: str = NUMBER
    inbox: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)
    deleted_attachments: list[str] = field(default_factory=list)
    expirations: dict[str, int] = field(default_factory=dict)
    #: Remote deletes tipline sent: (recipient, timestamp of the deleted message).
    remote_deleted: list[tuple[str, int]] = field(default_factory=list)
    trusted: list[str] = field(default_factory=list)
    untrusted: set[str] = field(default_factory=set)
    fail_sends: list[int] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    runner: web.AppRunner | None = None
    clock_ms: int = 1_770_000_000_000
    #: Called with (method, path) as each request arrives (crash tests time kills with it).
    on_request: Callable[[str, str], None] | None = None
    #: Called with the number of messages a normal-mode receive hands over (and so consumes).
    on_handover: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        self.swagger = load_swagger()
        self._arrived = asyncio.Event()

    # ---- server --------------------------------------------------------------------------

    async def start(self) -> str:
        @web.middleware
        async def observe(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if self.on_request is not None:
                self.on_request(request.method, request.path)
            return await handler(request)

        app = web.Application(client_max_size=30 * 1024 * 1024, middlewares=[observe])
        app.router.add_get("/v1/about", self._about)
        app.router.add_post("/v2/send", self._send)
        app.router.add_get("/v1/receive/{number}", self._receive)
        app.router.add_get("/v1/attachments/{id}", self._attachment)
        app.router.add_delete("/v1/attachments/{id}", self._delete_attachment)
        app.router.add_put("/v1/contacts/{number}", self._contacts)
        app.router.add_delete("/v1/remote-delete/{number}", self._remote_delete)
        app.router.add_get("/v1/identities/{number}", self._identities)
        app.router.add_put("/v1/identities/{number}/trust/{other}", self._trust)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for socket in list(self.sockets):
            await socket.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def _validate(self, definition: str, body: Any) -> None:
        if self.swagger is None:
            return
        schema = {"$ref": f"#/definitions/{definition}", "definitions": self.swagger["definitions"]}
        for error in Draft4Validator(schema).iter_errors(body):
            self.invalid.append(f"{definition}: {error.message}")

    @staticmethod
    def _error(status: int, message: str, **extra: Any) -> web.Response:
        return web.json_response({"error": message, **extra}, status=status)

    async def _body(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            self.invalid.append(f"{request.path}: body is not JSON")
            return None

    def _check_number(self, request: web.Request) -> web.Response | None:
        if request.match_info.get("number", self.number) != self.number:
            return self._error(400, "User +1 is not registered.")
        return None

    # ---- routes --------------------------------------------------------------------------

    async def _about(self, request: web.Request) -> web.Response:
        self.calls.append(("GET", "/v1/about"))
        mode = "json-rpc" if self.mode == "json-rpc" else "normal"
        return web.json_response(
            {
                "build": 2,
                "capabilities": {"v2/send": ["quotes", "mentions"]},
                "mode": mode,
                "version": "0.92",
                "versions": ["v1", "v2"],
            }
        )

    async def _send(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.calls.append(("POST", "/v2/send"))
        self._validate("api.SendMessageV2", body)
        if not isinstance(body, dict) or body.get("number") != self.number:
            return self._error(400, "Invalid account")
        if self.fail_sends:
            status = self.fail_sends.pop(0)
            if status == 429:
                return self._error(
                    429, "Rate limit exceeded", account=self.number, challenge_tokens=["tok-1"]
                )
            return self._error(status, "Internal error")
        recipients = body.get("recipients") or []
        blocked = [r for r in recipients if r in self.untrusted]
        if blocked:
            return self._error(
                400,
                f'Failed to send message: Untrusted Identity for "{blocked[0]}"',
                account=self.number,
            )
        self.clock_ms += 1
        attachments = list(body.get("base64_attachments") or [])
        for recipient in recipients:
            self.sent.append(
                {
                    "to": recipient,
                    "text": body.get("message", ""),
                    "attachments": attachments,
                    "timestamp": self.clock_ms,
                }
            )
        return web.json_response({"timestamp": str(self.clock_ms)}, status=201)

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        if (error := self._check_number(request)) is not None:
            return error
        if self.mode == "json-rpc":
            socket = web.WebSocketResponse()
            if not socket.can_prepare(request).ok:
                return self._error(400, "Only websocket connections are supported in json-rpc mode")
            await socket.prepare(request)
            self.sockets.append(socket)
            self.calls.append(("WS", "/v1/receive"))
            try:
                async for message in socket:
                    if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
            finally:
                self.sockets.remove(socket)
            return socket
        self.calls.append(("GET", "/v1/receive"))
        wait = min(float(request.query.get("timeout", "0") or 0), 2.0)
        if not self.inbox and wait > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the client went away: leave the messages queued
        messages, self.inbox = self.inbox, []
        if messages and self.on_handover is not None:
            self.on_handover(len(messages))
        return web.Response(text=json.dumps(messages), content_type="text/plain")

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.attachments.get(request.match_info["id"])
        if data is None:
            return self._error(400, "Attachment not found")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _delete_attachment(self, request: web.Request) -> web.Response:
        attachment_id = request.match_info["id"]
        if self.attachments.pop(attachment_id, None) is None:
            return self._error(400, "Attachment not found")
        self.deleted_attachments.append(attachment_id)
        return web.Response(status=204)

    async def _contacts(self, request: web.Request) -> web.Response:
        if (error := self._check_number(request)) is not None:
            return error
        body = await self._body(request)
        self._validate("api.UpdateContactRequest", body)
        if isinstance(body, dict) and "expiration_in_seconds" in body:
            self.expirations[str(body.get("recipient"))] = int(body["expiration_in_seconds"])
        return web.Response(status=204)

    async def _remote_delete(self, request: web.Request) -> web.Response:
        if (error := self._check_number(request)) is not None:
            return error
        body = await self._body(request)
        self._validate("api.RemoteDeleteRequest", body)
        if not isinstance(body, dict):
            return self._error(400, "Couldn't process request - invalid request")
        recipient, timestamp = body.get("recipient"), body.get("timestamp")
        if not any(m["to"] == recipient and m["timestamp"] == timestamp for m in self.sent):
            return self._error(400, "Failed to delete message: message not found")
        self.remote_deleted.append((str(recipient), int(timestamp)))
        self.clock_ms += 1
        return web.json_response({"timestamp": str(self.clock_ms)}, status=201)

    async def _identities(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _trust(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self._validate("api.TrustIdentityRequest", body)
        other = request.match_info["other"]
        self.untrusted.discard(other)
        self.trusted.append(other)
        return web.Response(status=204)

    # ---- users ---------------------------------------------------------------------------

    def envelope(
        self,
        uuid: str,
        text: str | None,
        number: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A received message as signal-cli-rest-api hands it over."""
        self.clock_ms += 1
        data: dict[str, Any] = {
            "timestamp": self.clock_ms,
            "expiresInSeconds": 0,
            "viewOnce": False,
        }
        if text is not None:
            data["message"] = text
        if attachments:
            data["attachments"] = attachments
        envelope = {
            "source": number or uuid,
            "sourceNumber": number,
            "sourceUuid": uuid,
            "sourceName": "Reporter",
            "sourceDevice": 1,
            "timestamp": self.clock_ms,
            "serverReceivedTimestamp": self.clock_ms,
            "serverDeliveredTimestamp": self.clock_ms,
            "dataMessage": data,
        } | extra
        message = {"envelope": envelope, "account": self.number}
        self._validate(
            "data.Message",
            {k: v for k, v in message.items()}
            | {"envelope": {k: v for k, v in envelope.items() if v is not None}},
        )
        return message

    async def deliver(self, message: dict[str, Any]) -> None:
        """A message arrives at signal-cli for tipline's number."""
        if self.mode == "json-rpc":
            if not self.sockets:
                self.dropped += 1  # nobody listening: lost, as in the real json-rpc mode
                return
            for socket in self.sockets:
                await socket.send_str(json.dumps(message))
            return
        self.inbox.append(message)
        self._arrived.set()

    def attach(self, data: bytes, content_type: str, filename: str = "photo.jpg") -> dict[str, Any]:
        attachment_id = f"att{len(self.attachments)}{int(time.time() * 1000) % 1000}"
        self.attachments[attachment_id] = data
        return {
            "id": attachment_id,
            "contentType": content_type,
            "filename": filename,
            "size": len(data),
        }

    def to(self, uuid: str) -> list[str]:
        """Texts sent to one recipient."""
        return [m["text"] for m in self.sent if m["to"] == uuid]

    def visible(self, uuid: str) -> list[str]:
        """Texts sent to one recipient and not deleted remotely since."""
        gone = {t for r, t in self.remote_deleted if r == uuid}
        return [m["text"] for m in self.sent if m["to"] == uuid and m["timestamp"] not in gone]
