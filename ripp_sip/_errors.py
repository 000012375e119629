"""The error family of the SIP core.

Every error carries the SIP status code to answer with (``sip_code``), so a driver needs no
protocol knowledge to refuse a request correctly (RFC 3261 §8.2 and §21).
"""

from __future__ import annotations

from typing import ClassVar


class SipError(Exception):
    """Base class of every error raised by :mod:`ripp_sip`."""

    sip_code: ClassVar[int] = 500
    """SIP status code to answer a request with, where one can still be answered."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalSipError(SipError):
    """Our own user asked for something SIP does not allow (bad state, bad argument)."""


class SipParseError(SipError):
    """A SIP message could not be parsed (RFC 3261 §25 grammar, RFC 4475 cases)."""

    sip_code = 400


class MissingHeader(SipParseError):
    """A header field that RFC 3261 §8.1.1 requires in every request is missing."""


class TooManyHops(SipError):
    """Max-Forwards reached zero (RFC 3261 §16.3 step 3)."""

    sip_code = 483


class UnsupportedExtension(SipError):
    """The request requires an extension we do not support (RFC 3261 §8.2.2.3)."""

    sip_code = 420


class NoSuchTransaction(SipError):
    """A CANCEL or in-dialog request matches no transaction or dialog (RFC 3261 §9.2)."""

    sip_code = 481


class SdpError(SipError):
    """An SDP body could not be parsed (RFC 4566)."""

    sip_code = 400


class NotAcceptable(SipError):
    """The SDP offer has no codec we can use (RFC 3264 §6: 488 Not Acceptable Here)."""

    sip_code = 488


class RtpError(SipError):
    """An RTP or RTCP packet could not be parsed (RFC 3550)."""


class DigestError(SipError):
    """A digest challenge could not be answered (RFC 8760: unknown algorithm or qop)."""

    sip_code = 401
