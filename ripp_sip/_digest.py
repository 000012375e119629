"""HTTP digest authentication for SIP requests (RFC 3261 §22, RFC 7616, RFC 8760).

RFC 8760 adds SHA-256 and SHA-512/256 to SIP digest; trunks commonly offer SHA-256 and
MD5 side by side. We answer the strongest challenge we support, with ``qop=auth`` when
offered (``auth-int`` is not supported).
"""

from __future__ import annotations

import hashlib

import attrs

from ._errors import DigestError
from ._message import split_list

#: Supported algorithms, strongest first (RFC 8760 §2.5: prefer the strongest offered).
ALGORITHMS = {"SHA-512-256": "sha512_256", "SHA-256": "sha256", "MD5": "md5"}


@attrs.frozen
class Credentials:
    """A username and password for one trunk."""

    username: str
    password: str


@attrs.frozen
class Challenge:
    """A parsed ``Digest`` challenge from WWW-Authenticate or Proxy-Authenticate."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_challenge(value: str) -> Challenge:
    """Parse ``Digest realm="x", nonce="y", ...``; raise :class:`DigestError` otherwise."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme!r}")
    params: dict[str, str] = {}
    for item in split_list(rest):
        name, _, val = item.partition("=")
        params[name.strip().lower()] = _unquote(val)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"),
                     params.get("stale", "").lower() == "true")


def best_challenge(values: list[str]) -> Challenge:
    """The challenge to answer among several (RFC 8760 §2.4): the strongest we support."""
    parsed = []
    for value in values:
        try:
            challenge = parse_challenge(value)
        except DigestError:
            continue
        if challenge.algorithm in ALGORITHMS:
            parsed.append(challenge)
    if not parsed:
        raise DigestError(f"no supported Digest challenge in {values!r}")
    order = list(ALGORITHMS)
    return min(parsed, key=lambda c: order.index(c.algorithm))


def _hash(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode()).hexdigest()


def authorization(challenge: Challenge, credentials: Credentials, *, method: str, uri: str,
                  cnonce: str, nonce_count: int = 1) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge``."""
    if challenge.algorithm not in ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {challenge.algorithm}")
    algo = challenge.algorithm
    ha1 = _hash(algo, f"{credentials.username}:{challenge.realm}:{credentials.password}")
    ha2 = _hash(algo, f"{method}:{uri}")
    parts = [f'username="{credentials.username}"', f'realm="{challenge.realm}"',
             f'nonce="{challenge.nonce}"', f'uri="{uri}"']
    if "auth" in challenge.qop:
        nc = f"{nonce_count:08x}"
        response = _hash(algo, f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', f"algorithm={algo}", f'cnonce="{cnonce}"',
                  "qop=auth", f"nc={nc}"]
    elif challenge.qop:
        raise DigestError(f"unsupported qop {challenge.qop!r} (only auth)")
    else:
        response = _hash(algo, f"{ha1}:{challenge.nonce}:{ha2}")
        parts += [f'response="{response}"', f"algorithm={algo}"]
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)


def verify(header: str, credentials: Credentials, *, method: str, realm: str,
           nonce: str) -> bool:
    """Check an Authorization value (used by tests acting as a trunk, and by a UAS)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return False
    params = {}
    for item in split_list(rest):
        name, _, val = item.partition("=")
        params[name.strip().lower()] = _unquote(val)
    algo = params.get("algorithm", "MD5").upper()
    if algo not in ALGORITHMS or params.get("nonce") != nonce or params.get("realm") != realm:
        return False
    challenge = Challenge(realm, nonce, algo, ("auth",) if params.get("qop") else ())
    expected = authorization(challenge, credentials, method=method, uri=params.get("uri", ""),
                             cnonce=params.get("cnonce", ""),
                             nonce_count=int(params.get("nc", "1"), 16))
    return f'response="{params.get("response")}"' in expected
