"""``ripp simulate``: whole calls between a RIPP client and server in virtual time.

Real RIPP cores, real aioquic QUIC and HTTP/3, real TLS (a throwaway local CA), over the
in-memory network of :mod:`ripp_core.testing` with seeded delay, jitter and loss. The
server echoes every frame back, so both directions carry media. Optional scripted events
show migration: ``--move`` hands the call to a second server instance half-way,
``--kill`` silences the first server half-way (the client re-establishes on the second).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ripp_core import (
    CallAttached,
    CallIncoming,
    CallMigrating,
    CallState,
    CallStateChanged,
    CallTerminated,
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
    VirtualNetwork,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)

from ._eventlog import EventRecorder, setup_logging

_CODECS = {"pcmu": Codec.PCMU, "pcma": Codec.PCMA, "opus": Codec.OPUS}
# Silence in each codec: G.711 idle codes, and an Opus packet that decodes to silence.
_SILENCE = {Codec.PCMU: 0xFF, Codec.PCMA: 0xD5}
_OPUS_SILENCE = b"\xf8\xff\xfe"
_IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIzNCJdfX0"
    ".c2ln;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
_CLIENT = ("127.0.0.1", 50000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ripp simulate``."""
    parser.add_argument("--seconds", type=float, default=5.0, help="media duration (virtual)")
    parser.add_argument("--codec", choices=sorted(_CODECS), default="pcmu")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="frame duration")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=2.0, help="+- delay variation")
    parser.add_argument("--loss", type=float, default=0.01, help="datagram loss fraction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1, help="concurrent calls")
    scenario = parser.add_mutually_exclusive_group()
    scenario.add_argument("--move", action="store_true", help="graceful move half-way")
    scenario.add_argument("--kill", action="store_true", help="kill the server half-way")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log each call's events as JSON lines on stderr, in virtual time (ripp ladder)",
    )


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 2)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2)}


