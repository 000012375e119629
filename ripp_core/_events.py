"""Events the RIPP core hands to its user through ``next_event()``.

All events are frozen attrs classes. ``call`` is the endpoint-local handle of the call (a
short string chosen by the endpoint); ``uri`` fields are the call URIs on the wire.
"""

from __future__ import annotations

import enum

import attrs

from ._auth import UNVERIFIED, AuthRequest, IdentityCheck
from ._frames import MediaFrame
from ._headers import NameAddr
from ._state import CallState
from ._stats import CallStats


class Event:
    """Base class of every RIPP event."""


@attrs.frozen
class CallIncoming(Event):
    """Server: a call was created by a client (R1). Ring, answer or reject it.

    ``reestablishes`` is the earlier call URI when this is an ungraceful re-establishment
    (R10) of a call this instance does not own; the application reconnects it to its next
    hop. ``state`` is then the state the call had reached (else CREATED).
    """

    call: str
    uri: str
    to: NameAddr
    from_: NameAddr
    identity: str
    headers: tuple[tuple[str, str], ...]
    state: CallState = CallState.CREATED
    reestablishes: str | None = None
    principal: str = ""
    """Who created the call: the authorizer's answer for the request's bearer token. The
    call is bound to it (no other principal can reach the call)."""
    identity_check: IdentityCheck = UNVERIFIED
    """What verifying the Identity header found (R14): verified or not, attestation, why."""
    next_hop: bytes | None = None
    """For a re-establishment this instance claimed from the call store (protocol 24):
    the next-hop data the previous owner's application stored (possibly empty); None
    when the call was not resumed from a store."""


@attrs.frozen
class ChecksRequested(Event):
    """Server with ``deferred_checks``: a request awaits authorization.

    Run the authorizer on ``request`` (and, for a call creation, the identity verifier on
    ``identity`` with the request's To and From), then call ``complete_checks(ticket, ...)``
    or ``fail_checks(ticket, error, ...)``. Unanswered tickets expire after
    ``check_timeout`` with 503.
    """

    ticket: int
    request: AuthRequest
    identity: str | None
    """The Identity header value of a call-creation request, None for other requests."""


@attrs.frozen
class CallCreated(Event):
    """Client: the server created the call and gave it ``uri``."""

    call: str
    uri: str


@attrs.frozen
class CallStateChanged(Event):
    """The call moved to ``state`` (R3)."""

    call: str
    state: CallState
    previous: CallState


class Termination(enum.Enum):
    """Who or what ended a call."""

    LOCAL = "local"
    """Our user terminated it."""
    REMOTE = "remote"
    """The peer sent Terminate (or refused the call request)."""
    FAILURE = "failure"
    """A timer ran out or the protocol broke; the code says which."""


@attrs.frozen
class CallTerminated(Event):
    """The call is over, with a SIP-style ``code`` and ``reason`` (R3, R8)."""

    call: str
    code: int
    reason: str
    by: Termination
    stats: CallStats | None = None
    """The call's media statistics as it ended (for a final report, e.g. an RTCP BYE)."""


@attrs.frozen
class MediaReceived(Event):
    """A new (not duplicate) media frame arrived; ``arrival`` is the ``now`` it came in.

    Emitted when the jitter buffer is off (``RippConfig.jitter_buffer`` False), for users
    with their own playout (for example a gateway re-packetizing to RTP).
    """

    call: str
    frame: MediaFrame
    arrival: float


@attrs.frozen
class MediaPlayout(Event):
    """The jitter buffer releases ``frame`` for playout now (R23); it arrived at ``arrival``
    (so a caller can tell network delay from jitter-buffer delay)."""

    call: str
    frame: MediaFrame
    arrival: float = 0.0


@attrs.frozen
class MediaGap(Event):
    """The jitter buffer's playout reached a frame that never came: conceal it.

    ``duration`` is the whole gap; ``frames`` > 1 when a run of missing frames whose
    playout time had already passed is reported at once (``sequence`` is the first).
    """

    call: str
    sequence: int
    duration: float
    frames: int = 1


@attrs.frozen
class DtmfReceived(Event):
    """A DTMF digit ended at the far end (R19); reported on arrival of its End frame."""

    call: str
    digit: str
    duration: float
    volume: int


@attrs.frozen
class MarkReached(Event):
    """Every frame sent before mark ``name`` has been acknowledged by the far end (R23).

    ``dropped`` counts frames before the mark that were given up (cleared or expired)
    rather than acknowledged.
    """

    call: str
    name: str
    dropped: int = 0


class MigrationPhase(enum.Enum):
    """Where a call stands with respect to migration (R9, R10)."""

    ATTACHED = "attached"
    """Signaling channel up; media flows."""
    MOVING = "moving"
    """A move is under way; media is buffered."""
    DETACHED = "detached"
    """Server: the client vanished; the call waits to be re-attached."""
    REESTABLISHING = "reestablishing"
    """Client: the path or server failed; the call is being re-established."""
    MOVED_AWAY = "moved-away"
    """This instance handed the call over to another; it only drains its streams."""


@attrs.frozen
class CallMigrating(Event):
    """The call entered a migration phase; ``reason`` says why, ``uri`` where to."""

    call: str
    phase: MigrationPhase
    reason: str
    uri: str | None = None


@attrs.frozen
class CallAttached(Event):
    """The call's signaling channel is (again) up at ``uri``; buffered media flows."""

    call: str
    uri: str
    migrated: bool


@attrs.frozen
class ProtocolViolation(Event):
    """The peer broke the protocol; what was sent in reply is in ``status``/``stream_error``.

    ``call`` is None when the offence could not be tied to a call. The call itself (and
    every other call) carries on unless ``fatal_to_call`` is set.
    """

    call: str | None
    error: str
    message: str
    status: int | None
    stream_error: int | None
    fatal_to_call: bool = False


@attrs.frozen
class ConnectionClosed(Event):
    """A QUIC connection of this endpoint closed."""

    peer: tuple[str, int]
    error_code: int
    reason: str
