"""The media receiver: duplicates, sequence wrap, loss and RFC 3550 jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._codecs import Codec
from ripp_core._config import RippConfig
from ripp_core._frames import FLAG_RESENT, MediaFrame
from ripp_core._receiver import MediaReceiver, ReceiverWindow

CONFIG = RippConfig()


def frame(sequence: int, timestamp: int | None = None, *, flags: int = 0) -> MediaFrame:
    ts = (sequence * 960 if timestamp is None else timestamp) % 2**32
    return MediaFrame(sequence % 2**32, ts, Codec.OPUS, 40, b"\x00\x01", flags)


def test_new_and_duplicate() -> None:
    receiver = MediaReceiver(CONFIG)
    assert receiver.on_frame(frame(0), 0.0)
    assert receiver.on_frame(frame(2), 0.04)
    assert not receiver.on_frame(frame(2), 0.05)
    assert receiver.on_frame(frame(1), 0.06)  # late but new
    assert not receiver.on_frame(frame(1, flags=FLAG_RESENT), 0.07)
    stats = receiver.stats(0.1)
    assert (stats.frames_received, stats.duplicates, stats.lost) == (3, 2, 0)
    assert stats.bytes_received == 6
    assert stats.highest_sequence == 2


def test_loss_counts_holes() -> None:
    receiver = MediaReceiver(CONFIG)
    for seq in (10, 11, 14, 15):
        receiver.on_frame(frame(seq), seq * 0.02)
    assert receiver.lost == 2
    receiver.on_frame(frame(12), 0.5)
    assert receiver.lost == 1
    # A frame below the first one received extends the expected range, not the loss.
    receiver.on_frame(frame(9), 0.5)
    assert receiver.lost == 1
    assert receiver.stats(0.5).frames_received == 6


def test_sequence_wrap_is_unwrapped() -> None:
    receiver = MediaReceiver(CONFIG)
    start = 2**32 - 2
    for seq in range(start, start + 5):
        assert receiver.on_frame(frame(seq), 0.0)
    assert not receiver.on_frame(frame(2**32 - 1), 0.0)
    assert not receiver.on_frame(frame(1), 0.0)
    stats = receiver.stats(0.0)
    assert stats.highest_sequence == 2**32 + 2
    assert (stats.frames_received, stats.lost, stats.duplicates) == (5, 0, 2)


def test_frame_older_than_window_counts_as_duplicate() -> None:
    receiver = MediaReceiver(RippConfig(receive_window=8))
    receiver.on_frame(frame(0), 0.0)
    receiver.on_frame(frame(20), 0.0)
    # 13 is within the window (20 - 8 < 13): new. 13 again: duplicate.
    assert receiver.on_frame(frame(13), 0.0)
    assert not receiver.on_frame(frame(13), 0.0)
    # 5 was never received but is older than the window: treated as a duplicate.
    assert not receiver.on_frame(frame(5), 0.0)
    assert receiver.duplicates == 2
    assert receiver.received == 3


def test_window_pruning_keeps_detection_correct() -> None:
    receiver = MediaReceiver(RippConfig(receive_window=4))
    for seq in range(100):
        assert receiver.on_frame(frame(seq), 0.0)
    for seq in range(96, 100):
        assert not receiver.on_frame(frame(seq), 0.0)
    assert receiver.duplicates == 4


def test_jitter_rfc3550() -> None:
    receiver = MediaReceiver(CONFIG)
    # Frames 20 ms apart in media time; arrivals 0, 30, 40 ms.
    receiver.on_frame(frame(0), 0.0)
    assert receiver.jitter == 0.0
    receiver.on_frame(frame(1), 0.03)  # D = 0.03 - 0.02 = 0.01 -> J = 0.01/16
    assert receiver.jitter == pytest.approx(0.01 / 16)
    receiver.on_frame(frame(2), 0.04)  # D = 0.01 - 0.02 = -0.01
    j = 0.01 / 16
    assert receiver.jitter == pytest.approx(j + (0.01 - j) / 16)


def test_jitter_ignores_duplicates_and_resends() -> None:
    receiver = MediaReceiver(CONFIG)
    receiver.on_frame(frame(0), 0.0)
    receiver.on_frame(frame(1), 0.02)
    receiver.on_frame(frame(1), 5.0)
    receiver.on_frame(frame(3, flags=FLAG_RESENT), 5.0)
    receiver.on_frame(frame(2), 0.04)
    assert receiver.jitter == 0.0


def test_jitter_on_timestamp_wrap() -> None:
    receiver = MediaReceiver(CONFIG)
    receiver.on_frame(frame(0, 2**32 - 480), 0.0)
    receiver.on_frame(frame(1, 480), 0.02)  # exactly 960 ticks later
    assert receiver.jitter == pytest.approx(0.0, abs=1e-12)


def test_stats_take_jitter_buffer_values() -> None:
    stats = MediaReceiver(CONFIG).stats(0.0, late=3, playout_delay=0.08)
    assert (stats.late, stats.playout_delay, stats.highest_sequence) == (3, 0.08, None)
    assert stats.lost == 0


def test_handoff_window_drops_old_instance_frames() -> None:
    old = MediaReceiver(CONFIG)
    for seq in (2**32 - 3, 2**32 - 2, 0):
        old.on_frame(frame(seq), 0.0)
    window = old.export_window()
    assert isinstance(window, ReceiverWindow)
    assert window.highest == 2**32
    new = MediaReceiver(CONFIG)
    new.import_window(window)
    assert not new.on_frame(frame(2**32 - 2, flags=FLAG_RESENT), 1.0)
    assert new.on_frame(frame(2**32 - 1, flags=FLAG_RESENT), 1.0)
    assert new.on_frame(frame(1), 1.0)
    stats = new.stats(1.0)
    # The new instance's statistics cover its own frames only.
    assert (stats.frames_received, stats.duplicates, stats.lost) == (2, 1, 0)
    assert stats.highest_sequence == 2**32 + 1


def test_export_window_is_bounded() -> None:
    receiver = MediaReceiver(RippConfig(receive_window=4))
    for seq in range(50):
        receiver.on_frame(frame(seq), 0.0)
    window = receiver.export_window()
    assert window.recent == frozenset({46, 47, 48, 49})
    assert MediaReceiver(CONFIG).export_window() == ReceiverWindow(None, frozenset())


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(0, 2**32 - 1),
    count=st.integers(1, 120),
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.5),
    reorder=st.integers(0, 10),
)
def test_random_loss_reorder_duplication(
    start: int, count: int, seed: int, loss: float, dup: float, reorder: int
) -> None:
    rng = random.Random(seed)
    delivered: list[int] = []
    for offset in range(count):
        if rng.random() < loss:
            continue
        delivered.append(offset)
        if rng.random() < dup:
            delivered.append(offset)
    # Reorder by a bounded displacement (well inside the receive window).
    keyed = sorted(enumerate(delivered), key=lambda item: item[0] + rng.randint(0, reorder))
    arrivals = [offset for _, offset in keyed]
    receiver = MediaReceiver(CONFIG)
    new_offsets: list[int] = []
    for index, offset in enumerate(arrivals):
        if receiver.on_frame(frame(start + offset), index * 0.02):
            new_offsets.append(offset)
    distinct = set(arrivals)
    assert sorted(new_offsets) == sorted(distinct)  # each sequence new exactly once
    stats = receiver.stats(0.0)
    assert stats.duplicates == len(arrivals) - len(distinct)
    assert stats.frames_received == len(distinct)
    if distinct:
        span = max(distinct) - min(distinct) + 1
        assert stats.frames_received + stats.lost == span
        # Extended numbers count from the first frame's own 32-bit value.
        first = arrivals[0]
        assert stats.highest_sequence == (start + first) % 2**32 + max(distinct) - first
    else:
        assert stats.highest_sequence is None


def test_a_sequence_jump_beyond_the_window_starts_a_new_space() -> None:
    """Issue 6, class 2: a hostile jump costs O(1) and does not count 2**31 frames lost."""
    from ripp_core._codecs import Codec as _Codec
    from ripp_core._config import RippConfig as _Config
    from ripp_core._frames import MediaFrame as _Frame
    from ripp_core._receiver import MediaReceiver as _Receiver

    receiver = _Receiver(_Config())
    for seq in range(10):
        assert receiver.on_frame(_Frame(seq, seq * 160, _Codec.PCMU, 40, bytes(160), 0), 0.0)
    for jump in (2**20, 2**31 - 1):
        seq = (9 + jump) % 2**32
        assert receiver.on_frame(_Frame(seq, 0, _Codec.PCMU, 40, bytes(160), 0), 1.0)
        assert receiver.lost == 0
        assert not receiver.on_frame(_Frame(seq, 0, _Codec.PCMU, 40, bytes(160), 0), 1.0)
    assert receiver.resyncs == 2
    # an ordinary gap inside the window is still loss, counted in the new space
    seq = (9 + 2**31 - 1 + 3) % 2**32
    assert receiver.on_frame(_Frame(seq, 0, _Codec.PCMU, 40, bytes(160), 0), 1.0)
    assert (receiver.resyncs, receiver.lost) == (2, 2)
