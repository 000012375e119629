"""RTP -> RIPP timing in the gateway's sans-IO part (protocol §21.3, docs/gateway.md
"RTP timing"): lost packets and silence suppression become skips, late packets are
dropped or placed, new SSRCs and jumps are confirmed before the clock follows them."""

from __future__ import annotations

import struct

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core import Codec
from ripp_sip import Negotiated, RtpFormat, RtpPacket, RtpSender, SkipOut
from ripp_sip._mapping import MediaBridge
from ripp_sip._rtp import FrameOut, opus_duration

PCMU = RtpFormat(0, Codec.PCMU, 8000)
PCMA = RtpFormat(8, Codec.PCMA, 8000)
OPUS = RtpFormat(96, Codec.OPUS, 48000)
EVENT_8K = RtpFormat(101, Codec.TELEPHONE_EVENT, 8000)
EVENT_48K = RtpFormat(102, Codec.TELEPHONE_EVENT, 48000)
CN = RtpFormat(13, Codec.CN, 8000)
MAX_GAP = 30.0


def _bridge(*audio: RtpFormat, event: RtpFormat = EVENT_8K, ptime: int = 20) -> MediaBridge:
    negotiated = Negotiated(None, audio or (PCMU, PCMA), event, CN, ptime, "sendrecv")
    bridge = MediaBridge(negotiated, RtpSender(1, 0, 0), max_gap=MAX_GAP)
    bridge.assembler.ptime = ptime / 1000
    return bridge


@attrs.define
class RippClock:
    """Replays the bridge's output as the RIPP sender's media clock would run it: each
    frame starts where the clock stands; a skip moves it on (the core keeps the residue
    below 0.5 ms, so the sum is exact to that)."""

    now: float = 0.0
    frames: list[tuple[float, FrameOut]] = attrs.Factory(list)
    skips: list[float] = attrs.Factory(list)

    def feed(self, items: list[FrameOut | SkipOut]) -> list[tuple[float, FrameOut]]:
        new = []
        for item in items:
            if isinstance(item, SkipOut):
                assert 0 <= item.seconds <= MAX_GAP
                self.skips.append(item.seconds)
                self.now += item.seconds
            else:
                new.append((self.now, item))
                self.now += item.duration
        self.frames += new
        return new


def _pcmu(seq: int, ts: int, *, ssrc: int = 7, size: int = 160, marker: bool = False,
          fill: int | None = None) -> bytes:
    byte = (seq % 0x7F) if fill is None else fill
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, bytes([byte]) * size,
                     marker).to_bytes()


def _event(seq: int, ts: int, duration: int, *, end: bool = False, marker: bool = False,
           pt: int = 101, digit: int = 5, ssrc: int = 7) -> bytes:
    payload = struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker).to_bytes()


def _run(bridge: MediaBridge, packets: list[bytes]) -> RippClock:
    clock = RippClock()
    for data in packets:
        clock.feed(bridge.frames_from_rtp(data))
    return clock


# ------------------------------------------------------------------ deterministic cases


def test_contiguous_stream_needs_no_skip() -> None:
    clock = _run(_bridge(), [_pcmu(i, 1000 + 160 * i) for i in range(10)])
    assert clock.skips == []
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in range(10)]


def test_lost_packets_are_skipped_so_later_frames_stay_on_their_timestamps() -> None:
    bridge = _bridge()
    sent = [i for i in range(20) if i not in (3, 4, 11)]
    clock = _run(bridge, [_pcmu(i, 160 * i) for i in sent])
    assert clock.skips == [0.04, 0.02]
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in sent]
    assert bridge.timeline is not None and bridge.timeline.skipped == 3 * 160


def test_silence_suppression_with_marker_skips_the_silence() -> None:
    bridge = _bridge()
    packets = [_pcmu(i, 160 * i) for i in range(5)]
    packets += [_pcmu(5 + i, 160 * (5 + i) + 16000, marker=i == 0) for i in range(3)]
    clock = _run(bridge, packets)
    assert clock.skips == [2.0]
    start, frame = clock.frames[5]
    assert abs(start - 2.1) < 1e-9 and frame.marker


