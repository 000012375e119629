"""The send path in virtual time: CPU per call-second and datagrams per frame, A/B by setting.

A shared 2-core machine makes wall-clock capacity meaningless (a process starved by other
tenants does less work, so its CPU per call even falls). Here one process runs a RIPP
client and a RIPP server (real aioquic QUIC + HTTP/3 and TLS 1.3) on the in-memory
:class:`~ripp_core.testing.VirtualNetwork` (0.1 ms one-way, no loss): ``calls`` two-way
calls, a 20 ms PCMU frame every 20 ms each way, calls spread over twenty 1 ms send slots as
in :mod:`benchmarks.capacity`. Virtual time advances only when the process has finished
its work, so nothing is ever late, and the process's CPU time over the window is the
protocol's cost alone (both endpoints and the small network simulation; no sockets, no
event loop), split between client and server by the time spent in each. The
network polls each endpoint for datagrams after every input, as the drivers do.

``python -m benchmarks.sendpath --calls 20,40 --variants 'off=send_batch_window=0' 'on='``
prints, per variant and load, CPU ms per call-second (client and server) and datagrams per
frame; ``--walk`` measures aioquic's per-packet stream walk against open streams.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aioquic.quic.connection import QuicConnection

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

SERVER = ("127.0.0.1", 4433)  # labels on the virtual network; nothing is bound
CLIENT = ("127.0.0.1", 50000)
SLOTS = 20  # calls spread over 20 x 1 ms send slots, like benchmarks.capacity
ONE_WAY = 0.0001
_STAMP = struct.Struct("!d")  # the virtual time a frame was sent, in its payload


class _Timed:
    """An endpoint on the virtual network whose every entry point is timed.

    ``perf_counter`` (cheap) splits the process's CPU time between the two endpoints;
    ``process_time`` costs a system call (3-4 µs here), too much to call around every
    datagram, so the process's CPU is read once at each end of the window."""

    def __init__(self, endpoint: RippClient | RippServer, on_event: Any) -> None:
        self.endpoint = endpoint
        self.on_event = on_event
        self.cpu = 0.0
        self.datagrams = 0

    def _drain(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.on_event(event)

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        t = time.perf_counter()
        self.endpoint.receive_datagram(data, addr, now)
        self._drain()
        self.cpu += time.perf_counter() - t

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        t = time.perf_counter()
        self._drain()
        out = self.endpoint.datagrams_to_send(now)
        self.datagrams += len(out)
        self.cpu += time.perf_counter() - t
        return out

    def get_timer(self) -> float | None:
        t = time.perf_counter()
        at = self.endpoint.get_timer()
        self.cpu += time.perf_counter() - t
        return at

    def handle_timer(self, now: float) -> None:
        t = time.perf_counter()
        self.endpoint.handle_timer(now)
        self._drain()
        self.cpu += time.perf_counter() - t

    def send(self, handle: str, payload: bytes, now: float) -> None:
        t = time.perf_counter()
        if handle in self.endpoint.calls:
            stamped = _STAMP.pack(now) + payload[_STAMP.size :]  # one-way latency
            self.endpoint.send_media(handle, Codec.PCMU, FRAME, stamped, now)
        self.cpu += time.perf_counter() - t


def run(pki: TestPki, calls: int, seconds: float, settings: list[str]) -> dict[str, Any]:
    """``calls`` two-way calls for ``seconds`` of media after set-up and 1 s of warm-up."""
    net = VirtualNetwork(seed=1, default=Impairment(delay=ONE_WAY))
    config = RippConfig(jitter_buffer=False).with_settings(settings)
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
    connected: list[str] = []
    answered: list[str] = []
    received = [0]
    latencies: list[float] = []

    def arrived(event: MediaReceived) -> None:
        received[0] += 1
        latencies.append(net.now - _STAMP.unpack_from(event.frame.payload)[0])

    def on_server(event: object) -> None:
        if isinstance(event, CallStateChanged) and event.state is CallState.PENDING:
            server.answer(event.call, net.now)
            answered.append(event.call)
        elif isinstance(event, MediaReceived):
            arrived(event)

    def on_client(event: object) -> None:
        if isinstance(event, CallStateChanged) and event.state is CallState.CONNECTED:
            connected.append(event.call)
        elif isinstance(event, MediaReceived):
            arrived(event)

    s, c = _Timed(server, on_server), _Timed(client, on_client)
    net.add(SERVER, s)
    net.add(CLIENT, c)
    for n in range(calls):
        client.place_call(
            to=f"<tel:+1212{n:07d}>", from_="<tel:+14085550100>;tag=b", identity=IDENTITY,
            now=net.now,
        )  # fmt: skip
    if not net.run_until(lambda: len(connected) == calls, timeout=60.0):
        raise RuntimeError(f"{len(connected)} of {calls} calls connected")
    payload = b"\xff" * FRAME_BYTES
    start = net.now + 0.01
    frames = round((1.0 + seconds) / FRAME)

    def sender(side: _Timed, handle: str, at: float) -> Callable[[], None]:
        return lambda: side.send(handle, payload, at)

    for index, (mine, theirs) in enumerate(zip(connected, answered, strict=True)):
        offset = (index % SLOTS) * FRAME / SLOTS
        for k in range(frames):
            at = start + offset + k * FRAME
            net.schedule(at, sender(c, mine, at))
            net.schedule(at, sender(s, theirs, at))
    net.run_for(1.0 + 0.01)  # warm-up: media streams open, rhythms learnt
    c0, s0, d0, r0 = c.cpu, s.cpu, c.datagrams + s.datagrams, received[0]
    del latencies[:]
    cpu0 = time.process_time()
    net.run_for(seconds)
    cpu = time.process_time() - cpu0  # both endpoints and the network simulation
    call_seconds = calls * seconds
    frames_due = 2 * calls * seconds / FRAME
    client_share = (c.cpu - c0) / max(1e-9, (c.cpu - c0) + (s.cpu - s0))
    out = {
        "calls": calls,
        "connections": client.connection_count,
        "settings": settings,
        "cpu_ms_per_call_s": 1000 * cpu / call_seconds,
        "client_cpu_ms_per_call_s": 1000 * cpu * client_share / call_seconds,
        "server_cpu_ms_per_call_s": 1000 * cpu * (1 - client_share) / call_seconds,
        "datagrams_per_frame": (c.datagrams + s.datagrams - d0) / frames_due,
        "delivered_pct": 100 * (received[0] - r0) / frames_due,
        "latency_p50_ms": 1000 * percentile(sorted(latencies), 0.5),
        "latency_p99_ms": 1000 * percentile(sorted(latencies), 0.99),
        "latency_max_ms": 1000 * max(latencies, default=float("nan")),
        "media_streams": sum(len(call.media_channels) for call in client.calls.values()),
    }
    return out


# ---------------------------------------------------------------- aioquic's stream walk


def stream_walk(pki: TestPki, streams: int, rounds: int = 2000) -> dict[str, float]:
    """µs of CPU (``process_time``, whose own 3-4 µs are included in every figure alike)
    per ``datagrams_to_send`` that builds one packet carrying a 172-byte
    write on one stream, on a client QUIC connection with ``streams`` open bidirectional
    streams (each has carried one frame, as idle media streams have), plus the same for
    a call that builds nothing (a flush with nothing to send)."""
    client = QuicConnection(configuration=client_quic_configuration(pki))
    server = QuicConnection(
        configuration=server_quic_configuration(pki),
        original_destination_connection_id=client._original_destination_connection_id,
    )
    # Enough credit for the streams (aioquic's default allowance is 128).
    server._local_max_streams_bidi.value = max(server._local_max_streams_bidi.value, streams + 8)
    now = 0.0
    client.connect(SERVER, now)

    def pump() -> None:
        nonlocal now
        for _ in range(20):
            moved = False
            for a, b, addr in ((client, server, CLIENT), (server, client, SERVER)):
                for data, _ in a.datagrams_to_send(now):
                    b.receive_datagram(data, addr, now)
                    moved = True
            now += 0.001
            if not moved:
                break

    pump()
    ids = []
    for _ in range(max(1, streams)):
        sid = client.get_next_available_stream_id()
        client.send_stream_data(sid, b"x" * 172)
        ids.append(sid)
        pump()
    pump()
    payload = b"y" * 172
    busy = idle = 0.0
    for k in range(rounds):
        client.send_stream_data(ids[k % len(ids)], payload)
        t = time.process_time()
        out = client.datagrams_to_send(now)
        busy += time.process_time() - t
        t = time.process_time()
        client.datagrams_to_send(now)  # nothing left: the cost of an empty flush
        idle += time.process_time() - t
        for data, _ in out:
            server.receive_datagram(data, CLIENT, now)
        now += 0.0005
        if k % 50 == 0:  # let ACKs flow so that nothing piles up
            pump()
    return {"streams": streams, "packet_us": 1e6 * busy / rounds, "empty_us": 1e6 * idle / rounds}


def buffer_stall(receive_buffer: int, calls: int, stall: float) -> dict[str, float]:
    """Datagrams a UDP socket loses while its process does not read for ``stall`` seconds
    (a scheduling gap, a GC pause) as ``calls`` two-way calls' traffic arrives: two
    220-byte datagrams per frame per call (a frame and its ACK's packet), at the rate of
    20 ms frames, sent on loopback. ``receive_buffer`` 0 keeps the OS default. The count
    is the kernel's, independent of CPU load: datagrams sent minus datagrams read."""
    import socket

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if receive_buffer:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = round(2 * calls * stall / FRAME)
    data = b"x" * 220
    for _ in range(count):  # all of it arrives while nobody reads
        tx.sendto(data, rx.getsockname())
    read = 0
    while True:
        try:
            rx.recv(2048)
        except BlockingIOError:
            break
        read += 1
    granted = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    rx.close()
    tx.close()
    return {"receive_buffer": granted, "calls": calls, "stall_ms": 1000 * stall,
            "sent": count, "lost": count - read}  # fmt: skip


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", default="20,40")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="*", default=["off=send_batch_window=0", "on="],
        help="NAME=SETTING[,SETTING...] (RippConfig settings; empty: defaults)",
    )  # fmt: skip
    parser.add_argument("--walk", default="", help="stream counts for the walk, e.g. 1,64,256")
    parser.add_argument("--stall", action="store_true", help="socket buffer vs a read stall")
    args = parser.parse_args()
    _measure(args)


