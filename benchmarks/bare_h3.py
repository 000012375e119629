"""Bare HTTP/3 over aioquic, with no RIPP logic: the baselines the benchmarks compare to.

:class:`BareEndpoint` holds many ``QuicConnection`` + ``H3Connection`` pairs demultiplexed
by connection ID and offers aioquic's sans-IO contract (``receive_datagram`` /
``datagrams_to_send`` / ``get_timer`` / ``handle_timer``), so the same object runs on the
in-memory :class:`~ripp_core.testing.VirtualNetwork` (head-of-line benchmark) and over a
real UDP socket with :class:`BareDriver`, a minimal Trio loop (capacity and call-setup
benchmarks). What the application does with requests is a callback: ``on_event(connection,
h3_event, now)``.

This is benchmark code, not product: it has no limits, no error recovery and no call
state. It is written to be about as cheap as a hand-written aioquic application can be:
only the connections touched since the last send are asked for datagrams.
"""

from __future__ import annotations

import contextlib
import copy
import math
import socket
from collections.abc import Callable

import trio
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import H3Event
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

Address = tuple[str, int]

#: Bidirectional streams each side allows its peer (aioquic's fixed default is 128); the
#: same value RIPP advertises, so neither stack runs out of stream credit first.
STREAM_LIMIT = 2048


class BareConnection:
    """One QUIC connection with its HTTP/3 layer and the peer's address."""

    def __init__(self, quic: QuicConnection, peer: Address) -> None:
        self.quic = quic
        self.h3 = H3Connection(quic)
        self.peer = peer
        self.handshake_done = False
        self.closed = False
        self.calls = 0  # how many calls (requests) the application put on it
        self.state: dict[int, object] = {}  # per-stream application state


EventHandler = Callable[[BareConnection, H3Event, float], None]


def _raise_stream_limit(quic: QuicConnection) -> None:
    # The same private attribute RIPP raises (see ripp_core._engine._raise_stream_limit).
    quic._local_max_streams_bidi.value = max(quic._local_max_streams_bidi.value, STREAM_LIMIT)


class BareEndpoint:
    """Many bare H3 connections behind one address, with aioquic's sans-IO contract."""

    def __init__(self, configuration: QuicConfiguration, on_event: EventHandler) -> None:
        if not configuration.alpn_protocols:
            configuration.alpn_protocols = list(H3_ALPN)
        self.configuration = configuration
        self.on_event = on_event
        self.connections: list[BareConnection] = []
        self._by_cid: dict[bytes, BareConnection] = {}
        self._dirty: set[BareConnection] = set()
        self.on_handshake: Callable[[BareConnection, float], None] | None = None

    # ------------------------------------------------------------ client side
    def connect(self, address: Address, now: float) -> BareConnection:
        """Open a new client connection to ``address``."""
        configuration = copy.copy(self.configuration)
        quic = QuicConnection(configuration=configuration)
        _raise_stream_limit(quic)
        quic.connect(address, now)
        connection = BareConnection(quic, address)
        self._add(connection)
        return connection

    def touch(self, connection: BareConnection) -> None:
        """Mark a connection as having something to send (after an h3 write)."""
        self._dirty.add(connection)

    # ------------------------------------------------------------ sans-IO contract
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            return
        connection = self._by_cid.get(header.destination_cid)
        if connection is None:
            if (
                self.configuration.is_client
                or header.packet_type != QuicPacketType.INITIAL
                or len(data) < 1200
            ):
                return
            quic = QuicConnection(
                configuration=self.configuration,
                original_destination_connection_id=header.destination_cid,
            )
            _raise_stream_limit(quic)
            connection = BareConnection(quic, addr)
            self._add(connection)
            self._by_cid[header.destination_cid] = connection
        connection.quic.receive_datagram(data, addr, now)
        self._process(connection, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        datagrams: list[tuple[bytes, Address]] = []
        dirty, self._dirty = self._dirty, set()
        for connection in dirty:
            datagrams.extend(connection.quic.datagrams_to_send(now))
        return datagrams

    def get_timer(self) -> float | None:
        timer: float | None = None
        for connection in self.connections:
            at = connection.quic.get_timer()
            if at is not None and (timer is None or at < timer):
                timer = at
        return timer

    def handle_timer(self, now: float) -> None:
        for connection in self.connections:
            at = connection.quic.get_timer()
            if at is not None and at <= now:
                connection.quic.handle_timer(now)
                self._process(connection, now)

    def close(self) -> None:
        for connection in self.connections:
            connection.quic.close(error_code=0, reason_phrase="benchmark over")
            self._dirty.add(connection)

    # ------------------------------------------------------------ internals
    def _add(self, connection: BareConnection) -> None:
        self.connections.append(connection)
        for cid in connection.quic._host_cids:
            self._by_cid[cid.cid] = connection
        self._dirty.add(connection)

    def _process(self, connection: BareConnection, now: float) -> None:
        self._dirty.add(connection)
        quic = connection.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, quic_events.ConnectionIdIssued):
                self._by_cid[event.connection_id] = connection
            elif isinstance(event, quic_events.ConnectionIdRetired):
                self._by_cid.pop(event.connection_id, None)
            elif isinstance(event, quic_events.HandshakeCompleted):
                connection.handshake_done = True
                if self.on_handshake is not None:
                    self.on_handshake(connection, now)
            elif isinstance(event, quic_events.ConnectionTerminated):
                connection.closed = True
            for h3_event in connection.h3.handle_event(event):
                self.on_event(connection, h3_event, now)


class BareDriver:
    """A minimal Trio UDP loop around a :class:`BareEndpoint` (the shape of ripp_trio's)."""

    def __init__(self, endpoint: BareEndpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self._timer_changed = trio.Event()

    def now(self) -> float:
        return trio.current_time()

    def flush(self) -> None:
        for data, addr in self.endpoint.datagrams_to_send(self.now()):
            # A full buffer or a vanished peer is UDP loss; QUIC repairs it.
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError, InterruptedError):
                self.sock.sendto(data, addr)
        self._timer_changed.set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            task_status.started()

    async def _receive_loop(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            for _ in range(10_000):  # bounded drain of the socket
                try:
                    data, addr = self.sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue
                self.endpoint.receive_datagram(data, addr[:2], self.now())
            self.flush()

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed = trio.Event()
            deadline = self.endpoint.get_timer()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._timer_changed.wait()
                continue
            self.endpoint.handle_timer(self.now())
            self.flush()

    def goodbye(self) -> None:
        """Close every connection and send the CONNECTION_CLOSEs (socket stays open)."""
        self.endpoint.close()
        self.flush()


def udp_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound non-blocking UDP socket with default buffers, as ripp_trio opens it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((host, port))
    return sock
