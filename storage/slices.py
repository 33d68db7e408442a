"""CPU work over many rows, done in slices that give the event loop a turn in between.

Maintenance (the ratchet, purge, the audit chain) decrypts, re-wraps and MACs every row; done in
one go, that is seconds of pure Python during which no chat is served. The work is written as a
generator that yields every ``SLICE`` rows, and :func:`run` lets the loop run other tasks at
each yield. A worker thread was measured too: the rows are small (a wrapped DEK, an index, a
MAC), so the crypto holds the GIL and the loop waits for it, longer on a loaded machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Rows of work between two turns of the event loop (well under a millisecond each).
SLICE = 64
#: Rows per statement when many are written at once: binding parameters is loop work too.
ROWS_PER_STATEMENT = 200

Sliced = Generator[None, None, T]


async def run(work: Sliced[T]) -> T:
    """Drive ``work`` to its result, letting the event loop run at each of its yields."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            result: T = done.value
            return result
        await asyncio.sleep(0)


def per_statement(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    """``rows`` in pieces of :data:`ROWS_PER_STATEMENT`, a statement's worth each."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start : start + ROWS_PER_STATEMENT]


def due(index: int) -> bool:
    """Whether the row at ``index`` ends a slice (the work yields after it)."""
    return index % SLICE == SLICE - 1
