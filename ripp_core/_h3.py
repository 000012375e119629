"""The binding of RIPP to aioquic's sans-IO QUIC and HTTP/3 connections.

This is the only module that imports aioquic. It offers two endpoints with aioquic's own
contract (``receive_datagram`` / ``datagrams_to_send`` / ``get_timer`` / ``handle_timer`` /
``next_event``), each holding many QUIC connections demultiplexed by connection ID:

* :class:`RippServer` answers calls. It creates a QUIC connection on a client's first
  Initial packet, routes requests to calls by URI, and answers bad requests with the
  documented status codes.
* :class:`RippClient` places calls against a list of calls URIs (the first is primary, the
  rest are failover targets for re-establishment) over a pool of connections.

Calls live at the endpoint, not on a connection, so a call outlives any request, stream or
connection (R21). All protocol decisions are made by :class:`~ripp_core._call.Call`.
"""

from __future__ import annotations

import copy
import enum
import heapq
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, H3Stream, MessageError
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionError
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from ._auth import UNVERIFIED as UNVERIFIED_CHECK
from ._auth import Authorizer, AuthRequest, IdentityCheck, IdentityVerifier
from ._call import Call, CallHandoff, CallRequest
from ._codecs import Codec
from ._config import RippConfig
from ._errors import (
    H3_EXCESSIVE_LOAD,
    H3_MESSAGE_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
    BadRequest,
    ChecksTimedOut,
    LocalProtocolError,
    MethodNotAllowed,
    NoSuchCall,
    Overloaded,
    RippError,
    TooManyCalls,
    UnknownCall,
    UnsupportedMediaType,
)
from ._events import (
    CallCreated,
    CallIncoming,
    ChecksRequested,
    ConnectionClosed,
    Event,
    MigrationPhase,
    ProtocolViolation,
)
from ._frames import MediaFrame
from ._headers import (
    AUTHORIZATION,
    CONTENT_TYPE,
    FROM,
    HOP_BY_HOP,
    IDENTITY,
    LOCATION,
    MEDIA_CONTENT_TYPE,
    PROTOCOL_VERSION,
    RETRY_AFTER,
    RIPP_REASON,
    RIPP_REESTABLISH,
    RIPP_VERSION,
    SIGNALING_CONTENT_TYPE,
    TO,
    WWW_AUTHENTICATE,
    Headers,
    NameAddr,
    ReestablishMarker,
    bearer_token,
    check_identity_syntax,
    header_dict,
    parse_name_addr,
    parse_reestablish,
)
from ._logs import LogLimiter
from ._state import CallState, Role
from ._stats import CallStats
from ._store import StoredCall, resumed_sender, resumed_window

logger = logging.getLogger("ripp.h3")

Address = tuple[str, int]

#: Stream IDs of one kind (client-initiated bidirectional) are 4 apart (RFC 9000 2.1).
_STREAM_ID_STEP = 4


@attrs.frozen
class MalformedRequest(H3Event):
    """A request stream carried something aioquic refused (a malformed header field, a
    frame larger than allowed): a stream error for that request only (RFC 9114 4.1.2)."""

    stream_id: int
    reason: str


