"""The qh3 engine: qh3 2.x (a native QUIC core under aioquic's API) behind the binding.

Imported only when ``RippConfig.quic_engine`` is ``"qh3"`` (``pip install 'ripp[qh3]'``).
What it reads that qh3 does not publish, and why (docs/performance.md, "QUIC engines"):

* ``QuicConnection._core`` for the smoothed RTT and "has any packet decrypted": the native
  core publishes both as properties, the Python facade does not pass them on.
* ``QuicConnection._close_event``, to tell a write that races the connection's closing
  (which the core refuses) from a failure.
* The guarded HTTP/3 connection overrides the same two internal methods of qh3's
  ``H3Connection`` (a port of aioquic's) as the aioquic engine's does.

qh3 fixes the peer's bidirectional stream allowance at 100 (``fixed_stream_limit``): a
client of a qh3 server sees that in its stream credit and spreads calls accordingly.

Where qh3's HTTP/3 layer is laxer than aioquic's, the guarded connection makes up for it
so that a hostile request costs the same on either engine (found by the hostile-peer
suite run against a qh3 server, docs/hostile.md):

* qh3 raises ``FieldSectionTooLarge`` for a HEADERS frame past its own limit (about
  1 MB), which its ``handle_event`` turns into closing the whole connection and every
  call on it; the guard makes it a stream error, as for a malformed request.
* qh3 skips the field checks of RFC 9114 4.2 that aioquic makes (whitespace around a
  value, NUL/CR/LF, characters of a name, connection-specific fields, ``content-length``,
  ``te``): :func:`field_error` makes them, and such a request is a stream error too.
* qh3's QPACK decoder fails a field section whose names or values are not UTF-8 (valid
  QPACK: field values may carry any octet but NUL/CR/LF) and closes the connection with
  QPACK_DECOMPRESSION_FAILED; aioquic decodes it and ripp refuses the request with 400.
  A guarded (server) connection therefore offers its peer no QPACK dynamic table
  (QPACK_MAX_TABLE_CAPACITY 0, as RFC 9204 allows): every field section then decodes on
  its own, so one that only qh3's decoder refuses (:func:`decodes_statelessly`) is made a
  stream error (400) as well, and a section that fails for any other reason stays a
  connection error (RFC 9204 2.2.3), as on aioquic. It also spares each connection a
  64 KB table of the peer's making; request headers come a few times per call, so the
  compression lost is small.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import pylsqpack
from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives import serialization
from qh3._hazmat import QpackDecoder
from qh3.h3.connection import (
    FieldSectionTooLarge,
    H3Connection,
    H3Stream,
    MessageError,
    QpackDecompressionFailed,
    Setting,
)
from qh3.h3.events import DataReceived, H3Event, Headers, HeadersReceived
from qh3.quic import events as quic_events
from qh3.quic.configuration import QuicConfiguration as Qh3Configuration
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode
from qh3.tls import SignatureAlgorithm

from ._engine import (
    _STREAM_ID_STEP,
    EventKind,
    H3Guard,
    H3Like,
    MalformedRequest,
    QuicEngine,
    QuicLike,
)
from ._logs import LogLimiter

logger = logging.getLogger("ripp.h3")
_T = TypeVar("_T")

#: What a qh3 client accepts from servers: qh3's default list plus Ed25519, which qh3
#: leaves out by default but aioquic accepts (and ripp's test PKI uses); without SHA-1.
CLIENT_SIGNATURE_ALGORITHMS = [
    SignatureAlgorithm.ECDSA_SECP256R1_SHA256,
    SignatureAlgorithm.RSA_PSS_RSAE_SHA256,
    SignatureAlgorithm.ED25519,
    SignatureAlgorithm.RSA_PKCS1_SHA256,
    SignatureAlgorithm.ECDSA_SECP384R1_SHA384,
    SignatureAlgorithm.RSA_PSS_RSAE_SHA384,
    SignatureAlgorithm.RSA_PKCS1_SHA384,
    SignatureAlgorithm.RSA_PSS_RSAE_SHA512,
    SignatureAlgorithm.RSA_PKCS1_SHA512,
]

#: The max_datagram_frame_size a qh3 server advertises (qh3 clients' own default); RIPP
#: sends no DATAGRAM frames, the HTTP/3 layer drops any it gets.
QH3_DATAGRAM_FRAME_SIZE = 65536

#: qh3 2.1 advertises initial_max_streams_bidi=100 and offers no setting for it.
QH3_STREAM_LIMIT = 100


#: Bytes a field name must not contain (RFC 9113 8.2.1, as aioquic checks them): controls,
#: space, upper case, DEL and non-ASCII. A colon is allowed only first (pseudo-fields).
_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]|(?<=.):", re.DOTALL)
#: Bytes a field value must not contain, and what it must not start or end with.
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_EDGE_WHITESPACE = frozenset(b" \t")
#: Fields that belong to one HTTP/1.1 hop and are malformed in HTTP/3 (RFC 9114 4.2).
CONNECTION_SPECIFIC_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


def field_error(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a received field section (request headers or trailers) is malformed by the
    rules of RFC 9114 4.2 / RFC 9113 8.2.1 that aioquic checks and qh3 2.1 does not, or
    None. (qh3 checks pseudo-fields and upper case itself.) The reasons quote at most 16
    bytes of peer input."""
    for name, value in fields:
        if not name or _BAD_NAME.search(name):
            return f"field name {name[:16]!r} has invalid characters"
        if _BAD_VALUE.search(value):
            return f"field {name[:16]!r} value has forbidden characters"
        if value and (value[0] in _EDGE_WHITESPACE or value[-1] in _EDGE_WHITESPACE):
            return f"field {name[:16]!r} value starts or ends with whitespace"
        if name in CONNECTION_SPECIFIC_FIELDS:
            return f"field {name[:16]!r} is connection-specific"
        if name == b"te" and value.lower() != b"trailers":
            return "field b'te' is not trailers"
        if name == b"content-length" and not value.isdigit():
            return "content-length is not a non-negative integer"
    return None


