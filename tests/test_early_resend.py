"""Early re-send (protocol §11.7): the sender's rule, its bounds and whole calls.

The property test drives one :class:`MediaSender` and one :class:`MediaReceiver` through a
small discrete-event model of striped QUIC streams: every transmission and every ack
arrives after a drawn delay, either the path's own or a much longer one (QUIC repaired a
lost packet), in any order across streams, and streams are reset at random. Whatever the
draws, no stream ever carries two unacknowledged frames, no frame reaches playout twice,
copies respect their count, credit, timing and budget bounds, and every frame ends up
delivered or counted as dropped.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import event, given, settings
from hypothesis import strategies as st

import ripp_trio
from benchmarks import FRAME as BENCH_FRAME
from benchmarks import IDENTITY, TOKEN, client_configuration, server_configuration, write_pki
from ripp_cli._relay_thread import RelayThread
from ripp_core import CallState, RippConfig
from ripp_core._codecs import Codec
from ripp_core._frames import AckFrame, MediaFrame
from ripp_core._receiver import MediaReceiver
from ripp_core._sender import MediaSender
from ripp_core.testing import INSECURE_CHECKS, Impairment

from .call_harness import Trunk

FRAME = 0.02
PCMU = bytes(160)


def pcmu(sender: MediaSender, now: float) -> MediaFrame:
    return sender.enqueue(Codec.PCMU, 40, PCMU, now)


def ack(sender: MediaSender, channel: int, frame: MediaFrame, now: float) -> float | None:
    return sender.on_ack(channel, AckFrame(frame.sequence, 0), now)


# --- the rule, step by step -----------------------------------------------------------


def _primed(config: RippConfig, channels: int = 3) -> tuple[MediaSender, float]:
    """A sender with ``channels`` channels and a clean path RTT of 100 ms measured."""
    sender = MediaSender(config)
    for channel in range(channels):
        sender.add_channel(channel, 0.0)
    now = 0.0
    # RTTVAR starts at RTT/2 (RFC 6298) and decays by 3/4 per sample: 30 samples make it ~0.
    for _ in range(30):
        frame = pcmu(sender, now)
        [(channel, _)] = sender.poll(now)
        now += 0.1
        assert ack(sender, channel, frame, now) == pytest.approx(0.1)
    assert sender.path_rtt.smoothed == pytest.approx(0.1)
    return sender, now


def test_overdue_ack_sends_a_copy_on_another_free_stream() -> None:
    config = RippConfig()
    sender, now = _primed(config)
    frame = pcmu(sender, now)
    [(first, _)] = sender.poll(now)
    due = sender.next_deadline()
    assert due is not None
    # path RTT 100 ms, variation ~0: overdue after RTT + the 5 ms floor
    assert due == pytest.approx(now + 0.1 + config.early_resend_min_margin)
    assert sender.poll(due - 0.001) == []
    copies = sender.poll(due)
    assert len(copies) == 1
    channel, copy = copies[0]
    assert channel != first
    assert copy == frame  # same sequence, timestamp and flags: not marked RESENT
    assert sender.frames_early_resent == 1
    assert sender.bytes_early_resent == len(PCMU)
    stats = sender.stats(due)  # what an application sees (protocol 18.1)
    assert (stats.frames_early_resent, stats.bytes_early_resent) == (1, len(PCMU))
    assert stats.frames_resent == 0  # a copy is not a re-queued frame
    assert sender.busy_channels == 2  # the original's stream stays busy until its own ack
    # the copy's ack delivers the frame: marks and failure detection stop waiting for it
    assert ack(sender, channel, copy, due + 0.1) is not None
    assert sender.oldest_pending_sequence is None
    assert sender.oldest_unacked_sent_at is None
    assert not sender.is_idle(first)
    # the original's late ack frees its stream and is not counted as a second delivery
    acked_before = sender.stats(due).frames_acked
    assert ack(sender, first, frame, due + 0.2) is not None
    assert sender.is_idle(first)
    assert sender.stats(due).frames_acked == acked_before


def test_no_copy_without_a_path_rtt_or_when_disabled() -> None:
    sender = MediaSender(RippConfig())
    sender.add_channel(0, 0.0)
    sender.add_channel(1, 0.0)
    sender.add_channel(2, 0.0)
    pcmu(sender, 0.0)
    assert len(sender.poll(0.0)) == 1
    assert sender.next_deadline() is None  # no RTT measured yet: nothing is "overdue"
    assert sender.poll(5.0) == []

    off, now = _primed(RippConfig(early_resend=False))
    pcmu(off, now)
    off.poll(now)
    assert off.next_deadline() is None
    assert off.poll(now + 0.5) == []
    assert off.frames_early_resent == 0


def test_copy_never_takes_the_last_free_stream() -> None:
    # Two channels: after the original is out, one is free, and it is the reserve.
    sender, now = _primed(RippConfig(), channels=2)
    pcmu(sender, now)
    sender.poll(now)
    assert sender.poll(now + 0.2) == []
    assert sender.frames_early_resent == 0
    # With no reserve the same copy goes out.
    sender, now = _primed(RippConfig(early_resend_reserve=0), channels=2)
    pcmu(sender, now)
    sender.poll(now)
    assert len(sender.poll(now + 0.2)) == 1


def test_new_frames_go_before_copies() -> None:
    sender, now = _primed(RippConfig(), channels=4)
    old = pcmu(sender, now)
    sender.poll(now)
    late = now + 0.15
    new = pcmu(sender, late)
    sent = sender.poll(late)
    assert [frame for _, frame in sent] == [new, old]  # the new frame first, then the copy


def test_copy_is_cancelled_when_it_could_no_longer_be_played() -> None:
    config = RippConfig(early_resend_budget=0.14)  # a copy at 105 ms arrives at 155 ms: late
    sender, now = _primed(config)
    pcmu(sender, now)
    sender.poll(now)
    assert sender.next_deadline() is None
    assert sender.poll(now + 0.11) == []
    # A copy that fell due but found no free stream is cancelled once its budget is gone.
    config = RippConfig(early_resend_budget=0.2)
    sender, now = _primed(config, channels=3)
    pcmu(sender, now)
    sender.poll(now)
    pcmu(sender, now)  # occupies the second channel; the third is the reserve
    sender.poll(now)
    assert sender.poll(now + 0.106) == []  # both due, but only the reserve is free
    assert sender.early_resends_cancelled == 0
    assert sender.next_deadline() is None  # blocked, not a timer: an ack will poll
    assert sender.poll(now + 0.3) == []  # past their budget now
    assert sender.early_resends_cancelled == 2
    assert sender.poll(now + 0.4) == []
    assert sender.early_resends_cancelled == 2  # counted once each


def test_credit_bounds_the_copies() -> None:
    config = RippConfig(early_resend_burst=2, early_resend_max_fraction=0.5)
    sender, now = _primed(config, channels=12)
    for _ in range(5):
        pcmu(sender, now)
    assert len(sender.poll(now)) == 5
    copies = sender.poll(now + 0.11)
    # burst 2 (the initial credit) plus 0.5 per new frame sent, capped at the burst
    assert len(copies) == 2
    assert sender.frames_early_resent == 2


def test_lateness_and_peer_hold_push_the_deadline_back_or_stop_copies() -> None:
    config = RippConfig()
    sender, now = _primed(config)
    pcmu(sender, now)
    sender.poll(now)
    plain = sender.next_deadline()
    assert plain is not None
    sender.note_lateness(0.006)  # a little late: the ack may come that much later
    assert sender.next_deadline() == pytest.approx(plain + 0.006)
    sender.note_lateness(config.lateness_hold)  # behind: overdue acks are lateness, no copies
    assert sender.next_deadline() is None
    assert sender.poll(now + 1.0) == []
    sender.note_lateness(0.0)
    # the peer reports a 40 ms hold on its acks: it is the peer's backlog, not the path
    for _ in range(40):
        frame = pcmu(sender, now)
        for channel, sent in sender.poll(now):
            if sent == frame:
                sender.on_ack(channel, AckFrame(frame.sequence, 40_000), now + 0.14)
        now += 0.14
    assert sender.peer_hold == pytest.approx(0.04, rel=0.01)
    assert sender.path_rtt.smoothed == pytest.approx(0.1)  # the hold is not path RTT
    assert sender.frames_early_resent == 0  # and a late peer gets no copies


def test_an_absurd_ack_delay_counts_as_at_most_the_round_trip() -> None:
    config = RippConfig()
    sender, now = _primed(config)
    frame = pcmu(sender, now)
    [(channel, _)] = sender.poll(now)
    # 2^40 microseconds (12 days) of "hold" on a 100 ms round trip
    sample = sender.on_ack(channel, AckFrame(frame.sequence, 1 << 40), now + 0.1)
    # Only the part a peer may hold for its own media (media_ack_delay) is taken off; the
    # rest would go below the path.
    assert sample == pytest.approx(0.1 - config.media_ack_delay)
    assert sender.peer_hold == pytest.approx(0.1 * config.lateness_gain)  # capped, averaged
    # honest acks bring it down again, and copies are timed from the path as before
    for _ in range(10):
        now += 0.1
        frame = pcmu(sender, now)
        [(channel, _)] = sender.poll(now)
        ack(sender, channel, frame, now + 0.1)
    assert sender.peer_hold < config.lateness_hold
    pcmu(sender, now + 0.1)
    sender.poll(now + 0.1)
    due = sender.next_deadline()
    assert due is not None and due <= now + 0.1 + 0.1 + 0.005 + config.lateness_hold


def test_export_state_and_requeue_skip_delivered_copies() -> None:
    sender, now = _primed(RippConfig(), channels=4)
    frame = pcmu(sender, now)
    [(first, _)] = sender.poll(now)
    [(second, _)] = sender.poll(now + 0.11)
    # both copies in flight: exporting hands the frame over once
    assert [f.sequence for f in sender.export_state().frames] == [frame.sequence]
    # the copy is acknowledged; the original's stream then resets: nothing to re-send
    ack(sender, second, frame, now + 0.2)
    sender.remove_channel(first, now + 0.25)
    assert sender.queued == 0
    assert sender.export_state().frames == ()
    # with both copies unacknowledged, losing one stream re-queues nothing either...
    frame = pcmu(sender, now + 0.3)
    [(a, _)] = sender.poll(now + 0.3)
    [(b, _)] = sender.poll(now + 0.41)
    sender.remove_channel(a, now + 0.42)
    assert sender.queued == 0
    # ...but losing the last one does, once
    sender.remove_channel(b, now + 0.43)
    assert sender.queued == 1


# --- property: any loss, delay, reordering and resets ----------------------------------


@attrs.define
class _Model:
    """Harness bookkeeping, kept apart from the sender's own state on purpose."""

    outstanding: dict[int, int] = attrs.Factory(dict)  # channel -> sequence unacked
    transmissions: dict[int, list[float]] = attrs.Factory(dict)  # sequence -> send times
    copies: Counter[int] = attrs.Factory(Counter)
    delivered: Counter[int] = attrs.Factory(Counter)
    generation: dict[int, int] = attrs.Factory(dict)  # channel -> incarnation


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    frames=st.integers(min_value=5, max_value=60),
    channels=st.integers(min_value=2, max_value=6),
    config=st.builds(
        RippConfig,
        early_resend_budget=st.sampled_from([0.12, 0.25, 0.5]),
        early_resend_max_copies=st.integers(min_value=1, max_value=3),
        early_resend_max_fraction=st.sampled_from([0.1, 0.25, 1.0]),
        early_resend_burst=st.integers(min_value=1, max_value=5),
        early_resend_reserve=st.integers(min_value=0, max_value=1),
    ),
)
def test_sender_invariants_under_loss_reordering_and_resets(
    data: Any, frames: int, channels: int, config: RippConfig
) -> None:
    sender = MediaSender(config)
    receiver = MediaReceiver(config)
    model = _Model()
    events: list[tuple[float, int, str, tuple[Any, ...]]] = []
    order = itertools.count()
    next_channel = itertools.count()

    def push(at: float, kind: str, *args: Any) -> None:
        heapq.heappush(events, (at, next(order), kind, args))

    def open_channel(now: float) -> None:
        channel = next(next_channel)
        model.generation[channel] = 0
        sender.add_channel(channel, now)

    def delay() -> float:
        # the path's own one-way delay, or a QUIC repair of a lost packet much later
        if data.draw(st.booleans(), label="repaired"):
            repair: float = data.draw(st.floats(0.12, 0.4), label="repair delay")
            return repair
        path: float = data.draw(st.floats(0.04, 0.06), label="delay")
        return path

    def poll(now: float) -> None:
        for channel, frame in sender.poll(now):
            # Invariant: a stream never carries two unacknowledged frames.
            assert channel not in model.outstanding, (channel, model.outstanding)
            model.outstanding[channel] = frame.sequence
            times = model.transmissions.setdefault(frame.sequence, [])
            if frame.sequence in model.outstanding.values() and any(
                seq == frame.sequence and ch != channel for ch, seq in model.outstanding.items()
            ):
                # An early copy: the frame is still unacknowledged on another stream.
                model.copies[frame.sequence] += 1
                path = sender.path_rtt
                assert path.minimum is not None and path.smoothed is not None
                assert now - times[-1] >= path.minimum + config.early_resend_min_margin - 1e-9
                assert now + path.smoothed / 2 <= times[0] + config.early_resend_budget + 1e-9
            times.append(now)
            gen = model.generation[channel]
            push(now + delay(), "arrive", channel, gen, frame)
        deadline = sender.next_deadline()
        if deadline is not None and deadline > now:
            push(deadline, "timer")

    for _ in range(channels):
        open_channel(0.0)
    for index in range(frames):
        push(index * FRAME, "enqueue")
    resets = data.draw(st.lists(st.floats(0.0, frames * FRAME), max_size=3), label="resets")
    for at in resets:
        push(at, "reset")

    while events:
        now, _, kind, args = heapq.heappop(events)
        if kind == "enqueue":
            pcmu(sender, now)
        elif kind == "arrive":
            channel, gen, frame = args
            if model.generation.get(channel) != gen:
                continue  # the stream was reset before the data got through
            if receiver.on_frame(frame, now):
                model.delivered[frame.sequence] += 1
            push(now + delay(), "ack", channel, gen, frame.sequence)
        elif kind == "ack":
            channel, gen, sequence = args
            if model.generation.get(channel) != gen:
                continue
            if sender.on_ack(channel, AckFrame(sequence, 0), now) is not None:
                assert model.outstanding.pop(channel) == sequence
        elif kind == "reset" and model.outstanding:
            channel = data.draw(st.sampled_from(sorted(model.outstanding)), label="reset")
            del model.outstanding[channel]
            del model.generation[channel]
            sender.remove_channel(channel, now)
            open_channel(now)
        poll(now)

    event(f"early copies: {'some' if model.copies else 'none'}")
    event(f"resets: {'some' if resets else 'none'}")
    # Invariant: no frame reaches playout twice, however many copies went out.
    assert all(count == 1 for count in model.delivered.values())
    # Invariant: copies per frame and in all are bounded.
    assert all(count <= config.early_resend_max_copies for count in model.copies.values())
    sent = sender.stats(0.0).frames_sent
    bound = config.early_resend_burst + config.early_resend_max_fraction * sent
    assert sender.frames_early_resent == sum(model.copies.values()) <= bound
    # Nothing is left hanging: every frame was delivered, or given up and counted.
    assert sender.oldest_pending_sequence is None
    assert not model.outstanding
    assert len(model.delivered) + sender.frames_dropped >= frames


