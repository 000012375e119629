"""Send slots (protocol 11.9): media of calls sharing a connection leaves in one batch.

The rule itself (:class:`ripp_core._batch.SendSlots`) is checked deterministically and
with hypothesis; then whole calls over the real HTTP/3 binding in virtual time show that
batched frames take fewer datagrams and none is later than the window allows.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core import Codec, RippConfig
from ripp_core._batch import SendSlots
from ripp_core.testing import Impairment
from tests.call_harness import CLIENT_ADDR, Trunk

W = 0.002
FRAME = 0.02


def _cycle(slots: SendSlots[str], group: str, calls: dict[str, float], start: float) -> None:
    """One 20 ms cycle: each call sends at ``start + offset`` (in time order)."""
    for call, offset in sorted(calls.items(), key=lambda item: item[1]):
        slots.holding(start + offset)
        slots.media(group, call, FRAME, start + offset)


def test_lone_call_is_never_held() -> None:
    slots: SendSlots[str] = SendSlots(W)
    for n in range(5):
        assert slots.media("c", "a", FRAME, n * FRAME) is False
        assert slots.holding(n * FRAME) == set()
    assert slots.next_deadline() is None


def test_partner_due_within_window_holds_until_it_sends() -> None:
    slots: SendSlots[str] = SendSlots(W)
    _cycle(slots, "c", {"a": 0.0, "b": 0.001}, 0.0)  # learn the rhythm: nothing held yet
    assert slots.holding(0.0015) == set()
    assert slots.media("c", "a", FRAME, 0.020) is True  # b is due at 0.021
    assert slots.holding(0.0205) == {"c"}
    assert slots.next_deadline() == pytest.approx(0.020 + W)
    assert slots.media("c", "b", FRAME, 0.021) is False  # the last one expected: go
    assert slots.holding(0.021) == set()
    assert slots.next_deadline() is None


def test_silent_partner_is_waited_for_no_longer_than_the_window() -> None:
    slots: SendSlots[str] = SendSlots(W)
    _cycle(slots, "c", {"a": 0.0, "b": 0.0015}, 0.0)
    assert slots.media("c", "a", FRAME, 0.020) is True
    # b never sends again (its caller hung up, or its sender stalled)
    assert slots.holding(0.020 + W - 1e-6) == {"c"}
    assert slots.holding(0.020 + W) == set()
    assert slots.next_deadline() is None


def test_partner_outside_the_window_does_not_hold() -> None:
    slots: SendSlots[str] = SendSlots(W)
    _cycle(slots, "c", {"a": 0.0, "b": 0.010}, 0.0)
    assert slots.media("c", "a", FRAME, 0.020) is False
    assert slots.media("c", "b", FRAME, 0.030) is False


def test_other_connections_do_not_hold() -> None:
    slots: SendSlots[str] = SendSlots(W)
    slots.media("c1", "a", FRAME, 0.0)
    slots.media("c2", "b", FRAME, 0.001)
    assert slots.media("c1", "a", FRAME, 0.020) is False  # b is on another connection


def test_chain_of_partners_is_bounded_by_the_first_frame() -> None:
    """Calls 0.8 ms apart: the batch waits for those due within W of its first frame,
    not for a chain that would keep extending it."""
    slots: SendSlots[str] = SendSlots(W)
    offsets = {f"c{i}": i * 0.0008 for i in range(6)}
    _cycle(slots, "g", offsets, 0.0)
    start = 0.020
    assert slots.media("g", "c0", FRAME, start) is True
    assert slots.deadline_of("g") == pytest.approx(start + W)
    assert slots.media("g", "c1", FRAME, start + 0.0008) is True
    assert slots.media("g", "c2", FRAME, start + 0.0016) is False  # c3 is past W: go
    assert slots.media("g", "c3", FRAME, start + 0.0024) is True  # a new batch
    assert slots.deadline_of("g") == pytest.approx(start + 0.0024 + W)


def test_window_zero_turns_batching_off() -> None:
    slots: SendSlots[str] = SendSlots(0.0)
    _cycle(slots, "c", {"a": 0.0, "b": 0.001}, 0.0)
    assert slots.media("c", "a", FRAME, 0.020) is False


def test_ended_call_is_not_waited_for() -> None:
    slots: SendSlots[str] = SendSlots(W)
    _cycle(slots, "c", {"a": 0.0, "b": 0.001}, 0.0)
    slots.forget_call("b")
    assert slots.media("c", "a", FRAME, 0.020) is False


def test_release_ends_the_batch_and_group_forgets_calls() -> None:
    slots: SendSlots[str] = SendSlots(W)
    _cycle(slots, "c", {"a": 0.0, "b": 0.001}, 0.0)
    assert slots.media("c", "a", FRAME, 0.020) is True
    slots.release("c")  # flushed for another reason (say, the full poll)
    assert slots.holding(0.0201) == set()
    slots.forget_group("c")
    assert slots.group_of("a") is None
    assert slots.media("c", "a", FRAME, 0.040) is False


def test_negative_window_is_refused() -> None:
    with pytest.raises(ValueError):
        SendSlots(-0.001)


@settings(max_examples=200, deadline=None)
@given(
    window=st.sampled_from([0.0, 0.001, 0.002, 0.005]),
    sends=st.lists(
        st.tuples(
            st.integers(0, 2),  # group
            st.integers(0, 5),  # call
            st.floats(0.0, 0.2, allow_nan=False),  # send time
            st.sampled_from([0.01, 0.02, 0.03]),  # frame duration
        ),
        max_size=60,
    ),
)
def test_nothing_waits_longer_than_the_window(
    window: float, sends: list[tuple[int, int, float, float]]
) -> None:
    """Whatever the calls do, a group is held at most ``window`` after the first frame
    written while it was free, and a group with one call is never held."""
    slots: SendSlots[int] = SendSlots(window)
    first_held: dict[int, float] = {}
    group_calls: dict[int, set[int]] = {}
    call_group: dict[int, int] = {}
    for group, call, now, duration in sorted(sends, key=lambda s: s[2]):
        held = slots.holding(now)
        for g in list(first_held):
            if g not in held:
                del first_held[g]
        for g in held:
            assert now < first_held[g] + window + 1e-12
        old = call_group.get(call)
        if old is not None and old != group:
            group_calls[old].discard(call)
        call_group[call] = group
        group_calls.setdefault(group, set()).add(call)
        if slots.media(group, f"{call}", duration, now):
            first_held.setdefault(group, now)
            assert len(group_calls[group]) > 1  # a lone call is never held
            deadline = slots.deadline_of(group)
            assert deadline is not None and deadline <= first_held[group] + window + 1e-12
        else:
            first_held.pop(group, None)
            assert not slots.held(group, now)


# ---------------------------------------------------------------- over the real binding


def _run_calls(window: float, offsets: list[float], frames: int = 50) -> tuple[int, list[float]]:
    """Calls on one connection, each sending a 20 ms frame every 20 ms from the client at
    its own offset in the cycle; returns the client's datagrams during the media and every
    frame's latency (10 ms one-way delay)."""
    config = RippConfig(jitter_buffer=False, send_batch_window=window)
    trunk = Trunk(config=config, impairment=Impairment(delay=0.01))
    handles = [trunk.connect() for _ in offsets]
    assert trunk.rclient.connection_count == 1
    trunk.net.run_for(0.5)  # media streams open, the handshake traffic is over
    start = trunk.net.now + 0.05
    for handle, offset in zip(handles, offsets, strict=True):
        trunk.stream_media(handle, start=start + offset, count=frames)
    server = trunk.server_addrs["a"]
    before = trunk.net.link_stats(CLIENT_ADDR, server).sent
    trunk.net.run_for(0.05 + frames * FRAME + 0.2)
    sent = trunk.net.link_stats(CLIENT_ADDR, server).sent - before
    latencies = [lat for h in handles for lat in trunk.c2s[h].latencies().values()]
    assert len(latencies) == frames * len(offsets)  # every frame arrived
    return sent, latencies


