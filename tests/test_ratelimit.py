"""The per-chat token bucket, as pure arithmetic: calm warning once, bounded rate, a clock stepped
back refills nothing, and a bucket untouched for a window is the same as none (so the job that
deletes such rows changes no verdict)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bot.services.ports import Bucket
from bot.services.ratelimit import RateLimit, Verdict, step
from tests.conftest import START

WINDOW = timedelta(minutes=1)


class Chats:
    """Buckets by chat, as the store keeps them, counted with :func:`step`."""

    def __init__(self, limit: int = 5) -> None:
        self.limits = RateLimit(limit=limit, window=WINDOW)
        self.buckets: dict[str, Bucket] = {}

    def check(self, chat: str, now: datetime) -> Verdict:
        self.buckets[chat], verdict = self.limits.step(self.buckets.get(chat), now)
        return verdict


def test_burst_then_one_warning_then_silence_per_chat() -> None:
    chats, now = Chats(), START
    verdicts = [chats.check("telegram:1", now) for _ in range(8)]
    assert verdicts == [Verdict.OK] * 5 + [Verdict.WARN, Verdict.DROP, Verdict.DROP]
    assert chats.check("telegram:2", now) is Verdict.OK  # another chat has its own bucket
    now += WINDOW / 5  # one event's worth refilled: it passes, with no second warning
    assert [chats.check("telegram:1", now) for _ in range(2)] == [Verdict.OK, Verdict.DROP]
    now += WINDOW
    assert [chats.check("telegram:1", now) for _ in range(5)] == [Verdict.OK] * 5
    assert chats.check("telegram:1", now) is Verdict.WARN  # a new flood, a new warning


def test_step_is_pure_and_counts_from_a_full_bucket() -> None:
    bucket, verdict = step(None, START, 5.0, 5 / 60)
    assert (bucket, verdict) == (Bucket(4.0, START, False), Verdict.OK)
    empty = Bucket(0.5, START, False)
    assert step(empty, START, 5.0, 5 / 60) == (Bucket(0.5, START, True), Verdict.WARN)
    assert empty == Bucket(0.5, START, False), "the bucket passed in is not changed"


def test_a_clock_stepped_back_takes_nothing_away_and_refills_nothing() -> None:
    chats = Chats()
    assert chats.check("1", START) is Verdict.OK
    earlier = START - timedelta(hours=1)
    assert [chats.check("1", earlier) for _ in range(5)] == [Verdict.OK] * 4 + [Verdict.WARN]


Steps = st.lists(
    st.tuples(st.integers(0, 30_000), st.sampled_from(["a", "b"])), min_size=1, max_size=200
)


def bound_holds(passed: list[float], limit: int) -> bool:
    """Every run of OK verdicts from the i-th to the j-th fits in ``limit + limit * T / window``,
    T being the time between them."""
    rate = limit / WINDOW.total_seconds()
    return all(
        j - i + 1 <= limit + rate * (passed[j] - passed[i]) + 1e-9
        for i in range(len(passed))
        for j in range(i, len(passed))
    )


@given(Steps)
def test_no_chat_gets_more_than_the_bucket_allows(events: list[tuple[int, str]]) -> None:
    limit, chats, now = 5, Chats(5), START
    passed: dict[str, list[float]] = {"a": [], "b": []}
    for step_ms, chat in events:
        now += timedelta(milliseconds=step_ms)
        if chats.check(chat, now) is Verdict.OK:
            passed[chat].append(now.timestamp())
    assert all(bound_holds(times, limit) for times in passed.values())


@given(st.lists(st.integers(-60_000, 30_000), min_size=1, max_size=200))
def test_a_clock_that_jumps_about_gives_no_more_than_its_forward_time(steps: list[int]) -> None:
    """Time counts only forward: with a clock stepped back now and then, the bound holds over
    the time the clock moved forward (for a clock that only moves forward, the span)."""
    limit, chats, now, forward = 5, Chats(5), START, 0.0
    passed: list[float] = []
    for step_ms in steps:
        now += timedelta(milliseconds=step_ms)
        forward += max(0, step_ms) / 1000
        if chats.check("a", now) is Verdict.OK:
            passed.append(forward)
    assert bound_holds(passed, limit)


@given(
    tokens=st.floats(0, 5),
    warned=st.booleans(),
    idle_ms=st.integers(int(WINDOW.total_seconds() * 1000), 10**9),
)
def test_a_bucket_idle_for_a_window_is_the_same_as_none(
    tokens: float, warned: bool, idle_ms: int
) -> None:
    """Why the job may delete a row untouched for a window: no verdict changes."""
    limits = RateLimit(limit=5, window=WINDOW)
    now = START + timedelta(milliseconds=idle_ms)
    assert limits.step(Bucket(tokens, START, warned), now) == limits.step(None, now)