def _measure(args: argparse.Namespace) -> None:
    if args.stall:
        for size in (0, 4 * 1024 * 1024):
            for calls in (50, 100, 200):
                for stall in (0.05, 0.2):
                    print(json.dumps(buffer_stall(size, calls, stall)), flush=True)
        return
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
    if args.walk:
        for n in (int(x) for x in args.walk.split(",")):
            print(json.dumps(stream_walk(pki, n)), flush=True)
        return
    variants = {}
    for spec in args.variants:
        name, _, settings = spec.partition("=")
        variants[name] = [x for x in settings.split(",") if x]
    rows: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for name, settings in variants.items():
            for n in (int(x) for x in args.calls.split(",")):
                row = run(pki, n, args.seconds, settings)
                row.update(variant=name, rep=rep)
                rows.append(row)
                print(json.dumps(row), flush=True)
    keys = ("cpu_ms_per_call_s", "client_cpu_ms_per_call_s", "server_cpu_ms_per_call_s",
            "datagrams_per_frame", "delivered_pct")  # fmt: skip
    for name in variants:
        for n in (int(x) for x in args.calls.split(",")):
            sel = [r for r in rows if r["variant"] == name and r["calls"] == n]
            med = {k: round(statistics.median(r[k] for r in sel), 2) for k in keys}
            print("median", name, n, json.dumps(med), flush=True)


if __name__ == "__main__":
    _main()
