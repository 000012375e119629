"""Certificates for the command line: a local CA and a server certificate made on first use.

RIPP runs over HTTP/3 only, so every call, even one between two processes on the same
machine, does a TLS 1.3 handshake in which the client verifies the server's certificate
(R13). Rather than ask users to bring a PKI for a demo, ``ensure_local_pki`` keeps one in a
per-user directory (:func:`cert_dir`):

``ca.pem`` / ``ca-key.pem``
    A local certificate authority (EC P-256, valid 10 years). ``ca.pem`` is the only trust
    anchor of ``ripp`` clients; the key never leaves the directory (mode 0600).
``server.pem`` / ``server-key.pem``
    A server certificate (EC P-256, valid 1 year) signed by that CA, naming the requested
    host names plus 127.0.0.1 and ::1. Regenerated when a requested name is missing, when it
    expires within 7 days, or when it no longer matches its key or the CA.

Verification is never switched off: :func:`client_configuration` trusts ``ca.pem`` alone and
leaves aioquic's verify mode at CERT_REQUIRED, so a client refuses any server whose
certificate was not issued by this CA for the name it dialled. To reach a ``ripp serve`` on
another account or machine, copy that side's ``ca.pem`` (never ``ca-key.pem``).

Files are written atomically (a temporary file made with O_EXCL in the same directory, then
renamed over the target), and the check-and-create runs under an exclusive ``flock`` on
``.lock`` in the directory, so two processes starting at once agree on one CA and never see
a half-written file. Readers of the server certificate and key take the lock shared, so they
never pair a new certificate with an old key. (On platforms without ``fcntl`` there is no
lock; the renames still keep every file whole.)

:func:`configure_debugging` adds the R22 hooks: qlog traces for qvis and a TLS key log file
(``SSLKEYLOGFILE`` format) for Wireshark.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeAlias

import attrs
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QLOG_VERSION, QuicFileLogger, QuicLoggerTrace
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ripp_core.testing import CA_KEY_USAGE, SERVER_KEY_USAGE

__all__ = [
    "CA_LIFETIME",
    "RENEW_BEFORE",
    "SERVER_LIFETIME",
    "LocalPki",
    "cert_dir",
    "client_configuration",
    "configure_debugging",
    "debugging",
    "ensure_local_pki",
    "server_configuration",
]

_log = logging.getLogger(__name__)

CA_LIFETIME = timedelta(days=3650)
"""How long a newly made local CA is valid."""
SERVER_LIFETIME = timedelta(days=365)
"""How long a newly made server certificate is valid (never beyond the CA's expiry)."""
RENEW_BEFORE = timedelta(days=7)
"""A certificate that expires within this much time is replaced."""
# Validity starts a little in the past, so that a peer whose clock is slightly behind ours
# does not reject a certificate made a moment ago.
_BACKDATE = timedelta(hours=1)

_CA_CERT = "ca.pem"
_CA_KEY = "ca-key.pem"
_SERVER_CERT = "server.pem"
_SERVER_KEY = "server-key.pem"
_LOCK = ".lock"

_IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Name: TypeAlias = str | _IpAddress
# What the CA key may be if a user dropped in a CA of their own.
_IssuerKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_LOOPBACK_IPS: tuple[_IpAddress, ...] = (
    ipaddress.IPv4Address("127.0.0.1"),
    ipaddress.IPv6Address("::1"),
)


def cert_dir() -> Path:
    """Return the per-user directory that holds the local PKI.

    ``$RIPP_HOME`` if set (and non-empty); otherwise ``$XDG_DATA_HOME/ripp`` if
    ``XDG_DATA_HOME`` is an absolute path (the XDG spec says to ignore a relative one);
    otherwise ``~/.local/share/ripp``. The directory is not created here.
    """
    home = os.environ.get("RIPP_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "ripp"
    return Path.home() / ".local" / "share" / "ripp"


@attrs.frozen
class LocalPki:
    """Where the local PKI lives and what its server certificate covers.

    Returned by :func:`ensure_local_pki`; pass it to :func:`server_configuration` and
    :func:`client_configuration`. The paths are fixed names inside ``directory``.
    """

    directory: Path
    """The directory holding the four PEM files."""
    hostnames: tuple[str, ...]
    """Every subjectAltName of the server certificate: DNS names first, then IP addresses."""
    server_not_after: datetime
    """When the server certificate expires (UTC)."""
    ca_not_after: datetime
    """When the CA certificate expires (UTC)."""
    ca_sha256: str
    """SHA-256 fingerprint of the CA certificate (DER), as colon-separated hex."""

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate: the trust anchor to give clients."""
        return self.directory / _CA_CERT

    @property
    def ca_key_path(self) -> Path:
        """The CA's private key (mode 0600); never needed outside this module."""
        return self.directory / _CA_KEY

    @property
    def server_cert_path(self) -> Path:
        """The server certificate, signed by the CA."""
        return self.directory / _SERVER_CERT

    @property
    def server_key_path(self) -> Path:
        """The server certificate's private key (mode 0600)."""
        return self.directory / _SERVER_KEY


# -- locking and atomic writes ------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``directory/.lock`` (exclusive unless ``shared``) for the block.

    If the lock file cannot be opened (a read-only directory, say), the block runs
    unlocked: reading is still safe thanks to atomic renames, and any write will fail with
    its own, clearer error.
    """
    try:
        fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new, whole.

    The temporary file is created with O_EXCL and mode 0600 (``tempfile.mkstemp``) in the
    target's directory, so secrets are never readable by others, even for a moment.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


# -- reading and checking what is on disk ------------------------------------------------


def _read_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, _IssuerKey] | None:
    """Load a certificate and its key; None if either is missing, unreadable or mismatched."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            _log.warning("ignoring unusable %s / %s: %s", cert_path, key_path, exc)
        return None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        _log.warning("ignoring %s: unsupported key type %s", key_path, type(key).__name__)
        return None
    if _spki(cert.public_key()) != _spki(key.public_key()):
        _log.warning("ignoring %s: it does not match the key in %s", cert_path, key_path)
        return None
    return cert, key


def _spki(public_key: Any) -> bytes:
    """DER SubjectPublicKeyInfo of a public key, to compare keys of any type."""
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    """Whether ``cert`` is valid now and does not expire within RENEW_BEFORE."""
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries a valid signature by ``ca_cert``'s key."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _san_names(cert: x509.Certificate) -> list[_Name]:
    """The DNS names and IP addresses in ``cert``'s subjectAltName, in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[_Name] = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    for ip in san.get_values_for_type(x509.IPAddress):
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            names.append(ip)
    return names


def _normalize_names(hostnames: Iterable[str]) -> list[_Name]:
    """Parse requested names: IP literals become addresses, DNS names are lower-cased."""
    names: list[_Name] = []
    for raw in hostnames:
        text = raw.strip()
        if not text:
            raise ValueError("empty host name")
        try:
            name: _Name = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            name = text.lower().rstrip(".")
        if name not in names:
            names.append(name)
    return names


# -- making certificates ------------------------------------------------------------------


def _sign_hash(key: _IssuerKey) -> hashes.SHA256 | None:
    """The digest to sign with: SHA-256, or None for Ed25519 (which hashes internally)."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _make_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA (EC P-256) valid from ``now - 1 h`` for CA_LIFETIME."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ripp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ripp local CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_server(
    names: list[_Name], ca_cert: x509.Certificate, ca_key: _IssuerKey, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new server certificate (EC P-256) for ``names``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [name for name in names if isinstance(name, str)]
    ips = [name for name in names if not isinstance(name, str)]
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    alt_names += [x509.IPAddress(ip) for ip in ips]
    common_name = dns[0] if dns else str(ips[0])
    not_after = min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
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
        .sign(ca_key, _sign_hash(ca_key))
    )
    return cert, key


def _key_pem(key: _IssuerKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pair(
    directory: Path, cert_name: str, key_name: str, cert: x509.Certificate, key: _IssuerKey
) -> None:
    """Write a key (0600) and then its certificate (0644), each atomically.

    Key first: a crash in between leaves a new key beside the old certificate, which the
    next run sees as a mismatch and regenerates.
    """
    _write_atomic(directory / key_name, _key_pem(key), 0o600)
    _write_atomic(directory / cert_name, cert.public_bytes(serialization.Encoding.PEM), 0o644)


# -- public API ---------------------------------------------------------------------------


def ensure_local_pki(
    directory: Path | None = None,
    hostnames: Iterable[str] = ("localhost",),
    *,
    now: datetime | None = None,
) -> LocalPki:
    """Create the local CA and server certificate on first use, and reuse them later.

    ``directory`` defaults to :func:`cert_dir` and is created (mode 0700) if missing.
    ``hostnames`` are the names clients will dial; IP literals become IP-address entries.
    The server certificate always names 127.0.0.1 and ::1 as well.

    The CA is made if missing, unusable, or expiring within RENEW_BEFORE (a new CA means
    clients elsewhere need the new ``ca.pem``). The server certificate is (re)made if
    missing, unusable, not signed by the current CA, expiring within RENEW_BEFORE, or
    lacking a requested name; a new one keeps every name the old one had, so processes
    asking for different names do not take turns replacing it. Otherwise nothing is
    written and the files are reused byte for byte.

    ``now`` (an aware datetime) replaces the real clock, for tests. Safe to call from
    several processes at once (see the module docstring).
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    requested = _normalize_names(hostnames)
    if directory is None:
        directory = cert_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    with _locked(directory):
        ca = _read_pair(directory / _CA_CERT, directory / _CA_KEY)
        ca_made = False
        if ca is None or not _fresh(ca[0], now):
            ca = _make_ca(now)
            _write_pair(directory, _CA_CERT, _CA_KEY, *ca)
            ca_made = True
            _log.info("created a new local CA in %s", directory)
        ca_cert, ca_key = ca

        server = _read_pair(directory / _SERVER_CERT, directory / _SERVER_KEY)
        have = _san_names(server[0]) if server is not None else []
        wanted = [*have, *(n for n in [*requested, *_LOOPBACK_IPS] if n not in have)]
        if (
            server is None
            or ca_made
            or len(wanted) > len(have)
            or not _fresh(server[0], now)
            or not _issued_by(server[0], ca_cert)
        ):
            # Order: DNS names first, then addresses (only for readability of the SAN).
            wanted.sort(key=lambda name: not isinstance(name, str))
            server = _make_server(wanted, ca_cert, ca_key, now)
            _write_pair(directory, _SERVER_CERT, _SERVER_KEY, *server)
            _log.info("created a server certificate for %s in %s", wanted, directory)
        server_cert = server[0]

    names = _san_names(server_cert)
    names.sort(key=lambda name: not isinstance(name, str))
    fingerprint = ca_cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return LocalPki(
        directory=directory,
        hostnames=tuple(str(name) for name in names),
        server_not_after=server_cert.not_valid_after_utc,
        ca_not_after=ca_cert.not_valid_after_utc,
        ca_sha256=fingerprint,
    )


def server_configuration(pki: LocalPki, **quic_kwargs: Any) -> QuicConfiguration:
    """Return a server QUIC configuration presenting the local server certificate.

    ``quic_kwargs`` go to :class:`QuicConfiguration` (e.g. ``idle_timeout``,
    ``max_datagram_frame_size``); ALPN defaults to HTTP/3 (``h3``).
    """
    quic_kwargs.setdefault("alpn_protocols", list(H3_ALPN))
    configuration = QuicConfiguration(is_client=False, **quic_kwargs)
    # Shared lock: never pair a certificate with the key of another generation.
    with _locked(pki.directory, shared=True):
        configuration.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    return configuration


def client_configuration(
    pki: LocalPki, server_name: str = "localhost", **quic_kwargs: Any
) -> QuicConfiguration:
    """Return a client QUIC configuration that trusts the local CA and nothing else.

    ``server_name`` is the name (or IP literal) checked against the server certificate.
    Verification stays on: aioquic's verify mode is left at its client default,
    CERT_REQUIRED, and asking for anything else raises ValueError. ``quic_kwargs`` go to
    :class:`QuicConfiguration`; ALPN defaults to HTTP/3 (``h3``).
    """
    verify_mode = quic_kwargs.get("verify_mode")
    if verify_mode is not None and verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("ripp never switches certificate verification off")
    quic_kwargs.setdefault("alpn_protocols", list(H3_ALPN))
    configuration = QuicConfiguration(is_client=True, server_name=server_name, **quic_kwargs)
    configuration.load_verify_locations(cafile=str(pki.ca_cert_path))
    return configuration


def client_configuration_from_ca(
    ca_file: Path, server_name: str = "localhost", **quic_kwargs: Any
) -> QuicConfiguration:
    """A client QUIC configuration trusting the CA certificate(s) in ``ca_file`` only."""
    verify_mode = quic_kwargs.get("verify_mode")
    if verify_mode is not None and verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("ripp never switches certificate verification off")
    quic_kwargs.setdefault("alpn_protocols", list(H3_ALPN))
    configuration = QuicConfiguration(is_client=True, server_name=server_name, **quic_kwargs)
    configuration.load_verify_locations(cafile=str(ca_file))
    return configuration


class _QlogFiles(QuicFileLogger):
    """aioquic's :class:`QuicFileLogger` with two changes.

    * Files are named ``<ODCID>.client.qlog`` / ``<ODCID>.server.qlog``: both ends of a
      connection share the ODCID, so with plain ``<ODCID>.qlog`` a server and a client
      logging to one directory (``ripp demo --qlog``) overwrite each other's trace.
    * :meth:`flush` writes the traces of connections that have not finished: aioquic writes
      a trace only when its connection leaves the closing period (3 PTO after the close),
      which a command that exits right after hanging up never reaches, so without it
      ``--qlog`` left the directory empty.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._open: list[QuicLoggerTrace] = []

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        # Kept in our own list (not the base class's), so end_trace and flush need no
        # private attribute of aioquic.
        trace = QuicLoggerTrace(is_client=is_client, odcid=odcid)
        self._open.append(trace)
        return trace

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        if trace not in self._open:  # already written by flush()
            return
        self._open.remove(trace)
        data = trace.to_dict()
        side = data["vantage_point"]["type"]
        path = Path(self.path) / f"{data['common_fields']['ODCID']}.{side}.qlog"
        document = {"qlog_format": "JSON", "qlog_version": QLOG_VERSION, "traces": [data]}
        path.write_text(json.dumps(document), encoding="utf-8")

    def flush(self) -> None:
        """Write every trace still open (its connection is cut short where it stands)."""
        for trace in list(self._open):
            self.end_trace(trace)


def configure_debugging(
    configuration: QuicConfiguration,
    *,
    qlog_dir: Path | None = None,
    keylog_file: Path | None = None,
) -> IO[str] | None:
    """Turn on qlog traces and TLS key logging for connections made with ``configuration``.

    ``qlog_dir`` (created if missing): one ``<ODCID>.client.qlog`` or
    ``<ODCID>.server.qlog`` file (qlog JSON, for qvis) per connection, written when the
    connection ends or, for connections still open, when :func:`debugging` exits.
    ``keylog_file``: TLS secrets are appended in NSS key log format (what Wireshark reads
    via ``SSLKEYLOGFILE``); when it is None the ``SSLKEYLOGFILE`` environment variable, if
    set, names the file. The file is created with mode 0600, since anyone holding it can
    decrypt the calls.

    Returns the opened key log file, or None if key logging is off. **The caller must close
    it** once the connections using ``configuration`` are done; :func:`debugging` does that
    for you.
    """
    if qlog_dir is not None:
        qlog_dir.mkdir(parents=True, exist_ok=True)
        configuration.quic_logger = _QlogFiles(str(qlog_dir))
    if keylog_file is None:
        env = os.environ.get("SSLKEYLOGFILE")
        if env:
            keylog_file = Path(env)
    if keylog_file is None:
        return None
    fd = os.open(keylog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # Line-buffered: each secret reaches the file at once, even if the process is killed.
    log = open(fd, "a", buffering=1, encoding="ascii")  # noqa: SIM115 - returned to caller
    configuration.secrets_log_file = log
    return log


@contextlib.contextmanager
def debugging(
    configuration: QuicConfiguration,
    *,
    qlog_dir: Path | None = None,
    keylog_file: Path | None = None,
) -> Iterator[QuicConfiguration]:
    """Context-manager form of :func:`configure_debugging` that closes the key log file.

    On exit the qlog traces of connections still open are written and the key log is
    closed and detached from ``configuration``; use the configuration's connections only
    inside the block.
    """
    log = configure_debugging(configuration, qlog_dir=qlog_dir, keylog_file=keylog_file)
    try:
        yield configuration
    finally:
        if isinstance(configuration.quic_logger, _QlogFiles):
            configuration.quic_logger.flush()
        if log is not None:
            configuration.secrets_log_file = None
            log.close()
