"""Deterministic test support for ripp: an in-memory network with virtual time, and a test PKI.

``VirtualNetwork`` connects sans-IO endpoints (anything with aioquic's ``receive_datagram`` /
``datagrams_to_send`` / ``get_timer`` / ``handle_timer`` contract) through links with
seeded delay, jitter, loss, duplication and reordering, so that a whole call (handshake,
setup, media, migration, failure) runs in milliseconds of real time and the same way every
time. ``make_test_pki`` and the two ``*_quic_configuration`` helpers give both ends real TLS
1.3 with certificate verification.

Nothing in this package does I/O or reads a clock; it is shipped (not hidden in ``tests/``)
so that applications built on ripp can test their own call handling the same way.
"""

from typing import Any

from ripp_core._auth import insecure_accept_any_bearer, insecure_accept_any_identity
from ripp_core.testing._network import (
    Address,
    Endpoint,
    Impairment,
    LinkStats,
    StreamEndpoint,
    VirtualNetwork,
)
from ripp_core.testing._tls import (
    CA_KEY_USAGE,
    SERVER_KEY_USAGE,
    ServerKey,
    TestPki,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)

#: Keyword arguments for ``RippServer``/``open_server`` that accept any bearer token (each
#: token its own principal) and any well-formed Identity: INSECURE, for tests only.
INSECURE_CHECKS: dict[str, Any] = {
    "authorizer": insecure_accept_any_bearer,
    "identity_verifier": insecure_accept_any_identity,
}

__all__ = [
    "CA_KEY_USAGE",
    "INSECURE_CHECKS",
    "SERVER_KEY_USAGE",
    "Address",
    "Endpoint",
    "Impairment",
    "LinkStats",
    "ServerKey",
    "StreamEndpoint",
    "TestPki",
    "VirtualNetwork",
    "client_quic_configuration",
    "make_test_pki",
    "server_quic_configuration",
]
