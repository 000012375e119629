"""ACKs riding with media (protocol §9.2): the holder's rule, the sender's allowance for
it, a property model under repair delays, reordering and duplicates, and whole calls.

The property test drives a :class:`MediaSender` on one side and a :class:`MediaReceiver`
with an :class:`AckHolder` on the other through a small discrete-event model: each
transmission arrives after the path delay, or much later (QUIC repaired a lost packet),
or twice; the receiving side sends media of its own every 20 ms from a drawn phase, and
its held ACKs leave with that media, at their deadline, or at once when the frame
elicits one. Whatever the draws, every frame received is acknowledged exactly once per
arrival, no ACK is held beyond ``media_ack_delay``, RTT samples of frames that needed no
repair equal the path RTT (the hold is not counted), and a frame held up by repair gets
its early copy within the allowance the spec gives.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import ripp_trio
from benchmarks import IDENTITY, TOKEN, client_configuration, server_configuration, write_pki
from benchmarks import acks as acks_benchmark
from ripp_core import CallState, MarkReached, MediaFrame, RippConfig
from ripp_core._codecs import Codec
from ripp_core._frames import AckFrame
from ripp_core._receiver import AckHolder, MediaReceiver
from ripp_core._sender import MediaSender
from ripp_core.testing import INSECURE_CHECKS, Impairment

from .call_harness import Trunk

FRAME = 0.02
PCMU = bytes(160)
CONFIG = RippConfig()
D = CONFIG.media_ack_delay


def pcmu(sender: MediaSender, now: float) -> MediaFrame:
    return sender.enqueue(Codec.PCMU, 40, PCMU, now)


# --- the holder ---------------------------------------------------------------------------


def test_an_ack_waits_for_the_next_own_frame_within_the_bound() -> None:
    holder = AckHolder(CONFIG)
    # our next frame is due in 12 ms: the ACK waits (at most D)
    assert not holder.hold(1, 7, 1.0, eliciting=False, lateness=0.0, next_send=1.012)
    assert holder.pending == 1
    assert holder.next_deadline() == pytest.approx(1.0 + D)
    assert not holder.due(1.0 + D - 1e-6)
    [ack] = holder.take(1.012)
    assert (ack.channel, ack.sequence) == (1, 7)
    assert ack.held == pytest.approx(0.012)
    assert holder.pending == 0 and holder.next_deadline() is None


def test_lateness_counts_against_the_bound() -> None:
    holder = AckHolder(CONFIG)
    holder.hold(1, 7, 1.0, eliciting=False, lateness=0.015, next_send=1.004)
    assert holder.next_deadline() == pytest.approx(1.0 + D - 0.015)
    # at or beyond the bound, nothing waits
    assert holder.hold(2, 8, 1.001, eliciting=False, lateness=D, next_send=1.004)


@pytest.mark.parametrize(
    ("eliciting", "next_send", "why"),
    [
        (True, 1.005, "gap, reordering, duplicate or re-send"),
        (False, None, "the call sends no media"),
        (False, 1.0 + D + 0.001, "our next frame is not due within the bound"),
    ],
)
def test_acks_that_go_at_once(eliciting: bool, next_send: float | None, why: str) -> None:
    holder = AckHolder(CONFIG)
    assert holder.hold(1, 7, 1.0, eliciting=eliciting, lateness=0.0, next_send=next_send), why


def test_enough_pending_flushes_all_and_zero_delay_never_holds() -> None:
    holder = AckHolder(CONFIG)
    assert not holder.hold(1, 7, 1.0, eliciting=False, lateness=0.0, next_send=1.01)
    assert holder.hold(2, 8, 1.001, eliciting=False, lateness=0.0, next_send=1.01)
    assert [a.sequence for a in holder.take(1.001)] == [7, 8]
    at_once = AckHolder(RippConfig(media_ack_delay=0.0))
    assert at_once.hold(1, 7, 1.0, eliciting=False, lateness=0.0, next_send=1.0)


def test_a_discarded_channel_loses_its_held_ack_only() -> None:
    holder = AckHolder(RippConfig(media_ack_max_pending=5))
    holder.hold(1, 7, 1.0, eliciting=False, lateness=0.0, next_send=1.01)
    holder.hold(2, 8, 1.0, eliciting=False, lateness=0.0, next_send=1.01)
    holder.discard(1)
    assert [a.channel for a in holder.take(1.01)] == [2]


def test_receiver_tells_in_order_frames_from_the_rest() -> None:
    receiver = MediaReceiver(CONFIG)
    sender = MediaSender(CONFIG)
    frames = [pcmu(sender, 0.0) for _ in range(4)]
    assert receiver.in_order(frames[0])
    receiver.on_frame(frames[0], 0.0)
    assert receiver.in_order(frames[1])
    assert not receiver.in_order(frames[2])  # a gap
    receiver.on_frame(frames[2], 0.0)
    assert not receiver.in_order(frames[1])  # older than the highest
    assert not receiver.in_order(frames[2])  # a repeat


# --- the sender's side ---------------------------------------------------------------------


def _primed(config: RippConfig) -> tuple[MediaSender, float]:
    """A sender with 4 channels, a 10 ms path RTT measured and a peer that sends media."""
    sender = MediaSender(config)
    for channel in range(4):
        sender.add_channel(channel, 0.0)
    now = 0.0
    for _ in range(30):
        frame = pcmu(sender, now)
        [(channel, _)] = sender.poll(now)
        sender.note_peer_media(now, FRAME)
        sender.on_ack(channel, AckFrame(frame.sequence, 8_000), now + 0.018)
        now += FRAME
    return sender, now


def test_a_riding_hold_is_neither_rtt_nor_lateness() -> None:
    sender, _ = _primed(CONFIG)
    # every sample but the first (never corrected, §9.5) is the path's 10 ms
    assert sender.rtt.latest == pytest.approx(0.010)
    assert sender.rtt.minimum == pytest.approx(0.010)
    assert sender.rtt.smoothed == pytest.approx(0.010, abs=0.0005)
    assert sender.path_rtt.smoothed == pytest.approx(0.010, abs=0.0005)
    assert sender.peer_hold == pytest.approx(0.008, rel=0.05)
    assert sender.peer_lateness == 0.0
    assert sender.ride_hold == pytest.approx(0.008, rel=0.05)


def test_the_overdue_time_allows_the_peers_hold_only_while_it_sends_media() -> None:
    sender, now = _primed(CONFIG)
    pcmu(sender, now)
    sender.poll(now)
    sender.note_peer_media(now, FRAME)
    riding = sender.next_deadline()
    margin = CONFIG.early_resend_min_margin
    assert riding == pytest.approx(now + 0.010 + margin + D, abs=1e-3)
    # a peer that has stopped sending holds nothing back: the ACK is overdue sooner
    silent, later = _primed(CONFIG)
    later += 1.0
    pcmu(silent, later)
    silent.poll(later)
    assert silent.next_deadline() == pytest.approx(later + 0.010 + margin, abs=1e-3)


def test_an_ack_of_a_later_frame_waives_the_allowance() -> None:
    sender, now = _primed(CONFIG)
    first = pcmu(sender, now)
    [(ch1, _)] = sender.poll(now)
    sender.note_peer_media(now, FRAME)
    second = pcmu(sender, now + FRAME)
    [(ch2, _)] = sender.poll(now + FRAME)
    # the later frame's ACK comes back while the first's does not: the first was not
    # merely held (a receiver sends every held ACK together), so a copy goes now
    arrival = now + FRAME + 0.011
    sender.on_ack(ch2, AckFrame(second.sequence, 0), arrival)
    copies = sender.poll(arrival)
    assert [(frame.sequence, ch != ch1) for ch, frame in copies] == [(first.sequence, True)]


def test_a_copy_gets_no_riding_allowance() -> None:
    # A copy arrives after later frames, so the receiver acks it at once (§9.2): its ACK
    # is overdue after the path RTT and margin alone, not the riding allowance again.
    sender, now = _primed(CONFIG)
    pcmu(sender, now)
    [(first, _)] = sender.poll(now)
    sender.note_peer_media(now, FRAME)
    due = sender.next_deadline()
    assert due is not None
    [(copy_channel, _)] = sender.poll(due)
    assert copy_channel != first
    sender.note_peer_media(due, FRAME)
    second = sender.next_deadline()
    margin = CONFIG.early_resend_min_margin
    assert second == pytest.approx(due + 0.010 + margin, abs=1e-3)


# --- property model -----------------------------------------------------------------------


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    frames = draw(st.integers(20, 120))
    return {
        "frames": frames,
        "one_way": draw(st.sampled_from([0.0005, 0.005, 0.02, 0.05])),
        "phase": draw(st.floats(0.0, FRAME, exclude_max=True)),
        "peer_sends": draw(st.booleans()),
        # per transmission: 0 = on time, 1 = repaired (late), 2 = duplicated, 3 = reordered
        "fate": draw(st.lists(st.sampled_from([0] * 8 + [1, 2, 3]), min_size=frames * 3)),
        "ack_fate": draw(st.lists(st.sampled_from([0] * 8 + [1]), min_size=frames * 3)),
    }


REPAIR = 0.12  # extra delay of a transmission whose packet QUIC had to repair
REORDER = 0.007


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_held_acks_under_repair_reordering_and_duplicates(s: dict[str, Any]) -> None:
    config = RippConfig()
    sender = MediaSender(config)
    receiver = MediaReceiver(config)
    holder = AckHolder(config)
    for channel in range(12):
        sender.add_channel(channel, 0.0)
    one_way = s["one_way"]
    fates = iter(s["fate"])
    ack_fates = iter(s["ack_fate"])
    counter = itertools.count()
    queue: list[tuple[float, int, str, Any]] = []
    arrivals = 0
    acked: list[tuple[int, float]] = []  # (sequence, held) of every ACK that left
    transmissions: dict[int, list[float]] = {}  # sequence -> send times
    lost: set[int] = set()  # sequences whose first transmission was repaired
    slow: set[int] = set()  # sequences with any transmission or ACK off the path's time
    clean_samples: list[float] = []
    first_sample: float | None = None  # never corrected (§9.5): not checked

    def at(time: float, kind: str, data: Any) -> None:
        heapq.heappush(queue, (time, next(counter), kind, data))

    def transmit(now: float) -> None:
        for channel, frame in sender.poll(now):
            first = frame.sequence not in transmissions
            transmissions.setdefault(frame.sequence, []).append(now)
            fate = next(fates, 0)
            delay = one_way + (REPAIR if fate == 1 else REORDER if fate == 3 else 0.0)
            if fate == 1 and first:
                lost.add(frame.sequence)
            if fate in (1, 3):
                slow.add(frame.sequence)
            at(now + delay, "frame", (channel, frame))
            if fate == 2:
                at(now + delay + 0.001, "frame", (channel, frame))

    def flush(now: float) -> None:
        for held in holder.take(now):
            acked.append((held.sequence, held.held))
            delay = one_way + (REPAIR if next(ack_fates, 0) else 0.0)
            if delay > one_way:
                slow.add(held.sequence)
            at(now + delay, "ack", (held.channel, held.sequence, round(held.held * 1e6)))

    for index in range(s["frames"]):
        at(index * FRAME, "new", None)
        if s["peer_sends"]:
            at(s["phase"] + index * FRAME, "own", None)
    own_next = s["phase"] if s["peer_sends"] else None
    while queue:
        now, _, kind, data = heapq.heappop(queue)
        if kind == "new":
            pcmu(sender, now)
            transmit(now)
        elif kind == "own":  # the receiving side sends a frame of its own: ACKs ride
            flush(now)
            own_next = now + FRAME
            at(now + one_way, "peer_media", None)
        elif kind == "peer_media":
            sender.note_peer_media(now, FRAME)
        elif kind == "frame":
            channel, frame = data
            arrivals += 1
            in_order = receiver.in_order(frame)
            new = receiver.on_frame(frame, now)
            eliciting = not (in_order and new) or frame.resent
            if holder.hold(
                channel, frame.sequence, now, eliciting=eliciting, lateness=0.0,
                next_send=own_next if own_next is not None and own_next > now else None,
            ):  # fmt: skip
                flush(now)
            deadline = holder.next_deadline()
            if deadline is not None:
                at(deadline, "deadline", None)
        elif kind == "deadline":
            if holder.due(now):
                flush(now)
        elif kind == "ack":
            channel, sequence, held_us = data
            sample = sender.on_ack(channel, AckFrame(sequence, held_us), now)
            if sample is not None and sequence not in slow:
                clean_samples.append(sample)
            if sample is not None and first_sample is None:
                first_sample = sample
            transmit(now)
        deadline = sender.next_deadline()
        if deadline is not None and deadline > now:
            at(deadline, "resend", None)
        if kind == "resend":
            transmit(now)
    # No ACK lost for good: one per arrival, and nothing left in the holder.
    assert holder.pending == 0
    assert len(acked) == arrivals
    # Never held beyond the bound.
    assert all(held <= D + 1e-9 for _, held in acked)
    # RTT unbiased by the hold: a frame that needed no repair gives the path RTT.
    for sample in clean_samples[1:] if clean_samples[:1] == [first_sample] else clean_samples:
        assert sample == pytest.approx(2 * one_way, abs=2e-6)
    # Early re-send still fires, no later than the spec's allowance: path RTT, margin and
    # the peer's riding hold (§11.7 step 2). Checked for the first lost frame sent after
    # 1 s with no copy in the 16 frames before it, so that its credit is full.
    path = sender.path_rtt
    assert path.smoothed is not None and path.variance is not None
    # The first, uncorrected sample (§9.5) has decayed after 60 frames. A frame delayed by
    # reordering or an ACK delayed by repair is a true path sample, not a clean one, so the
    # estimate is only checked when the last 30 frames all went at the path's own pace.
    recent = sorted(transmissions)[-30:]
    if s["frames"] >= 60 and not slow.intersection(recent):
        assert path.smoothed == pytest.approx(2 * one_way, abs=0.002)
    margin = max(path.variance * config.early_resend_rttvar_factor, config.early_resend_min_margin)
    bound = path.smoothed + margin + D + 0.002  # the estimates still settle a little
    copies = sorted(t for times in transmissions.values() for t in times[1:])
    for sequence in sorted(lost, key=lambda seq: transmissions[seq][0]):
        sent = transmissions[sequence][0]
        if sent < 1.0 or any(sent - 16 * FRAME <= t < sent for t in copies):
            continue
        times = transmissions[sequence]
        assert len(times) > 1, f"lost frame {sequence} got no early copy"
        assert times[1] - sent <= bound
        break


# --- whole calls in virtual time (real aioquic, real TLS) -----------------------------------


def _two_way(
    config: RippConfig,
    *,
    seed: int = 1,
    delay: float = 0.005,
    frames: int = 150,
    server_config: RippConfig | None = None,
) -> tuple[Trunk, str]:
    trunk = Trunk(
        seed=seed, impairment=Impairment(delay=delay), config=config, server_config=server_config
    )
    handle = trunk.connect()
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=frames)
    trunk.stream_media(handle, start=start + 0.007, count=frames, from_server=True)
    trunk.net.run_for(frames * FRAME + 0.5)
    return trunk, handle


def _datagrams(trunk: Trunk) -> int:
    return sum(link.sent for link in trunk.net.stats.values())


def test_a_two_way_call_sends_fewer_datagrams_and_keeps_its_rtt() -> None:
    at_once, handle0 = _two_way(RippConfig(jitter_buffer=False, media_ack_delay=0.0))
    riding, handle = _two_way(RippConfig(jitter_buffer=False))
    for trunk, h in ((at_once, handle0), (riding, handle)):
        assert len(trunk.c2s[h].received) == 150 and len(trunk.s2c[h].received) == 150
    # the media and its ACKs share packets: at least a quarter fewer datagrams
    # (measured: about 3.1 against 1.8 per frame, benchmarks/acks.py)
    assert _datagrams(riding) < 0.75 * _datagrams(at_once)
    client_call = riding.rclient.calls[handle]
    server_call = riding.rserver().calls[riding.server_calls[handle][1]]
    assert client_call.acks.held_total > 100 and server_call.acks.held_total > 100
    # the server's frames leave 7 ms after the client's: its ACKs wait about 7 ms, the
    # client's about 13 ms; both are reported and taken off, so the RTT is the path's
    for call in (client_call, server_call):
        rtt = call.sender.rtt.smoothed
        assert rtt is not None and rtt == pytest.approx(0.010, abs=0.002)
        assert call.sender.peer_lateness == 0.0
    for call in (client_call, server_call):
        assert 0.001 < call.sender.peer_hold < D
    # no stream was added for the hold, and no frame copied for it
    assert len(client_call.media_channels) <= 4
    assert client_call.sender.frames_early_resent == 0


def test_an_ack_and_a_frame_of_the_call_leave_in_one_datagram() -> None:
    trunk = Trunk(seed=2, impairment=Impairment(delay=0.005), config=RippConfig())
    handle = trunk.connect()
    name, server_handle = trunk.server_calls[handle]
    server = trunk.rserver(name)
    app = trunk.servers[name]
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=20)
    trunk.stream_media(handle, start=start + 0.007, count=10, from_server=True)
    call = server.calls[server_handle]
    # after the server's own frames started, wait for an ACK it holds for its next one
    trunk.net.run_until(lambda: trunk.net.now > start + 0.1 and call.acks.pending > 0, 1.0)
    assert call.acks.pending == 1
    app.datagrams_to_send(trunk.net.now)  # anything else due now (QUIC ACKs) goes first
    server.send_media(server_handle, Codec.PCMU, FRAME, bytes(160), trunk.net.now)
    assert call.acks.pending == 0
    sent = app.datagrams_to_send(trunk.net.now)
    assert len(sent) == 1  # MEDIA on one stream and ACK on another, one packet
    assert len(sent[0][0]) > 160 + 11 + 7


def _lossy_two_way(ack_delay: float, seed: int) -> tuple[Trunk, str]:
    """5 % loss both ways, 20 ms one-way, 200 frames each way, a mark after the last."""
    config = RippConfig(jitter_buffer=False, media_ack_delay=ack_delay)
    trunk = Trunk(seed=seed, impairment=Impairment(delay=0.02, loss=0.05), config=config)
    handle = trunk.connect()
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=200)
    trunk.stream_media(handle, start=start + 0.011, count=200, from_server=True)
    trunk.net.schedule(
        start + 200 * FRAME, lambda: trunk.rclient.mark(handle, "end", trunk.net.now)
    )
    trunk.net.run_for(200 * FRAME + 1.0)
    return trunk, handle


def _p99(trunk: Trunk, handle: str) -> float:
    latencies = sorted(trunk.c2s[handle].latencies().values())
    return latencies[int(0.99 * len(latencies))]


@pytest.mark.parametrize("seed", [4, 5])
def test_marks_and_early_resend_with_riding_acks_under_loss(seed: int) -> None:
    """Two-way under loss: every frame arrives, copies repair lost ones, the mark behind
    the audio still fires, and the tail is later than with ACKs at once by no more than
    the riding allowance (§11.7 step 2)."""
    trunk, handle = _lossy_two_way(D, seed)
    assert len(trunk.c2s[handle].received) == 200
    assert len(trunk.s2c[handle].received) == 200
    call = trunk.rclient.calls[handle]
    assert call.sender.frames_early_resent > 0
    assert call.acks.held_total > 50
    marks = [e for e in trunk.client.of(MarkReached) if e.call == handle]
    assert [m.name for m in marks] == ["end"]
    at_once, handle0 = _lossy_two_way(0.0, seed)
    # (the first copy waits up to min(D, T) longer: the ACK it misses might be held)
    assert _p99(trunk, handle) <= _p99(at_once, handle0) + D + 0.005


def test_a_peer_that_holds_acks_too_long_only_costs_its_own_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that holds ACKs up to 150 ms (the spec bounds the hold by about one frame
    time) while it sends a frame only every 160 ms, claiming a frame is always due (a
    misbehaving peer), beside a well-behaved one: its client reads
    the excess as lateness (no copies, no stream growth for it), keeps a sane RTT, and its
    media still flows; the well-behaved call is untouched."""
    frames = 100
    rogue = Trunk(
        seed=1,
        impairment=Impairment(delay=0.005),
        config=RippConfig(jitter_buffer=False),
        server_config=RippConfig(
            jitter_buffer=False, media_ack_delay=0.15, media_ack_max_pending=20
        ),
    )
    rogue_handle = rogue.connect()
    rogue_call = rogue.rserver().calls[rogue.server_calls[rogue_handle][1]]
    monkeypatch.setattr(rogue_call.sender, "next_send_expected", lambda now: now)
    start = rogue.net.now + 0.01
    rogue.stream_media(rogue_handle, start=start, count=frames)
    rogue.stream_media(
        rogue_handle,
        start=start,
        count=frames // 8,
        interval=0.16,  # a 20 ms frame every 160 ms
        payload=lambda _: (Codec.PCMU, FRAME, bytes(160)),
        from_server=True,
    )
    rogue.net.run_for(frames * FRAME + 2.0)
    good, good_handle = _two_way(RippConfig(jitter_buffer=False), frames=frames)
    # The rogue's own call may lose a few frames to its held ACKs (its streams stay busy and
    # the client gives up frames older than send_queue_max_delay); it still flows. How many
    # depends on the order of same-instant events, which varies with PYTHONHASHSEED.
    assert len(rogue.c2s[rogue_handle].received) >= 0.9 * frames
    assert len(good.c2s[good_handle].received) == frames
    assert len(good.s2c[good_handle].received) == frames
    victim_call = rogue.rclient.calls[rogue_handle]
    victim = victim_call.sender
    assert victim.peer_hold > 0.05
    assert victim.peer_lateness >= CONFIG.lateness_hold  # beyond 20 ms: lateness, not path
    rtt = victim.rtt.smoothed
    assert rtt is not None and rtt < 0.04  # 20 ms come off each sample, the rest is guarded
    assert victim.frames_early_resent <= CONFIG.early_resend_burst + 0.25 * frames
    assert len(victim_call.media_channels) <= 6
    well = good.rclient.calls[good_handle].sender
    assert well.peer_lateness == 0.0 and well.frames_early_resent == 0