def test_reordered_packet_is_dropped_as_late_and_later_audio_keeps_its_place() -> None:
    bridge = _bridge()
    order = [0, 1, 3, 2, 4, 5]
    clock = _run(bridge, [_pcmu(i, 160 * i) for i in order])
    assert [round(t, 6) for t, _ in clock.frames] == [0.0, 0.02, 0.06, 0.08, 0.1]
    assert [f.payload[0] for _, f in clock.frames] == [0, 1, 3, 4, 5]
    assert bridge.timeline is not None and bridge.timeline.late == 1


def test_duplicates_are_dropped() -> None:
    bridge = _bridge()
    clock = _run(bridge, [_pcmu(0, 0), _pcmu(1, 160), _pcmu(1, 160), _pcmu(0, 0),
                          _pcmu(2, 320)])
    assert len(clock.frames) == 3 and clock.skips == []
    assert bridge.timeline is not None and bridge.timeline.late == 2


def test_sequence_and_timestamp_wrap() -> None:
    bridge = _bridge()
    seq0, ts0 = 0xFFFD, 2**32 - 320
    sent = [0, 1, 2, 4, 5, 6]  # loss across both wraps
    clock = _run(bridge, [_pcmu(seq0 + i, ts0 + 160 * i) for i in sent])
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in sent]
    assert bridge.timeline is not None and bridge.timeline.late == 0


def test_opus_at_48khz_is_skipped_in_its_own_clock() -> None:
    bridge = _bridge(OPUS, event=EVENT_48K)
    sent = [0, 1, 2, 5, 6]
    packets = [RtpPacket(96, i, 960 * i, 9, b"\xfc\x00", False).to_bytes() for i in sent]
    clock = _run(bridge, packets)
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in sent]
    assert clock.skips == [0.04]


def test_opus_frame_duration_comes_from_its_toc_not_the_ptime() -> None:
    bridge = _bridge(OPUS, event=EVENT_48K, ptime=20)
    forty = bytes([2 << 3]) + b"\x00"  # SILK config 2: one 40 ms frame
    packets = [RtpPacket(96, i, 1920 * i, 9, forty, False).to_bytes() for i in (0, 1, 3)]
    clock = _run(bridge, packets)
    assert [(round(t, 6), f.duration) for t, f in clock.frames] == [
        (0.0, 0.04), (0.04, 0.04), (0.12, 0.04)]
    assert clock.skips == [0.04]


def test_opus_duration_from_toc() -> None:
    assert opus_duration(bytes([31 << 3])) == 0.02  # CELT 20 ms, code 0
    assert opus_duration(bytes([(16 << 3) | 1])) == 0.005  # two CELT 2.5 ms frames
    assert opus_duration(bytes([(3 << 3) | 3, 2])) == 0.12  # two SILK 60 ms frames
    assert opus_duration(bytes([3]) ) is None and opus_duration(b"") is None
    bridge = _bridge(OPUS, event=EVENT_48K, ptime=20)
    too_long = bytes([(3 << 3) | 1])  # 120 ms: RIPP cannot carry it whole; ptime it is
    (frame,) = bridge.frames_from_rtp(RtpPacket(96, 0, 0, 9, too_long, False).to_bytes())
    assert isinstance(frame, FrameOut) and frame.duration == 0.02


def test_dtmf_event_packets_share_a_timestamp_and_are_not_late() -> None:
    bridge = _bridge()
    packets = [_pcmu(i, 160 * i) for i in range(5)]  # audio 0..100 ms
    event_ts = 5 * 160 + 160  # one packet's time lost before the event starts (120 ms)
    packets += [_event(5, event_ts, 160, marker=True), _event(6, event_ts, 320),
                _event(7, event_ts, 480, end=True), _event(8, event_ts, 480, end=True),
                _event(9, event_ts, 480, end=True)]
    packets += [_pcmu(10 + i, event_ts + 480 + 160 * i, marker=i == 0) for i in range(3)]
    clock = _run(bridge, packets)
    events = [(t, f) for t, f in clock.frames if f.codec is Codec.TELEPHONE_EVENT]
    assert [round(t, 6) for t, _ in events] == [0.12, 0.14, 0.16]
    assert events[0][1].marker
    assert sum(1 for _, f in events if f.payload[1] & 0x80) == 1, "End forwarded once"
    audio_after = [t for t, f in clock.frames if f.codec is Codec.PCMU][5:]
    assert [round(t, 6) for t in audio_after] == [0.18, 0.2, 0.22]
    assert bridge.timeline is not None
    assert (bridge.timeline.late, bridge.timeline.repeats) == (0, 2)


