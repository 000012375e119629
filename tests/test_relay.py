"""Tests of ripp_cli._relay: the loopback UDP relay with delay, jitter, loss and friends.

Real UDP sockets on 127.0.0.1 and the real clock: a trio echo server sits behind the relay
and a client socket talks to the relay. Datagrams are sent in windows so that no socket
buffer overflows: every loss seen here is the relay's doing.
"""

from __future__ import annotations

import functools
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from ripp_cli._relay import UdpRelay, open_relay, run_relay
from ripp_core.testing import Impairment

Address = tuple[str, int]


async def _udp_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    return sock


async def _echo(sock: trio.socket.SocketType) -> None:
    while True:
        data, source = await sock.recvfrom(65535)
        await sock.sendto(data, source)


@asynccontextmanager
async def _echo_server() -> AsyncIterator[Address]:
    """A trio UDP echo server on 127.0.0.1; yields its address."""
    sock = await _udp_socket()
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_echo, sock)
            yield sock.getsockname()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _setup(
    impairment: Impairment | None = None,
    *,
    seed: int = 1,
    return_impairment: Impairment | None = None,
) -> AsyncIterator[tuple[UdpRelay, trio.socket.SocketType]]:
    """Echo server, relay in front of it, and a client socket; yields (relay, client)."""
    async with (
        _echo_server() as server,
        open_relay(server, impairment, seed=seed, return_impairment=return_impairment) as relay,
    ):
        client = await _udp_socket()
        with client:
            yield relay, client


async def _receive_for(sock: trio.socket.SocketType, quiet: float) -> list[bytes]:
    """Everything that arrives until nothing has for ``quiet`` seconds."""
    received: list[bytes] = []
    while True:
        with trio.move_on_after(quiet):
            data, _ = await sock.recvfrom(65535)
            received.append(data)
            continue
        return received


# -- delay --------------------------------------------------------------------------------


@pytest.mark.trio
async def test_delay_applies_each_way() -> None:
    async with _setup(Impairment(delay=0.030)) as (relay, client):
        for i in range(5):
            start = trio.current_time()
            await client.sendto(b"ping %d" % i, relay.address)
            with trio.fail_after(1):
                data, source = await client.recvfrom(65535)
            rtt = trio.current_time() - start
            assert data == b"ping %d" % i
            assert source == relay.address
            assert 0.060 <= rtt < 0.200
        assert relay.to_server.forwarded == relay.to_client.forwarded == 5


@pytest.mark.trio
async def test_delayed_burst_is_scheduled_concurrently_and_in_order() -> None:
    # 200 datagrams at once with 50 ms each way: serial sleeping would take 20 s.
    async with _setup(Impairment(delay=0.050)) as (relay, client):
        start = trio.current_time()
        for i in range(200):
            await client.sendto(b"%d" % i, relay.address)
        received: list[bytes] = []
        with trio.fail_after(2):
            while len(received) < 200:
                data, _ = await client.recvfrom(65535)
                received.append(data)
        elapsed = trio.current_time() - start
        assert received == [b"%d" % i for i in range(200)]
        assert 0.100 <= elapsed < 0.400
        assert relay.pending == 0


@pytest.mark.trio
async def test_jitter_stays_within_bounds() -> None:
    async with _setup(Impairment(delay=0.020, jitter=0.010), return_impairment=Impairment()) as (
        relay,
        client,
    ):
        for _ in range(10):
            start = trio.current_time()
            await client.sendto(b"x", relay.address)
            with trio.fail_after(1):
                await client.recvfrom(65535)
            assert 0.010 <= trio.current_time() - start < 0.150


# -- loss, duplication --------------------------------------------------------------------


async def _send_windows(
    relay: UdpRelay, client: trio.socket.SocketType, total: int, window: int
) -> list[bytes]:
    """Send ``total`` numbered datagrams, ``window`` at a time, collecting the echoes."""
    received: list[bytes] = []
    for first in range(0, total, window):
        for i in range(first, min(first + window, total)):
            await client.sendto(b"%d" % i, relay.address)
        received += await _receive_for(client, quiet=0.05)
    return received


@pytest.mark.trio
async def test_loss_half_drops_about_half() -> None:
    # Loss on the way in only, so every datagram that reaches the server comes back.
    async with _setup(Impairment(loss=0.5), seed=7, return_impairment=Impairment()) as (
        relay,
        client,
    ):
        received = await _send_windows(relay, client, total=400, window=50)
        stats = relay.to_server
        assert stats.received == 400
        assert stats.dropped + stats.forwarded == 400
        assert 150 <= stats.dropped <= 250  # mean 200, sd 10: five sd either way
        assert len(received) == stats.forwarded == relay.to_client.forwarded
        assert relay.to_client.dropped == 0


@pytest.mark.trio
async def test_loss_is_a_function_of_the_seed() -> None:
    results = []
    for _ in range(2):
        async with _setup(Impairment(loss=0.3), seed=3, return_impairment=Impairment()) as (
            relay,
            client,
        ):
            results.append(await _send_windows(relay, client, total=100, window=50))
    assert results[0] == results[1]