# --- the real process over real sockets -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_real_sockets_riding_acks_beside_a_peer_that_holds_them_too_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One ripp_trio server, two clients over loopback UDP: a well-behaved one playing a
    frame every 20 ms (its ACKs and the server's ride with media), and a rogue one that
    holds ACKs up to 150 ms, claiming a frame of its own is always due, and sends one
    every 160 ms. The server reads the
    rogue's excess hold as lateness for that call only; both calls carry all their media,
    and the good call's RTT is the loopback's, not the hold's."""
    frames = 60
    payload = bytes(160)
    received: dict[str, int] = {"good": 0, "rogue": 0}
    cores: dict[str, Any] = {}

    async def main(pki: Path) -> None:
        # Frames reported on arrival: the clients' sleep loops drift, which a jitter
        # buffer would count as late audio, and lateness is not what is tested here.
        async with ripp_trio.open_server(
            server_configuration(pki), config=RippConfig(jitter_buffer=False), **INSECURE_CHECKS
        ) as server:
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    async for incoming in server.calls():
                        await incoming.answer()
                        name = "good" if incoming.incoming.from_.param("tag") == "good" else "rogue"
                        cores[f"server-{name}"] = incoming._endpoint.calls[incoming.handle]
                        nursery.start_soon(echo, incoming, name)

                async def echo(call: Any, name: str) -> None:
                    for _ in range(frames):
                        call.play(Codec.PCMU, FRAME, payload)
                    with trio.move_on_after(frames * FRAME + 3.0):
                        async for item in call.audio():
                            if isinstance(item, MediaFrame):
                                received[name] += 1
                                if received[name] >= (frames if name == "good" else frames // 8):
                                    break

                async def client(name: str, config: RippConfig, interval: float) -> None:
                    async with ripp_trio.open_client(
                        client_configuration(pki), calls_uris=[uri], token=TOKEN, config=config
                    ) as ripp_client:
                        call = await ripp_client.place_call(
                            to="<tel:+12125551234>",
                            from_=f"<tel:+14085551234>;tag={name}",
                            identity=IDENTITY,
                        )
                        await call.wait_state(CallState.CONNECTED)
                        core = cores[f"client-{name}"] = call._endpoint.calls[call.handle]
                        if name == "rogue":
                            monkeypatch.setattr(core.sender, "next_send_expected", lambda now: now)
                        count = frames if interval == FRAME else frames // 8
                        for _ in range(count):
                            call.send_audio(Codec.PCMU, FRAME, payload)
                            await trio.sleep(interval)
                        await trio.sleep(1.0)
                        await call.terminate()

                nursery.start_soon(serve)
                rogue = RippConfig(media_ack_delay=0.15, media_ack_max_pending=20)
                async with trio.open_nursery() as clients:
                    clients.start_soon(client, "good", RippConfig(), FRAME)
                    clients.start_soon(client, "rogue", rogue, 0.16)
                nursery.cancel_scope.cancel()

    with tempfile.TemporaryDirectory() as tmp:
        write_pki(Path(tmp))
        trio.run(main, Path(tmp))
    assert received["good"] == frames and received["rogue"] == frames // 8
    good_server, good_client = cores["server-good"], cores["client-good"]
    # ACKs rode with media (how many depends on the machine's load: a process running
    # later than media_ack_delay holds none, §11.8)
    assert good_server.acks.held_total + good_client.acks.held_total > 0
    for core in (good_server, good_client):
        assert core.sender.peer_lateness < CONFIG.lateness_hold
        rtt = core.sender.rtt.smoothed
        assert rtt is not None and rtt < 0.015  # loopback plus a loaded loop, not +20 ms
    # the server's side of the rogue call: the excess hold reads as the peer's lateness
    rogue_server = cores["server-rogue"]
    assert rogue_server.sender.peer_lateness >= CONFIG.lateness_hold
    assert rogue_server.sender.frames_early_resent <= CONFIG.early_resend_burst + 0.25 * frames


def test_the_acks_benchmark_runs_and_riding_saves_datagrams() -> None:
    """``benchmarks/acks.py`` in miniature: the figures it reports exist and agree."""
    rows = acks_benchmark.run(calls=(2,), seconds=0.4, reps=1)
    by_variant = {row["variant"]: row for row in rows}
    at_once, riding = by_variant["ack_at_once"], by_variant["ack_rides_20ms"]
    assert at_once["delivered_pct"] == riding["delivered_pct"] == 100.0
    assert riding["datagrams_per_frame"] < 0.75 * at_once["datagrams_per_frame"]
    assert riding["cpu_ms_per_call_s"] > 0
