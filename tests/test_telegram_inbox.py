"""Received Telegram updates are stored in batches before they are handled or confirmed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from telegram import Update
from telegram.error import NetworkError

from bot.channels.telegram import DurableUpdates, Received, chat_of, language_of, stored_form
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


def update(number: int) -> Received:
    return Received(
        number,
        {
            "update_id": number,
            "message": {
                "message_id": number,
                "date": 0,
                "chat": {"id": 7, "type": "private"},
                "text": f"answer {number}",
            },
        },
    )


class Handled(list[tuple[int, str]]):
    """What the channel was handed: each update's id and inbox item, in order."""

    def __call__(self, form: dict[str, Any], item_id: str) -> None:
        self.append((form["update_id"], item_id))


async def test_a_poll_is_stored_in_one_transaction_before_the_next_poll() -> None:
    inbox, handled = CountedQueues(), Handled()
    queue = DurableUpdates(inbox, handled)
    for n in range(1, 11):
        await queue.put(update(n))  # a poll hands over its updates without waiting
    assert handled == []  # nothing is handled before it is stored
    await queue.settled()  # what the next getUpdates waits for
    assert inbox.batches == [10]
    assert [n for n, _ in handled] == list(range(1, 11))
    stored = await inbox.unhandled()
    assert [item.id for item in stored] == [item for _, item in handled]
    assert queue.qsize() == 0  # PTB's own dispatch never sees an update


async def test_a_failed_store_blocks_the_next_poll_until_it_is_stored() -> None:
    inbox, handled = CountedQueues(), Handled()
    queue = DurableUpdates(inbox, handled)
    inbox.failing = True
    await queue.put(update(1))
    with pytest.raises(NetworkError):
        await queue.settled()  # the poll that would confirm update 1 does not happen
    assert handled == []
    inbox.failing = False
    await queue.settled()
    assert inbox.batches == [1] and [n for n, _ in handled] == [1]


async def test_webhook_deliveries_are_answered_once_stored_and_share_a_batch() -> None:
    inbox, handled = CountedQueues(), Handled()
    queue = DurableUpdates(inbox, handled, wait=True)
    await asyncio.gather(*(queue.put(update(n)) for n in range(1, 9)))
    assert sum(inbox.batches) == 8 and len(inbox.batches) < 8
    # every put returned only once its update was stored and handed over
    assert sorted(n for n, _ in handled) == list(range(1, 9))


FULL = {
    "update_id": 41,
    "message": {
        "message_id": 9,
        "date": 1_790_000_000,
        "chat": {"id": 7, "type": "private", "first_name": "Leyla", "username": "leyla_baku"},
        "from": {
            "id": 7,
            "is_bot": False,
            "first_name": "Leyla",
            "last_name": "Mammadova",
            "username": "leyla_baku",
            "language_code": "az",
        },
        "caption": "the summons",
        "photo": [
            {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
            {"file_id": "big", "file_unique_id": "b", "width": 900, "height": 900, "file_size": 5},
        ],
    },
}
PRESS = {
    "update_id": 42,
    "callback_query": {
        "id": "q1",
        "chat_instance": "ci",
        "data": "c:agree",
        "from": {"id": 7, "is_bot": False, "first_name": "Leyla", "username": "leyla_baku"},
        "message": {
            "message_id": 10,
            "date": 1_790_000_001,
            "chat": {"id": 7, "type": "private", "first_name": "Leyla"},
            "text": "Do you agree?",
        },
    },
}


@pytest.mark.parametrize("raw", [FULL, PRESS], ids=["photo", "press"])
def test_the_inbox_keeps_what_the_channel_reads_and_no_name(raw: dict[str, Any]) -> None:
    kept = stored_form(raw)
    assert not {"Leyla", "Mammadova", "leyla_baku"} & set(json.dumps(kept).split('"'))
    assert kept["update_id"] == raw["update_id"]
    assert chat_of(kept) == {"id": 7, "type": "private"}
    assert language_of(kept) == language_of(raw)
    # PTB reads the stored form back as the Bot API's shape (drafts of old inboxes, webhooks)
    again, received = Update.de_json(kept, None), Update.de_json(raw, None)
    user, was = again.effective_user, received.effective_user
    assert user is not None and was is not None and user.language_code == was.language_code
    assert stored_form(received.to_dict()) == kept  # a webhook delivery, parsed by PTB
    if received.callback_query is not None:
        assert again.callback_query is not None
        assert (again.callback_query.id, again.callback_query.data) == ("q1", "c:agree")
        return
    message, original = again.message, received.message
    assert message is not None and original is not None
    assert (message.message_id, message.caption) == (original.message_id, "the summons")
    assert message.photo[-1].file_id == "big" and message.photo[-1].file_size == 5


@pytest.mark.parametrize(
    "raw",
    [
        {"update_id": 5, "message": {"text": "no chat, no id"}},
        {"update_id": 6, "callback_query": {"data": "c:agree"}},
        {"update_id": 7, "edited_message": {"chat": {"type": "private"}, "from": {}}},
    ],
    ids=["message", "press", "edited"],
)
async def test_a_malformed_update_is_stored_and_passed_over_not_fetched_for_ever(
    raw: dict[str, Any],
) -> None:
    # Raising here would leave the update unconfirmed, so every poll would fetch it again.
    inbox, handled = CountedQueues(), Handled()
    queue = DurableUpdates(inbox, handled)
    await queue.put(Received(raw["update_id"], raw))
    await queue.settled()
    assert [n for n, _ in handled] == [raw["update_id"]]
    chat = chat_of(stored_form(raw))
    assert chat is None or chat["id"] is None  # the channel marks it handled and answers nobody
