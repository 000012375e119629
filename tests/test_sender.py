"""The striping media sender: one unacked frame per stream, queue, resends, migration."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._codecs import Codec
from ripp_core._config import RippConfig
from ripp_core._errors import BadDuration, LocalProtocolError
from ripp_core._frames import FLAG_MARKER, FLAG_RESENT, AckFrame, MediaFrame
from ripp_core._sender import MediaSender, SenderState

CONFIG = RippConfig()
OPUS_20MS = 40  # duration units (0.5 ms)


def opus(sender: MediaSender, now: float, *, marker: bool = False) -> MediaFrame:
    return sender.enqueue(Codec.OPUS, OPUS_20MS, b"\x01\x02\x03", now, marker=marker)


def unacked_at(sender: MediaSender) -> float | None:
    # A function call, so that mypy does not narrow the property between reads.
    return sender.oldest_unacked_sent_at


def pending(sender: MediaSender) -> int | None:
    return sender.oldest_pending_sequence


def ack(
    sender: MediaSender, channel: int, frame: MediaFrame, now: float, delay_us: int = 0
) -> float | None:
    return sender.on_ack(channel, AckFrame(frame.sequence, delay_us), now)


def test_sequence_and_timestamp_advance_and_wrap() -> None:
    sender = MediaSender(CONFIG, first_sequence=2**32 - 1, first_timestamp=2**32 - 960)
    first = opus(sender, 0.0, marker=True)
    second = sender.enqueue(Codec.PCMU, 20, bytes(80), 0.0)  # 10 ms of G.711
    third = opus(sender, 0.0)
    assert (first.sequence, first.timestamp, first.flags) == (2**32 - 1, 2**32 - 960, FLAG_MARKER)
    assert (second.sequence, second.timestamp, second.flags) == (0, 0, 0)
    assert (third.sequence, third.timestamp) == (1, 480)
    assert sender.frame_interval == pytest.approx(0.02)
    assert sender.queued == 3


def test_default_frame_interval() -> None:
    assert MediaSender(CONFIG).frame_interval == pytest.approx(0.02)


def test_invalid_media_is_rejected() -> None:
    sender = MediaSender(CONFIG)
    with pytest.raises(BadDuration):
        sender.enqueue(Codec.PCMU, 40, bytes(10), 0.0)
    assert sender.queued == 0


def test_one_unacked_frame_per_channel_and_round_robin() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(10, 0.0)
    sender.add_channel(20, 0.0)
    frames = [opus(sender, 0.0) for _ in range(3)]
    sent = sender.poll(0.0)
    assert sent == [(10, frames[0]), (20, frames[1])]
    assert sender.queued == 1
    assert sender.poll(0.01) == []
    assert sender.busy_fraction == 1.0
    # Channel 20's ack frees it; the third frame goes there.
    assert ack(sender, 20, frames[1], 0.05) == pytest.approx(0.05)
    assert sender.poll(0.05) == [(20, frames[2])]
    # Both free again: the one freed longest ago (10 at 0.06, before 20 at 0.07) goes first.
    ack(sender, 10, frames[0], 0.06)
    ack(sender, 20, frames[2], 0.07)
    more = [opus(sender, 0.08) for _ in range(2)]
    assert sender.poll(0.08) == [(10, more[0]), (20, more[1])]


def test_ack_rtt_sample_and_stale_acks() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(1, 0.0)
    first = opus(sender, 0.0)
    sender.poll(0.0)
    assert ack(sender, 1, first, 0.05) == pytest.approx(0.05)  # smallest raw sample: 50 ms
    frame = opus(sender, 1.0)
    sender.poll(1.0)
    assert unacked_at(sender) == 1.0
    # Wrong sequence, wrong channel, unknown channel: ignored.
    assert sender.on_ack(1, AckFrame(frame.sequence + 1, 0), 1.1) is None
    assert sender.on_ack(99, AckFrame(frame.sequence, 0), 1.1) is None
    assert sender.busy_fraction == 1.0
    # The peer's reported hold (ACK Delay) is subtracted: 100 ms - 20 ms.
    sample = ack(sender, 1, frame, 1.1, delay_us=20_000)
    assert sample == pytest.approx(0.08)
    assert unacked_at(sender) is None
    # A second ack for the same frame is stale.
    assert ack(sender, 1, frame, 1.2) is None
    stats = sender.stats(1.2)
    assert stats.frames_acked == 2
    assert stats.rtt_latest == pytest.approx(0.08)
    assert stats.rtt_smoothed == pytest.approx(0.05 + (0.08 - 0.05) / 8)
    assert stats.rtt_min == pytest.approx(0.05)


def test_ack_delay_is_not_subtracted_below_the_smallest_raw_sample() -> None:
    # RFC 9002 section 5.3: the hold is an estimate; subtracting it must not make a sample
    # smaller than the smallest raw one (the first sample is never corrected). With ACKs
    # sent at once (media_ack_delay 0) all of Ack Delay is such an estimate (lateness).
    sender = MediaSender(RippConfig(media_ack_delay=0.0))
    sender.add_channel(1, 0.0)
    frame = opus(sender, 0.0)
    sender.poll(0.0)
    assert ack(sender, 1, frame, 0.01, delay_us=50_000) == pytest.approx(0.01)
    frame = opus(sender, 1.0)
    sender.poll(1.0)
    assert ack(sender, 1, frame, 1.03, delay_us=25_000) == pytest.approx(0.03)
    frame = opus(sender, 2.0)
    sender.poll(2.0)
    assert ack(sender, 1, frame, 2.04, delay_us=25_000) == pytest.approx(0.015)


def test_a_hold_within_media_ack_delay_is_always_taken_off() -> None:
    # Up to media_ack_delay the hold is the peer's measured wait for its own next frame
    # (§9.2): a steady two-way call holds every ACK about as long, so the guard above
    # would never let it off. Only the part beyond it is guarded.
    config = RippConfig(media_ack_delay=0.02)
    sender = MediaSender(config)
    sender.add_channel(1, 0.0)
    samples = []
    for index, (raw, hold_us) in enumerate([(0.03, 0), (0.028, 18_000), (0.029, 19_000)]):
        frame = opus(sender, float(index))
        sender.poll(float(index))
        samples.append(ack(sender, 1, frame, index + raw, delay_us=hold_us))
    assert samples == pytest.approx([0.03, 0.01, 0.01])
    # 30 ms of hold: the 10 ms beyond the bound is lateness, and taking it off too would go
    # below the smallest sample (10 ms), so only the 20 ms riding part comes off.
    frame = opus(sender, 5.0)
    sender.poll(5.0)
    assert ack(sender, 1, frame, 5.035, delay_us=30_000) == pytest.approx(0.015)


def test_rtt_smoothing_follows_rfc6298() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(1, 0.0)
    for start, rtt in [(0.0, 0.1), (1.0, 0.2)]:
        frame = opus(sender, start)
        sender.poll(start)
        ack(sender, 1, frame, start + rtt)
    # srtt = 7/8 * 0.1 + 1/8 * 0.2; rttvar = 3/4 * 0.05 + 1/4 * |0.1 - 0.2|
    assert sender.rtt.smoothed == pytest.approx(0.1125)
    assert sender.rtt.variance == pytest.approx(0.0625)
    assert sender.rtt.minimum == pytest.approx(0.1)


def test_queue_expiry_drops_and_deadline() -> None:
    sender = MediaSender(CONFIG)
    opus(sender, 0.0)
    opus(sender, 0.1)
    assert sender.next_deadline() == pytest.approx(0.2)
    sender.add_channel(1, 0.2)
    sent = sender.poll(0.2)
    # The first frame waited send_queue_max_delay and is dropped; the second goes.
    assert [frame.sequence for _, frame in sent] == [1]
    assert sender.stats(0.2).frames_dropped == 1
    assert sender.next_deadline() is None


def test_remove_channel_requeues_unacked_at_head_with_resent_flag() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(1, 0.0)
    sender.add_channel(2, 0.0)
    f0, f1, f2 = (opus(sender, 0.0) for _ in range(3))
    sender.poll(0.0)
    sender.remove_channel(1, 0.05)
    sender.remove_channel(1, 0.05)  # idempotent
    assert sender.open_channels == 1
    ack(sender, 2, f1, 0.06)
    sent = sender.poll(0.06)
    assert len(sent) == 1
    channel, frame = sent[0]
    assert channel == 2
    assert (frame.sequence, frame.timestamp) == (f0.sequence, f0.timestamp)
    # the call's first frame carries MARKER (protocol 9.1); the re-send adds RESENT
    assert frame.flags == FLAG_RESENT | FLAG_MARKER
    assert sender.stats(0.06).frames_resent == 1
    # The ack for the resent frame works on its new channel.
    assert ack(sender, 2, frame, 0.1) is not None
    assert sender.poll(0.1)[0][1] == f2


def test_add_existing_channel_is_an_error() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(1, 0.0)
    with pytest.raises(LocalProtocolError):
        sender.add_channel(1, 0.0)


def test_pause_holds_migration_buffer_then_flushes() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(1, 0.0)
    first = opus(sender, 0.0)
    sender.poll(0.0)
    sender.pause()
    sender.requeue_all_unacked(0.01)
    assert sender.open_channels == 0
    # 6 s of 20 ms frames while paused: only the newest 5 s (250 frames) survive.
    for step in range(300):
        opus(sender, 0.02 * step)
    assert sender.queued == 250
    assert sender.stats(6.0).frames_dropped == 51  # the resent first frame went first
    assert sender.next_deadline() is None
    sender.add_channel(2, 7.0)
    assert sender.poll(7.0) == []  # still paused
    sender.resume(7.5)
    sent = sender.poll(7.5)
    assert [frame.sequence for _, frame in sent] == [51]
    assert first.sequence == 0
    # The held frames count as sendable from the resume, not from their enqueue.
    assert sender.next_deadline() == pytest.approx(7.5 + CONFIG.send_queue_max_delay)


def test_requeue_all_in_sequence_order() -> None:
    sender = MediaSender(CONFIG)
    for channel in (5, 6, 7):
        sender.add_channel(channel, 0.0)
    frames = [opus(sender, 0.0) for _ in range(5)]
    sender.poll(0.0)
    sender.requeue_all_unacked(0.1)
    sender.add_channel(8, 0.1)
    sender.add_channel(9, 0.1)
    sent = [frame for _, frame in sender.poll(0.1)]
    assert [f.sequence for f in sent] == [0, 1]
    assert all(f.resent for f in sent)
    sender.requeue_all_unacked(0.15)
    sender.add_channel(10, 0.15)
    queue_order = []
    while True:
        out = sender.poll(0.15)
        if not out:
            break
        channel, frame = out[0]
        queue_order.append(frame.sequence)
        ack(sender, channel, frame, 0.15)
    assert queue_order == [f.sequence for f in frames]


def test_clear_drops_queued_only() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(1, 0.0)
    opus(sender, 0.0)
    opus(sender, 0.0)
    opus(sender, 0.0)
    sender.poll(0.0)
    assert sender.clear() == 2
    assert sender.queued == 0
    stats = sender.stats(0.0)
    assert (stats.frames_dropped, stats.frames_outstanding) == (2, 1)


def test_oldest_pending_sequence() -> None:
    sender = MediaSender(CONFIG, first_sequence=2**32 - 1)
    sender.add_channel(1, 0.0)
    assert pending(sender) is None
    a = opus(sender, 0.0)
    b = opus(sender, 0.0)
    sender.poll(0.0)
    assert pending(sender) == a.sequence
    ack(sender, 1, a, 0.05)
    assert pending(sender) == b.sequence == 0


def test_stats_snapshot() -> None:
    sender = MediaSender(CONFIG)
    for channel in range(4):
        sender.add_channel(channel, 0.0)
    frames = [opus(sender, 0.0) for _ in range(3)]
    sender.poll(0.0)
    ack(sender, 0, frames[0], 0.1)
    stats = sender.stats(0.1, congestion_signals=2)
    assert stats.frames_sent == 3
    assert stats.frames_acked == 1
    assert stats.frames_outstanding == 2
    assert stats.bytes_sent == 9
    assert (stats.streams_open, stats.streams_busy, stats.streams_max_busy) == (4, 2, 3)
    assert stats.congestion_signals == 2
    assert sender.busy_fraction == 0.5
    empty = MediaSender(CONFIG)
    assert empty.busy_fraction == 0.0
    assert empty.stats(0.0).rtt_smoothed is None
    assert empty.stats(0.0).rtt_latest is None


def test_stats_count_frames_that_waited_for_a_stream_and_their_longest_wait() -> None:
    sender = MediaSender(CONFIG)
    sender.add_channel(10, 0.0)
    first = opus(sender, 0.0)
    assert sender.poll(0.0) == [(10, first)]
    assert sender.stats(0.0).frames_waited == 0  # a free stream: no wait
    second = opus(sender, 0.02)
    assert sender.poll(0.02) == []  # the only stream still carries the first frame
    ack(sender, 10, first, 0.035)
    assert sender.poll(0.035) == [(10, second)]
    stats = sender.stats(0.035)
    assert stats.frames_waited == 1
    assert stats.stream_wait_max == pytest.approx(0.015)
    # A frame re-queued after its stream closed (RESENT) is a repair, not a wait for N.
    sender.remove_channel(10, 0.04)
    sender.add_channel(20, 0.05)
    resent = sender.poll(0.05)
    assert [frame.resent for _, frame in resent] == [True]
    assert sender.stats(0.05).frames_waited == 1


def test_export_and_resume_state() -> None:
    old = MediaSender(CONFIG, first_sequence=100, first_timestamp=5000)
    old.add_channel(1, 0.0)
    old.add_channel(2, 0.0)
    frames = [opus(old, 0.0) for _ in range(4)]
    old.poll(0.0)
    ack(old, 2, frames[1], 0.05)
    state = old.export_state()
    assert state.next_sequence == 104
    assert state.next_timestamp == 5000 + 4 * 960
    assert [f.sequence for f in state.frames] == [100, 102, 103]
    assert [f.resent for f in state.frames] == [True, False, False]
    new = MediaSender.from_state(CONFIG, state, 10.0)
    assert new.queued == 3
    new.add_channel(7, 10.0)
    assert new.poll(10.0) == [(7, state.frames[0])]
    nxt = opus(new, 10.0)
    assert (nxt.sequence, nxt.timestamp) == (104, 5000 + 4 * 960)
    assert isinstance(state, SenderState)


# --- property test: the one-unacked-frame rule and frame conservation --------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(1, 3)),
        st.tuples(st.just("poll"), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 7)),
        st.tuples(st.just("stale_ack"), st.integers(0, 7)),
        st.tuples(st.just("add"), st.integers(0, 7)),
        st.tuples(st.just("remove"), st.integers(0, 7)),
        st.tuples(st.just("requeue_all"), st.just(0)),
        st.tuples(st.just("pause"), st.just(0)),
        st.tuples(st.just("resume"), st.just(0)),
        st.tuples(st.just("clear"), st.just(0)),
        st.tuples(st.just("advance"), st.integers(1, 300)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_sender_invariants(ops: list[tuple[str, int]]) -> None:
    config = RippConfig(migration_buffer=0.1)
    sender = MediaSender(config)
    now = 0.0
    in_flight: dict[int, MediaFrame] = {}  # our model of what each channel holds
    acked: set[int] = set()
    for op, arg in ops:
        if op == "enqueue":
            for _ in range(arg):
                opus(sender, now)
        elif op == "poll":
            for channel, frame in sender.poll(now):
                assert channel not in in_flight, "two unacked frames on one channel"
                assert frame.sequence not in acked
                in_flight[channel] = frame
        elif op in ("ack", "stale_ack"):
            held = in_flight.get(arg)
            if held is None:
                assert sender.on_ack(arg, AckFrame(0, 0), now) is None
            elif op == "stale_ack":
                assert sender.on_ack(arg, AckFrame(held.sequence + 1, 0), now) is None
            else:
                assert sender.on_ack(arg, AckFrame(held.sequence, 0), now) is not None
                acked.add(held.sequence)
                del in_flight[arg]
        elif op == "add":
            if arg not in in_flight and sender.open_channels < 8:
                with contextlib.suppress(LocalProtocolError):
                    sender.add_channel(arg, now)
        elif op == "remove":
            sender.remove_channel(arg, now)
            in_flight.pop(arg, None)
        elif op == "requeue_all":
            sender.requeue_all_unacked(now)
            in_flight.clear()
        elif op == "pause":
            sender.pause()
        elif op == "resume":
            sender.resume(now)
        elif op == "clear":
            sender.clear()
        else:
            now += arg / 1000
        stats = sender.stats(now)
        assert stats.frames_outstanding == len(in_flight)
        assert stats.streams_busy <= stats.streams_open
        assert stats.frames_acked == len(acked)
        # Conservation: every frame is acked, dropped, in flight or queued.
        assert (
            stats.frames_acked + stats.frames_dropped + stats.frames_outstanding + sender.queued
            == sender.frames_enqueued
        )
        if sender.paused:
            assert sender.poll(now) == []


def test_marker_on_the_first_frame_and_on_each_telephone_event() -> None:
    """Protocol 9.1 (SHOULD on a call's first frame) and 10.4 (MUST on the first frame of
    each telephone event), whatever the caller asked: echoing servers used to send none."""
    from ripp_core._codecs import Codec as _Codec
    from ripp_core._dtmf import encode_event

    sender = MediaSender(CONFIG)
    audio = [sender.enqueue(_Codec.PCMU, 40, bytes(160), 0.0) for _ in range(2)]
    assert [bool(f.flags & FLAG_MARKER) for f in audio] == [True, False]

    def event(end: bool, duration: int) -> bytes:
        return encode_event(5, end=end, volume=10, duration=duration)

    frames = [
        sender.enqueue(_Codec.TELEPHONE_EVENT, 40, event(False, 160), 0.0),
        sender.enqueue(_Codec.TELEPHONE_EVENT, 40, event(False, 320), 0.0),
        sender.enqueue(_Codec.TELEPHONE_EVENT, 40, event(True, 480), 0.0),
        sender.enqueue(_Codec.TELEPHONE_EVENT, 40, event(True, 480), 0.0),  # RTP-style repeat
        sender.enqueue(_Codec.TELEPHONE_EVENT, 40, event(False, 160), 0.0),  # the next digit
        sender.enqueue(_Codec.PCMU, 40, bytes(160), 0.0),
    ]
    assert [bool(f.flags & FLAG_MARKER) for f in frames] == [True, False, False, False, True, False]