# --- whole calls in virtual time ------------------------------------------------------


def _lossy_call(early_resend: bool, seed: int, count: int = 500) -> tuple[Trunk, str]:
    config = RippConfig(jitter_buffer=False, early_resend=early_resend)
    trunk = Trunk(seed=seed, impairment=Impairment(delay=0.05, loss=0.05), config=config)
    handle = trunk.connect()
    trunk.stream_media(handle, start=trunk.net.now + 0.01, count=count)
    trunk.net.run_for(count * FRAME + 2.0)
    return trunk, handle


@pytest.mark.parametrize("seed", [7, 11])
def test_early_resend_repairs_loss_a_round_trip_sooner(seed: int) -> None:
    """50 ms one-way, 5 % loss: with early re-send at most 1 % of frames arrive later
    than RTT + one-way + 15 ms (165 ms); QUIC's own repair alone leaves more behind."""
    limit = 0.165
    results = {}
    for enabled in (True, False):
        trunk, handle = _lossy_call(enabled, seed)
        log = trunk.c2s[handle]
        assert sorted(log.received) == list(range(500))
        assert log.duplicates == 0  # copies are dropped before playout
        latencies = log.latencies()
        results[enabled] = sum(1 for v in latencies.values() if v > limit)
        sender = trunk.rclient.calls[handle].sender
        if enabled:
            assert sender.frames_early_resent > 0
            # the bandwidth cost is bounded by the credit rule
            assert sender.bytes_early_resent <= 0.25 * sender.stats(0).bytes_sent + 4 * 160
        else:
            assert sender.frames_early_resent == 0
    assert results[True] <= 0.01 * 500
    assert results[False] > 2 * results[True]


