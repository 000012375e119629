"""TLS contexts for the HTTP/2 binding: TLS 1.3 with ALPN ``h2`` (protocol 20.2).

The HTTP/2 endpoints speak plain HTTP/2 bytes; the drivers wrap them in TLS with these
contexts (or not at all, for h2c behind a load balancer). Building a context is
configuration: the certificate files are read when the caller asks, never by the core.
"""

from __future__ import annotations

import ssl

#: The one application protocol RIPP over HTTP/2 negotiates.
H2_ALPN = "h2"


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