def decodes_statelessly(section: bytes) -> bool:
    """Whether a QPACK field section decodes without any dynamic table state: a valid
    section of static references and literals only (Required Insert Count 0). Its octets
    are not judged (pylsqpack, aioquic's decoder, takes any)."""
    try:
        pylsqpack.Decoder(0, 0).feed_header(0, section)
    except (pylsqpack.DecompressionFailed, pylsqpack.StreamBlocked):
        return False
    return True


#: What qh3 logs at WARNING on its "quic" logger (aioquic's logger name too) for every
#: connection a peer closes and every protocol error of a peer: any peer can cause one such
#: line per connection, and ``ripp serve`` shows warnings. ripp logs each connection's end
#: itself at INFO (``connection to ... closed``), so these are demoted to INFO.
QH3_PER_CONNECTION_WARNINGS = ("Native peer close", "Native protocol error")


class _DemotePerConnectionWarnings(logging.Filter):
    """Turns qh3's per-connection warnings into INFO records (dropped unless INFO is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.WARNING
            and isinstance(record.msg, str)
            and record.msg.startswith(QH3_PER_CONNECTION_WARNINGS)
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def _demote_per_connection_warnings() -> None:
    quic_logger = logging.getLogger("quic")
    if not any(isinstance(f, _DemotePerConnectionWarnings) for f in quic_logger.filters):
        quic_logger.addFilter(_DemotePerConnectionWarnings())


@dataclasses.dataclass(frozen=True)
class Qh3MalformedRequest(H3Event):
    """:class:`~ripp_core._engine.MalformedRequest` as a qh3 HTTP/3 event."""

    stream_id: int
    reason: str


class _GuardedQh3Connection(H3Connection):
    """qh3's H3Connection with :class:`~ripp_core._engine.H3Guard`'s bounds (the twin of
    the aioquic engine's; qh3 is pinned to 2.1.x because it overrides internal methods),
    plus the request checks qh3 leaves out (module docstring)."""

    def __init__(self, quic: QuicConnection, guard: H3Guard) -> None:
        self.guard = guard
        self._server = not quic.configuration.is_client
        super().__init__(quic)  # sends our SETTINGS (_get_local_settings)
        if self._server:
            # nothing has been decoded yet: a decoder without a dynamic table
            self._max_table_capacity = self._blocked_streams = 0
            self._decoder = QpackDecoder(
                0, 0, max_field_section_size=self._max_field_section_size
            )

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        if self._server:
            settings[Setting.QPACK_MAX_TABLE_CAPACITY] = 0
            settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        return settings

    def _receive_stream_data(self, event: quic_events.StreamDataReceived) -> list[H3Event]:
        if self.guard.is_abandoned(event.stream_id):
            return []
        return super()._receive_stream_data(event)

    def _receive_request_or_push_data(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[H3Event]:
        try:
            events = super()._receive_request_or_push_data(stream, data, stream_ended)
        except (MessageError, FieldSectionTooLarge) as exc:
            # qh3 would close the connection for either (both are about one request)
            if not self._server:
                raise
            return [self._abandon(stream, exc.reason_phrase)]
        if self._server:
            for event in events:
                if isinstance(event, HeadersReceived):
                    reason = field_error(event.headers)
                    if reason is not None:
                        # nothing of the request reaches the binding, as with aioquic
                        return [self._abandon(stream, reason)]
        reason = self.guard.oversized(stream.frame_type, stream.frame_size)
        if reason is not None:
            events.append(self._abandon(stream, reason))
        return events

    def _decode_headers(
        self,
        stream_id: int,
        frame_data: bytes | None,
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> Headers:
        try:
            return super()._decode_headers(stream_id, frame_data, offset=offset, length=length)
        except QpackDecompressionFailed:
            # frame_data is None when a blocked section is resumed: that one used the
            # dynamic table, so its failure is the connection's, as qh3 has it.
            if not self._server or frame_data is None:
                raise
            end = None if length is None else offset + length
            if not decodes_statelessly(bytes(frame_data[offset:end])):
                raise
            # only qh3's decoder refused it (octets that are not UTF-8): this request's
            # problem; _receive_request_or_push_data turns it into a stream error
            raise MessageError("a header field qh3 cannot decode (not UTF-8)") from None

    def _abandon(self, stream: H3Stream, reason: str) -> Qh3MalformedRequest:
        stream.buffer.clear()
        stream.frame_type = stream.frame_size = None
        self.guard.remember(stream.stream_id)
        return Qh3MalformedRequest(stream.stream_id, reason)

    def abandon(self, stream_id: int) -> None:
        """Discard whatever more arrives on ``stream_id`` and drop its HTTP/3 state."""
        self.guard.remember(stream_id)
        self._stream.pop(stream_id, None)

    def buffered(self) -> int:
        """Bytes of HTTP/3 frames received and not yet complete, over all streams."""
        return sum(len(stream.buffer) for stream in self._stream.values())


#: The failure log of connections made without an engine (tests); an engine passes the
#: endpoint's, limited by ``RippConfig.log_burst`` / ``log_interval``.
_DEFAULT_FAILURE_LOG = LogLimiter(logger)


class _Qh3Connection(QuicConnection):
    """qh3's QuicConnection that fails alone.

    qh3 turns an error of its native core into a QuicConnectionError raised from
    whichever call met it (``receive_datagram``, ``datagrams_to_send``, ``handle_timer``,
    a stream write), or lets the core's RuntimeError or ValueError through (``get_timer``,
    the core's properties, some ``poll_transmit`` failures), where aioquic closes the
    connection and reports ``ConnectionTerminated``.
    Raised through the binding it would stop the endpoint and every other connection, so
    this one catches it, closes, reports the termination as an event and goes silent.
    """

    failure: QuicConnectionError | None = None
    failure_log = _DEFAULT_FAILURE_LOG
    _now = 0.0  # the latest time a caller passed in: the clock of the failure log line
    _reported = False  # the failure's ConnectionTerminated was handed out
    _flushed = False  # the CONNECTION_CLOSE after a failure was collected (or could not be)

    # The hot calls are written out (no closure per call): they run for every datagram.
    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """See aioquic's ``QuicConnection.receive_datagram``."""
        self._now = now
        if self.failure is None:
            try:
                super().receive_datagram(data, addr, now)
            except Exception as exc:
                self._failed(exc)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """See aioquic's ``QuicConnection.datagrams_to_send``."""
        self._now = now
        if self.failure is None:
            try:
                return super().datagrams_to_send(now)
            except Exception as exc:
                self._failed(exc)
        if not self._flushed:
            self._flushed = True
            with contextlib.suppress(Exception):  # the core may be beyond repair
                return super().datagrams_to_send(now)
        return []

    def get_timer(self) -> float | None:
        """See aioquic's ``QuicConnection.get_timer``."""
        if self.failure is None:
            try:
                return super().get_timer()
            except Exception as exc:
                self._failed(exc)
        return None

    def handle_timer(self, now: float) -> None:
        """See aioquic's ``QuicConnection.handle_timer``."""
        self._now = now
        if self.failure is None:
            try:
                super().handle_timer(now)
            except Exception as exc:
                self._failed(exc)

    def send_stream_data(self, stream_id: int, data: Any, end_stream: bool = False) -> None:
        """See aioquic's ``QuicConnection.send_stream_data`` (dropped once failed, or
        once the connection is closing, as aioquic drops it)."""
        if self.failure is None:
            try:
                super().send_stream_data(stream_id, data, end_stream)
            except Exception as exc:
                if self._close_event is not None:
                    # Closing already (our close, the peer's, or qh3's HTTP/3 layer's for
                    # a peer's protocol error): a write that races it is no failure, and
                    # reporting one would log a warning per such connection.
                    return
                self._failed(exc)

    def next_event(self) -> quic_events.QuicEvent | None:
        """See aioquic's ``QuicConnection.next_event``; after a failure, one
        ``ConnectionTerminated`` and nothing more."""
        if self.failure is None:
            return super().next_event()
        if self._reported:
            return None
        self._reported = True
        return quic_events.ConnectionTerminated(
            error_code=self.failure.error_code,
            frame_type=self.failure.frame_type,
            reason_phrase=self.failure.reason_phrase,
        )

    def guarded(self, operation: Callable[..., _T], otherwise: _T, *args: Any) -> _T:
        """``operation(*args)``, or ``otherwise`` once the connection has failed (now or
        before)."""
        if self.failure is not None:
            return otherwise
        try:
            return operation(*args)
        except Exception as exc:
            self._failed(exc)
        return otherwise

    def _failed(self, exc: Exception) -> None:
        # The native core also raises RuntimeError and ValueError directly (measured:
        # ValueError("reserved stream is missing") from poll_transmit at 200 calls);
        # whatever it is, it concerns this connection only.
        if not isinstance(exc, QuicConnectionError):
            reason = f"{type(exc).__name__}: {exc}"
            exc = QuicConnectionError(QuicErrorCode.INTERNAL_ERROR, None, reason)
        # Rate-limited, all of the engine's connections together (Qh3Engine).
        self.failure_log.log(logging.WARNING, self._now, "qh3 connection failed: %s", exc)
        self.failure = exc
        with contextlib.suppress(Exception):
            # Tell the peer if the core still can; nothing more will be sent.
            self.close(error_code=QuicErrorCode.INTERNAL_ERROR, reason_phrase=str(exc))


def qh3_configuration(configuration: QuicConfiguration) -> Qh3Configuration:
    """qh3's equivalent of an aioquic ``QuicConfiguration`` (TLS identity, trust anchors,
    ALPN, timeouts, flow-control windows, key log). A qlog logger has no qh3 equivalent of
    aioquic's class and is refused rather than silently dropped."""
    if configuration.quic_logger is not None:
        raise ValueError("qlog output (quic_logger) needs quic_engine='aioquic'")
    result = Qh3Configuration(
        alpn_protocols=list(configuration.alpn_protocols or []),
        connection_id_length=configuration.connection_id_length,
        idle_timeout=configuration.idle_timeout,
        is_client=configuration.is_client,
        # qh3 never raises its receive windows beyond these, so they bound what a peer
        # can make us hold out of order (aioquic's do not: see buffered_bytes).
        max_data=configuration.max_data,
        max_stream_data=configuration.max_stream_data,
        # qh3 annotates it as TextIO but its default is None, as in aioquic.
        secrets_log_file=configuration.secrets_log_file,  # type: ignore[arg-type]
        server_name=configuration.server_name,
        cadata=configuration.cadata,
        cafile=configuration.cafile,
        capath=configuration.capath,
        initial_rtt=configuration.initial_rtt,
        max_datagram_frame_size=configuration.max_datagram_frame_size,
        supported_versions=list(configuration.supported_versions),
        verify_mode=configuration.verify_mode,
    )
    if not configuration.is_client and result.max_datagram_frame_size is None:
        # qh3's HTTP/3 layer always sends SETTINGS_H3_DATAGRAM=1, and qh3 clients close
        # the connection when that comes without this transport parameter.
        result.max_datagram_frame_size = QH3_DATAGRAM_FRAME_SIZE
    if configuration.is_client:
        result.signature_algorithms = [int(a) for a in CLIENT_SIGNATURE_ALGORITHMS]
    if configuration.certificate is not None:
        pem = b"".join(
            certificate.public_bytes(serialization.Encoding.PEM)
            for certificate in [configuration.certificate, *configuration.certificate_chain]
        )
        key = configuration.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        result.load_cert_chain(pem, key)
    return result


class Qh3Engine(QuicEngine):
    """qh3 2.1: QUIC in native code, HTTP/3 and TLS glue in Python."""

    name = "qh3"
    kinds: Mapping[type, EventKind] = {
        quic_events.ConnectionIdIssued: EventKind.CID_ISSUED,
        quic_events.ConnectionIdRetired: EventKind.CID_RETIRED,
        quic_events.HandshakeCompleted: EventKind.HANDSHAKE_DONE,
        quic_events.ConnectionTerminated: EventKind.TERMINATED,
        quic_events.StreamReset: EventKind.STREAM_RESET,
        quic_events.StopSendingReceived: EventKind.STOP_SENDING,
        HeadersReceived: EventKind.HEADERS,
        DataReceived: EventKind.DATA,
        Qh3MalformedRequest: EventKind.MALFORMED,
        MalformedRequest: EventKind.MALFORMED,
    }
    fixed_stream_limit = QH3_STREAM_LIMIT
    # qh3 2.1's server fails its first flight to a client whose ClientHello fits one
    # Initial datagram ("packet builder capacity exhausted", docs/performance.md) unless
    # the address is validated, which a Retry does before any state exists.
    retry_always = True

    def __init__(
        self, configuration: QuicConfiguration, failure_log: LogLimiter | None = None
    ) -> None:
        self._configuration = qh3_configuration(configuration)
        # Shared by every connection: a peer that can make qh3's core fail can do it on
        # every connection it opens.
        self._failure_log = failure_log or _DEFAULT_FAILURE_LOG
        _demote_per_connection_warnings()

    def client(self, server_name: str, *, stream_limit: int) -> QuicLike:
        """See :meth:`QuicEngine.client` (``stream_limit`` cannot be honoured)."""
        configuration = dataclasses.replace(self._configuration, server_name=server_name)
        connection = _Qh3Connection(configuration=configuration)
        connection.failure_log = self._failure_log
        return connection

    def server(
        self,
        *,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None,
        stream_limit: int,
    ) -> QuicLike:
        """See :meth:`QuicEngine.server` (``stream_limit`` cannot be honoured)."""
        connection = _Qh3Connection(
            configuration=self._configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        connection.failure_log = self._failure_log
        return connection

    def h3(self, quic: QuicLike, guard: H3Guard | None) -> H3Like:
        """See :meth:`QuicEngine.h3`."""
        assert isinstance(quic, QuicConnection)
        return H3Connection(quic) if guard is None else _GuardedQh3Connection(quic, guard)

    def rtt(self, quic: QuicLike) -> float | None:
        """See :meth:`QuicEngine.rtt`."""
        assert isinstance(quic, _Qh3Connection)

        def read() -> float | None:
            core = quic._core  # the facade does not pass the native core's estimate on
            return None if core is None else core.smoothed_rtt

        return quic.guarded(read, None)

    def stream_credit(self, quic: QuicLike) -> int:
        """See :meth:`QuicEngine.stream_credit`."""
        assert isinstance(quic, _Qh3Connection)

        def read() -> int:
            # max_concurrent_bidi_streams is the peer's cumulative MAX_STREAMS (it grows
            # as streams finish): the credit is what is left of it after those we opened.
            limit = quic.max_concurrent_bidi_streams
            return limit - quic.get_next_available_stream_id() // _STREAM_ID_STEP

        return quic.guarded(read, 0)

    def buffered_bytes(self, quic: QuicLike) -> int:
        """See :meth:`QuicEngine.buffered_bytes`: qh3's receive windows do not grow past
        ``max_data``/``max_stream_data``, so out-of-order data is bounded by them."""
        return 0

    def is_first_flight(self, quic: QuicLike) -> bool:
        """See :meth:`QuicEngine.is_first_flight`."""
        assert isinstance(quic, _Qh3Connection)

        def read() -> bool:
            core = quic._core  # the facade's state stays FIRSTFLIGHT until the handshake
            return core is None or not core.received_authenticated_packet

        return quic.guarded(read, False)
