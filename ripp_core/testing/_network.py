"""An in-memory datagram network with virtual time, for deterministic whole-call tests.

Endpoints are sans-IO objects with aioquic's datagram contract (``receive_datagram``,
``datagrams_to_send``, ``get_timer``, ``handle_timer``): a raw ``QuicConnection`` fits, and
so do ripp_core's client and server endpoints. The network owns the clock: it pops the next
event (a datagram delivery, an endpoint timer or a test callback) from a heap, jumps virtual
time to it, runs it, and then collects whatever the touched endpoints want to send.

Nothing here reads a clock or touches a socket, and every random choice (loss, jitter,
duplication, reordering) comes from one ``random.Random(seed)``, so a run is a pure function
of the seed and the test's actions: the same seed gives the same packets at the same times.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Protocol, TypeAlias

import attrs

__all__ = [
    "Address",
    "Endpoint",
    "Impairment",
    "LinkStats",
    "StreamEndpoint",
    "StreamKey",
    "VirtualNetwork",
]

Address: TypeAlias = tuple[str, int]
"""A network address, ``(host, port)`` as in aioquic."""


class Endpoint(Protocol):
    """What the network needs from a host: aioquic's sans-IO datagram contract."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram that arrived from ``addr`` at virtual time ``now``."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Return the datagrams the endpoint wants sent now, each with its destination."""
        ...

    def get_timer(self) -> float | None:
        """Return the virtual time at which ``handle_timer`` must be called, if any."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run whatever timer expired at virtual time ``now``."""


StreamKey: TypeAlias = tuple[str, int] | tuple[str, int, int]
"""A byte-stream connection's name: ``(host, port)``, or ``(host, port, n)`` for a
client's n-th connection to that address. The network delivers a chunk sent to
``(host, port, n)`` to the host at ``(host, port)`` as coming from
``(sender host, sender port, n)``, so both ends name the connection alike (as the
ephemeral port of a real TCP connection does)."""


class StreamEndpoint(Protocol):
    """What the network needs from a host whose links are byte streams (TCP): the
    HTTP/2 binding's contract. Chunks arrive in order, none lost or duplicated; an empty
    chunk from ``data_to_send`` closes the stream after what came before it."""

    def receive_data(self, data: bytes, peer: StreamKey, now: float) -> None:
        """Take bytes that arrived on connection ``peer`` at virtual time ``now``."""

    def data_to_send(self, now: float) -> list[tuple[bytes, StreamKey]]:
        """Return the chunks the endpoint wants written now, each with its connection."""
        ...

    def connection_lost(self, peer: StreamKey, now: float) -> None:
        """The byte stream with ``peer`` was closed."""

    def get_timer(self) -> float | None:
        """Return the virtual time at which ``handle_timer`` must be called, if any."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run whatever timer expired at virtual time ``now``."""


#: A lost TCP segment is delivered this much later (a minimum retransmission timeout),
#: holding back every byte behind it: TCP's head-of-line blocking.
STREAM_RETRANSMIT_DELAY = 0.2


