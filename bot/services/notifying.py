"""The part every service that writes notices from jobs and the CLI shares."""

from __future__ import annotations

from collections.abc import Callable

from bot.domain.texts import Texts
from bot.services.clock import Clock
from bot.services.ports import StaffUnitOfWork


class Notifying:
    """A service whose jobs and commands write notices: its transactions, texts and clock."""

    def __init__(
        self,
        uow: Callable[[], StaffUnitOfWork],
        texts: Texts,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._uow = uow
        self._texts = texts
        self._clock = clock
        #: Tells the senders that a job or the CLI wrote to the outbox.
        self.wake = wake

    def _t(self, language: str, key: str, **params: object) -> str:
        return self._texts.get(language, key, **params)
