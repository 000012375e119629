"""The Trio I/O loop around one RIPP HTTP/2 endpoint: TCP streams (TLS or h2c), a timer,
wake-ups. The TCP counterpart of :mod:`._driver`, with the same public API on top
(:class:`ripp_core.aio.Server`, :class:`ripp_core.aio.Client`).

One task per connection reads into the endpoint; one writer per connection empties its
outbox; the endpoint's ``data_to_send`` fills the outboxes. An empty chunk from the
endpoint closes that connection once what came before it is written.
"""

from __future__ import annotations

import logging
import math
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import trio

from ripp_core import (
    H2_ALPN,
    ChecksRequested,
    EventRouter,
    RippConfig,
    RippH2Client,
    RippH2Server,
)
from ripp_core._h2 import StreamKey
from ripp_core.aio import Client, Server
from ripp_core.aio_checks import (
    AnyAuthorizer,
    AnyIdentityVerifier,
    needs_deferred_checks,
    run_checks,
)

from ._tls import client_ssl_context, server_ssl_context

logger = logging.getLogger("ripp.trio.tcp")

T = TypeVar("T")
_READ_SIZE = 65536


@attrs.define(eq=False)
class _Link:
    """One TCP (or TLS) connection: the stream, bytes waiting for it, and its state."""

    stream: trio.abc.Stream | None = None
    outbox: bytearray = attrs.Factory(bytearray)
    closing: bool = False  # close once the outbox is written
    ready: trio.Event = attrs.Factory(trio.Event)


