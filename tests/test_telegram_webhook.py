"""The webhook server (bot/channels/telegram_webhook.py) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import aiohttp
import pytest

from bot.channels.telegram_webhook import SECRET_HEADER, WebhookServer

SECRET = "s3cret-token_1"
UPDATE = {"update_id": 7, "message": {"message_id": 1, "chat": {"id": 1, "type": "private"}}}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Store:
    """What the channel's durable queue would do: keep each update, or fail on demand."""

    def __init__(self) -> None:
        self.kept: list[dict[str, Any]] = []
        self.failing = False
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def accept(self, update: dict[str, Any]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise OSError("disk full")
        self.kept.append(update)


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


async def test_only_a_delivery_with_the_secret_and_an_update_is_kept() -> None:
    store, port = Store(), _port()
    server = WebhookServer("tg-hook", SECRET, store.accept)
    await server.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/tg-hook"
    good = {"Content-Type": "application/json", SECRET_HEADER: SECRET}
    body = json.dumps(UPDATE).encode()
    try:
        assert await _post(url, body, good) == 200
        assert store.kept == [UPDATE]  # as sent, not rebuilt from PTB's objects
        refused = [
            (body, {"Content-Type": "application/json"}),  # no secret
            (body, good | {SECRET_HEADER: SECRET + "x"}),  # a wrong one
            (body, good | {SECRET_HEADER: SECRET[:-1]}),  # a prefix of it
        ]
        for data, headers in refused:
            assert await _post(url, data, headers) == 403
        assert await _post(url, body, good | {"Content-Type": "text/plain"}) == 415
        for bad in (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"update_id": "7"}', b"{}"):
            assert await _post(url, bad, good) == 400
        assert await _post(url, b'{"update_id": true}', good) == 400
        too_big = json.dumps(UPDATE | {"pad": "x" * 2_000_000}).encode()
        assert await _post(url, too_big, good) == 413
        assert await _post(f"http://127.0.0.1:{port}/other", body, good) == 404
        assert store.kept == [UPDATE]
    finally:
        await server.stop()


async def test_a_delivery_is_answered_only_once_stored_and_500_when_storing_fails() -> None:
    store, port = Store(), _port()
    store.gate = asyncio.Event()
    server = WebhookServer("/hook", SECRET, store.accept)
    await server.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/hook"
    good = {"Content-Type": "application/json", SECRET_HEADER: SECRET}
    try:
        answer = asyncio.create_task(_post(url, json.dumps(UPDATE).encode(), good))
        await store.entered.wait()  # the server has the update and waits for the store
        assert not answer.done()
        store.gate.set()
        assert await answer == 200
        store.failing = True  # Telegram keeps an update it got no 2xx for, and sends it again
        assert await _post(url, json.dumps(UPDATE).encode(), good) == 500
        assert store.kept == [UPDATE]
    finally:
        await server.stop()


def test_a_webhook_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookServer("hook", "", Store().accept)


async def test_the_answer_carries_the_call_accept_returns() -> None:
    port = _port()
    call = {"method": "answerCallbackQuery", "callback_query_id": "5"}

    async def accept(update: dict[str, Any]) -> dict[str, Any] | None:
        return call if "callback_query" in update else None

    server = WebhookServer("hook", SECRET, accept)
    await server.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/hook"
    good = {"Content-Type": "application/json", SECRET_HEADER: SECRET}
    press = {"update_id": 8, "callback_query": {"id": "5", "data": "c:yes"}}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=json.dumps(press), headers=good) as r:
                assert r.status == 200 and r.content_type == "application/json"
                assert await r.json() == call
            async with session.post(url, data=json.dumps(UPDATE), headers=good) as r:
                assert r.status == 200 and await r.read() == b""
    finally:
        await server.stop()


async def test_a_secret_header_that_is_not_utf8_is_refused_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, port = Store(), _port()
    server = WebhookServer("hook", SECRET, store.accept)
    await server.start("127.0.0.1", port)
    body = json.dumps(UPDATE).encode()
    request = (
        b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + SECRET_HEADER.encode()
        + b": \xff\xfe"
        + SECRET.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    try:
        with caplog.at_level(logging.WARNING):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            await writer.wait_closed()
        assert status_line.split()[1] == b"403"
        assert store.kept == [] and not caplog.records
    finally:
        await server.stop()
