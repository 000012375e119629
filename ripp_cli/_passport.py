"""A PASSporT (RFC 8225) for the Identity header of calls placed by the CLI (R14).

The CLI signs with a key made for the process: a real ES256 compact JWS that any server
can parse, though only a server configured to trust this key would verify it. Gateways
pass through the PASSporT they received instead.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ripp_core import InvalidIdentity, NameAddr

_KEY = ec.generate_private_key(ec.SECP256R1())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tn(uri: str) -> str:
    number = uri.strip("<>").split(":", 1)[-1].split(";")[0]
    return "".join(ch for ch in number if ch.isdigit())


def make_identity(to: str, from_: str, cert_url: str = "https://localhost/ripp-cli.pem") -> str:
    """An Identity header value: ``<PASSporT>;info=<cert_url>;alg=ES256;ppt=shaken``."""
    header = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": cert_url}
    claims = {
        "attest": "A",
        "dest": {"tn": [_tn(to)]},
        "iat": int(time.time()),
        "orig": {"tn": _tn(from_)},
        "origid": str(uuid.uuid4()),
    }
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    r, s = decode_dss_signature(_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{_b64(signature)};info=<{cert_url}>;alg=ES256;ppt=shaken"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_identity(identity: str, to: NameAddr, from_: NameAddr) -> None:
    """Verify a PASSporT made by :func:`make_identity` in this process (an identity
    verifier for development servers): the ES256 signature, and that its numbers are the
    call's. Raises :class:`InvalidIdentity` (SIP 438) otherwise."""
    token = identity.split(";", 1)[0]
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        signature = _unb64(signature_b64)
        claims = json.loads(_unb64(claims_b64))
        header = json.loads(_unb64(header_b64))
    except ValueError as exc:
        raise InvalidIdentity(f"PASSporT is not a compact JWS: {exc}") from None
    if header.get("alg") != "ES256" or len(signature) != 64:
        raise InvalidIdentity("PASSporT is not signed with ES256")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        _KEY.public_key().verify(
            der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise InvalidIdentity("PASSporT signature does not verify") from None
    if claims.get("orig", {}).get("tn") != _tn(from_.uri):
        raise InvalidIdentity("PASSporT orig is not the caller's number")
    if _tn(to.uri) not in claims.get("dest", {}).get("tn", []):
        raise InvalidIdentity("PASSporT dest is not the called number")
