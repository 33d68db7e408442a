"""The per-chat token bucket: calm warning once, bounded rate, constant memory per chat."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from bot.services.clock import FrozenClock
from bot.services.ratelimit import ChatRateLimiter, Verdict
from tests.conftest import START

WINDOW = timedelta(minutes=1)


def limiter(clock: FrozenClock, limit: int = 5, prune_at: int = 10_000) -> ChatRateLimiter:
    return ChatRateLimiter(
        lambda c, i: f"{c}:{i}", clock, limit=limit, window=WINDOW, prune_at=prune_at
    )


def test_burst_then_one_warning_then_silence_per_chat() -> None:
    clock = FrozenClock(START)
    limits = limiter(clock)
    verdicts = [limits.check("telegram", "1") for _ in range(8)]
    assert verdicts == [Verdict.OK] * 5 + [Verdict.WARN, Verdict.DROP, Verdict.DROP]
    assert limits.check("telegram", "2") is Verdict.OK  # another chat is not affected
    assert limits.check("signal", "1") is Verdict.OK  # nor the same id on another channel
    clock.advance(WINDOW / 5)  # one event's worth refilled: it passes, with no second warning
    assert [limits.check("telegram", "1") for _ in range(2)] == [Verdict.OK, Verdict.DROP]
    clock.advance(WINDOW)
    assert [limits.check("telegram", "1") for _ in range(5)] == [Verdict.OK] * 5
    assert limits.check("telegram", "1") is Verdict.WARN  # a new flood, a new warning


def test_a_clock_stepped_back_takes_nothing_away() -> None:
    clock = FrozenClock(START)
    limits = limiter(clock)
    assert limits.check("telegram", "1") is Verdict.OK
    clock.advance(-timedelta(hours=1))
    assert [limits.check("telegram", "1") for _ in range(4)] == [Verdict.OK] * 4


@given(
    st.lists(
        st.tuples(st.integers(0, 30_000), st.sampled_from(["a", "b"])), min_size=1, max_size=200
    )
)
def test_no_chat_gets_more_than_the_bucket_allows(events: list[tuple[int, str]]) -> None:
    clock = FrozenClock(START)
    limit = 5
    limits = limiter(clock, limit)
    passed: dict[str, list[float]] = {"a": [], "b": []}
    for step_ms, chat in events:
        clock.advance(timedelta(milliseconds=step_ms))
        if limits.check("telegram", chat) is Verdict.OK:
            passed[chat].append(clock().timestamp())
    rate = limit / WINDOW.total_seconds()
    for times in passed.values():
        for i, first in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= limit + rate * (times[j] - first) + 1e-9


def test_memory_per_chat_does_not_grow_and_idle_chats_are_forgotten() -> None:
    clock = FrozenClock(START)
    limits = limiter(clock, limit=1000, prune_at=10)
    for _ in range(500):
        limits.check("telegram", "busy")
    assert len(limits) == 1
    for chat in range(9):
        limits.check("telegram", f"idle-{chat}")
    clock.advance(WINDOW)  # every bucket has refilled: the same as never having written
    limits.check("telegram", "newcomer")
    assert len(limits) == 1