class _Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.codec: Codec = _CODECS[args.codec]
        self.frame: float = args.frame_ms / 1000
        impairment = Impairment(
            delay=args.delay_ms / 1000, jitter=args.jitter_ms / 1000, loss=args.loss
        )
        self.net = VirtualNetwork(seed=args.seed, default=impairment)
        self.recorders: dict[str, EventRecorder] = {}
        if getattr(args, "log_json", False):
            for name in ("client", "a", "b"):
                self.recorders[name] = EventRecorder(name, lambda: self.net.now)
        pki = make_test_pki(
            ["a.example", "b.example"],
            not_before=datetime.now(UTC) - timedelta(hours=1),
        )
        self.config = RippConfig(jitter_buffer=False)
        self.servers: dict[str, RippServer] = {}
        addresses: dict[str, tuple[str, int]] = {}
        for index, name in enumerate(("a", "b")):
            server = RippServer(
                server_quic_configuration(pki),
                instance_id=f"inst-{name}",
                authority=f"{name}.example",
                config=self.config,
                authorizer=insecure_accept_any_bearer,
                identity_verifier=insecure_accept_any_identity,
            )
            self.servers[name] = server
            addresses[f"{name}.example"] = ("127.0.0.1", 4433 + index)
            self.net.add(addresses[f"{name}.example"], _Drained(self, server, name))
        self.addresses = addresses
        self.client = RippClient(
            client_quic_configuration(pki),
            calls_uris=["https://a.example/ripp/calls", "https://b.example/ripp/calls"],
            token="simulated-token",
            config=self.config,
            resolver=lambda host, port: addresses[host],
        )
        self.net.add(_CLIENT, _Drained(self, self.client, "client"))
        self.states: dict[str, list[str]] = {}
        self.sent: dict[str, dict[tuple[Any, ...], float]] = {"c2s": {}, "s2c": {}}
        self.received: dict[str, dict[tuple[Any, ...], float]] = {"c2s": {}, "s2c": {}}
        self.duplicates = {"c2s": 0, "s2c": 0}
        self.owner: dict[tuple[str, str], str] = {}  # (server, server handle) -> client call
        self.epoch: dict[str, int] = {}  # client call -> server sequence space number
        self.log: list[str] = []
        self.max_streams = 0

    # -------------------------------------------------------------- event handling
    def on_event(self, source: str, endpoint: RippClient | RippServer, event: Any) -> None:
        now = self.net.now
        recorder = self.recorders.get(source)
        if recorder is not None:
            recorder(event)
        if isinstance(endpoint, RippServer):
            if isinstance(event, CallIncoming):
                owner = self._client_for_uri(event)
                self.owner[(source, event.call)] = owner
                # A re-established call on a new instance starts a new sequence space.
                if event.reestablishes is not None:
                    self.epoch[owner] = self.epoch.get(owner, 0) + 1
            elif isinstance(event, CallStateChanged) and event.state is CallState.PENDING:
                endpoint.ring(event.call, now)
                self.net.schedule(now + 0.2, lambda: self._answer(endpoint, event.call))
            elif isinstance(event, MediaReceived):
                self._record("c2s", self.owner.get((source, event.call), "?"), event)
                call = endpoint.calls.get(event.call)
                if call is not None and not call.exported:  # echo; a handed-over call is mute
                    frame = event.frame
                    echo = endpoint.send_media(
                        event.call, frame.codec, frame.duration, frame.payload, now
                    )
                    owner = self.owner.get((source, event.call), "?")
                    key = (owner, self.epoch.get(owner, 0), echo.sequence)
                    self.sent["s2c"][key] = now
            return
        if isinstance(event, CallStateChanged):
            self.states.setdefault(event.call, []).append(event.state.value)
            self._say(f"{now:7.3f}s {event.call} {event.previous.value} -> {event.state.value}")
        elif isinstance(event, CallMigrating):
            self._say(f"{now:7.3f}s {event.call} {event.phase.value}: {event.reason}")
        elif isinstance(event, CallAttached) and event.migrated:
            self._say(f"{now:7.3f}s {event.call} attached at {event.uri}")
        elif isinstance(event, CallTerminated):
            self._say(f"{now:7.3f}s {event.call} ended {event.code} {event.reason}")
        elif isinstance(event, MediaReceived):
            call = self.client.calls.get(event.call)
            epoch = call.receiver.restarts if call is not None else 0
            self._record("s2c", (event.call, epoch), event)

    def _client_for_uri(self, event: CallIncoming) -> str:
        for handle, call in self.client.calls.items():
            if call.request.to == event.to:  # every simulated call dials its own number
                return handle
        return "?"

    def _record(self, direction: str, call: Any, event: MediaReceived) -> None:
        key = (
            (*call, event.frame.sequence)
            if isinstance(call, tuple)
            else (call, event.frame.sequence)
        )
        if key in self.received[direction]:
            self.duplicates[direction] += 1
        else:
            self.received[direction][key] = event.arrival

    def _answer(self, server: RippServer, handle: str) -> None:
        call = server.calls.get(handle)
        if call is not None and call.state is CallState.RINGING:
            server.answer(handle, self.net.now)

    def _say(self, text: str) -> None:
        self.log.append(text)
        if not self.args.json:
            print(text)

    # -------------------------------------------------------------- script
    def _payload(self) -> bytes:
        if self.codec is Codec.OPUS:
            return _OPUS_SILENCE
        return bytes([_SILENCE[self.codec]]) * round(self.frame * 8000)

    def run(self) -> dict[str, Any]:
        args = self.args
        handles = [
            self.client.place_call(
                to=f"<tel:+1212555{n:04d}>",
                from_='"ripp simulate" <tel:+14085550100>;tag=sim',
                identity=_IDENTITY,
                now=self.net.now,
            )
            for n in range(args.calls)
        ]
        connected = self.net.run_until(
            lambda: all(
                h in self.client.calls and self.client.calls[h].state is CallState.CONNECTED
                for h in handles
            ),
            timeout=10.0,
        )
        if not connected:
            raise SystemExit("calls did not connect")
        start = self.net.now
        frames = round(args.seconds / self.frame)
        for index in range(frames):
            self.net.schedule(start + index * self.frame, lambda: self._send_all(handles))
        halfway = start + args.seconds / 2
        if args.move:
            self.net.schedule(halfway, lambda: self._move(handles))
        if args.kill:
            self.net.schedule(halfway, lambda: self.net.remove(self.addresses["a.example"]))
        self.net.run_for(args.seconds + 3.0)
        self.rtts = [
            stats.sender.rtt_smoothed
            for handle in handles
            if handle in self.client.calls
            for stats in [self.client.stats(handle, self.net.now)]
            if stats.sender.rtt_smoothed is not None
        ]
        for handle in handles:
            if handle in self.client.calls:
                self.client.terminate(handle, self.net.now)
        self.net.run_for(1.0)
        return self._summary(handles)

    def _send_all(self, handles: list[str]) -> None:
        now = self.net.now
        for handle in handles:
            call = self.client.calls.get(handle)
            if call is None:
                continue
            frame = self.client.send_media(handle, self.codec, self.frame, self._payload(), now)
            self.sent["c2s"][(handle, frame.sequence)] = now
            self.max_streams = max(self.max_streams, len(call.media_channels))

    def _move(self, handles: list[str]) -> None:
        now = self.net.now
        a, b = self.servers["a"], self.servers["b"]
        for handle in list(a.calls):
            owner = self.owner.get(("a", handle), "?")
            uri = b.import_call(a.export_call(handle, now), now)
            self.owner[("b", uri.rsplit("/", 1)[1])] = owner
            a.move(handle, now, uri)

    def _summary(self, handles: list[str]) -> dict[str, Any]:
        media: dict[str, Any] = {}
        for direction in ("c2s", "s2c"):
            sent, got = self.sent[direction], self.received[direction]
            latencies = [got[k] - sent[k] for k in got if k in sent]
            media["client_to_server" if direction == "c2s" else "server_to_client"] = {
                "sent": len(sent),
                "received": len(got),
                "lost": len(set(sent) - set(got)),
                "duplicates": self.duplicates[direction],
                "latency_ms": _percentiles(latencies),
            }
        rtts = self.rtts
        return {
            "states": self.states.get(handles[0], []),
            "codec": self.args.codec,
            "frame_ms": self.args.frame_ms,
            "calls": len(handles),
            "media": media,
            "rtt_ms": _percentiles(rtts),
            "streams": self.max_streams,
            "virtual_seconds": round(self.net.now, 3),
        }


