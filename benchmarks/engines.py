"""QUIC engines: CPU per call-second and datagrams per frame, aioquic against qh3.

A machine shared with other work cannot measure capacity by wall clock, but CPU time spent
on a fixed amount of work is far less disturbed. So this runs the whole thing in one
process and in **virtual time** on :class:`~ripp_core.testing.VirtualNetwork`: a
RippClient and a RippServer (real QUIC, HTTP/3 and TLS 1.3 of the engine under test), N
two-way G.711 calls, each a 20 ms PCMU frame every 20 ms in each direction, the calls
spread over twenty 1 ms send slots (as ``benchmarks/capacity.py``), 1 ms one-way delay, no
loss. Every frame is processed however slow the machine is; ``time.process_time`` is
charged to the endpoint whose method ran (client or server; the network's own cost is
left out), over the media phase only. The engines run alternately in the same process,
``repeat`` times, and the medians are reported.

Virtual time flushes each endpoint after every input, where the real drivers flush once
per wake-up, so datagrams per frame is a property of the engine here, not a figure for
the real stack (``benchmarks/capacity.py`` measures that with its ``ripp-qh3`` stack).

``python -m benchmarks.engines [--calls 20,40] [--seconds 5] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
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

from . import FRAME, FRAME_BYTES, IDENTITY, TOKEN, table

SERVER = ("127.0.0.1", 4433)  # labels on the virtual network; nothing is bound
CLIENT = ("127.0.0.1", 50000)
SLOTS = 20  # calls spread over 20 x 1 ms send slots, as in benchmarks/capacity.py
DELAY = 0.001  # one-way, like loopback under light load
TAIL = 1.0  # virtual seconds after the last frame, for the last acks


class _Metered:
    """A RIPP endpoint on the network that charges the CPU time of its calls to itself
    and hands its events to a callback."""

    def __init__(self, endpoint: RippClient | RippServer, on_event: Any) -> None:
        self.endpoint = endpoint
        self.on_event = on_event
        self.cpu = 0.0

    def _run(self, call: Any, *args: Any) -> Any:
        began = time.process_time()
        result = call(*args)
        while (event := self.endpoint.next_event()) is not None:
            self.on_event(event)
        self.cpu += time.process_time() - began
        return result

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self._run(self.endpoint.receive_datagram, data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        result: list[tuple[bytes, tuple[str, int]]] = self._run(
            self.endpoint.datagrams_to_send, now
        )
        return result

    def get_timer(self) -> float | None:
        result: float | None = self._run(self.endpoint.get_timer)
        return result

    def handle_timer(self, now: float) -> None:
        self._run(self.endpoint.handle_timer, now)


def run_point(pki: TestPki, engine: str, calls: int, seconds: float) -> dict[str, Any]:
    """One engine, ``calls`` two-way calls for ``seconds`` of media in virtual time."""
    net = VirtualNetwork(seed=1, default=Impairment(delay=DELAY))
    config = RippConfig(jitter_buffer=False, quic_engine=engine)
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
    received = {"client": 0, "server": 0}
    connected: set[str] = set()

    def on_server(event: object) -> None:
        if isinstance(event, CallStateChanged) and event.state is CallState.PENDING:
            server.answer(event.call, net.now)
        elif isinstance(event, MediaReceived):
            received["server"] += 1

    def on_client(event: object) -> None:
        if isinstance(event, CallStateChanged) and event.state is CallState.CONNECTED:
            connected.add(event.call)
        elif isinstance(event, MediaReceived):
            received["client"] += 1

    metered_server, metered_client = _Metered(server, on_server), _Metered(client, on_client)
    net.add(SERVER, metered_server)
    net.add(CLIENT, metered_client)
    handles = [
        client.place_call(
            to=f"<tel:+1212{n:07d}>",
            from_="<tel:+14085550100>;tag=b",
            identity=IDENTITY,
            now=net.now,
        )
        for n in range(calls)
    ]
    if not net.run_until(lambda: len(connected) == calls, timeout=60.0):
        raise RuntimeError(f"{engine}: {len(connected)} of {calls} calls connected")
    server_handles = list(server.calls)
    payload = b"\xff" * FRAME_BYTES
    sent = 0

    def send(index: int) -> None:
        nonlocal sent
        if handles[index] in client.calls:
            client.send_media(handles[index], Codec.PCMU, FRAME, payload, net.now)
            sent += 1
        if server_handles[index] in server.calls:
            server.send_media(server_handles[index], Codec.PCMU, FRAME, payload, net.now)
            sent += 1

    net.run_for(0.5)  # media streams open; then the measured phase
    start = net.now
    for index in range(calls):
        offset = (index % SLOTS) * 0.001
        for tick in range(round(seconds / FRAME)):
            net.schedule(start + offset + tick * FRAME, functools.partial(send, index))
    received.update(client=0, server=0)
    metered_client.cpu = metered_server.cpu = 0.0
    datagrams_before = sum(s.sent for s in net.stats.values())
    net.run_for(seconds + TAIL)
    datagrams = sum(s.sent for s in net.stats.values()) - datagrams_before
    call_seconds = calls * seconds
    return {
        "engine": engine,
        "calls": calls,
        "seconds": seconds,
        "server_cpu_ms_per_call_s": 1000 * metered_server.cpu / call_seconds,
        "client_cpu_ms_per_call_s": 1000 * metered_client.cpu / call_seconds,
        "delivered_pct": 100 * (received["client"] + received["server"]) / max(sent, 1),
        "datagrams_per_frame": datagrams / max(sent, 1),
    }


def run(
    calls: tuple[int, ...] = (20, 40),
    seconds: float = 5.0,
    repeat: int = 3,
    engines: tuple[str, ...] = ("aioquic", "qh3"),
) -> list[dict[str, Any]]:
    """Medians over ``repeat`` alternating runs of each engine at each load."""
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for n in calls:
            for engine in engines:
                samples.setdefault((engine, n), []).append(run_point(pki, engine, n, seconds))
    results = []
    for (engine, n), points in samples.items():
        row: dict[str, Any] = {"engine": engine, "calls": n, "runs": len(points)}
        for key in points[0]:
            if key.endswith(("_per_call_s", "_pct", "_per_frame")):
                row[key] = statistics.median(p[key] for p in points)
                row[key + "_all"] = [round(p[key], 3) for p in points]
        results.append(row)
    return results


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`run`'s medians, with qh3/aioquic ratios."""
    base = {r["calls"]: r for r in results if r["engine"] == "aioquic"}
    rows = []
    for r in results:
        ref = base.get(r["calls"])

        def ratio(key: str, r: dict[str, Any] = r, ref: dict[str, Any] | None = ref) -> str:
            return "-" if ref is None or r is ref else f"{r[key] / ref[key]:.2f}x"

        rows.append([
            str(r["calls"]), r["engine"],
            f"{r['server_cpu_ms_per_call_s']:.2f}", ratio("server_cpu_ms_per_call_s"),
            f"{r['client_cpu_ms_per_call_s']:.2f}", ratio("client_cpu_ms_per_call_s"),
            f"{r['datagrams_per_frame']:.2f}", f"{r['delivered_pct']:.1f}",
        ])  # fmt: skip
    return table(
        ["calls", "engine", "server CPU ms/call-s", "vs aioquic", "client CPU ms/call-s",
         "vs aioquic", "datagrams/frame", "delivered %"],
        rows,
    )  # fmt: skip


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines")
    parser.add_argument("--calls", default="20,40", help="comma-separated loads")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    loads = tuple(int(n) for n in args.calls.split(","))
    results = run(loads, args.seconds, args.repeat)
    print(json.dumps(results, indent=1) if args.json else render(results))


if __name__ == "__main__":
    _main()
