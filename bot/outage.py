"""One warning when a messenger API stops answering, one line when it answers again.

A poll loop that logs every failed attempt (with a traceback) buries the log during an outage
and can print URLs that carry a token; channels report each attempt here instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Outage:
    """Tracks whether calls to an API fail; logs only the start and the end of each outage."""

    def __init__(
        self,
        what: str,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._log = logger or log
        self._clock = clock
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self._since is not None

    @property
    def failures(self) -> int:
        """Failed attempts in the outage going on (0 when none is)."""
        return self._failures

    def failed(self, reason: BaseException | str) -> None:
        """Note a failed attempt; only the first of an outage is logged (its kind, no detail)."""
        self._failures += 1
        if self._since is not None:
            return
        self._since = self._clock()
        # The kind only (an exception's text may hold a URL with the token in it); the
        # transport's own error, when wrapped, says more than the wrapper.
        kind = reason if isinstance(reason, str) else type(reason.__cause__ or reason).__name__
        self._log.warning(
            "%s failing (%s); retrying quietly until it works again", self._what, kind
        )

    def answered(self) -> None:
        """Note a successful attempt; ends (and logs the end of) an outage."""
        if self._since is None:
            return
        seconds = self._clock() - self._since
        failures, self._since, self._failures = self._failures, None, 0
        self._log.warning(
            "%s working again after %.0f s (%d failed attempts)",
            self._what,
            seconds,
            failures,
        )
