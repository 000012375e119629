"""The capacity harness's kept-up criterion and load search (benchmarks/search.py).

The search decides which loads the capacity benchmark measures; a bug there silently
reports the wrong capacity, so it is checked against an oracle: a stack that keeps up with
every load up to a threshold and with none above it.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.search import KEPT_UP_DELIVERY, KEPT_UP_P99, KeptUpSearch, kept_up


def _run(search: KeptUpSearch, threshold: int) -> list[int]:
    measured = []
    while (n := search.next()) is not None:
        measured.append(n)
        search.record(n, n <= threshold)
    return measured


@given(
    threshold=st.integers(0, 2000),
    start=st.integers(1, 100),
    ceiling=st.integers(1, 2000),
    resolution=st.sampled_from([0.0, 0.05, 0.1, 0.25]),
)
def test_search_finds_the_threshold_of_a_monotone_stack(
    threshold: int, start: int, ceiling: int, resolution: float
) -> None:
    search = KeptUpSearch(start=start, ceiling=ceiling, resolution=resolution, max_points=64)
    measured = _run(search, threshold)
    assert measured, "at least one point is measured"
    assert all(1 <= n <= ceiling for n in measured)
    assert len(set(measured)) == len(measured), "no load is measured twice"
    # Never claims a load that failed, never misses the threshold by more than the
    # resolution (or reaches the ceiling when the stack can do more).
    assert search.best <= threshold
    if threshold >= ceiling:
        assert search.best == ceiling and search.failed is None
    else:
        assert search.failed is not None and search.failed > threshold
        gap = max(1.0, resolution * search.best)
        assert search.failed - search.best <= gap
    # Doubling then bisection: logarithmic in the load, not linear.
    assert len(measured) <= 2 * math.ceil(math.log2(max(ceiling, 2))) + 3


@given(threshold=st.integers(0, 2000), budget=st.integers(1, 6))
def test_search_respects_its_point_budget(threshold: int, budget: int) -> None:
    search = KeptUpSearch(start=10, ceiling=2000, max_points=budget)
    measured = _run(search, threshold)
    assert len(measured) <= budget
    assert search.best <= threshold


def test_search_doubles_then_bisects() -> None:
    search = KeptUpSearch(start=10, ceiling=1000, resolution=0.1)
    assert _run(search, 55) == [10, 20, 40, 80, 60, 50, 55]
    assert (search.best, search.failed) == (55, 60)


def test_a_noisy_failure_below_a_pass_is_forgotten() -> None:
    search = KeptUpSearch(start=10, ceiling=1000)
    search.record(10, True)
    search.record(20, False)  # the machine was busy
    search.record(30, True)  # yet more calls kept up: 20's failure was noise
    assert (search.best, search.failed) == (30, None)
    assert search.next() == 60


def test_kept_up_is_the_issue_criterion() -> None:
    ok = kept_up(40, 40, (100.0, KEPT_UP_DELIVERY), (0.004, KEPT_UP_P99))
    assert ok
    assert not kept_up(40, 39, (100.0, 100.0), (0.004, 0.004))  # a call did not connect
    assert not kept_up(40, 40, (100.0, 99.4), (0.004, 0.004))  # one direction lost frames
    assert not kept_up(40, 40, (100.0, 100.0), (0.004, 0.0201))  # one direction late
    assert not kept_up(40, 40, (100.0, 100.0), (0.004, math.nan))  # nothing received


def test_the_report_keeps_its_hand_written_part() -> None:
    from benchmarks.run import HAND_WRITTEN, with_hand_written

    previous = f"# old generated\n\n{HAND_WRITTEN}\n\n## Soak\n\nby hand\n"
    assert (
        with_hand_written("# new\n", previous) == f"# new\n\n{HAND_WRITTEN}\n\n## Soak\n\nby hand\n"
    )
    assert with_hand_written("# new\n", "# no marker\n") == "# new\n"
    assert with_hand_written("# new\n", None) == "# new\n"
