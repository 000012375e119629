"""Whole calls between a client core and a server core, in virtual time (issue: ripp_core)."""

from __future__ import annotations

import pytest

from ripp_core import (
    CallAttached,
    CallCreated,
    CallIncoming,
    CallMigrating,
    CallState,
    CallTerminated,
    Codec,
    MigrationPhase,
    RippConfig,
    Termination,
)
from ripp_core.testing import Impairment

from .call_harness import Trunk

# The tests that take ``binding`` run over HTTP/3 and over HTTP/2 (issue 8): the same
# call, media and migration machines behind either binding.


@pytest.fixture(params=["h3", "h2"])
def binding(request: pytest.FixtureRequest) -> str:
    """The HTTP binding a whole-call test runs over."""
    return str(request.param)


P, R, C, T = CallState.PENDING, CallState.RINGING, CallState.CONNECTED, CallState.TERMINATED


def test_setup_to_connected(binding: str) -> None:
    trunk = Trunk(binding=binding)
    handle = trunk.connect()
    assert trunk.client.states(handle) == [P, R, C]
    created = trunk.client.of(CallCreated)
    assert len(created) == 1
    assert "/ripp/instances/inst-a/calls/" in created[0].uri
    name, server_handle = trunk.server_calls[handle]
    assert trunk.servers[name].states(server_handle) == [P, R, C]
    incoming = trunk.servers["a"].of(CallIncoming)[0]
    assert incoming.to.uri == "tel:+12125551234"
    assert incoming.from_.display_name == "Alice"
    assert incoming.from_.param("tag") == "1"
    # the whole setup took a handful of virtual milliseconds on a perfect link
    assert trunk.net.now < 0.2


@pytest.mark.parametrize(("code", "reason"), [(486, "Busy Here"), (603, "Decline")])
def test_rejected(code: int, reason: str, binding: str) -> None:
    trunk = Trunk(binding=binding, auto=f"reject:{code}")
    handle = trunk.place()
    assert trunk.run_until(lambda: trunk.client_state(handle) is T)
    ended = trunk.client.of(CallTerminated)[0]
    assert (ended.code, ended.reason, ended.by) == (code, reason, Termination.REMOTE)
    assert trunk.client.states(handle) == [P, T]
    # both ends forget the call once every stream is closed
    assert trunk.run_until(lambda: not trunk.rclient.calls and not trunk.rserver().calls, 1.0)


def test_cancel_while_ringing(binding: str) -> None:
    trunk = Trunk(binding=binding, auto="ring")
    handle = trunk.place()
    assert trunk.run_until(lambda: trunk.client_state(handle) is R)
    trunk.rclient.terminate(handle, trunk.net.now, 487, "Request Terminated")
    trunk.client.drain()
    assert trunk.run_until(lambda: bool(trunk.servers["a"].of(CallTerminated)))
    server_end = trunk.servers["a"].of(CallTerminated)[0]
    assert (server_end.code, server_end.by) == (487, Termination.REMOTE)
    client_end = trunk.client.of(CallTerminated)[0]
    assert (client_end.code, client_end.by) == (487, Termination.LOCAL)
    assert trunk.run_until(lambda: not trunk.rclient.calls and not trunk.rserver().calls, 1.0)


@pytest.mark.parametrize("side", ["client", "server"])
def test_hangup_from_either_side(side: str, binding: str) -> None:
    trunk = Trunk(binding=binding)
    handle = trunk.connect()
    name, server_handle = trunk.server_calls[handle]
    if side == "client":
        trunk.rclient.terminate(handle, trunk.net.now)
        trunk.client.drain()
        other = trunk.servers[name]
    else:
        trunk.rserver(name).terminate(server_handle, trunk.net.now, 200, "Bye")
        trunk.servers[name].drain()
        other = trunk.client
    assert trunk.run_until(lambda: bool(other.of(CallTerminated)))
    ended = other.of(CallTerminated)[0]
    assert ended.by is Termination.REMOTE
    assert ended.code == 200
    # R8: every request and response of the call is closed with END_STREAM
    assert trunk.run_until(lambda: not trunk.rclient.calls and not trunk.rserver(name).calls, 1.0)
    assert not trunk.rclient._channels and not trunk.rserver(name)._channels


