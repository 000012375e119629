"""The QUIC engine seam: which QUIC + HTTP/3 implementation carries the HTTP/3 binding.

:mod:`._h3` speaks aioquic's public sans-IO contract (``receive_datagram`` /
``datagrams_to_send`` / ``get_timer`` / ``handle_timer`` / ``next_event``, ``send_headers``
/ ``send_data``), which qh3 2.x (a native QUIC core under aioquic's API) speaks too. What
that contract does not tell, the binding asks a :class:`QuicEngine`:

====================  ==========================================  ===========================
question              aioquic 1.7 (pinned)                        qh3 2.1
====================  ==========================================  ===========================
``rtt``               ``_loss._rtt_smoothed`` (private)           ``_core.smoothed_rtt``
``stream_credit``     ``_remote_max_streams_bidi`` (private)      ``max_concurrent_bidi_streams``
                      minus ``get_next_available_stream_id()``    minus open outbound streams
``buffered_bytes``    ``_streams[i].receiver._buffer`` (private)  0: bounded by ``max_data``
``is_first_flight``   ``_state`` (private)                        ``_core.received_authenti…``
stream limit          ``_local_max_streams_bidi`` (private)       fixed at 100, no setting
H3 request guard      overrides two private H3 methods            the same two, plus
                                                                  ``_decode_headers`` and
                                                                  ``_get_local_settings`` (no
                                                                  QPACK dynamic table), reads
                                                                  ``_close_event`` and uses
                                                                  ``_hazmat.QpackDecoder``
====================  ==========================================  ===========================

Every private name the binding reads lives in this module (aioquic) or in :mod:`._qh3`
(qh3), each behind one method, so an engine upgrade is checked in one place and
``tests/test_engine.py`` checks every answer against behaviour on both engines.
Users keep passing an aioquic ``QuicConfiguration``: the qh3 engine translates it.
"""

from __future__ import annotations

import abc
import copy
import enum
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
from aioquic.h3.connection import FrameType, H3Connection, H3Stream, MessageError
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState

from ._config import QUIC_ENGINES
from ._headers import Headers
from ._logs import LogLimiter

#: Stream IDs of one kind (client-initiated bidirectional) are 4 apart (RFC 9000 2.1).
_STREAM_ID_STEP = 4


class EventKind(enum.Enum):
    """What the binding does with a QUIC or HTTP/3 event, whichever engine made it."""

    CID_ISSUED = enum.auto()
    CID_RETIRED = enum.auto()
    HANDSHAKE_DONE = enum.auto()
    TERMINATED = enum.auto()
    STREAM_RESET = enum.auto()
    STOP_SENDING = enum.auto()
    HEADERS = enum.auto()
    DATA = enum.auto()
    MALFORMED = enum.auto()


class QuicLike(Protocol):
    """The part of a QUIC connection's public API the binding uses (aioquic's and qh3's
    ``QuicConnection`` both have it)."""

    @property
    def host_cid(self) -> bytes:
        """The connection ID the peer addresses us by."""

    def connect(self, addr: Any, now: float) -> None:
        """Client: start the handshake towards ``addr``."""

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """Feed one UDP datagram."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """Every datagram ready to go, with its address."""

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run."""

    def handle_timer(self, now: float) -> None:
        """Run the connection's timers."""

    def next_event(self) -> Any:
        """The next QUIC event, or None."""

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        """The ID the next locally opened stream gets."""

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abort sending on a stream (RESET_STREAM)."""

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending on a stream (STOP_SENDING)."""

    def close(
        self, error_code: int = 0, frame_type: int | None = None, reason_phrase: str = ""
    ) -> None:
        """Close the connection (CONNECTION_CLOSE)."""