def test_dtmf_at_48khz_event_clock() -> None:
    bridge = _bridge(OPUS, event=EVENT_48K)
    packets = [RtpPacket(96, i, 960 * i, 9, b"\xfc\x00", False).to_bytes() for i in range(3)]
    # telephone-event/48000: durations in 48 kHz units (scaled to 8 kHz for RIPP, §10.4)
    packets += [_event(2 + k, 2880, 960 * k, end=k == 3, marker=k == 1, pt=102, ssrc=9)
                for k in (1, 2, 3)]
    packets += [RtpPacket(96, 6 + i, 2880 + 2880 + 960 * i, 9, b"\xfc\x00", i == 0).to_bytes()
                for i in range(2)]
    clock = _run(bridge, packets)
    assert [round(t, 6) for t, _ in clock.frames] == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1,
                                                     0.12, 0.14]
    assert clock.frames[3][1].payload == struct.pack("!BBH", 5, 10, 160)


def test_audio_after_overlong_event_frames_is_not_dropped() -> None:
    # Event packets every 10 ms but RIPP frames of 20 ms: the RIPP clock runs ahead of
    # RTP's; the audio after the event follows right after, the next silence absorbs it.
    bridge = _bridge()
    packets = [_event(k, 0, 80 * k, marker=k == 1, end=k == 4) for k in range(1, 5)]
    packets += [_pcmu(5 + i, 320 + 160 * i) for i in range(2)]
    packets += [_pcmu(7, 320 + 160 * 2 + 8000, marker=True)]  # a second's silence
    clock = _run(bridge, packets)
    audio = [round(t, 6) for t, f in clock.frames if f.codec is Codec.PCMU]
    assert audio == [0.08, 0.1, 1.08], "40 ms ahead until the silence, then on time again"
    assert bridge.timeline is not None and bridge.timeline.late == 0


def test_comfort_noise_then_talkspurt() -> None:
    bridge = _bridge()
    packets = [_pcmu(0, 0), RtpPacket(13, 1, 160, 7, b"\x40", False).to_bytes(),
               _pcmu(2, 160 + 8000, marker=True)]
    clock = _run(bridge, packets)
    assert [f.codec for _, f in clock.frames] == [Codec.PCMU, Codec.CN, Codec.PCMU]
    assert abs(clock.frames[2][0] - (160 + 8000) / 8000) < 1e-9


def test_5ms_packets_gap_inside_a_recut_frame_is_filled_not_skipped() -> None:
    bridge = _bridge()
    sent = [0, 1, 3, 4, 5, 6, 7]  # 5 ms packets; #2 lost, inside the first 20 ms frame
    clock = _run(bridge, [_pcmu(i, 40 * i, size=40, fill=i + 1) for i in sent])
    assert clock.skips == []
    first, second = (f.payload for _, f in clock.frames)
    assert first == bytes([1] * 40 + [2] * 40 + [0xFF] * 40 + [4] * 40)
    assert second == bytes([5] * 40 + [6] * 40 + [7] * 40 + [8] * 40)


def test_5ms_late_packet_is_placed_in_the_incomplete_frame() -> None:
    bridge = _bridge()
    order = [0, 2, 1, 3, 4, 5, 6, 7]  # 1 arrives while its frame is still incomplete
    clock = _run(bridge, [_pcmu(i, 40 * i, size=40, fill=i + 1) for i in order])
    assert clock.frames[0][1].payload == bytes([1] * 40 + [2] * 40 + [3] * 40 + [4] * 40)
    assert bridge.rtp_late_placed == 1