def _check_probability(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _check_non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0:  # written this way so that NaN is rejected too
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class Impairment:
    """How one direction of a link mistreats datagrams.

    Each datagram is first lost with probability ``loss``; a surviving one is sent twice with
    probability ``duplicate``. Every copy then takes ``delay`` seconds, plus a uniform
    ``jitter`` in ``[-jitter, +jitter]`` (never below zero), plus ``reorder_delay`` with
    probability ``reorder`` so that it overtakes nothing but is overtaken by later datagrams.
    The default is a perfect link: no delay, no loss.
    """

    delay: float = attrs.field(default=0.0, validator=_check_non_negative)
    """One-way delay in seconds."""
    jitter: float = attrs.field(default=0.0, validator=_check_non_negative)
    """Half-width in seconds of the uniform variation added to ``delay``."""
    loss: float = attrs.field(default=0.0, validator=_check_probability)
    """Probability that a datagram is dropped."""
    duplicate: float = attrs.field(default=0.0, validator=_check_probability)
    """Probability that a datagram that was not dropped is delivered twice."""
    reorder: float = attrs.field(default=0.0, validator=_check_probability)
    """Probability that a datagram copy is held back by an extra ``reorder_delay``."""
    reorder_delay: float = attrs.field(default=0.01, validator=_check_non_negative)
    """Extra delay in seconds for a reordered datagram."""


@attrs.define
class LinkStats:
    """Counters for one direction of a link (``src`` to ``dst``).

    ``sent`` counts datagrams handed to the network; every one ends up ``lost``, or is
    delivered (``delivered``) or ``undeliverable`` (no endpoint at ``dst`` on arrival), once
    or, if ``duplicated``, twice. Datagrams still in flight are in none of the last three.
    """

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    undeliverable: int = 0


@attrs.define(eq=False)
class _Host:
    """Network-side bookkeeping for one registered endpoint."""

    addr: Address
    endpoint: Endpoint | StreamEndpoint
    stream: bool = False  # a byte-stream (TCP) host: see VirtualNetwork.add_stream
    # The timer value last seen from get_timer() and pushed on the heap. A heap entry is live
    # only while its generation equals the host's, so re-arming a timer needs no heap search.
    timer: float | None = None
    generation: int = 0
    # Virtual time at which this host's timer last fired (see VirtualNetwork.timer_resolution).
    fired_at: float | None = None


@attrs.define(eq=False)
class _Delivery:
    """Heap event: a datagram (or byte-stream chunk) arrives at ``dst``."""

    src: Address
    dst: Address
    data: bytes
    key: StreamKey | None = None  # byte streams: the connection as the receiver names it


@attrs.define(eq=False)
class _TimerFire:
    """Heap event: ``host``'s timer is due; stale once the host's generation moved on."""

    host: _Host
    generation: int

    def is_live(self, hosts: dict[Address, _Host]) -> bool:
        """Whether this is still the host's current timer and the host is still attached."""
        return hosts.get(self.host.addr) is self.host and self.host.generation == self.generation


@attrs.define(eq=False)
class _Scheduled:
    """Heap event: a test callback is due."""

    callback: Callable[[], None]


# Heap entry: (time, sequence, event). Ties in time are broken by the unique, increasing
# sequence number alone (insertion order), so events are never compared and runs are
# reproducible.
_Event: TypeAlias = tuple[float, int, _Delivery | _TimerFire | _Scheduled]


class VirtualNetwork:
    """A deterministic in-memory network of sans-IO endpoints, with virtual time.

    Typical use::

        net = VirtualNetwork(seed=1)
        net.add(("10.0.0.1", 4433), server)
        net.add(("10.0.0.2", 50000), client)
        client.connect(("10.0.0.1", 4433), now=net.now)
        assert net.run_until(lambda: client_is_ready(), timeout=5.0)

    Endpoint methods called directly by the test (outside a callback given to ``schedule``)
    are picked up because every public entry point (``flush``, ``step``, ``run_until``,
    ``run_for``) first polls every endpoint. Inside a run, only endpoints touched by the last
    event are polled, which keeps large simulations cheap.
    """

    # Guard against an endpoint whose timer never stops firing at the same instant: better a
    # clear error than a test that hangs.
    max_events_per_instant = 1_000_000

    # A timer that fired and is re-armed for the same instant (or earlier) is moved this
    # much later, as a real clock would have moved on by then. aioquic needs it: exactly at
    # its ACK deadline (ack_at == now) it still defers to the pacer, and only once
    # now > ack_at does it send the ACK; without a step forward that is an endless loop.
    timer_resolution = 1e-6

    def __init__(self, seed: int, start: float = 0.0, default: Impairment | None = None) -> None:
        """Create an empty network whose clock reads ``start`` and whose randomness is seeded."""
        self._rng = random.Random(seed)
        self._now = float(start)
        self._default = default if default is not None else Impairment()
        self._impairments: dict[tuple[Address, Address], Impairment] = {}
        self._hosts: dict[Address, _Host] = {}
        self._heap: list[_Event] = []
        self._sequence = 0
        self._dirty: set[Address] = set()
        self._stats: dict[tuple[Address, Address], LinkStats] = {}
        self._events_this_instant = 0
        self._stream_tail: dict[tuple[Address, StreamKey], float] = {}

    # -- topology -------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._now

    def add(self, addr: Address, endpoint: Endpoint) -> None:
        """Attach ``endpoint`` at ``addr``; datagrams it sends come from ``addr``."""
        if addr in self._hosts:
            raise ValueError(f"address {addr!r} is already in use")
        self._hosts[addr] = _Host(addr=addr, endpoint=endpoint)
        self._dirty.add(addr)

    def add_stream(self, addr: Address, endpoint: StreamEndpoint) -> None:
        """Attach a byte-stream endpoint (HTTP/2 over TCP) at ``addr``.

        Its links keep TCP's promises: every chunk arrives, once, in order. Delay and
        jitter apply; a "lost" chunk arrives ``STREAM_RETRANSMIT_DELAY`` late and holds
        back every chunk behind it, as a retransmission does on a real TCP connection.
        """
        if addr in self._hosts:
            raise ValueError(f"address {addr!r} is already in use")
        self._hosts[addr] = _Host(addr=addr, endpoint=endpoint, stream=True)
        self._dirty.add(addr)

    def remove(self, addr: Address) -> None:
        """Detach the endpoint at ``addr``, as if its host died.

        Its timers stop, and datagrams to ``addr`` (including those already in flight) are
        counted as undeliverable, unless another endpoint is added at ``addr`` before they
        arrive: then that one gets them, as a restarted host would.
        """
        del self._hosts[addr]
        self._dirty.discard(addr)

    def endpoint(self, addr: Address) -> Endpoint | StreamEndpoint | None:
        """Return the endpoint at ``addr``, or None."""
        host = self._hosts.get(addr)
        return host.endpoint if host is not None else None

    # -- impairments and counters ---------------------------------------------------------

    def set_default_impairment(self, impairment: Impairment) -> None:
        """Use ``impairment`` for every direction that has no impairment of its own."""
        self._default = impairment

    def set_impairment(self, src: Address, dst: Address, impairment: Impairment) -> None:
        """Impair datagrams from ``src`` to ``dst`` (one direction only) from now on."""
        self._impairments[(src, dst)] = impairment

    def impairment(self, src: Address, dst: Address) -> Impairment:
        """Return the impairment in force from ``src`` to ``dst``."""
        return self._impairments.get((src, dst), self._default)

    def link_stats(self, src: Address, dst: Address) -> LinkStats:
        """Return a copy of the counters for datagrams from ``src`` to ``dst``."""
        stats = self._stats.get((src, dst))
        return attrs.evolve(stats) if stats is not None else LinkStats()

    @property
    def stats(self) -> dict[tuple[Address, Address], LinkStats]:
        """A copy of the counters of every direction that has carried a datagram."""
        return {link: attrs.evolve(stats) for link, stats in self._stats.items()}

    # -- driving ----------------------------------------------------------------------------

    def schedule(self, at: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` at virtual time ``at`` (e.g. to send a media frame).

        Afterwards every endpoint is polled for datagrams, since the callback may have
        called any of them.
        """
        if at < self._now:
            raise ValueError(f"cannot schedule in the past ({at} < now {self._now})")
        self._push(at, _Scheduled(callback))

    def flush(self) -> None:
        """Collect datagrams and timers from every endpoint."""
        self._dirty.update(self._hosts)
        self._flush_dirty()

    def step(self) -> bool:
        """Run the next event, then collect what it caused; False if nothing is pending."""
        self.flush()
        return self._step()

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run events until ``predicate()`` holds or ``timeout`` virtual seconds have passed.

        Returns the final value of ``predicate()``. On timeout the clock is left at the
        deadline, as if the test had waited that long.
        """
        deadline = self._now + timeout
        self.flush()
        while not predicate():
            next_time = self._next_event_time()
            if next_time is None or next_time > deadline:
                self._advance(deadline)
                return predicate()
            self._step()
        return True

    def run_for(self, duration: float) -> None:
        """Run every event due in the next ``duration`` virtual seconds; end at now+duration."""
        deadline = self._now + duration
        self.flush()
        while True:
            next_time = self._next_event_time()
            if next_time is None or next_time > deadline:
                break
            self._step()
        self._advance(deadline)

    # -- internals --------------------------------------------------------------------------

    def _push(self, at: float, event: _Delivery | _TimerFire | _Scheduled) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, event))

    def _advance(self, to: float) -> None:
        if to > self._now:
            self._now = to
            self._events_this_instant = 0

    def _next_event_time(self) -> float | None:
        # Stale timer entries are dropped here so that a deadline check never sees them.
        heap = self._heap
        while heap:
            at, _, event = heap[0]
            if isinstance(event, _TimerFire) and not event.is_live(self._hosts):
                heapq.heappop(heap)
                continue
            return at
        return None

    def _step(self) -> bool:
        if self._next_event_time() is None:
            return False
        at, _, event = heapq.heappop(self._heap)
        self._advance(at)
        self._events_this_instant += 1
        if self._events_this_instant > self.max_events_per_instant:
            raise RuntimeError(
                f"more than {self.max_events_per_instant} events at virtual time {self._now}: "
                "an endpoint timer is probably firing without making progress"
            )

        if isinstance(event, _Delivery):
            self._deliver(event.src, event.dst, event.data, event.key)
        elif isinstance(event, _TimerFire):
            host = event.host
            # Forget the fired value so that the refresh below re-arms even an identical one.
            host.timer = None
            host.generation += 1
            host.fired_at = self._now
            host.endpoint.handle_timer(self._now)
            self._dirty.add(host.addr)
        else:
            event.callback()
            # The callback may have poked any endpoint.
            self._dirty.update(self._hosts)

        self._flush_dirty()
        return True

    def _deliver(
        self, src: Address, dst: Address, data: bytes, key: StreamKey | None = None
    ) -> None:
        stats = self._link(src, dst)
        host = self._hosts.get(dst)
        if host is None:
            stats.undeliverable += 1
            return
        stats.delivered += 1
        if host.stream:
            endpoint: StreamEndpoint = host.endpoint  # type: ignore[assignment]
            peer = key if key is not None else src
            if data:
                endpoint.receive_data(data, peer, self._now)
            else:
                endpoint.connection_lost(peer, self._now)
        else:
            datagram_endpoint: Endpoint = host.endpoint  # type: ignore[assignment]
            datagram_endpoint.receive_datagram(data, src, self._now)
        self._dirty.add(dst)

    def _link(self, src: Address, dst: Address) -> LinkStats:
        stats = self._stats.get((src, dst))
        if stats is None:
            stats = self._stats[(src, dst)] = LinkStats()
        return stats

    def _flush_dirty(self) -> None:
        # Sorted so that the order of random draws (and hence the run) does not depend on
        # set iteration order.
        while self._dirty:
            dirty = sorted(self._dirty)
            self._dirty.clear()
            for addr in dirty:
                host = self._hosts.get(addr)
                if host is None:
                    continue
                if host.stream:
                    endpoint: StreamEndpoint = host.endpoint  # type: ignore[assignment]
                    for data, dst in endpoint.data_to_send(self._now):
                        self._transmit_stream(addr, dst, data)
                else:
                    datagram_endpoint: Endpoint = host.endpoint  # type: ignore[assignment]
                    for data, dst in datagram_endpoint.datagrams_to_send(self._now):
                        self._transmit(addr, dst, data)
                # aioquic arms its loss-detection timer while building datagrams, so the
                # timer is read only after datagrams_to_send.
                self._refresh_timer(host)

    def _refresh_timer(self, host: _Host) -> None:
        timer = host.endpoint.get_timer()
        if timer == host.timer:
            return
        host.generation += 1
        host.timer = timer
        if timer is not None:
            # A timer already due fires now; virtual time never runs backwards.
            at = max(timer, self._now)
            if host.fired_at is not None and at <= host.fired_at:
                at = host.fired_at + self.timer_resolution
            self._push(at, _TimerFire(host, host.generation))

    def _transmit(self, src: Address, dst: Address, data: bytes) -> None:
        rng = self._rng
        impairment = self._impairments.get((src, dst), self._default)
        stats = self._link(src, dst)
        stats.sent += 1
        # Draw only for the effects that are enabled, so a perfect link consumes no
        # randomness and adding an unrelated lossy link does not perturb other links' draws
        # more than necessary.
        if impairment.loss and rng.random() < impairment.loss:
            stats.lost += 1
            return
        copies = 1
        if impairment.duplicate and rng.random() < impairment.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            delay = impairment.delay
            if impairment.jitter:
                delay += rng.uniform(-impairment.jitter, impairment.jitter)
            if impairment.reorder and rng.random() < impairment.reorder:
                delay += impairment.reorder_delay
                stats.reordered += 1
            self._push(self._now + max(delay, 0.0), _Delivery(src, dst, data))

    def _transmit_stream(self, src: Address, to: StreamKey, data: bytes) -> None:
        dst: Address = (to[0], to[1])
        key: StreamKey = (src[0], src[1], to[2]) if len(to) == 3 else src
        impairment = self._impairments.get((src, dst), self._default)
        stats = self._link(src, dst)
        stats.sent += 1
        delay = impairment.delay
        if impairment.jitter:
            delay += self._rng.uniform(-impairment.jitter, impairment.jitter)
        if impairment.loss and self._rng.random() < impairment.loss:
            stats.lost += 1  # and retransmitted: late, never missing
            delay += STREAM_RETRANSMIT_DELAY
        # In order: nothing overtakes a chunk still in flight on the same connection.
        at = max(self._now + max(delay, 0.0), self._stream_tail.get((src, to), 0.0))
        self._stream_tail[(src, to)] = at
        self._push(at, _Delivery(src, dst, data, key))