def test_calls_due_together_share_datagrams_and_wait_at_most_the_window() -> None:
    offsets = [0.0, 0.0005, 0.0011, 0.0017]
    plain_sent, plain = _run_calls(0.0, offsets)
    batched_sent, batched = _run_calls(W, offsets)
    # Four frames within 2 ms of each other: one packet instead of four, once the
    # rhythm is learnt (the first cycle is never held). Acks from the server make up the
    # rest of the client's datagrams in both runs.
    assert batched_sent < 0.7 * plain_sent, (batched_sent, plain_sent)
    assert max(batched) <= max(plain) + W + 1e-9
    assert max(batched) > max(plain)  # some frames did wait for their partners


def test_lone_call_is_not_delayed() -> None:
    plain_sent, plain = _run_calls(0.0, [0.0])
    batched_sent, batched = _run_calls(W, [0.0])
    assert batched == pytest.approx(plain)
    assert batched_sent == plain_sent


def test_calls_far_apart_in_the_cycle_are_not_delayed() -> None:
    offsets = [0.0, 0.007, 0.014]
    _, plain = _run_calls(0.0, offsets)
    _, batched = _run_calls(W, offsets)
    assert sorted(batched) == pytest.approx(sorted(plain))


def test_sendpath_benchmark_measures_the_batching() -> None:
    """benchmarks/sendpath.py, small: 3 two-way calls in consecutive 1 ms slots, batching
    on and off; its figures say what the rule promises (fewer datagrams, every frame,
    no frame later than the window plus the path)."""
    from datetime import UTC, datetime, timedelta

    from benchmarks import sendpath
    from ripp_core.testing import make_test_pki

    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
    off = sendpath.run(pki, 3, 0.5, ["send_batch_window=0"])
    on = sendpath.run(pki, 3, 0.5, [])
    for result in (off, on):
        assert result["delivered_pct"] == pytest.approx(100.0, abs=1.0)
    assert on["datagrams_per_frame"] < 0.8 * off["datagrams_per_frame"]
    assert off["latency_max_ms"] < 0.2
    assert on["latency_max_ms"] <= 1000 * (W + sendpath.ONE_WAY) + 0.01
    walk = sendpath.stream_walk(pki, 4, rounds=20)
    assert walk["packet_us"] > 0 and walk["empty_us"] > 0
    stall = sendpath.buffer_stall(4 * 1024 * 1024, 10, 0.05)
    assert stall["lost"] == 0 and stall["sent"] == 50