def test_5ms_long_gap_completes_the_frame_then_skips_the_rest() -> None:
    bridge = _bridge()
    packets = [_pcmu(0, 0, size=40, fill=1), _pcmu(1, 40 + 8000, size=40, fill=2, marker=True)]
    packets += [_pcmu(2 + i, 80 + 8000 + 40 * i, size=40, fill=3) for i in range(3)]
    clock = _run(bridge, packets)
    assert clock.frames[0][1].payload == bytes([1] * 40 + [0xFF] * 120)
    assert clock.skips == [(8000 - 120) / 8000]
    assert abs(clock.frames[1][0] - 1.005) < 1e-9


def test_codec_change_with_an_incomplete_frame_skips_its_time() -> None:
    bridge = _bridge()
    packets = [_pcmu(0, 0, size=40), RtpPacket(8, 1, 40, 7, b"\x01" * 160).to_bytes()]
    clock = _run(bridge, packets)
    assert clock.skips == [0.005]
    assert abs(clock.frames[0][0] - 0.005) < 1e-9


def test_new_ssrc_is_confirmed_by_its_second_packet_then_anchored_with_marker() -> None:
    bridge = _bridge()
    packets = [_pcmu(i, 160 * i) for i in range(3)]
    packets += [_pcmu(500 + i, 123456789 + 160 * i, ssrc=99) for i in range(3)]
    clock = _run(bridge, packets)
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in range(6)]
    assert clock.skips == []
    assert clock.frames[3][1].marker and not clock.frames[4][1].marker
    assert bridge.timeline is not None
    assert (bridge.timeline.ssrc, bridge.timeline.reanchored) == (99, 1)
    assert bridge.remote_ssrc == 99


def test_a_jump_beyond_max_gap_is_a_new_timeline_without_a_skip() -> None:
    bridge = _bridge()
    jump = 3 * 3600 * 8000
    packets = [_pcmu(i, 160 * i) for i in range(3)]
    packets += [_pcmu(3 + i, jump + 160 * i) for i in range(3)]
    clock = _run(bridge, packets)
    assert clock.skips == [] and len(clock.frames) == 6
    assert clock.frames[3][1].marker


def test_a_single_spoofed_packet_changes_nothing() -> None:
    bridge = _bridge()
    packets = [_pcmu(i, 160 * i) for i in range(3)]
    packets += [_pcmu(40000, 2**31, ssrc=7), _pcmu(3, 480), _pcmu(4, 640),
                _pcmu(9, 999, ssrc=1234), _pcmu(5, 800)]
    clock = _run(bridge, packets)
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in range(6)]
    assert clock.skips == []
    assert bridge.timeline is not None and bridge.timeline.rejected == 2


def test_skip_never_exceeds_max_gap() -> None:
    bridge = _bridge()
    bridge.max_gap = 1.0
    packets = [_pcmu(0, 0), _pcmu(1, 160 + 7999), _pcmu(2, 160 + 7999 + 160 + 8001),
               _pcmu(3, 160 + 7999 + 160 + 8001 + 160)]
    clock = _run(bridge, packets)
    assert max(clock.skips) <= 1.0
    assert len(clock.frames) == 4, "the jump beyond max_gap was confirmed by the next packet"
    assert clock.frames[2][1].marker


# ------------------------------------------------------------------ properties

_ptimes = st.sampled_from([10, 20, 30, 40])


@settings(max_examples=150, deadline=None)
@given(ptime=_ptimes, seq0=st.integers(0, 0xFFFF), ts0=st.integers(0, 2**32 - 1),
       plan=st.lists(st.tuples(st.booleans(), st.integers(0, 400)), min_size=1, max_size=60))
def test_in_order_stream_with_loss_and_silence_is_on_schedule(
        ptime: int, seq0: int, ts0: int, plan: list[tuple[bool, int]]) -> None:
    """Whatever is lost or suppressed, every frame starts on the RIPP clock exactly where
    its RTP timestamp says (relative to the first), across sequence and timestamp wrap."""
    bridge = _bridge()
    size = 8 * ptime
    clock = RippClock()
    ts, expected = ts0, []
    for i, (lost, silence) in enumerate(plan):
        if i and silence > 350:
            ts += 8 * silence * 10  # sometimes seconds of silence
        if not lost or i == 0:
            expected.append((ts - ts0) / 8000)
            clock.feed(bridge.frames_from_rtp(_pcmu(seq0 + i, ts, size=size)))
        ts += size
    assert len(clock.frames) == len(expected)
    assert all(abs(t - e) < 1e-9 for (t, _), e in zip(clock.frames, expected, strict=True))


