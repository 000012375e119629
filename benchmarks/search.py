"""Kept-up criterion and the search for the highest kept-up load (pure, no I/O).

Issue 12 defines capacity as the most concurrent two-way calls a server process *keeps
up* with: at least 99.5 % of the frames due in the window delivered in each direction and
a p99 one-way latency within 20 ms on loopback. :func:`kept_up` applies that to one
measured point; :class:`KeptUpSearch` chooses which loads to measure: doubling from a
start load until a point fails, then bisection between the highest load that kept up and
the lowest that did not, until the gap is within a resolution or a point budget is spent.
Measuring is the caller's business (:func:`benchmarks.capacity.search` runs several
searches interleaved, one point of each stack in turn), so this is tested
deterministically with an oracle in place of the processes.
"""

from __future__ import annotations

import attrs

#: Issue 12's capacity criterion: frames delivered in each direction, in % of frames due.
KEPT_UP_DELIVERY = 99.5
#: Issue 12's capacity criterion: p99 one-way latency in each direction, in seconds.
KEPT_UP_P99 = 0.020


def kept_up(
    calls: int,
    connected: int,
    delivered_pct: tuple[float, float],
    p99_seconds: tuple[float, float],
    delivery: float = KEPT_UP_DELIVERY,
    p99_limit: float = KEPT_UP_P99,
) -> bool:
    """Whether a measured point kept up: every call connected, each direction delivered
    at least ``delivery`` % of its frames with a p99 one-way latency within ``p99_limit``.

    A NaN latency (nothing received) fails, as does a point with fewer calls connected
    than asked for.
    """
    if connected < calls:
        return False
    if any(not pct >= delivery for pct in delivered_pct):
        return False
    return all(p99 <= p99_limit for p99 in p99_seconds)  # NaN compares False: fails


@attrs.define
class KeptUpSearch:
    """Which load to measure next in the search for the highest kept-up load.

    ``start``: the first load; ``ceiling``: never measure more; ``resolution``: stop when
    the gap between the highest load that kept up and the lowest that failed is at most
    this share of the former (and at most 1 call when that is larger); ``max_points``:
    stop after this many measurements whatever the gap. The result is :attr:`best`, the
    highest load seen to keep up (0 if none did), and :attr:`failed`, the lowest above it
    seen to fail (``None`` if none did: ``best`` then reached ``ceiling`` or the budget).
    """

    start: int = attrs.field(validator=attrs.validators.ge(1))
    ceiling: int = attrs.field(validator=attrs.validators.ge(1))
    resolution: float = 0.1
    max_points: int = 8
    best: int = 0
    failed: int | None = None
    points: list[tuple[int, bool]] = attrs.field(factory=list)

    def next(self) -> int | None:
        """The load to measure next, or ``None`` when the search is over."""
        if len(self.points) >= self.max_points:
            return None
        if not self.points:
            return min(self.start, self.ceiling)
        if self.failed is None:  # everything kept up so far: double
            if self.best >= self.ceiling:
                return None
            return min(2 * self.best, self.ceiling)
        if self.best == 0:  # even the lowest load failed: halve
            return self.failed // 2 if self.failed > 1 else None
        if self.failed - self.best <= max(1.0, self.resolution * self.best):
            return None
        return (self.best + self.failed) // 2

    def record(self, calls: int, ok: bool) -> None:
        """Note the outcome of measuring ``calls``.

        A load above a failure that keeps up (noise on a shared machine) moves ``best``
        up and forgets the failure, so the search goes on above it.
        """
        self.points.append((calls, ok))
        if ok:
            self.best = max(self.best, calls)
            if self.failed is not None and self.failed <= self.best:
                self.failed = None
        elif calls > self.best:
            self.failed = calls if self.failed is None else min(self.failed, calls)

    @property
    def done(self) -> bool:
        """Whether :meth:`next` has nothing left to measure."""
        return self.next() is None
