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
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionError
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from ._call import Call, CallHandoff, CallRequest
from ._codecs import Codec
from ._config import RippConfig
from ._errors import (
    H3_REQUEST_CANCELLED,
    BadRequest,
    LocalProtocolError,
    MethodNotAllowed,
    NoSuchCall,
    RippError,
    TooManyCalls,
    UnknownCall,
    UnsupportedMediaType,
)
from ._events import CallCreated, CallIncoming, ConnectionClosed, Event, ProtocolViolation
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
from ._state import CallState, Role
from ._stats import CallStats

logger = logging.getLogger("ripp.h3")

Address = tuple[str, int]

#: Stream IDs of one kind (client-initiated bidirectional) are 4 apart (RFC 9000 2.1).
_STREAM_ID_STEP = 4


@attrs.frozen
class AuthRequest:
    """What the authorization hook sees of each request (R13)."""

    token: str
    method: str
    path: str
    authority: str
    call: str | None


#: Authorization hook: raise Unauthorized (401) or Forbidden (403) to refuse a request.
Authorizer = Callable[[AuthRequest], None]
#: Identity hook: given the Identity header value, raise InvalidIdentity to refuse (R14).
IdentityVerifier = Callable[[str, NameAddr, NameAddr], None]


def accept_any_bearer(request: AuthRequest) -> None:
    """Default authorizer: any non-empty bearer token is accepted (validated upstream)."""


def accept_well_formed_identity(identity: str, to: NameAddr, from_: NameAddr) -> None:
    """Default identity verifier: the syntax check already done is all it asks."""


class _Kind(enum.Enum):
    CREATE = "create"
    SIGNALING = "signaling"
    MEDIA = "media"
    REFUSED = "refused"


