"""OAuth 2.0 JWT access tokens (RFC 9068) checked against a JWKS, sans-IO (R13).

:func:`verify_access_token` runs the checks of docs/protocol.md ("Access tokens") in that
order, one function per check; each failure raises :class:`InvalidToken` (401,
``WWW-Authenticate: Bearer error="invalid_token"``) or :class:`InsufficientScope` (403,
``error="insufficient_scope"``), naming the check. The principal of a valid token is its
``sub`` (or ``client_id`` for a client-credentials token without one).

The JWS signature is checked by PyJWT (``jwt.PyJWS``) with an algorithm allow-list of
ES256, RS256 and EdDSA, and the key's type must fit the algorithm, so ``none`` and HMAC
(where a public key would be used as the shared secret) can never pass. PyJWT's own claim
checks are not used: they read the system clock, and the core takes ``now`` from its
caller. ``now`` here is POSIX time (seconds since the epoch), unlike the driver clock.

:class:`JwksCache` is the key set's state machine: it says when the set needs fetching
(never loaded, too old, or a token named a ``kid`` it does not hold) and never asks more
often than ``min_refresh_interval``; the fetching itself happens outside the core.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import jwt
from jwt.exceptions import InvalidSignatureError, PyJWKError, PyJWKSetError, PyJWTError

from ._errors import H3_EXCESSIVE_LOAD, Forbidden, RemoteProtocolError, Unauthorized

#: JWS algorithms accepted for access tokens, each with the JWK key type it needs.
TOKEN_ALGORITHMS: Mapping[str, str] = {"ES256": "EC", "RS256": "RSA", "EdDSA": "OKP"}


class InvalidToken(Unauthorized):
    """The access token failed a check (HTTP 401, RFC 6750 ``invalid_token``)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(
            f"access token: {check}: {message}",
            challenge=f'Bearer realm="ripp", error="invalid_token", '
            f'error_description="{check} failed"',
        )
        self.check = check
        """The name of the check that failed (e.g. ``token_issuer``)."""


class InsufficientScope(Forbidden):
    """The token is valid but lacks the scope the request needs (HTTP 403, RFC 6750
    ``insufficient_scope``)."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"access token: token_scope: scope {scope!r} is required",
            challenge=f'Bearer realm="ripp", error="insufficient_scope", scope="{scope}"',
        )
        self.check = "token_scope"
        """The name of the check that failed."""
        self.scope = scope
        """The scope the request needs."""


class KeySetUnavailable(RemoteProtocolError):
    """The issuer's key set has never been loaded (unreachable, or not a JWKS): no token
    can be checked, which is the server's trouble, not the client's (HTTP 503 with
    ``Retry-After``, not 401)."""

    http_status = 503
    stream_error = H3_EXCESSIVE_LOAD
    sip_code = 503


@attrs.frozen
class TokenPolicy:
    """What a server requires of access tokens (its settings, documented in
    docs/protocol.md "Access tokens")."""

    issuer: str
    """The only accepted ``iss``."""
    audience: str
    """The ``aud`` a token must name (a string equal to it, or a list containing it)."""
    required_scope: str = "ripp:call"
    """The scope (RFC 8693 ``scope`` claim, space-separated) needed to create a call."""
    max_clock_skew: float = 60.0
    """Seconds of disagreement tolerated between our clock and the issuer's."""
    max_token_bytes: int = 8192
    """Longer bearer tokens are refused before any parsing."""
    algorithms: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
    """Accepted JWS algorithms; only those of :data:`TOKEN_ALGORITHMS` may be named."""

    def __attrs_post_init__(self) -> None:
        unknown = set(self.algorithms) - set(TOKEN_ALGORITHMS)
        if unknown:
            raise ValueError(f"unsupported token algorithms {sorted(unknown)}")