def _codec_plan(index: int) -> tuple[Codec, float, bytes]:
    """Codec and frame duration change mid-call without any signaling (R5)."""
    if index < 10:
        return Codec.PCMU, 0.02, bytes([index]) * 160
    if index < 20:
        return Codec.PCMA, 0.03, bytes([index]) * 240
    if index < 30:
        return Codec.OPUS, 0.02, bytes([0xFC, index]) + b"\x00" * 40
    if index < 35:
        return Codec.OPUS, 0.0025, bytes([0x98, index])
    return Codec.PCMU, 0.06, bytes([index]) * 480


def test_two_way_media_with_codec_and_duration_changes(binding: str) -> None:
    trunk = Trunk(binding=binding)
    handle = trunk.connect()
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=40, interval=0.03, payload=_codec_plan)
    trunk.stream_media(
        handle, start=start, count=40, interval=0.03, payload=_codec_plan, from_server=True
    )
    trunk.net.run_for(1.5)
    for log in (trunk.c2s[handle], trunk.s2c[handle]):
        assert sorted(log.received) == list(range(40))
        for seq, frame in log.frames.items():
            codec, duration, data = _codec_plan(seq)
            assert (frame.codec, frame.duration, frame.payload) == (codec, duration, data)
        assert log.duplicates == 0
    # timestamps advance by each frame's own duration on the 48 kHz clock
    frames = trunk.c2s[handle].frames
    for seq in range(1, 40):
        step = frames[seq].timestamp - frames[seq - 1].timestamp
        assert step == round(frames[seq - 1].duration * 48000)


def _dtmf_and_cn(index: int) -> tuple[Codec, float, bytes]:
    if index < 3:
        # digit 5 (event 5), volume 10, growing duration; the last one carries the E bit
        end = 0x80 if index == 2 else 0
        return (
            Codec.TELEPHONE_EVENT,
            0.02,
            bytes([5, end | 10]) + (160 * (index + 1)).to_bytes(2, "big"),
        )
    return Codec.CN, 0.02, bytes([40])


def test_dtmf_and_comfort_noise_both_ways(binding: str) -> None:
    trunk = Trunk(binding=binding)
    handle = trunk.connect()
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=5, payload=_dtmf_and_cn)
    trunk.stream_media(handle, start=start, count=5, payload=_dtmf_and_cn, from_server=True)
    trunk.net.run_for(0.5)
    for log in (trunk.c2s[handle], trunk.s2c[handle]):
        codecs = [log.frames[s].codec for s in range(5)]
        assert codecs == [Codec.TELEPHONE_EVENT] * 3 + [Codec.CN] * 2
        last_event = log.frames[2].payload
        assert (
            last_event[0] == 5
            and last_event[1] & 0x80
            and int.from_bytes(last_event[2:], "big") == 480
        )
        assert log.frames[4].payload == bytes([40])


def test_early_media_while_ringing(binding: str) -> None:
    trunk = Trunk(binding=binding, auto="ring")
    handle = trunk.place()
    assert trunk.run_until(lambda: trunk.client_state(handle) is R)
    trunk.link_server_call(handle)
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=10, from_server=True)  # ringback
    trunk.stream_media(handle, start=start, count=10)
    trunk.net.run_for(0.5)
    assert trunk.client_state(handle) is R  # never answered
    assert sorted(trunk.s2c[handle].received) == list(range(10))
    assert sorted(trunk.c2s[handle].received) == list(range(10))


