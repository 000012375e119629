"""Set-up helpers for applications on one machine: TLS from the local PKI, a dev PASSporT.

RIPP always runs over TLS 1.3 and every call carries an Identity header (R13, R14), so even
a first program on loopback needs a server certificate, a client that trusts it, and a
signed PASSporT. These helpers give all three from the same local PKI the ``ripp`` command
uses (``$RIPP_HOME``, else ``$XDG_DATA_HOME/ripp``, else ``~/.local/share/ripp``)::

    from ripp_cli.local import client_tls, dev_identity, server_tls

    server_config = server_tls()                 # presents the local server certificate
    client_config = client_tls()                 # trusts the local CA, and nothing else
    identity = dev_identity("<tel:+12125551234>", "<tel:+14085551234>")

They are for development and tests: a production server loads its own certificate into an
aioquic ``QuicConfiguration``, and a production caller gets its PASSporT signed with a
STIR/SHAKEN certificate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from aioquic.quic.configuration import QuicConfiguration

from ripp_core import IdentityCheck, NameAddr

from . import _certs, _issuer, _sti
from ._https import Document, HttpsServer
from ._passport import make_identity, verify_identity

__all__ = [
    "LocalCaller",
    "client_tls",
    "dev_identity",
    "dev_identity_verifier",
    "local_caller",
    "server_tls",
]


def server_tls(
    hostnames: Iterable[str] = ("localhost",), *, directory: Path | None = None, **quic_kwargs: Any
) -> QuicConfiguration:
    """A server QUIC configuration with the local server certificate.

    The certificate names ``hostnames`` (IP literals allowed) besides 127.0.0.1 and ::1;
    the PKI is created on first use in ``directory`` (default: the ``ripp`` command's).
    ``quic_kwargs`` go to :class:`QuicConfiguration`; ALPN is ``h3``.
    """
    pki = _certs.ensure_local_pki(directory, hostnames)
    return _certs.server_configuration(pki, **quic_kwargs)


def client_tls(
    server_name: str = "localhost", *, directory: Path | None = None, **quic_kwargs: Any
) -> QuicConfiguration:
    """A client QUIC configuration that trusts only the local CA (verification stays on).

    ``server_name`` is checked against the server certificate; ``quic_kwargs`` go to
    :class:`QuicConfiguration`, and any ``verify_mode`` but CERT_REQUIRED is refused.
    """
    pki = _certs.ensure_local_pki(directory)
    return _certs.client_configuration(pki, server_name, **quic_kwargs)


def dev_identity(to: str, from_: str) -> str:
    """An Identity header value for a call from ``from_`` to ``to``: a real ES256
    PASSporT (RFC 8225, ``ppt=shaken``), signed with a key made for this process.

    Servers with the default ``identity_verifier`` accept it (they check its form); one
    that verifies signatures would need this process's key, so it is for development only.
    """
    return make_identity(to, from_)


def dev_identity_verifier(
    identity: str, to: NameAddr, from_: NameAddr, now: float
) -> IdentityCheck:
    """An ``identity_verifier`` for a development server in the same process as its
    callers: accepts only PASSporTs :func:`dev_identity` signed here for that caller and
    callee, and raises :class:`ripp_core.InvalidIdentity` (SIP 438) for anything else."""
    verify_identity(identity, to, from_)
    return IdentityCheck(verified=True, reason="signed by this process (development)")


class LocalCaller:
    """What a caller needs to pass a default ``ripp serve`` on this machine: an access
    token of the local issuer, and a signer of SHAKEN PASSporTs with the local STI
    certificate (whose ``x5u`` is served while :func:`local_caller` runs)."""

    def __init__(self, token: str, sign: Callable[[str, str], str]) -> None:
        self.token = token
        """A bearer token (RFC 9068) of the local issuer, with the ``ripp:call`` scope."""
        self._sign = sign

    def identity(self, to: str, from_: str) -> str:
        """The Identity header value for a call from ``from_`` to ``to``, signed now."""
        return self._sign(to, from_)


@contextlib.contextmanager
def local_caller(
    *, directory: Path | None = None, subject: str = "ripp-local", attest: str = "A"
) -> Iterator[LocalCaller]:
    """Credentials of the local issuer and STI-CA (made on first use, as ``ripp call``
    does), with the STI certificate served over HTTPS on loopback for the ``with``: a
    server verifies a PASSporT by fetching its ``x5u``. Development and tests only."""
    pki = _certs.ensure_local_pki(directory)
    issuer = _issuer.ensure_local_issuer(directory)
    sti = _sti.ensure_local_sti(directory)
    token = issuer.mint(time.time(), subject=subject)
    documents = {
        "/sti.pem": Document(sti.cert_path.read_bytes(), "application/pem-certificate-chain")
    }
    with HttpsServer(pki.server_cert_path, pki.server_key_path, documents) as server:
        x5u = server.url("/sti.pem")
        key = sti.signing_key()

        def sign(to: str, from_: str) -> str:
            return _sti.sign_passport(
                key, x5u, to=to, from_=from_, iat=int(time.time()), attest=attest
            )

        yield LocalCaller(token, sign)
