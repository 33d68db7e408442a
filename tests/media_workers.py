"""Checks that misbehave on purpose, run in the file workers (importable by the forkserver)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from bot.media import CleanFile, check_in_worker

SPIN = b"spin:"
DIE = b"die"
PROBE = b"probe"


def misbehaving_check(data: bytes) -> CleanFile:
    """``spin:PATH`` writes the worker's pid to PATH and never returns; ``die`` exits at once;
    ``probe`` reports the worker's parent, pid and limits; anything else is checked as usual."""
    if data.startswith(SPIN):
        Path(data[len(SPIN) :].decode()).write_text(str(os.getpid()))
        while True:  # busy, as a decoder stuck on a hostile file would be
            time.monotonic()
    if data == DIE:
        os._exit(3)
    if data == PROBE:
        memory = resource.getrlimit(resource.RLIMIT_AS)[0]
        core = resource.getrlimit(resource.RLIMIT_CORE)[0]
        return CleanFile("probe", f"{os.getppid()} {os.getpid()} {memory} {core}", None)
    return check_in_worker(data)
