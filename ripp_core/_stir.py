"""STIR/SHAKEN verification of a call's Identity header, sans-IO (R14).

RFC 8224 carries a PASSporT (RFC 8225) with the SHAKEN extension (RFC 8588) in the
Identity header: ``<compact JWS>;info=<x5u URL>;alg=ES256;ppt=shaken``. Verifying it takes
two steps with a fetch between them, which the caller does (ripp_auth):

1. :func:`inspect_identity` runs every check that needs nothing but the header, To, From
   and ``now``, and returns the :class:`Passport` (with the ``x5u`` to fetch);
2. :func:`verify_passport` runs the checks that need the fetched certificate chain.

Each check is one function, run in the order docs/protocol.md ("Caller identity") lists;
each raises a :class:`StirError` subclass that names the check and carries the SIP code of
RFC 8224: 436 Bad Identity Info (the ``info``/``x5u`` reference or what it returned),
437 Unsupported Credential (an algorithm or credential we do not accept, or a certificate
that does not chain to a trust anchor), 438 Invalid Identity Header (signature or claims).

The chain is validated by ``cryptography.x509.verification`` against the configured trust
anchors; the TNAuthList (RFC 8226) is decoded with pyasn1-modules' ``rfc8226``; the JWS by
PyJWT with ES256 only. ``now`` is POSIX time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from jwt.exceptions import InvalidSignatureError, PyJWTError
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc8226

from ._auth import IdentityCheck
from ._errors import InvalidIdentity
from ._headers import NameAddr

#: The TNAuthList certificate extension (RFC 8226 section 9).
TN_AUTH_LIST_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")
_ATTESTATIONS = ("A", "B", "C")


class StirError(InvalidIdentity):
    """An Identity header failed a check; ``check`` names it (docs/protocol.md)."""

    sip_code: ClassVar[int] = 438
    reason_phrase: ClassVar[str] = "Invalid Identity Header"

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        """The name of the failed check, e.g. ``passport_iat``."""
        self.passport: Passport | None = None
        """The PASSporT's claims when the failure came after they were read (so that
        an accept-and-mark policy can still report the attestation)."""


class BadIdentityInfo(StirError):
    """SIP 436 Bad Identity Info: the ``info``/``x5u`` reference is unusable, or what it
    returned is not a certificate chain (including a fetch that failed or was too big)."""

    sip_code = 436
    reason_phrase = "Bad Identity Info"


class UnsupportedCredential(StirError):
    """SIP 437 Unsupported Credential: an algorithm, PASSporT type or certificate we do
    not accept (untrusted, expired, wrong key type, unknown critical extension)."""

    sip_code = 437
    reason_phrase = "Unsupported Credential"


class InvalidIdentityHeader(StirError):
    """SIP 438 Invalid Identity Header: bad signature, or claims that do not hold (stale
    ``iat``, ``orig``/``dest`` not matching From/To, number not covered)."""

    sip_code = 438
    reason_phrase = "Invalid Identity Header"


@attrs.frozen
class StirPolicy:
    """What a verifier accepts (its settings, documented in docs/protocol.md)."""

    freshness: float = 60.0
    """Seconds an ``iat`` may lie from ``now`` (RFC 8224 section 9.1 suggests 60)."""
    accept_spc: bool = True
    """Whether a TNAuthList naming a Service Provider Code covers any ``orig`` (SHAKEN
    certificates name the SPC, not numbers; the SPC is the carrier's accountability)."""
    max_chain_depth: int = 4
    """The longest certificate chain accepted (intermediates plus leaf)."""
    max_identity_bytes: int = 8192
    """Longer Identity header values are refused before any parsing."""


@attrs.frozen
class Passport:
    """A PASSporT that passed the checks needing no certificate."""

    token: str
    """The compact JWS."""
    x5u: str
    """Where its signer's certificate chain is (``https:``)."""
    attest: str
    """SHAKEN attestation: A, B or C."""
    orig: str
    """The originating telephone number (canonical digits)."""
    dest: tuple[str, ...]
    """The destination numbers (canonical digits)."""
    origid: str
    """The SHAKEN origination identifier."""
    iat: int
    """When it was signed (POSIX seconds)."""

    def check(self, verified: bool, reason: str, sip_code: int | None = None) -> IdentityCheck:
        """The :class:`IdentityCheck` to hand to the application."""
        return IdentityCheck(
            verified=verified,
            attestation=self.attest,
            orig=self.orig,
            dest=self.dest,
            origid=self.origid,
            reason=reason,
            sip_code=sip_code,
        )


def canonical_tn(value: str) -> str:
    """A telephone number reduced to its digits (RFC 8224 section 8.3: drop visual
    separators and the leading ``+``); ``*`` and ``#`` are kept."""
    return "".join(ch for ch in value if ch.isdigit() or ch in "*#")


def tn_of_uri(uri: str) -> str | None:
    """The canonical number of a ``tel:`` URI, or of a ``sip:``/``sips:`` URI whose user
    part is a number (``+`` followed by digits, or ``user=phone``); None otherwise."""
    uri = uri.strip().strip("<>")
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        number = rest.split(";")[0]
    elif scheme in ("sip", "sips"):
        user = rest.split("@")[0] if "@" in rest else ""
        number = user.split(";")[0]
        if not (number.startswith("+") or "user=phone" in rest.lower()):
            return None
    else:
        return None
    digits = canonical_tn(number)
    return digits or None


# ---------------------------------------------------------------- checks without I/O
_PARAM = re.compile(r"\s*([A-Za-z0-9_.!%*+`'~-]+)\s*=\s*(<[^>]*>|\"[^\"]*\"|[^;\s]*)\s*")


def check_identity_header(value: str, policy: StirPolicy) -> tuple[str, dict[str, str]]:
    """1. The Identity header parses (RFC 8224 section 4.1): a compact JWS, then
    ``info`` (an ``https:`` URI in angle brackets), ``alg`` and ``ppt`` parameters.
    Returns the JWS and the parameters (``info`` without its brackets)."""
    if len(value) > policy.max_identity_bytes:
        raise InvalidIdentityHeader("identity_header", f"{len(value)} bytes")
    token, _, tail = value.strip().partition(";")
    if token.count(".") != 2 or not token.replace(".", "").replace("-", "").replace(
        "_", ""
    ).isalnum():
        raise InvalidIdentityHeader("identity_header", "not a compact JWS")
    params: dict[str, str] = {}
    for part in tail.split(";") if tail else []:
        match = _PARAM.fullmatch(part)
        if match is None:
            raise InvalidIdentityHeader("identity_header", f"bad parameter {part[:40]!r}")
        params[match.group(1).lower()] = match.group(2).strip('"')
    info = params.get("info", "")
    if not (info.startswith("<") and info.endswith(">")):
        raise BadIdentityInfo("identity_info", "no info=<URI> parameter")
    params["info"] = info[1:-1]
    if not params["info"].lower().startswith("https://"):
        raise BadIdentityInfo("identity_info", f"info {params['info'][:80]!r} is not https")
    if params.get("alg", "ES256") != "ES256":
        raise UnsupportedCredential("identity_alg", f"alg={params['alg'][:20]!r}")
    if params.get("ppt", "shaken") != "shaken":
        raise UnsupportedCredential("identity_ppt", f"ppt={params['ppt'][:20]!r}")
    return token, params


def check_passport_header(token: str, params: Mapping[str, str]) -> str:
    """2. The PASSporT header (RFC 8225 section 4, RFC 8588): ``typ`` ``passport``,
    ``ppt`` ``shaken``, ``alg`` ES256 (437 otherwise: never ``none`` or HMAC), and an
    ``x5u`` equal to the header's ``info`` (436 otherwise). Returns the ``x5u``."""
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError as exc:
        raise InvalidIdentityHeader("passport_header", f"does not decode: {exc}") from None
    if header.get("typ") != "passport":
        raise InvalidIdentityHeader("passport_header", f"typ {header.get('typ')!r}")
    if header.get("ppt") != "shaken":
        raise UnsupportedCredential("passport_ppt", f"ppt {header.get('ppt')!r}")
    if header.get("alg") != "ES256":
        raise UnsupportedCredential("passport_alg", f"alg {header.get('alg')!r} (ES256 only)")
    x5u = header.get("x5u")
    if not isinstance(x5u, str) or x5u != params["info"]:
        raise BadIdentityInfo("passport_x5u", "x5u is missing or differs from info")
    return x5u


def check_passport_claims(token: str, x5u: str) -> Passport:
    """3. The claims are well formed (RFC 8225 section 5, RFC 8588 section 4): ``attest``
    A/B/C, ``orig.tn``, ``dest.tn`` (a non-empty list), integer ``iat``, ``origid``."""
    try:
        payload = jwt.PyJWS().decode_complete(token, options={"verify_signature": False})
        claims = json.loads(payload["payload"])
    except (PyJWTError, ValueError) as exc:
        raise InvalidIdentityHeader("passport_claims", f"payload: {exc}") from None
    if not isinstance(claims, dict):
        raise InvalidIdentityHeader("passport_claims", "payload is not an object")
    attest = claims.get("attest")
    orig = claims.get("orig")
    dest = claims.get("dest")
    iat = claims.get("iat")
    origid = claims.get("origid")
    if attest not in _ATTESTATIONS:
        raise InvalidIdentityHeader("passport_claims", f"attest {attest!r}")
    if not isinstance(orig, dict) or not isinstance(orig.get("tn"), str):
        raise InvalidIdentityHeader("passport_claims", "orig.tn is missing")
    tns = dest.get("tn") if isinstance(dest, dict) else None
    if not isinstance(tns, list) or not tns or not all(isinstance(t, str) for t in tns):
        raise InvalidIdentityHeader("passport_claims", "dest.tn is missing")
    if isinstance(iat, bool) or not isinstance(iat, int):
        raise InvalidIdentityHeader("passport_claims", "iat is not an integer")
    if not isinstance(origid, str) or not origid:
        raise InvalidIdentityHeader("passport_claims", "origid is missing")
    return Passport(
        token=token,
        x5u=x5u,
        attest=attest,
        orig=canonical_tn(orig["tn"]),
        dest=tuple(canonical_tn(t) for t in tns),
        origid=origid,
        iat=iat,
    )


def check_iat_fresh(passport: Passport, policy: StirPolicy, now: float) -> None:
    """4. ``iat`` lies within ``freshness`` of ``now`` (RFC 8224 section 9.1), so a
    captured PASSporT cannot be replayed later."""
    if abs(now - passport.iat) > policy.freshness:
        raise InvalidIdentityHeader(
            "passport_iat", f"iat is {now - passport.iat:+.0f} s from now (stale)"
        )


def check_orig_matches_from(passport: Passport, from_: NameAddr) -> None:
    """5. ``orig`` is the number in From (RFC 8224 section 6.2 step 2)."""
    if tn_of_uri(from_.uri) != passport.orig:
        raise InvalidIdentityHeader("passport_orig", "orig does not match From")


def check_dest_matches_to(passport: Passport, to: NameAddr) -> None:
    """6. ``dest`` names the number in To."""
    if tn_of_uri(to.uri) not in passport.dest:
        raise InvalidIdentityHeader("passport_dest", "dest does not match To")


def inspect_identity(
    value: str, to: NameAddr, from_: NameAddr, policy: StirPolicy, now: float
) -> Passport:
    """Checks 1-6 (no I/O): return the PASSporT whose ``x5u`` the caller must fetch."""
    token, params = check_identity_header(value, policy)
    x5u = check_passport_header(token, params)
    passport = check_passport_claims(token, x5u)
    try:
        check_iat_fresh(passport, policy, now)
        check_orig_matches_from(passport, from_)
        check_dest_matches_to(passport, to)
    except StirError as exc:
        exc.passport = passport
        raise
    return passport


# ---------------------------------------------------------------- checks on the certificate
def check_certificate_chain(pem: bytes) -> list[x509.Certificate]:
    """7. What ``x5u`` returned is a PEM chain, leaf first (RFC 8224 section 6.2.3)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise BadIdentityInfo("x5u_content", f"not a PEM certificate chain: {exc}") from None
    return certs


def _key_usage_signs(policy: Any, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.digital_signature:
        raise ValueError("key usage lacks digitalSignature")


def check_certificate_trusted(
    certs: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    policy: StirPolicy,
    now: float,
) -> x509.Certificate:
    """8. The leaf chains to a trust anchor, each certificate valid at ``now``
    (``cryptography.x509.verification``). The leaf may carry any non-critical extension
    (it has no subjectAltName, unlike a web certificate); an unknown *critical* one,
    a critical TNAuthList included, makes the validator refuse it, as RFC 5280 requires.
    Returns the leaf."""
    if not anchors:
        raise UnsupportedCredential("certificate_trust", "no STIR trust anchors configured")
    if len(certs) > policy.max_chain_depth:
        raise UnsupportedCredential("certificate_trust", f"{len(certs)} certificates")
    leaf_policy = ExtensionPolicy.permit_all().may_be_present(
        x509.KeyUsage, Criticality.AGNOSTIC, _key_usage_signs
    )
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(datetime.fromtimestamp(now, UTC))
        .max_chain_depth(policy.max_chain_depth)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_client_verifier()
    )
    try:
        verifier.verify(certs[0], list(certs[1:]))
    except VerificationError as exc:
        raise UnsupportedCredential("certificate_trust", str(exc)[:200]) from None
    return certs[0]


def check_signature(passport: Passport, leaf: x509.Certificate) -> None:
    """9. The PASSporT's ES256 signature verifies with the leaf's P-256 key."""
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise UnsupportedCredential("passport_signature", "the certificate key is not P-256")
    try:
        jwt.PyJWS().decode_complete(passport.token, key, algorithms=["ES256"])
    except InvalidSignatureError:
        raise InvalidIdentityHeader("passport_signature", "signature does not verify") from None
    except PyJWTError as exc:
        raise InvalidIdentityHeader("passport_signature", str(exc)) from None


def tn_auth_list(cert: x509.Certificate) -> list[tuple[str, str, int]]:
    """The TNAuthList entries of ``cert`` as ``("spc", code, 0)``, ``("tn", number, 1)``
    or ``("range", start, count)``; raises ValueError if it has none or it does not
    decode."""
    try:
        ext = cert.extensions.get_extension_for_oid(TN_AUTH_LIST_OID)
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no TNAuthList") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ValueError("unexpected TNAuthList representation")
    try:
        decoded, rest = der_decoder.decode(value.value, asn1Spec=rfc8226.TNAuthorizationList())
    except PyAsn1Error as exc:
        raise ValueError(f"TNAuthList does not decode: {exc}") from None
    if rest:
        raise ValueError("trailing bytes after the TNAuthList")
    entries: list[tuple[str, str, int]] = []
    for entry in decoded:
        name = entry.getName()
        item = entry.getComponent()
        if name == "spc":
            entries.append(("spc", str(item), 0))
        elif name == "one":
            entries.append(("tn", canonical_tn(str(item)), 1))
        elif name == "range":
            entries.append(("range", canonical_tn(str(item["start"])), int(item["count"])))
    return entries


def _in_range(number: str, start: str, count: int) -> bool:
    # RFC 8226 section 9: a range is numbers of the same length as start, from start on.
    if len(number) != len(start) or not number.isdigit() or not start.isdigit():
        return False
    return 0 <= int(number) - int(start) < count


def check_tn_covered(passport: Passport, leaf: x509.Certificate, policy: StirPolicy) -> str:
    """10. The leaf's TNAuthList (RFC 8226) covers ``orig``: names it, a range holding
    it, or (with ``accept_spc``) a Service Provider Code. Returns what covered it."""
    try:
        entries = tn_auth_list(leaf)
    except ValueError as exc:
        raise UnsupportedCredential("tn_authorized", str(exc)) from None
    for kind, value, count in entries:
        if kind == "tn" and value == passport.orig:
            return f"TN {value}"
        if kind == "range" and _in_range(passport.orig, value, count):
            return f"TN range {value}+{count}"
    for kind, value, _ in entries:
        if kind == "spc" and policy.accept_spc:
            return f"SPC {value}"
    raise InvalidIdentityHeader("tn_authorized", f"orig {passport.orig} is not covered")


def verify_passport(
    passport: Passport,
    chain_pem: bytes,
    anchors: Sequence[x509.Certificate],
    policy: StirPolicy,
    now: float,
) -> IdentityCheck:
    """Checks 7-10 on the chain fetched from ``passport.x5u``; return the verified
    :class:`IdentityCheck` or raise the failed check's :class:`StirError`."""
    try:
        certs = check_certificate_chain(chain_pem)
        leaf = check_certificate_trusted(certs, anchors, policy, now)
        check_signature(passport, leaf)
        covered = check_tn_covered(passport, leaf, policy)
    except StirError as exc:
        exc.passport = passport
        raise
    return passport.check(True, f"verified (attestation {passport.attest}, {covered})")


def verify_identity(
    value: str,
    to: NameAddr,
    from_: NameAddr,
    fetch: Callable[[str], bytes],
    anchors: Sequence[x509.Certificate],
    policy: StirPolicy,
    now: float,
) -> IdentityCheck:
    """All ten checks, with ``fetch(x5u)`` supplying the chain synchronously (for tests
    and for callers that hold the chain already; servers use ripp_auth's async one)."""
    passport = inspect_identity(value, to, from_, policy, now)
    return verify_passport(passport, fetch(passport.x5u), anchors, policy, now)


__all__ = [
    "TN_AUTH_LIST_OID",
    "BadIdentityInfo",
    "InvalidIdentityHeader",
    "Passport",
    "StirError",
    "StirPolicy",
    "UnsupportedCredential",
    "canonical_tn",
    "inspect_identity",
    "tn_auth_list",
    "tn_of_uri",
    "verify_identity",
    "verify_passport",
]
