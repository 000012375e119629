"""A small UDP relay on loopback that delays, jitters, drops, duplicates and reorders.

``ripp call --delay-ms/--jitter-ms/--loss`` and the tests and benchmarks put this relay
between a RIPP client and server to see real sockets, real timers and real aioquic under a
bad network, without root or ``tc netem``::

    async with open_relay(("127.0.0.1", 4433), Impairment(delay=0.03, loss=0.01), seed=1) as relay:
        ...  # point the client at relay.address instead of the server

One socket, bound to a port the OS picks on loopback, faces both sides. A datagram from the
target (the server) goes to the client; a datagram from anyone else goes to the target, and
its sender becomes the client. So the relay serves **one client at a time**: it learns the
client's address from the first datagram and follows the most recent sender after that (a
restarted client or a QUIC connection migration just carries on; two clients at once would
steal each other's replies). Server datagrams that arrive before any client has spoken
count as ``failed``.

Each direction applies its own :class:`ripp_core.testing.Impairment` with the semantics of
``VirtualNetwork``: loss first, then maybe a duplicate, then each copy waits ``delay``
plus uniform jitter in ``[-jitter, +jitter]`` (never below zero) plus ``reorder_delay``
with probability ``reorder``. Each direction draws from its own ``random.Random`` seeded
from ``seed``, so which datagrams are lost is a pure function of the seed and the order in
which that direction's datagrams arrive. Timing is real (``trio.current_time``).

Delayed datagrams wait in a heap served by one sender task that sleeps until the earliest
is due, rather than one sleeping task per datagram, so thousands of datagrams a second are
fine. On exit (or cancellation) the socket is closed and datagrams still waiting are
discarded, as a network that goes away would.

The relay only ever talks to loopback addresses: it binds to loopback, refuses a target
that is not a loopback IP literal (or ``localhost``) with ValueError, and ignores
datagrams from non-loopback senders. This is a test tool, not a way to reach other hosts.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import random
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TypeAlias

import attrs
import trio

from ripp_core.testing import Impairment

__all__ = ["RelayStats", "UdpRelay", "open_relay", "run_relay"]

Address: TypeAlias = tuple[str, int]
"""A (host, port) pair with the host as a loopback IP literal."""

# Largest UDP payload; anything aioquic sends is far smaller.
_MAX_DATAGRAM = 65535
# Socket buffers asked for (the kernel may cap them), so that bursts are not dropped by
# the relay's own socket rather than by the impairment.
_SOCKET_BUFFER = 4 * 1024 * 1024


@attrs.define
class RelayStats:
    """Counters for one direction through the relay.

    Every ``received`` datagram is ``dropped`` (simulated loss) or sent on as one copy, or
    two if ``duplicated``; each copy ends up ``forwarded`` or ``failed`` (no client known
    yet, or the send raised), unless it is still waiting in the delay queue.
    """

    received: int = 0
    """Datagrams that arrived at the relay for this direction."""
    forwarded: int = 0
    """Copies sent on (a duplicated datagram counts twice)."""
    dropped: int = 0
    """Datagrams deliberately lost (``Impairment.loss``)."""
    duplicated: int = 0
    """Datagrams sent twice (``Impairment.duplicate``)."""
    reordered: int = 0
    """Copies held back by ``reorder_delay`` (``Impairment.reorder``)."""
    failed: int = 0
    """Copies that could not be sent: no client address yet, or an OS error on send."""


def _loopback_host(host: str) -> str:
    """Return ``host`` as a canonical loopback IP literal, or raise ValueError.

    Accepts loopback IP literals (``127.0.0.0/8``, ``::1``) and the name ``localhost``
    (taken as 127.0.0.1, without asking a resolver). Anything else is refused.
    """
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"the relay only accepts loopback IP addresses or 'localhost', not {host!r}"
        ) from None
    if not ip.is_loopback:
        raise ValueError(f"the relay only relays to loopback addresses, not {host!r}")
    return str(ip)


def _check_address(address: tuple[str, int], what: str) -> Address:
    """Validate a (host, port) pair: loopback host, port 0..65535; return it canonical."""
    host, port = address
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} port out of range: {port!r}")
    return (_loopback_host(host), port)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address as recvfrom reports it) is a loopback address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


# Delay-queue entry: (due time, sequence, payload, destination, counters of its direction).
# The unique sequence breaks ties in arrival order, so entries are never compared further.
_Entry: TypeAlias = tuple[float, int, bytes, Address, RelayStats]


class UdpRelay:
    """A running relay: its address, its counters, and its impairments.

    Made by :func:`open_relay` or :func:`run_relay`, not directly. Point the client at
    :attr:`address`; the relay forwards to :attr:`target`.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        target: Address,
        impairment: Impairment,
        return_impairment: Impairment,
        seed: int,
    ) -> None:
        """Wrap an already bound socket; use :func:`open_relay` instead."""
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self._address: Address = (host, port)
        self._target = target
        if self._address == target:
            raise ValueError("the relay cannot relay to itself")
        self.to_server_impairment = impairment
        """Impairment of datagrams from the client to the target; may be replaced live."""
        self.to_client_impairment = return_impairment
        """Impairment of datagrams from the target to the client; may be replaced live."""
        self.to_server = RelayStats()
        """Counters for client-to-target datagrams."""
        self.to_client = RelayStats()
        """Counters for target-to-client datagrams."""
        self.client: Address | None = None
        """The client's address: the most recent sender that is not the target."""
        self.ignored = 0
        """Datagrams ignored because they came from a non-loopback address."""
        self._rng_to_server = random.Random(f"ripp-relay:{seed}:to-server")
        self._rng_to_client = random.Random(f"ripp-relay:{seed}:to-client")
        self._heap: list[_Entry] = []
        self._sequence = 0
        self._wakeup = trio.Event()

    @property
    def address(self) -> Address:
        """Where clients send: the relay's loopback address and OS-chosen port."""
        return self._address

    @property
    def target(self) -> Address:
        """The server the relay forwards to."""
        return self._target

    @property
    def pending(self) -> int:
        """Datagram copies waiting in the delay queue."""
        return len(self._heap)

    def set_impairment(
        self, impairment: Impairment, return_impairment: Impairment | None = None
    ) -> None:
        """Change the impairments for datagrams arriving from now on (both directions alike
        unless ``return_impairment`` is given). Datagrams already queued keep their times.
        """
        self.to_server_impairment = impairment
        self.to_client_impairment = impairment if return_impairment is None else return_impairment

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled (the socket is not closed here; its owner closes it)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            task_status.started()
            await self._receive_loop()

    # -- internals --------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Take datagrams from both sides and queue them for the sender task."""
        sock = self._socket
        while True:
            try:
                data, source = await sock.recvfrom(_MAX_DATAGRAM)
            except (ConnectionRefusedError, ConnectionResetError):
                # An ICMP "port unreachable" for an earlier send (e.g. the server is not
                # up yet, or the client went away) surfaces here on Linux; the send was
                # already counted, so carry on.
                continue
            now = trio.current_time()
            sender: Address = (source[0], source[1])
            if sender == self._target:
                client = self.client
                if client is None:
                    self.to_client.received += 1
                    self.to_client.failed += 1
                    continue
                self._schedule(
                    data,
                    client,
                    now,
                    self.to_client_impairment,
                    self._rng_to_client,
                    self.to_client,
                )
            elif _is_loopback(sender[0]):
                self.client = sender
                self._schedule(
                    data,
                    self._target,
                    now,
                    self.to_server_impairment,
                    self._rng_to_server,
                    self.to_server,
                )
            else:  # pragma: no cover - a loopback-bound socket sees only loopback senders
                self.ignored += 1

    def _schedule(
        self,
        data: bytes,
        destination: Address,
        now: float,
        impairment: Impairment,
        rng: random.Random,
        stats: RelayStats,
    ) -> None:
        """Apply ``impairment`` to one datagram and queue its copies (same order of random
        draws as ``VirtualNetwork``: loss, duplicate, then jitter and reorder per copy).
        """
        stats.received += 1
        if impairment.loss and rng.random() < impairment.loss:
            stats.dropped += 1
            return
        copies = 1
        if impairment.duplicate and rng.random() < impairment.duplicate:
            copies = 2
            stats.duplicated += 1
        heap = self._heap
        for _ in range(copies):
            delay = impairment.delay
            if impairment.jitter:
                delay += rng.uniform(-impairment.jitter, impairment.jitter)
            if impairment.reorder and rng.random() < impairment.reorder:
                delay += impairment.reorder_delay
                stats.reordered += 1
            self._sequence += 1
            heapq.heappush(heap, (now + max(delay, 0.0), self._sequence, data, destination, stats))
            if heap[0][1] == self._sequence:
                # The new copy is due first: the sender must re-arm its deadline.
                self._wakeup.set()

    async def _send_loop(self) -> None:
        """Send every queued copy when it is due; the only task that sends on the socket."""
        sock = self._socket
        heap = self._heap
        while True:
            while heap and heap[0][0] <= trio.current_time():
                _, _, data, destination, stats = heapq.heappop(heap)
                # Counted before the send: trio yields after a successful send, and by then
                # the receiver may already have the datagram and be reading the counters. A
                # failed send raises before yielding, so the correction below is never seen.
                stats.forwarded += 1
                try:
                    await sock.sendto(data, destination)
                except OSError:
                    stats.forwarded -= 1
                    stats.failed += 1
            # New event first, deadline second, no checkpoint in between: a datagram queued
            # after this point sets the new event, so no wake-up is missed.
            self._wakeup = trio.Event()
            deadline = heap[0][0] if heap else math.inf
            with trio.move_on_at(deadline):
                await self._wakeup.wait()


