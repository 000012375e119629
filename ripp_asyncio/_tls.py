"""TLS contexts for RIPP over HTTP/2: TLS 1.3 with ALPN ``h2`` (protocol 20.2).

The sans-IO HTTP/2 endpoints speak plain HTTP/2 bytes; the driver wraps them in TLS with
these contexts (or not at all, for h2c behind a load balancer). Building a context reads
the certificate files, so it lives in the driver, not in ``ripp_core``.
"""

from __future__ import annotations

import ssl

from ripp_core import H2_ALPN


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A TLS 1.3 server context offering ALPN ``h2`` with this certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols([H2_ALPN])
    return context


def client_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """A TLS 1.3 client context asking for ALPN ``h2``, verifying the server against
    ``cafile`` (default: the system's trust store)."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([H2_ALPN])
    return context
