"""Paced sending, marks, barge-in and DTMF (R19, R23): unit and whole-call tests."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_core import Codec, DtmfReceived, LocalProtocolError, MarkReached, MediaReceived
from ripp_core._dtmf import decode_event, digit_items
from ripp_core._pacer import PacedFrame, PacedMark, PacedPause, Pacer
from ripp_core.testing import Impairment

from .call_harness import Trunk

FRAME = PacedFrame(Codec.PCMU, 40, bytes(160))  # 20 ms


def test_pacer_releases_one_frame_per_frame_duration() -> None:
    pacer = Pacer()
    for _ in range(5):
        pacer.push(FRAME, now=10.0)
    assert pacer.queued == 5 and pacer.queued_seconds == pytest.approx(0.1)
    assert pacer.due(10.0) == [FRAME]
    assert pacer.due(10.019) == []
    assert pacer.next_deadline() == pytest.approx(10.02)
    assert pacer.due(10.05) == [FRAME, FRAME]  # late caller: catch up, no frame lost
    assert pacer.due(10.08) == [FRAME, FRAME]
    assert pacer.next_deadline() is None


def test_back_to_back_bursts_join_without_gap_or_overlap() -> None:
    pacer = Pacer()
    pacer.push(FRAME, now=0.0)
    assert pacer.due(0.0) == [FRAME]
    pacer.push(FRAME, now=0.005)  # previous frame still playing until 0.02
    assert pacer.next_deadline() == pytest.approx(0.02)
    pacer.due(0.02)
    pacer.push(FRAME, now=1.0)  # long after: starts at once
    assert pacer.next_deadline() == 1.0


def test_pause_and_mark_keep_their_place() -> None:
    pacer = Pacer()
    pacer.push(FRAME, 0.0)
    pacer.push(PacedPause(0.05), 0.0)
    pacer.push(PacedMark("after-pause"), 0.0)
    pacer.push(FRAME, 0.0)
    assert pacer.due(0.0) == [FRAME]
    assert pacer.due(0.069) == []
    assert pacer.due(0.07) == [PacedMark("after-pause"), FRAME]


def test_clear_drops_frames_and_returns_marks() -> None:
    pacer = Pacer()
    for item in (FRAME, PacedMark("a"), FRAME, FRAME, PacedMark("b")):
        pacer.push(item, 0.0)
    pacer.due(0.0)
    assert pacer.clear() == (2, [("a", 0), ("b", 2)])
    assert pacer.next_deadline() is None and pacer.queued == 0


@given(st.lists(st.sampled_from([20, 40, 60, 120]), min_size=1, max_size=40))
def test_paced_release_times_follow_media_time(units: list[int]) -> None:
    pacer = Pacer()
    for u in units:
        pacer.push(PacedFrame(Codec.OPUS, u, b"\x01"), 0.0)
    released: list[float] = []
    now = 0.0
    while (deadline := pacer.next_deadline()) is not None:
        now = deadline
        released += [now for item in pacer.due(now) if isinstance(item, PacedFrame)]
    expected, t = [], 0.0
    for u in units:
        expected.append(t)
        t += u * 0.0005
    assert released == pytest.approx(expected)


def test_dtmf_digit_frames_follow_rfc4733() -> None:
    items = digit_items("5#", duration=0.1, gap=0.05, volume=10, frame_duration=0.02)
    frames = [i for i in items if isinstance(i, PacedFrame)]
    assert len(frames) == 10 and isinstance(items[5], PacedPause)
    events = [decode_event(f.payload) for f in frames]
    assert [e.digit for e in events] == ["5"] * 5 + ["#"] * 5
    assert [e.duration for e in events[:5]] == [160, 320, 480, 640, 800]
    assert [e.end for e in events[:5]] == [False] * 4 + [True]
    assert all(e.volume == 10 for e in events)
    assert frames[0].marker and not frames[1].marker and frames[5].marker
    with pytest.raises(LocalProtocolError):
        digit_items("5x", duration=0.1, gap=0.05, volume=10, frame_duration=0.02)


def test_audio_resumed_after_a_pause_of_a_frame_or_more_carries_marker() -> None:
    pacer = Pacer()
    pacer.push(FRAME, now=0.0)
    assert pacer.due(0.0) == [FRAME]  # plays until 0.02
    pacer.push(FRAME, now=0.025)  # a 5 ms lull: still the same talkspurt
    assert pacer.due(0.025) == [FRAME]
    pacer.push(FRAME, now=0.045)  # on time (the previous one ends at 0.045): no pause
    assert pacer.due(0.045) == [FRAME]
    pacer.push(FRAME, now=0.2)  # 135 ms of nothing: a new talkspurt
    pacer.push(FRAME, now=0.2)
    resumed = pacer.due(0.22)
    assert [frame.marker for frame in resumed] == [True, False]
    # Exactly one frame's time of silence is a pause too.
    pacer.push(FRAME, now=0.26)
    assert [frame.marker for frame in pacer.due(0.26)] == [True]
    # After barge-in (clear) the next audio starts afresh; nothing is left to mark.
    pacer.push(FRAME, now=0.5)
    pacer.clear()
    pacer.push(FRAME, now=0.6)
    assert [frame.marker for frame in pacer.due(0.6)] == [False]


def test_paced_audio_after_a_pause_reaches_the_peer_with_marker() -> None:
    trunk = Trunk(impairment=Impairment(delay=0.02))
    handle = trunk.connect()
    flags: dict[int, bool] = {}

    def note(event: object) -> None:
        if isinstance(event, MediaReceived):
            flags[event.frame.sequence] = event.frame.marker

    trunk.servers["a"].reactors.append(note)
    now = trunk.net.now
    for index in range(5):
        trunk.rclient.play(handle, Codec.PCMU, 0.02, bytes([index]) * 160, now)
    trunk.client.drain()
    trunk.net.run_for(0.5)  # the five frames play out, then 400 ms of silence
    now = trunk.net.now
    for index in range(5):
        trunk.rclient.play(handle, Codec.PCMU, 0.02, bytes([index]) * 160, now)
    trunk.client.drain()
    trunk.net.run_for(0.5)
    assert sorted(flags) == list(range(10))
    # The first frame of the call and the first after the pause, and no other.
    assert [s for s, marker in sorted(flags.items()) if marker] == [0, 5]


def test_audio_handed_over_at_once_leaves_at_real_time_pace() -> None:
    trunk = Trunk(impairment=Impairment(delay=0.02))
    handle = trunk.connect()
    now = trunk.net.now
    for index in range(100):  # two seconds of audio, handed over in one go
        trunk.rclient.play(handle, Codec.PCMU, 0.02, bytes([index]) * 160, now)
    trunk.rclient.mark(handle, "prompt-done", now)
    trunk.client.drain()
    trunk.net.run_for(3.0)
    log = trunk.c2s[handle]
    assert sorted(log.received) == list(range(100))
    arrivals = [log.received[s] for s in range(100)]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) == pytest.approx(0.02, abs=0.002)  # no burst
    assert arrivals[-1] - arrivals[0] == pytest.approx(1.98, abs=0.01)
    # the mark fires when the far end has acked the last frame: ~ last send + RTT
    (mark_time, mark) = next((t, e) for t, e in trunk.client.events if isinstance(e, MarkReached))
    assert mark.name == "prompt-done" and mark.dropped == 0
    assert mark_time == pytest.approx(now + 1.98 + 0.04, abs=0.01)


def test_clear_for_barge_in_drops_queued_audio_and_releases_marks() -> None:
    trunk = Trunk(impairment=Impairment(delay=0.02))
    handle = trunk.connect()
    start = trunk.net.now
    for index in range(100):
        trunk.rclient.play(handle, Codec.PCMU, 0.02, bytes([index]) * 160, start)
    trunk.rclient.mark(handle, "end-of-prompt", start)
    trunk.client.drain()
    trunk.net.run_for(0.5)  # the caller starts talking half a second in
    dropped = trunk.rclient.clear(handle, trunk.net.now)
    trunk.client.drain()
    assert 70 <= dropped <= 76
    trunk.net.run_for(1.0)
    received = sorted(trunk.c2s[handle].received)
    assert received == list(range(100 - dropped))  # what left before clear(), nothing after
    marks = trunk.client.of(MarkReached)
    assert [(m.name, m.dropped) for m in marks] == [("end-of-prompt", dropped)]


def test_dtmf_end_to_end_both_ways() -> None:
    trunk = Trunk(impairment=Impairment(delay=0.01, loss=0.05), seed=5)
    handle = trunk.connect()
    name, server_handle = trunk.server_calls[handle]
    trunk.rclient.send_dtmf(handle, "159#", trunk.net.now)
    trunk.rserver(name).send_dtmf(server_handle, "*0D", trunk.net.now)
    trunk.client.drain()
    trunk.servers[name].drain()
    trunk.net.run_for(2.0)
    at_server = trunk.servers[name].of(DtmfReceived)
    at_client = trunk.client.of(DtmfReceived)
    assert [d.digit for d in at_server] == ["1", "5", "9", "#"]
    assert [d.digit for d in at_client] == ["*", "0", "D"]
    assert all(d.duration == pytest.approx(0.1) and d.volume == 10 for d in at_server + at_client)


def test_equal_short_digits_in_a_row_are_all_reported() -> None:
    trunk = Trunk(impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    # 60 ms digits are three frames each: End frames of the two 5s are 3 sequence numbers
    # apart, exactly what a repeated End looks like, but the second 5 starts with MARKER.
    trunk.rclient.send_dtmf(handle, "1559#", trunk.net.now, duration=0.06)
    trunk.client.drain()
    trunk.net.run_for(1.5)
    assert [d.digit for d in trunk.servers["a"].of(DtmfReceived)] == list("1559#")


def test_repeated_end_frames_from_rtp_style_senders_report_one_digit() -> None:
    from ripp_core._dtmf import encode_event

    trunk = Trunk(impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    now = trunk.net.now
    for n, end in enumerate([False, False, True, True, True]):  # End sent three times
        trunk.rclient.send_media(
            handle,
            Codec.TELEPHONE_EVENT,
            0.02,
            encode_event(7, end, 10, 160 * min(n + 1, 3)),
            now,
            marker=n == 0,
        )
    trunk.client.drain()
    trunk.net.run_for(0.5)
    assert [d.digit for d in trunk.servers["a"].of(DtmfReceived)] == ["7"]


def test_oversized_payload_is_refused_locally() -> None:
    trunk = Trunk()
    handle = trunk.connect()
    with pytest.raises(LocalProtocolError, match="max_frame_size"):
        trunk.rclient.send_media(handle, Codec.OPUS, 0.02, bytes(1490), trunk.net.now)
    with pytest.raises(LocalProtocolError, match="max_frame_size"):
        trunk.rclient.play(handle, Codec.OPUS, 0.02, bytes(1490), trunk.net.now)
    assert trunk.rclient.call(handle).state.value == "connected"
