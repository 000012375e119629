"""A throwaway public-key infrastructure for tests and demos: one CA, one server certificate.

RIPP runs over HTTP/3 only, so even an in-memory test call does a real TLS 1.3 handshake
with certificate verification (R13). Rather than ship key files, tests mint a fresh CA and a
server certificate signed by it, and give the client the CA as its only trust anchor, so
verification runs exactly as in production.

Nothing here reads a clock or does I/O: the validity start ``not_before`` is a parameter
(aioquic checks validity against the real clock, so the *caller* picks a time that is
valid now), and the certificates are built in memory. Keys are drawn from the
``cryptography`` package's generator, which cannot be seeded. Sizes are kept constant so
that the handshake packetises the same way every time, and a seeded ``VirtualNetwork`` run
repeats: the server key is Ed25519 by default (its signatures always have the same length),
and the CA's ECDSA signature on the server certificate is re-drawn until it has its full
72-byte DER length (see :func:`_sign_full_length`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

import attrs
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ServerKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
"""The private key types ``make_test_pki`` can give the server."""

__all__ = [
    "ServerKey",
    "TestPki",
    "client_quic_configuration",
    "make_test_pki",
    "server_quic_configuration",
]


@attrs.frozen
class TestPki:
    """A CA and a server certificate (with its key) signed by that CA."""

    # Not a test case, despite the name: keep pytest from trying to collect it.
    __test__ = False

    ca_cert: x509.Certificate
    """The self-signed CA certificate: the client's only trust anchor."""
    ca_key: ec.EllipticCurvePrivateKey
    """The CA's private key (handy for signing extra certificates in a test)."""
    server_cert: x509.Certificate
    """The server certificate, valid for the requested host names and 127.0.0.1."""
    server_key: ServerKey
    """The server certificate's private key."""

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate in PEM form, as ``load_verify_locations(cadata=...)`` wants."""
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def server_cert_pem(self) -> bytes:
        """The server certificate in PEM form (e.g. to write a file for another tool)."""
        return self.server_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def server_key_pem(self) -> bytes:
        """The server key in unencrypted PKCS#8 PEM form."""
        return self.server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


#: Key usage of a CA certificate: it signs certificates (and CRLs), nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
#: Key usage of a TLS 1.3 server certificate: it signs the handshake, nothing else.
SERVER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def make_test_pki(
    hostnames: Sequence[str] = ("localhost",),
    *,
    not_before: datetime,
    lifetime: timedelta = timedelta(days=31),
    server_key_type: Literal["ed25519", "p256"] = "ed25519",
) -> TestPki:
    """Create a CA (EC P-256) and a server certificate for ``hostnames`` signed by it.

    Both certificates are valid from ``not_before`` (an aware datetime) for ``lifetime``.
    The server certificate names every host in ``hostnames`` and the IP address 127.0.0.1
    in its subjectAltName. Its key is Ed25519 unless ``server_key_type`` is ``"p256"``
    (see the module docstring for why Ed25519 is the default).
    """
    if not hostnames:
        raise ValueError("make_test_pki needs at least one host name")
    if not_before.tzinfo is None:
        # cryptography would read a naive datetime as UTC; make the caller say so.
        raise ValueError("not_before must be timezone-aware")
    not_after = not_before + lifetime

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ripp test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        # Fixed serials: each call makes a new CA, so there is nothing to collide with.
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key: ServerKey
    if server_key_type == "ed25519":
        server_key = ed25519.Ed25519PrivateKey.generate()
    elif server_key_type == "p256":
        server_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unknown server_key_type {server_key_type!r}")
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(2)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            SERVER_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    server_cert = _sign_full_length(server_builder, ca_key)
    return TestPki(ca_cert=ca_cert, ca_key=ca_key, server_cert=server_cert, server_key=server_key)


#: DER length of an ECDSA P-256 signature whose r and s both need 33 bytes.
_FULL_ECDSA_P256_SIGNATURE = 72


def _sign_full_length(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """Sign, retrying until the signature has its maximal DER length.

    An ECDSA signature is 70 to 72 bytes long depending on its random r and s. The server
    certificate travels in every handshake, so a varying length shifts packet boundaries
    and, with them, a seeded VirtualNetwork's loss pattern: runs in different processes
    would differ. A constant length keeps them reproducible (each try succeeds with
    probability about 1/4).
    """
    while True:
        cert = builder.sign(key, hashes.SHA256())
        if len(cert.signature) == _FULL_ECDSA_P256_SIGNATURE:
            return cert


def server_quic_configuration(pki: TestPki, alpn: Sequence[str] = H3_ALPN) -> QuicConfiguration:
    """Return a server-side QUIC configuration presenting ``pki``'s server certificate."""
    configuration = QuicConfiguration(is_client=False, alpn_protocols=list(alpn))
    configuration.certificate = pki.server_cert
    configuration.private_key = pki.server_key
    return configuration


def client_quic_configuration(
    pki: TestPki, server_name: str = "localhost", alpn: Sequence[str] = H3_ALPN
) -> QuicConfiguration:
    """Return a client-side QUIC configuration that trusts only ``pki``'s CA.

    Certificate verification stays on (CERT_REQUIRED), so a handshake with a server that
    does not present a certificate from ``pki`` for ``server_name`` fails, as it should.
    """
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=list(alpn), server_name=server_name
    )
    configuration.load_verify_locations(cadata=pki.ca_pem)
    return configuration
