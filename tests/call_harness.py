"""Whole-call test bed: RIPP client and server cores over the in-memory network.

Each endpoint is wrapped so that after every input its events are drained into a list and
handed to a small scripted "application" (answer, reject, echo...), all in virtual time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ripp_core import (
    CallIncoming,
    CallState,
    CallStateChanged,
    CallTerminated,
    Codec,
    Event,
    MediaPlayout,
    MediaReceived,
    RippClient,
    RippConfig,
    RippServer,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
)
from ripp_core._h2 import RippH2Client, RippH2Server
from ripp_core._http import HttpClient, HttpServer
from ripp_core.testing import (
    Impairment,
    VirtualNetwork,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)
from ripp_core.testing._network import StreamKey

CLIENT_ADDR = ("127.0.0.1", 50000)
IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIzNCJdfX0"
    ".c2lnbmF0dXJl;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
# One PKI for the whole test session: key generation is the slowest part of set-up.
_PKI = make_test_pki(
    ["localhost", "a.example", "b.example"],
    not_before=datetime.now(UTC) - timedelta(days=1),
)

PCMU_20MS = bytes(range(160))


class AppEndpoint:
    """Wraps a RIPP endpoint; drains its events after every call into ``events``."""

    def __init__(self, endpoint: HttpClient | HttpServer, net: VirtualNetwork) -> None:
        self.endpoint = endpoint
        self.net = net
        self.events: list[tuple[float, Event]] = []
        self.reactors: list[Callable[[Event], None]] = []

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        assert isinstance(self.endpoint, RippClient | RippServer)
        self.endpoint.receive_datagram(data, addr, now)
        self.drain()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        assert isinstance(self.endpoint, RippClient | RippServer)
        return self.endpoint.datagrams_to_send(now)

    # The HTTP/2 binding's byte-stream contract (VirtualNetwork.add_stream).
    def receive_data(self, data: bytes, peer: StreamKey, now: float) -> None:
        assert isinstance(self.endpoint, RippH2Client | RippH2Server)
        self.endpoint.receive_data(data, peer, now)
        self.drain()

    def data_to_send(self, now: float) -> list[tuple[bytes, StreamKey]]:
        assert isinstance(self.endpoint, RippH2Client | RippH2Server)
        return self.endpoint.data_to_send(now)

    def connection_lost(self, peer: StreamKey, now: float) -> None:
        assert isinstance(self.endpoint, RippH2Client | RippH2Server)
        self.endpoint.connection_lost(peer, now)
        self.drain()

    def get_timer(self) -> float | None:
        timer: float | None = self.endpoint.get_timer()  # type: ignore[attr-defined]
        return timer

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)  # type: ignore[attr-defined]
        self.drain()

    def drain(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.events.append((self.net.now, event))
            for react in list(self.reactors):
                react(event)

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def states(self, call: str) -> list[CallState]:
        return [e.state for e in self.of(CallStateChanged) if e.call == call]


@attrs.define
class MediaLog:
    """Send and arrival times of frames, per call and direction."""

    sent: dict[int, float] = attrs.Factory(dict)
    received: dict[int, float] = attrs.Factory(dict)
    frames: dict[int, Any] = attrs.Factory(dict)
    duplicates: int = 0

    def latencies(self) -> dict[int, float]:
        return {s: self.received[s] - self.sent[s] for s in self.received if s in self.sent}


class Trunk:
    """A client and one or more server instances on a virtual network, over HTTP/3
    (``binding="h3"``, QUIC datagram links) or HTTP/2 (``"h2"``, byte-stream links)."""

    def __init__(
        self,
        *,
        seed: int = 1,
        servers: tuple[str, ...] = ("a",),
        impairment: Impairment | None = None,
        config: RippConfig | None = None,
        server_config: RippConfig | None = None,
        auto: str = "answer",
        ring_time: float = 0.05,
        binding: str = "h3",
    ) -> None:
        self.binding = binding
        self.net = VirtualNetwork(seed=seed, default=impairment)
        self.config = config or RippConfig(jitter_buffer=False)
        self._id_counters: dict[str, int] = {}
        self.server_addrs: dict[str, tuple[str, int]] = {}
        self.servers: dict[str, AppEndpoint] = {}
        self._server_config = server_config or self.config
        for index, name in enumerate(servers):
            addr = ("127.0.0.1", 4430 + index)
            self.server_addrs[name] = addr
            self._start_server(name, f"inst-{name}", f"{name}.example:443", addr)
        resolver = {f"{n}.example": a for n, a in self.server_addrs.items()}
        calls_uris = [f"https://{n}.example:443/ripp/calls" for n in servers]
        client: HttpClient
        if binding == "h2":
            client = RippH2Client(
                calls_uris=calls_uris,
                token="test-token",
                config=self.config,
                resolver=lambda host, port: resolver[host],
            )
        else:
            client = RippClient(
                client_quic_configuration(_PKI),
                calls_uris=calls_uris,
                token="test-token",
                config=self.config,
                resolver=lambda host, port: resolver[host],
            )
        self.client = AppEndpoint(client, self.net)
        self._attach(CLIENT_ADDR, self.client)
        self.auto = auto
        self.ring_time = ring_time
        # server-side handle of each client call: (server name, handle)
        self.server_calls: dict[str, tuple[str, str]] = {}
        self._incoming: list[tuple[str, CallIncoming]] = []
        self._aliases: dict[tuple[str, str], str] = {}
        self.c2s: dict[str, MediaLog] = defaultdict(MediaLog)
        self.s2c: dict[str, MediaLog] = defaultdict(MediaLog)
        self.client.reactors.append(self._client_media)

    def _start_server(
        self, name: str, instance_id: str, authority: str, addr: tuple[str, int]
    ) -> None:
        server: HttpServer
        if self.binding == "h2":
            server = RippH2Server(
                instance_id=instance_id,
                authority=authority,
                config=self._server_config,
                authorizer=insecure_accept_any_bearer,
                identity_verifier=insecure_accept_any_identity,
                call_id_source=self._call_ids(name),
            )
        else:
            server = RippServer(
                server_quic_configuration(_PKI),
                instance_id=instance_id,
                authority=authority,
                config=self._server_config,
                authorizer=insecure_accept_any_bearer,
                identity_verifier=insecure_accept_any_identity,
                call_id_source=self._call_ids(name),
            )
        app = AppEndpoint(server, self.net)
        app.reactors.append(self._server_app(app, name))
        self.servers[name] = app
        self._attach(addr, app)

    def restart(self, old: str, new: str) -> None:
        """A new server instance ``new`` at the address and authority of ``old`` (which
        must have been removed from the network): a restarted process, which knows none
        of the old one's connections."""
        addr = self.server_addrs[old]
        self.server_addrs[new] = addr
        self._start_server(new, f"inst-{new}", f"{old}.example:443", addr)

    def _attach(self, addr: tuple[str, int], app: AppEndpoint) -> None:
        if self.binding == "h2":
            self.net.add_stream(addr, app)
        else:
            self.net.add(addr, app)

    # ------------------------------------------------------------------ scripted apps
    def _call_ids(self, name: str) -> Callable[[], str]:
        """Deterministic call ids (real servers use 128 random bits), so runs repeat."""

        def next_id() -> str:
            self._id_counters[name] = self._id_counters.get(name, 0) + 1
            return f"{name}{self._id_counters[name]:x}"

        return next_id

    def _server_app(self, app: AppEndpoint, name: str) -> Callable[[Event], None]:
        server = app.endpoint
        assert isinstance(server, HttpServer)

        def react(event: Event) -> None:
            now = self.net.now
            if isinstance(event, CallStateChanged) and event.state is CallState.PENDING:
                if self.auto == "answer":
                    server.ring(event.call, now)
                    self.net.schedule(now + self.ring_time, lambda: self._answer(app, event.call))
                elif self.auto == "ring":
                    server.ring(event.call, now)
                elif self.auto.startswith("reject"):
                    code = int(self.auto.split(":")[1])
                    server.reject(event.call, now, code, {486: "Busy Here", 603: "Decline"}[code])
            elif isinstance(event, (MediaReceived, MediaPlayout)):
                key = self._client_handle(name, event.call)
                log = self.c2s[key or f"{name}:{event.call}"]
                seq = event.frame.sequence
                if seq in log.received:
                    log.duplicates += 1
                else:
                    log.received[seq] = self.net.now
                    log.frames[seq] = event.frame
            elif isinstance(event, CallIncoming):
                self._incoming.append((name, event))

        return react

    def _answer(self, app: AppEndpoint, handle: str) -> None:
        server = app.endpoint
        assert isinstance(server, HttpServer)
        call = server.calls.get(handle)
        if call is not None and call.state in (CallState.PENDING, CallState.RINGING):
            server.answer(handle, self.net.now)
        app.drain()

    def _client_handle(self, server_name: str, server_handle: str) -> str | None:
        return self._aliases.get((server_name, server_handle))

    def link(self, client_handle: str, server_name: str, server_handle: str) -> None:
        """Record that a server call belongs to a client call (kept across moves)."""
        self.server_calls[client_handle] = (server_name, server_handle)
        self._aliases[(server_name, server_handle)] = client_handle

    def _client_media(self, event: Event) -> None:
        if isinstance(event, (MediaReceived, MediaPlayout)):
            log = self.s2c[event.call]
            seq = event.frame.sequence
            if seq in log.received:
                log.duplicates += 1
            else:
                log.received[seq] = self.net.now
                log.frames[seq] = event.frame

    # ------------------------------------------------------------------ helpers
    @property
    def rclient(self) -> HttpClient:
        endpoint = self.client.endpoint
        assert isinstance(endpoint, HttpClient)
        return endpoint

    def rserver(self, name: str = "a") -> HttpServer:
        endpoint = self.servers[name].endpoint
        assert isinstance(endpoint, HttpServer)
        return endpoint

    def place(self, to: str = "tel:+12125551234", from_: str = "tel:+14085551234") -> str:
        self._incoming = []
        handle = self.rclient.place_call(
            to=f"<{to}>", from_=f'"Alice" <{from_}>;tag=1', identity=IDENTITY, now=self.net.now
        )
        self.client.drain()
        return handle

    def link_server_call(self, client_handle: str) -> tuple[str, str]:
        """Find the server call of a client call by its URI."""
        uri = self.rclient.call(client_handle).uri
        for name, app in self.servers.items():
            for handle, call in app.endpoint.calls.items():
                if call.uri == uri:
                    self.link(client_handle, name, handle)
                    return name, handle
        raise AssertionError(f"no server call for {uri}")

    def client_state(self, handle: str) -> CallState | None:
        call = self.rclient.calls.get(handle)
        if call is not None:
            return call.state
        terminated = [e for e in self.client.of(CallTerminated) if e.call == handle]
        return CallState.TERMINATED if terminated else None

    def run_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        return self.net.run_until(predicate, timeout)

    def connect(self, **kwargs: Any) -> str:
        handle = self.place(**kwargs)
        assert self.run_until(lambda: self.client_state(handle) is CallState.CONNECTED), (
            self.client.events
        )
        self.link_server_call(handle)
        return handle

    def stream_media(
        self,
        handle: str,
        *,
        start: float,
        count: int,
        interval: float = 0.02,
        codec: Codec = Codec.PCMU,
        payload: Callable[[int], tuple[Codec, float, bytes]] | None = None,
        from_server: bool = False,
    ) -> None:
        """Schedule ``count`` frames every ``interval`` from client (or server) side."""

        def send(index: int) -> None:
            if payload is not None:
                c, duration, data = payload(index)
            else:
                c, duration, data = codec, interval, bytes(int(interval * 8000))
            if from_server:
                name, server_handle = self.server_calls[handle]
                server = self.rserver(name)
                if server_handle not in server.calls:
                    return
                frame = server.send_media(server_handle, c, duration, data, self.net.now)
                self.s2c[handle].sent[frame.sequence] = self.net.now
                self.servers[name].drain()
            else:
                if handle not in self.rclient.calls:
                    return
                frame = self.rclient.send_media(handle, c, duration, data, self.net.now)
                self.c2s[handle].sent[frame.sequence] = self.net.now
                self.client.drain()

        for index in range(count):
            self.net.schedule(start + index * interval, lambda i=index: send(i))
