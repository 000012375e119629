"""RIPP's HTTP semantics, written once for every HTTP version.

This layer knows requests and responses as plain header lists on abstract request
streams (a connection object and a stream ID); it knows nothing of QUIC, TCP or framing.
It holds RIPP's HTTP rules: routing of requests to calls by path, the order of the
request checks (protocol 3.4), authorization and identity verification (directly or
deferred), create and attach, status codes and refusals as responses (3.5, 3.6), bounded
reasons, and the client's side of the same: call-creation and call requests and their
responses. It implements :class:`~ripp_core._call.CallTransport` in terms of channels.

A transport binding (:mod:`._h3` for aioquic, :mod:`._h2` for h2 over TCP) subclasses
:class:`HttpServer` or :class:`HttpClient`, owns the connections, and supplies a handful
of primitives: write headers, write data, stop reading, abort a stream, open a stream;
it feeds back the same few stream events from whatever framing it speaks.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs

from ._auth import UNVERIFIED as UNVERIFIED_CHECK
from ._auth import Authorizer, AuthRequest, IdentityCheck, IdentityVerifier
from ._call import Call, CallHandoff, CallRequest
from ._config import RippConfig
from ._endpoint import Admission, EndpointCore, Parking
from ._errors import (
    H3_EXCESSIVE_LOAD,
    H3_MESSAGE_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
    BadRequest,
    ChecksTimedOut,
    LocalProtocolError,
    MethodNotAllowed,
    Overloaded,
    RemoteProtocolError,
    RippError,
    TooManyCalls,
    UnknownCall,
    UnsupportedMediaType,
    local_counterpart,
)
from ._events import (
    CallCreated,
    CallIncoming,
    ChecksRequested,
    ConnectionClosed,
    MigrationPhase,
)
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
    check_extra_fields,
    check_identity_syntax,
    check_single_fields,
    header_dict,
    parse_name_addr,
    parse_reestablish,
)
from ._state import CallState, Role
from ._store import StoredCall, resumed_sender, resumed_window

logger = logging.getLogger("ripp.http")

Address = tuple[str, int]


class StreamKind(enum.Enum):
    """What a request stream carries, as far as RIPP's HTTP layer is concerned."""

    CREATE = "create"
    SIGNALING = "signaling"
    MEDIA = "media"
    REFUSED = "refused"
    PARKED = "parked"  # server: awaiting deferred authorization


@attrs.define(eq=False)
class RequestStream:
    """One request stream of a connection, whatever the HTTP version."""

    kind: StreamKind
    call: Call | None = None
    channel: int | None = None
    we_ended: bool = False
    peer_ended: bool = False
    ticket: int | None = None
    buffered: list[tuple[bytes, bool]] = attrs.Factory(list)
    buffered_bytes: int = 0


@attrs.define(eq=False, kw_only=True)
class HttpConnection:
    """What the HTTP layer keeps of a connection; bindings subclass it."""

    peer: Address
    authority: str = ""
    streams: dict[int, RequestStream] = attrs.Factory(dict)
    calls: set[str] = attrs.Factory(set)
    closed: bool = False
    idle_since: float | None = None  # carrying no call since then (None: has calls)
    heard_at: float = 0.0  # when the peer was last heard (or the connection opened)
    # When a call re-establishing (section 15.3) gave up on this connection: no request is
    # sent on it until the peer is heard from again (None: never given up on).
    failed_at: float | None = None


class StreamGone(Exception):
    """A response could not be written: the peer had already aborted the stream."""


def random_call_id() -> str:
    """128 random bits, base64url: call URIs must not be guessable (protocol 3.3)."""
    return secrets.token_urlsafe(16)