def test_media_under_loss_is_not_head_of_line_blocked() -> None:
    one_way = 0.05  # 100 ms RTT
    # QUIC's own repair alone: early re-sends (tests/test_early_resend.py) add copies that
    # share QUIC's congestion window, which can hold a following frame back for a moment.
    config = RippConfig(jitter_buffer=False, early_resend=False)
    trunk = Trunk(seed=7, impairment=Impairment(delay=one_way, loss=0.05), config=config)
    handle = trunk.connect()
    count = 400
    trunk.stream_media(handle, start=trunk.net.now + 0.01, count=count)
    trunk.net.run_for(count * 0.02 + 2.0)
    log = trunk.c2s[handle]
    assert sorted(log.received) == list(range(count)), "every frame arrives (QUIC repairs loss)"
    latency = log.latencies()
    on_time = one_way + 0.005
    late = [s for s in range(count) if latency[s] > on_time]
    # some frames were hit by loss and repaired by retransmission...
    assert 0.01 * count < len(late) < 0.25 * count
    # ...but the frames sent right after a late frame were not held behind it: they arrived
    # before the late frame did, on time (assert per frame, not just counts).
    overtaken = 0
    for s in late:
        following = [n for n in range(s + 1, min(s + 4, count)) if n not in late]
        for n in following:
            assert log.received[n] < log.received[s], (s, n)
            assert latency[n] <= on_time
            overtaken += 1
    assert overtaken >= len(late)
    assert sorted(latency.values())[count // 2] <= on_time


def test_stream_count_grows_with_rtt_and_shrinks_back() -> None:
    config = RippConfig(jitter_buffer=False, adapt_interval=0.5, shrink_hold=1.0)
    trunk = Trunk(seed=3, impairment=Impairment(delay=0.005), config=config)
    handle = trunk.connect()
    call = trunk.rclient.call(handle)
    trunk.stream_media(handle, start=trunk.net.now + 0.01, count=600)
    trunk.net.run_for(2.0)
    low = len(call.media_channels)
    trunk.net.set_default_impairment(Impairment(delay=0.15))  # RTT 300 ms
    trunk.net.run_for(4.0)
    high = len(call.media_channels)
    assert high >= 16 > low, (low, high)  # ceil(300/20) + 1 = 16 at least
    trunk.net.set_default_impairment(Impairment(delay=0.005))
    trunk.net.run_for(6.0)
    back = len(call.media_channels - call._closing)
    assert back < high - 4, (low, high, back)
    # the media never stopped flowing while N changed
    assert len(trunk.c2s[handle].received) > 550


def test_graceful_move_loses_no_frames(binding: str) -> None:
    trunk = Trunk(
        binding=binding, servers=("a", "b"), impairment=Impairment(delay=0.01, jitter=0.002)
    )
    handle = trunk.connect()
    count = 150
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count)
    trunk.stream_media(handle, start=start, count=count, from_server=True)

    def move() -> None:
        now = trunk.net.now
        a, b = trunk.rserver("a"), trunk.rserver("b")
        _, old = trunk.server_calls[handle]
        handoff = a.export_call(old, now)
        new_uri = b.import_call(handoff, now)
        a.move(old, now, new_uri)
        trunk.link(handle, "b", new_uri.rsplit("/", 1)[1])
        trunk.servers["a"].drain()
        trunk.servers["b"].drain()

    trunk.net.schedule(start + 1.0, move)
    trunk.net.run_for(count * 0.02 + 1.5)
    attached = [e for e in trunk.client.of(CallAttached) if e.migrated]
    assert len(attached) == 1 and "/inst-b/" in attached[0].uri
    assert trunk.client_state(handle) is C
    # client -> server: every frame reached a or b, none twice at b
    c2s = trunk.c2s[handle]
    received = set(c2s.received)
    assert received == set(range(count)), sorted(set(range(count)) - received)
    assert c2s.duplicates == 0
    # server -> client: a's frames then b's continue the sequence with no gap, no duplicate
    s2c = trunk.s2c[handle]
    assert set(s2c.received) == set(range(count)), sorted(set(range(count)) - set(s2c.received))
    assert s2c.duplicates == 0
    assert not trunk.rserver("a").calls  # a drained and forgot the call


def test_silent_server_detected_and_call_reestablished(binding: str) -> None:
    config = RippConfig(jitter_buffer=False, ack_timeout=1.0, media_timeout=1.0)
    trunk = Trunk(
        binding=binding, servers=("a", "b"), config=config, impairment=Impairment(delay=0.01)
    )
    handle = trunk.connect()
    count = 200
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count)
    killed_at = start + 1.0
    trunk.net.schedule(killed_at, lambda: trunk.net.remove(trunk.server_addrs["a"]))
    trunk.net.run_for(count * 0.02 + 2.0)
    migrating = trunk.client.of(CallMigrating)
    assert migrating and migrating[0].phase is MigrationPhase.REESTABLISHING
    detected = next(t for t, e in trunk.client.events if isinstance(e, CallMigrating))
    # detection within the configured bound (+ one frame interval + path delay)
    assert killed_at < detected <= killed_at + config.ack_timeout + 0.02 + 0.02
    incoming_b = trunk.servers["b"].of(CallIncoming)
    assert len(incoming_b) == 1
    assert incoming_b[0].reestablishes is not None and "/inst-a/" in incoming_b[0].reestablishes
    assert incoming_b[0].state is C
    assert trunk.client_state(handle) is C
    reattached = next(
        t for t, e in trunk.client.events if isinstance(e, CallAttached) and e.migrated
    )
    assert reattached - detected < 0.5
    # media resumed on b: frames sent after the re-establishment arrive there
    b_frames = [k for k in trunk.c2s if k.startswith("b:")]
    assert b_frames
    got = trunk.c2s[b_frames[0]].received
    assert max(got) == count - 1
    sent = trunk.c2s[handle].sent
    # frames in flight to the dead server were re-sent to b (RESENT flag), not lost...
    resent = [s for s, f in trunk.c2s[b_frames[0]].frames.items() if f.resent]
    assert len(resent) >= 2
    assert all(sent[s] >= killed_at - 0.1 for s in resent)
    # ...every frame sent after the call re-attached arrived at b...
    assert all(s in got for s in sent if sent[s] >= reattached)
    # ...and the only frames given up are ones that waited too long in the queue while the
    # failure was being detected (real-time audio: late is worse than lost).
    delivered = set(got) | set(trunk.c2s[handle].received)
    missing = [s for s in sent if s not in delivered]
    assert all(killed_at <= sent[s] < reattached for s in missing)
    stats = trunk.rclient.stats(handle, trunk.net.now).sender
    assert stats.frames_dropped == len(missing)