@attrs.define(eq=False)
class _Stream:
    kind: _Kind
    call: Call | None = None
    channel: int | None = None
    we_ended: bool = False
    peer_ended: bool = False


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

    # ---------------------------------------------------------------- aioquic contract
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP datagram that arrived from ``addr``."""
        connection = self._connection_for_datagram(data, addr, now)
        if connection is None:
            return
        fresh = not connection.handshake_done and connection.quic._state.name == "FIRSTFLIGHT"
        connection.quic.receive_datagram(data, addr, now)
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
            for at in (connection.quic.get_timer(), connection.handshake_deadline):
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
        for connection in list(self._connections):
            deadline = connection.handshake_deadline
            if deadline is not None and deadline <= now and not connection.closed:
                # A handshake that never completes (garbage or spoofed Initials) must not
                # hold one of the max_connections slots until the idle timeout.
                logger.info("handshake with %s timed out", connection.peer)
                connection.handshake_deadline = None
                connection.quic.close(error_code=0, reason_phrase="handshake timeout")
                self._touched.add(connection)
                self._process(connection, now)
                connection.closed = True
                self._drop_connection(connection)
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
            self._by_cid[cid.cid] = connection

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
                self._by_cid[event.connection_id] = connection
            elif isinstance(event, quic_events.ConnectionIdRetired):
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
        for cid in [c for c, conn in self._by_cid.items() if conn is connection]:
            del self._by_cid[cid]

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
                self._forget_call(call)
                continue
            deadline = call.next_deadline()
            if deadline is None:
                self._deadlines.pop(handle, None)
            elif self._deadlines.get(handle) != deadline:
                self._deadlines[handle] = deadline
                self._heap_seq += 1
                heapq.heappush(self._heap, (deadline, self._heap_seq, handle))
        self._dirty.clear()

    def _forget_call(self, call: Call) -> None:
        self._calls.pop(call.handle, None)
        self._deadlines.pop(call.handle, None)
        for connection in self._connections:
            connection.calls.discard(call.handle)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _violation(
        self, call: str | None, exc: RippError, status: int | None, stream_error: int | None
    ) -> None:
        logger.warning("[%s] %s: %s", call or "-", type(exc).__name__, exc.message)
        self._events.append(
            ProtocolViolation(call, type(exc).__name__, exc.message, status, stream_error)
        )


# ====================================================================== server


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
    authority the client used). ``authorizer`` and ``identity_verifier`` are the hooks for
    OAuth bearer tokens (R13) and STIR Identity (R14).
    """

    _role = Role.SERVER

    def __init__(
        self,
        quic_configuration: QuicConfiguration,
        *,
        instance_id: str,
        config: RippConfig | None = None,
        authority: str | None = None,
        authorizer: Authorizer = accept_any_bearer,
        identity_verifier: IdentityVerifier = accept_well_formed_identity,
    ) -> None:
        if quic_configuration.is_client:
            raise ValueError("a RippServer needs a server QuicConfiguration")
        super().__init__(config or RippConfig(), quic_configuration)
        self.instance_id = instance_id
        self.authority = authority
        self._authorizer = authorizer
        self._identity_verifier = identity_verifier
        self._call_counter = 0

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

    def import_call(self, handoff: CallHandoff, now: float, authority: str | None = None) -> str:
        """Take over a call exported by another instance; returns its new call URI."""
        call = self._new_call(
            handoff.request, handoff.state, now, authority, sender_state=handoff.sender
        )
        call.receiver.import_window(handoff.receiver)
        # Hold the call for the client to attach, as after a client-side move.
        call._phase_deadline = now + self.config.move_timeout
        self._dirty[call.handle] = None
        self._settle(now)
        assert call.uri is not None
        return call.uri

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
    ) -> Call:
        if len(self._calls) >= self.config.max_calls:
            raise TooManyCalls(f"this instance holds {len(self._calls)} calls")
        self._call_counter += 1
        handle = f"{self._call_counter:x}"
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
        if len(self._connections) >= self.config.max_connections:
            logger.warning(
                "connection from %s refused: %d connections", addr, len(self._connections)
            )
            return None
        quic = QuicConnection(
            configuration=self._quic_configuration,
            original_destination_connection_id=header.destination_cid,  # type: ignore[attr-defined]
        )
        _raise_stream_limit(quic, self.config.max_streams_per_connection)
        connection = _Connection(
            quic=quic,
            h3=H3Connection(quic),
            peer=addr,
            handshake_deadline=now + self.config.handshake_timeout,
        )
        self._connections.append(connection)
        self._touched.add(connection)
        self._register_cids(connection)
        self._by_cid[header.destination_cid] = connection  # type: ignore[attr-defined]
        return connection

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
        elif isinstance(event, DataReceived):
            self._deliver_data(connection, event.stream_id, event.data, event.stream_ended, now)

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
        headers = [(RIPP_REASON, f"{exc.sip_code} {exc.message}")]
        if exc.http_status == 401:
            headers.append((WWW_AUTHENTICATE, 'Bearer realm="ripp"'))
        if exc.http_status == 503:
            headers.append((RETRY_AFTER, "1"))
        self._respond(connection, stream_id, exc.http_status, headers, end=True)
        connection.streams[stream_id] = _Stream(kind=_Kind.REFUSED, we_ended=True)
        self._violation(call, exc, exc.http_status, None)

    def _on_request(
        self, connection: _Connection, stream_id: int, raw: Headers, now: float
    ) -> None:
        handle: str | None = None
        try:
            size = sum(len(n) + len(v) for n, v in raw)
            if size > self.config.max_header_bytes:
                raise BadRequest(f"request header fields of {size} bytes")
            headers = header_dict(raw)
            if headers.get(":method") != "POST":
                raise MethodNotAllowed(f"method {headers.get(':method')!r} is not POST")
            path = headers.get(":path", "")
            authority = headers.get(":authority", "")
            target = _split_call_path(path, self.config.instances_path)
            if target is not None and target[0] == self.instance_id and target[1] in self._calls:
                handle = target[1]
            elif path != self.config.calls_path:
                raise UnknownCall(f"no resource at {path!r}")
            token = bearer_token(headers.get(AUTHORIZATION))
            self._authorizer(AuthRequest(token, "POST", path, authority, handle))
            if target is None:
                self._create(connection, stream_id, headers, authority, now)
            else:
                self._attach(connection, stream_id, headers, target, now)
        except _StreamGone:
            connection.streams.pop(stream_id, None)
        except RippError as exc:
            try:
                self._refuse(connection, stream_id, exc, handle)
            except _StreamGone:
                connection.streams.pop(stream_id, None)

    def _create(
        self,
        connection: _Connection,
        stream_id: int,
        headers: dict[str, str],
        authority: str,
        now: float,
    ) -> None:
        version = headers.get(RIPP_VERSION)
        if version != PROTOCOL_VERSION:
            raise BadRequest(f"unsupported ripp-version {version!r}")
        if TO not in headers or FROM not in headers:
            raise BadRequest("call request needs To and From")
        to = parse_name_addr(headers[TO])
        from_ = parse_name_addr(headers[FROM])
        identity = headers.get(IDENTITY)
        check_identity_syntax(identity)
        assert identity is not None
        self._identity_verifier(identity, to, from_)
        marker = (
            parse_reestablish(headers[RIPP_REESTABLISH]) if RIPP_REESTABLISH in headers else None
        )
        extra = tuple(
            (k, v)
            for k, v in headers.items()
            if k not in HOP_BY_HOP and k not in (TO, FROM, IDENTITY, RIPP_REESTABLISH)
        )
        request = CallRequest(to=to, from_=from_, identity=identity, headers=extra)
        if marker is not None:
            existing = self._owned_call(marker)
            if existing is not None:
                # Our own call came back (R10): detach whatever is left of the old path.
                existing._lost("re-established by the client", now)
                self._dirty[existing.handle] = None
                self._respond(connection, stream_id, 201, [(LOCATION, existing.uri or "")])
                connection.streams[stream_id] = _Stream(kind=_Kind.CREATE, we_ended=True)
                return
        state = marker.state if marker is not None else CallState.CREATED
        call = self._new_call(request, state, now, authority)
        # The client must open the signaling request soon; a call nobody attaches to ends.
        call._phase_deadline = now + (
            self.config.reattach_timeout if marker is not None else self.config.connect_timeout
        )
        self._dirty[call.handle] = None
        connection.streams[stream_id] = _Stream(kind=_Kind.CREATE, we_ended=True)
        self._respond(connection, stream_id, 201, [(LOCATION, call.uri or "")])
        logger.info(
            "[%s] created (to %s, from %s)%s",
            call.uri,
            to.uri,
            from_.uri,
            f", re-establishing {marker.call_uri}" if marker else "",
        )
        self._emit(
            CallIncoming(
                call=call.handle,
                uri=call.uri or "",
                to=to,
                from_=from_,
                identity=identity,
                headers=extra,
                state=state,
                reestablishes=marker.call_uri if marker is not None else None,
            )
        )

    def _owned_call(self, marker: ReestablishMarker) -> Call | None:
        target = _split_call_path(urlsplit(marker.call_uri).path, self.config.instances_path)
        if target is None or target[0] != self.instance_id:
            return None
        call = self._calls.get(target[1])
        if call is None or call.state is CallState.TERMINATED:
            return None
        return call

    def _attach(
        self,
        connection: _Connection,
        stream_id: int,
        headers: dict[str, str],
        target: tuple[str, str],
        now: float,
    ) -> None:
        instance, handle = target
        call = self._calls.get(handle) if instance == self.instance_id else None
        if call is None or call.phase.value == "moved-away":
            raise UnknownCall(f"no call {handle!r} on instance {instance!r}")
        content_type = headers.get(CONTENT_TYPE, "").split(";")[0].strip()
        if content_type not in (SIGNALING_CONTENT_TYPE, MEDIA_CONTENT_TYPE):
            raise UnsupportedMediaType(f"content-type {content_type!r} is not a RIPP body")
        channel = self._new_channel(connection, stream_id)
        kind = _Kind.SIGNALING if content_type == SIGNALING_CONTENT_TYPE else _Kind.MEDIA
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
        connection = self._connection_for(parts.netloc, call, self._now_hint)
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

    def _connection_for(self, authority: str, call: Call, now: float) -> _Connection | None:
        needed = 1 + self.config.min_media_streams
        for connection in self._connections:
            if connection.closed or connection.authority != authority:
                continue
            if call.handle in connection.calls:
                return connection
        for connection in self._connections:
            if connection.closed or connection.authority != authority:
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
            quic=quic, h3=H3Connection(quic), peer=address, authority=authority
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

    def _forget_call(self, call: Call) -> None:
        self._cancel_create(call)
        self._attempts.pop(call.handle, None)
        super()._forget_call(call)

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
    "AuthRequest",
    "Authorizer",
    "IdentityVerifier",
    "QuicConnectionError",
    "RippClient",
    "RippServer",
    "accept_any_bearer",
    "accept_well_formed_identity",
]