@settings(max_examples=150, deadline=None)
@given(order=st.permutations(range(12)), dups=st.lists(st.integers(0, 11), max_size=6),
       ptime=_ptimes)
def test_reordered_and_duplicated_stream_never_places_audio_out_of_position(
        order: list[int], dups: list[int], ptime: int) -> None:
    """Any packet that is sent is sent at its own timestamp's place; the rest count as
    late; nothing is sent twice."""
    bridge = _bridge()
    size = 8 * ptime
    arrivals = list(order) + dups
    clock = _run(bridge, [_pcmu(i, size * i, size=size) for i in arrivals])
    starts = [t for t, _ in clock.frames]
    assert starts == sorted(starts)
    for t, frame in clock.frames:
        # the first arrival anchors the timeline (RIPP 0)
        assert abs(t - (frame.payload[0] - arrivals[0]) * ptime / 1000) < 1e-9
    assert len({f.payload[0] for _, f in clock.frames}) == len(clock.frames)
    assert bridge.timeline is not None
    assert len(clock.frames) + bridge.timeline.late == len(arrivals)


@settings(max_examples=150, deadline=None)
@given(lost=st.sets(st.integers(1, 63), max_size=20), late=st.sets(st.integers(1, 62),
                                                                    max_size=8))
def test_5ms_packets_keep_every_sample_in_place(lost: set[int], late: set[int]) -> None:
    """G.711 at 5 ms, re-cut into 20 ms frames, with loss and packets one step late:
    every sample that reaches RIPP sits at its RTP timestamp's position."""
    bridge = _bridge()
    order: list[int] = []
    for i in range(64):
        if i in lost:
            continue
        if i - 1 in late and order and order[-1] == i - 1:
            order[-1:] = [i, i - 1]  # swap: i - 1 arrives after i
        else:
            order.append(i)
    clock = _run(bridge, [_pcmu(i, 40 * i, size=40, fill=i % 0xFE) for i in order])
    timeline = bytearray(b"\xff" * 40 * 64)
    position = 0
    for start, frame in clock.frames:
        position = round(start * 8000)
        timeline[position:position + len(frame.payload)] = frame.payload
    end = position + 160 if clock.frames else 0
    received = {i for i in order if 40 * (i + 1) <= end}
    in_place = {i for i in received if timeline[40 * i:40 * (i + 1)] == bytes([i % 0xFE]) * 40}
    assert bridge.timeline is not None
    assert len(received - in_place) <= bridge.timeline.late - bridge.rtp_late_placed
    for i in range(64):
        chunk = bytes(timeline[40 * i:40 * (i + 1)])
        if 40 * (i + 1) <= end:
            assert chunk in (bytes([i % 0xFE]) * 40, b"\xff" * 40), i


_garbage = st.builds(
    lambda pt, seq, ts, ssrc, size, marker: RtpPacket(pt, seq, ts, ssrc, b"\x01" * size,
                                                      marker).to_bytes(),
    st.sampled_from([0, 8, 13, 101]), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
    st.sampled_from([7, 8, 2**32 - 1]), st.sampled_from([4, 40, 80, 160, 1]), st.booleans())


@settings(max_examples=200, deadline=None)
@given(hostile=st.lists(st.tuples(st.integers(0, 40), _garbage), max_size=30))
def test_hostile_packets_cost_bounded_and_never_exceed_max_gap(
        hostile: list[tuple[int, bytes]]) -> None:
    """Random SSRCs, sequence numbers and timestamps among a good stream: no exception,
    no skip beyond max_gap, the RIPP clock never runs backwards, and each packet yields
    at most a couple of frames and skips."""
    bridge = _bridge()
    bridge.max_gap = 2.0
    clock = RippClock()
    inject: dict[int, list[bytes]] = {}
    for at, data in hostile:
        inject.setdefault(at, []).append(data)
    for i in range(40):
        for data in [*inject.get(i, []), _pcmu(i, 160 * i)]:
            before = clock.now
            items = bridge.frames_from_rtp(data)
            assert len(items) <= 6
            clock.feed(items)
            assert clock.now >= before
    assert all(s <= 2.0 for s in clock.skips)


