"""A small HTTPS file server for ``x5u`` certificate chains and JWKS documents.

A PASSporT's ``x5u`` must be an HTTPS URL the verifier can fetch (RFC 8224 section 7.3),
so ``ripp call`` publishes the local STI certificate with this server while it runs, on
127.0.0.1 and a free port, with the local TLS CA's server certificate (which the verifier
trusts for fetches). It runs in a daemon thread, so it works under either event loop, and
serves only the documents it was given, by path; everything else is 404. Tests use it to
serve chains and key sets, and to misbehave (answer slowly, or with too much).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs


@attrs.define
class Document:
    """What the server answers at one path."""

    body: bytes
    content_type: str = "application/octet-stream"
    delay: float = 0.0
    """Seconds to wait before answering (to test fetch deadlines)."""
    chunked: bool = False
    """Send the body without a Content-Length (to test limits counted while streaming)."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        """Answer with the document at the path (after its delay), or 404."""
        path = self.path.split("?")[0]
        self.server.hits[path] = self.server.hits.get(path, 0) + 1
        document = self.server.documents.get(path)
        if document is None:
            self.send_error(404)
            return
        if document.delay:
            time.sleep(document.delay)
        self.send_response(200)
        self.send_header("Content-Type", document.content_type)
        if document.chunked:
            self.send_header("Connection", "close")  # the body ends when the connection does
        else:
            self.send_header("Content-Length", str(len(document.body)))
        self.end_headers()
        # The fetcher may give up first (deadline or size limit): that is fine.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.wfile.write(document.body)
        if document.chunked:
            self.close_connection = True

    def do_POST(self) -> None:
        """Hand the request to ``post_handler`` (a token endpoint in tests), or 405."""
        handler = self.server.post_handler
        if handler is None:
            self.send_error(405)
            return
        length = int(self.headers.get("Content-Length", "0"))
        status, body = handler(self.path, dict(self.headers), self.rfile.read(length))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the CLI's own log says what matters."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    documents: dict[str, Document]
    hits: dict[str, int]
    post_handler: Any = None


class HttpsServer:
    """Serves ``documents`` (path -> Document) over HTTPS until :meth:`close`."""

    def __init__(
        self,
        cert_path: Path,
        key_path: Path,
        documents: Mapping[str, Document] | None = None,
        host: str = "127.0.0.1",
        post_handler: Any = None,
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._server = _Server((host, 0), _Handler)
        self._server.documents = dict(documents or {})
        self._server.hits = {}
        self._server.post_handler = post_handler
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ripp-https", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def url(self, path: str, host: str = "localhost") -> str:
        """The https URL of ``path``."""
        return f"https://{host}:{self.port}{path}"

    @property
    def documents(self) -> dict[str, Document]:
        """The documents served (may be changed while running)."""
        return self._server.documents

    @property
    def hits(self) -> dict[str, int]:
        """How many GET requests each path has had."""
        return self._server.hits

    @property
    def post_handler(self) -> Any:
        """``(path, headers, body) -> (status, json bytes)`` for POST requests, or None."""
        return self._server.post_handler

    @post_handler.setter
    def post_handler(self, handler: Any) -> None:
        """Set the POST handler."""
        self._server.post_handler = handler

    def close(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Document", "HttpsServer"]
