"""Gateway figures: latency RTP -> RIPP -> RTP and CPU per gatewayed call.

Three processes on loopback: ``ripp serve`` (the RIPP echo peer), ``ripp gateway`` (the
system under test) and this one, a SIP user agent built on ``ripp_sip.SipEndpoint`` that
places ``--calls`` calls to the gateway and sends 20 ms PCMU RTP on each for ``--seconds``.
Each payload carries its own counter, so an echoed packet is matched to its send time
whatever RTP sequence the gateway gives it. The gateway's CPU time comes from
``/proc/<pid>/stat`` over the media phase only.

    python -m benchmarks.gateway --calls 10 --seconds 10
    python -m benchmarks.gateway --calls 10 --seconds 10 --no-jitter-buffer

The round trip crosses the gateway twice and RIPP twice, and includes ``ripp serve``'s
jitter buffer (its playout delay) and, unless ``--no-jitter-buffer``, the gateway's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from ripp_core import Codec
from ripp_sip import ResponseReceived, SipEndpoint, make_offer, parse_rtp
from ripp_sip._rtp import RtpSender

REPO = Path(__file__).resolve().parent.parent
IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0.eyJhdHRlc3QiOiJBIn0."
    "c2ln;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSLKEYLOGFILE", "RIPP_HOME")}
    env.update(RIPP_HOME=str(home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def _load(sip_port: int, calls: int, seconds: float, gateway_pid: int) -> dict[str, Any]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    endpoint = SipEndpoint(sock.getsockname(), seed=1)
    gateway = ("127.0.0.1", sip_port)
    answered: dict[str, trio.Event] = {}
    sent: dict[int, float] = {}
    latencies: list[float] = []

    async def flush() -> None:
        for data, addr in endpoint.datagrams_to_send():
            await sock.sendto(data, addr)
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, ResponseReceived) and event.response.status == 200:
                answered[event.call].set()

    async def sip_loop() -> None:
        while True:
            deadline = endpoint.get_timer()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1):
                data, addr = await sock.recvfrom(65536)
                endpoint.receive_datagram(data, addr[:2], trio.current_time())
            endpoint.handle_timer(trio.current_time())
            await flush()

    async def one_call(index: int, start: trio.Event, done: trio.Event) -> None:
        rtp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        body = make_offer("127.0.0.1", port, session_id=index, codecs=(Codec.PCMU,)).to_bytes()
        handle = endpoint.invite(f"sip:echo@127.0.0.1:{sip_port}", to="<sip:echo@127.0.0.1>",
                                 from_="<sip:load@127.0.0.1>", destination=gateway,
                                 now=trio.current_time(), body=body,
                                 headers=(("Identity", IDENTITY),))
        answered[handle] = trio.Event()
        await flush()
        await answered[handle].wait()
        await start.wait()
        sender = RtpSender(index, 0, 0)

        async def receive() -> None:
            while True:
                data = await rtp.recv(2048)
                now = trio.current_time()
                packet = parse_rtp(data)
                (counter,) = struct.unpack_from("!I", packet.payload)
                if counter in sent:
                    latencies.append(now - sent.pop(counter))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            remote = answer_address[handle]  # from the SDP answer in the gateway's 200
            begin = trio.current_time()
            for i in range(int(seconds / 0.02)):
                await trio.sleep_until(begin + i * 0.02)
                counter = index * 1_000_000 + i
                payload = struct.pack("!I", counter) + bytes([0xFF]) * 156
                now = trio.current_time()
                sent[counter] = now
                packet = sender.packet(0, payload, clock_rate=8000, duration=0.02, now=now,
                                       marker=i == 0)
                await rtp.sendto(packet.to_bytes(), remote)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        endpoint.bye(handle, trio.current_time())
        await flush()
        rtp.close()
        done.set()

    answer_address: dict[str, tuple[str, int]] = {}

    def remember_answer(event: Any) -> None:
        from ripp_sip import parse_sdp

        if isinstance(event, ResponseReceived) and event.response.body:
            sdp = parse_sdp(event.response.body)
            m = sdp.media[0]
            host = (m.connection or sdp.connection or "IN IP4 127.0.0.1").split()[-1]
            answer_address[event.call] = (host, m.port)

    original = endpoint.next_event

    def next_event() -> Any:
        event = original()
        if event is not None:
            remember_answer(event)
        return event

    endpoint.next_event = next_event  # type: ignore[method-assign]
    start = trio.Event()
    dones = [trio.Event() for _ in range(calls)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sip_loop)
        for index in range(calls):
            nursery.start_soon(one_call, index, start, dones[index])
        while len([e for e in answered.values() if e.is_set()]) < calls:
            await trio.sleep(0.05)
        cpu0, wall0 = _cpu_seconds(gateway_pid), time.monotonic()
        start.set()
        for done in dones:
            await done.wait()
        cpu1, wall1 = _cpu_seconds(gateway_pid), time.monotonic()
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    expected = calls * int(seconds / 0.02)
    cpu = cpu1 - cpu0
    return {
        "calls": calls,
        "seconds": seconds,
        "rtp_sent": expected,
        "echoed": len(latencies),
        "round_trip_ms": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                          "max": _percentile(latencies, 1.0)},
        "gateway_cpu_s": round(cpu, 3),
        "gateway_cpu_percent_per_call": round(100 * cpu / (wall1 - wall0) / calls, 2),
        "gateway_cpu_ms_per_call_second": round(1000 * cpu / calls / seconds, 2),
    }


def main() -> None:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-jitter-buffer", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        serve = subprocess.Popen([sys.executable, "-m", "ripp_cli", "serve", "--port", "0"],
                                 cwd=REPO, env=_env(home), stdout=subprocess.PIPE, text=True)
        assert serve.stdout is not None
        uri = next(w for w in serve.stdout.readline().split() if w.startswith("https://"))
        command = [sys.executable, "-m", "ripp_cli", "gateway", "--sip-port", "0",
                   "--calls-uri", uri]
        if args.no_jitter_buffer:
            command.append("--no-jitter-buffer")
        gateway = subprocess.Popen(command, cwd=REPO, env=_env(home), stdout=subprocess.PIPE,
                                   text=True)
        try:
            assert gateway.stdout is not None
            banner = gateway.stdout.readline()
            sip_port = int(banner.split("udp/127.0.0.1:")[1].split()[0])
            result = trio.run(_load, sip_port, args.calls, args.seconds, gateway.pid)
            result["gateway_jitter_buffer"] = not args.no_jitter_buffer
            # The gateway's own per-packet time, from its call lines ("gateway ms ...").
            forward: list[float] = []
            backward: list[float] = []
            for _ in range(args.calls):
                line = gateway.stdout.readline()
                part = line.split("gateway ms ")[1]
                forward.append(float(part.split("p50=")[1].split()[0]))
                backward.append(float(part.split("p50=")[2].split()[0]))
            result["gateway_ms_p50_per_call"] = {"rtp_to_ripp": forward,
                                                 "ripp_to_rtp": backward}
            result["load"] = os.getloadavg()
            print(json.dumps(result))
        finally:
            for process in (gateway, serve):
                process.send_signal(2)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
