"""Tests of ripp_core.testing.VirtualNetwork.

Most tests drive two raw aioquic connections (HTTP/3 over real TLS 1.3 from make_test_pki)
through the virtual network, so they check the network against the endpoint it was shaped
for. A few use a trivial scripted endpoint to pin down ordering and clock rules exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted
from aioquic.quic.packet import pull_quic_header

from ripp_core.testing import (
    Address,
    Impairment,
    LinkStats,
    TestPki,
    VirtualNetwork,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)

SERVER_ADDR: Address = ("10.0.0.1", 443)
CLIENT_ADDR: Address = ("10.0.0.2", 50000)


@pytest.fixture(scope="module")
def pki() -> TestPki:
    # aioquic checks certificate dates against the real clock, so validity starts yesterday.
    return make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))


# -- a minimal HTTP/3 client and server on raw aioquic -----------------------------------


class _H3Host:
    """Endpoint adapter around one QuicConnection plus H3Connection; records H3 events."""

    def __init__(self) -> None:
        self.quic: QuicConnection | None = None
        self.h3: H3Connection | None = None
        self.handshake_done = False
        self.terminated: ConnectionTerminated | None = None
        self.received = 0
        self.timers_handled = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received += 1
        assert self.quic is not None
        self.quic.receive_datagram(data, addr, now)
        self._pump()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.quic.datagrams_to_send(now) if self.quic is not None else []

    def get_timer(self) -> float | None:
        return self.quic.get_timer() if self.quic is not None else None

    def handle_timer(self, now: float) -> None:
        self.timers_handled += 1
        assert self.quic is not None
        self.quic.handle_timer(now)
        self._pump()

    def _pump(self) -> None:
        assert self.quic is not None and self.h3 is not None
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.handshake_done = True
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
            for h3_event in self.h3.handle_event(event):
                self.on_h3_event(h3_event)

    def on_h3_event(self, event: H3Event) -> None:
        raise NotImplementedError


class _Client(_H3Host):
    def __init__(self, pki: TestPki) -> None:
        super().__init__()
        self.quic = QuicConnection(configuration=client_quic_configuration(pki))
        self.h3 = H3Connection(self.quic)
        self.responses: dict[int, tuple[int, bytes, bool]] = {}

    def request(self, method: str, path: str, body: bytes = b"") -> int:
        assert self.quic is not None and self.h3 is not None
        stream_id = self.quic.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.responses[stream_id] = (0, b"", False)
        return stream_id

    def on_h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            status = int(dict(event.headers)[b":status"])
            self.responses[event.stream_id] = (status, b"", event.stream_ended)
        elif isinstance(event, DataReceived):
            status, body, _ = self.responses[event.stream_id]
            self.responses[event.stream_id] = (status, body + event.data, event.stream_ended)

    def done(self, stream_id: int) -> bool:
        return self.responses[stream_id][2]


class _Server(_H3Host):
    """Answers GET with a fixed body and POST by echoing the request body."""

    def __init__(self, pki: TestPki) -> None:
        super().__init__()
        self._configuration = server_quic_configuration(pki)
        self._requests: dict[int, tuple[bytes, bytes]] = {}

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self.quic is None:
            # A server connection is keyed by the client's first destination connection ID.
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            self.quic = QuicConnection(
                configuration=self._configuration,
                original_destination_connection_id=header.destination_cid,
            )
            self.h3 = H3Connection(self.quic)
        super().receive_datagram(data, addr, now)

    def on_h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self._requests[event.stream_id] = (dict(event.headers)[b":method"], b"")
            ended = event.stream_ended
        elif isinstance(event, DataReceived):
            method, body = self._requests[event.stream_id]
            self._requests[event.stream_id] = (method, body + event.data)
            ended = event.stream_ended
        else:
            return
        if ended:
            method, body = self._requests.pop(event.stream_id)
            reply = body if method == b"POST" else b"hello from the virtual network"
            assert self.h3 is not None
            self.h3.send_headers(event.stream_id, [(b":status", b"200")])
            self.h3.send_data(event.stream_id, reply, end_stream=True)


@attrs.frozen
class _Outcome:
    completed: bool
    finished_at: float
    stats: dict[tuple[Address, Address], LinkStats]


def _network(
    pki: TestPki, seed: int, impairment: Impairment
) -> tuple[VirtualNetwork, _Client, _Server]:
    net = VirtualNetwork(seed=seed, default=impairment)
    client, server = _Client(pki), _Server(pki)
    net.add(SERVER_ADDR, server)
    net.add(CLIENT_ADDR, client)
    assert client.quic is not None
    client.quic.connect(SERVER_ADDR, now=net.now)
    return net, client, server


def _post_round_trip(pki: TestPki, seed: int, impairment: Impairment, size: int) -> _Outcome:
    """Handshake, then POST ``size`` bytes and wait for the echo."""
    net, client, _server = _network(pki, seed, impairment)
    assert net.run_until(lambda: client.handshake_done, timeout=30.0)
    body = bytes(i % 251 for i in range(size))
    stream_id = client.request("POST", "/echo", body)
    completed = net.run_until(lambda: client.done(stream_id), timeout=60.0)
    if completed:
        assert client.responses[stream_id] == (200, body, True)
    return _Outcome(completed=completed, finished_at=net.now, stats=net.stats)


# -- (a) perfect link -----------------------------------------------------------------------


def test_handshake_and_round_trips_over_a_perfect_link(pki: TestPki) -> None:
    net, client, server = _network(pki, seed=1, impairment=Impairment())
    assert net.run_until(lambda: client.handshake_done and server.handshake_done, timeout=5.0)

    get = client.request("GET", "/")
    assert net.run_until(lambda: client.done(get), timeout=5.0)
    assert client.responses[get] == (200, b"hello from the virtual network", True)

    body = b"x" * 20_000
    post = client.request("POST", "/echo", body)
    assert net.run_until(lambda: client.done(post), timeout=5.0)
    assert client.responses[post] == (200, body, True)

    # No delay configured: only aioquic's pacing lets virtual time move, and not far.
    assert net.now < 0.1
    up = net.link_stats(CLIENT_ADDR, SERVER_ADDR)
    down = net.link_stats(SERVER_ADDR, CLIENT_ADDR)
    for stats in (up, down):
        assert stats.sent > 0
        assert stats.lost == stats.duplicated == stats.undeliverable == 0
    # Perfect link, but some of the last acks may still be in flight: none is lost.
    assert up.delivered <= up.sent and down.delivered <= down.sent


def test_handshake_with_an_ecdsa_server_key() -> None:
    pki = make_test_pki(
        ["localhost"], not_before=datetime.now(UTC) - timedelta(days=1), server_key_type="p256"
    )
    net, client, server = _network(pki, seed=1, impairment=Impairment(delay=0.01))
    assert net.run_until(lambda: client.handshake_done and server.handshake_done, timeout=5.0)


def test_client_rejects_a_server_from_another_pki(pki: TestPki) -> None:
    other = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
    net = VirtualNetwork(seed=1)
    client, server = _Client(pki), _Server(other)
    net.add(SERVER_ADDR, server)
    net.add(CLIENT_ADDR, client)
    assert client.quic is not None
    client.quic.connect(SERVER_ADDR, now=net.now)
    assert net.run_until(lambda: client.terminated is not None, timeout=5.0)
    assert not client.handshake_done
    assert client.terminated is not None
    # QUIC CRYPTO_ERROR (0x100) carrying the TLS bad_certificate alert (42).
    assert client.terminated.error_code == 0x100 + 42


# -- (b) lossy, delayed, jittery link ---------------------------------------------------------


def test_round_trip_survives_loss_delay_and_jitter(pki: TestPki) -> None:
    impairment = Impairment(delay=0.05, jitter=0.01, loss=0.05)
    outcome = _post_round_trip(pki, seed=3, impairment=impairment, size=60_000)
    assert outcome.completed
    # At least the handshake's round trip plus the request's: 4 one-way trips, minus jitter.
    assert outcome.finished_at >= 2 * impairment.delay
    assert outcome.finished_at >= 4 * (impairment.delay - impairment.jitter)
    assert outcome.finished_at < 30.0
    total = sum(s.sent for s in outcome.stats.values())
    assert total > 50  # 60 kB each way needs many packets


# -- (c) determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_runs(pki: TestPki) -> None:
    impairment = Impairment(delay=0.02, jitter=0.01, loss=0.1, duplicate=0.05, reorder=0.05)
    first = _post_round_trip(pki, seed=42, impairment=impairment, size=30_000)
    second = _post_round_trip(pki, seed=42, impairment=impairment, size=30_000)
    assert first.completed and second.completed
    assert first == second


def test_different_seeds_give_different_losses(pki: TestPki) -> None:
    impairment = Impairment(delay=0.02, jitter=0.01, loss=0.1)
    outcomes = [_post_round_trip(pki, seed, impairment, size=30_000) for seed in (1, 2, 3)]
    assert all(outcome.completed for outcome in outcomes)
    assert len({repr(outcome.stats) for outcome in outcomes}) > 1


# -- (d) duplication and reordering ------------------------------------------------------------


def test_duplicates_and_reordering_are_counted(pki: TestPki) -> None:
    impairment = Impairment(delay=0.01, duplicate=0.2, reorder=0.2, reorder_delay=0.03)
    net, client, _server = _network(pki, seed=5, impairment=impairment)
    assert net.run_until(lambda: client.handshake_done, timeout=10.0)
    body = b"y" * 40_000
    stream_id = client.request("POST", "/echo", body)
    assert net.run_until(lambda: client.done(stream_id), timeout=10.0)
    assert client.responses[stream_id] == (200, body, True)

    net.run_for(1.0)  # let every datagram in flight land
    for stats in net.stats.values():
        assert stats.duplicated > 0
        assert stats.reordered > 0
        assert stats.lost == 0
        assert stats.delivered == stats.sent + stats.duplicated


# -- (e) a removed endpoint ----------------------------------------------------------------------


def test_removed_endpoint_receives_nothing(pki: TestPki) -> None:
    net, client, server = _network(pki, seed=9, impairment=Impairment(delay=0.01))
    assert net.run_until(lambda: client.handshake_done and server.handshake_done, timeout=5.0)
    net.run_for(0.5)
    received, timers = server.received, server.timers_handled
    delivered = net.link_stats(CLIENT_ADDR, SERVER_ADDR).delivered

    net.remove(SERVER_ADDR)
    removed_at = net.now
    stream_id = client.request("GET", "/")
    assert not net.run_until(lambda: client.done(stream_id), timeout=5.0)
    assert net.now == removed_at + 5.0

    assert (server.received, server.timers_handled) == (received, timers)
    up = net.link_stats(CLIENT_ADDR, SERVER_ADDR)
    assert up.delivered == delivered
    assert up.undeliverable > 0  # the request and its retransmissions went nowhere


# -- ordering and clock rules, with a scripted endpoint -------------------------------------------


@attrs.define
class _Scripted:
    """Sends what it is told to, and logs what it receives and when its timer fires."""

    outbox: list[tuple[bytes, Address]] = attrs.Factory(list)
    timer: float | None = None
    log: list[tuple[str, bytes, float]] = attrs.Factory(list)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.log.append(("rx", data, now))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.log.append(("timer", b"", now))
        self.timer = None


@pytest.fixture
def pair() -> Iterator[tuple[VirtualNetwork, _Scripted, _Scripted]]:
    net = VirtualNetwork(seed=0, start=100.0)
    a, b = _Scripted(), _Scripted()
    net.add(("a", 1), a)
    net.add(("b", 1), b)
    yield net, a, b


def test_events_run_in_time_order_and_ties_in_insertion_order(
    pair: tuple[VirtualNetwork, _Scripted, _Scripted],
) -> None:
    net, a, b = pair
    net.set_impairment(("a", 1), ("b", 1), Impairment(delay=0.5))
    order: list[str] = []
    net.schedule(100.5, lambda: order.append("first"))
    a.outbox = [(b"1", ("b", 1)), (b"2", ("b", 1))]
    net.schedule(100.5, lambda: order.append("second"))
    b.timer = 100.2
    net.run_for(1.0)
    assert order == ["first", "second"]
    assert b.log == [("timer", b"", 100.2), ("rx", b"1", 100.5), ("rx", b"2", 100.5)]
    assert net.now == 101.0


def test_timers_are_rearmed_and_stale_ones_ignored(
    pair: tuple[VirtualNetwork, _Scripted, _Scripted],
) -> None:
    net, a, _b = pair
    a.timer = 103.0
    net.flush()
    a.timer = 102.0  # re-armed earlier: only the new value may fire
    net.schedule(101.0, lambda: None)  # a callback makes the network poll every endpoint
    net.run_for(5.0)
    assert a.log == [("timer", b"", 102.0)]


def test_run_until_times_out_at_the_deadline(
    pair: tuple[VirtualNetwork, _Scripted, _Scripted],
) -> None:
    net, _a, _b = pair
    assert not net.run_until(lambda: False, timeout=2.5)
    assert net.now == 102.5
    assert net.run_until(lambda: True, timeout=1.0)
    assert net.now == 102.5


def test_schedule_in_the_past_is_refused(
    pair: tuple[VirtualNetwork, _Scripted, _Scripted],
) -> None:
    net, _a, _b = pair
    with pytest.raises(ValueError):
        net.schedule(99.0, lambda: None)


def test_jitter_never_sends_a_datagram_back_in_time() -> None:
    net = VirtualNetwork(seed=4)
    a, b = _Scripted(), _Scripted()
    net.add(("a", 1), a)
    net.add(("b", 1), b)
    net.set_impairment(("a", 1), ("b", 1), Impairment(delay=0.001, jitter=0.01))
    a.outbox = [(bytes([i]), ("b", 1)) for i in range(50)]
    net.run_for(1.0)
    times = [now for _kind, _data, now in b.log]
    assert len(times) == 50
    assert min(times) >= 0.0
    assert times == sorted(times)
    # Jitter reorders: the arrival order is not the sending order.
    assert [data for _kind, data, _now in b.log] != [bytes([i]) for i in range(50)]


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": 1.5}, {"duplicate": -0.1}, {"delay": -1.0}, {"jitter": float("nan")}],
)
def test_impairment_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)
