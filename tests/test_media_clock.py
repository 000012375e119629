"""Media clock skips (protocol 9.4) and the playout clock of a relay (issue 12).

The sender's ``skip``: timestamps after a skip, the MARKER rule, the remainder, wrap,
bad input, hand-over. :class:`PlayoutClock`: property tests over any playout schedule,
and the whole chain in virtual time (a jitter buffer playing out, the clock, the sender)
against the same chain without skips.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core import BadSkip, LocalProtocolError, MediaGap, PlayoutClock, RippConfig
from ripp_core._call import CallHandoff, CallRequest
from ripp_core._codecs import DURATION_UNIT, Codec
from ripp_core._frames import FLAG_MARKER, TIMESTAMP_MODULUS, MediaFrame
from ripp_core._headers import parse_name_addr
from ripp_core._jitter import Gap, JitterBuffer
from ripp_core._pacer import PacedFrame
from ripp_core._receiver import ReceiverWindow
from ripp_core._sender import MediaSender
from ripp_core._state import CallState
from ripp_core._store import decode_handoff, encode_handoff
from ripp_core.testing import Impairment
from tests.call_harness import PCMU_20MS, Trunk

CONFIG = RippConfig()
FRAME = 40  # 20 ms in 0.5 ms units
TICKS = 960  # 20 ms at 48 kHz


def pcmu(sender: MediaSender, units: int = FRAME) -> MediaFrame:
    return sender.enqueue(Codec.PCMU, units, bytes(units * 4), 0.0)


def marked(frame: MediaFrame) -> bool:
    return bool(frame.flags & FLAG_MARKER)


# --- the sender's skip ----------------------------------------------------------------


def test_a_skip_moves_the_next_timestamp_on() -> None:
    sender = MediaSender(CONFIG)
    first = pcmu(sender)
    assert sender.skip(0.010) == 20  # 10 ms = 20 units = 480 ticks
    second = pcmu(sender)
    third = pcmu(sender)
    assert (first.timestamp, second.timestamp, third.timestamp) == (0, TICKS + 480, 2 * TICKS + 480)
    assert sender.next_timestamp == 3 * TICKS + 480
    # Sequence numbers stay consecutive: nothing was sent, so nothing is missing.
    assert [f.sequence for f in (first, second, third)] == [0, 1, 2]


def test_marker_after_a_skip_of_at_least_the_next_frame() -> None:
    sender = MediaSender(CONFIG)
    pcmu(sender)  # the call's first frame: MARKER anyway
    sender.skip(0.0195)  # less than the 20 ms frame that follows: playout stretched
    assert not marked(pcmu(sender))
    sender.skip(0.020)  # a whole frame went unsent: a talkspurt starts
    after_pause = pcmu(sender)
    assert marked(after_pause)
    assert not marked(pcmu(sender))  # the skip is spent on the frame that followed it
    for _ in range(4):  # small skips add up to the 20 ms of the next frame
        sender.skip(0.005)
    assert marked(pcmu(sender))
    sender.skip(0.010)  # 10 ms is a whole 10 ms frame
    assert marked(pcmu(sender, units=20))
    sender.skip(0.010)  # but not a whole 60 ms one
    assert not marked(pcmu(sender, units=120))


def test_small_skips_add_up_instead_of_vanishing() -> None:
    sender = MediaSender(CONFIG)
    pcmu(sender)
    applied = [sender.skip(0.0001) for _ in range(10)]  # ten 0.1 ms skips: 1 ms in all
    assert applied == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert pcmu(sender).timestamp == TICKS + 48
    # The remainder survives frames: 0.3 ms now and 0.3 ms after the next frame is 0.6.
    assert sender.skip(0.0003) == 0
    pcmu(sender)
    assert sender.skip(0.0003) == 1
    # A whole number of units that is not exact in binary counts whole.
    assert sender.skip(41 * DURATION_UNIT) == 41


def test_timestamps_wrap_across_a_skip() -> None:
    sender = MediaSender(CONFIG, first_timestamp=TIMESTAMP_MODULUS - 1000)
    pcmu(sender)
    sender.skip(0.010)
    assert pcmu(sender).timestamp == 440  # 2^32 - 1000 + 960 + 480, modulo 2^32
    assert pcmu(sender).timestamp == 440 + TICKS


@pytest.mark.parametrize("bad", [-0.001, -0.0, math.nan, math.inf, -math.inf, 3600.5, 1e300])
def test_bad_skips_are_refused_and_change_nothing(bad: float) -> None:
    sender = MediaSender(CONFIG)
    pcmu(sender)
    if bad == 0.0:  # -0.0 is zero: a skip of nothing
        assert sender.skip(bad) == 0
        return
    with pytest.raises(BadSkip) as raised:
        sender.skip(bad)
    assert isinstance(raised.value, LocalProtocolError)
    assert raised.value.http_status == 400
    assert sender.next_timestamp == TICKS and sender.skipped_units == 0


def test_skips_that_add_up_beyond_the_limit_are_capped() -> None:
    config = RippConfig(media_skip_max=1.0)
    sender = MediaSender(config)
    pcmu(sender)
    assert sender.skip(0.75) == 1500
    assert sender.skip(0.75) == 500  # capped at 1 s since the last frame
    assert sender.skip(0.75) == 0
    assert sender.skipped_units == 2000
    frame = pcmu(sender)
    assert frame.timestamp == TICKS + 48000 and marked(frame)
    assert sender.skip(0.75) == 1500  # a new frame, a new allowance


def test_the_limit_keeps_a_skip_below_half_the_timestamp_space() -> None:
    with pytest.raises(ValueError, match="media_skip_max"):
        RippConfig(media_skip_max=2**31 / 48000)
    with pytest.raises(ValueError, match="media_skip_max"):
        RippConfig(media_skip_max=0.0)
    assert RippConfig().with_settings(["media_skip_max=60"]).media_skip_max == 60.0


def test_a_skip_survives_the_hand_over() -> None:
    old = MediaSender(CONFIG, first_timestamp=5000)
    old.add_channel(1, 0.0)
    pcmu(old)
    old.skip(0.030)
    state = old.export_state()
    assert state.next_timestamp == 5000 + TICKS + 1440
    assert state.skipped_units == 60
    # Through the store's hand-over document as well (another process takes over).
    handoff = CallHandoff(
        request=_request(),
        state=CallState.CONNECTED,
        sender=state,
        receiver=ReceiverWindow(None, frozenset()),
        previous_uri="https://h:1/ripp/instances/a/calls/X",
    )
    decoded, _ = decode_handoff(encode_handoff(handoff), CONFIG)
    assert decoded.sender == state
    new = MediaSender.from_state(CONFIG, decoded.sender, 1.0)
    resumed = pcmu(new)
    assert resumed.timestamp == 5000 + TICKS + 1440
    assert marked(resumed)  # the pause spanned the move: still a talkspurt start
    assert not marked(pcmu(new))
    # A document written before skips existed still decodes: nothing was skipped.
    legacy = encode_handoff(handoff).replace(b'"skipped_units":60,', b"")
    assert decode_handoff(legacy, CONFIG)[0].sender.skipped_units == 0
    for bad in (b'"skipped_units":-1,', b'"skipped_units":7200001,'):
        with pytest.raises(ValueError, match="skipped_units"):
            decode_handoff(encode_handoff(handoff).replace(b'"skipped_units":60,', bad), CONFIG)


def _request() -> CallRequest:
    return CallRequest(
        to=parse_name_addr("<tel:+12125551234>"),
        from_=parse_name_addr('"Ann" <tel:+14085551234>;tag=x'),
        identity="eyJ.eyJ.sig;info=<https://cert.example/c.pem>",
        headers=(),
        principal=None,
    )


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, TIMESTAMP_MODULUS - 1),
    st.lists(
        st.one_of(
            st.tuples(st.just("frame"), st.sampled_from([20, 40, 60, 120])),
            st.tuples(st.just("skip"), st.integers(0, 500)),  # tenths of a millisecond
        ),
        max_size=60,
    ),
)
def test_timestamps_count_every_frame_and_every_whole_unit_skipped(
    first: int, ops: list[tuple[str, int]]
) -> None:
    """Model: a frame's timestamp is the first plus 24 ticks per unit of every frame
    before it and per whole unit of all the skips so far; MARKER marks the first frame
    and each frame after skips (since the previous frame) of at least its duration."""
    sender = MediaSender(CONFIG, first_timestamp=first)
    frames_units = skipped_tenths = units_at_last_frame = 0
    sent = 0
    for op, value in ops:
        if op == "skip":
            sender.skip(value / 10000)
            skipped_tenths += value
            continue
        frame = pcmu(sender, value)
        skipped_units = skipped_tenths // 5  # 0.5 ms = 5 tenths
        assert frame.timestamp == (first + 24 * (frames_units + skipped_units)) % TIMESTAMP_MODULUS
        assert marked(frame) == (sent == 0 or skipped_units - units_at_last_frame >= value)
        frames_units += value
        units_at_last_frame = skipped_units
        sent += 1


# --- through the call and the endpoint --------------------------------------------------


def test_skip_media_reaches_the_wire_and_respects_the_pacer() -> None:
    trunk = Trunk(impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    server_name, server_handle = trunk.link_server_call(handle)
    server = trunk.rserver(server_name)
    for index in range(6):
        now = trunk.net.now
        if index == 3:
            assert server.skip_media(server_handle, 0.025, now) == 50
        server.send_media(server_handle, Codec.PCMU, 0.02, PCMU_20MS, now)
        trunk.net.run_for(0.02)
    trunk.net.run_for(0.2)
    received = trunk.s2c[handle].frames
    assert sorted(received) == list(range(6))
    stamps = [received[n].timestamp - received[0].timestamp for n in range(6)]
    assert stamps == [0, 960, 1920, 2880 + 1200, 3840 + 1200, 4800 + 1200]
    assert [marked(received[n]) for n in range(6)] == [True, False, False, True, False, False]
    # Paced audio keeps its own clock: a skip while it waits would land before it.
    call = server.call(server_handle)
    call.pacer.push(PacedFrame(Codec.PCMU, FRAME, PCMU_20MS), trunk.net.now + 1.0)
    with pytest.raises(BadSkip, match="paced"):
        server.skip_media(server_handle, 0.02, trunk.net.now)
    with pytest.raises(BadSkip):
        server.skip_media(server_handle, -1.0, trunk.net.now)


# --- the playout clock ----------------------------------------------------------------


def frame_item(units: int = FRAME, sequence: int = 0) -> MediaFrame:
    return MediaFrame(sequence, 0, Codec.PCMU, units, bytes(units * 4))


def gap_item(frames: int = 1, units: int = FRAME) -> MediaGap:
    return MediaGap("c", 0, frames * units * DURATION_UNIT, frames)


def test_on_time_frames_skip_nothing_and_gaps_skip_whole() -> None:
    clock = PlayoutClock()
    assert clock.played(frame_item(), 100.0) == 0.0
    assert clock.played(frame_item(), 100.02) == 0.0
    assert clock.played(gap_item(), 100.04) == pytest.approx(0.02)
    assert clock.played(frame_item(), 100.06) == 0.0
    assert clock.played(gap_item(3), 100.08) == pytest.approx(0.06)
    assert clock.played(frame_item(), 100.14) == 0.0
    assert clock.skipped_units == 160
    assert clock.media_units == 8 * FRAME


def test_late_frames_skip_their_lateness_early_ones_nothing() -> None:
    clock = PlayoutClock()
    clock.played(frame_item(), 10.0)
    assert clock.played(frame_item(), 10.0331) == pytest.approx(0.0135)  # rounded up
    assert clock.played(frame_item(), 10.0535) == 0.0  # on the new schedule
    # A burst after a stall: the first is late, the rest early; the clock never goes back.
    assert clock.played(frame_item(), 10.1135) == pytest.approx(0.04)
    assert clock.played(frame_item(), 10.1136) == 0.0
    assert clock.played(frame_item(), 10.1137) == 0.0
    # The burst's frames follow one another on the media clock (ending at 173.5 ms):
    # playout catches up with it, then runs late again.
    assert clock.played(frame_item(), 10.1735) == 0.0
    assert clock.played(frame_item(), 10.1945) == pytest.approx(0.001)


def test_a_pause_beyond_the_limit_re_bases_the_clock() -> None:
    clock = PlayoutClock(RippConfig(media_skip_max=60.0))
    clock.played(frame_item(), 0.0)
    assert clock.played(frame_item(), 7200.0) == pytest.approx(60.0)
    assert clock.played(frame_item(), 7200.02) == 0.0  # on time from there on
    assert clock.played(frame_item(), 7200.05) == pytest.approx(0.01)
    with pytest.raises(LocalProtocolError):
        clock.played(frame_item(), math.nan)


items = st.lists(
    st.tuples(
        st.sampled_from(["frame", "frame", "frame", "gap"]),
        st.sampled_from([20, 40, 60]),  # units of the frame, or of each missing frame
        st.integers(1, 4),  # frames in a gap
        # When it plays, against where the previous item ended on the playout timeline:
        # mostly on time, sometimes late (stretched playout), sometimes early (a burst).
        st.one_of(st.just(0.0), st.floats(-0.05, 0.2, allow_nan=False)),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 1e6, allow_nan=False), items)
def test_the_sent_media_clock_follows_playout(
    start: float, played: list[tuple[str, int, int, float]]
) -> None:
    """Whatever the playout times and gaps: items never overlap on the sent media clock
    (it never goes back), no item starts later on it, relative to its playout time, than
    the first did (so the far end never sees a frame later than the first), an item moved
    later is moved by less than one unit too much, and when nothing plays early the
    offset between media and playout time stays within one unit of the first one's."""
    clock = PlayoutClock()
    media = 0  # the sender's media clock (units), from the skips the clock asked for
    playout_end = start  # where the previous item ended on the playout timeline
    first: float | None = None
    early = False
    for kind, units, count, offset in played:
        now = playout_end + offset
        early = early or offset < 0
        item = frame_item(units) if kind == "frame" else gap_item(count, units)
        length = units if kind == "frame" else units * count
        skip = clock.played(item, now)
        skip_units = round(skip / DURATION_UNIT)
        assert abs(skip_units * DURATION_UNIT - skip) < 1e-9  # whole units only
        gap_units = 0 if kind == "frame" else length
        moved = skip_units - gap_units
        assert moved >= 0  # never back, never overlapping the previous item
        begins = media + moved  # where this item starts on the sent media clock
        lag = now - begins * DURATION_UNIT  # playout time minus media time
        if first is None:
            first = lag
        tolerance = 1e-6 * max(1.0, abs(now))
        assert lag <= first + tolerance
        if moved > 0:
            assert lag > first - DURATION_UNIT - tolerance
        if not early:
            assert first - DURATION_UNIT - tolerance < lag <= first + tolerance
        media = begins + length
        assert clock.media_units == media
        playout_end = max(playout_end, now) + length * DURATION_UNIT


