"""The HTTP/2 binding: RIPP over the sans-IO ``h2`` library, on any reliable byte stream.

This is the leg that sits behind real L7 load balancers (HAProxy, nginx, Caddy speak
HTTP/2 to backends, none speaks HTTP/3; protocol 20). Each endpoint holds many HTTP/2
connections, each named by a key, and speaks a byte-stream counterpart of aioquic's
contract::

    endpoint.connection_made(peer, now)          # server: False -> close the socket
    endpoint.receive_data(data, peer, now)
    for data, peer in endpoint.data_to_send(now): ...   # b"": close after what came before
    endpoint.connection_lost(peer, now)
    endpoint.get_timer() / endpoint.handle_timer(now)
    while (event := endpoint.next_event()) is not None: ...

The bytes are plain HTTP/2 frames: TLS (ALPN ``h2``) belongs to the driver, and without it
the same bytes are h2c with prior knowledge, the usual balancer-to-backend leg.

A key is the peer's ``(host, port)`` on a server (the driver's accepted socket) and
``(host, port, n)`` on a client: its n-th connection to that server address, so that a
client spreads calls over several TCP connections as it does over QUIC ones. The calls,
media and migration machines, and every HTTP rule, are the same objects as over HTTP/3
(:mod:`._http`, :mod:`._endpoint`); this module only maps stream operations and events.

HTTP/2 has no STOP_SENDING: after a complete response, RST_STREAM(NO_ERROR) asks the
client to stop sending its body (RFC 9113 8.1); otherwise we read and discard.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ._auth import Authorizer, IdentityVerifier
from ._config import RippConfig
from ._errors import (
    H3_EXCESSIVE_LOAD,
    H3_GENERAL_PROTOCOL_ERROR,
    H3_INTERNAL_ERROR,
    H3_MESSAGE_ERROR,
    H3_NO_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
)
from ._headers import Headers
from ._http import Address, HttpClient, HttpConnection, HttpEndpoint, HttpServer

#: The one application protocol RIPP over HTTP/2 negotiates (TLS ALPN, protocol 20.2).
H2_ALPN = "h2"

logger = logging.getLogger("ripp.h2")

#: A connection's name in the byte-stream contract (see the module docstring).
StreamKey = tuple[str, int] | tuple[str, int, int]

#: RIPP's stream error codes (HTTP/3 values, the neutral vocabulary) as HTTP/2 codes
#: (protocol 20.3). Anything else is an INTERNAL_ERROR.
RESET_CODES: dict[int, h2.errors.ErrorCodes] = {
    H3_NO_ERROR: h2.errors.ErrorCodes.NO_ERROR,
    H3_GENERAL_PROTOCOL_ERROR: h2.errors.ErrorCodes.PROTOCOL_ERROR,
    H3_INTERNAL_ERROR: h2.errors.ErrorCodes.INTERNAL_ERROR,
    H3_REQUEST_REJECTED: h2.errors.ErrorCodes.REFUSED_STREAM,
    H3_REQUEST_CANCELLED: h2.errors.ErrorCodes.CANCEL,
    H3_MESSAGE_ERROR: h2.errors.ErrorCodes.PROTOCOL_ERROR,
    H3_EXCESSIVE_LOAD: h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
}

#: h2's initial (and smallest) stream and connection window (RFC 9113 6.9.2).
_DEFAULT_WINDOW = 65535

#: Pseudo-header fields a request must carry exactly once (RFC 9113 8.3.1), and those it
#: may carry at most once (:authority: an intermediary such as nginx's grpc_pass sends
#: ``host`` instead, which RFC 9113 8.3.1 allows).
_REQUEST_PSEUDO = (b":method", b":scheme", b":path")
_OPTIONAL_PSEUDO = (b":authority",)


def h2_reset_code(code: int) -> h2.errors.ErrorCodes:
    """The HTTP/2 error code for one of RIPP's stream error codes."""
    return RESET_CODES.get(code, h2.errors.ErrorCodes.INTERNAL_ERROR)


