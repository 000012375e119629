"""The local STI-CA, an STI certificate with a TNAuthList, and PASSporT signing (R14).

For development and tests, like the local TLS CA of :mod:`ripp_cli._certs`, the ripp home
holds a STIR/SHAKEN PKI made on first use:

``sti-ca.pem`` / ``sti-ca-key.pem``
    A local STI-CA (EC P-256): the STIR trust anchor a default ``ripp serve`` accepts.
``sti.pem`` / ``sti-key.pem``
    An STI certificate (EC P-256) signed by it, carrying a TNAuthList (RFC 8226) with the
    Service Provider Code ``LOCAL`` and the ranges of :data:`LOCAL_TN_RANGES`; its key signs
    the PASSporTs of ``ripp call``.

:func:`sign_passport` makes an Identity header value (RFC 8224) with the SHAKEN PASSporT
(RFC 8588): ``attest``, ``origid``, ``orig``/``dest``, ``iat`` and ``x5u``, signed ES256 by
PyJWT. The ``x5u`` is an HTTPS URL that serves ``sti.pem``: ``ripp call`` runs a small HTTPS
server for it (:mod:`ripp_cli._https`), since a verifier fetches the chain from the signer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import encoder as der_encoder
from pyasn1_modules import rfc8226

from ripp_core._stir import TN_AUTH_LIST_OID, canonical_tn, tn_of_uri
from ripp_core.testing import CA_KEY_USAGE

from . import _certs

STI_LIFETIME = timedelta(days=365)
"""How long a newly made local STI certificate is valid."""
LOCAL_SPC = "LOCAL"
"""The Service Provider Code of the local STI certificate."""
LOCAL_TN_RANGES: tuple[tuple[str, int], ...] = (("14085550000", 10000),)
"""Telephone number ranges (start, count) the local STI certificate names as well."""

_STI_CA_CERT = "sti-ca.pem"
_STI_CA_KEY = "sti-ca-key.pem"
_STI_CERT = "sti.pem"
_STI_KEY = "sti-key.pem"
_BACKDATE = timedelta(hours=1)


def tn_auth_list_der(
    spc: str | None = None, tns: Iterable[str] = (), ranges: Iterable[tuple[str, int]] = ()
) -> bytes:
    """A DER TNAuthList (RFC 8226 section 9) naming an SPC, numbers and ranges."""
    value = rfc8226.TNAuthorizationList()
    index = 0
    if spc is not None:
        entry = rfc8226.TNEntry()
        entry["spc"] = spc
        value[index] = entry
        index += 1
    for start, count in ranges:
        entry = rfc8226.TNEntry()
        entry["range"]["start"] = start
        entry["range"]["count"] = count
        value[index] = entry
        index += 1
    for number in tns:
        entry = rfc8226.TNEntry()
        entry["one"] = number
        value[index] = entry
        index += 1
    return bytes(der_encoder.encode(value))


def make_sti_ca(
    now: datetime, lifetime: timedelta = _certs.CA_LIFETIME
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed STI-CA (EC P-256), valid from ``now - 1 h`` for ``lifetime``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ripp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ripp local STI-CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_sti_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    *,
    spc: str | None = LOCAL_SPC,
    tns: Iterable[str] = (),
    ranges: Iterable[tuple[str, int]] = LOCAL_TN_RANGES,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    critical_tn_auth_list: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An STI certificate (EC P-256) signed by ``ca_key``, with a TNAuthList.

    ATIS-1000080 has the TNAuthList non-critical, which is also what our verifier accepts
    (``critical_tn_auth_list`` exists to test the refusal of a critical one).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or now - _BACKDATE
    end = not_after or min(now + STI_LIFETIME, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ripp"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"SHAKEN {spc or 'TN'}"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(TN_AUTH_LIST_OID, tn_auth_list_der(spc, tns, ranges)),
            critical=critical_tn_auth_list,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@attrs.frozen
class LocalSti:
    """Where the local STI PKI lives (returned by :func:`ensure_local_sti`)."""

    directory: Path
    """The ripp home."""

    @property
    def ca_cert_path(self) -> Path:
        """The STI-CA certificate: the STIR trust anchor of a default ``ripp serve``."""
        return self.directory / _STI_CA_CERT

    @property
    def cert_path(self) -> Path:
        """The STI certificate (the chain ``x5u`` serves)."""
        return self.directory / _STI_CERT

    @property
    def key_path(self) -> Path:
        """The STI certificate's private key (mode 0600)."""
        return self.directory / _STI_KEY

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The key that signs PASSporTs."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(self.key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path} is not an EC key")
        return key


def ensure_local_sti(directory: Path | None = None, *, now: datetime | None = None) -> LocalSti:
    """Create the local STI-CA and STI certificate on first use (or when expiring within
    ``RENEW_BEFORE`` or not issued by the current STI-CA); reuse them otherwise."""
    now = now or datetime.now(UTC)
    directory = directory or _certs.cert_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _certs._locked(directory):
        ca = _certs._read_pair(directory / _STI_CA_CERT, directory / _STI_CA_KEY)
        made = False
        if ca is None or not _certs._fresh(ca[0], now) or not isinstance(
            ca[1], ec.EllipticCurvePrivateKey
        ):
            ca = make_sti_ca(now)
            _certs._write_pair(directory, _STI_CA_CERT, _STI_CA_KEY, *ca)
            made = True
        ca_cert, ca_key = ca
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        sti = _certs._read_pair(directory / _STI_CERT, directory / _STI_KEY)
        if (
            sti is None
            or made
            or not _certs._fresh(sti[0], now)
            or not _certs._issued_by(sti[0], ca_cert)
        ):
            sti = make_sti_cert(ca_cert, ca_key, now)
            _certs._write_pair(directory, _STI_CERT, _STI_KEY, *sti)
    return LocalSti(directory)


def sign_passport(
    key: ec.EllipticCurvePrivateKey,
    x5u: str,
    *,
    to: str,
    from_: str,
    iat: int,
    attest: str = "A",
    origid: str | None = None,
) -> str:
    """An Identity header value (RFC 8224 section 4.1):
    ``<PASSporT>;info=<x5u>;alg=ES256;ppt=shaken``, for a call From ``from_`` To ``to``
    (SIP/tel URIs or numbers)."""
    orig = tn_of_uri(from_) or canonical_tn(from_)
    dest = tn_of_uri(to) or canonical_tn(to)
    claims = {
        "attest": attest,
        "dest": {"tn": [dest]},
        "iat": iat,
        "orig": {"tn": orig},
        "origid": origid or str(uuid.uuid4()),
    }
    token = jwt.encode(
        claims, key, algorithm="ES256", headers={"typ": "passport", "ppt": "shaken", "x5u": x5u}
    )
    return f"{token};info=<{x5u}>;alg=ES256;ppt=shaken"


__all__ = [
    "LOCAL_SPC",
    "LOCAL_TN_RANGES",
    "STI_LIFETIME",
    "LocalSti",
    "ensure_local_sti",
    "make_sti_ca",
    "make_sti_cert",
    "sign_passport",
    "tn_auth_list_der",
]