def _run_paced(window: float, offsets: list[float], frames: int = 50) -> tuple[int, int]:
    """Like :func:`_run_calls`, but each call hands all its audio over at once with
    ``play`` and the core's pacer releases a frame every 20 ms from the call's timer;
    returns the client's datagrams during the media and the frames the server received."""
    config = RippConfig(jitter_buffer=False, send_batch_window=window)
    trunk = Trunk(config=config, impairment=Impairment(delay=0.01))
    handles = [trunk.connect() for _ in offsets]
    trunk.net.run_for(0.5)
    start = trunk.net.now + 0.05
    client = trunk.rclient
    audio = bytes(160)

    def play(handle: str) -> None:
        for _ in range(frames):
            client.play(handle, Codec.PCMU, FRAME, audio, trunk.net.now)
        trunk.client.drain()

    for handle, offset in zip(handles, offsets, strict=True):
        trunk.net.schedule(start + offset, lambda h=handle: play(h))  # type: ignore[misc]
    server = trunk.server_addrs["a"]
    before = trunk.net.link_stats(CLIENT_ADDR, server).sent
    trunk.net.run_for(0.05 + frames * FRAME + 0.2)
    sent = trunk.net.link_stats(CLIENT_ADDR, server).sent - before
    received = sum(len(trunk.c2s[h].received) for h in handles)
    return sent, received


def test_paced_frames_of_calls_due_together_share_datagrams() -> None:
    offsets = [0.0, 0.0005, 0.0011, 0.0017]
    plain_sent, plain_received = _run_paced(0.0, offsets)
    batched_sent, batched_received = _run_paced(W, offsets)
    assert plain_received == batched_received == 50 * len(offsets)
    assert batched_sent < 0.7 * plain_sent, (batched_sent, plain_sent)
