"""Who sent a request, and whether its caller ID is vouched for (R13, R14).

The server core asks two hooks about every request before it acts on it:

* an **authorizer** sees the whole request (:class:`AuthRequest`: method, path, every
  header field, the bearer token, the call the path names, the re-establishment marker,
  the peer) and ``now``, and returns the request's *principal*: the name the token stands
  for. A call is bound to the principal that created it; every later request on its URI,
  and every re-establishment of it, must come from the same principal (docs/protocol.md,
  "Call ownership").
* an **identity verifier** sees a call-creation request's Identity header with its To and
  From, and returns an :class:`IdentityCheck` (verified or not, the attestation, why not).

Both may refuse by raising a :class:`~ripp_core.RippError` subclass (Unauthorized 401,
Forbidden 403, InvalidIdentity 438...), whose wire form the binding sends.

The hooks here are synchronous: they run inside the sans-IO core. Hooks that must do I/O
(fetch a JWKS or an ``x5u`` certificate) run in the driver instead: the server is then
created with ``deferred_checks=True``, parks each request and emits
:class:`~ripp_core.ChecksRequested`; the driver runs the async hooks and reports back with
``RippServer.complete_checks`` or ``RippServer.fail_checks``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import attrs

from ._headers import NameAddr, ReestablishMarker


@attrs.frozen
class AuthRequest:
    """What the server knows about one request when it decides who sent it."""

    method: str
    """The request method (RIPP uses only POST)."""
    path: str
    """The ``:path`` of the request."""
    authority: str
    """The ``:authority`` of the request."""
    headers: tuple[tuple[str, str], ...]
    """Every header field as received, names lower-cased, pseudo-header fields included."""
    token: str
    """The bearer token of the ``Authorization`` field (never empty)."""
    call: str | None
    """The handle of the call the path names, or None for a call-creation request."""
    reestablish: ReestablishMarker | None = None
    """The ``Ripp-Reestablish`` marker of a creation request that re-establishes a call."""
    peer: tuple[str, int] | None = None
    """The transport address the request came from, where the binding knows it."""

    def header(self, name: str) -> str | None:
        """The value of header field ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def creates_call(self) -> bool:
        """True for a request to the top-level calls URI (creation or re-establishment)."""
        return self.call is None


@attrs.frozen
class IdentityCheck:
    """What verifying a call's Identity header found (R14), handed to the application
    with the incoming call (``CallIncoming.identity_check``)."""

    verified: bool
    """True when the PASSporT's signature, certificate and claims all checked out."""
    attestation: str | None = None
    """The SHAKEN attestation level (``A``, ``B`` or ``C``) the PASSporT claims."""
    orig: str | None = None
    """The originating telephone number (or URI) the PASSporT asserts."""
    dest: tuple[str, ...] = ()
    """The destination numbers (or URIs) the PASSporT names."""
    origid: str | None = None
    """The SHAKEN origination identifier."""
    reason: str = ""
    """Why the check failed, or what was (not) checked."""
    sip_code: int | None = None
    """The SIP code of the failure (436, 437, 438...), None when verified."""


#: The identity check the accept-any verifier reports: nothing was verified.
UNVERIFIED = IdentityCheck(verified=False, reason="not verified (no verifier configured)")

#: Authorization hook: return the principal, or raise Unauthorized (401) / Forbidden (403).
Authorizer = Callable[[AuthRequest, float], str]
#: Identity hook: given the Identity header value, To, From and ``now``, return what was
#: verified, or raise InvalidIdentity and kin to refuse the call (R14).
IdentityVerifier = Callable[[str, NameAddr, NameAddr, float], IdentityCheck]


def principal_of_token(token: str) -> str:
    """A stable principal name for an opaque token: ``token:`` and a digest of it.

    Used where tokens are not validated: two different tokens are two principals, and the
    token itself never appears in a log line or event.
    """
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def insecure_accept_any_bearer(request: AuthRequest, now: float) -> str:
    """INSECURE authorizer: accepts any non-empty bearer token without validating it.

    Each distinct token is its own principal (:func:`principal_of_token`), so calls stay
    bound to the token that created them. For tests and local experiments only.
    """
    return principal_of_token(request.token)


def insecure_accept_any_identity(
    identity: str, to: NameAddr, from_: NameAddr, now: float
) -> IdentityCheck:
    """INSECURE identity verifier: accepts any syntactically valid Identity header and
    reports it as not verified. For tests and local experiments only."""
    return UNVERIFIED


__all__ = [
    "UNVERIFIED",
    "AuthRequest",
    "Authorizer",
    "IdentityCheck",
    "IdentityVerifier",
    "insecure_accept_any_bearer",
    "insecure_accept_any_identity",
    "principal_of_token",
]