def malformed_reason(headers: Headers) -> str | None:
    """Why a request's header list is malformed (RFC 9113 8.2, 8.3), or None.

    h2's own validation would close the whole connection; RIPP makes a malformed request
    a stream error (protocol 16.1), so ``h2`` is told not to validate and this does."""
    seen: dict[bytes, int] = {}
    regular = False
    for name, value in headers:
        if not name or name != name.lower():
            return "a field name is empty or not lowercase"
        if any(c in value for c in b"\r\n\x00") or any(c in name[1:] for c in b"\r\n\x00: "):
            return "a field carries a forbidden character"
        if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
            return "a field value has leading or trailing whitespace"
        if name.startswith(b":"):
            if regular:
                return "a pseudo-header follows a regular field"
            if name not in _REQUEST_PSEUDO and name not in _OPTIONAL_PSEUDO:
                return f"unknown pseudo-header {name[:32]!r}"
            seen[name] = seen.get(name, 0) + 1
        else:
            regular = True
    for name in _REQUEST_PSEUDO:
        if seen.get(name) != 1:
            return f"{name.decode()} missing or repeated"
    if seen.get(b":authority", 0) > 1:
        return ":authority repeated"
    return None


@attrs.define(eq=False, kw_only=True)
class _Connection(HttpConnection):
    h2: h2.connection.H2Connection
    key: StreamKey
    settings_received: bool = False
    closing: bool = False  # a GOAWAY is queued: the driver closes after it
    close_sent: bool = False  # the driver was told to close (an empty chunk)
    # Our body bytes held per stream while the peer's window is closed, and whether our
    # END_STREAM waits behind them.
    pending: dict[int, bytearray] = attrs.Factory(dict)
    pending_end: set[int] = attrs.Factory(set)
    discard: set[int] = attrs.Factory(set)  # streams whose further data we do not read


def _h2_configuration(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        # Malformed requests are stream errors in RIPP, not connection errors: see
        # malformed_reason(), which the server runs instead.
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=True,
    )


