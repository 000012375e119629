"""Soak: ordinary calls for minutes against a real ``ripp serve`` under mixed hostile load.

    python -m benchmarks.soak                       # smoke: 20 s
    python -m benchmarks.soak --minutes 5           # the soak of issue 6
    python -m benchmarks.soak --driver asyncio --json

A ``ripp serve`` subprocess (its own ``RIPP_HOME`` in a temporary directory) answers
ordinary ``ripp call`` subprocesses, ``--calls`` at a time, back to back, each
``--call-seconds`` long. Beside them a raw aioquic client (``tests/hostile/harness.py``)
cycles through the attacks of issue 6: junk Initials, idle connections, refused requests
of every kind, hijack attempts on a call URI, forged re-establishments, huge HEADERS
frames, malformed header values, sequence-number jumps, cancels while ringing, calls hung
up without END_STREAM. Every attack is bounded in count and time.

The report: server memory over time (start, peak, end, one sample every ``--every``
seconds), the ordinary calls (placed, completed, frames sent and lost, RTT p99: median and
worst over the calls), the refusals the attacks got, by class, and whether the server was
alive at the end. The machine's load is printed with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.hostile.harness import (
    MEDIA,
    SIGNALING,
    OrdinaryCall,
    RawConnection,
    RawResponse,
    RssSampler,
    ServeProcess,
    junk_initial,
    pcmu_frame,
    pump,
    signal_frame,
)

H3_HEADERS = b"\x01"


def classify(response: RawResponse) -> str:
    """A refusal's class: its status and ripp-reason code, or the reset code."""
    if response.status is not None:
        reason = response.headers.get("ripp-reason", "").split(" ")[0]
        return f"{response.status}/{reason}" if reason else str(response.status)
    if response.reset is not None:
        return f"reset 0x{response.reset:x}"
    return "no answer"