@attrs.frozen
class TokenGrant:
    """What a valid access token says."""

    principal: str
    """``sub``, or ``client_id`` when the token has no ``sub``."""
    scopes: frozenset[str]
    """The token's scopes."""
    expires: float
    """``exp`` (POSIX seconds)."""
    claims: Mapping[str, Any]
    """Every claim, as decoded."""


KeyLookup = Callable[[str | None], "jwt.PyJWK | None"]
"""Given a token's ``kid`` (or None), the key to verify it with, or None if unknown."""


# ---------------------------------------------------------------- the checks, in order
def check_token_size(token: str, policy: TokenPolicy) -> None:
    """1. The token is no longer than ``max_token_bytes``."""
    if len(token) > policy.max_token_bytes:
        raise InvalidToken("token_size", f"{len(token)} bytes")


def check_token_header(token: str) -> dict[str, Any]:
    """2. The token is a compact JWS whose header decodes; returns the header."""
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError as exc:
        raise InvalidToken("token_header", f"not a JWS: {exc}") from None
    return header


def check_token_type(header: Mapping[str, Any]) -> None:
    """3. ``typ`` is ``at+jwt`` (RFC 9068 section 2.1), so an ID token or another JWT
    cannot be replayed as an access token."""
    typ = str(header.get("typ", "")).lower()
    if typ not in ("at+jwt", "application/at+jwt"):
        raise InvalidToken("token_type", f"typ {typ!r} is not at+jwt")


def check_token_algorithm(header: Mapping[str, Any], policy: TokenPolicy) -> str:
    """4. ``alg`` is on the allow-list: never ``none``, never HMAC."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise InvalidToken("token_algorithm", f"alg {alg!r} is not accepted")
    return alg


def check_token_key(header: Mapping[str, Any], alg: str, keys: KeyLookup) -> jwt.PyJWK:
    """5. The JWKS holds the key the header names (``kid``), of the type ``alg`` needs."""
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("token_key", "kid is not a string")
    key = keys(kid)
    if key is None:
        raise InvalidToken("token_key", f"no key {kid!r} in the issuer's key set")
    if key.key_type != TOKEN_ALGORITHMS[alg]:
        raise InvalidToken("token_key", f"key {kid!r} is {key.key_type}, {alg} needs "
                           f"{TOKEN_ALGORITHMS[alg]}")
    return key


def check_token_signature(token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
    """6. The signature verifies with that key; returns the claims."""
    try:
        decoded = jwt.PyJWS().decode_complete(token, key.key, algorithms=[alg])
        claims = json.loads(decoded["payload"])
    except InvalidSignatureError:
        raise InvalidToken("token_signature", "signature does not verify") from None
    except (PyJWTError, ValueError) as exc:
        raise InvalidToken("token_signature", str(exc)) from None
    if not isinstance(claims, dict):
        raise InvalidToken("token_signature", "the payload is not a JSON object")
    return claims


def check_token_issuer(claims: Mapping[str, Any], policy: TokenPolicy) -> None:
    """7. ``iss`` is the configured issuer."""
    if claims.get("iss") != policy.issuer:
        raise InvalidToken("token_issuer", f"iss {claims.get('iss')!r} is not ours")


def check_token_audience(claims: Mapping[str, Any], policy: TokenPolicy) -> None:
    """8. ``aud`` names this server."""
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if policy.audience not in audiences:
        raise InvalidToken("token_audience", f"aud {aud!r} does not name {policy.audience!r}")


def check_token_times(claims: Mapping[str, Any], policy: TokenPolicy, now: float) -> float:
    """9. ``exp`` is present and not past, ``nbf`` and ``iat`` not in the future, each
    within ``max_clock_skew``; returns ``exp``."""
    skew = policy.max_clock_skew
    values: dict[str, float] = {}
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidToken("token_times", f"{name} is not a number")
        values[name] = float(value)
    if "exp" not in values:
        raise InvalidToken("token_times", "exp is missing")
    if values["exp"] + skew <= now:
        raise InvalidToken("token_times", "the token has expired")
    if values.get("nbf", now) - skew > now:
        raise InvalidToken("token_times", "the token is not valid yet (nbf)")
    if values.get("iat", now) - skew > now:
        raise InvalidToken("token_times", "the token was issued in the future (iat)")
    return values["exp"]


def check_token_subject(claims: Mapping[str, Any]) -> str:
    """10. The token names a principal: ``sub``, else ``client_id``."""
    for name in ("sub", "client_id"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    raise InvalidToken("token_subject", "neither sub nor client_id")


def check_token_scope(scopes: frozenset[str], policy: TokenPolicy, creates_call: bool) -> None:
    """11. A call-creation request needs ``required_scope`` (403 otherwise)."""
    if creates_call and policy.required_scope not in scopes:
        raise InsufficientScope(policy.required_scope)


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes of a token: its ``scope`` string split on spaces (RFC 9068 2.2.3)."""
    scope = claims.get("scope", "")
    return frozenset(scope.split()) if isinstance(scope, str) else frozenset()