class _H2Binding(HttpEndpoint):
    """The h2 side shared by client and server: connections by peer, bytes in and out,
    flow control, and the HTTP layer's primitives as HTTP/2 stream operations."""

    def _init_h2(self) -> None:
        self._by_key: dict[StreamKey, _Connection] = {}
        self._touched: set[HttpConnection] = set()
        self._goodbyes: list[tuple[bytes, StreamKey]] = []

    def _new_h2(self, key: StreamKey, client_side: bool, now: float) -> _Connection:
        conn = h2.connection.H2Connection(config=_h2_configuration(client_side))
        config = self.config
        conn.local_settings = h2.settings.Settings(
            client=client_side,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.max_streams_per_connection,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: config.h2_stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_bytes,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        conn.initiate_connection()
        if config.h2_connection_window > _DEFAULT_WINDOW:
            conn.increment_flow_control_window(config.h2_connection_window - _DEFAULT_WINDOW)
        connection = _Connection(h2=conn, key=key, peer=(key[0], key[1]), idle_since=now)
        self._by_key[key] = connection
        self._add_connection(connection)
        self._touched.add(connection)
        return connection

    # ---------------------------------------------------------------- byte-stream contract
    def receive_data(self, data: bytes, peer: StreamKey, now: float) -> None:
        """Feed bytes that arrived on the connection ``peer``."""
        self._input_arrived(now)
        self._log_clock = now
        connection = self._by_key.get(peer)
        if connection is None:
            connection = self._accept(peer, now)
            if connection is None:
                return
        connection.heard_at = now
        if connection.closed:
            return
        try:
            events = connection.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY; the connection and every call on it are lost.
            self._limited(now, "HTTP/2 connection with %s failed: %s", peer[0], exc)
            self._touched.add(connection)
            connection.closing = True
            self._on_connection_lost(connection, 1, "protocol error", now)
            self._settle(now)
            return
        self._touched.add(connection)
        for event in events:
            self._on_h2_event(connection, event, now)
        self._settle(now)

    def data_to_send(self, now: float) -> list[tuple[bytes, StreamKey]]:
        """Every chunk of bytes ready to go, each with its connection's peer. An empty
        chunk means: close that connection once what came before it is written."""
        out, self._goodbyes = self._goodbyes, []
        touched, self._touched = self._touched, set()
        for connection in self._connections:
            if connection not in touched or not isinstance(connection, _Connection):
                continue
            data = connection.h2.data_to_send()
            if data:
                out.append((data, connection.key))
            if connection.closing and not connection.close_sent:
                out.append((b"", connection.key))
                connection.close_sent = connection.closed = True
        for connection in [c for c in self._connections if c.closed]:
            self._drop(connection)
        return out

    def connection_lost(self, peer: StreamKey, now: float) -> None:
        """The byte stream ``peer`` closed (or failed): its streams are gone."""
        connection = self._by_key.get(peer)
        if connection is None:
            return
        if not connection.closed:
            self._on_connection_lost(connection, 0, "connection lost", now)
        self._drop(connection)
        self._settle(now)

    def _h2_timer(self) -> float | None:
        return min(
            (t for c in self._connections if (t := self._idle_deadline(c)) is not None),
            default=None,
        )

    def _h2_timers(self, now: float) -> None:
        for connection in list(self._connections):
            deadline = self._idle_deadline(connection)
            if deadline is not None and deadline <= now and not connection.closed:
                logger.info("connection from %s carried no call for %.0f s: closed",
                            connection.peer, self.config.idle_connection_timeout)
                self._close_connection(connection, now, "idle")

    def _accept(self, peer: StreamKey, now: float) -> _Connection | None:
        return None

    def _drop(self, connection: HttpConnection) -> None:
        assert isinstance(connection, _Connection)
        self._remove_connection(connection)
        if self._by_key.get(connection.key) is connection:
            del self._by_key[connection.key]
        self._touched.discard(connection)

    # ---------------------------------------------------------------- HTTP primitives
    def _raw_headers(
        self, connection: HttpConnection, stream_id: int, fields: Headers, end: bool
    ) -> None:
        assert isinstance(connection, _Connection)
        connection.h2.send_headers(stream_id, fields, end_stream=end)

    def _raw_data(
        self, connection: HttpConnection, stream_id: int, data: bytes, end: bool
    ) -> None:
        assert isinstance(connection, _Connection)
        pending = connection.pending.setdefault(stream_id, bytearray())
        pending += data
        if end:
            connection.pending_end.add(stream_id)
        if len(pending) > self.config.h2_max_send_buffer:
            raise BufferError(f"{len(pending)} bytes wait for the peer's window")
        self._flush(connection, stream_id)

    def _flush(self, connection: _Connection, stream_id: int) -> None:
        """Send what the peer's windows allow of a stream's pending bytes, in frames no
        larger than it accepts; END_STREAM goes once nothing is left."""
        conn = connection.h2
        pending = connection.pending.get(stream_id)
        while pending:
            window = conn.local_flow_control_window(stream_id)
            size = min(len(pending), window, conn.max_outbound_frame_size)
            if size <= 0:
                return
            conn.send_data(stream_id, bytes(pending[:size]))
            del pending[:size]
        connection.pending.pop(stream_id, None)
        if stream_id in connection.pending_end:
            connection.pending_end.discard(stream_id)
            conn.end_stream(stream_id)

    def _stop_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        assert isinstance(connection, _Connection)
        stream = connection.streams.get(stream_id)
        if stream is None or stream.we_ended:
            # Our response is complete: RST_STREAM(NO_ERROR) tells the peer to stop
            # sending its body (RFC 9113 8.1), HTTP/2's STOP_SENDING.
            self._abort_stream(connection, stream_id, H3_NO_ERROR)
        else:
            connection.discard.add(stream_id)

    def _abort_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        assert isinstance(connection, _Connection)
        connection.pending.pop(stream_id, None)
        connection.pending_end.discard(stream_id)
        connection.discard.discard(stream_id)
        try:
            connection.h2.reset_stream(stream_id, h2_reset_code(code))
        except h2.exceptions.H2Error:  # already closed
            logger.debug("reset of closed stream %d ignored", stream_id)

    def _touch(self, connection: HttpConnection) -> None:
        self._touched.add(connection)

    def _say_goodbye(self, connection: HttpConnection, reason: str, now: float) -> None:
        assert isinstance(connection, _Connection)
        # GOAWAY goes after the Terminates already queued: h2 writes in order.
        connection.h2.close_connection()
        connection.closing = True
        self._touched.add(connection)

    def _close_connection(self, connection: HttpConnection, now: float, reason: str) -> None:
        assert isinstance(connection, _Connection)
        if not connection.closed:
            connection.h2.close_connection()
            data = connection.h2.data_to_send()
            if data:
                self._goodbyes.append((data, connection.key))
            self._goodbyes.append((b"", connection.key))
            connection.close_sent = True
            self._on_connection_lost(connection, 0, reason, now)
        connection.closed = True
        self._drop(connection)

    # ---------------------------------------------------------------- h2 events
    def _on_h2_event(self, connection: _Connection, event: h2.events.Event, now: float) -> None:
        if isinstance(event, h2.events.RequestReceived | h2.events.ResponseReceived):
            assert event.stream_id is not None and event.headers is not None
            ended = event.stream_ended is not None
            if isinstance(event, h2.events.RequestReceived):
                reason = malformed_reason(event.headers)
                if reason is not None:
                    self._on_malformed(connection, event.stream_id, reason, now)
                    return
            self._on_headers(connection, event.stream_id, event.headers, ended, now)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            # Acknowledge at once: what we received is decoded synchronously below (or
            # held, bounded, for a parked request), so flow control never stalls a call.
            if event.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    connection.h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            ended = event.stream_ended is not None
            if event.stream_id in connection.discard:
                # We stopped reading this body: its bytes go, its end still counts.
                if ended:
                    connection.discard.discard(event.stream_id)
                    self._deliver_data(connection, event.stream_id, b"", True, now)
                return
            self._deliver_data(connection, event.stream_id, event.data, ended, now)
        elif isinstance(event, h2.events.TrailersReceived):
            assert event.stream_id is not None
            self._deliver_data(connection, event.stream_id, b"", True, now)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            connection.pending.pop(event.stream_id, None)
            connection.pending_end.discard(event.stream_id)
            stream = connection.streams.get(event.stream_id)
            if (
                event.error_code == h2.errors.ErrorCodes.NO_ERROR
                and stream is not None
                and stream.peer_ended
            ):
                # Its response is complete and it asks us to stop sending: STOP_SENDING.
                self._on_stop_sending(connection, event.stream_id, now)
            else:
                self._on_stream_reset(connection, event.stream_id, now)
        elif isinstance(event, h2.events.WindowUpdated):
            targets = [event.stream_id] if event.stream_id else list(connection.pending)
            for stream_id in targets:
                if stream_id is not None and stream_id in connection.pending:
                    self._flush_guarded(connection, stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            connection.settings_received = True
            for stream_id in list(connection.pending):
                self._flush_guarded(connection, stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            connection.closing = True
            self._on_connection_lost(
                connection, int(event.error_code or 0), "GOAWAY received", now
            )

    def _flush_guarded(self, connection: _Connection, stream_id: int) -> None:
        try:
            self._flush(connection, stream_id)
        except h2.exceptions.H2Error as exc:
            logger.info("write on stream %d of %s dropped: %s", stream_id, connection.peer, exc)
            connection.pending.pop(stream_id, None)


# ====================================================================== server


class RippH2Server(_H2Binding, HttpServer):
    """A RIPP server instance over HTTP/2 (TLS with ALPN h2, or h2c behind a balancer).

    The keyword arguments are those of :class:`~ripp_core.RippServer` without the QUIC
    configuration: the same HTTP rules, checks and call machines serve both bindings, and
    one process may run both (each with its own endpoint object and call registry).
    """

    def __init__(
        self,
        *,
        instance_id: str,
        authorizer: Authorizer | None,
        identity_verifier: IdentityVerifier | None,
        config: RippConfig | None = None,
        authority: str | None = None,
        deferred_checks: bool = False,
        call_id_source: Callable[[], str] | None = None,
    ) -> None:
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
        self._init_h2()

    def connection_made(self, peer: StreamKey, now: float) -> bool:
        """A client connected from ``peer``; False if it must be closed at once
        (per-address and total connection limits, protocol 12)."""
        return self._accept(peer, now) is not None

    def _accept(self, peer: StreamKey, now: float) -> _Connection | None:
        existing = self._by_key.get(peer)
        if existing is not None:
            return existing
        if not self._connection_limits(peer[0], now):
            return None
        return self._new_h2(peer, client_side=False, now=now)

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        candidates = (self._h2_timer(), self._next_call_deadline(), self._server_timer())
        return self._arm(min((t for t in candidates if t is not None), default=None))

    def handle_timer(self, now: float) -> None:
        """Run the call timers that are due, close idle connections, expire checks."""
        self._server_timers(now)
        self._h2_timers(now)
        self._run_call_timers(now)
        self._settle(now)

    def _discard_stream(self, connection: HttpConnection, stream_id: int) -> None:
        assert isinstance(connection, _Connection)
        connection.discard.add(stream_id)


# ====================================================================== client


class RippH2Client(_H2Binding, HttpClient):
    """A RIPP client over HTTP/2: the same calls, media and failover as
    :class:`~ripp_core.RippClient`, over a pool of HTTP/2 connections (at most
    ``max_calls_per_connection`` calls each, as over QUIC).

    ``resolver`` maps ``(host, port)`` to the address the driver connects to (TCP).
    """

    def __init__(
        self,
        *,
        calls_uris: list[str],
        token: str | Callable[[str], str],
        config: RippConfig | None = None,
        resolver: Callable[[str, int], Address] | None = None,
    ) -> None:
        HttpClient.__init__(
            self, config or RippConfig(), calls_uris=calls_uris, token=token, resolver=resolver
        )
        self._init_h2()

    def authority_of(self, key: StreamKey) -> str | None:
        """The host[:port] a connection was opened for (the driver's TLS server name)."""
        connection = self._by_key.get(key)
        return connection.authority if connection is not None else None

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        return self._next_call_deadline()

    def handle_timer(self, now: float) -> None:
        """Run the call timers that are due."""
        self._log_clock = now
        self._run_call_timers(now)
        self._settle(now)

    def _open_stream(self, connection: HttpConnection) -> int:
        assert isinstance(connection, _Connection)
        return connection.h2.get_next_available_stream_id()

    def _credit(self, connection: HttpConnection) -> int:
        assert isinstance(connection, _Connection)
        conn = connection.h2
        # Until the server's SETTINGS arrive (its first flight), assume it allows what we
        # would: streams beyond its real limit are refused (REFUSED_STREAM), which a call
        # survives (creation fails with 503, a media request is simply not counted).
        limit = (
            conn.remote_settings.max_concurrent_streams
            if connection.settings_received
            else self.config.max_streams_per_connection
        )
        return limit - conn.open_outbound_streams

    def _connect(self, authority: str, address: Address, now: float) -> HttpConnection | None:
        n = 0
        while (address[0], address[1], n) in self._by_key:
            n += 1
        connection = self._new_h2((address[0], address[1], n), client_side=True, now=now)
        self._remove_connection(connection)  # the HTTP layer adds it
        connection.authority = authority
        return connection


__all__ = [
    "RESET_CODES",
    "RippH2Client",
    "RippH2Server",
    "StreamKey",
    "h2_reset_code",
    "malformed_reason",
]
