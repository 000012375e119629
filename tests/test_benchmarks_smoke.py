"""Smoke test of the benchmarks: the head-of-line benchmark, tiny, with a real assertion.

The point of striping media over several requests (R6) is that one lost packet does not
hold back the frames behind it. The HOL benchmark measures exactly that in virtual time
(deterministic for a seed); here it runs small: 5 % loss, 50 ms one-way delay, three
seeds of 10 s of media each, and RIPP's tail latency must beat the same frames pipelined
on a single stream. The capacity and set-up benchmarks are too slow for the suite; run
them with ``python -m benchmarks.run --quick``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from benchmarks import hol, latency_summary
from ripp_core.testing import make_test_pki

LOSS = 0.05
DELAY = 0.050
SECONDS = 10.0
SEEDS = (1, 2, 3)


def test_striping_beats_single_stream_tail_latency() -> None:
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))
    ripp: list[float] = []
    single: list[float] = []
    ripp_late = single_late = sent = 0.0
    for seed in SEEDS:
        r = hol.run_ripp(pki, SECONDS, DELAY, LOSS, seed)
        s = hol.run_single_stream(pki, SECONDS, DELAY, LOSS, seed)
        # Both stacks deliver every frame (QUIC retransmits); only the timing differs.
        # The single stream delivers everything (eventually); RIPP may give up a frame that
        # waited longer than send_queue_max_delay for a stream during a burst of losses
        # (late audio is worse than lost audio). Such frames count as late below.
        assert s["delivered"] == s["sent"] == r["sent"] == SECONDS / 0.02
        assert r["delivered"] >= 0.98 * r["sent"]
        ripp += r["latencies"]
        single += s["latencies"]
        ripp_late += r["late_pct"] * r["sent"]
        single_late += s["late_pct"] * s["sent"]
        sent += r["sent"]
    ripp_ms, single_ms = latency_summary(ripp), latency_summary(single)
    # The claim of the benchmark: lower tail latency than one pipelined stream.
    assert ripp_ms["p99"] < single_ms["p99"], (ripp_ms, single_ms)
    # And the mechanism behind it: frames behind a loss are not delayed, so most frames
    # take just the path delay and far fewer miss the 150 ms mark.
    assert ripp_ms["p90"] < DELAY * 1000 + 5 < single_ms["p90"], (ripp_ms, single_ms)
    assert ripp_late / sent < 0.75 * (single_late / sent), (ripp_late, single_late)
    # Sanity: both saw the network's delay, so the clocks and bookkeeping are right.
    assert abs(ripp_ms["p50"] - DELAY * 1000) < 2 and abs(single_ms["p50"] - DELAY * 1000) < 2