async def _bind(listen: tuple[str, int]) -> trio.socket.SocketType:
    """A UDP socket bound to the loopback address ``listen`` (port 0: the OS picks)."""
    host, _ = listen
    family = (
        stdlib_socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else stdlib_socket.AF_INET
    )
    sock = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    try:
        for option in (stdlib_socket.SO_RCVBUF, stdlib_socket.SO_SNDBUF):
            with suppress(OSError):
                sock.setsockopt(stdlib_socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        await sock.bind(listen)
    except BaseException:
        sock.close()
        raise
    return sock


def _prepare(
    listen: tuple[str, int] | None,
    target: tuple[str, int],
    impairment: Impairment | None,
    return_impairment: Impairment | None,
) -> tuple[Address, Address, Impairment, Impairment]:
    """Validate addresses (loopback only) and default the impairments."""
    target = _check_address(target, "target")
    if target[1] == 0:
        raise ValueError("target port must not be 0")
    if listen is None:
        listen = ("::1" if ":" in target[0] else "127.0.0.1", 0)
    listen = _check_address(listen, "listen")
    if (":" in listen[0]) != (":" in target[0]):
        raise ValueError("listen and target addresses must be of the same IP version")
    forward = impairment if impairment is not None else Impairment()
    backward = return_impairment if return_impairment is not None else forward
    return listen, target, forward, backward


@asynccontextmanager
async def open_relay(
    target: tuple[str, int],
    impairment: Impairment | None = None,
    *,
    seed: int,
    return_impairment: Impairment | None = None,
    listen: tuple[str, int] | None = None,
) -> AsyncIterator[UdpRelay]:
    """Run a relay to ``target`` for the duration of the ``async with`` block.

    ``impairment`` applies to both directions (so ``delay`` is one-way and the round trip
    gains twice that) unless ``return_impairment`` is given for target-to-client
    datagrams; None means a perfect link. ``listen`` defaults to an OS-chosen port on
    127.0.0.1 (``::1`` for an IPv6 target). Raises ValueError for a non-loopback target or
    listen address. Leaving the block stops the relay and closes its socket.
    """
    listen, target, forward, backward = _prepare(listen, target, impairment, return_impairment)
    sock = await _bind(listen)
    with sock:
        relay = UdpRelay(sock, target, forward, backward, seed)
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            try:
                yield relay
            finally:
                nursery.cancel_scope.cancel()


async def run_relay(
    listen: tuple[str, int],
    target: tuple[str, int],
    impairment: Impairment | None = None,
    *,
    seed: int,
    return_impairment: Impairment | None = None,
    task_status: trio.TaskStatus[UdpRelay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay from ``listen`` to ``target`` until cancelled (for ``nursery.start``).

    Like :func:`open_relay`, but for a long-running task (e.g. a ``ripp relay`` command):
    ``await nursery.start(run_relay, listen, target, impairment, seed=1)`` returns the
    :class:`UdpRelay` once the socket is bound (``listen`` port 0 lets the OS choose).
    """
    listen, target, forward, backward = _prepare(listen, target, impairment, return_impairment)
    sock = await _bind(listen)
    with sock:
        relay = UdpRelay(sock, target, forward, backward, seed)
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            task_status.started(relay)
