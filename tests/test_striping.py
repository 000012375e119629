"""The stream-count formula and the adaptation rule (R6)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._config import RippConfig
from ripp_core._striping import (
    StreamCountController,
    WorkedRow,
    required_streams,
    streams_for,
    worked_table,
)

CONFIG = RippConfig()


def test_worked_table_values() -> None:
    rows = worked_table(CONFIG)
    expected = [
        (0.02, 0.0, 2, 2),
        (0.02, 0.01, 4, 4),
        (0.02, 0.05, 6, 6),
        (0.1, 0.0, 6, 6),
        (0.1, 0.01, 9, 9),
        (0.1, 0.05, 13, 13),
        (0.3, 0.0, 16, 16),
        (0.3, 0.01, 22, 20),
        (0.3, 0.05, 30, 20),
    ]
    assert rows == [WorkedRow(*row) for row in expected]


def test_hundred_ms_one_percent_by_hand() -> None:
    # q = 1 - 0.99^2, n = ceil((0.1 + 0.325) / 0.02) = 22; P[X > 2] ~ 8.8e-3 is too
    # likely, P[X > 3] ~ 5.5e-4 is not, so k = 3 and N = 6 + 3.
    q = 1 - 0.99**2
    n = 22
    tail = [
        1 - sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k + 1)) for k in range(5)
    ]
    assert tail[2] >= 1e-3 > tail[3]
    assert required_streams(0.1, 0.02, 0.01) == 9


def test_float_ceiling_is_guarded() -> None:
    # 0.07 / 0.01 == 7.000000000000001 in floating point; the formula must see 7.
    assert math.ceil(0.07 / 0.01) == 8
    assert required_streams(0.07, 0.01, 0.0) == 8
    assert required_streams(0.1, 0.02, 0.0) == 6
    # A genuine fraction still rounds up.
    assert required_streams(0.071, 0.01, 0.0) == 9


def test_zero_rtt_needs_one_stream() -> None:
    assert required_streams(0.0, 0.02, 0.0) == 1


def test_total_loss_still_finite() -> None:
    n = math.ceil((0.1 + 0.325) / 0.02)
    assert required_streams(0.1, 0.02, 1.0) == 6 + n


def test_long_rtt_does_not_overflow() -> None:
    assert required_streams(2.0, 0.0025, 0.3) > required_streams(2.0, 0.0025, 0.1)


@pytest.mark.parametrize(
    ("rtt", "interval", "loss"), [(-0.1, 0.02, 0.0), (0.1, 0.0, 0.0), (0.1, 0.02, 1.5)]
)
def test_invalid_arguments(rtt: float, interval: float, loss: float) -> None:
    with pytest.raises(ValueError):
        required_streams(rtt, interval, loss)


def test_streams_for_clamps() -> None:
    assert streams_for(CONFIG, 0.0, 0.02, 0.0) == CONFIG.min_media_streams
    assert streams_for(CONFIG, 0.3, 0.02, 0.05) == CONFIG.max_media_streams
    assert streams_for(CONFIG, 0.1, 0.02, 0.01) == 9


def test_streams_for_uses_config_pto() -> None:
    fast_pto = RippConfig(pto_rtt_factor=1.0, pto_extra=0.0)
    assert streams_for(fast_pto, 0.1, 0.02, 0.05) < streams_for(CONFIG, 0.1, 0.02, 0.05)


rtts = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
losses = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)
intervals = st.sampled_from([0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06])


@settings(max_examples=150, deadline=None)
@given(rtts, rtts, losses, intervals)
def test_monotone_in_rtt(a: float, b: float, loss: float, interval: float) -> None:
    low, high = sorted((a, b))
    assert required_streams(low, interval, loss) <= required_streams(high, interval, loss)


@settings(max_examples=150, deadline=None)
@given(rtts, losses, losses, intervals)
def test_monotone_in_loss(rtt: float, a: float, b: float, interval: float) -> None:
    low, high = sorted((a, b))
    assert required_streams(rtt, interval, low) <= required_streams(rtt, interval, high)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=400), intervals)
def test_zero_loss_is_base(steps: int, interval: float) -> None:
    # RTTs that are exact multiples of the interval (up to float noise) and in between.
    rtt = steps * interval / 4
    expected = math.ceil(round(rtt / interval, 9)) + 1
    assert required_streams(rtt, interval, 0.0) == expected


# --- adaptation rule -------------------------------------------------------------------


def update(
    controller: StreamCountController,
    now: float,
    open_streams: int,
    *,
    rtt: float | None = 0.1,
    loss: float | None = 0.01,
    busy: float = 0.0,
    peer_wanted: int = 0,
) -> int:
    return controller.update(
        now,
        rtt=rtt,
        loss=loss,
        frame_interval=0.02,
        busy_fraction=busy,
        open_streams=open_streams,
        peer_wanted=peer_wanted,
    )


def test_initial_values_before_measurement() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    # initial_rtt 100 ms and assumed_loss 1 %: the worked table says 9.
    assert update(controller, 0.0, 2, rtt=None, loss=None) == 9
    assert controller.target == 9
    # A measured loss of zero still assumes the configured loss.
    assert update(controller, 1.0, 9, rtt=0.1, loss=0.0) == 9


def test_grows_at_once() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    assert update(controller, 0.0, 6) == 9
    assert update(controller, 0.5, 9, loss=0.05) == 13


def test_congestion_signal_adds_one_stream() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    assert update(controller, 0.0, 9, busy=0.74) == 9
    assert controller.congestion_signals == 0
    assert update(controller, 1.0, 9, busy=0.75) == 10
    assert controller.congestion_signals == 1
    # Bounded by max_media_streams, still counted.
    assert update(controller, 2.0, 20, busy=1.0) == 20
    assert controller.congestion_signals == 2


def test_shrinks_one_at_a_time_after_hold() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    # Target 6 (100 ms, 0 % is replaced by assumed 1 % -> 9; use 20 ms, 1 % -> 4).
    assert update(controller, 0.0, 12, rtt=0.02) == 12
    assert controller.target == 4
    assert update(controller, 2.9, 12, rtt=0.02) == 12
    assert update(controller, 3.0, 12, rtt=0.02) == 11
    # Paced: at most one per adapt_interval.
    assert update(controller, 3.5, 11, rtt=0.02) == 11
    assert update(controller, 4.0, 11, rtt=0.02) == 10


def test_hysteresis_of_one_stream() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    # target 9 == open - 1: never shrinks.
    for step in range(10):
        assert update(controller, float(step), 10) == 10


def test_interruption_restarts_hold() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    update(controller, 0.0, 12, rtt=0.02)
    update(controller, 2.0, 12, rtt=0.3)  # target rises above: hold broken (and grows)
    assert update(controller, 3.0, 20, rtt=0.02) == 20
    assert update(controller, 5.9, 20, rtt=0.02) == 20
    assert update(controller, 6.0, 20, rtt=0.02) == 19


def test_congestion_restarts_hold() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    update(controller, 0.0, 12, rtt=0.02)
    update(controller, 2.0, 12, rtt=0.02, busy=0.9)
    # The hold starts again at 3.0, the first update after the congestion signal.
    assert update(controller, 3.0, 13, rtt=0.02) == 13
    assert update(controller, 5.9, 13, rtt=0.02) == 13
    assert update(controller, 6.0, 13, rtt=0.02) == 12


def test_peer_wanted_raises_target_within_bounds() -> None:
    controller = StreamCountController(CONFIG, 0.0)
    assert update(controller, 0.0, 9, peer_wanted=15) == 15
    assert controller.target == 15
    assert update(controller, 1.0, 15, peer_wanted=50) == 20
