"""Routing 10,000 cases over 200 lawyers: our choice against picking the first match.

Ours (``choose_lawyer``) keeps the caps, the lawyers already tried, on-call first for P1 and the
fewest open cases; the baseline takes the first lawyer who speaks the language and covers the
region. Both run over the same cases and roster in one run. Run: python bench/bench_routing.py
"""

from __future__ import annotations

import argparse
import random
import time

from bot.domain.routing import CaseNeeds, LawyerSlot, Roster, choose_lawyer, first_match
from bot.domain.triage import Priority

LANGUAGES = ("az", "ru", "en")
REGIONS = ("baku", "ganja", "sumgait", "other")


def roster(rng: random.Random, count: int) -> list[LawyerSlot]:
    lawyers = []
    for i in range(count):
        languages = frozenset(rng.sample(LANGUAGES, rng.randint(1, 3)))
        regions = (
            frozenset(rng.sample(REGIONS, rng.randint(1, 2)))
            if rng.random() > 0.1
            else frozenset({"all"})
        )
        lawyers.append(LawyerSlot(i, languages, regions, rng.random() < 0.2, rng.randint(0, 12)))
    return lawyers


def cases(rng: random.Random, count: int) -> list[CaseNeeds]:
    return [
        CaseNeeds(rng.choice(list(Priority)[:3]), rng.choice(LANGUAGES), rng.choice(REGIONS))
        for _ in range(count)
    ]


def main(count: int, lawyers_count: int) -> None:
    rng = random.Random(2017)
    lawyers = roster(rng, lawyers_count)
    work = cases(rng, count)
    tried = [frozenset(rng.sample(range(lawyers_count), 2)) for _ in work]
    first_match(work[0], lawyers)  # warm-up
    choose_lawyer(work[0], lawyers)
    began = time.perf_counter()
    base_hits = sum(first_match(case, lawyers) is not None for case in work)
    t_base = time.perf_counter() - began
    began = time.perf_counter()
    index = Roster(lawyers, REGIONS)  # built inside the timing: its cost counts
    ours_hits = sum(
        index.choose(case, tried=t, cap=10) is not None for case, t in zip(work, tried, strict=True)
    )
    t_ours = time.perf_counter() - began
    # the index must agree with the straightforward definition
    pairs = list(zip(work[:500], tried[:500], strict=True))
    assert all(
        index.choose(c, tried=t, cap=10) == choose_lawyer(c, lawyers, tried=t, cap=10)
        for c, t in pairs
    )
    ratio = t_ours / t_base
    print(f"cases x lawyers:        {count:,} x {lawyers_count}")
    print(
        f"first match (baseline): {t_base / count * 1e6:.1f} us per decision ({base_hits} routed)"
    )
    print(
        f"Roster.choose (ours):   {t_ours / count * 1e6:.1f} us per decision ({ours_hits} routed)"
    )
    print(f"ratio ours / baseline:  {ratio:.2f}x (target <= 2x) {'OK' if ratio <= 2 else 'OVER'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--lawyers", type=int, default=200)
    args = parser.parse_args()
    main(args.cases, args.lawyers)
