"""The local OAuth issuer: a signing key in the ripp home, its JWKS beside it (R13).

``issuer-key.pem`` (EC P-256, mode 0600) signs RFC 9068 access tokens (``typ`` ``at+jwt``,
ES256) that ``ripp token`` prints and ``ripp call`` uses by default; ``issuer-jwks.json``
is its public key set, which a default ``ripp serve`` trusts. Both are made on first use.
A real deployment points ``ripp serve --jwks`` at its authorization server instead.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from . import _certs

LOCAL_ISSUER = "urn:ripp:local-issuer"
"""The ``iss`` of locally minted tokens (and what a default ``ripp serve`` expects)."""
LOCAL_AUDIENCE = "urn:ripp:local"
"""The ``aud`` of locally minted tokens (and what a default ``ripp serve`` expects)."""
CALL_SCOPE = "ripp:call"
"""The scope a token needs to place calls."""
TOKEN_LIFETIME = 3600
"""Seconds a locally minted token is valid by default."""

_KEY = "issuer-key.pem"
_JWKS = "issuer-jwks.json"


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key`` (RFC 7517), marked for signatures with ``kid``."""
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return jwk


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    # The RFC 7638 thumbprint would do as well; a digest of the public key is stable too.
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return uuid.uuid5(uuid.NAMESPACE_OID, der.hex()).hex[:16]


@attrs.frozen
class LocalIssuer:
    """The local issuer's files and what it mints."""

    directory: Path
    """The ripp home."""
    issuer: str = LOCAL_ISSUER
    """``iss`` of the tokens."""

    @property
    def key_path(self) -> Path:
        """The signing key (mode 0600)."""
        return self.directory / _KEY

    @property
    def jwks_path(self) -> Path:
        """The public key set (``ripp serve --jwks`` default)."""
        return self.directory / _JWKS

    def key(self) -> ec.EllipticCurvePrivateKey:
        """The signing key."""
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path} is not an EC key")
        return key

    def mint(
        self,
        now: float,
        *,
        subject: str = "ripp-cli",
        audience: str = LOCAL_AUDIENCE,
        scope: str = CALL_SCOPE,
        lifetime: float = TOKEN_LIFETIME,
    ) -> str:
        """An RFC 9068 access token for ``subject`` with ``scope``, valid ``lifetime`` s
        from ``now`` (POSIX seconds)."""
        key = self.key()
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "client_id": subject,
            "scope": scope,
            "iat": int(now),
            "exp": int(now + lifetime),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims, key, algorithm="ES256", headers={"typ": "at+jwt", "kid": _kid(key)}
        )


def ensure_local_issuer(directory: Path | None = None) -> LocalIssuer:
    """Create the issuer's key and JWKS on first use; reuse them later."""
    directory = directory or _certs.cert_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    issuer = LocalIssuer(directory)
    with _certs._locked(directory):
        key: ec.EllipticCurvePrivateKey | None = None
        try:
            key = issuer.key()
        except (OSError, ValueError):
            key = ec.generate_private_key(ec.SECP256R1())
            _certs._write_atomic(issuer.key_path, _certs._key_pem(key), 0o600)
        jwks = json.dumps({"keys": [public_jwk(key, _kid(key))]}, indent=2).encode()
        try:
            current = issuer.jwks_path.read_bytes()
        except OSError:
            current = b""
        if current != jwks:
            _certs._write_atomic(issuer.jwks_path, jwks, 0o644)
    return issuer


__all__ = [
    "CALL_SCOPE",
    "LOCAL_AUDIENCE",
    "LOCAL_ISSUER",
    "TOKEN_LIFETIME",
    "LocalIssuer",
    "ensure_local_issuer",
    "public_jwk",
]
