"""Events the SIP endpoint reports; frozen, so an event cannot change after the fact.

``call`` is the endpoint's handle for the call (the key of :attr:`SipEndpoint.calls`).
"""

from __future__ import annotations

import attrs

from ._message import SipRequest, SipResponse

Address = tuple[str, int]


@attrs.frozen
class SipEvent:
    """Base class of every SIP endpoint event."""

    call: str


@attrs.frozen
class InviteReceived(SipEvent):
    """A new INVITE (out of dialog). 100 Trying has been sent already."""

    request: SipRequest
    source: Address


@attrs.frozen
class ReinviteReceived(SipEvent):
    """A re-INVITE or UPDATE in a dialog; answer it with :meth:`SipEndpoint.respond_to`.

    RIPP has no equivalent (§21.2), so the gateway answers on its own.
    """

    transaction: str
    request: SipRequest


@attrs.frozen
class CancelReceived(SipEvent):
    """The INVITE was cancelled; 200 (CANCEL) and 487 (INVITE) have been sent."""


@attrs.frozen
class AckReceived(SipEvent):
    """The ACK for our 2xx arrived: the dialog is confirmed."""


@attrs.frozen
class ByeReceived(SipEvent):
    """The peer hung up; 200 has been sent."""

    request: SipRequest


@attrs.frozen
class ResponseReceived(SipEvent):
    """A response to our INVITE (provisional or final). 2xx have been ACKed already."""

    response: SipResponse


@attrs.frozen
class CallFailed(SipEvent):
    """The call ended without a response to tell: a timeout (408) or transport error
    (503), no ACK for our 2xx, or the session timer expired (RFC 4028 §10)."""

    status: int
    reason: str