@pytest.mark.trio
async def test_duplicate_sends_twice() -> None:
    async with _setup(Impairment(duplicate=1.0), return_impairment=Impairment()) as (
        relay,
        client,
    ):
        received = await _send_windows(relay, client, total=20, window=20)
        assert sorted(received) == sorted([b"%d" % i for i in range(20)] * 2)
        assert relay.to_server.duplicated == 20
        assert relay.to_server.forwarded == 40


@pytest.mark.trio
async def test_reorder_lets_later_datagrams_overtake() -> None:
    impairment = Impairment(reorder=0.3, reorder_delay=0.03)
    async with _setup(impairment, seed=5, return_impairment=Impairment()) as (relay, client):
        received = await _send_windows(relay, client, total=50, window=50)
        assert sorted(received) == sorted(b"%d" % i for i in range(50))
        assert received != [b"%d" % i for i in range(50)]
        assert relay.to_server.reordered > 0


@pytest.mark.trio
async def test_set_impairment_takes_effect_for_new_datagrams() -> None:
    async with _setup() as (relay, client):
        assert len(await _send_windows(relay, client, total=10, window=10)) == 10
        relay.set_impairment(Impairment(loss=1.0))
        assert await _send_windows(relay, client, total=10, window=10) == []
        assert relay.to_server.dropped == 10


# -- perfect link -------------------------------------------------------------------------


@pytest.mark.trio
async def test_no_impairment_passes_1000_datagrams_in_order() -> None:
    async with _setup() as (relay, client):
        received: list[bytes] = []
        window = 64
        sent = 0
        with trio.fail_after(3):
            # Sliding window: keep at most `window` datagrams in flight.
            while sent < window:
                await client.sendto(b"%d" % sent, relay.address)
                sent += 1
            while len(received) < 1000:
                data, _ = await client.recvfrom(65535)
                received.append(data)
                if sent < 1000:
                    await client.sendto(b"%d" % sent, relay.address)
                    sent += 1
        assert received == [b"%d" % i for i in range(1000)]
        assert relay.to_server.forwarded == relay.to_client.forwarded == 1000
        assert relay.to_server.dropped == relay.to_client.dropped == 0


@pytest.mark.trio
async def test_replies_follow_the_most_recent_client() -> None:
    async with _setup() as (relay, first):
        await first.sendto(b"one", relay.address)
        with trio.fail_after(1):
            assert (await first.recvfrom(100))[0] == b"one"
        second = await _udp_socket()
        with second:
            await second.sendto(b"two", relay.address)
            with trio.fail_after(1):
                assert (await second.recvfrom(100))[0] == b"two"
            assert relay.client == second.getsockname()


# -- addresses, lifecycle -----------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    "target",
    [("192.0.2.1", 4433), ("10.0.0.1", 4433), ("0.0.0.0", 4433), ("example.com", 443), ("::", 1)],
)
async def test_refuses_non_loopback_targets(target: Address) -> None:
    with pytest.raises(ValueError):
        async with open_relay(target, seed=1):
            pass  # pragma: no cover


@pytest.mark.trio
async def test_refuses_non_loopback_listen_and_bad_ports() -> None:
    with pytest.raises(ValueError):
        async with open_relay(("127.0.0.1", 4433), seed=1, listen=("0.0.0.0", 0)):
            pass  # pragma: no cover
    with pytest.raises(ValueError):
        async with open_relay(("127.0.0.1", 0), seed=1):
            pass  # pragma: no cover
    with pytest.raises(ValueError):
        async with open_relay(("127.0.0.1", 70000), seed=1):
            pass  # pragma: no cover


@pytest.mark.trio
async def test_localhost_and_ipv6_loopback_are_accepted() -> None:
    async with open_relay(("localhost", 4433), seed=1) as relay:
        assert relay.target == ("127.0.0.1", 4433)
        assert relay.address[0] == "127.0.0.1" and relay.address[1] > 0
    try:
        async with open_relay(("::1", 4433), seed=1) as relay:
            assert relay.address[0] == "::1"
    except OSError:  # pragma: no cover - host without IPv6 loopback
        pytest.skip("no IPv6 loopback")


@pytest.mark.trio
async def test_cancellation_stops_cleanly_and_closes_the_socket() -> None:
    async with _echo_server() as server:
        with trio.move_on_after(0.05) as scope:
            async with open_relay(server, Impairment(delay=0.5), seed=1) as relay:
                client = await _udp_socket()
                with client:
                    await client.sendto(b"never delivered", relay.address)
                    await trio.sleep_forever()
        assert scope.cancelled_caught
        assert relay.pending == 1  # still queued when the relay went away
        assert relay._socket.fileno() == -1


@pytest.mark.trio
async def test_run_relay_with_nursery_start() -> None:
    async with _echo_server() as server, trio.open_nursery() as nursery:
        relay: UdpRelay = await nursery.start(
            functools.partial(run_relay, ("127.0.0.1", 0), server, Impairment(), seed=1)
        )
        client = await _udp_socket()
        with client:
            await client.sendto(b"hello", relay.address)
            with trio.fail_after(1):
                assert (await client.recvfrom(100))[0] == b"hello"
        nursery.cancel_scope.cancel()
    assert relay._socket.fileno() == -1