class H3Like(Protocol):
    """The part of an HTTP/3 connection's public API the binding uses."""

    def handle_event(self, event: Any) -> list[Any]:
        """HTTP/3 events for one QUIC event."""

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool = False) -> None:
        """Send a HEADERS frame."""

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send a DATA frame."""


@attrs.frozen
class MalformedRequest(H3Event):
    """A request stream carried something the HTTP/3 layer refused (a malformed header
    field, a frame larger than allowed): a stream error for that request only (RFC 9114
    4.1.2)."""

    stream_id: int
    reason: str


class H3Guard:
    """The bounds RIPP promises on a server's request streams (protocol 19.4), kept by the
    guarded HTTP/3 connection of either engine.

    * A malformed request becomes a ``MalformedRequest`` event for its stream, instead of
      closing the whole connection and every call on it.
    * A HEADERS frame announcing more than ``max_header_frame`` bytes is refused the same
      way as soon as its length is known, instead of being buffered until it completes.
    * The rest of an abandoned stream is discarded as it arrives.
    """

    def __init__(self, *, max_header_frame: int, abandoned_memory: int) -> None:
        self.max_header_frame = max_header_frame
        self._abandoned_memory = abandoned_memory
        # Abandoned request streams, oldest first; bounded so a peer cannot grow it.
        self._abandoned: dict[int, None] = {}

    def is_abandoned(self, stream_id: int) -> bool:
        """Was ``stream_id`` abandoned (its further data is to be dropped)?"""
        return stream_id in self._abandoned

    def oversized(self, frame_type: int | None, frame_size: int | None) -> str | None:
        """Why a frame in progress must be refused now, or None."""
        if (
            frame_type is not None
            and frame_type != FrameType.DATA
            and frame_size is not None
            and frame_size > self.max_header_frame
        ):
            return f"a {frame_size}-byte frame is too large"
        return None

    def remember(self, stream_id: int) -> None:
        """Drop whatever more arrives on ``stream_id``."""
        self._abandoned[stream_id] = None
        while len(self._abandoned) > self._abandoned_memory:
            del self._abandoned[next(iter(self._abandoned))]


class GuardedH3(Protocol):
    """What the binding asks of a server's guarded HTTP/3 connection, on either engine."""

    def abandon(self, stream_id: int) -> None:
        """Discard whatever more arrives on a request stream we answered and will not
        read, and drop its HTTP/3 state."""

    def buffered(self) -> int:
        """Bytes of HTTP/3 frames received and not yet complete, over all streams."""


