"""Keys, tokens, STI certificates and PASSporTs for the authentication tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ripp_cli._sti import make_sti_ca, make_sti_cert, sign_passport
from ripp_core import NameAddr

NOW = 1_800_000_000.0
"""The POSIX time the deterministic tests run at."""
ISSUER = "https://issuer.example"
AUDIENCE = "https://ripp.example"
TO = NameAddr(uri="tel:+12125551234")
FROM = NameAddr(uri="tel:+14085551234")
X5U = "https://certs.example/sti.pem"

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@attrs.frozen
class IssuerKey:
    """A token signing key, its kid and algorithm."""

    key: Any
    kid: str
    alg: str

    def jwk(self) -> dict[str, Any]:
        """The public JWK."""
        algorithm = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.key.public_key()))  # type: ignore[attr-defined]
        jwk["kid"] = self.kid
        return jwk


def issuer_key(alg: str = "ES256", kid: str = "k1") -> IssuerKey:
    """A fresh signing key for ``alg``."""
    key: Any
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return IssuerKey(key, kid, alg)


def jwks(*keys: IssuerKey) -> dict[str, Any]:
    """A JWKS document holding ``keys``."""
    return {"keys": [k.jwk() for k in keys]}


def claims(**changes: Any) -> dict[str, Any]:
    """Valid access-token claims at NOW, with ``changes`` (None deletes a claim)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "client_id": "alice-app",
        "scope": "ripp:call other",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 600,
        "jti": "t1",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(key: IssuerKey, payload: dict[str, Any] | None = None, **header: Any) -> str:
    """A signed access token (``typ`` at+jwt unless ``header`` says otherwise)."""
    fields = {"typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(payload or claims(), key.key, algorithm=key.alg, headers=fields)


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (for ``alg: none`` and forged tokens)."""
    def part(data: bytes) -> str:
        return jwt.utils.base64url_encode(data).decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(payload).encode()), part(signature)]
    )


@attrs.frozen
class StiPki:
    """An STI-CA (trust anchor), an STI certificate and its key."""

    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def chain_pem(self) -> bytes:
        """The chain ``x5u`` serves: the leaf."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


def sti_pki(at: float = NOW, **cert_options: Any) -> StiPki:
    """A fresh STI PKI valid at ``at`` (``cert_options`` go to make_sti_cert)."""
    when = datetime.fromtimestamp(at, UTC)
    ca, ca_key = make_sti_ca(when - timedelta(days=1))
    cert, key = make_sti_cert(ca, ca_key, when - timedelta(days=1), **cert_options)
    return StiPki(ca, ca_key, cert, key)


def identity(pki: StiPki, x5u: str = X5U, *, iat: float = NOW, **options: Any) -> str:
    """An Identity header for a call FROM -> TO signed with ``pki``'s STI key."""
    return sign_passport(
        pki.key, x5u, to=options.pop("to", TO.uri), from_=options.pop("from_", FROM.uri),
        iat=int(iat), **options,
    )
