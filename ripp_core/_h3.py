"""The HTTP/3 binding: RIPP over sans-IO QUIC and HTTP/3 connections.

It owns QUIC connections, demultiplexed by connection ID, and speaks aioquic's own
contract (``receive_datagram`` / ``datagrams_to_send`` / ``get_timer`` / ``handle_timer``
/ ``next_event``). The connections come from a QUIC engine (:mod:`._engine`: aioquic by
default, qh3 as an option), used through aioquic's public API only; what that API does
not tell is asked of the engine. aioquic's packet helpers (header parsing, Retry and
Version Negotiation) serve whichever engine runs.

* :class:`RippServer` answers calls. It creates a QUIC connection on a client's first
  Initial packet (with a Retry when many handshakes are open), bounds connections and
  undecoded bytes, and hands each request stream to the HTTP-semantics layer.
* :class:`RippClient` places calls against a list of calls URIs (the first is primary, the
  rest are failover targets for re-establishment) over a pool of connections.

RIPP's HTTP rules live in :mod:`._http`, the calls, timers and events in :mod:`._endpoint`;
all protocol decisions are made by :class:`~ripp_core._call.Call`. The HTTP/2 binding
(:mod:`._h2`) sits beside this one on the same two layers.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, cast

import attrs
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionError
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from ._auth import Authorizer, IdentityVerifier
from ._batch import SendSlots
from ._call import Call
from ._config import RippConfig
from ._engine import (
    _STREAM_ID_STEP,
    EventKind,
    GuardedH3,
    H3Guard,
    H3Like,
    MalformedRequest,
    QuicLike,
    quic_engine,
)
from ._errors import H3_EXCESSIVE_LOAD
from ._headers import Headers
from ._http import (
    Address,
    HttpClient,
    HttpConnection,
    HttpEndpoint,
    HttpServer,
    StreamKind,
    _host_port,
)
from ._http import (
    random_call_id as _random_call_id,
)
from ._logs import LogLimiter

logger = logging.getLogger("ripp.h3")


@attrs.define(eq=False, kw_only=True)
class _Connection(HttpConnection):
    quic: QuicLike
    h3: H3Like
    guard: GuardedH3 | None = None  # a server's h3, when it keeps RIPP's bounds
    handshake_done: bool = False
    handshake_deadline: float | None = None
    cids: set[bytes] = attrs.Factory(set)
    # The QUIC connection's get_timer() as last read, and whether it may have changed
    # since (see _QuicBinding._timer_of).
    quic_timer: float | None = None
    timer_stale: bool = True


class _QuicBinding(HttpEndpoint):
    """The QUIC side shared by client and server: connections by CID, datagrams in and
    out, QUIC timers, and the HTTP layer's primitives as HTTP/3 stream operations."""

    def _init_quic(self, quic_configuration: QuicConfiguration) -> None:
        self._quic_configuration = quic_configuration
        if not quic_configuration.alpn_protocols:
            quic_configuration.alpn_protocols = list(H3_ALPN)
        self._engine = quic_engine(
            self.config.quic_engine,
            quic_configuration,
            LogLimiter(logger, burst=self.config.log_burst, interval=self.config.log_interval),
        )
        self._kinds = self._engine.kinds
        self._touched: set[HttpConnection] = set()  # may have something to send
        # Connections held back so that media of their calls leaves in one batch (11.9).
        self._slots: SendSlots[HttpConnection] = SendSlots(self.config.send_batch_window)
        self._next_full_poll = 0.0
        self._by_cid: dict[bytes, _Connection] = {}
        self._goodbyes: list[tuple[bytes, Address]] = []
        # Answers that need no connection state: Version Negotiation and Retry packets.
        self._stateless: list[tuple[bytes, Address]] = []

    def _quic_connections(self) -> list[_Connection]:
        return [c for c in self._connections if isinstance(c, _Connection)]

    # ---------------------------------------------------------------- aioquic contract
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP datagram that arrived from ``addr``."""
        self._input_arrived(now)
        self._log_clock = now
        connection = self._connection_for_datagram(data, addr, now)
        if connection is None:
            return
        fresh = not connection.handshake_done and self._engine.is_first_flight(connection.quic)
        connection.quic.receive_datagram(data, addr, now)
        connection.heard_at = now
        self._touched.add(connection)
        # Only a server's connections have a guard (a client's first flight is its own).
        if fresh and connection.guard is not None and self._engine.is_first_flight(
            connection.quic
        ):
            # Not one packet of this "Initial" decrypted: garbage or spoofed. Forget it at
            # once rather than hold a connection slot until the handshake times out.
            logger.debug("undecryptable Initial from %s dropped", addr)
            self._drop_connection(connection)
            self._on_junk_initial(now)
            return
        self._process(connection, now)
        self._settle(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram ready to go, each with the address to send it to.

        Only connections touched since the last call (a datagram in, a timer, a write) are
        asked: polling every connection of a busy endpoint for every batch was a third of
        a server's time. Every ``full_poll_interval`` all are asked anyway, as a safety net.
        """
        datagrams, self._goodbyes = self._goodbyes, []
        # A connection held for a send slot (11.9) is not asked until its batch is over:
        # everything written on it meanwhile leaves in the same packets.
        held = self._slots.holding(now)
        if now >= self._next_full_poll:
            self._next_full_poll = now + self.config.full_poll_interval
            candidates = [c for c in self._quic_connections() if c not in held]
            for connection in self._quic_connections():
                connection.timer_stale = True  # the same safety net for cached timers
        else:
            candidates = [
                c for c in self._quic_connections() if c in self._touched and c not in held
            ]
        self._touched = {c for c in self._touched if c in held}
        for connection in candidates:
            self._slots.release(connection)
            datagrams.extend(connection.quic.datagrams_to_send(now))
            connection.timer_stale = True  # sending arms loss detection, clears ACK timers
            if connection.closed:
                self._drop_connection(connection)
        if self._stateless:
            datagrams.extend(self._stateless)
            self._stateless.clear()
        return datagrams

    def _media_written(self, handle: str, duration: float, now: float) -> None:
        connection = self._slots.group_of(handle)
        if connection is None or handle not in connection.calls or connection.closed:
            connection = next(
                (c for c in self._connections if handle in c.calls and not c.closed), None
            )
        if connection is not None:
            self._slots.media(connection, handle, duration, now)

    def _forget_call(self, call: Call, now: float | None = None) -> None:
        self._slots.forget_call(call.handle)
        super()._forget_call(call, now)

    def _timer_of(self, connection: _Connection) -> float | None:
        """``connection.quic.get_timer()``, read again only when it may have changed.

        A QUIC connection's timer moves only when it takes input (a datagram, a timer, a
        write: all of which mark it touched) or builds packets (``datagrams_to_send``
        marks it stale). Asking every connection after every burst of work was a tenth of
        a busy endpoint's time; the full poll marks all stale now and then as a safety net.
        """
        if connection.timer_stale or connection in self._touched:
            connection.quic_timer = connection.quic.get_timer()
            # A touched connection may change again before it is polled: read it each time.
            connection.timer_stale = connection in self._touched
        return connection.quic_timer

    def _quic_timer(self) -> float | None:
        """The earliest QUIC, handshake, idle or send-slot deadline of any connection."""
        timer: float | None = self._slots.next_deadline()
        for connection in self._quic_connections():
            idle = self._idle_deadline(connection)
            quic_at = self._timer_of(connection)
            hold = self._slots.deadline_of(connection)
            if quic_at is not None and hold is not None:
                # A held connection is not asked for datagrams before its batch ends: an
                # ACK falling due meanwhile would otherwise wake us in a loop until then.
                quic_at = max(quic_at, hold)
            for at in (quic_at, connection.handshake_deadline, idle):
                if at is not None and (timer is None or at < timer):
                    timer = at
        return timer

    def _quic_timers(self, now: float) -> None:
        for connection in self._quic_connections():
            deadline = connection.handshake_deadline
            if deadline is not None and deadline <= now and not connection.closed:
                # A handshake that never completes (garbage or spoofed Initials) must not
                # hold one of the max_connections slots until the idle timeout.
                self._limited(now, "handshake with %s timed out", connection.peer[0])
                self._close_connection(connection, now, "handshake timeout")
                continue
            idle_deadline = self._idle_deadline(connection)
            if idle_deadline is not None and idle_deadline <= now and not connection.closed:
                logger.info("connection from %s carried no call for %.0f s: closed",
                            connection.peer, self.config.idle_connection_timeout)
                self._close_connection(connection, now, "idle")
                continue
            at = self._timer_of(connection)
            if at is not None and at <= now:
                connection.quic.handle_timer(now)
                connection.timer_stale = True
                self._touched.add(connection)
                self._process(connection, now)

    # ---------------------------------------------------------------- HTTP primitives
    def _raw_headers(
        self, connection: HttpConnection, stream_id: int, fields: Headers, end: bool
    ) -> None:
        assert isinstance(connection, _Connection)
        connection.h3.send_headers(stream_id, fields, end)

    def _raw_data(
        self, connection: HttpConnection, stream_id: int, data: bytes, end: bool
    ) -> None:
        assert isinstance(connection, _Connection)
        connection.h3.send_data(stream_id, data, end)

    def _stop_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        assert isinstance(connection, _Connection)
        try:
            connection.quic.stop_stream(stream_id, code)
        except Exception:  # already finished in that direction
            logger.debug("stop of finished stream %d ignored", stream_id)

    def _abort_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        assert isinstance(connection, _Connection)
        try:
            connection.quic.reset_stream(stream_id, code)
        except Exception:  # the stream may already be finished in that direction
            logger.debug("reset of finished stream %d ignored", stream_id)
        self._stop_stream(connection, stream_id, code)

    def _touch(self, connection: HttpConnection) -> None:
        self._touched.add(connection)

    def _connection_rtt(self, connection: HttpConnection) -> float | None:
        assert isinstance(connection, _Connection)
        return self._engine.rtt(connection.quic)

    def _say_goodbye(self, connection: HttpConnection, reason: str, now: float) -> None:
        assert isinstance(connection, _Connection)
        # The Terminates must leave first: once a connection is closing, aioquic sends
        # nothing but CONNECTION_CLOSE, and the peer would see a lost call.
        self._goodbyes.extend(connection.quic.datagrams_to_send(now))
        connection.quic.close(error_code=0, reason_phrase=reason)
        self._touched.add(connection)

    def _close_connection(self, connection: HttpConnection, now: float, reason: str) -> None:
        """Close one connection (CONNECTION_CLOSE) and forget it."""
        assert isinstance(connection, _Connection)
        connection.handshake_deadline = None
        if not connection.closed:
            connection.quic.close(error_code=0, reason_phrase=reason)
            self._goodbyes.extend(connection.quic.datagrams_to_send(now))
            self._process(connection, now)
        connection.closed = True
        self._drop_connection(connection)

    # ---------------------------------------------------------------- internals
    def _register_cid(self, cid: bytes, connection: _Connection) -> None:
        self._by_cid[cid] = connection
        connection.cids.add(cid)

    def _register_cids(self, connection: _Connection) -> None:
        # A new connection has one host CID; the rest come as ConnectionIdIssued events.
        self._register_cid(connection.quic.host_cid, connection)

    def _connection_for_datagram(
        self, data: bytes, addr: Address, now: float
    ) -> _Connection | None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._quic_configuration.connection_id_length
            )
        except ValueError:
            logger.debug("undecodable datagram from %s dropped", addr)
            return None
        connection = self._by_cid.get(header.destination_cid)
        if connection is None:
            connection = self._accept(header, data, addr, now)
        return connection

    def _accept(self, header: object, data: bytes, addr: Address, now: float) -> _Connection | None:
        return None

    def _on_junk_initial(self, now: float) -> None:
        """Count an Initial that did not decrypt (servers use it to turn on Retry)."""

    def _drop_connection(self, connection: _Connection) -> None:
        self._remove_connection(connection)
        self._slots.forget_group(connection)
        self._touched.discard(connection)
        for cid in connection.cids:
            if self._by_cid.get(cid) is connection:
                del self._by_cid[cid]
        connection.cids.clear()

    def _process(self, connection: _Connection, now: float) -> None:
        quic = connection.quic
        kinds = self._kinds  # the engine's event classes, by what we do with them
        while True:
            event = quic.next_event()
            if event is None:
                break
            kind = kinds.get(type(event))
            if kind is EventKind.CID_ISSUED:
                self._register_cid(event.connection_id, connection)
            elif kind is EventKind.CID_RETIRED:
                connection.cids.discard(event.connection_id)
                if self._by_cid.get(event.connection_id) is connection:
                    del self._by_cid[event.connection_id]
            elif kind is EventKind.HANDSHAKE_DONE:
                connection.handshake_done = True
                connection.handshake_deadline = None
            elif kind is EventKind.TERMINATED:
                self._on_connection_lost(connection, event.error_code, event.reason_phrase, now)
                continue
            elif kind is EventKind.STREAM_RESET:
                self._on_stream_reset(connection, event.stream_id, now)
            elif kind is EventKind.STOP_SENDING:
                self._on_stop_sending(connection, event.stream_id, now)
            for h3_event in connection.h3.handle_event(event):
                self._on_h3_event(connection, h3_event, now)

    def _on_h3_event(self, connection: _Connection, event: Any, now: float) -> None:
        """Map the engine's HTTP/3 events to the HTTP layer's stream events."""
        kind = self._kinds.get(type(event))
        if kind is EventKind.HEADERS:
            self._on_headers(connection, event.stream_id, event.headers, event.stream_ended, now)
        elif kind is EventKind.DATA:
            self._deliver_data(connection, event.stream_id, event.data, event.stream_ended, now)
        elif kind is EventKind.MALFORMED:
            self._on_malformed(connection, event.stream_id, event.reason, now)