@settings(max_examples=100, deadline=None)
@given(hostile=st.lists(st.tuples(st.integers(0, 40), _garbage), max_size=30))
def test_other_ssrcs_never_disturb_the_confirmed_stream(
        hostile: list[tuple[int, bytes]]) -> None:
    """Packets of other SSRCs, never two in a row that confirm each other, leave the good
    stream exactly on schedule."""
    bridge = _bridge()
    clock = RippClock()
    inject: dict[int, bytes] = {}
    for at, data in hostile:
        inject.setdefault(at, data[:8] + struct.pack("!I", 0xBAD0 + at) + data[12:])
    for i in range(40):
        if i in inject and i > 0:
            clock.feed(bridge.frames_from_rtp(inject[i]))
        clock.feed(bridge.frames_from_rtp(_pcmu(i, 160 * i)))
    assert [round(t, 6) for t, _ in clock.frames] == [round(0.02 * i, 6) for i in range(40)]
    assert [f.payload[0] for _, f in clock.frames] == [i % 0x7F for i in range(40)]
    assert clock.skips == []


_segment = st.tuples(
    st.integers(1, 8),                       # audio packets in the talkspurt
    st.sets(st.integers(0, 7), max_size=3),  # which of them are lost
    st.integers(0, 3),                       # silence before it, in 100 ms
    st.integers(2, 8),                       # event length in 20 ms packets
    st.sets(st.integers(0, 7), max_size=3),  # event updates lost
    st.integers(1, 3),                       # End copies received
)


@settings(max_examples=150, deadline=None)
@given(segments=st.lists(_segment, min_size=1, max_size=6), ts0=st.integers(0, 2**32 - 1),
       seq0=st.integers(0, 0xFFFF))
def test_dtmf_among_talkspurts_never_late_and_audio_on_schedule(
        segments: list[tuple[int, set[int], int, int, set[int], int]], ts0: int,
        seq0: int) -> None:
    """Talkspurts with loss and silence, each followed by an RFC 4733 event (updates every
    20 ms sharing the event's timestamp, some lost, the End repeated): nothing is late,
    every audio frame is on its timestamp, each event's frames lie within the event's
    time, and each End reaches RIPP once."""
    bridge = _bridge()
    clock = RippClock()
    ts, seq = 0, 0
    expected_audio: list[float] = []
    events: list[tuple[float, float]] = []
    first = True

    def send(data: bytes) -> None:
        nonlocal first
        clock.feed(bridge.frames_from_rtp(data))
        first = False

    for talk, lost, silence, length, lost_updates, ends in segments:
        ts += 800 * silence if not first else 0
        for i in range(talk):
            if i in lost and not first:
                seq += 1
            else:
                expected_audio.append(ts / 8000)
                send(_pcmu(seq0 + seq, ts0 + ts, marker=i == 0))
                seq += 1
            ts += 160
        events.append((ts / 8000, (ts + 160 * length) / 8000))
        for k in range(1, length):
            if k - 1 not in lost_updates:
                send(_event(seq0 + seq, ts0 + ts, 160 * k, marker=k == 1))
            seq += 1
        for _ in range(ends):
            send(_event(seq0 + seq, ts0 + ts, 160 * length, end=True))
            seq += 1
        ts += 160 * length
    timeline = bridge.timeline
    assert timeline is not None
    assert (timeline.late, timeline.rejected, timeline.reanchored) == (0, 0, 0)
    audio = [t for t, f in clock.frames if f.codec is Codec.PCMU]
    assert len(audio) == len(expected_audio)
    assert all(abs(a - e) < 1e-9 for a, e in zip(audio, expected_audio, strict=True))
    event_frames = [(t, f) for t, f in clock.frames if f.codec is Codec.TELEPHONE_EVENT]
    assert sum(1 for _, f in event_frames if f.payload[1] & 0x80) == len(segments)
    for t, frame in event_frames:
        assert any(start - 1e-9 <= t and t + frame.duration <= end + 1e-9
                   for start, end in events), t