def test_a_reestablished_call_outlives_reestablish_timeout(binding: str) -> None:
    """Re-attaching ends the re-establishment: its give-up timer (§15.3 step 6) must not
    end the call ``reestablish_timeout`` after the failure once the call is attached again
    (it did, with 408 "re-establishment failed", for every call that was re-established)."""
    config = RippConfig(
        jitter_buffer=False, ack_timeout=1.0, media_timeout=1.0, reestablish_timeout=3.0
    )
    trunk = Trunk(
        binding=binding, servers=("a", "b"), config=config, impairment=Impairment(delay=0.01)
    )
    handle = trunk.connect()
    count = 300  # 6 s of media: the failure at 1 s, the give-up time at about 5 s
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count)
    trunk.net.schedule(start + 1.0, lambda: trunk.net.remove(trunk.server_addrs["a"]))
    trunk.net.run_for(count * 0.02 + 1.0)
    detected = next(t for t, e in trunk.client.events if isinstance(e, CallMigrating))
    assert trunk.net.now > detected + config.reestablish_timeout + 1.0
    assert not trunk.client.of(CallTerminated)
    assert trunk.client_state(handle) is C
    b_frames = [k for k in trunk.c2s if k.startswith("b:")]
    assert b_frames and max(trunk.c2s[b_frames[0]].received) == count - 1


def test_a_move_to_an_instance_restarted_at_a_dead_instances_address() -> None:
    """Section 15.3: a connection a call failed on carries no request until its peer is
    heard again. Here instance a dies (no CONNECTION_CLOSE: its connection looks open),
    the call re-establishes on b, a new instance a2 starts at a's address, and b moves
    the call to a2. The client must reach a2 on a new connection: requests sent on the
    dead one would vanish (a2 knows none of a's connections) and the move would fail."""
    config = RippConfig(jitter_buffer=False)
    trunk = Trunk(servers=("a", "b"), config=config, impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    count = 300
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count)
    trunk.net.schedule(start + 1.0, lambda: trunk.net.remove(trunk.server_addrs["a"]))
    trunk.net.run_for(2.5)
    call = trunk.rclient.calls[handle]
    assert call.uri is not None and "/inst-b/" in call.uri
    trunk.restart("a", "a2")
    moved_at: list[float] = []

    def move() -> None:
        now = trunk.net.now
        b, a2 = trunk.rserver("b"), trunk.rserver("a2")
        (old,) = b.calls
        new_uri = a2.import_call(b.export_call(old, now), now)
        b.move(old, now, new_uri)
        moved_at.append(now)
        trunk.servers["b"].drain()
        trunk.servers["a2"].drain()

    trunk.net.schedule(trunk.net.now + 0.1, move)
    trunk.net.run_for(count * 0.02 - 2.5 + 1.0)
    assert moved_at
    attached = [t for t, e in trunk.client.events if isinstance(e, CallAttached) and e.migrated]
    assert attached[-1] > moved_at[0]
    assert call.uri is not None and "/inst-a2/" in call.uri
    failures = [
        t
        for t, e in trunk.client.events
        if isinstance(e, CallMigrating) and e.phase is MigrationPhase.REESTABLISHING
    ]
    assert all(t < moved_at[0] for t in failures)  # the move itself did not fail
    assert not trunk.client.of(CallTerminated)
    a2_frames = [k for k in trunk.c2s if k.startswith("a2:")]
    assert a2_frames and max(trunk.c2s[a2_frames[0]].received) == count - 1