class TcpDriver:
    """Runs an HTTP/2 endpoint over TCP inside a Trio nursery (the same driver contract
    as the UDP :class:`~ripp_trio._driver.Driver`)."""

    def __init__(
        self,
        endpoint: RippH2Server | RippH2Client,
        *,
        ssl_context: ssl.SSLContext | None,
        listen: tuple[str, int] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.router = EventRouter()
        self._ssl = ssl_context
        self._listen = listen
        self._listeners: list[trio.SocketListener] = []
        self._links: dict[StreamKey, _Link] = {}
        self._changed: dict[str | None, trio.Event] = {}
        self._timer_changed = trio.Event()
        self._flush_wanted = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._pending_tasks: list[Callable[[], Awaitable[None]]] = []
        self.closed = False
        self.on_checks: Callable[[ChecksRequested], None] | None = None

    # ------------------------------------------------------------ DriverLike
    @property
    def address(self) -> tuple[str, int]:
        """The local TCP address the server listens on (clients: ("", 0))."""
        if not self._listeners:
            return ("", 0)
        host, port = self._listeners[0].socket.getsockname()[:2]
        return host, port

    def now(self) -> float:
        """Trio's clock, as in the UDP driver."""
        return trio.current_time()

    def run(self, action: Callable[[float], T]) -> T:
        """Apply a command at the current time; effects are flushed once tasks yield."""
        result = action(self.now())
        self._flush_wanted.set()
        return result

    async def checkpoint(self) -> None:
        """Let other tasks run (a Trio checkpoint)."""
        await trio.lowlevel.checkpoint()

    async def wait_changed(self, handle: str | None) -> None:
        """Sleep until the router reports a change for ``handle`` (None: endpoint-level)."""
        event = self._changed.get(handle)
        if event is None:
            event = self._changed[handle] = trio.Event()
        await event.wait()

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run an application task until it returns or the driver closes."""
        if self.closed:
            return
        if self._nursery is None:
            self._pending_tasks.append(task)
        else:
            self._nursery.start_soon(task)

    def flush(self) -> None:
        """Queue what the endpoint has to send, file its events, wake whoever waits."""
        for data, key in self.endpoint.data_to_send(self.now()):
            link = self._links.get(key)
            if link is None:
                if not data or isinstance(self.endpoint, RippH2Server):
                    continue  # a server never dials; a close of an unknown link is moot
                link = self._links[key] = _Link()
                if self._nursery is not None:
                    self._nursery.start_soon(self._dial, key, link)
            if data:
                link.outbox += data
            else:
                link.closing = True
            link.ready.set()
        touched: set[str | None] = set()
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, ChecksRequested) and self.on_checks is not None:
                self.on_checks(event)  # deferred authorization runs in a task of its own
                continue
            touched.add(self.router.route(event))
        if self.router.incoming:
            touched.add(None)
        for handle in touched:
            waiter = self._changed.pop(handle, None)
            if waiter is not None:
                waiter.set()
        self._timer_changed.set()

    # ------------------------------------------------------------ tasks
    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the listener (servers), timer and flush loops until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._listen is not None:
                host, port = self._listen
                self._listeners = await trio.open_tcp_listeners(port, host=host)
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._flush_loop)
            for task in self._pending_tasks:
                nursery.start_soon(task)
            self._pending_tasks.clear()
            task_status.started()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream: trio.abc.Stream = await listener.accept()
            except (trio.ClosedResourceError, OSError):
                return
            assert isinstance(stream, trio.SocketStream)
            peer = stream.socket.getpeername()
            key: StreamKey = (peer[0], peer[1])
            assert isinstance(self.endpoint, RippH2Server)
            if self.closed or not self.endpoint.connection_made(key, self.now()):
                await trio.aclose_forcefully(stream)
                continue
            if self._ssl is not None:
                stream = trio.SSLStream(stream, self._ssl, server_side=True)
            link = self._links[key] = _Link(stream=stream)
            assert self._nursery is not None
            self._nursery.start_soon(self._connection, key, link)

    async def _dial(self, key: StreamKey, link: _Link) -> None:
        assert isinstance(self.endpoint, RippH2Client)
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(key[0], key[1])
            if self._ssl is not None:
                authority = self.endpoint.authority_of(key) or key[0]
                server_name = authority.rsplit(":", 1)[0].strip("[]")
                stream = trio.SSLStream(stream, self._ssl, server_hostname=server_name)
                await stream.do_handshake()
                if stream.selected_alpn_protocol() != H2_ALPN:
                    raise OSError(f"{authority} did not agree to ALPN h2")
        except (OSError, trio.BrokenResourceError) as exc:
            logger.warning("cannot connect to %s:%d: %s", key[0], key[1], exc)
            self._lost(key)
            return
        link.stream = stream
        await self._connection(key, link)

    async def _connection(self, key: StreamKey, link: _Link) -> None:
        assert link.stream is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, link)
            try:
                while True:
                    data = await link.stream.receive_some(_READ_SIZE)
                    if not data:
                        break
                    self.endpoint.receive_data(bytes(data), key, self.now())
                    self.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                logger.debug("connection %s ended: %s", key, exc)
            nursery.cancel_scope.cancel()
        self._lost(key)
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(link.stream)

    async def _writer(self, link: _Link) -> None:
        assert link.stream is not None
        while True:
            await link.ready.wait()
            link.ready = trio.Event()
            while link.outbox:
                chunk = bytes(link.outbox)
                link.outbox.clear()
                try:
                    await link.stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if link.closing:
                await link.stream.aclose()
                return

    def _lost(self, key: StreamKey) -> None:
        if self._links.pop(key, None) is not None and not self.closed:
            self.endpoint.connection_lost(key, self.now())
            self.flush()

    async def _flush_loop(self) -> None:
        while not self.closed:
            await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            if not self.closed:
                self.flush()

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed = trio.Event()
            deadline = self.endpoint.get_timer()
            with trio.move_on_at(deadline if deadline is not None else math.inf) as sleep:
                await self._timer_changed.wait()
            if self.closed:
                return
            if sleep.cancelled_caught:
                self.endpoint.handle_timer(self.now())
                self.flush()

    async def aclose(self) -> None:
        """Terminate calls, send the goodbyes (GOAWAY), then close every connection."""
        if self.closed:
            return
        self.endpoint.close(self.now())
        self.flush()
        self.closed = True
        for listener in self._listeners:
            await listener.aclose()
        with trio.move_on_after(1.0):  # let the writers put the goodbyes on the wire
            while any(link.outbox for link in self._links.values()):
                await trio.sleep(0.01)
        for handle in list(self._changed):
            waiter = self._changed.pop(handle, None)
            if waiter is not None:
                waiter.set()


@asynccontextmanager
async def _running(driver: TcpDriver) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.serve)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await driver.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_h2_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    instance_id: str | None = None,
    authority: str | None = None,
    config: RippConfig | None = None,
    authorizer: AnyAuthorizer,
    identity_verifier: AnyIdentityVerifier,
) -> AsyncIterator[Server]:
    """Run a RIPP server over HTTP/2 on TCP ``host:port`` (port 0: any free port) for the
    ``async with``: TLS with ALPN h2 when ``ssl_context`` is given (see
    :func:`server_ssl_context`), else h2c (behind a load balancer). The same
    :class:`~ripp_core.aio.Server` API as :func:`open_server`."""
    deferred = needs_deferred_checks(authorizer, identity_verifier)
    endpoint = RippH2Server(
        instance_id=instance_id or secrets.token_hex(4),
        authority=authority,
        config=config,
        authorizer=None if deferred else authorizer,  # type: ignore[arg-type]
        identity_verifier=None if deferred else identity_verifier,  # type: ignore[arg-type]
        deferred_checks=deferred,
    )
    driver = TcpDriver(endpoint, ssl_context=ssl_context, listen=(host, port))
    async with _running(driver), trio.open_nursery() as checks:
        if deferred:
            driver.on_checks = lambda event: checks.start_soon(
                run_checks, driver, endpoint, event, authorizer, identity_verifier, driver.now()
            )
        try:
            yield Server(driver, endpoint)
        finally:
            checks.cancel_scope.cancel()


@asynccontextmanager
async def open_h2_client(
    *,
    calls_uris: list[str],
    token: str | Callable[[str], str],
    ssl_context: ssl.SSLContext | None = None,
    config: RippConfig | None = None,
    resolver: Callable[[str, int], tuple[str, int]] | None = None,
) -> AsyncIterator[Client]:
    """Run a RIPP client over HTTP/2 for the ``async with``: TLS with ALPN h2 when
    ``ssl_context`` is given (see :func:`client_ssl_context`), else h2c. The same
    :class:`~ripp_core.aio.Client` API as :func:`open_client`."""
    endpoint = RippH2Client(calls_uris=calls_uris, token=token, config=config, resolver=resolver)
    driver = TcpDriver(endpoint, ssl_context=ssl_context)
    async with _running(driver):
        yield Client(driver, endpoint)


__all__ = [
    "TcpDriver",
    "client_ssl_context",
    "open_h2_client",
    "open_h2_server",
    "server_ssl_context",
]