class HttpEndpoint(EndpointCore):
    """Connections, channels and the CallTransport side shared by client and server."""

    _role: Role

    def __init__(self, config: RippConfig) -> None:
        super().__init__(config, logger)
        self._connections: list[HttpConnection] = []
        self._channels: dict[int, tuple[HttpConnection, int]] = {}
        self._next_channel = 1
        self._per_host: dict[str, int] = {}  # open connections by peer IP address

    # ------------------------------------------------------------ binding primitives
    def _raw_headers(
        self, connection: HttpConnection, stream_id: int, fields: Headers, end: bool
    ) -> None:
        """Binding: write a header block (may raise if the stream is dead)."""
        raise NotImplementedError

    def _raw_data(
        self, connection: HttpConnection, stream_id: int, data: bytes, end: bool
    ) -> None:
        """Binding: write body bytes (may raise if the stream is dead)."""
        raise NotImplementedError

    def _stop_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        """Binding: stop reading a stream (STOP_SENDING, or its HTTP/2 equivalent)."""
        raise NotImplementedError

    def _abort_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        """Binding: abort a stream in both directions with a RIPP stream error code."""
        raise NotImplementedError

    def _input_arrived(self, now: float) -> None:
        """Binding hook, called first for every input (datagram, bytes) at ``now``: a
        server measures there too how late its loop runs (:meth:`HttpServer._input_arrived`).
        """

    def _touch(self, connection: HttpConnection) -> None:
        """Binding: the connection may have something to send."""
        raise NotImplementedError

    def _close_connection(self, connection: HttpConnection, now: float, reason: str) -> None:
        """Binding: close one connection and forget it."""
        raise NotImplementedError

    @property
    def connection_count(self) -> int:
        """Connections this endpoint holds now (for metrics)."""
        return len(self._connections)

    # ---------------------------------------------------------------- CallTransport
    def send(self, channel: int, data: bytes, now: float) -> None:
        """CallTransport: append to our body on ``channel``."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        connection, stream_id = entry
        stream = connection.streams.get(stream_id)
        if stream is None or stream.we_ended or connection.closed:
            return
        self._guarded(
            connection, stream_id, lambda: self._raw_data(connection, stream_id, data, False)
        )

    def end(self, channel: int, now: float) -> None:
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
                connection, stream_id, lambda: self._raw_data(connection, stream_id, b"", True)
            )
        self._maybe_release(connection, stream_id)

    def stop(self, channel: int, error_code: int, now: float) -> None:
        """CallTransport: stop reading a channel (STOP_SENDING); we may still send on it."""
        entry = self._channels.get(channel)
        if entry is None:
            return
        connection, stream_id = entry
        if not connection.closed:
            self._touch(connection)
            self._stop_stream(connection, stream_id, error_code)

    def reset(self, channel: int, error_code: int, now: float) -> None:
        """CallTransport: abort a channel in both directions."""
        entry = self._channels.pop(channel, None)
        if entry is None:
            return
        connection, stream_id = entry
        connection.streams.pop(stream_id, None)
        self._reset_stream(connection, stream_id, error_code)

    def path_rtt(self, call: Call) -> float | None:
        """CallTransport: the transport's RTT estimate for the call's connection."""
        for connection in self._connections:
            if call.handle in connection.calls and not connection.closed:
                return self._connection_rtt(connection)
        return None

    def _connection_rtt(self, connection: HttpConnection) -> float | None:
        """Binding: the transport's smoothed RTT on ``connection``, if it measures one."""
        return None

    # ---------------------------------------------------------------- stream plumbing
    def _guarded(
        self, connection: HttpConnection, stream_id: int, write: Callable[[], None]
    ) -> bool:
        """Run a write; a stream the peer already aborted must not crash us."""
        self._touch(connection)
        try:
            write()
        except Exception as exc:  # bindings raise various errors on dead streams
            logger.info("write on stream %d of %s dropped: %s", stream_id, connection.peer, exc)
            stream = connection.streams.get(stream_id)
            if stream is not None:
                stream.we_ended = True
            return False
        return True

    def _reset_stream(self, connection: HttpConnection, stream_id: int, code: int) -> None:
        if connection.closed:
            return
        self._touch(connection)
        self._abort_stream(connection, stream_id, code)

    def _stop_reading(
        self, connection: HttpConnection, stream_id: int, code: int = H3_REQUEST_REJECTED
    ) -> None:
        """Stop reading a request whose body we will not read (refused requests), so that
        the peer ends it and its stream state can go."""
        if connection.closed:
            return
        self._touch(connection)
        self._stop_stream(connection, stream_id, code)

    def _new_channel(self, connection: HttpConnection, stream_id: int) -> int:
        channel = self._next_channel
        self._next_channel += 1
        self._channels[channel] = (connection, stream_id)
        return channel

    def _maybe_release(self, connection: HttpConnection, stream_id: int) -> None:
        stream = connection.streams.get(stream_id)
        if stream is not None and stream.we_ended and stream.peer_ended:
            del connection.streams[stream_id]
            if stream.channel is not None:
                self._channels.pop(stream.channel, None)

    # ---------------------------------------------------------------- connections
    def _add_connection(self, connection: HttpConnection) -> None:
        self._connections.append(connection)
        host = connection.peer[0]
        self._per_host[host] = self._per_host.get(host, 0) + 1

    def _remove_connection(self, connection: HttpConnection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
            host = connection.peer[0]
            left = self._per_host.get(host, 1) - 1
            if left > 0:
                self._per_host[host] = left
            else:
                self._per_host.pop(host, None)

    def _connection_limits(self, host: str, now: float) -> bool:
        """Server: may one more connection from ``host`` be accepted? Bounds connections
        per address and in total, evicting the longest-idle connection without calls
        first (protocol 12)."""
        if self._per_host.get(host, 0) >= self.config.max_connections_per_address:
            self._limited(now, "connection from %s refused: per-address limit", host)
            return False
        if len(self._connections) >= self.config.max_connections and not self._evict_idle(now):
            self._limited(
                now, "connection from %s refused: %d connections", host, len(self._connections)
            )
            return False
        return True

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

    def _idle_deadline(self, connection: HttpConnection) -> float | None:
        """Server: when a connection that carries no call is closed (None: never)."""
        if self._role is not Role.SERVER or connection.idle_since is None or connection.calls:
            return None
        return connection.idle_since + self.config.idle_connection_timeout

    def _on_connection_lost(
        self, connection: HttpConnection, code: int, reason: str, now: float
    ) -> None:
        connection.closed = True
        logger.info("connection to %s closed: 0x%x %s", connection.peer, code, reason)
        self._events.append(ConnectionClosed(connection.peer, code, reason))
        for stream_id in list(connection.streams):
            self._on_stream_reset(connection, stream_id, now)

    def _forget_call(self, call: Call, now: float | None = None) -> None:
        super()._forget_call(call, now)
        for connection in self._connections:
            if call.handle in connection.calls:
                connection.calls.discard(call.handle)
                if not connection.calls and now is not None:
                    connection.idle_since = now

    def close(self, now: float, code: int = 200, reason: str = "Endpoint closing") -> None:
        """Orderly shutdown: terminate every live call, then close every connection.

        Collect the binding's output afterwards to put the goodbyes on the wire.
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
                self._say_goodbye(connection, reason, now)
        self._settle(now)

    def _say_goodbye(self, connection: HttpConnection, reason: str, now: float) -> None:
        """Binding: close ``connection`` after what is queued on it has left."""
        raise NotImplementedError

    # ---------------------------------------------------------------- stream events
    def _on_stop_sending(self, connection: HttpConnection, stream_id: int, now: float) -> None:
        stream = connection.streams.get(stream_id)
        if stream is None:
            return
        if stream.kind is StreamKind.SIGNALING and stream.call is not None and stream.channel:
            # The peer stopped reading our signaling (it found an error in what we sent)
            # but still writes: its Terminate, which says why, follows on its side.
            stream.we_ended = True
            stream.call.on_peer_stopped_reading(stream.channel)
            self._dirty[stream.call.handle] = None
            return
        self._on_stream_reset(connection, stream_id, now)

    def _on_stream_reset(self, connection: HttpConnection, stream_id: int, now: float) -> None:
        stream = connection.streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.channel is not None:
            self._channels.pop(stream.channel, None)
        call = stream.call
        if call is None:
            return
        if stream.kind is StreamKind.CREATE:
            self._on_create_stream_lost(connection, call, now)
        elif stream.channel is not None:
            call.on_reset(stream.channel, now)
        self._dirty[call.handle] = None

    def _on_create_stream_lost(self, connection: HttpConnection, call: Call, now: float) -> None:
        call.on_create_failed(503, "call request reset", now)

    def _on_headers(
        self, connection: HttpConnection, stream_id: int, raw: Headers, ended: bool, now: float
    ) -> None:
        """A header block arrived on a stream (server: a request; client: a response)."""
        raise NotImplementedError

    def _on_malformed(
        self, connection: HttpConnection, stream_id: int, reason: str, now: float
    ) -> None:
        """The binding found a stream's framing or fields malformed: abort that stream."""
        self._reset_stream(connection, stream_id, H3_MESSAGE_ERROR)
        self._on_stream_reset(connection, stream_id, now)

    def _deliver_data(
        self, connection: HttpConnection, stream_id: int, data: bytes, ended: bool, now: float
    ) -> None:
        stream = connection.streams.get(stream_id)
        if stream is None:
            return
        if stream.kind is StreamKind.PARKED:
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
            if stream.kind in (StreamKind.REFUSED, StreamKind.CREATE):
                stream.we_ended = True
            self._maybe_release(connection, stream_id)


# ====================================================================== server


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

    connection: HttpConnection
    stream_id: int
    request: AuthRequest
    create: _Creation | None
    kind: StreamKind | None
    target: tuple[str, str] | None
    identity: str | None
    # Cluster hook (issue 9): the store record a deferred check claimed for this
    # re-establishment (complete_checks(resumed=...)); _create resumes media from it.
    resumed: StoredCall | None = None


def split_call_path(path: str, instances_path: str) -> tuple[str, str] | None:
    """``<instances_path>/<instance>/calls/<call>`` -> (instance, call), else None."""
    prefix = instances_path.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if len(parts) != 3 or parts[1] != "calls" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


class HttpServer(HttpEndpoint):
    """A RIPP server instance's HTTP rules, for any binding (R1, R2, R6, R13, R14).

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
        config: RippConfig,
        *,
        instance_id: str,
        authorizer: Authorizer | None,
        identity_verifier: IdentityVerifier | None,
        authority: str | None = None,
        deferred_checks: bool = False,
        call_id_source: Callable[[], str] | None = None,
    ) -> None:
        if not deferred_checks and (authorizer is None or identity_verifier is None):
            raise ValueError("an authorizer and an identity verifier are required")
        super().__init__(config)
        self.instance_id = instance_id
        self.authority = authority
        self._authorizer = authorizer
        self._identity_verifier = identity_verifier
        self._deferred = deferred_checks
        self._call_id_source = call_id_source or random_call_id
        self._parking: Parking[_Parked] = Parking(config)
        self._admission = Admission(config)
        self._armed_at: float | None = None  # the time the driver was last asked to wake

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

        Follow with :meth:`import_call` on the new instance and then :meth:`move` here
        with the URI it returned (R9).
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
        self._admission.report(lag, now)

    @property
    def load(self) -> float:
        """The moving average of the event loop's lag (seconds), as admission sees it."""
        return self._admission.lag

    def overloaded(self, now: float) -> bool:
        """True while new calls are refused for load (see :meth:`report_load`)."""
        return self._admission.overloaded(now)

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
        parked = self._parking.pop(ticket)
        if parked is None:
            return
        parked.resumed = resumed
        self._resume(parked, principal, identity or UNVERIFIED_CHECK, now)
        self._settle(now)

    def fail_checks(self, ticket: int, error: RippError, now: float) -> None:
        """Deferred checks failed: refuse the request of ``ticket`` with ``error``'s
        documented status (401, 403, 436-438...)."""
        parked = self._parking.pop(ticket)
        if parked is None:
            return
        self._refuse_parked(parked, error)
        self._settle(now)

    # Only clients open requests; these complete the CallTransport interface.
    def open_signaling(self, call: Call, now: float) -> int | None:
        """CallTransport: servers never open requests."""
        return None

    def open_media(self, call: Call, now: float) -> int | None:
        """CallTransport: servers never open requests."""
        return None

    def create_call(self, call: Call, marker: ReestablishMarker | None, now: float) -> bool:
        """CallTransport: servers never create calls."""
        return False

    # ---------------------------------------------------------------- timers
    def _server_timer(self) -> float | None:
        """The earliest deadline of parked requests (server-side timers of this layer)."""
        return self._parking.next_deadline()

    def _arm(self, timer: float | None) -> float | None:
        """Remember when the driver was asked to wake, to measure its lateness."""
        self._armed_at = timer
        return timer

    def _input_arrived(self, now: float) -> None:
        """An input at ``now`` after the armed timer fell due: the loop ran that late.

        After a stall the driver may take the waiting datagrams before it runs the timer;
        they re-arm the timer, and measured only when the timer runs, the stall would go
        unseen (found by the lagging-server hostile test, flaky about 1 run in 10)."""
        if self._armed_at is not None and now > self._armed_at:
            self.report_load(now - max(self._armed_at, self._log_clock), now)
            self._armed_at = None

    def _server_timers(self, now: float) -> None:
        """Measure the loop's lag against the armed time, and expire parked requests."""
        if self._armed_at is not None:
            # A timer already overdue when armed measures nothing before our last run.
            self.report_load(now - max(self._armed_at, self._log_clock), now)
        self._armed_at = None
        self._log_clock = now
        for parked in self._parking.expire(now):
            self._refuse_parked(parked, ChecksTimedOut("authorization did not complete in time"))

    # ---------------------------------------------------------------- requests
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

    def _on_headers(
        self, connection: HttpConnection, stream_id: int, raw: Headers, ended: bool, now: float
    ) -> None:
        """A header block arrived on a request stream: a request, or trailers."""
        if stream_id in connection.streams:
            return  # trailers: RIPP defines none; ignore
        self._on_request(connection, stream_id, raw, now)
        if ended:
            self._deliver_data(connection, stream_id, b"", True, now)
        self._release_refused(connection, stream_id)

    def _release_refused(self, connection: HttpConnection, stream_id: int) -> None:
        """A refused request whose body is still open: stop reading it (STOP_SENDING) and
        forget it now, discarding whatever else arrives on it, so that refused requests
        hold no state however many a peer makes (protocol 3.7)."""
        stream = connection.streams.get(stream_id)
        if stream is None or stream.kind is not StreamKind.REFUSED or stream.peer_ended:
            return
        del connection.streams[stream_id]
        self._stop_reading(connection, stream_id)
        self._discard_stream(connection, stream_id)

    def _discard_stream(self, connection: HttpConnection, stream_id: int) -> None:
        """Binding: drop whatever more arrives on a stream we answered and will not read."""

    def _on_malformed(
        self, connection: HttpConnection, stream_id: int, reason: str, now: float
    ) -> None:
        """A request the binding found malformed (RFC 9114 4.1.2, RFC 9113 8.1.1): a
        stream error, answered with 400 when no response has started; the connection and
        its calls carry on."""
        stream = connection.streams.get(stream_id)
        exc = BadRequest(f"malformed request: {reason}")
        if stream is None:
            # Not answered yet: a whole 400 response, then STOP_SENDING for the rest of
            # the request (a reset of our side could discard the 400 before it leaves).
            with contextlib.suppress(StreamGone):
                self._refuse(connection, stream_id, exc, None)
            connection.streams.pop(stream_id, None)
            self._stop_reading(connection, stream_id, H3_MESSAGE_ERROR)
            self._discard_stream(connection, stream_id)
            return
        self._violation(stream.call.handle if stream.call else None, exc, None, H3_MESSAGE_ERROR)
        self._reset_stream(connection, stream_id, H3_MESSAGE_ERROR)
        self._on_stream_reset(connection, stream_id, now)

    def _respond(
        self,
        connection: HttpConnection,
        stream_id: int,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        end: bool = True,
    ) -> None:
        fields: Headers = [(b":status", str(status).encode())]
        fields.extend((name.encode(), value.encode()) for name, value in headers)
        if not self._guarded(
            connection, stream_id, lambda: self._raw_headers(connection, stream_id, fields, end)
        ):
            raise StreamGone(f"stream {stream_id} was aborted by the peer")

    def _refuse(
        self, connection: HttpConnection, stream_id: int, exc: RippError, call: str | None
    ) -> None:
        headers = [(RIPP_REASON, f"{exc.sip_code} {self._bounded(exc.message)}")]
        if exc.http_status == 401:
            headers.append((WWW_AUTHENTICATE, exc.challenge or 'Bearer realm="ripp"'))
        if exc.http_status == 403 and exc.challenge:
            headers.append((WWW_AUTHENTICATE, exc.challenge))
        if exc.http_status == 503:
            headers.append((RETRY_AFTER, str(self.config.retry_after)))
        connection.streams[stream_id] = RequestStream(kind=StreamKind.REFUSED, we_ended=True)
        self._respond(connection, stream_id, exc.http_status, headers, end=True)
        self._violation(call, exc, exc.http_status, None)

    def _on_request(
        self, connection: HttpConnection, stream_id: int, raw: Headers, now: float
    ) -> None:
        try:
            parked = self._check_request(connection, stream_id, raw, now)
            if self._deferred:
                if self._parking.full():
                    raise ChecksTimedOut(f"{len(self._parking)} requests await authorization")
                ticket = self._parking.park(parked, now)
                connection.streams[stream_id] = RequestStream(
                    kind=StreamKind.PARKED, ticket=ticket
                )
                self._emit(ChecksRequested(ticket, parked.request, parked.identity))
                return
            assert self._authorizer is not None and self._identity_verifier is not None
            principal = self._authorizer(parked.request, now)
            check: IdentityCheck = UNVERIFIED_CHECK
            if parked.create is not None:
                create = parked.create
                check = self._identity_verifier(create.identity, create.to, create.from_, now)
            self._resume(parked, principal, check, now)
        except StreamGone:
            connection.streams.pop(stream_id, None)
        except RippError as exc:
            try:
                self._refuse(connection, stream_id, exc, None)
            except StreamGone:
                connection.streams.pop(stream_id, None)

    def _check_request(
        self, connection: HttpConnection, stream_id: int, raw: Headers, now: float
    ) -> _Parked:
        """The checks that need no secret, in the documented order (protocol 3.4)."""
        size = sum(len(n) + len(v) for n, v in raw)
        if size > self.config.max_header_bytes:
            raise BadRequest(f"request header fields of {size} bytes")
        check_single_fields(raw)
        headers = header_dict(raw)
        method = headers.get(":method", "")
        if method != "POST":
            raise MethodNotAllowed(f"method {self._bounded(method)!r} is not POST")
        path = headers.get(":path", "")
        # :authority, or Host from an intermediary that sends that instead (RFC 9113 8.3.1).
        authority = headers.get(":authority") or headers.get("host", "")
        target = split_call_path(path, self.config.instances_path)
        create: _Creation | None = None
        kind: StreamKind | None = None
        if target is None:
            if path != self.config.calls_path:
                raise UnknownCall(f"no resource at {self._bounded(path)!r}")
            create = self._check_creation(headers)
            # Re-attaching a call this instance holds (section 15.4 case 1) adds no call:
            # like any request on an existing call it is never refused for load (19.5).
            # Refused, it could go nowhere: in a cluster the others answer owner-alive.
            reattach = create.marker is not None and self._owned_call(create.marker) is not None
            if not reattach and len(self._calls) >= self.config.max_calls:
                raise TooManyCalls(f"this instance holds {len(self._calls)} calls")
            if not reattach and self.overloaded(now):
                raise Overloaded("the server is overloaded")
        else:
            content_type = headers.get(CONTENT_TYPE, "").split(";")[0].strip()
            if content_type not in (SIGNALING_CONTENT_TYPE, MEDIA_CONTENT_TYPE):
                raise UnsupportedMediaType(
                    f"content-type {self._bounded(content_type)!r} is not a RIPP body"
                )
            kind = (
                StreamKind.SIGNALING
                if content_type == SIGNALING_CONTENT_TYPE
                else StreamKind.MEDIA
            )
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
            raise BadRequest(f"unsupported ripp-version {self._bounded(version or '')!r}")
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
        parked_stream = stream is not None and stream.kind is StreamKind.PARKED
        buffered = stream.buffered if stream is not None and parked_stream else []
        if parked_stream:
            del connection.streams[stream_id]
        elif stream is not None or self._deferred:
            return  # the stream went away while the checks ran
        handle: str | None = parked.target[1] if parked.target is not None else None
        try:
            if parked.create is not None:
                self._create(parked, principal, check, now)
            else:
                self._attach(parked, principal, now)
        except StreamGone:
            connection.streams.pop(stream_id, None)
            return
        except RippError as exc:
            if isinstance(exc, UnknownCall):
                handle = None  # the offence names no call of this principal
            try:
                self._refuse(connection, stream_id, exc, handle)
            except StreamGone:
                connection.streams.pop(stream_id, None)
            return
        for data, ended in buffered:
            self._deliver_data(connection, stream_id, data, ended, now)

    def _refuse_parked(self, parked: _Parked, error: RippError) -> None:
        connection, stream_id = parked.connection, parked.stream_id
        stream = connection.streams.get(stream_id)
        if connection.closed or stream is None or stream.kind is not StreamKind.PARKED:
            return
        del connection.streams[stream_id]
        try:
            self._refuse(connection, stream_id, error, None)
        except StreamGone:
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
                    raise UnknownCall(f"no call {self._bounded(marker.call_uri)!r}")
                # Our own call came back (R10): detach whatever is left of the old path.
                existing.detach("re-established by the client", now)
                self._dirty[existing.handle] = None
                connection.streams[stream_id] = RequestStream(kind=StreamKind.CREATE, we_ended=True)
                self._respond(connection, stream_id, 201, [(LOCATION, existing.uri or "")])
                return
            if self._names_this_instance(marker):
                # A call URI of ours that we no longer (or never) had: nothing to resume.
                raise UnknownCall(f"no call {self._bounded(marker.call_uri)!r} to re-establish")
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
        connection.streams[stream_id] = RequestStream(kind=StreamKind.CREATE, we_ended=True)
        self._respond(connection, stream_id, 201, [(LOCATION, call.uri or "")])
        logger.info(
            "[%s] created (to %s, from %s)%s",
            call.uri,
            self._bounded(create.to.uri),
            self._bounded(create.from_.uri),
            f", re-establishing {self._bounded(marker.call_uri)}" if marker else "",
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
        target = split_call_path(urlsplit(marker.call_uri).path, self.config.instances_path)
        return target is not None and target[0] == self.instance_id

    def _owned_call(self, marker: ReestablishMarker) -> Call | None:
        target = split_call_path(urlsplit(marker.call_uri).path, self.config.instances_path)
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
            raise UnknownCall(f"no call {self._bounded(handle)!r} on this instance")
        kind = parked.kind
        content_type = (
            SIGNALING_CONTENT_TYPE if kind is StreamKind.SIGNALING else MEDIA_CONTENT_TYPE
        )
        # Refusals (409, 429) go out as responses, before any 200 is sent.
        call.check_attach(signaling=kind is StreamKind.SIGNALING)
        channel = self._new_channel(connection, stream_id)
        stream = RequestStream(kind=kind, call=call, channel=channel)
        connection.streams[stream_id] = stream
        try:
            # Response headers go first so that anything the call sends lands after them.
            self._respond(connection, stream_id, 200, [(CONTENT_TYPE, content_type)], end=False)
            if kind is StreamKind.SIGNALING:
                call.attach_signaling(channel, now)
            else:
                call.attach_media(channel, now)
        except StreamGone:
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


class HttpClient(HttpEndpoint):
    """A RIPP client's HTTP side, for any binding: places calls against one or more calls
    URIs (R1, R10, R21).

    ``calls_uris`` lists top-level calls URIs: the first is used to place calls, the others
    are failover targets tried in order when a call must be re-established. ``token`` is
    the OAuth bearer token, or a function from authority to token (R13). ``resolver`` maps
    ``(host, port)`` to the address to connect to; by default the host must be an IP
    literal or ``localhost``.
    """

    _role = Role.CLIENT

    def __init__(
        self,
        config: RippConfig,
        *,
        calls_uris: list[str],
        token: str | Callable[[str], str],
        resolver: Callable[[str, int], Address] | None = None,
    ) -> None:
        if not calls_uris:
            raise ValueError("at least one calls URI is needed")
        for uri in calls_uris:
            if urlsplit(uri).scheme != "https":
                raise ValueError(f"calls URI must be https: {uri!r}")
        super().__init__(config)
        self.calls_uris = list(calls_uris)
        self._token = token
        self._resolver = resolver or _literal_resolver
        self._call_counter = 0
        self._attempts: dict[str, int] = {}
        self._create_streams: dict[str, tuple[HttpConnection, int]] = {}

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
        try:
            check_identity_syntax(identity)
            to_addr, from_addr = parse_name_addr(to), parse_name_addr(from_)
            extra = tuple((k.lower(), v) for k, v in headers)
            check_extra_fields(extra)
        except RemoteProtocolError as exc:  # the checks refuse a peer's request; here it's ours
            raise local_counterpart(exc) from exc
        request = CallRequest(
            to=to_addr,
            from_=from_addr,
            identity=identity,
            headers=extra,
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
    def create_call(self, call: Call, marker: ReestablishMarker | None, now: float) -> bool:
        """CallTransport: POST the call request (to the next failover URI on re-use)."""
        self._cancel_create(call)
        if marker is None:
            uri = self.calls_uris[0]
        else:
            attempt = self._attempts.get(call.handle, 0)
            self._attempts[call.handle] = attempt + 1
            failed = urlsplit(marker.call_uri).netloc
            if attempt == 0:  # the first attempt after this failure
                self._give_up_connection(call, now)
            offset = (
                1
                if len(self.calls_uris) > 1 and urlsplit(self.calls_uris[0]).netloc == failed
                else 0
            )
            uri = self.calls_uris[(attempt + offset) % len(self.calls_uris)]
        parts = urlsplit(uri)
        # Re-establishment (issue 9): no attempt over a connection silent for
        # media_timeout. Behind an L4 balancer such a connection may be pinned to the dead
        # instance; a new handshake is what the balancer can route to a live one.
        silent_before = now - self.config.media_timeout if marker is not None else None
        connection = self._connection_for(parts.netloc, call, now, heard_since=silent_before)
        if connection is None:
            return False
        stream_id = self._open_stream(connection)
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
            connection, stream_id, lambda: self._raw_headers(connection, stream_id, fields, True)
        ):
            return False
        connection.streams[stream_id] = RequestStream(
            kind=StreamKind.CREATE, call=call, we_ended=True
        )
        self._create_streams[call.handle] = (connection, stream_id)
        logger.info(
            "[%s] call request to %s%s",
            call.handle,
            uri,
            f" re-establishing {marker.call_uri}" if marker else "",
        )
        return True

    def open_signaling(self, call: Call, now: float) -> int | None:
        """CallTransport: open the signaling request to the call URI."""
        return self._open_call_request(call, SIGNALING_CONTENT_TYPE, StreamKind.SIGNALING, now)

    def open_media(self, call: Call, now: float) -> int | None:
        """CallTransport: open one media request, if the connection has stream credit."""
        return self._open_call_request(call, MEDIA_CONTENT_TYPE, StreamKind.MEDIA, now)

    # ------------------------------------------------------------ binding primitives
    def _open_stream(self, connection: HttpConnection) -> int:
        """Binding: the ID of a new request stream on ``connection``."""
        raise NotImplementedError

    def _credit(self, connection: HttpConnection) -> int:
        """Binding: how many more request streams the peer lets us open now."""
        raise NotImplementedError

    def _media_credit(self, connection: HttpConnection, call: Call) -> int:
        """Binding: how many more media requests ``call`` may open on ``connection``."""
        return self._credit(connection)

    def _has_room(self, connection: HttpConnection) -> bool:
        """Binding: may one more call share ``connection``?"""
        return len(connection.calls) < self.config.max_calls_per_connection

    def _connect(self, authority: str, address: Address, now: float) -> HttpConnection | None:
        """Binding: open a new connection to ``address`` for ``authority`` (None: the
        binding cannot open another one)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- internals
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

    def _open_call_request(
        self, call: Call, content_type: str, kind: StreamKind, now: float
    ) -> int | None:
        assert call.uri is not None
        parts = urlsplit(call.uri)
        connection = self._connection_for(parts.netloc, call, now)
        if connection is None:
            return None
        if kind is StreamKind.MEDIA and self._media_credit(connection, call) < 1:
            return None
        stream_id = self._open_stream(connection)
        fields = self._request_headers(parts.netloc, parts.path, content_type)
        if not self._guarded(
            connection, stream_id, lambda: self._raw_headers(connection, stream_id, fields, False)
        ):
            return None

        channel = self._new_channel(connection, stream_id)
        connection.streams[stream_id] = RequestStream(kind=kind, call=call, channel=channel)
        return channel

    def _connection_for(
        self, authority: str, call: Call, now: float, heard_since: float | None = None
    ) -> HttpConnection | None:
        """A connection to ``authority`` for ``call``: the one it uses, one with room, or
        a new one. With ``heard_since``, connections silent since then are passed over."""
        needed = 1 + self.config.min_media_streams

        def usable(connection: HttpConnection) -> bool:
            return (
                not connection.closed
                and connection.authority == authority
                and (heard_since is None or connection.heard_at >= heard_since)
                and (connection.failed_at is None or connection.heard_at > connection.failed_at)
            )

        for connection in self._connections:
            if not usable(connection):
                continue
            if call.handle in connection.calls:
                return connection
        for connection in self._connections:
            if not usable(connection):
                continue
            if self._has_room(connection) and self._credit(connection) >= needed:
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
        fresh = self._connect(authority, address, now)
        if fresh is None:
            return None
        fresh.heard_at = now
        self._add_connection(fresh)
        self._touch(fresh)
        fresh.calls.add(call.handle)
        logger.info("new connection to %s (%s:%d)", authority, *address)
        return fresh

    def _give_up_connection(self, call: Call, now: float) -> None:
        """The call failed (section 15.1) on the connection it used: leave it, and send no
        request of any call on it until the peer is heard from again. A SIGKILLed instance
        sends no CONNECTION_CLOSE, so the connection looks open for its idle timeout; an
        instance restarted at the same address does not know it, and requests sent on it
        (a later move of this call or another to the new instance) would vanish."""
        for connection in self._connections:
            if call.handle in connection.calls:
                connection.calls.discard(call.handle)
                connection.failed_at = now
                if not connection.calls:
                    connection.idle_since = now

    def _cancel_create(self, call: Call) -> None:
        entry = self._create_streams.pop(call.handle, None)
        if entry is None:
            return
        connection, stream_id = entry
        if connection.streams.pop(stream_id, None) is not None:
            self._reset_stream(connection, stream_id, H3_REQUEST_CANCELLED)

    def _on_create_stream_lost(self, connection: HttpConnection, call: Call, now: float) -> None:
        self._create_streams.pop(call.handle, None)
        super()._on_create_stream_lost(connection, call, now)

    def _forget_call(self, call: Call, now: float | None = None) -> None:
        self._cancel_create(call)
        self._attempts.pop(call.handle, None)
        super()._forget_call(call, now)

    def _on_headers(
        self, connection: HttpConnection, stream_id: int, raw: Headers, ended: bool, now: float
    ) -> None:
        """A response header block arrived on one of our request streams."""
        stream = connection.streams.get(stream_id)
        if stream is None or stream.call is None:
            return
        headers = header_dict(raw)
        try:
            status = int(headers.get(":status", "0"))
        except ValueError:
            status = 0
        if status < 200:
            return  # interim response
        code, reason = _reason(headers.get(RIPP_REASON), status)
        if stream.kind is StreamKind.CREATE:
            self._create_streams.pop(stream.call.handle, None)
            if status == 201 and headers.get(LOCATION, "").startswith("https://"):
                # A later failure starts its attempts afresh (the first gives up the
                # connection that failed, and the URIs are tried from the start again).
                self._attempts.pop(stream.call.handle, None)
                first = stream.call.uri is None
                if first:
                    self._emit(CallCreated(stream.call.handle, headers[LOCATION]))
                stream.call.on_created(headers[LOCATION], now)
            else:
                stream.call.on_create_failed(code, reason, now)
        elif stream.channel is not None:
            stream.call.on_response(stream.channel, status, reason, now)
        self._dirty[stream.call.handle] = None
        if ended:
            self._deliver_data(connection, stream_id, b"", True, now)


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