def test_an_overloaded_server_still_reattaches_its_own_call() -> None:
    """Section 19.5: requests on existing calls are never refused for load, and that
    includes a re-establishment of a call the instance holds (section 15.4 case 1): it
    adds no call. Refused, the call could go nowhere in a cluster (every other instance
    answers 503 owner-alive while the owner holds its lease) and would end 408 (seen in
    the cluster exercise on a loaded machine). Here the path to the only server fails
    for 1.5 s while the server reports itself overloaded throughout."""
    config = RippConfig(jitter_buffer=False)
    trunk = Trunk(config=config, impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    count = 300
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count)
    server, app, addr = trunk.rserver("a"), trunk.servers["a"], trunk.server_addrs["a"]
    for tick in range(int(count * 0.02 / 0.5) + 2):
        # A stall over admission_max_stall: refusing new calls for admission_hold.
        trunk.net.schedule(start + tick * 0.5, lambda: server.report_load(1.0, trunk.net.now))
    trunk.net.schedule(start + 1.0, lambda: trunk.net.remove(addr))
    trunk.net.schedule(start + 2.5, lambda: trunk.net.add(addr, app))
    trunk.net.run_for(count * 0.02 + 0.5)
    assert server.overloaded(trunk.net.now)
    failed = next(
        t
        for t, e in trunk.client.events
        if isinstance(e, CallMigrating) and e.phase is MigrationPhase.REESTABLISHING
    )
    attached = [
        t for t, e in trunk.client.events if isinstance(e, CallAttached) and e.migrated
    ]
    assert attached and attached[-1] > failed
    assert not trunk.client.of(CallTerminated)
    assert trunk.client_state(handle) is C
    call = trunk.rclient.calls[handle]
    assert call.uri is not None and "/inst-a/" in call.uri  # the same call, re-attached
    assert max(trunk.c2s[handle].received) == count - 1


def test_a_stall_seen_first_by_a_datagram_still_counts_as_lateness() -> None:
    """Section 19.5: after a stall the driver may take the datagrams that waited before it
    runs the overdue timer; they re-arm the timer, so the lateness must be measured on
    their arrival too, or the stall goes unseen."""
    trunk = Trunk(config=RippConfig(jitter_buffer=False))
    trunk.connect()
    server = trunk.rserver("a")
    armed = server.get_timer()
    assert armed is not None
    assert not server.overloaded(armed)
    # On time (not after the armed deadline): no lateness.
    server.receive_datagram(bytes(64), ("127.0.0.9", 9), armed)
    assert server.load == 0.0 and not server.overloaded(armed)
    armed = server.get_timer()
    assert armed is not None
    # 300 ms after it (a junk datagram: what arrives does not matter, when does).
    server.receive_datagram(bytes(64), ("127.0.0.9", 9), armed + 0.3)
    assert server.load > 0.0
    assert server.overloaded(armed + 0.3)  # over admission_max_stall (250 ms) at once


def test_two_hundred_concurrent_calls(binding: str) -> None:
    config = RippConfig(jitter_buffer=False)
    trunk = Trunk(binding=binding, config=config, ring_time=0.0)
    handles = [trunk.place(to=f"tel:+1212555{n:04d}") for n in range(200)]
    assert trunk.run_until(lambda: all(trunk.client_state(h) is C for h in handles), timeout=10.0)
    server = trunk.rserver()
    assert len(server.calls) == 200
    # every call is up at once, on one client and one server; each gets media through
    for h in handles:
        trunk.link_server_call(h)
        trunk.stream_media(h, start=trunk.net.now + 0.01, count=3)
    trunk.net.run_for(0.5)
    assert all(sorted(trunk.c2s[h].received) == [0, 1, 2] for h in handles)
    streams = sum(len(c.media_channels) + 1 for c in trunk.rclient.calls.values())
    assert streams > 128  # more than aioquic's default allowance on one connection


