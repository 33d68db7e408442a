"""Delivery of texts to messenger addresses (``telegram:123``), through the running channels."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Sender = Callable[[str, str], Awaitable[bool]]


class ChannelNotifier:
    """Routes each address to the channel that owns its prefix; unknown channels fail softly."""

    def __init__(self) -> None:
        self._senders: dict[str, Sender] = {}

    def register(self, channel: str, sender: Sender) -> None:
        """Let a running channel deliver to its addresses."""
        self._senders[channel] = sender

    async def send(self, address: str, text: str) -> bool:
        """Deliver ``text``; False when no running channel owns the address."""
        channel, _, target = address.partition(":")
        sender = self._senders.get(channel)
        if sender is None or not target:
            log.info("no running channel for a %s address", channel or "malformed")
            return False
        return await sender(target, text)