class _Drained:
    """Network endpoint wrapper that hands every event to the simulation."""

    def __init__(self, sim: _Simulation, endpoint: RippClient | RippServer, name: str) -> None:
        self.sim, self.endpoint, self.name = sim, endpoint, name

    def _drain(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.sim.on_event(self.name, self.endpoint, event)

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.endpoint.receive_datagram(data, addr, now)
        self._drain()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        self._drain()
        return self.endpoint.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._drain()


def run(args: argparse.Namespace) -> int:
    """Run the simulation and print the report; returns the exit status."""
    began = time.perf_counter()
    if args.log_json:
        setup_logging(verbose=False, json_lines=True, stream=sys.stderr)
    summary = _Simulation(args).run()
    summary["wall_seconds"] = round(time.perf_counter() - began, 3)
    if args.json:
        print(json.dumps(summary))
        return 0
    print()
    print(f"codec {summary['codec']}, {summary['frame_ms']} ms frames, {summary['calls']} call(s)")
    print(
        f"{'direction':<18}{'sent':>7}{'recv':>7}{'lost':>6}{'dup':>5}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for name, row in summary["media"].items():
        lat = row["latency_ms"]
        print(
            f"{name:<18}{row['sent']:>7}{row['received']:>7}{row['lost']:>6}"
            f"{row['duplicates']:>5}"
            + "".join(f"{lat[k]!s:>9}" for k in ("p50", "p90", "p99", "max"))
        )
    print(f"rtt p50 {summary['rtt_ms']['p50']} ms, media streams used (max) {summary['streams']}")
    print(f"{summary['virtual_seconds']} virtual seconds in {summary['wall_seconds']} s wall time")
    sys.stdout.flush()
    return 0