# ====================================================================== server


class RippServer(_QuicBinding, HttpServer):
    """A RIPP server instance over HTTP/3: answers calls on one UDP address (R1, R2, R6).

    The keyword arguments are those of :class:`~ripp_core._http.HttpServer` (instance ID,
    the required authorizer and identity verifier, deferred checks, call-ID source).
    """

    def __init__(
        self,
        quic_configuration: QuicConfiguration,
        *,
        instance_id: str,
        authorizer: Authorizer | None,
        identity_verifier: IdentityVerifier | None,
        config: RippConfig | None = None,
        authority: str | None = None,
        deferred_checks: bool = False,
        call_id_source: Callable[[], str] | None = None,
    ) -> None:
        if quic_configuration.is_client:
            raise ValueError("a RippServer needs a server QuicConfiguration")
        HttpServer.__init__(
            self,
            config or RippConfig(),
            instance_id=instance_id,
            authorizer=authorizer,
            identity_verifier=identity_verifier,
            authority=authority,
            deferred_checks=deferred_checks,
            call_id_source=call_id_source,
        )
        self._init_quic(quic_configuration)
        self._retry = QuicRetryTokenHandler()
        self._next_audit = 0.0
        self._junk_window_start = 0.0
        self._junk_in_window = 0

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        candidates = [self._quic_timer(), self._next_call_deadline(), self._server_timer()]
        if self._connections:
            candidates.append(self._next_audit)
        return self._arm(min((t for t in candidates if t is not None), default=None))

    def handle_timer(self, now: float) -> None:
        """Run the QUIC and call timers that are due, and expire deferred checks.

        How late this runs against the time :meth:`get_timer` asked for is the event
        loop's lag, the server's measure of overload (see :meth:`report_load`)."""
        self._server_timers(now)
        self._audit_buffers(now)
        self._quic_timers(now)
        self._run_call_timers(now)
        self._settle(now)

    def _on_junk_initial(self, now: float) -> None:
        # Undecryptable Initials in the current window: a flood of them makes every new
        # Initial cost a cheap Retry instead of a full connection set-up.
        self._junk_in_window = self._junk_count(now) + 1

    def _junk_count(self, now: float) -> int:
        """Undecryptable Initials seen in the current ``junk_window``."""
        if now - self._junk_window_start >= self.config.junk_window:
            self._junk_window_start, self._junk_in_window = now, 0
        return self._junk_in_window

    def _discard_stream(self, connection: HttpConnection, stream_id: int) -> None:
        assert isinstance(connection, _Connection)
        if connection.guard is not None:
            connection.guard.abandon(stream_id)

    def _audit_buffers(self, now: float) -> None:
        """Close connections holding more undecoded bytes than ``max_connection_buffer``
        (out-of-order QUIC data and HTTP/3 frames in progress: aioquic raises its flow
        control windows as data arrives, so they alone bound nothing)."""
        if now < self._next_audit:
            return
        self._next_audit = now + self.config.full_poll_interval
        for connection in self._quic_connections():
            if connection.closed:
                continue
            held = self._engine.buffered_bytes(connection.quic)
            if connection.guard is not None:
                held += connection.guard.buffered()
            if held > self.config.max_connection_buffer:
                self._limited(
                    now, "connection from %s closed: %d undecoded bytes", connection.peer[0], held
                )
                connection.quic.close(
                    error_code=H3_EXCESSIVE_LOAD, reason_phrase="too much undecoded data"
                )
                self._touched.add(connection)
                self._process(connection, now)

    def _accept(self, header: object, data: bytes, addr: Address, now: float) -> _Connection | None:
        version = getattr(header, "version", None)
        packet_type = getattr(header, "packet_type", None)
        if (
            version is not None
            and version not in self._quic_configuration.supported_versions
            # RFC 9000 5.2.2 / 6.1: only answer full-size Initials, never a VN packet.
            and version != 0
            and len(data) >= 1200
        ):
            self._stateless.append(
                (
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,  # type: ignore[attr-defined]
                        destination_cid=header.source_cid,  # type: ignore[attr-defined]
                        supported_versions=self._quic_configuration.supported_versions,
                    ),
                    addr,
                )
            )
            return None
        if version not in self._quic_configuration.supported_versions:
            return None
        if packet_type != QuicPacketType.INITIAL or len(data) < 1200:
            return None
        return self._admit_connection(header, addr, now)

    def _admit_connection(self, header: object, addr: Address, now: float) -> _Connection | None:
        """A full-size Initial for a new connection: validate the address with a Retry
        when many handshakes are open, bound connections per address and in total
        (evicting the longest-idle connection without calls first), then create it."""
        dcid: bytes = header.destination_cid  # type: ignore[attr-defined]
        scid: bytes = header.source_cid  # type: ignore[attr-defined]
        token: bytes = header.token  # type: ignore[attr-defined]
        version: int = header.version  # type: ignore[attr-defined]
        original_dcid, retry_scid = dcid, None
        handshaking = sum(1 for c in self._quic_connections() if not c.handshake_done)
        suspicious = handshaking + self._junk_count(now)
        if token:
            try:
                original_dcid = self._retry.validate_token(
                    address=addr, destination_cid=dcid, token=token, now=now
                )
            except ValueError:
                self._limited(now, "invalid retry token from %s dropped", addr[0])
                return None
            retry_scid = dcid
        elif suspicious >= self.config.retry_threshold or self._engine.retry_always:
            # Stateless address validation (RFC 9000 8.1.2): no state is kept for this
            # Initial; only a client that receives at its address can come back.
            new_scid = secrets.token_bytes(self._quic_configuration.connection_id_length)
            self._stateless.append(
                (
                    encode_quic_retry(
                        version=version,
                        source_cid=new_scid,
                        destination_cid=scid,
                        original_destination_cid=dcid,
                        retry_token=self._retry.create_token(
                            address=addr,
                            original_destination_connection_id=dcid,
                            retry_source_connection_id=new_scid,
                            now=now,
                        ),
                    ),
                    addr,
                )
            )
            return None
        if not self._connection_limits(addr[0], now):
            return None
        quic = self._engine.server(
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
            stream_limit=self.config.max_streams_per_connection,
        )
        h3 = self._engine.h3(
            quic,
            H3Guard(
                max_header_frame=self.config.max_header_bytes,
                abandoned_memory=self.config.abandoned_streams_remembered,
            ),
        )
        connection = _Connection(
            quic=quic,
            h3=h3,
            guard=cast(GuardedH3, h3),
            peer=addr,
            handshake_deadline=now + self.config.handshake_timeout,
            idle_since=now,
        )
        self._add_connection(connection)
        self._touched.add(connection)
        self._register_cids(connection)
        self._register_cid(dcid, connection)
        return connection



