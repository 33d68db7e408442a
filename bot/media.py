"""Checks and cleans files from reporters: allow-list by content, caps, EXIF-free re-encoding.

Decoding a hostile file is done in a worker process (``MediaInspector``) with a time and an
address-space cap, so that a decompression bomb neither stalls the event loop nor takes the
service's memory; the worker never held a key (it is forked from a clean forkserver).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import io
import logging
import multiprocessing
import resource
import signal
import threading
import warnings
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from pebble import ProcessExpired, ProcessFuture, ProcessPool
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10 * 1024 * 1024
#: About 40 megapixels: more than any phone camera, far less than a decompression bomb.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_IMAGE_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
}
_PDF_MAGIC = b"%PDF-"


class MediaRefused(ValueError):
    """A file we do not take; the reason is for tests and metrics, never shown with content."""


@dataclass(frozen=True, slots=True)
class CleanFile:
    """A file that passed the checks."""

    kind: str  # "image" or "pdf"
    mime: str
    clean: bytes | None  # re-encoded image without metadata; None for PDFs (lawyers only)


def _sniff(data: bytes) -> str | None:
    for magic, name in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(_PDF_MAGIC):
        return "PDF"
    return None


def inspect_file(data: bytes) -> CleanFile:
    """Accept JPEG, PNG, WebP (re-encoded as JPEG, metadata dropped) and PDF; refuse the rest."""
    if not data:
        raise MediaRefused("empty")
    if len(data) > MAX_FILE_BYTES:
        raise MediaRefused("too large")
    kind = _sniff(data)
    if kind is None:
        raise MediaRefused("type not allowed")
    if kind == "PDF":
        return CleanFile("pdf", "application/pdf", None)
    return CleanFile("image", "image/jpeg", _reencode(data, kind))


def _reencode(data: bytes, expected: str) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format != expected:
                    raise MediaRefused("content does not match its signature")
                width, height = image.size
                if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
                    raise MediaRefused("too many pixels")
                image.load()
                upright = ImageOps.exif_transpose(image) or image
                # A fresh image from the pixels alone: EXIF, GPS, XMP and comments stay behind.
                clean = Image.new("RGB", upright.size)
                clean.paste(upright.convert("RGB"))
        out = io.BytesIO()
        clean.save(out, format="JPEG", quality=90)
        return out.getvalue()
    except MediaRefused:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise MediaRefused("unreadable image") from exc


#: Wall-clock seconds one file may take in a worker before the worker is killed.
INSPECT_TIMEOUT_SECONDS = 5.0
#: Address space of a worker: room for a 24-megapixel photo, not for a 40-megapixel bomb.
INSPECT_MEMORY_BYTES = 512 * 1024 * 1024
INSPECT_WORKERS = 2
#: A worker checks this many files, then a fresh one takes its place: whatever a hostile file
#: did to a decoder never sees another reporter's file.
FILES_PER_WORKER = 1

Check = Callable[[bytes], CleanFile]


def _limit_worker(memory_bytes: int) -> None:
    # Killed at once when over time, even inside a C decoder that never returns to Python.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no photo in a core file


def check_in_worker(data: bytes) -> CleanFile:
    """``inspect_file`` as run in a worker: running out of memory is a refusal."""
    try:
        return inspect_file(data)
    except MemoryError:
        raise MediaRefused("over the memory cap") from None


class MediaInspector:
    """Runs the file checks in worker processes with a time and memory cap, off the event loop.

    A worker that overruns its time is killed and replaced; one that runs out of memory or
    dies refuses the file. Either way the reporter gets the calm "file refused" answer.
    """

    def __init__(
        self,
        *,
        timeout: float = INSPECT_TIMEOUT_SECONDS,
        memory_bytes: int = INSPECT_MEMORY_BYTES,
        workers: int = INSPECT_WORKERS,
        files_per_worker: int = FILES_PER_WORKER,
        check: Check = check_in_worker,
    ) -> None:
        self._timeout = timeout
        self._memory = memory_bytes
        self._workers = workers
        self._files_per_worker = files_per_worker
        self._check = check
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def _running_pool(self) -> ProcessPool:
        with self._lock:
            if self._pool is None or not self._pool.active:
                context = multiprocessing.get_context("forkserver")
                # The server imports Pillow once; workers fork from it, never from this
                # process, so no key or reporter data is copied into them.
                context.set_forkserver_preload([__name__])
                self._pool = ProcessPool(
                    max_workers=self._workers,
                    max_tasks=self._files_per_worker,
                    initializer=_limit_worker,
                    initargs=(self._memory,),
                    context=context,
                )
            return self._pool

    def _schedule(self, data: bytes) -> ProcessFuture[CleanFile]:
        return self._running_pool().schedule(self._check, (data,), timeout=self._timeout)

    async def start(self) -> None:
        """Start the workers now (in a thread: the first start waits for the forkserver)."""
        await asyncio.to_thread(lambda: self._running_pool().active)

    async def inspect(self, data: bytes) -> CleanFile:
        """What ``inspect_file`` returns, computed in a capped worker; raises MediaRefused."""
        if not data:
            raise MediaRefused("empty")
        if len(data) > MAX_FILE_BYTES:
            raise MediaRefused("too large")
        try:
            if self._pool is None or not self._pool.active:
                # The first start (or a restart) waits for the forkserver: not on the loop.
                future = await asyncio.to_thread(self._schedule, data)
            else:
                future = self._schedule(data)
        except RuntimeError as exc:  # pebble: the pool is stopped or broken
            raise await self._restart(exc) from None
        try:
            return await asyncio.wrap_future(future)
        except MediaRefused:
            raise
        except TimeoutError:
            raise MediaRefused("over the time cap") from None
        except ProcessExpired:
            raise MediaRefused("the worker died") from None
        except BrokenProcessPool as exc:
            raise await self._restart(exc) from None
        except Exception as exc:  # a hostile file may make a decoder raise anything
            log.warning("file check failed: %s", type(exc).__name__)
            raise MediaRefused("check failed") from None

    async def _restart(self, exc: BaseException) -> MediaRefused:
        log.error("file worker pool failed: %s", type(exc).__name__)
        await asyncio.to_thread(self.close)  # the next file starts a new pool
        return MediaRefused("no worker")

    def close(self) -> None:
        """Stop the workers (pending checks fail); the next ``inspect`` starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join()


@functools.cache
def default_inspector() -> MediaInspector:
    """The process-wide inspector, with the default caps; stopped when the process exits."""
    inspector = MediaInspector()
    atexit.register(inspector.close)
    return inspector


async def inspect_file_off_loop(data: bytes) -> CleanFile:
    """``inspect_file`` in a capped worker process of the shared inspector; raises MediaRefused."""
    return await default_inspector().inspect(data)