# --- the whole chain in virtual time ----------------------------------------------------


def _relay(seed: int, use_clock: bool) -> tuple[float, int]:
    """Frames cross a lossy, jittery path into a jitter buffer; what it plays is sent on
    (an echo). Returns how much later than the first frame, relative to its timestamp,
    the worst frame was sent (seconds), and how many gaps were concealed."""
    rng = random.Random(seed)
    buffer = JitterBuffer(CONFIG)
    sender = MediaSender(CONFIG)
    clock = PlayoutClock(CONFIG)
    arrivals = []
    for n in range(500):
        delay = 0.05 + rng.expovariate(1 / 0.004)
        if rng.random() < 0.05:
            delay += 0.12 if rng.random() < 0.7 else 10.0  # repaired late, or never
        arrivals.append((n * 0.02 + delay, n))
    arrivals.sort()
    worst, first, gaps = 0.0, None, 0
    now, index = 0.0, 0
    while now < 11.0:
        while index < len(arrivals) and arrivals[index][0] <= now:
            sequence = arrivals[index][1]
            buffer.push(MediaFrame(sequence, sequence * TICKS, Codec.PCMU, FRAME, PCMU_20MS), now)
            index += 1
        for item in buffer.pop(now):
            if isinstance(item, Gap):
                gaps += 1
                if use_clock:
                    sender.skip(clock.played(_as_event(item), now))
                continue
            if use_clock:
                sender.skip(clock.played(item, now))
            sent = pcmu(sender)
            lag = now - sent.timestamp / 48000
            first = lag if first is None else first
            worst = max(worst, lag - first)
        now = round(now + 0.001, 6)
    return worst, gaps


def _as_event(gap: Gap) -> MediaGap:
    return MediaGap("c", gap.sequence, gap.duration, gap.frames)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_relay_never_sends_later_than_its_timestamps_say(seed: int) -> None:
    worst, gaps = _relay(seed, use_clock=True)
    assert gaps > 0
    assert worst <= 1e-6  # to the millisecond timer this test pops on, and rounding up
    # Without the skips each stretch of playout and each gap pushes every later frame
    # further behind its timestamp: what the far end's jitter buffer drops as late.
    drift, _ = _relay(seed, use_clock=False)
    assert drift > 0.1  # 0.18-0.6 s over the seeds