def test_client_initiated_move_to_another_client_instance() -> None:
    """R9 from the client side: a draining client instance hands its call to another one."""
    from ripp_core import RippClient
    from ripp_core.testing import client_quic_configuration

    from .call_harness import _PKI, AppEndpoint

    trunk = Trunk(impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    second = AppEndpoint(
        RippClient(
            client_quic_configuration(_PKI),
            calls_uris=["https://a.example:443/ripp/calls"],
            token="test-token",
            config=trunk.config,
            resolver=lambda host, port: trunk.server_addrs["a"],
        ),
        trunk.net,
    )
    trunk.net.add(("127.0.0.1", 50002), second)
    received_by_second: list[int] = []
    second.reactors.append(
        lambda e: received_by_second.append(e.frame.sequence) if hasattr(e, "frame") else None
    )
    count = 100
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count, from_server=True)
    trunk.stream_media(handle, start=start, count=50)  # first half from the first client
    imported: list[str] = []

    def move() -> None:
        now = trunk.net.now
        first = trunk.rclient
        handoff = first.export_call(handle, now)
        first.move(handle, now)
        imported.append(second.endpoint.import_call(handoff, now))
        trunk.client.drain()
        second.drain()

    trunk.net.schedule(start + 50 * 0.02 + 0.005, move)
    trunk.net.run_for(3.0)
    server = trunk.servers["a"]
    assert [e.phase for e in server.of(CallMigrating)] == [MigrationPhase.MOVING]
    assert any(e.migrated for e in server.of(CallAttached))
    # the server never lost the call, and its media reached one client or the other, once
    delivered = set(trunk.s2c[handle].received) | set(received_by_second)
    assert delivered == set(range(count))
    assert not set(trunk.s2c[handle].received) & set(received_by_second)
    assert trunk.rserver().calls[trunk.server_calls[handle][1]].state is C
    assert handle not in trunk.rclient.calls  # the first client forgot it
    # the second client carries on sending, continuing the sequence with no gap
    new = imported[0]
    for i in range(5):
        second.endpoint.send_media(new, Codec.PCMU, 0.02, bytes(160), trunk.net.now + i * 0.02)
    trunk.net.run_for(0.5)
    assert sorted(trunk.c2s[handle].received) == list(range(55))


def test_signaling_frame_error_ends_the_call_and_is_not_taken_for_a_failure(binding: str) -> None:
    """The peer STOP_SENDINGs our broken signaling body; its Terminate must still be read,
    so the client ends the call instead of re-establishing it (found by the spec review)."""
    from ripp_core._frames import MediaFrame, encode_media

    trunk = Trunk(binding=binding, servers=("a", "b"), impairment=Impairment(delay=0.01))
    handle = trunk.connect()
    call = trunk.rclient.call(handle)
    assert call.signaling is not None
    bad = encode_media(MediaFrame(0, 0, Codec.PCMU, 40, bytes(160)))
    # A MEDIA frame where SIGNAL frames belong:
    trunk.rclient.send(call.signaling, bad, trunk.net.now)
    trunk.client.drain()
    trunk.net.run_for(2.0)
    ended = trunk.client.of(CallTerminated)
    assert len(ended) == 1 and ended[0].code == 400 and ended[0].by is Termination.REMOTE
    assert not trunk.client.of(CallMigrating)
    assert not trunk.servers["b"].of(CallIncoming) and not trunk.rserver("a").calls


def test_first_call_opens_its_connection_at_the_callers_time() -> None:
    """place_call at a large 'now' (Trio's clock has a random offset) must not open the
    QUIC connection at time 0, where the first timer would find it long idle."""
    from ripp_core.testing import VirtualNetwork

    trunk = Trunk()
    late = VirtualNetwork(seed=1, start=5000.0)
    trunk.net = late
    for name, addr in trunk.server_addrs.items():
        late.add(addr, trunk.servers[name])
    late.add(("127.0.0.1", 50000), trunk.client)
    for app in (trunk.client, *trunk.servers.values()):
        app.net = late
    handle = trunk.place()
    # A driver may run the endpoint's timers before it next collects datagrams (which
    # would re-arm aioquic's idle timer): do exactly that.
    trunk.rclient.handle_timer(trunk.net.now)
    trunk.client.drain()
    assert trunk.run_until(lambda: trunk.client_state(handle) is C), trunk.client.events
    assert not trunk.client.of(CallTerminated)


def test_first_media_streams_are_sized_from_the_measured_path_rtt() -> None:
    """Before any media ack, N comes from QUIC's handshake RTT, not the 100 ms guess."""
    from ripp_core import streams_for

    config = RippConfig(jitter_buffer=False)
    trunk = Trunk(impairment=Impairment(delay=0.005), config=config)
    handle = trunk.place()
    assert trunk.run_until(lambda: trunk.client_state(handle) is R)
    opened = len(trunk.rclient.call(handle).media_channels)
    assert opened == streams_for(config, 0.010, 0.02, config.assumed_loss)  # 10 ms RTT
    assert opened < streams_for(config, config.initial_rtt, 0.02, config.assumed_loss)