# ====================================================================== client


class RippClient(_QuicBinding, HttpClient):
    """A RIPP client over HTTP/3: places calls against one or more calls URIs (R1, R10,
    R21).

    ``calls_uris`` lists top-level calls URIs: the first is used to place calls, the others
    are failover targets tried in order when a call must be re-established. ``token`` is
    the OAuth bearer token, or a function from authority to token (R13). ``resolver`` maps
    ``(host, port)`` to the UDP address to use; by default the host must be an IP literal
    or ``localhost``.
    """

    def __init__(
        self,
        quic_configuration: QuicConfiguration,
        *,
        calls_uris: list[str],
        token: str | Callable[[str], str],
        config: RippConfig | None = None,
        resolver: Callable[[str, int], Address] | None = None,
    ) -> None:
        if not quic_configuration.is_client:
            raise ValueError("a RippClient needs a client QuicConfiguration")
        HttpClient.__init__(
            self, config or RippConfig(), calls_uris=calls_uris, token=token, resolver=resolver
        )
        self._init_quic(quic_configuration)

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        candidates = (self._quic_timer(), self._next_call_deadline())
        return min((t for t in candidates if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        """Run the QUIC and call timers that are due."""
        self._log_clock = now
        self._quic_timers(now)
        self._run_call_timers(now)
        self._settle(now)

    def _open_stream(self, connection: HttpConnection) -> int:
        assert isinstance(connection, _Connection)
        return connection.quic.get_next_available_stream_id()

    def _credit(self, connection: HttpConnection) -> int:
        assert isinstance(connection, _Connection)
        if not connection.handshake_done:
            opened = connection.quic.get_next_available_stream_id() // _STREAM_ID_STEP
            return self.config.assumed_stream_credit - opened
        return self._engine.stream_credit(connection.quic)

    def _has_room(self, connection: HttpConnection) -> bool:
        """May one more call share ``connection``? Besides ``max_calls_per_connection``,
        the credit must cover the streams the calls on it are still owed (see
        :meth:`_owed`) plus the new call's own signaling and minimum media streams."""
        if not HttpClient._has_room(self, connection):
            return False
        needed = 1 + self.config.min_media_streams
        return self._credit(connection) - self._owed(connection, None) >= needed

    def _media_credit(self, connection: HttpConnection, call: Call) -> int:
        """A call below its minimum of media streams may use all the credit; beyond it,
        only what the other calls on the connection are not owed, so that a peer that
        allows few streams (qh3 allows 100) does not see early calls widen their
        striping and leave later ones without media."""
        credit = self._credit(connection)
        if self._opened(connection).get(call.handle, (0, 0))[1] < self.config.min_media_streams:
            return credit
        return credit - self._owed(connection, call.handle)

    def _opened(self, connection: HttpConnection) -> dict[str, tuple[int, int]]:
        """Per call on ``connection``: signaling and media requests open."""
        counts = {handle: [0, 0] for handle in connection.calls}
        for stream in connection.streams.values():
            if stream.call is not None and stream.call.handle in counts:
                if stream.kind is StreamKind.SIGNALING:
                    counts[stream.call.handle][0] += 1
                elif stream.kind is StreamKind.MEDIA:
                    counts[stream.call.handle][1] += 1
        return {handle: (s, m) for handle, (s, m) in counts.items()}

    def _owed(self, connection: HttpConnection, besides: str | None) -> int:
        """Streams the calls on ``connection`` (but ``besides``) have yet to open to reach
        one signaling request and ``min_media_streams`` media requests: calls are
        admitted before they open them."""
        return sum(
            max(0, 1 - signaling) + max(0, self.config.min_media_streams - media)
            for handle, (signaling, media) in self._opened(connection).items()
            if handle != besides
        )

    def _connect(self, authority: str, address: Address, now: float) -> HttpConnection | None:
        quic = self._engine.client(
            _host_port(authority)[0], stream_limit=self.config.max_streams_per_connection
        )
        quic.connect(address, now)
        connection = _Connection(
            quic=quic, h3=self._engine.h3(quic, None), peer=address, authority=authority
        )
        self._register_cids(connection)
        return connection


__all__ = [
    "MalformedRequest",
    "QuicConnectionError",
    "RippClient",
    "RippServer",
    "_random_call_id",
]