def verify_access_token(
    token: str, keys: KeyLookup, policy: TokenPolicy, now: float, *, creates_call: bool
) -> TokenGrant:
    """Run every check on ``token`` in the documented order; return the grant, or raise
    :class:`InvalidToken` / :class:`InsufficientScope`. ``now`` is POSIX time."""
    check_token_size(token, policy)
    header = check_token_header(token)
    check_token_type(header)
    alg = check_token_algorithm(header, policy)
    key = check_token_key(header, alg, keys)
    claims = check_token_signature(token, key, alg)
    check_token_issuer(claims, policy)
    check_token_audience(claims, policy)
    expires = check_token_times(claims, policy, now)
    principal = check_token_subject(claims)
    scopes = token_scopes(claims)
    check_token_scope(scopes, policy, creates_call)
    return TokenGrant(principal=principal, scopes=scopes, expires=expires, claims=claims)


def token_key_id(token: str) -> str | None:
    """The ``kid`` of a token's header, or None (also for a token that does not parse)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


# ---------------------------------------------------------------- the key set
def parse_jwks(document: bytes | str | Mapping[str, Any]) -> dict[str | None, jwt.PyJWK]:
    """The public keys of a JWKS document by ``kid``, keeping only key types a token
    algorithm may use (symmetric ``oct`` keys are dropped: tokens are never HMAC).

    Raises ValueError for a document that is not a JWKS.
    """
    try:
        data = json.loads(document) if isinstance(document, bytes | str) else dict(document)
    except ValueError as exc:
        raise ValueError(f"JWKS is not JSON: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("JWKS has no 'keys' list")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in TOKEN_ALGORITHMS.values():
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (PyJWKError, PyJWKSetError, ValueError, TypeError):
            continue  # a key we cannot use is skipped, as RFC 7517 section 5 allows
        keys[key.key_id] = key
    return keys


class JwksState(enum.Enum):
    """Where a :class:`JwksCache` stands."""

    EMPTY = "empty"
    """Never loaded: every lookup waits for a fetch."""
    FRESH = "fresh"
    """Loaded and younger than ``max_age``."""
    STALE = "stale"
    """Loaded, but too old or missing a wanted ``kid``: refresh when allowed."""


class JwksInput(enum.Enum):
    """What happens to a :class:`JwksCache`."""

    LOADED = "loaded"
    FAILED = "failed"
    UNKNOWN_KID = "unknown kid"
    AGED = "aged"


#: (state, input) -> new state. A failed fetch keeps the keys it had (an issuer briefly
#: unreachable must not lock everyone out) and stays due for a retry.
JWKS_TRANSITIONS: Mapping[tuple[JwksState, JwksInput], JwksState] = {
    (JwksState.EMPTY, JwksInput.LOADED): JwksState.FRESH,
    (JwksState.EMPTY, JwksInput.FAILED): JwksState.EMPTY,
    (JwksState.EMPTY, JwksInput.UNKNOWN_KID): JwksState.EMPTY,
    (JwksState.EMPTY, JwksInput.AGED): JwksState.EMPTY,
    (JwksState.FRESH, JwksInput.LOADED): JwksState.FRESH,
    (JwksState.FRESH, JwksInput.FAILED): JwksState.STALE,
    (JwksState.FRESH, JwksInput.UNKNOWN_KID): JwksState.STALE,
    (JwksState.FRESH, JwksInput.AGED): JwksState.STALE,
    (JwksState.STALE, JwksInput.LOADED): JwksState.FRESH,
    (JwksState.STALE, JwksInput.FAILED): JwksState.STALE,
    (JwksState.STALE, JwksInput.UNKNOWN_KID): JwksState.STALE,
    (JwksState.STALE, JwksInput.AGED): JwksState.STALE,
}


@attrs.frozen
class JwksPolicy:
    """Limits of a :class:`JwksCache` (documented in docs/protocol.md "Access tokens")."""

    max_age: float = 3600.0
    """A key set older than this is fetched again."""
    min_refresh_interval: float = 30.0
    """Never fetch more often than this, however many unknown ``kid`` values arrive (a
    flood of made-up ``kid`` values must not become a flood of fetches)."""


class JwksCache:
    """The issuer's key set and when it needs fetching (sans-IO: the caller fetches)."""

    def __init__(self, policy: JwksPolicy | None = None) -> None:
        self.policy = policy or JwksPolicy()
        self.state = JwksState.EMPTY
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None

    def _feed(self, event: JwksInput) -> None:
        self.state = JWKS_TRANSITIONS[(self.state, event)]

    def lookup(self, kid: str | None, now: float) -> jwt.PyJWK | None:
        """The key ``kid`` (None: the only key, if the set has one), or None; an unknown
        ``kid`` marks the set stale so that :meth:`wants_refresh` says so."""
        self._age(now)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(kid) if kid is not None else None
        if key is None:
            self._feed(JwksInput.UNKNOWN_KID)
        return key

    def _age(self, now: float) -> None:
        if self._loaded_at is not None and now - self._loaded_at >= self.policy.max_age:
            self._feed(JwksInput.AGED)

    def wants_refresh(self, now: float) -> bool:
        """True when a fetch is due and allowed now (rate-bounded)."""
        self._age(now)
        if self.state is JwksState.FRESH:
            return False
        last = self._attempted_at
        return last is None or now - last >= self.policy.min_refresh_interval

    def fetching(self, now: float) -> None:
        """The caller starts a fetch (counts against the refresh rate)."""
        self._attempted_at = now

    def loaded(self, document: bytes | str | Mapping[str, Any], now: float) -> None:
        """A fetch returned ``document``; raises ValueError (and counts as failed) if it
        is not a usable JWKS."""
        self._attempted_at = now
        try:
            keys = parse_jwks(document)
        except ValueError:
            self._feed(JwksInput.FAILED)
            raise
        self._keys = keys
        self._loaded_at = now
        self._feed(JwksInput.LOADED)

    def failed(self, now: float) -> None:
        """A fetch failed; the old keys stay in use."""
        self._attempted_at = now
        self._feed(JwksInput.FAILED)

    @property
    def key_ids(self) -> tuple[str | None, ...]:
        """The ``kid`` of every key held."""
        return tuple(self._keys)


__all__ = [
    "JWKS_TRANSITIONS",
    "TOKEN_ALGORITHMS",
    "InsufficientScope",
    "InvalidToken",
    "JwksCache",
    "JwksInput",
    "JwksPolicy",
    "JwksState",
    "KeyLookup",
    "KeySetUnavailable",
    "TokenGrant",
    "TokenPolicy",
    "parse_jwks",
    "token_key_id",
    "verify_access_token",
]
