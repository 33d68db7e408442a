"""A TCP relay on 127.0.0.1 in front of a fake API server, to cut the line and mend it.

While cut, connections are refused and those open are dropped, as when an API becomes
unreachable; the fake behind it keeps its state (queued updates, messages) for when the line
is mended on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit


class NetSwitch:
    """Relays every connection to a target until ``cut``; ``mend`` opens the same port again."""

    def __init__(self) -> None:
        self._target_port = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """Root URL of the relay (what the bot is told the API's address is)."""
        return f"http://127.0.0.1:{self.port}"

    def in_front_of(self, fake: Any) -> None:
        """Make ``fake.start()`` (a fake server's) return the relay's address instead of its own."""
        real_start = fake.start

        async def start() -> str:
            return await self.start(await real_start())

        fake.start = start

    async def start(self, target: str) -> str:
        """Relay to ``target`` (a root URL on 127.0.0.1) from a free port; returns the relay's."""
        parts = urlsplit(target)
        assert parts.hostname == "127.0.0.1" and parts.port is not None
        self._target_port = parts.port
        await self._listen()
        return self.url

    async def _listen(self) -> None:
        # A free port the first time, the same port after a cut.
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def mend(self) -> None:
        """Answer again, on the same port."""
        await self._listen()

    async def stop(self) -> None:
        """Close everything (end of test)."""
        if self._server is not None:
            await self.cut()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w)),
            asyncio.create_task(self._pump(server_r, client_w)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._pumps.difference_update(pumps)
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        # One side closed: close the other, as a TCP connection would.
        writer.transport.abort()
