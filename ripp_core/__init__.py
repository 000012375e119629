"""ripp_core: the sans-IO core of RIPP, the Real Time Internet Peering Protocol.

Bytes, events and a caller-supplied ``now`` go in; events and bytes come out. Nothing here
opens a socket, reads a clock, starts a thread or imports an event loop. The HTTP/3 endpoints,
:class:`RippClient` and :class:`RippServer`, follow aioquic's own contract::

    endpoint.receive_datagram(data, addr, now)
    for data, addr in endpoint.datagrams_to_send(now): ...
    endpoint.get_timer() / endpoint.handle_timer(now)
    while (event := endpoint.next_event()) is not None: ...

The HTTP/2 endpoints, :class:`RippH2Client` and :class:`RippH2Server`, follow its
byte-stream counterpart (``receive_data`` / ``data_to_send`` / ``connection_lost``), for
the leg behind HTTP load balancers.

See ``docs/protocol.md`` for the protocol and ``docs/architecture.md`` for the layout.
"""

from ._auth import (
    UNVERIFIED,
    Authorizer,
    AuthRequest,
    IdentityCheck,
    IdentityVerifier,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
    principal_of_token,
)
from ._call import Call, CallHandoff, CallRequest, CallTransport
from ._codecs import ALLOWED_DURATION_UNITS, MEDIA_CLOCK_RATE, Codec
from ._config import RippConfig
from ._errors import (
    BadDuration,
    BadRequest,
    BufferOverflow,
    CallHandedOver,
    ChecksTimedOut,
    Forbidden,
    FrameError,
    FrameTooLarge,
    IdentityRequired,
    InvalidIdentity,
    LocalBadRequest,
    LocalFrameError,
    LocalInvalidIdentity,
    LocalProtocolError,
    LocalStateError,
    MessageError,
    MethodNotAllowed,
    NoSuchCall,
    Overloaded,
    RemoteProtocolError,
    RemoteStateError,
    RippError,
    StateError,
    TooManyCalls,
    TooManyStreams,
    Unauthorized,
    UnknownCall,
    UnknownCodec,
    UnsupportedMediaType,
)
from ._events import (
    CallAttached,
    CallCreated,
    CallIncoming,
    CallMigrating,
    CallStateChanged,
    CallTerminated,
    ChecksRequested,
    ConnectionClosed,
    DtmfReceived,
    Event,
    MarkReached,
    MediaGap,
    MediaPlayout,
    MediaReceived,
    MigrationPhase,
    ProtocolViolation,
    Termination,
)
from ._frames import AckFrame, FrameDecoder, FrameType, MediaFrame, SignalFrame
from ._h2 import RippH2Client, RippH2Server
from ._h3 import RippClient, RippServer
from ._headers import NameAddr, ReestablishMarker, parse_name_addr
from ._messages import Answer, Message, Move, Pending, Ringing, Streams, Terminate
from ._quality import CODEC_IMPAIRMENT, CodecImpairment, mos_estimate, mos_from_r, r_factor
from ._router import (
    AudioItem,
    CallEnded,
    CallInbox,
    CallMovedAway,
    EventRouter,
    drain,
    is_tls_failure,
)
from ._state import TRANSITIONS, CallState, Role
from ._stats import CallStats, ReceiverStats, SenderStats
from ._striping import required_streams, streams_for

__all__ = [
    "ALLOWED_DURATION_UNITS",
    "CODEC_IMPAIRMENT",
    "MEDIA_CLOCK_RATE",
    "TRANSITIONS",
    "UNVERIFIED",
    "AckFrame",
    "Answer",
    "AudioItem",
    "AuthRequest",
    "Authorizer",
    "BadDuration",
    "BadRequest",
    "BufferOverflow",
    "Call",
    "CallAttached",
    "CallCreated",
    "CallEnded",
    "CallHandedOver",
    "CallHandoff",
    "CallInbox",
    "CallIncoming",
    "CallMigrating",
    "CallMovedAway",
    "CallRequest",
    "CallState",
    "CallStateChanged",
    "CallStats",
    "CallTerminated",
    "CallTransport",
    "ChecksRequested",
    "ChecksTimedOut",
    "Codec",
    "CodecImpairment",
    "ConnectionClosed",
    "DtmfReceived",
    "Event",
    "EventRouter",
    "Forbidden",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "FrameType",
    "IdentityCheck",
    "IdentityRequired",
    "IdentityVerifier",
    "InvalidIdentity",
    "LocalBadRequest",
    "LocalFrameError",
    "LocalInvalidIdentity",
    "LocalProtocolError",
    "LocalStateError",
    "MarkReached",
    "MediaFrame",
    "MediaGap",
    "MediaPlayout",
    "MediaReceived",
    "Message",
    "MessageError",
    "MethodNotAllowed",
    "MigrationPhase",
    "Move",
    "NameAddr",
    "NoSuchCall",
    "Overloaded",
    "Pending",
    "ProtocolViolation",
    "ReceiverStats",
    "ReestablishMarker",
    "RemoteProtocolError",
    "RemoteStateError",
    "Ringing",
    "RippClient",
    "RippConfig",
    "RippError",
    "RippH2Client",
    "RippH2Server",
    "RippServer",
    "Role",
    "SenderStats",
    "SignalFrame",
    "StateError",
    "Streams",
    "Terminate",
    "Termination",
    "TooManyCalls",
    "TooManyStreams",
    "Unauthorized",
    "UnknownCall",
    "UnknownCodec",
    "UnsupportedMediaType",
    "drain",
    "insecure_accept_any_bearer",
    "insecure_accept_any_identity",
    "is_tls_failure",
    "mos_estimate",
    "mos_from_r",
    "parse_name_addr",
    "principal_of_token",
    "r_factor",
    "required_streams",
    "streams_for",
]