class _GuardedH3Connection(H3Connection):
    """aioquic's H3Connection with :class:`H3Guard`'s bounds. It overrides two of
    aioquic's internal methods (aioquic is pinned for that reason; the qh3 engine's twin
    is in :mod:`._qh3`)."""

    def __init__(self, quic: QuicConnection, guard: H3Guard) -> None:
        super().__init__(quic)
        self.guard = guard
        self._server = not quic.configuration.is_client

    def _receive_stream_data(self, event: quic_events.StreamDataReceived) -> list[H3Event]:
        if self.guard.is_abandoned(event.stream_id):
            return []
        return super()._receive_stream_data(event)

    def _receive_request_or_push_data(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[H3Event]:
        try:
            events = super()._receive_request_or_push_data(stream, data, stream_ended)
        except MessageError as exc:
            if not self._server:
                raise
            return [self._abandon(stream, exc.reason_phrase)]
        reason = self.guard.oversized(stream.frame_type, stream.frame_size)
        if reason is not None:
            events.append(self._abandon(stream, reason))
        return events

    def _abandon(self, stream: H3Stream, reason: str) -> MalformedRequest:
        stream.buffer = b""
        stream.frame_type = stream.frame_size = None
        self.guard.remember(stream.stream_id)
        return MalformedRequest(stream.stream_id, reason)

    def abandon(self, stream_id: int) -> None:
        """Discard whatever more arrives on ``stream_id`` and drop its HTTP/3 state."""
        self.guard.remember(stream_id)
        self._stream.pop(stream_id, None)

    def buffered(self) -> int:
        """Bytes of HTTP/3 frames received and not yet complete, over all streams."""
        return sum(len(stream.buffer) for stream in self._stream.values())


class QuicEngine(abc.ABC):
    """One QUIC + HTTP/3 implementation behind the HTTP/3 binding, made from the
    endpoint's aioquic ``QuicConfiguration``."""

    #: The ``RippConfig.quic_engine`` name.
    name: str
    #: Event class -> what the binding does with it (QUIC and HTTP/3 events).
    kinds: Mapping[type, EventKind]
    #: Bidirectional streams a peer may open at once when the engine cannot raise it
    #: (None: ``max_streams_per_connection`` is honoured).
    fixed_stream_limit: int | None = None
    #: A server answers every Initial without a token with a Retry (stateless address
    #: validation), so that connections start with the client's address validated.
    retry_always: bool = False

    @abc.abstractmethod
    def client(self, server_name: str, *, stream_limit: int) -> QuicLike:
        """A client connection to ``server_name`` allowing the peer ``stream_limit``
        bidirectional streams (where the engine can)."""

    @abc.abstractmethod
    def server(
        self,
        *,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None,
        stream_limit: int,
    ) -> QuicLike:
        """A server connection for a client's first Initial."""

    @abc.abstractmethod
    def h3(self, quic: QuicLike, guard: H3Guard | None) -> H3Like:
        """The HTTP/3 connection over ``quic``; with ``guard``, one that keeps its bounds
        (and is also a :class:`GuardedH3`)."""

    @abc.abstractmethod
    def rtt(self, quic: QuicLike) -> float | None:
        """QUIC's smoothed RTT estimate, or None before the first sample."""

    @abc.abstractmethod
    def stream_credit(self, quic: QuicLike) -> int:
        """Client: request streams the peer lets us open now (after the handshake)."""

    @abc.abstractmethod
    def buffered_bytes(self, quic: QuicLike) -> int:
        """Received QUIC stream bytes held out of order (not yet given to HTTP/3) that
        the engine's flow control does not already bound."""

    @abc.abstractmethod
    def is_first_flight(self, quic: QuicLike) -> bool:
        """True while no packet from the peer has been decrypted."""


class AioquicEngine(QuicEngine):
    """aioquic 1.7, the default engine (pure Python)."""

    name = "aioquic"
    kinds: Mapping[type, EventKind] = {
        quic_events.ConnectionIdIssued: EventKind.CID_ISSUED,
        quic_events.ConnectionIdRetired: EventKind.CID_RETIRED,
        quic_events.HandshakeCompleted: EventKind.HANDSHAKE_DONE,
        quic_events.ConnectionTerminated: EventKind.TERMINATED,
        quic_events.StreamReset: EventKind.STREAM_RESET,
        quic_events.StopSendingReceived: EventKind.STOP_SENDING,
        HeadersReceived: EventKind.HEADERS,
        DataReceived: EventKind.DATA,
        MalformedRequest: EventKind.MALFORMED,
    }

    def __init__(self, configuration: QuicConfiguration) -> None:
        self._configuration = configuration

    def client(self, server_name: str, *, stream_limit: int) -> QuicLike:
        """See :meth:`QuicEngine.client`."""
        configuration = copy.copy(self._configuration)
        configuration.server_name = server_name
        quic = QuicConnection(configuration=configuration)
        _raise_stream_limit(quic, stream_limit)
        return quic

    def server(
        self,
        *,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None,
        stream_limit: int,
    ) -> QuicLike:
        """See :meth:`QuicEngine.server`."""
        quic = QuicConnection(
            configuration=self._configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        _raise_stream_limit(quic, stream_limit)
        return quic

    def h3(self, quic: QuicLike, guard: H3Guard | None) -> H3Like:
        """See :meth:`QuicEngine.h3`."""
        assert isinstance(quic, QuicConnection)
        return H3Connection(quic) if guard is None else _GuardedH3Connection(quic, guard)

    def rtt(self, quic: QuicLike) -> float | None:
        """See :meth:`QuicEngine.rtt`."""
        assert isinstance(quic, QuicConnection)
        recovery = quic._loss  # aioquic keeps its estimator private
        if recovery._rtt_initialized:
            return float(recovery._rtt_smoothed)
        return None

    def stream_credit(self, quic: QuicLike) -> int:
        """See :meth:`QuicEngine.stream_credit`."""
        assert isinstance(quic, QuicConnection)
        # aioquic publishes neither the peer's MAX_STREAMS nor a count of open streams.
        limit = quic._remote_max_streams_bidi
        return limit - quic.get_next_available_stream_id() // _STREAM_ID_STEP

    def buffered_bytes(self, quic: QuicLike) -> int:
        """See :meth:`QuicEngine.buffered_bytes`."""
        assert isinstance(quic, QuicConnection)
        # aioquic raises its flow-control windows as data arrives, so they bound nothing:
        # count what its stream receivers hold (no public accessor).
        return sum(len(stream.receiver._buffer) for stream in quic._streams.values())

    def is_first_flight(self, quic: QuicLike) -> bool:
        """See :meth:`QuicEngine.is_first_flight`."""
        assert isinstance(quic, QuicConnection)
        # aioquic leaves FIRSTFLIGHT on the first packet it decrypts; not public.
        return quic._state is QuicConnectionState.FIRSTFLIGHT


def _raise_stream_limit(quic: QuicConnection, limit: int) -> None:
    # aioquic fixes the peer's bidirectional stream allowance at 128 and offers no
    # setting; media striping needs more, so we raise the limit before the handshake
    # advertises it (aioquic is pinned to versions where this attribute exists).
    quic._local_max_streams_bidi.value = max(quic._local_max_streams_bidi.value, limit)


class EngineUnavailable(RuntimeError):
    """The configured QUIC engine is not installed (``pip install ripp[qh3]``)."""


def quic_engine(
    name: str, configuration: QuicConfiguration, failure_log: LogLimiter | None = None
) -> QuicEngine:
    """The engine called ``name`` (one of ``QUIC_ENGINES``) for ``configuration``;
    ``failure_log`` rate-limits what an engine logs about a connection that failed inside
    it (qh3's native core)."""
    if name == "aioquic":
        return AioquicEngine(configuration)
    if name == "qh3":
        try:
            from ._qh3 import Qh3Engine
        except ImportError as exc:
            raise EngineUnavailable(
                f"quic_engine='qh3' needs the qh3 package (pip install 'ripp[qh3]'): {exc}"
            ) from exc
        return Qh3Engine(configuration, failure_log)
    raise ValueError(f"unknown QUIC engine {name!r} (one of {', '.join(QUIC_ENGINES)})")
