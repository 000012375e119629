"""ACKs riding with media (protocol §9.2): datagrams and CPU per frame, in virtual time.

Real aioquic QUIC and HTTP/3 with real TLS 1.3 over the in-memory
:class:`~ripp_core.testing.VirtualNetwork` (no sockets, no wall clock): ``calls`` two-way
G.711 calls between one RippClient and one RippServer, each side sending a 20 ms frame
every 20 ms from its own random phase (seeded), as independent callers do. The network
polls every endpoint for datagrams after each event, as a driver flushes on every wake-up.

For each RippConfig variant (``media_ack_delay``, stream bounds...) it reports:

* ``datagrams_per_frame``: UDP datagrams both ways per media frame sent (both ways);
* ``cpu_ms_per_call_s``: CPU time of this one process, which runs both ends, per call and
  per second of media: the cost of the RIPP core plus aioquic, without the kernel's share
  (fewer datagrams also save ``sendto``/``recvfrom`` calls on a real socket);
* ``streams_per_call``: media streams the client had open at the end, on average;
* ``delivered_pct``, ``p99_ms``: frames delivered (either way) and the one-way latency.

Variants run interleaved, ``reps`` times, so that machine load hits each alike; the
figures are medians. CPU time is still disturbed by other work on a shared machine
(caches, frequency), datagrams are not: they are exact for a seed.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ripp_core import (
    CallState,
    CallStateChanged,
    Codec,
    MediaReceived,
    RippClient,
    RippConfig,
    RippServer,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
)
from ripp_core.testing import (
    Impairment,
    TestPki,
    VirtualNetwork,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)

from . import FRAME, FRAME_BYTES, IDENTITY, TOKEN, percentile
from .hol import CLIENT, SERVER, _Drained

#: The variants compared by default: ACKs at once (today's behaviour) and riding ACKs.
VARIANTS: dict[str, dict[str, Any]] = {
    "ack_at_once": {"media_ack_delay": 0.0},
    "ack_rides_20ms": {"media_ack_delay": 0.02},
}


def run_calls(
    pki: TestPki,
    config: RippConfig,
    *,
    calls: int,
    seconds: float,
    delay: float = 0.0005,
    loss: float = 0.0,
    seed: int = 1,
) -> dict[str, Any]:
    """``calls`` two-way calls for ``seconds`` of media; figures as in the module doc."""
    net = VirtualNetwork(seed=seed, default=Impairment(delay=delay, loss=loss))
    server = RippServer(
        server_quic_configuration(pki),
        instance_id="bench",
        config=config,
        authorizer=insecure_accept_any_bearer,
        identity_verifier=insecure_accept_any_identity,
    )
    client = RippClient(
        client_quic_configuration(pki),
        calls_uris=[f"https://localhost:{SERVER[1]}/ripp/calls"],
        token=TOKEN,
        config=config,
    )
    states: dict[str, CallState] = {}
    sent: dict[tuple[str, int], float] = {}  # (direction:handle, sequence) -> send time
    latencies: list[float] = []
    peer: dict[str, str] = {}  # server handle -> client handle

    def on_server(event: object) -> None:
        if isinstance(event, CallStateChanged) and event.state is CallState.PENDING:
            server.answer(event.call, net.now)
        elif isinstance(event, MediaReceived):
            at = sent.pop((f"c:{peer.get(event.call)}", event.frame.sequence), None)
            if at is not None:
                latencies.append(net.now - at)

    def on_client(event: object) -> None:
        if isinstance(event, CallStateChanged):
            states[event.call] = event.state
        elif isinstance(event, MediaReceived):
            at = sent.pop((f"s:{event.call}", event.frame.sequence), None)
            if at is not None:
                latencies.append(net.now - at)

    net.add(SERVER, _Drained(server, on_server))
    net.add(CLIENT, _Drained(client, on_client))
    handles = [
        client.place_call(
            to="<tel:+12125551234>",
            from_=f"<tel:+1408555{n:04d}>;tag=b",
            identity=IDENTITY,
            now=net.now,
        )
        for n in range(calls)
    ]
    if not net.run_until(
        lambda: all(states.get(h) is CallState.CONNECTED for h in handles), timeout=30.0
    ):
        raise RuntimeError("calls did not connect")
    by_uri = {call.uri: handle for handle, call in server.calls.items()}
    for handle in handles:
        peer[by_uri[client.calls[handle].uri]] = handle
    payload = b"\xff" * FRAME_BYTES
    frames = round(seconds / FRAME)
    rng = random.Random(seed)

    def send_client(handle: str) -> None:
        if handle in client.calls:
            frame = client.send_media(handle, Codec.PCMU, FRAME, payload, net.now)
            sent[(f"c:{handle}", frame.sequence)] = net.now

    def send_server(server_handle: str) -> None:
        if server_handle in server.calls:
            frame = server.send_media(server_handle, Codec.PCMU, FRAME, payload, net.now)
            sent[(f"s:{peer[server_handle]}", frame.sequence)] = net.now

    start = net.now + 0.05
    for handle in handles:
        _every_frame(
            net, start + rng.random() * FRAME, frames, functools.partial(send_client, handle)
        )
    for server_handle in peer:
        _every_frame(
            net, start + rng.random() * FRAME, frames, functools.partial(send_server, server_handle)
        )
    datagrams_before = sum(link.sent for link in net.stats.values())
    cpu_before = time.process_time()
    net.run_for(seconds + 0.05 + 0.5)
    cpu = time.process_time() - cpu_before
    datagrams = sum(link.sent for link in net.stats.values()) - datagrams_before
    total = 2 * calls * frames
    latencies.sort()
    return {
        "calls": calls,
        "seconds": seconds,
        "datagrams_per_frame": datagrams / total,
        "cpu_ms_per_call_s": 1000 * cpu / (calls * seconds),
        "streams_per_call": sum(len(client.calls[h].media_channels) for h in handles) / calls,
        "delivered_pct": 100 * len(latencies) / total,
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def _every_frame(net: VirtualNetwork, first: float, count: int, send: Callable[[], None]) -> None:
    for index in range(count):
        net.schedule(first + index * FRAME, send)


def run(
    calls: tuple[int, ...] = (8, 16),
    seconds: float = 5.0,
    reps: int = 3,
    variants: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every variant at every call count, interleaved ``reps`` times; one row per variant
    and call count with the medians (and every run's CPU figure)."""
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))
    chosen = variants or VARIANTS
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rep in range(reps):
        for n in calls:
            for name, changes in chosen.items():
                config = RippConfig(jitter_buffer=False, **changes)
                result = run_calls(pki, config, calls=n, seconds=seconds, seed=1 + rep)
                runs.setdefault((name, n), []).append(result)
    rows = []
    for (name, n), results in runs.items():
        row: dict[str, Any] = {"variant": name, "calls": n, "reps": len(results)}
        for key in results[0]:
            if key not in ("calls", "seconds"):
                row[key] = statistics.median(r[key] for r in results)
        row["cpu_runs"] = [round(r["cpu_ms_per_call_s"], 2) for r in results]
        rows.append(row)
    return rows


if __name__ == "__main__":
    import json
    import os

    print(json.dumps({"load1": os.getloadavg()[0], "rows": run()}, indent=1))