class Attacker:
    """Runs one attack at a time against the server, counting what comes back."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.refusals: Counter[str] = Counter()
        self.attacks: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # attacks that went unexpectedly
        self._source = 0

    def _connection(self, **kwargs: Any) -> RawConnection:
        # Attackers come from 127.0.0.2-9, so per-address limits fall on them and not
        # on the ordinary calls (127.0.0.1).
        self._source = self._source % 8 + 1
        raw = RawConnection(self.server, source=f"127.0.0.{1 + self._source}", **kwargs)
        if not pump([raw], until=lambda: raw.connected, timeout=5):
            raise RuntimeError("handshake failed")
        return raw

    def _count(self, response: RawResponse) -> None:
        self.refusals[classify(response)] += 1

    def run(self, attack: Callable[[], None]) -> None:
        """One attack; its exceptions are counted, never raised."""
        name = attack.__name__
        self.attacks[name] += 1
        try:
            attack()
        except Exception as exc:  # the soak reports these, it does not stop on them
            self.failures[f"{name}: {type(exc).__name__}: {_last_line(exc)[:80]}"] += 1

    # ------------------------------------------------------------- the attacks
    def junk_initials(self) -> None:
        """500 undecryptable Initials at about 500/s."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.9", 0))
        for _ in range(500):
            sock.sendto(junk_initial(), self.server.address)
            time.sleep(0.002)
        sock.close()

    def idle_connections(self) -> None:
        """Ten handshaken connections that never send a request, held 1 s."""
        crowd = [self._connection() for _ in range(10)]
        pump(crowd, timeout=1.0)
        for raw in crowd:
            raw.close()

    def refusals_of_every_kind(self) -> None:
        """200 refused requests: 404, 405, 415, 401, 428, 400 (64 KB To)."""
        raw = self._connection(token="mallory")
        streams = []
        for index in range(200):
            kind = index % 6
            path = f"/ripp/instances/x/calls/{'A' * 2000}{index}"
            headers = raw.call_headers(path, MEDIA)
            if kind == 1:
                headers = [(k, "GET" if k == ":method" else v) for k, v in headers]
            elif kind == 2:
                headers = [(k, "text/plain" if k == "content-type" else v) for k, v in headers]
            elif kind == 3:
                headers = raw.creation_headers(authorization=None)
            elif kind == 4:
                headers = raw.creation_headers(identity=None)
            if kind == 5:
                huge_to = raw.creation_headers(to="<tel:" + "1" * 65536 + ">")
                streams.append(raw.literal_request(huge_to))
            else:
                streams.append(raw.request(headers))
            if index % 20 == 19:
                pump([raw], until=lambda: all(raw.responses[s].done for s in streams), timeout=3)
        pump([raw], until=lambda: all(raw.responses[s].done for s in streams), timeout=3)
        for stream in streams:
            self._count(raw.responses[stream])
        raw.close()

    def hijack(self) -> None:
        """Media and signaling requests with another token on a live call's URI, and a
        forged re-establishment of it."""
        owner = self._connection(token="owner")
        call = owner.open_call(media=1)
        mallory = self._connection(token="mallory")
        tries = [mallory.open(call.path, MEDIA), mallory.open(call.path, SIGNALING)]
        pump([owner, mallory], until=lambda: all(mallory.responses[t].done or
                                                  mallory.responses[t].status for t in tries),
             timeout=3)
        uri = f"https://{self.server.authority}{call.path}"
        forged = mallory.create(ripp_reestablish=f"<{uri}>;state=connected")
        for response in [*(mallory.responses[t] for t in tries), forged]:
            self._count(response)
            if response.status != 404:
                raise AssertionError(f"hijack got {classify(response)}")
        call.terminate()
        pump([owner, mallory], timeout=0.2)
        owner.close()
        mallory.close()

    def huge_headers_frame(self) -> None:
        """Two requests whose HEADERS frame announces 2**62 - 1 bytes."""
        raw = self._connection()
        head = H3_HEADERS + bytes([0xFF]) + b"\xff" * 7  # varint 2**62 - 1
        streams = [raw.raw_stream(head + b"\x00" * 65536) for _ in range(2)]
        pump([raw], until=lambda: all(raw.responses[s].done or raw.responses[s].status
                                      for s in streams), timeout=2)
        for stream in streams:
            self._count(raw.responses[stream])
        if raw.terminated is not None:
            raise AssertionError("connection closed for one request")
        raw.close()

    def malformed_values(self) -> None:
        """Header values ending in a space."""
        raw = self._connection()
        for response in (
            raw.exchange(raw.creation_headers(authorization="Bearer ")),
            raw.exchange(raw.creation_headers(to="<tel:+12125550000> ")),
        ):
            self._count(response)
        if raw.terminated is not None:
            raise AssertionError("connection closed for one request")
        raw.close()

    def sequence_jumps(self) -> None:
        """A call whose media sequence jumps by 2**20, then by 2**31."""
        raw = self._connection()
        call = raw.open_call(media=1)
        sequence = 0
        for jump in (0, 1 << 20, 1 << 31):
            sequence += jump
            for _ in range(5):
                raw.send(call.media[0], pcmu_frame(sequence))
                sequence += 1
                pump([raw], timeout=0.02)
        pump([raw], timeout=0.3)
        call.terminate()
        pump([raw], timeout=0.1)
        raw.close()

    def cancel_while_ringing(self) -> None:
        """Terminate 487 before the answer."""
        raw = self._connection()
        path = raw.create_call()
        sig = raw.open(path, SIGNALING)
        pump([raw], until=lambda: {"type": "ringing"} in raw.responses[sig].messages(),
             timeout=3)
        raw.send(sig, signal_frame({"type": "terminate", "code": 487, "reason": "cancel"}))
        pump([raw], timeout=0.3)
        raw.close()

    def hang_up_without_end_stream(self) -> None:
        """Three calls ended with terminate but every request body left open."""
        raw = self._connection(auto_ack=False)
        calls = [raw.open_call(media=1) for _ in range(3)]
        for call in calls:
            call.terminate(end_stream=False)
        pump([raw], timeout=0.3)
        raw.sock.close()  # vanish without closing QUIC either


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an error (a subprocess's error is its stderr's end)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def summarise_calls(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the ordinary calls' JSON results."""
    sent = sum(r["media"]["client_to_server"]["sent"] for r in results)
    received = sum(r["media"]["server_to_client"]["received"] for r in results)
    p99s = sorted(r["rtt_ms"]["p99"] for r in results if r["rtt_ms"]["p99"] is not None)
    return {
        "completed": len(results),
        "frames_sent": sent,
        "frames_lost": sent - received,
        "kept_pct": round(100 * received / sent, 2) if sent else None,
        "rtt_p99_ms_median": p99s[len(p99s) // 2] if p99s else None,
        "rtt_p99_ms_worst": p99s[-1] if p99s else None,
    }


def run(
    *,
    minutes: float,
    driver: str = "trio",
    calls: int = 2,
    call_seconds: float = 5.0,
    every: float = 5.0,
    settings: tuple[str, ...] = (),
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the soak; the report as a dict."""
    with tempfile.TemporaryDirectory(prefix="ripp-soak-") as home:
        server = ServeProcess(Path(home), driver, settings)
        try:
            return _soak(server, minutes, calls, call_seconds, every, progress)
        finally:
            server.close()


def _soak(
    server: ServeProcess,
    minutes: float,
    calls: int,
    call_seconds: float,
    every: float,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    rss = RssSampler(server.pid, interval=0.5)
    attacker = Attacker(server)
    attacks = [
        attacker.refusals_of_every_kind,
        attacker.hijack,
        attacker.junk_initials,
        attacker.sequence_jumps,
        attacker.huge_headers_frame,
        attacker.idle_connections,
        attacker.malformed_values,
        attacker.cancel_while_ringing,
        attacker.hang_up_without_end_stream,
    ]
    began = time.monotonic()
    end = began + minutes * 60
    running: list[OrdinaryCall] = []
    results: list[dict[str, Any]] = []
    failed_calls: list[str] = []
    memory: list[tuple[float, float]] = []
    next_sample = began
    index = 0
    while time.monotonic() < end and server.alive():
        for call in [c for c in running if c.process.poll() is not None]:
            running.remove(call)
            try:
                results.append(call.result())
            except AssertionError as exc:
                failed_calls.append(_last_line(exc))
        while len(running) < calls and time.monotonic() + call_seconds + 3 < end:
            running.append(server.ordinary_call(call_seconds, token=f"ordinary-{index}"))
        attacker.run(attacks[index % len(attacks)])
        index += 1
        now = time.monotonic()
        if now >= next_sample and server.alive():
            with contextlib.suppress(OSError, AssertionError):  # it may die just now
                memory.append((round(now - began, 1), round(server.rss() / 1e6, 1)))
            progress(f"  {now - began:6.1f} s  server RSS {memory[-1][1]} MB, "
                     f"{len(results)} calls done, {sum(attacker.attacks.values())} attacks")
            next_sample += every
    for call in running:
        try:
            results.append(call.result(timeout=call_seconds + 30))
        except AssertionError as exc:
            failed_calls.append(_last_line(exc))
    alive = server.alive()
    rss.stop()
    if not alive:
        progress(f"  ripp serve DIED:\n{server.stderr()[-3000:]}")
    with contextlib.suppress(OSError, AssertionError):
        memory.append((round(time.monotonic() - began, 1), round(server.rss() / 1e6, 1)))
    return {
        "minutes": minutes,
        "driver": server.driver,
        "alive": alive,
        "load_average": os.getloadavg(),
        "memory_mb": {
            "start": round(rss.start / 1e6, 1),
            "peak": round(rss.peak / 1e6, 1),
            "end": memory[-1][1] if memory else None,
            "samples": memory,
        },
        "calls": {**summarise_calls(results), "failed": len(failed_calls),
                  "failures": failed_calls[:5]},
        "attacks": dict(attacker.attacks),
        "attack_failures": dict(attacker.failures),
        "refusals": dict(attacker.refusals.most_common()),
    }


def render(report: dict[str, Any]) -> str:
    """The report for people."""
    memory, calls = report["memory_mb"], report["calls"]
    lines = [
        f"soak: {report['minutes']:.2g} min, driver {report['driver']}, server "
        f"{'alive' if report['alive'] else 'DEAD'} at the end; load average "
        + " ".join(f"{x:.2f}" for x in report["load_average"]),
        f"memory MB: start {memory['start']}, peak {memory['peak']}, end {memory['end']}",
        f"ordinary calls: {calls['completed']} completed, {calls['failed']} failed; frames "
        f"sent {calls['frames_sent']}, lost {calls['frames_lost']} (kept {calls['kept_pct']} %); "
        f"RTT p99 ms median {calls['rtt_p99_ms_median']}, worst {calls['rtt_p99_ms_worst']}",
        "attacks: " + ", ".join(f"{k} {v}" for k, v in report["attacks"].items()),
        "refusals by class: " + ", ".join(f"{k} {v}" for k, v in report["refusals"].items()),
    ]
    if report["attack_failures"]:
        lines.append("attacks that went unexpectedly: " + ", ".join(
            f"{k} x{v}" for k, v in report["attack_failures"].items()))
    for failure in calls["failures"]:
        lines.append(f"  call failure: {failure}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exits 1 if the server died, an ordinary call failed or
    the calls kept less than 99 % of their frames."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20 / 60, help="default: 20 s")
    parser.add_argument("--driver", choices=("trio", "asyncio"), default="trio")
    parser.add_argument("--calls", type=int, default=2, help="ordinary calls at a time")
    parser.add_argument("--call-seconds", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=5.0, help="memory sample interval")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="passed to ripp serve --set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(
        minutes=args.minutes,
        driver=args.driver,
        calls=args.calls,
        call_seconds=args.call_seconds,
        every=args.every,
        settings=tuple(args.set),
        progress=(lambda _: None) if args.json else print,
    )
    print(json.dumps(report) if args.json else render(report))
    calls = report["calls"]
    kept = calls["kept_pct"] is not None and calls["kept_pct"] >= 99.0
    return 0 if report["alive"] and not calls["failed"] and kept else 1


if __name__ == "__main__":
    raise SystemExit(main())