# --- the real stack: sockets, aioquic, TLS, timers, the CLI's impairment relay ------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_real_stack_copies_repair_loss_and_playout_sees_each_frame_once() -> None:
    """3 s of two-way audio through the UDP relay at 50 ms one-way and 5 % loss: early
    copies go out in both directions, the receiver drops the second copies (counted as
    duplicates), and no frame reaches playout twice."""
    frames = 150
    payload = bytes(160)
    seen: dict[str, list[int]] = {"client": [], "server": []}
    copies: dict[str, int] = {}
    duplicates: dict[str, int] = {}

    async def play_and_collect(call: Any, side: str, done: trio.Event) -> None:
        for _ in range(frames):
            call.play(Codec.PCMU, BENCH_FRAME, payload)
        with trio.move_on_after(frames * BENCH_FRAME + 3.0):
            async for item in call.audio():
                if isinstance(item, MediaFrame):
                    seen[side].append(item.sequence)
                    if len(seen[side]) >= frames:
                        break
        core = call._endpoint.calls[call.handle]
        copies[side] = core.sender.frames_early_resent
        duplicates[side] = call.stats().receiver.duplicates
        done.set()

    async def main(pki: Path) -> None:
        server_done, client_done = trio.Event(), trio.Event()
        async with ripp_trio.open_server(server_configuration(pki), **INSECURE_CHECKS) as server:
            impairment = Impairment(delay=0.05, loss=0.05)
            with RelayThread(server.address, impairment, 7) as relay:
                async with trio.open_nursery() as nursery:

                    async def answer() -> None:
                        async for incoming in server.calls():
                            await incoming.answer()
                            nursery.start_soon(play_and_collect, incoming, "server", server_done)
                            return

                    nursery.start_soon(answer)
                    async with ripp_trio.open_client(
                        client_configuration(pki),
                        calls_uris=[f"https://localhost:{relay.address[1]}/ripp/calls"],
                        token=TOKEN,
                    ) as client:
                        call = await client.place_call(
                            to="<tel:+12125551234>",
                            from_="<tel:+14085551234>;tag=b",
                            identity=IDENTITY,
                        )
                        await call.wait_state(CallState.CONNECTED)
                        await play_and_collect(call, "client", client_done)
                        with trio.move_on_after(5.0):
                            await server_done.wait()
                        await call.terminate()

    with tempfile.TemporaryDirectory() as tmp:
        write_pki(Path(tmp))
        trio.run(main, Path(tmp))
    for side in ("client", "server"):
        assert len(seen[side]) == len(set(seen[side])), f"{side} played a frame twice"
        assert len(seen[side]) >= 0.9 * frames, (side, len(seen[side]))
        assert copies[side] > 0, f"the {side} sent no early copy at 5 % loss"
    # copies that arrived second were dropped by the receivers as duplicates
    assert duplicates["client"] + duplicates["server"] > 0
