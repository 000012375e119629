"""The error family of the RIPP core.

Every error carries what goes on the wire for it, so a binding needs no protocol knowledge
to fail correctly: ``http_status`` for a request that can still be answered, and
``stream_error`` (an HTTP/3 application error code) for a stream that must be reset.

``LocalProtocolError`` means our own user asked for something illegal (the call is not
touched); ``RemoteProtocolError`` means the peer broke the protocol.
"""

from __future__ import annotations

from typing import ClassVar

# HTTP/3 error codes (RFC 9114, section 8.1) used for stream resets.
H3_NO_ERROR = 0x100
H3_GENERAL_PROTOCOL_ERROR = 0x101
H3_INTERNAL_ERROR = 0x102
H3_REQUEST_REJECTED = 0x10B
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E
H3_EXCESSIVE_LOAD = 0x107


class RippError(Exception):
    """Base class of every error raised by the RIPP core."""

    http_status: ClassVar[int] = 400
    """HTTP status to answer with, where a request can still be answered."""
    stream_error: ClassVar[int] = H3_MESSAGE_ERROR
    """HTTP/3 error code for resetting the stream that carried the offence."""
    sip_code: ClassVar[int] = 400
    """SIP-style reason code, used in ``ripp-reason`` and Terminate messages."""

    def __init__(self, message: str, *, challenge: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.challenge = challenge
        """For 401/403: the ``WWW-Authenticate`` value to send (RFC 6750 section 3), e.g.
        ``Bearer error="invalid_token"``; None for the plain ``Bearer realm="ripp"``."""


class LocalProtocolError(RippError):
    """Our own user asked for something the protocol does not allow."""


class RemoteProtocolError(RippError):
    """The peer sent something the protocol does not allow."""


# --- framing ---------------------------------------------------------------------------


class FrameError(RemoteProtocolError):
    """A RIPP frame could not be decoded (truncated, malformed, bad field)."""


class FrameTooLarge(FrameError):
    """A frame is longer than the configured maximum."""

    http_status = 413
    sip_code = 513


class UnknownCodec(FrameError):
    """A MEDIA frame names a codec identifier that is not defined."""

    http_status = 415
    sip_code = 415


class BadDuration(FrameError):
    """A MEDIA frame has a duration or payload size its codec does not allow."""


class MessageError(RemoteProtocolError):
    """A signaling message is not valid JSON or misses a required field."""


# --- calls -----------------------------------------------------------------------------


class StateError(RippError):
    """A message is not allowed in the call's current state."""

    http_status = 409
    stream_error = H3_REQUEST_REJECTED
    sip_code = 409


class LocalStateError(StateError, LocalProtocolError):
    """We tried to send a message that the call state does not allow."""


class RemoteStateError(StateError, RemoteProtocolError):
    """The peer sent a message that the call state does not allow."""


class CallHandedOver(LocalStateError):
    """Our user acted on a call this instance has handed over to another (R9)."""


class UnknownCall(RemoteProtocolError):
    """A request names a call URI this endpoint does not know."""

    http_status = 404
    stream_error = H3_REQUEST_REJECTED
    sip_code = 481


class NoSuchCall(LocalProtocolError):
    """Our user named a call that does not exist (or has ended and been forgotten)."""

    http_status = 404
    sip_code = 481


class BadRequest(RemoteProtocolError):
    """A request's method, path, content type or header fields are wrong."""


class MethodNotAllowed(BadRequest):
    """A request used a method other than POST."""

    http_status = 405
    sip_code = 405


class UnsupportedMediaType(BadRequest):
    """A request to a call URI has no or a wrong ``content-type``."""

    http_status = 415
    sip_code = 415


class Unauthorized(RemoteProtocolError):
    """The bearer token is missing or not valid (HTTP 401)."""

    http_status = 401
    stream_error = H3_REQUEST_REJECTED
    sip_code = 401


class Forbidden(RemoteProtocolError):
    """The bearer token is valid but does not allow this request (HTTP 403)."""

    http_status = 403
    stream_error = H3_REQUEST_REJECTED
    sip_code = 403


class IdentityRequired(RemoteProtocolError):
    """A call request carries no Identity header (SIP 428 Use Identity Header)."""

    http_status = 428
    stream_error = H3_REQUEST_REJECTED
    sip_code = 428


class InvalidIdentity(RemoteProtocolError):
    """A call request's Identity header failed verification (SIP 438)."""

    http_status = 403
    stream_error = H3_REQUEST_REJECTED
    sip_code = 438


class TooManyStreams(RemoteProtocolError):
    """A call already has the maximum number of media streams (HTTP 429)."""

    http_status = 429
    stream_error = H3_EXCESSIVE_LOAD
    sip_code = 503


class TooManyCalls(RemoteProtocolError):
    """The endpoint holds its maximum number of calls (HTTP 503)."""

    http_status = 503
    stream_error = H3_EXCESSIVE_LOAD
    sip_code = 503


class Overloaded(RemoteProtocolError):
    """The server is past its capacity and refuses new calls for now (HTTP 503 with
    ``Retry-After``; admission control)."""

    http_status = 503
    stream_error = H3_EXCESSIVE_LOAD
    sip_code = 503


class OwnerAlive(RemoteProtocolError):
    """A re-establishment names a call of another instance that this one may not take
    now: its owner still holds its lease, this instance holds none, or the call store is
    unreachable (protocol 24.4). HTTP 503 with ``Retry-After``: the client tries again,
    and the call becomes claimable when the owner's lease lapses."""

    http_status = 503
    stream_error = H3_REQUEST_REJECTED
    sip_code = 503


class ChecksTimedOut(RemoteProtocolError):
    """Authorization of a request could not be completed in time, or too many requests
    await it (HTTP 503 with ``Retry-After``)."""

    http_status = 503
    stream_error = H3_EXCESSIVE_LOAD
    sip_code = 503


class BufferOverflow(RemoteProtocolError):
    """The peer sent more undecodable bytes on a stream than the configured limit."""

    http_status = 413
    stream_error = H3_EXCESSIVE_LOAD
    sip_code = 513


# --- our own user's bad arguments ------------------------------------------------------
# The checks that refuse a peer's frame or request also refuse our own user's arguments;
# raised for our user, they become these LocalProtocolError subclasses, which carry the
# wire codes of the error a peer would have got for the same thing.


class LocalFrameError(LocalProtocolError):
    """A frame we were asked to send breaks its codec's rules (duration, payload size,
    codec identifier) or the frame size limit: what :class:`FrameError` is for a peer."""


class BadSkip(LocalProtocolError):
    """A media clock skip we were asked for is not a finite duration between 0 and
    ``RippConfig.media_skip_max`` (protocol 9.4), or came while paced audio waits."""


class LocalBadRequest(LocalProtocolError):
    """A call we were asked to place has a malformed ``to``, ``from_`` or header field:
    what :class:`BadRequest` is for a peer."""


class LocalInvalidIdentity(LocalProtocolError):
    """A call we were asked to place has a missing or malformed Identity header: what
    :class:`InvalidIdentity` (SIP 438) is for a peer."""

    http_status = 403
    sip_code = 438


def local_counterpart(exc: RemoteProtocolError) -> LocalProtocolError:
    """The LocalProtocolError to raise when a check shared with the receive path refuses
    our own user's argument (``raise local_counterpart(exc) from exc``)."""
    local: type[LocalProtocolError] = LocalProtocolError
    if isinstance(exc, FrameError):
        local = LocalFrameError
    elif isinstance(exc, BadRequest):
        local = LocalBadRequest
    elif isinstance(exc, InvalidIdentity | IdentityRequired):
        local = LocalInvalidIdentity
    return local(exc.message)
