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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

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