class _GuardedH3Connection(H3Connection):
    """aioquic's H3Connection with the bounds RIPP promises (protocol 19.4).

    * A malformed request (aioquic's ``MessageError``: a header value ending in a space, a
      missing pseudo-header...) becomes a :class:`MalformedRequest` event for its stream,
      instead of closing the whole connection and every call on it.
    * A HEADERS frame announcing more than ``max_header_frame`` bytes is refused the same
      way as soon as its length is known, instead of being buffered until it completes.
    * The rest of an abandoned stream is discarded as it arrives.

    It overrides two of aioquic's internal methods (aioquic is pinned for that reason).
    """

    def __init__(self, quic: QuicConnection, *, max_header_frame: int) -> None:
        super().__init__(quic)
        self._max_header_frame = max_header_frame
        # Abandoned request streams, oldest first; bounded so a peer cannot grow it.
        self._abandoned: dict[int, None] = {}

    def _receive_stream_data(self, event: quic_events.StreamDataReceived) -> list[H3Event]:
        if event.stream_id in self._abandoned:
            return []
        return super()._receive_stream_data(event)

    def _receive_request_or_push_data(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[H3Event]:
        try:
            events = super()._receive_request_or_push_data(stream, data, stream_ended)
        except MessageError as exc:
            if self._is_client:
                raise
            return [self._abandon(stream, exc.reason_phrase)]
        if (
            stream.frame_type is not None
            and stream.frame_type != FrameType.DATA
            and stream.frame_size is not None
            and stream.frame_size > self._max_header_frame
        ):
            events.append(
                self._abandon(stream, f"a {stream.frame_size}-byte frame is too large")
            )
        return events

    def _abandon(self, stream: H3Stream, reason: str) -> MalformedRequest:
        stream.buffer = b""
        stream.frame_type = stream.frame_size = None
        self._abandoned[stream.stream_id] = None
        while len(self._abandoned) > _ABANDONED_MEMORY:
            del self._abandoned[next(iter(self._abandoned))]
        return MalformedRequest(stream.stream_id, reason)

    def abandon(self, stream_id: int) -> None:
        """Discard whatever more arrives on a request stream we have answered and will not
        read, and drop its HTTP/3 state."""
        self._abandoned[stream_id] = None
        while len(self._abandoned) > _ABANDONED_MEMORY:
            del self._abandoned[next(iter(self._abandoned))]
        self._stream.pop(stream_id, None)

    def buffered(self) -> int:
        """Bytes of HTTP/3 frames received and not yet complete, over all streams."""
        return sum(len(stream.buffer) for stream in self._stream.values())


#: Abandoned stream IDs remembered per connection (their late data is discarded).
_ABANDONED_MEMORY = 256


class _Kind(enum.Enum):
    CREATE = "create"
    SIGNALING = "signaling"
    MEDIA = "media"
    REFUSED = "refused"
    PARKED = "parked"  # server: awaiting deferred authorization


@attrs.define(eq=False)
class _Stream:
    kind: _Kind
    call: Call | None = None
    channel: int | None = None
    we_ended: bool = False
    peer_ended: bool = False
    ticket: int | None = None
    buffered: list[tuple[bytes, bool]] = attrs.Factory(list)
    buffered_bytes: int = 0


@attrs.define(eq=False)
class _Connection:
    quic: QuicConnection
    h3: H3Connection
    peer: Address
    authority: str = ""
    streams: dict[int, _Stream] = attrs.Factory(dict)
    calls: set[str] = attrs.Factory(set)
    handshake_done: bool = False
    closed: bool = False
    handshake_deadline: float | None = None
    idle_since: float | None = None  # carrying no call since then (None: has calls)
    cids: set[bytes] = attrs.Factory(set)
    heard_at: float = 0.0  # last datagram from the peer (or when we opened it)


def _raise_stream_limit(quic: QuicConnection, limit: int) -> None:
    # aioquic fixes the peer's bidirectional stream allowance at 128 and offers no
    # setting; media striping needs more, so we raise the Limit before the handshake
    # advertises it (aioquic is pinned to versions where this attribute exists).
    quic._local_max_streams_bidi.value = max(quic._local_max_streams_bidi.value, limit)


class _Endpoint:
    """Machinery shared by client and server: connections, channels, calls, timers."""

    _role: Role

    def __init__(self, config: RippConfig, quic_configuration: QuicConfiguration) -> None:
        self.config = config
        self._quic_configuration = quic_configuration
        if not quic_configuration.alpn_protocols:
            quic_configuration.alpn_protocols = list(H3_ALPN)
        self._touched: set[_Connection] = set()  # may have something to send
        self._next_full_poll = 0.0
        self._connections: list[_Connection] = []
        self._by_cid: dict[bytes, _Connection] = {}
        self._channels: dict[int, tuple[_Connection, int]] = {}
        self._next_channel = 1
        self._calls: dict[str, Call] = {}
        self._events: deque[Event] = deque()
        self._heap: list[tuple[float, int, str]] = []
        self._deadlines: dict[str, float] = {}
        self._heap_seq = 0
        # Insertion-ordered (a dict, not a set): string hashes differ between processes,
        # and the order calls are re-armed in must not, or runs stop being reproducible.
        self._dirty: dict[str, None] = {}
        self._goodbyes: list[tuple[bytes, Address]] = []
        self._per_host: dict[str, int] = {}  # open connections by peer IP address
        self._log_clock = 0.0  # the latest ``now`` seen: the log limiter's clock
        self._log = LogLimiter(logger)

    # ---------------------------------------------------------------- aioquic contract
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP datagram that arrived from ``addr``."""
        self._log_clock = now
        connection = self._connection_for_datagram(data, addr, now)
        if connection is None:
            return
        fresh = not connection.handshake_done and connection.quic._state.name == "FIRSTFLIGHT"
        connection.quic.receive_datagram(data, addr, now)
        connection.heard_at = now
        self._touched.add(connection)
        if (
            fresh
            and not connection.quic._is_client
            and connection.quic._state.name == "FIRSTFLIGHT"
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
        if now >= self._next_full_poll:
            self._next_full_poll = now + self.config.full_poll_interval
            candidates = list(self._connections)
        else:
            candidates = [c for c in self._connections if c in self._touched]
        self._touched.clear()
        for connection in candidates:
            datagrams.extend(connection.quic.datagrams_to_send(now))
            if connection.closed:
                self._drop_connection(connection)
        return datagrams

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        timer: float | None = None
        for connection in self._connections:
            idle = self._idle_deadline(connection)
            for at in (connection.quic.get_timer(), connection.handshake_deadline, idle):
                if at is not None and (timer is None or at < timer):
                    timer = at
        while self._heap:
            at, _, handle = self._heap[0]
            if self._deadlines.get(handle) != at:
                heapq.heappop(self._heap)  # stale entry
                continue
            if timer is None or at < timer:
                timer = at
            break
        return timer

    def handle_timer(self, now: float) -> None:
        """Run the QUIC and call timers that are due."""
        self._log_clock = now
        for connection in list(self._connections):
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
            at = connection.quic.get_timer()
            if at is not None and at <= now:
                connection.quic.handle_timer(now)
                self._touched.add(connection)
                self._process(connection, now)
        while self._heap and self._heap[0][0] <= now:
            at, _, handle = heapq.heappop(self._heap)
            if self._deadlines.get(handle) != at:
                continue
            del self._deadlines[handle]
            call = self._calls.get(handle)
            if call is not None:
                call.handle_timer(now)
                self._dirty[handle] = None
        self._settle(now)

    def close(self, now: float, code: int = 200, reason: str = "Endpoint closing") -> None:
        """Orderly shutdown: terminate every live call, then close every QUIC connection.

        Collect :meth:`datagrams_to_send` afterwards to put the goodbyes on the wire.
        """
        for handle, call in list(self._calls.items()):
            if call.state is not CallState.TERMINATED and not call.exported:
                try:
                    call.terminate(code, reason, now)
                except RippError as exc:  # a call that cannot say goodbye is just dropped
                    logger.debug("[%s] not terminated on close: %s", handle, exc.message)
            self._dirty[handle] = None
        for connection in self._connections:
            if not connection.closed:
                # The Terminates must leave first: once a connection is closing, aioquic
                # sends nothing but CONNECTION_CLOSE, and the peer would see a lost call.
                self._goodbyes.extend(connection.quic.datagrams_to_send(now))
                connection.quic.close(error_code=0, reason_phrase=reason)
                self._touched.add(connection)
        self._settle(now)

    def next_event(self) -> Event | None:
        """The next event for the user, or None."""
        return self._events.popleft() if self._events else None

    # ---------------------------------------------------------------- calls API
    @property
    def calls(self) -> dict[str, Call]:
        """The live calls of this endpoint, by handle (read-only use)."""
        return self._calls

    def call(self, handle: str) -> Call:
        """The call with ``handle``; raises :class:`NoSuchCall`."""
        try:
            return self._calls[handle]
        except KeyError:
            raise NoSuchCall(f"no call {handle!r}") from None

    def send_media(
        self,
        handle: str,
        codec: Codec,
        duration: float,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
    ) -> MediaFrame:
        """Queue a media frame on a call (R5); returns the frame as it will be sent."""
        frame = self._command(
            handle, lambda c: c.send_media(codec, duration, payload, now, marker=marker), now
        )
        assert isinstance(frame, MediaFrame)
        return frame

    def play(
        self,
        handle: str,
        codec: Codec,
        duration: float,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
    ) -> None:
        """Queue audio at any speed; it leaves at real-time pace (R23, paced sender)."""
        self._command(handle, lambda c: c.play(codec, duration, payload, now, marker=marker), now)

    def send_dtmf(
        self, handle: str, digits: str, now: float, *, duration: float | None = None
    ) -> None:
        """Send DTMF digits as telephone-event frames, in line with paced audio (R19)."""
        self._command(handle, lambda c: c.send_dtmf(digits, now, duration=duration), now)

    def terminate(self, handle: str, now: float, code: int = 200, reason: str = "Normal") -> None:
        """End a call with a SIP-style status (hang up: 200; cancel: 487; reject: 486...)."""
        self._command(handle, lambda c: c.terminate(code, reason, now), now)

    def move(self, handle: str, now: float, uri: str | None = None) -> None:
        """Send Move (R9): the server names the new URI, the client sends none."""
        self._command(handle, lambda c: c.move(uri, now), now)

    def mark(self, handle: str, name: str, now: float) -> None:
        """Fire :class:`MarkReached` once all media sent so far is acknowledged (R23)."""
        self._command(handle, lambda c: c.mark(name, now), now)

    def clear(self, handle: str, now: float) -> int:
        """Drop media queued on a call that has not left yet (barge-in, R23)."""
        result = self._command(handle, lambda c: c.clear(now), now)
        assert isinstance(result, int)
        return result

    def stats(self, handle: str, now: float) -> CallStats:
        """Media statistics of a call (R7)."""
        return self.call(handle).stats(now)

    def _command(self, handle: str, action: Callable[[Call], object], now: float) -> object:
        call = self.call(handle)
        result = action(call)
        self._dirty[handle] = None
        self._settle(now)
        return result

    # ---------------------------------------------------------------- CallTransport
    def send(self, channel: int, data: bytes) -> None:
        """CallTransport: append to our body on ``channel``."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        connection, stream_id = entry
        stream = connection.streams.get(stream_id)
        if stream is None or stream.we_ended or connection.closed:
            return
        self._guarded(
            connection, stream_id, lambda: connection.h3.send_data(stream_id, data, False)
        )

    def _guarded(self, connection: _Connection, stream_id: int, write: Callable[[], None]) -> bool:
        """Run an HTTP/3 write; a stream the peer already aborted must not crash us."""
        self._touched.add(connection)
        try:
            write()
        except Exception as exc:  # aioquic raises RuntimeError/FrameUnexpected on dead streams
            logger.info("write on stream %d of %s dropped: %s", stream_id, connection.peer, exc)
            stream = connection.streams.get(stream_id)
            if stream is not None:
                stream.we_ended = True
            return False
        return True

    def end(self, channel: int) -> None:
        """CallTransport: END_STREAM on our body."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        connection, stream_id = entry
        stream = connection.streams.get(stream_id)
        if stream is None or stream.we_ended:
            return
        stream.we_ended = True
        if not connection.closed:
            self._guarded(
                connection, stream_id, lambda: connection.h3.send_data(stream_id, b"", True)
            )
        self._maybe_release(connection, stream_id)

    def stop(self, channel: int, error_code: int) -> None:
        """CallTransport: stop reading a channel (STOP_SENDING); we may still send on it."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        connection, stream_id = entry
        if not connection.closed:
            self._touched.add(connection)
            try:
                connection.quic.stop_stream(stream_id, error_code)
            except Exception:  # already finished in that direction
                logger.debug("stop of finished stream %d ignored", stream_id)

    def reset(self, channel: int, error_code: int) -> None:
        """CallTransport: abort a channel in both directions."""
        entry = self._channels.pop(channel, None)
        if entry is None:
            return
        connection, stream_id = entry
        connection.streams.pop(stream_id, None)
        self._reset_stream(connection, stream_id, error_code)

    def _reset_stream(self, connection: _Connection, stream_id: int, error_code: int) -> None:
        if connection.closed:
            return
        try:
            self._touched.add(connection)
            connection.quic.reset_stream(stream_id, error_code)
        except Exception:  # the stream may already be finished in that direction
            logger.debug("reset of finished stream %d ignored", stream_id)
        try:
            self._touched.add(connection)
            connection.quic.stop_stream(stream_id, error_code)
        except Exception:
            logger.debug("stop of finished stream %d ignored", stream_id)

    def path_rtt(self, call: Call) -> float | None:
        """CallTransport: the smoothed RTT QUIC measured on the call's connection."""
        for connection in self._connections:
            if call.handle in connection.calls and not connection.closed:
                recovery = connection.quic._loss  # aioquic keeps its estimator private
                if getattr(recovery, "_rtt_initialized", False):
                    return float(recovery._rtt_smoothed)
        return None

    # ---------------------------------------------------------------- internals
    def _idle_deadline(self, connection: _Connection) -> float | None:
        """Server: when a connection that carries no call is closed (None: never)."""
        if self._role is not Role.SERVER or connection.idle_since is None or connection.calls:
            return None
        return connection.idle_since + self.config.idle_connection_timeout

    def _on_junk_initial(self, now: float) -> None:
        """Count an Initial that did not decrypt (servers use it to turn on Retry)."""

    def _limited(self, now: float, fmt: str, *args: object) -> None:
        """A warning a peer can trigger at will: rate-limited."""
        self._log.log(logging.WARNING, now, fmt, *args)

    def _register_cid(self, cid: bytes, connection: _Connection) -> None:
        self._by_cid[cid] = connection
        connection.cids.add(cid)

    def _close_connection(self, connection: _Connection, now: float, reason: str) -> None:
        """Close one connection (CONNECTION_CLOSE) and forget it."""
        connection.handshake_deadline = None
        if not connection.closed:
            connection.quic.close(error_code=0, reason_phrase=reason)
            self._goodbyes.extend(connection.quic.datagrams_to_send(now))
            self._process(connection, now)
        connection.closed = True
        self._drop_connection(connection)

    def _stop_reading(self, connection: _Connection, stream_id: int) -> None:
        """STOP_SENDING on a request whose body we will not read (refused requests), so
        that the peer ends it and its stream state can go."""
        if connection.closed:
            return
        self._touched.add(connection)
        try:
            connection.quic.stop_stream(stream_id, H3_REQUEST_REJECTED)
        except Exception:  # already finished in that direction
            logger.debug("stop of finished stream %d ignored", stream_id)

    def _new_channel(self, connection: _Connection, stream_id: int) -> int:
        channel = self._next_channel
        self._next_channel += 1
        self._channels[channel] = (connection, stream_id)
        return channel

    def _maybe_release(self, connection: _Connection, stream_id: int) -> None:
        stream = connection.streams.get(stream_id)
        if stream is not None and stream.we_ended and stream.peer_ended:
            del connection.streams[stream_id]
            if stream.channel is not None:
                self._channels.pop(stream.channel, None)

    def _register_cids(self, connection: _Connection) -> None:
        for cid in connection.quic._host_cids:
            self._register_cid(cid.cid, connection)

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

    def _process(self, connection: _Connection, now: float) -> None:
        quic = connection.quic
        while True:
            event = quic.next_event()
            if event is None:
                break
            if isinstance(event, quic_events.ConnectionIdIssued):
                self._register_cid(event.connection_id, connection)
            elif isinstance(event, quic_events.ConnectionIdRetired):
                connection.cids.discard(event.connection_id)
                if self._by_cid.get(event.connection_id) is connection:
                    del self._by_cid[event.connection_id]
            elif isinstance(event, quic_events.HandshakeCompleted):
                connection.handshake_done = True
                connection.handshake_deadline = None
            elif isinstance(event, quic_events.ConnectionTerminated):
                self._on_connection_lost(connection, event, now)
                continue
            elif isinstance(event, quic_events.StreamReset):
                self._on_stream_reset(connection, event.stream_id, now)
            elif isinstance(event, quic_events.StopSendingReceived):
                self._on_stop_sending(connection, event.stream_id, now)
            for h3_event in connection.h3.handle_event(event):
                self._on_h3_event(connection, h3_event, now)

    def _on_connection_lost(
        self, connection: _Connection, event: quic_events.ConnectionTerminated, now: float
    ) -> None:
        connection.closed = True
        logger.info(
            "connection to %s closed: 0x%x %s",
            connection.peer,
            event.error_code,
            event.reason_phrase,
        )
        self._events.append(
            ConnectionClosed(connection.peer, event.error_code, event.reason_phrase)
        )
        for stream_id in list(connection.streams):
            self._on_stream_reset(connection, stream_id, now)

    def _drop_connection(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
            host = connection.peer[0]
            left = self._per_host.get(host, 1) - 1
            if left > 0:
                self._per_host[host] = left
            else:
                self._per_host.pop(host, None)
        self._touched.discard(connection)
        for cid in connection.cids:
            if self._by_cid.get(cid) is connection:
                del self._by_cid[cid]
        connection.cids.clear()

    def _on_stop_sending(self, connection: _Connection, stream_id: int, now: float) -> None:
        stream = connection.streams.get(stream_id)
        if stream is None:
            return
        if stream.kind is _Kind.SIGNALING and stream.call is not None and stream.channel:
            # The peer stopped reading our signaling (it found an error in what we sent)
            # but still writes: its Terminate, which says why, follows on its side.
            stream.we_ended = True
            stream.call.on_peer_stopped_reading(stream.channel)
            self._dirty[stream.call.handle] = None
            return
        self._on_stream_reset(connection, stream_id, now)

    def _on_stream_reset(self, connection: _Connection, stream_id: int, now: float) -> None:
        stream = connection.streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.channel is not None:
            self._channels.pop(stream.channel, None)
        call = stream.call
        if call is None:
            return
        if stream.kind is _Kind.CREATE:
            self._on_create_stream_lost(connection, call, now)
        elif stream.channel is not None:
            call.on_reset(stream.channel, now)
        self._dirty[call.handle] = None

    def _on_create_stream_lost(self, connection: _Connection, call: Call, now: float) -> None:
        call.on_create_failed(503, "call request reset", now)

    def _on_h3_event(self, connection: _Connection, event: H3Event, now: float) -> None:
        raise NotImplementedError

    def _deliver_data(
        self, connection: _Connection, stream_id: int, data: bytes, ended: bool, now: float
    ) -> None:
        stream = connection.streams.get(stream_id)
        if stream is None:
            return
        if stream.kind is _Kind.PARKED:
            # Body bytes sent before the request is authorized wait, bounded.
            stream.buffered_bytes += len(data)
            if stream.buffered_bytes > self.config.max_buffered_bytes_per_stream:
                self._reset_stream(connection, stream_id, H3_EXCESSIVE_LOAD)
                del connection.streams[stream_id]
                return
            stream.buffered.append((data, ended))
            stream.peer_ended = stream.peer_ended or ended
            return
        if ended:
            stream.peer_ended = True
        if stream.call is not None and stream.channel is not None:
            stream.call.on_data(stream.channel, data, ended, now)
            self._dirty[stream.call.handle] = None
        if ended:
            if stream.kind in (_Kind.REFUSED, _Kind.CREATE):
                stream.we_ended = True
            self._maybe_release(connection, stream_id)

    def _settle(self, now: float) -> None:
        """Re-arm the timers of calls touched since last time; forget finished calls."""
        for handle in self._dirty:
            call = self._calls.get(handle)
            if call is None:
                continue
            if call.finished:
                self._forget_call(call, now)
                continue
            deadline = call.next_deadline()
            if deadline is None:
                self._deadlines.pop(handle, None)
            elif self._deadlines.get(handle) != deadline:
                self._deadlines[handle] = deadline
                self._heap_seq += 1
                heapq.heappush(self._heap, (deadline, self._heap_seq, handle))
        self._dirty.clear()

    def _forget_call(self, call: Call, now: float | None = None) -> None:
        self._calls.pop(call.handle, None)
        self._deadlines.pop(call.handle, None)
        for connection in self._connections:
            if call.handle in connection.calls:
                connection.calls.discard(call.handle)
                if not connection.calls and now is not None:
                    connection.idle_since = now

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _violation(
        self, call: str | None, exc: RippError, status: int | None, stream_error: int | None
    ) -> None:
        self._limited(self._log_clock, "[%s] %s: %s", call or "-", type(exc).__name__,
                      _bounded(exc.message))
        self._events.append(
            ProtocolViolation(call, type(exc).__name__, exc.message, status, stream_error)
        )


# ====================================================================== server


def _random_call_id() -> str:
    """128 random bits, base64url: call URIs must not be guessable (protocol 3.3)."""
    return secrets.token_urlsafe(16)


#: Longest piece of peer input echoed into a Ripp-Reason value or a log line.
_ECHO_LIMIT = 64


def _bounded(text: str) -> str:
    """Peer input as it may appear in a reason or log line: at most ``_ECHO_LIMIT``
    characters, control characters replaced (never echo unbounded input)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[: _ECHO_LIMIT + 1])
    return cleaned if len(cleaned) <= _ECHO_LIMIT else cleaned[: _ECHO_LIMIT - 3] + "..."


@attrs.frozen
class _Creation:
    """The parsed fields of a call-creation request."""

    to: NameAddr
    from_: NameAddr
    identity: str
    marker: ReestablishMarker | None
    extra: tuple[tuple[str, str], ...]


@attrs.define(eq=False)
class _Parked:
    """A request that passed the checks needing no secret, waiting for authorization."""

    connection: _Connection
    stream_id: int
    request: AuthRequest
    create: _Creation | None
    kind: _Kind | None
    target: tuple[str, str] | None
    identity: str | None
    deadline: float = 0.0
    # Cluster hook (issue 9): the store record a deferred check claimed for this
    # re-establishment (complete_checks(resumed=...)); _create resumes media from it.
    resumed: StoredCall | None = None


def _split_call_path(path: str, instances_path: str) -> tuple[str, str] | None:
    """``<instances_path>/<instance>/calls/<call>`` -> (instance, call), else None."""
    prefix = instances_path.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if len(parts) != 3 or parts[1] != "calls" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


class RippServer(_Endpoint):
    """A RIPP server instance: answers calls on one UDP address (R1, R2, R6).

    ``instance_id`` goes into every call URI so a load balancer can pin a call's requests to
    this instance; ``authority`` is the host[:port] put in call URIs (default: whatever
    authority the client used). ``authorizer`` names the principal behind each request's
    bearer token (R13) and ``identity_verifier`` checks the Identity header of each call
    request (R14); both are required, so that nothing is accepted unverified by accident
    (``insecure_accept_any_bearer`` and ``insecure_accept_any_identity`` say what they
    are). With ``deferred_checks=True`` neither hook is called: each request is parked and
    announced with :class:`ChecksRequested`, and the user answers with
    :meth:`complete_checks` or :meth:`fail_checks` (for hooks that must do I/O).

    ``call_id_source`` makes the random part of call URIs (default: 128 random bits,
    base64url); tests may pass a deterministic one.
    """

    _role = Role.SERVER

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
        if not deferred_checks and (authorizer is None or identity_verifier is None):
            raise ValueError("an authorizer and an identity verifier are required")
        super().__init__(config or RippConfig(), quic_configuration)
        self.instance_id = instance_id
        self.authority = authority
        self._authorizer = authorizer
        self._identity_verifier = identity_verifier
        self._deferred = deferred_checks
        self._call_id_source = call_id_source or _random_call_id
        self._parked: dict[int, _Parked] = {}
        self._next_ticket = 1
        self._retry = QuicRetryTokenHandler()
        self._next_audit = 0.0
        self._junk_window_start = 0.0
        self._junk_in_window = 0
        self._armed_at: float | None = None  # the time the driver was last asked to wake
        self._overloaded_until = 0.0
        self._lag = 0.0

    # ---------------------------------------------------------------- commands
    def ring(self, handle: str, now: float) -> None:
        """Alert: send Ringing (PENDING -> RINGING)."""
        self._command(handle, lambda c: c.ring(now), now)

    def answer(self, handle: str, now: float) -> None:
        """Answer: send Answer (-> CONNECTED)."""
        self._command(handle, lambda c: c.answer(now), now)

    def reject(self, handle: str, now: float, code: int = 486, reason: str = "Busy Here") -> None:
        """Refuse a call that is not connected yet (486 busy, 603 decline, ...)."""
        call = self.call(handle)
        if call.state is CallState.CONNECTED:
            raise LocalProtocolError("a connected call is terminated, not rejected")
        self.terminate(handle, now, code, reason)

    def export_call(self, handle: str, now: float) -> CallHandoff:
        """Freeze a call's sending and return what another instance needs to take it over.

        Follow with :meth:`RippServer.import_call` on the new instance and then
        :meth:`move` here with the URI it returned (R9).
        """
        result = self._command(handle, lambda c: c.export(now), now)
        assert isinstance(result, CallHandoff)
        return result

    def import_call(
        self,
        handoff: CallHandoff,
        now: float,
        authority: str | None = None,
        *,
        call_id: str | None = None,
        announce: bool = False,
        next_hop: bytes = b"",
    ) -> str:
        """Take over a call exported by another instance; returns its new call URI. The
        call stays bound to the principal that created it.

        Cluster hook (issue 9, protocol 24.6): ``call_id`` takes the id the exporting
        instance already put in its ``move`` (the handoff came through the call store);
        ``announce`` emits :class:`CallIncoming` for the call (``reestablishes`` = its
        previous URI, ``next_hop`` as given), as this instance's application has not
        seen it."""
        if call_id is not None and call_id in self._calls:
            raise LocalProtocolError(f"call id {call_id!r} is in use")
        call = self._new_call(
            handoff.request,
            handoff.state,
            now,
            authority,
            sender_state=handoff.sender,
            handle=call_id,
        )
        call.receiver.import_window(handoff.receiver)
        if announce:
            request = handoff.request
            self._emit(
                CallIncoming(
                    call=call.handle,
                    uri=call.uri or "",
                    to=request.to,
                    from_=request.from_,
                    identity=request.identity,
                    headers=request.headers,
                    state=handoff.state,
                    reestablishes=handoff.previous_uri,
                    principal=request.principal or "",
                    next_hop=next_hop,
                )
            )
        # Hold the call for the client to attach, as after a client-side move.
        call.await_attach(self.config.move_timeout, now)
        self._dirty[call.handle] = None
        self._settle(now)
        assert call.uri is not None
        return call.uri

    def report_load(self, lag: float, now: float) -> None:
        """Feed one measurement of how late the event loop ran a timer (seconds).

        The server keeps a moving average (gain 1/8) of these; while it exceeds
        ``admission_max_lag`` the server refuses new calls with 503 and ``Retry-After``,
        and keeps refusing for ``admission_hold`` after, so that the calls already up keep
        their quality (protocol 19.5). :meth:`handle_timer` reports its own lateness.
        """
        self._lag += (max(0.0, lag) - self._lag) / 8
        if self._lag > self.config.admission_max_lag:
            if now >= self._overloaded_until:
                logger.warning(
                    "overloaded (event loop %.0f ms late on average): refusing new calls",
                    self._lag * 1000,
                )
            self._overloaded_until = now + self.config.admission_hold

    @property
    def load(self) -> float:
        """The moving average of the event loop's lag (seconds), as admission sees it."""
        return self._lag

    def overloaded(self, now: float) -> bool:
        """True while new calls are refused for load (see :meth:`report_load`)."""
        return now < self._overloaded_until

    # ---------------------------------------------------------------- deferred checks
    def complete_checks(
        self,
        ticket: int,
        now: float,
        *,
        principal: str,
        identity: IdentityCheck | None = None,
        resumed: StoredCall | None = None,
    ) -> None:
        """Deferred checks passed: go on with the request of ``ticket`` as ``principal``.

        ``identity`` is the verification result of a call-creation request. ``resumed`` is
        the call-store record this instance claimed for a re-establishment (protocol 24):
        the new call continues its media from the record's resume point and
        :class:`CallIncoming` carries its ``next_hop``. A ticket that has expired or
        whose stream is gone is ignored.
        """
        parked = self._parked.pop(ticket, None)
        if parked is None:
            return
        parked.resumed = resumed
        self._resume(parked, principal, identity or UNVERIFIED_CHECK, now)
        self._settle(now)

    def fail_checks(self, ticket: int, error: RippError, now: float) -> None:
        """Deferred checks failed: refuse the request of ``ticket`` with ``error``'s
        documented status (401, 403, 436-438...)."""
        parked = self._parked.pop(ticket, None)
        if parked is None:
            return
        self._refuse_parked(parked, error)
        self._settle(now)

    # Only clients open requests; these complete the CallTransport interface.
    def open_signaling(self, call: Call) -> int | None:
        """CallTransport: servers never open requests."""
        return None

    def open_media(self, call: Call) -> int | None:
        """CallTransport: servers never open requests."""
        return None

    def create_call(self, call: Call, marker: ReestablishMarker | None) -> bool:
        """CallTransport: servers never create calls."""
        return False

    # ---------------------------------------------------------------- internals
    def _audit_buffers(self, now: float) -> None:
        """Close connections holding more undecoded bytes than ``max_connection_buffer``
        (out-of-order QUIC data and HTTP/3 frames in progress: aioquic raises its flow
        control windows as data arrives, so they alone bound nothing)."""
        if now < self._next_audit:
            return
        self._next_audit = now + self.config.full_poll_interval
        for connection in list(self._connections):
            if connection.closed:
                continue
            held = sum(
                len(stream.receiver._buffer) for stream in connection.quic._streams.values()
            )
            if isinstance(connection.h3, _GuardedH3Connection):
                held += connection.h3.buffered()
            if held > self.config.max_connection_buffer:
                self._limited(
                    now, "connection from %s closed: %d undecoded bytes", connection.peer[0], held
                )
                connection.quic.close(
                    error_code=H3_EXCESSIVE_LOAD, reason_phrase="too much undecoded data"
                )
                self._touched.add(connection)
                self._process(connection, now)

    def handle_timer(self, now: float) -> None:
        """Run the QUIC and call timers that are due, and expire deferred checks.

        How late this runs against the time :meth:`get_timer` asked for is the event
        loop's lag, the server's measure of overload (see :meth:`report_load`)."""
        if self._armed_at is not None:
            # A timer already overdue when armed measures nothing before our last run.
            self.report_load(now - max(self._armed_at, self._log_clock), now)
        self._armed_at = None
        self._log_clock = now
        self._audit_buffers(now)
        for ticket, parked in list(self._parked.items()):
            if parked.deadline <= now:
                del self._parked[ticket]
                self._refuse_parked(
                    parked, ChecksTimedOut("authorization did not complete in time")
                )
        super().handle_timer(now)

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        timer = super().get_timer()
        if self._connections and (timer is None or self._next_audit < timer):
            timer = self._next_audit
        for parked in self._parked.values():
            if timer is None or parked.deadline < timer:
                timer = parked.deadline
        self._armed_at = timer
        return timer

    def _call_uri(self, call_id: str, authority: str) -> str:
        return (
            f"https://{authority}{self.config.instances_path.rstrip('/')}/"
            f"{self.instance_id}/calls/{call_id}"
        )

    def _new_call(
        self,
        request: CallRequest,
        state: CallState,
        now: float,
        authority: str | None,
        sender_state: object = None,
        handle: str | None = None,
    ) -> Call:
        if len(self._calls) >= self.config.max_calls:
            raise TooManyCalls(f"this instance holds {len(self._calls)} calls")
        while handle is None or handle in self._calls or not handle:
            handle = self._call_id_source()
        call = Call(
            role=Role.SERVER,
            handle=handle,
            config=self.config,
            transport=self,
            emit=self._emit,
            request=request,
            now=now,
            uri=self._call_uri(handle, self.authority or authority or "localhost"),
            state=state,
            sender_state=sender_state,  # type: ignore[arg-type]
        )
        self._calls[handle] = call
        return call

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
            self._pending_datagrams.append(
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
        handshaking = sum(1 for c in self._connections if not c.handshake_done)
        if now - self._junk_window_start >= 1.0:
            self._junk_window_start, self._junk_in_window = now, 0
        suspicious = handshaking + self._junk_in_window
        if token:
            try:
                original_dcid = self._retry.validate_token(
                    address=addr, destination_cid=dcid, token=token, now=now
                )
            except ValueError:
                self._limited(now, "invalid retry token from %s dropped", addr[0])
                return None
            retry_scid = dcid
        elif suspicious >= self.config.retry_threshold:
            # Stateless address validation (RFC 9000 8.1.2): no state is kept for this
            # Initial; only a client that receives at its address can come back.
            new_scid = secrets.token_bytes(self._quic_configuration.connection_id_length)
            self._pending_datagrams.append(
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
        host = addr[0]
        if self._per_host.get(host, 0) >= self.config.max_connections_per_address:
            self._limited(now, "connection from %s refused: per-address limit", host)
            return None
        if len(self._connections) >= self.config.max_connections and not self._evict_idle(now):
            self._limited(
                now, "connection from %s refused: %d connections", host, len(self._connections)
            )
            return None
        quic = QuicConnection(
            configuration=self._quic_configuration,
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
        )
        _raise_stream_limit(quic, self.config.max_streams_per_connection)
        connection = _Connection(
            quic=quic,
            h3=_GuardedH3Connection(quic, max_header_frame=self.config.max_header_bytes),
            peer=addr,
            handshake_deadline=now + self.config.handshake_timeout,
            idle_since=now,
        )
        self._connections.append(connection)
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self._touched.add(connection)
        self._register_cids(connection)
        self._register_cid(dcid, connection)
        return connection

    def _on_junk_initial(self, now: float) -> None:
        # Undecryptable Initials in the current one-second window: a flood of them makes
        # every new Initial cost a cheap Retry instead of a full connection set-up.
        if now - self._junk_window_start >= 1.0:
            self._junk_window_start, self._junk_in_window = now, 0
        self._junk_in_window += 1

    def _evict_idle(self, now: float) -> bool:
        """Close the connection that has carried no call for longest, if any (so that idle
        connections never lock new callers out)."""
        idle = [c for c in self._connections if not c.calls and not c.closed]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        logger.info("idle connection from %s evicted for a new one", victim.peer)
        self._close_connection(victim, now, "idle connection evicted")
        return True

    @property
    def _pending_datagrams(self) -> list[tuple[bytes, Address]]:
        if not hasattr(self, "_vn_datagrams"):
            self._vn_datagrams: list[tuple[bytes, Address]] = []
        return self._vn_datagrams

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram ready to go, each with the address to send it to."""
        datagrams = super().datagrams_to_send(now)
        if self._pending_datagrams:
            datagrams.extend(self._pending_datagrams)
            self._pending_datagrams.clear()
        return datagrams

    def _on_h3_event(self, connection: _Connection, event: H3Event, now: float) -> None:
        if isinstance(event, HeadersReceived):
            if event.stream_id in connection.streams:
                return  # trailers: RIPP defines none; ignore
            self._on_request(connection, event.stream_id, event.headers, now)
            if event.stream_ended:
                self._deliver_data(connection, event.stream_id, b"", True, now)
            self._release_refused(connection, event.stream_id)
        elif isinstance(event, DataReceived):
            self._deliver_data(connection, event.stream_id, event.data, event.stream_ended, now)
        elif isinstance(event, MalformedRequest):
            self._on_malformed(connection, event, now)

    def _release_refused(self, connection: _Connection, stream_id: int) -> None:
        """A refused request whose body is still open: stop reading it (STOP_SENDING) and
        forget it now, discarding whatever else arrives on it, so that refused requests
        hold no state however many a peer makes (protocol 3.7)."""
        stream = connection.streams.get(stream_id)
        if stream is None or stream.kind is not _Kind.REFUSED or stream.peer_ended:
            return
        del connection.streams[stream_id]
        self._stop_reading(connection, stream_id)
        if isinstance(connection.h3, _GuardedH3Connection):
            connection.h3.abandon(stream_id)

    def _on_malformed(self, connection: _Connection, event: MalformedRequest, now: float) -> None:
        """A request aioquic found malformed (RFC 9114 4.1.2): a stream error, answered
        with 400 when no response has started; the connection and its calls carry on."""
        stream = connection.streams.get(event.stream_id)
        exc = BadRequest(f"malformed request: {event.reason}")
        if stream is None:
            try:
                self._refuse(connection, event.stream_id, exc, None)
            except _StreamGone:
                connection.streams.pop(event.stream_id, None)
            self._reset_stream(connection, event.stream_id, H3_MESSAGE_ERROR)
            return
        self._violation(stream.call.handle if stream.call else None, exc, None, H3_MESSAGE_ERROR)
        self._reset_stream(connection, event.stream_id, H3_MESSAGE_ERROR)
        self._on_stream_reset(connection, event.stream_id, now)

    def _respond(
        self,
        connection: _Connection,
        stream_id: int,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        end: bool = True,
    ) -> None:
        fields: Headers = [(b":status", str(status).encode())]
        fields.extend((name.encode(), value.encode()) for name, value in headers)
        if not self._guarded(
            connection, stream_id, lambda: connection.h3.send_headers(stream_id, fields, end)
        ):
            raise _StreamGone(f"stream {stream_id} was aborted by the peer")

    def _refuse(
        self, connection: _Connection, stream_id: int, exc: RippError, call: str | None
    ) -> None:
        headers = [(RIPP_REASON, f"{exc.sip_code} {_bounded(exc.message)}")]
        if exc.http_status == 401:
            headers.append((WWW_AUTHENTICATE, exc.challenge or 'Bearer realm="ripp"'))
        if exc.http_status == 403 and exc.challenge:
            headers.append((WWW_AUTHENTICATE, exc.challenge))
        if exc.http_status == 503:
            headers.append((RETRY_AFTER, str(self.config.retry_after)))
        connection.streams[stream_id] = _Stream(kind=_Kind.REFUSED, we_ended=True)
        self._respond(connection, stream_id, exc.http_status, headers, end=True)
        self._violation(call, exc, exc.http_status, None)

    def _on_request(
        self, connection: _Connection, stream_id: int, raw: Headers, now: float
    ) -> None:
        try:
            parked = self._check_request(connection, stream_id, raw, now)
            if self._deferred:
                if len(self._parked) >= self.config.max_pending_checks:
                    raise ChecksTimedOut(f"{len(self._parked)} requests await authorization")
                ticket = self._next_ticket
                self._next_ticket += 1
                parked.deadline = now + self.config.check_timeout
                self._parked[ticket] = parked
                connection.streams[stream_id] = _Stream(kind=_Kind.PARKED, ticket=ticket)
                self._emit(ChecksRequested(ticket, parked.request, parked.identity))
                return
            assert self._authorizer is not None and self._identity_verifier is not None
            principal = self._authorizer(parked.request, now)
            check: IdentityCheck = UNVERIFIED_CHECK
            if parked.create is not None:
                create = parked.create
                check = self._identity_verifier(create.identity, create.to, create.from_, now)
            self._resume(parked, principal, check, now)
        except _StreamGone:
            connection.streams.pop(stream_id, None)
        except RippError as exc:
            try:
                self._refuse(connection, stream_id, exc, None)
            except _StreamGone:
                connection.streams.pop(stream_id, None)

    def _check_request(
        self, connection: _Connection, stream_id: int, raw: Headers, now: float
    ) -> _Parked:
        """The checks that need no secret, in the documented order (protocol 3.4)."""
        size = sum(len(n) + len(v) for n, v in raw)
        if size > self.config.max_header_bytes:
            raise BadRequest(f"request header fields of {size} bytes")
        headers = header_dict(raw)
        method = headers.get(":method", "")
        if method != "POST":
            raise MethodNotAllowed(f"method {_bounded(method)!r} is not POST")
        path = headers.get(":path", "")
        authority = headers.get(":authority", "")
        target = _split_call_path(path, self.config.instances_path)
        create: _Creation | None = None
        kind: _Kind | None = None
        if target is None:
            if path != self.config.calls_path:
                raise UnknownCall(f"no resource at {_bounded(path)!r}")
            create = self._check_creation(headers)
            if len(self._calls) >= self.config.max_calls:
                raise TooManyCalls(f"this instance holds {len(self._calls)} calls")
            if self.overloaded(now):
                raise Overloaded("the server is overloaded")
        else:
            content_type = headers.get(CONTENT_TYPE, "").split(";")[0].strip()
            if content_type not in (SIGNALING_CONTENT_TYPE, MEDIA_CONTENT_TYPE):
                raise UnsupportedMediaType(
                    f"content-type {_bounded(content_type)!r} is not a RIPP body"
                )
            kind = _Kind.SIGNALING if content_type == SIGNALING_CONTENT_TYPE else _Kind.MEDIA
        token = bearer_token(headers.get(AUTHORIZATION))
        request = AuthRequest(
            method=method,
            path=path,
            authority=authority,
            headers=tuple(headers.items()),
            token=token,
            call=target[1] if target is not None else None,
            reestablish=create.marker if create is not None else None,
            peer=connection.peer,
        )
        return _Parked(
            connection=connection,
            stream_id=stream_id,
            request=request,
            create=create,
            kind=kind,
            target=target,
            identity=create.identity if create is not None else None,
        )

    def _check_creation(self, headers: dict[str, str]) -> _Creation:
        version = headers.get(RIPP_VERSION)
        if version != PROTOCOL_VERSION:
            raise BadRequest(f"unsupported ripp-version {_bounded(version or '')!r}")
        if TO not in headers or FROM not in headers:
            raise BadRequest("call request needs To and From")
        to = parse_name_addr(headers[TO])
        from_ = parse_name_addr(headers[FROM])
        identity = headers.get(IDENTITY)
        check_identity_syntax(identity)
        assert identity is not None
        marker = (
            parse_reestablish(headers[RIPP_REESTABLISH]) if RIPP_REESTABLISH in headers else None
        )
        extra = tuple(
            (k, v)
            for k, v in headers.items()
            if k not in HOP_BY_HOP and k not in (TO, FROM, IDENTITY, RIPP_REESTABLISH)
        )
        return _Creation(to=to, from_=from_, identity=identity, marker=marker, extra=extra)

    def _resume(
        self, parked: _Parked, principal: str, check: IdentityCheck, now: float
    ) -> None:
        """The request passed authorization: create or attach, as its principal."""
        connection, stream_id = parked.connection, parked.stream_id
        if connection.closed:
            return
        stream = connection.streams.get(stream_id)
        buffered = stream.buffered if stream is not None and stream.kind is _Kind.PARKED else []
        if stream is not None and stream.kind is _Kind.PARKED:
            del connection.streams[stream_id]
        elif stream is not None or self._deferred:
            return  # the stream went away while the checks ran
        handle: str | None = parked.target[1] if parked.target is not None else None
        try:
            if parked.create is not None:
                self._create(parked, principal, check, now)
            else:
                self._attach(parked, principal, now)
        except _StreamGone:
            connection.streams.pop(stream_id, None)
            return
        except RippError as exc:
            if isinstance(exc, UnknownCall):
                handle = None  # the offence names no call of this principal
            try:
                self._refuse(connection, stream_id, exc, handle)
            except _StreamGone:
                connection.streams.pop(stream_id, None)
            return
        for data, ended in buffered:
            self._deliver_data(connection, stream_id, data, ended, now)

    def _refuse_parked(self, parked: _Parked, error: RippError) -> None:
        connection, stream_id = parked.connection, parked.stream_id
        stream = connection.streams.get(stream_id)
        if connection.closed or stream is None or stream.kind is not _Kind.PARKED:
            return
        del connection.streams[stream_id]
        try:
            self._refuse(connection, stream_id, error, None)
        except _StreamGone:
            connection.streams.pop(stream_id, None)
            return
        if not stream.peer_ended:
            # We will not read the rest of this request body.
            self._stop_reading(connection, stream_id)

    def _create(
        self, parked: _Parked, principal: str, check: IdentityCheck, now: float
    ) -> None:
        create = parked.create
        assert create is not None
        connection, stream_id = parked.connection, parked.stream_id
        authority = parked.request.authority
        request = CallRequest(
            to=create.to,
            from_=create.from_,
            identity=create.identity,
            headers=create.extra,
            principal=principal,
        )
        marker = create.marker
        if marker is not None:
            existing = self._owned_call(marker)
            if existing is not None:
                if existing.request.principal != principal:
                    # Someone else's call: refuse exactly as if it did not exist.
                    raise UnknownCall(f"no call {_bounded(marker.call_uri)!r}")
                # Our own call came back (R10): detach whatever is left of the old path.
                existing.detach("re-established by the client", now)
                self._dirty[existing.handle] = None
                connection.streams[stream_id] = _Stream(kind=_Kind.CREATE, we_ended=True)
                self._respond(connection, stream_id, 201, [(LOCATION, existing.uri or "")])
                return
            if self._names_this_instance(marker):
                # A call URI of ours that we no longer (or never) had: nothing to resume.
                raise UnknownCall(f"no call {_bounded(marker.call_uri)!r} to re-establish")
        state = marker.state if marker is not None else CallState.CREATED
        # Cluster hook (issue 9): a claimed store record of this principal's call.
        resumed = parked.resumed if marker is not None else None
        if resumed is not None and resumed.principal != principal:
            resumed = None
        call = self._new_call(
            request,
            state,
            now,
            authority,
            sender_state=resumed_sender(resumed.resume, self.config) if resumed else None,
        )
        if resumed is not None:
            call.receiver.import_window(resumed_window(resumed.resume))
        # The client must open the signaling request soon; a call nobody attaches to ends.
        call.await_attach(
            self.config.reattach_timeout if marker is not None else self.config.connect_timeout,
            now,
        )
        self._dirty[call.handle] = None
        connection.streams[stream_id] = _Stream(kind=_Kind.CREATE, we_ended=True)
        self._respond(connection, stream_id, 201, [(LOCATION, call.uri or "")])
        logger.info(
            "[%s] created (to %s, from %s)%s",
            call.uri,
            _bounded(create.to.uri),
            _bounded(create.from_.uri),
            f", re-establishing {_bounded(marker.call_uri)}" if marker else "",
        )
        self._emit(
            CallIncoming(
                call=call.handle,
                uri=call.uri or "",
                to=create.to,
                from_=create.from_,
                identity=create.identity,
                headers=create.extra,
                state=state,
                reestablishes=marker.call_uri if marker is not None else None,
                principal=principal,
                identity_check=check,
                next_hop=resumed.next_hop if resumed is not None else None,
            )
        )

    def _names_this_instance(self, marker: ReestablishMarker) -> bool:
        target = _split_call_path(urlsplit(marker.call_uri).path, self.config.instances_path)
        return target is not None and target[0] == self.instance_id

    def _owned_call(self, marker: ReestablishMarker) -> Call | None:
        target = _split_call_path(urlsplit(marker.call_uri).path, self.config.instances_path)
        if target is None or target[0] != self.instance_id:
            return None
        call = self._calls.get(target[1])
        if call is None or call.state is CallState.TERMINATED:
            return None
        return call

    def _attach(self, parked: _Parked, principal: str, now: float) -> None:
        assert parked.target is not None and parked.kind is not None
        connection, stream_id = parked.connection, parked.stream_id
        instance, handle = parked.target
        call = self._calls.get(handle) if instance == self.instance_id else None
        if (
            call is None
            or call.request.principal != principal
            or call.phase is MigrationPhase.MOVED_AWAY
        ):
            # Unknown, ended and forgotten, moved, or someone else's: all look alike.
            raise UnknownCall(f"no call {_bounded(handle)!r} on this instance")
        kind = parked.kind
        content_type = (
            SIGNALING_CONTENT_TYPE if kind is _Kind.SIGNALING else MEDIA_CONTENT_TYPE
        )
        # Refusals (409, 429) go out as responses, before any 200 is sent.
        call.check_attach(signaling=kind is _Kind.SIGNALING)
        channel = self._new_channel(connection, stream_id)
        stream = _Stream(kind=kind, call=call, channel=channel)
        connection.streams[stream_id] = stream
        try:
            # Response headers go first so that anything the call sends lands after them.
            self._respond(connection, stream_id, 200, [(CONTENT_TYPE, content_type)], end=False)
            if kind is _Kind.SIGNALING:
                call.attach_signaling(channel, now)
            else:
                call.attach_media(channel, now)
        except _StreamGone:
            self._channels.pop(channel, None)
            connection.streams.pop(stream_id, None)
            return
        except RippError as exc:
            self._channels.pop(channel, None)
            connection.streams.pop(stream_id, None)
            self._violation(handle, exc, None, exc.stream_error)
            self._reset_stream(connection, stream_id, exc.stream_error)
            return
        connection.calls.add(handle)
        connection.idle_since = None
        self._dirty[handle] = None


# ====================================================================== client


class RippClient(_Endpoint):
    """A RIPP client: places calls against one or more calls URIs (R1, R10, R21).

    ``calls_uris`` lists top-level calls URIs: the first is used to place calls, the others
    are failover targets tried in order when a call must be re-established. ``token`` is
    the OAuth bearer token, or a function from authority to token (R13). ``resolver`` maps
    ``(host, port)`` to the UDP address to use; by default the host must be an IP literal
    or ``localhost``.
    """

    _role = Role.CLIENT

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
        if not calls_uris:
            raise ValueError("at least one calls URI is needed")
        for uri in calls_uris:
            if urlsplit(uri).scheme != "https":
                raise ValueError(f"calls URI must be https: {uri!r}")
        super().__init__(config or RippConfig(), quic_configuration)
        self.calls_uris = list(calls_uris)
        self._token = token
        self._resolver = resolver or _literal_resolver
        self._call_counter = 0
        self._attempts: dict[str, int] = {}
        self._create_streams: dict[str, tuple[_Connection, int]] = {}

    # ---------------------------------------------------------------- commands
    def place_call(
        self,
        *,
        to: str,
        from_: str,
        identity: str,
        now: float,
        headers: Iterable[tuple[str, str]] = (),
    ) -> str:
        """Create a call (R1): returns its local handle; events follow."""
        self._now_hint = now  # a new QUIC connection may be opened at this time
        try:
            check_identity_syntax(identity)
            to_addr, from_addr = parse_name_addr(to), parse_name_addr(from_)
        except RippError as exc:  # the same checks refuse a peer's request; here it's ours
            raise LocalProtocolError(exc.message) from exc
        request = CallRequest(
            to=to_addr,
            from_=from_addr,
            identity=identity,
            headers=tuple((k.lower(), v) for k, v in headers),
        )
        self._call_counter += 1
        handle = f"c{self._call_counter}"
        call = Call(
            role=Role.CLIENT,
            handle=handle,
            config=self.config,
            transport=self,
            emit=self._emit,
            request=request,
            now=now,
        )
        self._calls[handle] = call
        call.start(now)
        self._dirty[handle] = None
        self._settle(now)
        return handle

    def export_call(self, handle: str, now: float) -> CallHandoff:
        """Freeze a call's sending and return what another client instance needs to take
        it over. Follow with :meth:`import_call` there and :meth:`move` here (R9)."""
        result = self._command(handle, lambda c: c.export(now), now)
        assert isinstance(result, CallHandoff)
        return result

    def import_call(self, handoff: CallHandoff, now: float) -> str:
        """Take over a call another client instance exported and moved away from.

        Opens a new signaling request and media requests to the call URI; the server
        re-attaches the call (R9). Returns the local handle.
        """
        self._now_hint = now
        self._call_counter += 1
        handle = f"c{self._call_counter}"
        call = Call(
            role=Role.CLIENT,
            handle=handle,
            config=self.config,
            transport=self,
            emit=self._emit,
            request=handoff.request,
            now=now,
            uri=handoff.previous_uri,
            state=handoff.state,
            sender_state=handoff.sender,
        )
        call.receiver.import_window(handoff.receiver)
        call.begin_reattach(now)
        self._calls[handle] = call
        self._dirty[handle] = None
        self._settle(now)
        return handle

    # ---------------------------------------------------------------- CallTransport
    def create_call(self, call: Call, marker: ReestablishMarker | None) -> bool:
        """CallTransport: POST the call request (to the next failover URI on re-use)."""
        self._cancel_create(call)
        if marker is None:
            uri = self.calls_uris[0]
        else:
            attempt = self._attempts.get(call.handle, 0)
            self._attempts[call.handle] = attempt + 1
            failed = urlsplit(marker.call_uri).netloc
            offset = (
                1
                if len(self.calls_uris) > 1 and urlsplit(self.calls_uris[0]).netloc == failed
                else 0
            )
            uri = self.calls_uris[(attempt + offset) % len(self.calls_uris)]
        parts = urlsplit(uri)
        # Re-establishment hook (issue 9): no attempt over a connection silent for
        # media_timeout. Behind an L4 balancer such a connection may be pinned to the dead
        # instance; a new handshake is what the balancer can route to a live one.
        now = self._now_hint
        silent_before = now - self.config.media_timeout if marker is not None else None
        connection = self._connection_for(parts.netloc, call, now, heard_since=silent_before)
        if connection is None:
            return False
        stream_id = connection.quic.get_next_available_stream_id()
        fields = self._request_headers(parts.netloc, parts.path or "/", None)
        request = call.request
        fields += [
            (RIPP_VERSION.encode(), PROTOCOL_VERSION.encode()),
            (TO.encode(), str(request.to).encode()),
            (FROM.encode(), str(request.from_).encode()),
            (IDENTITY.encode(), request.identity.encode()),
        ]
        if marker is not None:
            fields.append((RIPP_REESTABLISH.encode(), str(marker).encode()))
        fields += [(k.encode(), v.encode()) for k, v in request.headers]
        if not self._guarded(
            connection, stream_id, lambda: connection.h3.send_headers(stream_id, fields, True)
        ):
            return False
        connection.streams[stream_id] = _Stream(kind=_Kind.CREATE, call=call, we_ended=True)
        self._create_streams[call.handle] = (connection, stream_id)
        logger.info(
            "[%s] call request to %s%s",
            call.handle,
            uri,
            f" re-establishing {marker.call_uri}" if marker else "",
        )
        return True

    def open_signaling(self, call: Call) -> int | None:
        """CallTransport: open the signaling request to the call URI."""
        return self._open_call_request(call, SIGNALING_CONTENT_TYPE, _Kind.SIGNALING)

    def open_media(self, call: Call) -> int | None:
        """CallTransport: open one media request, if the connection has stream credit."""
        return self._open_call_request(call, MEDIA_CONTENT_TYPE, _Kind.MEDIA)

    # ---------------------------------------------------------------- internals
    _now_hint: float = 0.0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP datagram that arrived from ``addr``."""
        self._now_hint = now
        super().receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        """Run the QUIC and call timers that are due."""
        self._now_hint = now
        super().handle_timer(now)

    def _command(self, handle: str, action: Callable[[Call], object], now: float) -> object:
        self._now_hint = now
        return super()._command(handle, action, now)

    def _token_for(self, authority: str) -> str:
        return self._token(authority) if callable(self._token) else self._token

    def _request_headers(self, authority: str, path: str, content_type: str | None) -> Headers:
        fields: Headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (AUTHORIZATION.encode(), f"Bearer {self._token_for(authority)}".encode()),
        ]
        if content_type is not None:
            fields.append((CONTENT_TYPE.encode(), content_type.encode()))
        return fields

    def _open_call_request(self, call: Call, content_type: str, kind: _Kind) -> int | None:
        assert call.uri is not None
        parts = urlsplit(call.uri)
        connection = self._connection_for(parts.netloc, call, self._now_hint)
        if connection is None:
            return None
        if kind is _Kind.MEDIA and self._credit(connection) < 1:
            return None
        stream_id = connection.quic.get_next_available_stream_id()
        fields = self._request_headers(parts.netloc, parts.path, content_type)
        if not self._guarded(
            connection, stream_id, lambda: connection.h3.send_headers(stream_id, fields, False)
        ):
            return None

        channel = self._new_channel(connection, stream_id)
        connection.streams[stream_id] = _Stream(kind=kind, call=call, channel=channel)
        return channel

    def _credit(self, connection: _Connection) -> int:
        quic = connection.quic
        if not connection.handshake_done:
            limit = self.config.assumed_stream_credit
        else:
            limit = quic._remote_max_streams_bidi
        return limit - quic._local_next_stream_id_bidi // _STREAM_ID_STEP

    def _connection_for(
        self, authority: str, call: Call, now: float, heard_since: float | None = None
    ) -> _Connection | None:
        """A connection to ``authority`` for ``call``: the one it uses, one with room, or
        a new one. With ``heard_since``, connections silent since then are passed over."""
        needed = 1 + self.config.min_media_streams

        def usable(connection: _Connection) -> bool:
            return (
                not connection.closed
                and connection.authority == authority
                and (heard_since is None or connection.heard_at >= heard_since)
            )

        for connection in self._connections:
            if not usable(connection):
                continue
            if call.handle in connection.calls:
                return connection
        for connection in self._connections:
            if not usable(connection):
                continue
            if (
                len(connection.calls) < self.config.max_calls_per_connection
                and self._credit(connection) >= needed
            ):
                connection.calls.add(call.handle)
                return connection
        if len(self._connections) >= self.config.max_connections:
            logger.warning(
                "no connection for %s: %d connections open", authority, len(self._connections)
            )
            return None
        host, port = _host_port(authority)
        try:
            address = self._resolver(host, port)
        except (OSError, ValueError) as exc:
            logger.warning("cannot resolve %s: %s", authority, exc)
            return None
        configuration = copy.copy(self._quic_configuration)
        configuration.server_name = host
        quic = QuicConnection(configuration=configuration)
        _raise_stream_limit(quic, self.config.max_streams_per_connection)
        quic.connect(address, now)
        connection = _Connection(
            quic=quic, h3=H3Connection(quic), peer=address, authority=authority, heard_at=now
        )
        self._connections.append(connection)
        self._touched.add(connection)
        self._register_cids(connection)
        connection.calls.add(call.handle)
        logger.info("new connection to %s (%s:%d)", authority, *address)
        return connection

    def _cancel_create(self, call: Call) -> None:
        entry = self._create_streams.pop(call.handle, None)
        if entry is None:
            return
        connection, stream_id = entry
        if connection.streams.pop(stream_id, None) is not None:
            self._reset_stream(connection, stream_id, H3_REQUEST_CANCELLED)

    def _on_create_stream_lost(self, connection: _Connection, call: Call, now: float) -> None:
        self._create_streams.pop(call.handle, None)
        super()._on_create_stream_lost(connection, call, now)

    def _forget_call(self, call: Call, now: float | None = None) -> None:
        self._cancel_create(call)
        self._attempts.pop(call.handle, None)
        super()._forget_call(call, now)

    def _on_h3_event(self, connection: _Connection, event: H3Event, now: float) -> None:
        stream = connection.streams.get(event.stream_id)  # type: ignore[attr-defined]
        if stream is None:
            return
        if isinstance(event, HeadersReceived):
            if stream.call is None:
                return
            headers = header_dict(event.headers)
            try:
                status = int(headers.get(":status", "0"))
            except ValueError:
                status = 0
            if status < 200:
                return  # interim response
            code, reason = _reason(headers.get(RIPP_REASON), status)
            if stream.kind is _Kind.CREATE:
                self._create_streams.pop(stream.call.handle, None)
                if status == 201 and headers.get(LOCATION, "").startswith("https://"):
                    first = stream.call.uri is None
                    if first:
                        self._emit(CallCreated(stream.call.handle, headers[LOCATION]))
                    stream.call.on_created(headers[LOCATION], now)
                else:
                    stream.call.on_create_failed(code, reason, now)
            elif stream.channel is not None:
                stream.call.on_response(stream.channel, status, reason, now)
            self._dirty[stream.call.handle] = None
            if event.stream_ended:
                self._deliver_data(connection, event.stream_id, b"", True, now)
        elif isinstance(event, DataReceived):
            self._deliver_data(connection, event.stream_id, event.data, event.stream_ended, now)


class _StreamGone(Exception):
    """A response could not be written: the peer had already aborted the stream."""


def _reason(value: str | None, status: int) -> tuple[int, str]:
    """Split ``Ripp-Reason: 486 Busy Here`` into (486, 'Busy Here')."""
    if value:
        code, _, text = value.partition(" ")
        if code.isdigit() and len(code) == 3:
            return int(code), text
    return status, f"HTTP {status}"


def _host_port(authority: str) -> tuple[str, int]:
    parts = urlsplit(f"//{authority}")
    return parts.hostname or "", parts.port or 443


def _literal_resolver(host: str, port: int) -> Address:
    if host == "localhost":
        return ("127.0.0.1", port)
    import ipaddress

    ipaddress.ip_address(host)  # raises ValueError for names
    return (host, port)


__all__ = [
    "QuicConnectionError",
    "RippClient",
    "RippServer",
]
