"""The asyncio I/O loop around one RIPP endpoint: a UDP socket, a timer, wake-ups.

It holds no protocol logic: datagrams go into the endpoint, the endpoint's datagrams go to
the socket, its timer is slept on, and its events are filed by the core's EventRouter;
callers waiting on a call are woken when the router says that call changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ripp_core import EventRouter, RippClient, RippConfig, RippServer
from ripp_core._events import ChecksRequested

logger = logging.getLogger("ripp.asyncio")

Endpoint = RippClient | RippServer
T = TypeVar("T")
_MAX_DATAGRAM = 65536


class Driver:
    """Runs ``endpoint`` over a non-blocking UDP socket inside an asyncio task group."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.router = EventRouter()
        self._changed: dict[str | None, asyncio.Event] = {}
        self._timer_changed = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        # Set by open_server when a hook is async: spawns a task per parked request.
        self.on_checks: Callable[[ChecksRequested], None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The local UDP address."""
        host, port = self.sock.getsockname()[:2]
        return host, port

    def now(self) -> float:
        """The driver's clock (the event loop's, so QUIC and RIPP timers use loop time)."""
        return asyncio.get_running_loop().time()

    def run(self, action: Callable[[float], T]) -> T:
        """Apply a command to the endpoint at the current time; its effects are flushed
        once the running tasks yield, so that commands issued together (say, a frame for
        each of many calls) leave in the same datagrams instead of one flush each."""
        result = action(self.now())
        self._flush_wanted.set()
        return result

    async def _flush_loop(self) -> None:
        while not self.closed:
            await self._flush_wanted.wait()
            self._flush_wanted = asyncio.Event()
            if not self.closed:
                self.flush()

    def flush(self) -> None:
        """Send what the endpoint has to send, file its events, wake whoever waits."""
        now = self.now()
        for data, addr in self.endpoint.datagrams_to_send(now):
            try:
                self.sock.sendto(data, addr)
            except OSError as exc:
                # UDP may drop: a full buffer (EAGAIN) or a vanished peer port is loss,
                # which QUIC repairs; anything else is worth a log line.
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED):
                    logger.warning("sendto %s failed: %s", addr, exc)
        touched: set[str | None] = set()
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, ChecksRequested) and self.on_checks is not None:
                self.on_checks(event)
                continue
            touched.add(self.router.route(event))
        if self.router.incoming:
            touched.add(None)  # whoever waits for new calls
        for handle in touched:
            self._wake(handle)
        self._wake_timer()

    def _wake(self, handle: str | None) -> None:
        event = self._changed.pop(handle, None)
        if event is not None:
            event.set()

    def _wake_timer(self) -> None:
        self._timer_changed.set()

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
        """Run ``task`` (an application task, e.g. a call handler) until it returns or
        the driver closes."""
        if self.closed:
            return
        running: asyncio.Task[None] = asyncio.ensure_future(task())
        self._tasks.add(running)
        running.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        """Run the receive and timer loops until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._receive_loop())
            tasks.create_task(self._timer_loop())
            tasks.create_task(self._flush_loop())

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        if self.sock.fileno() == -1:  # closed (Ctrl-C at startup) before this task ran
            return
        loop.add_reader(self.sock, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                if self.closed:  # closed while this task was waking up
                    return
                self._receive_ready()
        finally:
            if self.sock.fileno() != -1:  # close() has not removed it yet
                loop.remove_reader(self.sock)

    def _receive_ready(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:  # ICMP from an earlier send; not for us
                continue
            self.endpoint.receive_datagram(data, addr[:2], self.now())
        self.flush()

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed.clear()
            deadline = self.endpoint.get_timer()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline) as sleep:
                    await self._timer_changed.wait()
            if self.closed:
                return
            if sleep.expired():
                self.endpoint.handle_timer(self.now())
                self.flush()

    def close(self) -> None:
        """Terminate calls, close connections, send the goodbyes and close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self.endpoint.close(self.now())
            self.flush()
        finally:
            asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()
            for task in list(self._tasks):
                task.cancel()
            for handle in list(self._changed):
                self._wake(handle)


def open_udp_socket(host: str, port: int, config: RippConfig | None = None) -> socket.socket:
    """A bound, non-blocking UDP socket (IPv4 or IPv6 by the host's form), its buffers
    sized from ``config`` (``udp_receive_buffer`` / ``udp_send_buffer``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    config = config or RippConfig()
    size_buffer(sock, socket.SO_RCVBUF, config.udp_receive_buffer, "net.core.rmem_max")
    size_buffer(sock, socket.SO_SNDBUF, config.udp_send_buffer, "net.core.wmem_max")
    sock.bind((host, port))
    return sock


_capped_logged: set[int] = set()


def size_buffer(sock: socket.socket, option: int, wanted: int, sysctl: str) -> int:
    """Ask for a socket buffer of ``wanted`` bytes (0: leave the OS default); returns the
    size granted. A kernel cap is logged once per process: the default (208 KiB on Linux)
    overflows under load, so an operator should raise ``sysctl`` rather than lose packets
    unknowingly; it is not an error, the endpoint works with what it got."""
    if wanted > 0:
        sock.setsockopt(socket.SOL_SOCKET, option, wanted)
    granted = sock.getsockopt(socket.SOL_SOCKET, option)
    # Linux reports twice the size asked for (it counts its bookkeeping); the request was
    # capped when even that falls short of what we asked.
    if wanted > 0 and granted < wanted and option not in _capped_logged:
        _capped_logged.add(option)
        logger.warning(
            "UDP %s buffer: asked for %d bytes, the kernel granted %d (raise %s)",
            "receive" if option == socket.SO_RCVBUF else "send", wanted, granted, sysctl,
        )
    return granted
