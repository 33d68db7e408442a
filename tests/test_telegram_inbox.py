"""Received Telegram updates are stored in batches before PTB may see or confirm them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from telegram import Update
from telegram.error import NetworkError

from bot.channels.telegram import DurableUpdates
from bot.services.clock import FrozenClock
from bot.services.queues import ChannelQueues
from storage.memory import MemoryDatabase
from tests.conftest import START


class CountedQueues(ChannelQueues):
    """The real inbox service over memory, counting its transactions; can fail on demand."""

    def __init__(self) -> None:
        self.db = MemoryDatabase()
        super().__init__(self.db.uow, FrozenClock(START), "telegram")
        self.batches: list[int] = []
        self.failing = False

    async def received(self, messages: Sequence[dict[str, Any]]) -> list[str]:
        if self.failing:
            raise OSError("disk full")
        self.batches.append(len(messages))
        return await super().received(messages)


def update(number: int) -> Update:
    return Update.de_json(
        {
            "update_id": number,
            "message": {
                "message_id": number,
                "date": 0,
                "chat": {"id": 7, "type": "private"},
                "text": f"answer {number}",
            },
        },
        None,
    )


async def test_a_poll_is_stored_in_one_transaction_before_the_next_poll() -> None:
    inbox = CountedQueues()
    queue = DurableUpdates(inbox)
    for n in range(1, 11):
        await queue.put(update(n))  # a poll hands over its updates without waiting
    assert queue.qsize() == 0  # nothing reaches PTB before it is stored
    await queue.settled()  # what the next getUpdates waits for
    assert inbox.batches == [10]
    assert [queue.get_nowait().update_id for _ in range(10)] == list(range(1, 11))
    assert sorted(queue.items) == list(range(1, 11))
    assert len(await inbox.unhandled()) == 10


async def test_a_failed_store_blocks_the_next_poll_until_it_is_stored() -> None:
    inbox = CountedQueues()
    queue = DurableUpdates(inbox)
    inbox.failing = True
    await queue.put(update(1))
    with pytest.raises(NetworkError):
        await queue.settled()  # the poll that would confirm update 1 does not happen
    assert queue.qsize() == 0
    inbox.failing = False
    await queue.settled()
    assert inbox.batches == [1] and queue.get_nowait().update_id == 1


async def test_webhook_deliveries_are_answered_once_stored_and_share_a_batch() -> None:
    inbox = CountedQueues()
    queue = DurableUpdates(inbox, wait=True)
    await asyncio.gather(*(queue.put(update(n)) for n in range(1, 9)))
    assert sum(inbox.batches) == 8 and len(inbox.batches) < 8
    assert queue.qsize() == 8  # every put returned only once its update was stored and queued
