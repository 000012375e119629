"""The adaptive jitter buffer (R23)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._codecs import Codec
from ripp_core._config import RippConfig
from ripp_core._frames import FLAG_MARKER, FLAG_RESENT, MediaFrame
from ripp_core._jitter import Gap, JitterBuffer

CONFIG = RippConfig()  # initial delay 60 ms, min 20 ms, max 500 ms, factor 4
MARGIN = CONFIG.jitter_late_margin


def frame(sequence: int, *, flags: int = 0, ts_base: int = 0) -> MediaFrame:
    return MediaFrame(
        sequence % 2**32, (ts_base + sequence * 960) % 2**32, Codec.OPUS, 40, b"\x07", flags
    )


def seqs(items: list[MediaFrame | Gap]) -> list[int]:
    return [item.sequence for item in items]


def test_first_frame_plays_after_initial_delay() -> None:
    buffer = JitterBuffer(CONFIG)
    assert buffer.next_deadline() is None
    assert buffer.playout_time(frame(0)) is None
    assert buffer.push(frame(0), 1.0)
    assert buffer.next_deadline() == pytest.approx(1.06)
    assert buffer.pop(1.059) == []
    assert buffer.pop(1.06) == [frame(0)]
    assert buffer.played == 1
    assert buffer.next_deadline() is None


def test_reordered_frames_play_in_order_on_schedule() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0), 0.0)
    buffer.push(frame(2), 0.04)
    buffer.push(frame(1), 0.045)
    assert seqs(buffer.pop(0.07)) == [0]
    assert seqs(buffer.pop(0.08)) == [1]
    assert buffer.next_deadline() == pytest.approx(0.10)
    assert seqs(buffer.pop(0.2)) == [2]


def test_missing_frame_becomes_gap_then_late() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0), 0.0)
    buffer.push(frame(2), 0.04)
    out = buffer.pop(0.08)
    assert out == [frame(0), Gap(1, 960, 40)]
    assert out[1].duration == pytest.approx(0.02)
    assert buffer.gaps == 1
    assert buffer.pop(0.1) == [frame(2)]
    # Frame 1 finally arrives, 30 ms after its playout time: late, and the delay grows.
    assert not buffer.push(frame(1), 0.11)
    assert buffer.late == 1
    assert buffer.delay == pytest.approx(0.09 + MARGIN)  # its lateness, plus headroom


def test_no_gap_while_nothing_later_waits() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0), 0.0)
    assert buffer.pop(5.0) == [frame(0)]
    assert buffer.pop(10.0) == []
    assert buffer.gaps == 0


def test_late_frame_raises_delay_but_not_for_resent() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0), 0.0)
    buffer.pop(0.06)
    assert not buffer.push(frame(1), 0.09)  # due at 0.08
    assert buffer.late == 1
    assert buffer.delay == pytest.approx(0.07 + MARGIN)
    buffer2 = JitterBuffer(CONFIG)
    buffer2.push(frame(0), 0.0)
    assert not buffer2.push(frame(1, flags=FLAG_RESENT), 0.2)  # due at 0.08
    assert buffer2.late == 1
    assert buffer2.delay == pytest.approx(0.06)


def test_late_margin_is_the_headroom_above_a_late_frames_lateness() -> None:
    for margin in (0.0, 0.035):
        buffer = JitterBuffer(RippConfig(jitter_late_margin=margin))
        buffer.push(frame(0), 0.0)
        buffer.pop(0.06)
        assert not buffer.push(frame(1), 0.09)  # due at 0.08: 10 ms late
        assert buffer.delay == pytest.approx(0.06 + 0.01 + margin)


def test_delay_capped_at_max() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0), 0.0)
    buffer.push(frame(2), 0.04)
    buffer.pop(0.1)
    assert not buffer.push(frame(1), 0.49)  # frame 2 is newer: a straggler, late by 0.41
    assert buffer.delay == pytest.approx(0.47 + MARGIN)
    buffer.push(frame(4), 0.08)
    buffer.pop(0.6)
    assert not buffer.push(frame(3), 1.0)
    assert buffer.delay == CONFIG.jitter_max_delay


def test_jitter_raises_delay_to_target() -> None:
    buffer = JitterBuffer(CONFIG)
    rng = random.Random(7)
    for seq in range(200):
        buffer.push(frame(seq), seq * 0.02 + rng.uniform(0.0, 0.06))
        buffer.pop(seq * 0.02)
    assert buffer.jitter > 0.01
    assert buffer.target_delay == pytest.approx(min(0.5, 4 * buffer.jitter))
    assert buffer.delay >= buffer.target_delay


def test_talkspurt_start_lowers_delay() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0, flags=FLAG_MARKER), 0.0)
    buffer.push(frame(1), 0.3)  # late by 0.22 (due 0.08): delay 0.28 + MARGIN
    assert buffer.delay == pytest.approx(0.28 + MARGIN)
    buffer.push(frame(2), 0.31)  # newer than anything: kept, due at 0.04 + 0.3
    assert seqs(buffer.pop(1.0)) == [0, 1, 2]
    # Same talkspurt, buffer empty, no marker: the delay stays.
    buffer.push(frame(3), 1.0)
    assert buffer.delay == pytest.approx(0.28 + MARGIN)
    buffer.pop(2.0)
    # Silence, then a new talkspurt (timestamps continue without counting the silence).
    assert buffer.push(frame(4, flags=FLAG_MARKER), 10.0)
    assert buffer.delay == pytest.approx(max(CONFIG.jitter_min_delay, 4 * buffer.jitter))
    assert buffer.delay < 0.1
    assert buffer.next_deadline() == pytest.approx(10.0 + buffer.delay)
    buffer.push(frame(5), 10.02)
    assert seqs(buffer.pop(10.02 + buffer.delay)) == [4, 5]


def test_stall_reanchors_instead_of_dropping_everything() -> None:
    # A migration holds media for 2 s; the held frames then arrive in a burst.
    buffer = JitterBuffer(CONFIG)
    for seq in range(5):
        buffer.push(frame(seq), seq * 0.02)
    buffer.pop(0.2)
    accepted = [buffer.push(frame(seq), 2.1 + 0.001 * (seq - 5)) for seq in range(5, 105)]
    assert all(accepted)
    assert buffer.late == 0
    # The first held frame plays one delay after it arrived, not 2 s late.
    # (The burst itself counts as jitter and raises the delay a little.)
    assert buffer.delay < 0.1
    assert buffer.next_deadline() == pytest.approx(2.1 + buffer.delay)
    assert seqs(buffer.pop(2.1 + buffer.delay)) == [5]
    assert seqs(buffer.pop(10.0)) == list(range(6, 105))


def test_timestamp_jump_forward_reanchors() -> None:
    buffer = JitterBuffer(CONFIG)
    buffer.push(frame(0), 0.0)
    buffer.push(frame(1, ts_base=48000 * 3600), 0.02)  # an hour ahead in media time
    # Without re-anchoring frame 1 would wait an hour.
    assert seqs(buffer.pop(0.079)) == [0]
    assert seqs(buffer.pop(0.08)) == [1]


def test_duplicate_of_waiting_frame_ignored() -> None:
    buffer = JitterBuffer(CONFIG)
    assert buffer.push(frame(0), 0.0)
    assert not buffer.push(frame(0), 0.01)
    assert buffer.late == 0
    assert buffer.pop(1.0) == [frame(0)]
    assert not buffer.push(frame(0), 1.0)  # already played: late
    assert buffer.late == 1


def test_overflow_drops_oldest() -> None:
    buffer = JitterBuffer(RippConfig(jitter_max_frames=3))
    for seq in range(5):
        assert buffer.push(frame(seq), 0.0)
    assert buffer.dropped == 2
    assert buffer.pending == 3
    assert seqs(buffer.pop(1.0)) == [2, 3, 4]


def test_sequence_wrap() -> None:
    buffer = JitterBuffer(CONFIG)
    start = 2**32 - 2
    for offset in (0, 2, 3, 1):
        buffer.push(frame(start + offset), 0.0)
    assert seqs(buffer.pop(1.0)) == [2**32 - 2, 2**32 - 1, 0, 1]


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
    start=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.3),
    max_extra=st.floats(0.0, 0.3),
    dup=st.floats(0.0, 0.2),
    markers=st.booleans(),
)
def test_output_once_in_order_never_early(
    count: int, seed: int, start: int, loss: float, max_extra: float, dup: float, markers: bool
) -> None:
    rng = random.Random(seed)
    arrivals: list[tuple[float, MediaFrame]] = []
    for offset in range(count):
        if rng.random() < loss:
            continue
        flags = FLAG_MARKER if markers and rng.random() < 0.1 else 0
        if rng.random() < 0.05:
            flags |= FLAG_RESENT
        item = frame(start + offset, flags=flags)
        send = offset * 0.02
        arrivals.append((send + rng.uniform(0.0, max_extra), item))
        if rng.random() < dup:
            arrivals.append((send + rng.uniform(0.0, 2 * max_extra), item))
    arrivals.sort(key=lambda pair: pair[0])
    buffer = JitterBuffer(RippConfig(jitter_max_frames=30))
    output: list[MediaFrame | Gap] = []
    pushed = 0

    def drain(now: float) -> None:
        for item in buffer.pop(now):
            if isinstance(item, MediaFrame):
                # Never before its playout time (as scheduled when it came out).
                due = buffer.playout_time(item)
                assert due is not None and due <= now + 1e-9
            output.append(item)

    for now, item in arrivals:
        deadline = buffer.next_deadline()
        while deadline is not None and deadline <= now:
            drain(deadline)
            deadline = buffer.next_deadline()
        drain(now)
        pushed += buffer.push(item, now)
    drain(1e6)
    assert buffer.pending == 0
    extended = [item.sequence - start for item in output]
    extended = [(s + 2**32) % 2**32 for s in extended]
    assert extended == sorted(set(extended)), "not strictly increasing or repeated"
    frames_out = [item for item in output if isinstance(item, MediaFrame)]
    assert len(frames_out) == buffer.played == pushed - buffer.dropped
    assert len(output) - len(frames_out) == buffer.gaps
    assert len({f.sequence for f in frames_out}) == len(frames_out)


# ---------------------------------------------------------------- hostile sequence numbers
def _bare(sequence: int, timestamp: int) -> MediaFrame:
    return MediaFrame(sequence % 2**32, timestamp % 2**32, Codec.OPUS, 40, b"\x07", 0)


@pytest.mark.parametrize("jump", [2**20, 2**31 - 1, 5_000])
@pytest.mark.parametrize("coherent_timestamps", [True, False])
def test_a_huge_sequence_jump_costs_o1_and_resynchronises(
    jump: int, coherent_timestamps: bool
) -> None:
    """Issue 6, class 2: one frame jumping 2**20 ahead used to make the buffer emit one
    gap per missing number (seconds of CPU, gigabytes of gaps). Now it resynchronises:
    the pending frames are dropped, no gap is reported for the skipped numbers, and the
    new sequence space plays on schedule."""
    buffer = JitterBuffer(CONFIG)
    now = 1.0
    for seq in range(5):
        buffer.push(_bare(seq, seq * 960), now)
        now += 0.02
    assert buffer.push(_bare(5, 5 * 960), now)  # still waiting when the jump comes
    stamp = (5 + jump) * 960 if coherent_timestamps else 6 * 960
    assert buffer.push(_bare(5 + jump, stamp), now)
    assert buffer.resyncs == 1
    out: list[MediaFrame | Gap] = []
    for step in range(50):
        if step < 20:
            buffer.push(_bare(6 + jump + step, stamp + (1 + step) * 960), now)
        out.extend(buffer.pop(now))
        now += 0.02
    assert len(out) <= 60
    assert not any(isinstance(item, Gap) for item in out if item.sequence > 5)
    played = [item.sequence for item in out if isinstance(item, MediaFrame)]
    assert played[-21:] == [(5 + jump + k) % 2**32 for k in range(21)]


def test_a_long_overdue_run_of_missing_frames_is_one_gap() -> None:
    """Within the jump window, a run whose playout time has passed costs one item."""
    buffer = JitterBuffer(CONFIG)
    buffer.push(_bare(0, 0), 1.0)
    assert buffer.pop(1.06) == [_bare(0, 0)]
    # 900 frames missing, then one whose timestamp says it is due now
    buffer.push(_bare(901, 960), 1.08)
    items = buffer.pop(1.2)
    gaps = [item for item in items if isinstance(item, Gap)]
    assert len(gaps) == 1 and gaps[0].frames == 900 and gaps[0].sequence == 1
    assert gaps[0].duration == pytest.approx(900 * 0.02)
    assert items[-1] == _bare(901, 960)
