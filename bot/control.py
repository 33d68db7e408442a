"""The control socket of ``tipline run``: one JSON line in, one JSON line out, over a Unix socket.

Requests are ``{"op": "status"}``, ``{"op": "unlock", "passphrase": "..."}``, ``{"op": "lock"}``
and ``{"op": "wipe"}``; answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
The socket is mode 0600 in a 0700 directory, and the server also checks each peer's uid
(SO_PEERCRED): only the service's own user and root are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The longest request line accepted (a passphrase fits many times over).
MAX_LINE = 64 * 1024
#: A client that sends nothing for this long is dropped.
READ_TIMEOUT = 30.0
#: ``sun_path`` holds 108 bytes with the terminating NUL.
MAX_PATH_BYTES = 107

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The control socket cannot be used; the message is one clear line."""


class NotRunning(ControlError):
    """Nothing listens on the control socket."""


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_allowed(uid: int) -> bool:
    """Only the service's own user and root may unlock, lock, wipe or ask."""
    return uid in (os.getuid(), 0)


def _check_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ControlError(
            f"the control socket path {path} is too long for a Unix socket "
            f"(at most {MAX_PATH_BYTES} bytes): set TIPLINE_CONTROL_SOCKET to a shorter path"
        )


async def _answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ControlServer:
    """Serves the control socket; each connection is one request and one answer."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self.refused = 0

    async def start(self) -> None:
        """Bind the socket (replacing one a crash left behind), owner-only."""
        _check_path(self.path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise ControlError(
                    f"{self.path} exists and is not a socket: remove it or set "
                    "TIPLINE_CONTROL_SOCKET"
                )
            if await _answers(self.path):
                raise ControlError(f"another tipline is already running on {self.path}")
            log.info("control socket: replacing one left over from a crash")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino

    @property
    def listening(self) -> bool:
        """Whether the socket is bound and answering."""
        return self._server is not None

    async def close(self) -> None:
        """Stop listening and remove the socket file (if it is still ours)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        await self._server.wait_closed()
        self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if not peer_allowed(uid):
                self.refused += 1
                log.warning("control socket: refused a connection from another user")
                await self._answer(
                    writer, {"ok": False, "error": "refused: not this service's user"}
                )
                return
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                request = json.loads(line)
            except (TimeoutError, ValueError, ConnectionError):
                await self._answer(writer, {"ok": False, "error": "bad request"})
                return
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                await self._answer(writer, {"ok": False, "error": "bad request"})
                return
            await self._answer(writer, await self._handler(request))
        except Exception as exc:  # one client's trouble never stops the service
            log.error("control request failed: %s", type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def request(path: Path, message: dict[str, Any], within: float = 120.0) -> dict[str, Any]:
    """Send one request to a running service and return its answer."""
    _check_path(path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NotRunning(
            f"no running service: nothing listens on {path} (start it with 'tipline run')"
        ) from exc
    except PermissionError as exc:
        raise ControlError(f"cannot open {path}: run this as the service's user (or root)") from exc
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), within)
    except TimeoutError as exc:
        raise ControlError("the service did not answer in time") from exc
    except ConnectionError as exc:
        raise ControlError("the service closed the connection") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise ControlError("the service closed the connection without an answer") from exc
    if not isinstance(answer, dict):
        raise ControlError("the service gave an answer this version does not understand")
    return answer


class Throttle:
    """Wrong passphrases: the first few are free, after that one attempt per interval."""

    def __init__(
        self, monotonic: Callable[[], float], *, free: int = 5, interval: float = 60.0
    ) -> None:
        self._monotonic = monotonic
        self._free = free
        self._interval = interval
        self.failures = 0
        self._last = 0.0

    def wait(self) -> float:
        """Seconds until the next attempt may be made (0: now)."""
        if self.failures < self._free:
            return 0.0
        return max(0.0, self._last + self._interval - self._monotonic())

    def failed(self) -> None:
        """Count a wrong passphrase."""
        self.failures += 1
        self._last = self._monotonic()

    def succeeded(self) -> None:
        """The right passphrase: start counting again."""
        self.failures = 0
