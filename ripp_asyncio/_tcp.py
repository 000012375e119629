"""The asyncio I/O loop around one RIPP HTTP/2 endpoint: TCP streams (TLS or h2c), a
timer, wake-ups. The asyncio twin of :mod:`ripp_trio._tcp`, with the same public API on
top (:class:`ripp_core.aio.Server`, :class:`ripp_core.aio.Client`).

One task per connection reads into the endpoint; the endpoint's ``data_to_send`` is
written at once to the connection's ``StreamWriter`` (asyncio buffers it). An empty chunk
from the endpoint closes that connection after what came before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

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

logger = logging.getLogger("ripp.asyncio.tcp")

T = TypeVar("T")
_READ_SIZE = 65536


class TcpDriver:
    """Runs an HTTP/2 endpoint over TCP with asyncio (the same driver contract as the
    UDP :class:`~ripp_asyncio._driver.Driver`)."""

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
        self._server: asyncio.Server | None = None
        self._writers: dict[StreamKey, asyncio.StreamWriter | None] = {}
        self._pending: dict[StreamKey, list[bytes]] = {}  # bytes for a link still dialling
        self._changed: dict[str | None, asyncio.Event] = {}
        self._timer_changed = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.on_checks: Callable[[ChecksRequested], None] | None = None

    # ------------------------------------------------------------ DriverLike
    @property
    def address(self) -> tuple[str, int]:
        """The local TCP address the server listens on (clients: ("", 0))."""
        if self._server is None or not self._server.sockets:
            return ("", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def now(self) -> float:
        """The event loop's clock, as in the UDP driver."""
        return asyncio.get_running_loop().time()

    def run(self, action: Callable[[float], T]) -> T:
        """Apply a command at the current time; effects are flushed once tasks yield."""
        result = action(self.now())
        self._flush_wanted.set()
        return result

    async def checkpoint(self) -> None:
        """Let other tasks run (an asyncio yield)."""
        await asyncio.sleep(0)

    async def wait_changed(self, handle: str | None) -> None:
        """Sleep until the router reports a change for ``handle`` (None: endpoint-level)."""
        event = self._changed.get(handle)
        if event is None:
            event = self._changed[handle] = asyncio.Event()
        await event.wait()

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run an application task until it returns or the driver closes."""
        if self.closed:
            return
        running: asyncio.Task[None] = asyncio.ensure_future(task())
        self._tasks.add(running)
        running.add_done_callback(self._tasks.discard)

    def flush(self) -> None:
        """Write what the endpoint has to send, file its events, wake whoever waits."""
        for data, key in self.endpoint.data_to_send(self.now()):
            if key not in self._writers:
                if not data or isinstance(self.endpoint, RippH2Server):
                    continue  # a server never dials; a close of an unknown link is moot
                self._writers[key] = None
                self._pending[key] = []
                self.start_soon(lambda key=key: self._dial(key))  # type: ignore[misc]
            writer = self._writers[key]
            if writer is None:
                self._pending[key].append(data)
            elif data:
                writer.write(data)
            else:
                writer.close()
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
    async def serve(self) -> None:
        """Run the listener (servers), timer and flush loops until cancelled."""
        if self._listen is not None:
            host, port = self._listen
            self._server = await asyncio.start_server(
                self._accepted, host, port, ssl=self._ssl
            )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._timer_loop())
            tasks.create_task(self._flush_loop())

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        key: StreamKey = (peer[0], peer[1])
        assert isinstance(self.endpoint, RippH2Server)
        if self.closed or not self.endpoint.connection_made(key, self.now()):
            writer.close()
            return
        self._writers[key] = writer
        await self._connection(key, reader, writer)

    async def _dial(self, key: StreamKey) -> None:
        assert isinstance(self.endpoint, RippH2Client)
        server_name = None
        if self._ssl is not None:
            authority = self.endpoint.authority_of(key) or key[0]
            server_name = authority.rsplit(":", 1)[0].strip("[]")
        try:
            reader, writer = await asyncio.open_connection(
                key[0], key[1], ssl=self._ssl, server_hostname=server_name
            )
            if self._ssl is not None:
                chosen = writer.get_extra_info("ssl_object").selected_alpn_protocol()
                if chosen != H2_ALPN:
                    writer.close()
                    raise OSError(f"{key[0]}:{key[1]} did not agree to ALPN h2")
        except OSError as exc:
            logger.warning("cannot connect to %s:%d: %s", key[0], key[1], exc)
            self._lost(key)
            return
        self._writers[key] = writer
        for data in self._pending.pop(key, []):
            if data:
                writer.write(data)
            else:
                writer.close()
        await self._connection(key, reader, writer)

    async def _connection(
        self, key: StreamKey, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                self.endpoint.receive_data(data, key, self.now())
                self.flush()
        except (ConnectionError, OSError) as exc:
            logger.debug("connection %s ended: %s", key, exc)
        finally:
            self._lost(key)
            writer.close()

    def _lost(self, key: StreamKey) -> None:
        self._pending.pop(key, None)
        if key in self._writers:
            del self._writers[key]
            if not self.closed:
                self.endpoint.connection_lost(key, self.now())
                self.flush()

    async def _flush_loop(self) -> None:
        while not self.closed:
            await self._flush_wanted.wait()
            self._flush_wanted = asyncio.Event()
            if not self.closed:
                self.flush()

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed = asyncio.Event()
            deadline = self.endpoint.get_timer()
            delay = math.inf if deadline is None else max(0.0, deadline - self.now())
            fired = False
            try:
                await asyncio.wait_for(
                    self._timer_changed.wait(), None if math.isinf(delay) else delay
                )
            except TimeoutError:
                fired = True
            if self.closed:
                return
            if fired:
                self.endpoint.handle_timer(self.now())
                self.flush()

    async def aclose(self) -> None:
        """Terminate calls, send the goodbyes (GOAWAY), then close every connection."""
        if self.closed:
            return
        self.endpoint.close(self.now())
        self.flush()
        self.closed = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            if writer is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    await asyncio.wait_for(writer.drain(), 1.0)
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        for handle in list(self._changed):
            waiter = self._changed.pop(handle, None)
            if waiter is not None:
                waiter.set()


@asynccontextmanager
async def _running(driver: TcpDriver) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        serving = tasks.create_task(driver.serve())
        # Let the listener bind before the caller asks for its address.
        while driver._listen is not None and driver._server is None and not serving.done():
            await asyncio.sleep(0)
        try:
            yield
        finally:
            await driver.aclose()
            serving.cancel()


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
    """Run a RIPP server over HTTP/2 on TCP ``host:port`` for the ``async with``: TLS with
    ALPN h2 when ``ssl_context`` is given, else h2c. The same API as the Trio one."""
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
    checks: set[asyncio.Task[None]] = set()

    def spawn(event: ChecksRequested) -> None:
        task = asyncio.get_running_loop().create_task(
            run_checks(driver, endpoint, event, authorizer, identity_verifier, driver.now())
        )
        checks.add(task)  # a strong reference until done (asyncio keeps only weak ones)
        task.add_done_callback(checks.discard)

    if deferred:
        driver.on_checks = spawn
    async with _running(driver):
        try:
            yield Server(driver, endpoint)
        finally:
            for task in list(checks):
                task.cancel()


@asynccontextmanager
async def open_h2_client(
    *,
    calls_uris: list[str],
    token: str | Callable[[str], str],
    ssl_context: ssl.SSLContext | None = None,
    config: RippConfig | None = None,
    resolver: Callable[[str, int], tuple[str, int]] | None = None,
) -> AsyncIterator[Client]:
    """Run a RIPP client over HTTP/2 for the ``async with`` (TLS with ALPN h2 when
    ``ssl_context`` is given, else h2c). The same API as the Trio one."""
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
