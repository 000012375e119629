"""Capacity: concurrent two-way calls between one client process and one server process.

Every call carries a 20 ms PCMU frame every 20 ms in each direction over real UDP on
127.0.0.1. The first 8 bytes of each payload are the ``time.monotonic()`` at which the
frame was due; the receiver subtracts it from its own ``time.monotonic()`` on arrival (both
processes share CLOCK_MONOTONIC), so latency includes any lag of an overloaded sender.
Frames are paced by one task per process, the calls spread over twenty 1 ms slots.

* ``ripp``: the ripp_trio driver (open_server / open_client, answer, send_audio), jitter
  buffer off so frames are reported on arrival; received frames are counted in a thin
  EventRouter subclass put on the driver (a benchmark hook, the rest is the public API).
* ``ripp-h2``: the same over HTTP/2 (ripp_trio's TCP driver, TLS 1.3), for the wire
  overhead comparison (:mod:`benchmarks.overhead`).
* ``bare``: :mod:`benchmarks.bare_h3`: per call one bidirectional request; the client writes
  its frames on the request body and the server writes its frames on the response body,
  same pacing, no acks, no striping, 8 calls per QUIC connection like RippClient's pool.

Each process samples its own CPU time (getrusage) every 250 ms; the runner reads both
processes' samples over the client's measurement window. This module is also the entry
point of those processes: ``python -m benchmarks.capacity server|client ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived

from ripp_cli._heap import freeze_startup_heap
from ripp_core import (
    CallState,
    Codec,
    Event,
    EventRouter,
    MediaFrame,
    MediaReceived,
    RippConfig,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
)
from ripp_core._frames import MEDIA_FRAMES, FrameDecoder, encode_media

from . import (
    FRAME,
    FRAME_BYTES,
    HOST,
    IDENTITY,
    TOKEN,
    client_configuration,
    cpu_seconds,
    percentile,
    read_line,
    reap,
    server_configuration,
    spawn,
    write_pki,
)
from .bare_h3 import BareConnection, BareDriver, BareEndpoint, udp_socket
from .search import KeptUpSearch, kept_up

CALLS_PER_CONNECTION = 8  # RippConfig's default max_calls_per_connection
SLOTS = 20  # calls are spread over 20 x 1 ms send slots
MAX_LAG = 1.0  # a sender more than this late drops frames (they count as not delivered)
WARMUP = 1.0  # seconds between the last call connected and the measurement window
GRACE = 1.0  # seconds the client keeps sending after the window, then keeps receiving
SAMPLE = 0.25  # CPU sampling period
SETUP_TIMEOUT = 90.0
_STAMP = struct.Struct("!d")
_PAD = b"\xff" * (FRAME_BYTES - _STAMP.size)
# The coarse criterion (kept as SATURATED: a process that has clearly fallen over); the
# issue's finer "kept up" criterion is benchmarks.search.kept_up.
SATURATED_DELIVERY = 95.0
SATURATED_P99 = 1.0
#: QUIC engines the RIPP role processes can run on (RippConfig.quic_engine): aioquic, and
#: the optional native qh3 engine (``ripp[qh3]``).
ENGINES = ("aioquic", "qh3")
DEFAULT_ENGINE = "aioquic"


def ripp_config(engine: str = DEFAULT_ENGINE) -> RippConfig:
    """The RIPP configuration of both processes: defaults, frames reported on arrival, on
    the given QUIC engine; ``RIPP_BENCH_SETTINGS`` (``NAME=VALUE,...``, as ``ripp serve
    --set``) overrides some, so that a setting's effect can be measured A/B in one run."""
    settings = [s for s in os.environ.get("RIPP_BENCH_SETTINGS", "").split(",") if s]
    if engine != DEFAULT_ENGINE:
        settings.append(f"quic_engine={engine}")
    return RippConfig(jitter_buffer=False).with_settings(settings)


@attrs.frozen
class Stack:
    """What a capacity point runs: a label, which role processes, from which tree.

    ``kind``: ``ripp`` or ``bare`` (the role processes' ``--stack``); ``root``: the source
    tree to run them from (``None``: this one; else e.g. an earlier commit exported by
    :func:`benchmarks.baseline.source_tree`); ``engine``: the QUIC engine of the RIPP
    processes (only passed on when not the default, so that older trees, which have no
    ``--engine`` option, run too).
    """

    label: str
    kind: str
    root: Path | None = None
    engine: str = DEFAULT_ENGINE

    def role_args(self) -> list[str]:
        """The role processes' arguments that select this stack."""
        args = ["--stack", self.kind]
        if self.engine != DEFAULT_ENGINE:
            args += ["--engine", self.engine]
        return args


RIPP = Stack("ripp", "ripp")
#: RIPP on the optional qh3 QUIC engine (RippConfig.quic_engine="qh3").
RIPP_QH3 = Stack("ripp-qh3", "ripp", engine="qh3")
BARE = Stack("bare", "bare")
#: RIPP over HTTP/2 on TCP with TLS 1.3 (the ripp_trio TCP driver); overhead section only.
RIPP_H2 = Stack("ripp-h2", "ripp-h2")


# ====================================================================== in the processes
def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy so far (Linux /proc/stat), else NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def udp_datagrams_sent() -> float:
    """The kernel's count of UDP datagrams sent by every process (Linux), else NaN.

    Only this benchmark runs during a measurement, so the difference over the window is
    the datagrams both processes sent.
    """
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Udp:")]
        return float(lines[1][lines[0].index("OutDatagrams")])
    except (OSError, IndexError, ValueError):
        return float("nan")


class Recorder:
    """Due times of frames sent, (due, arrival) of frames received; CPU samples."""

    def __init__(self) -> None:
        self.sent = array("d")
        self.received = array("d")  # interleaved: due time, arrival time
        # time, own CPU, UDP datagrams sent (all processes), CPU busy (all processes)
        self.cpu: list[tuple[float, float, float, float]] = []
        self.dropped = 0
        self.send_errors = 0
        self.errors: dict[str, int] = {}
        self.first_errors: list[tuple[float, str]] = []
        self.lag = array("d")  # interleaved: due time of a pacer tick, how late it ran

    def on_payload(self, payload: bytes) -> None:
        self.received.append(_STAMP.unpack_from(payload)[0])
        self.received.append(time.monotonic())

    async def sample_cpu(self) -> None:
        while True:
            self.cpu.append(
                (time.monotonic(), cpu_seconds(), udp_datagrams_sent(), machine_busy_seconds())
            )
            await trio.sleep(SAMPLE)

    def save(self, out: Path, meta: dict[str, Any]) -> None:
        self.cpu.append(
            (time.monotonic(), cpu_seconds(), udp_datagrams_sent(), machine_busy_seconds())
        )
        with open(out.with_suffix(".sent"), "wb") as f:
            self.sent.tofile(f)
        with open(out.with_suffix(".recv"), "wb") as f:
            self.received.tofile(f)
        with open(out.with_suffix(".lag"), "wb") as f:
            self.lag.tofile(f)
        meta = dict(
            meta,
            cpu=self.cpu,
            dropped=self.dropped,
            send_errors=self.send_errors,
            errors=self.errors,
            first_errors=self.first_errors,
        )
        out.with_suffix(".json").write_text(json.dumps(meta))


class Pacer:
    """Sends one frame per call every 20 ms; calls are spread over up to 20 slots."""

    def __init__(self, recorder: Recorder, send: Any, calls: int) -> None:
        self.recorder = recorder
        self.send = send
        # No more slots than calls, so no wake-up is spent on an empty slot.
        self.slots: list[list[Any]] = [[] for _ in range(max(1, min(SLOTS, calls)))]
        self._added = 0
        self.stop_at = float("inf")

    def add(self, call: Any) -> None:
        self.slots[self._added % len(self.slots)].append(call)
        self._added += 1

    async def run(self) -> None:
        slots = len(self.slots)
        slot_time = FRAME / slots
        base = time.monotonic()
        tick = 0
        recorder = self.recorder
        while True:
            due = base + tick * slot_time
            if due >= self.stop_at:
                return
            await trio.sleep(max(0.0, due - time.monotonic()))
            lag = time.monotonic() - due
            recorder.lag.append(due)
            recorder.lag.append(lag)
            late = lag > MAX_LAG
            for call in self.slots[tick % slots]:
                recorder.sent.append(due)
                if late:
                    recorder.dropped += 1
                    continue
                try:
                    self.send(call, _STAMP.pack(due) + _PAD)
                except Exception as exc:  # a call that ended (or cannot send yet)
                    recorder.send_errors += 1
                    name = type(exc).__name__
                    recorder.errors[name] = recorder.errors.get(name, 0) + 1
                    if len(recorder.first_errors) < 5:
                        recorder.first_errors.append((time.monotonic(), repr(exc)[:200]))
            tick += 1


def _stream_waits(pacer: Pacer) -> dict[str, float]:
    """RIPP calls only: new frames that found every media stream busy and waited for one,
    summed over the calls, and the longest wait (``SenderStats``, protocol §18.1)."""
    waited, longest = 0, 0.0
    for slot in pacer.slots:
        for call in slot:
            try:
                sender = call.stats().sender
            except Exception:  # an ended call without statistics
                continue
            waited += sender.frames_waited
            longest = max(longest, sender.stream_wait_max)
    return {"frames_waited": waited, "stream_wait_max": longest}


class LatencyRouter(EventRouter):
    """The driver's EventRouter, plus a note of every media frame's arrival."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def route(self, event: Event) -> str | None:
        if isinstance(event, MediaReceived):
            self.recorder.on_payload(event.frame.payload)
        return super().route(event)


async def _until_stdin_closes(lifetime: float) -> None:
    """Return when the parent closes our stdin, or after ``lifetime`` seconds at most."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    with trio.move_on_after(lifetime):
        async with stream:
            while await stream.receive_some(4096):
                pass


class _Profile:
    """pyinstrument over a window of the server's life (started once enough calls run)."""

    def __init__(self, path: Path | None, calls: int, seconds: float) -> None:
        self.path, self.calls, self.seconds = path, calls, seconds
        self.profiler: Any = None
        self.started = self.done = False

    async def maybe_start(self, connected: int) -> None:
        if self.path is None or self.started or connected < self.calls:
            return
        self.started = True
        await trio.sleep(WARMUP)
        from pyinstrument import Profiler

        self.profiler = Profiler(interval=0.001, async_mode="disabled")
        self.profiler.start()
        await trio.sleep(self.seconds)
        self.stop()

    def stop(self) -> None:
        if self.profiler is None or self.done:
            return
        self.done = True
        self.profiler.stop()
        assert self.path is not None
        self.path.write_text(json.dumps(summarize_profile(self.profiler.last_session)))
        self.path.with_suffix(".txt").write_text(
            self.profiler.output_text(unicode=False, color=False, show_all=False)
        )


def summarize_profile(session: Any) -> dict[str, Any]:
    """Self time by function and by package, and inclusive time of the protocol code.

    Synthetic ``[self]`` frames are folded into their function. Time spent blocked in
    ``epoll.poll`` is idle (the process waiting for packets or timers), kept apart.
    Inclusive time counts a function once per stack (recursion is not double counted).
    """
    by_function: dict[str, float] = {}
    by_package: dict[str, float] = {}
    inclusive: dict[str, float] = {}
    idle = 0.0
    stack: list[tuple[Any, frozenset[str]]] = [(session.root_frame(), frozenset())]
    while stack:
        frame, above = stack.pop()
        if frame is None:
            continue
        if frame.is_synthetic:
            continue
        path = frame.file_path or ""
        key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        package = _package(path, frame.function)
        if frame.function == "epoll.poll":
            idle += frame.total_self_time
            continue
        if package in PROTOCOL_PACKAGES and key not in above:
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        stack.extend((child, above | {key}) for child in frame.children)
        self_time = frame.total_self_time
        if self_time > 0:
            by_function[key] = by_function.get(key, 0.0) + self_time
            by_package[package] = by_package.get(package, 0.0) + self_time
    busy = sum(by_function.values())
    return {
        "busy": busy,
        "idle": idle,
        "duration": session.duration,
        "cpu_time": getattr(session, "cpu_time", None),
        "functions": sorted(by_function.items(), key=lambda kv: -kv[1])[:25],
        "packages": sorted(by_package.items(), key=lambda kv: -kv[1]),
        "inclusive": sorted(inclusive.items(), key=lambda kv: -kv[1])[:25],
    }


PROTOCOL_PACKAGES = ("ripp_core", "ripp_trio", "aioquic", "benchmarks (load generator)")


def _package(path: str, function: str) -> str:
    for name in ("ripp_core", "ripp_trio", "aioquic", "trio", "pylsqpack", "cryptography"):
        if f"/{name}/" in path:
            return name
    if "/benchmarks/" in path:
        return "benchmarks (load generator)"
    if function.startswith("socket."):
        return "socket calls"
    return "python stdlib and builtins"


# ---------------------------------------------------------------- RIPP processes
def _ripp_send(call: Any, payload: bytes) -> None:
    call.send_audio(Codec.PCMU, FRAME, payload)


def _open_ripp_server(args: argparse.Namespace) -> Any:
    """``open_server`` (HTTP/3), or ``open_h2_server`` over TLS for ``--stack ripp-h2``."""
    from ripp_trio import open_h2_server, open_server, server_ssl_context

    if args.stack == "ripp-h2":
        return open_h2_server(
            host=HOST, port=0, config=ripp_config(), **server_checks(args.auth),
            ssl_context=server_ssl_context(str(args.pki / "cert.pem"), str(args.pki / "key.pem")),
        )  # fmt: skip
    return open_server(
        server_configuration(args.pki), host=HOST, port=0, config=ripp_config(args.engine),
        **server_checks(args.auth),
    )  # fmt: skip


def _open_ripp_client(args: argparse.Namespace) -> Any:
    """``open_client`` (HTTP/3), or ``open_h2_client`` over TLS for ``--stack ripp-h2``."""
    from ripp_trio import client_ssl_context, open_client, open_h2_client

    uris = [f"https://localhost:{args.port}/ripp/calls"]
    if args.stack == "ripp-h2":
        context = client_ssl_context(str(args.pki / "ca.pem"))
        if args.keylog is not None:
            context.keylog_filename = str(args.keylog)
        return open_h2_client(
            calls_uris=uris, token=TOKEN, config=ripp_config(), ssl_context=context
        )
    return open_client(
        _client_configuration(args), calls_uris=uris, token=TOKEN,
        config=ripp_config(args.engine),
    )  # fmt: skip


async def ripp_server(args: argparse.Namespace, recorder: Recorder, out: dict[str, Any]) -> None:
    pacer = Pacer(recorder, _ripp_send, args.calls)
    profile = _Profile(args.profile, args.calls, args.profile_seconds)
    connected = 0
    async with trio.open_nursery() as nursery, _open_ripp_server(args) as server:
        server._driver.router = LatencyRouter(recorder)  # benchmark hook (see docstring)
        print(f"PORT {server.address[1]}", flush=True)
        nursery.start_soon(recorder.sample_cpu)
        if args.mode == "media":
            nursery.start_soon(pacer.run)

        async def take(call: Any) -> None:
            nonlocal connected
            try:
                await call.answer()
            except Exception:
                return
            connected += 1
            if args.mode == "media":
                pacer.add(call)
                await profile.maybe_start(connected)

        async def accept() -> None:
            async for call in server.calls():
                nursery.start_soon(take, call)

        nursery.start_soon(accept)
        await _until_stdin_closes(args.lifetime)
        profile.stop()
        out["calls"] = connected
        out.update(_stream_waits(pacer))
        nursery.cancel_scope.cancel()


def server_checks(home: Path | None) -> dict[str, Any]:
    """The server's authorizer and identity verifier.

    Capacity runs accept any bearer token and any well-formed Identity header (the
    per-call checks run once per call, not per frame, so they do not bear on media
    capacity). With ``home`` (``--auth``): the checks of a default ``ripp serve`` with
    that ripp home (``RIPP_HOME``): access tokens verified against the local issuer's
    JWKS (ES256 signature, issuer, audience, lifetime, scope) and SHAKEN PASSporTs
    verified against the local STI-CA (x5u fetched over HTTPS and cached, signature,
    freshness, orig/dest against From/To, TN authorization), as the set-up benchmark runs.
    """
    if home is None:
        return {
            "authorizer": insecure_accept_any_bearer,
            "identity_verifier": insecure_accept_any_identity,
        }
    os.environ["RIPP_HOME"] = str(home)
    from ripp_cli._auth_cli import server_checks as ripp_serve_checks

    checks: dict[str, Any] = ripp_serve_checks(argparse.Namespace())
    return checks


def _client_configuration(args: argparse.Namespace) -> Any:
    """The client's QUIC configuration; with ``--keylog``, TLS secrets go to that file
    (SSLKEYLOGFILE format, R22) so that a capture of the run can be decrypted
    (:mod:`benchmarks.overhead`). The client's log covers both directions."""
    configuration = client_configuration(args.pki)
    if args.keylog is not None:
        configuration.secrets_log_file = open(args.keylog, "a", buffering=1)  # noqa: SIM115
    return configuration


async def ripp_client(args: argparse.Namespace, recorder: Recorder, out: dict[str, Any]) -> None:
    pacer = Pacer(recorder, _ripp_send, args.calls)
    async with trio.open_nursery() as nursery, _open_ripp_client(args) as client:
        client._driver.router = LatencyRouter(recorder)  # benchmark hook (see docstring)
        nursery.start_soon(recorder.sample_cpu)
        nursery.start_soon(pacer.run)
        limiter = trio.CapacityLimiter(20)
        connected = 0

        async def place(n: int) -> None:
            nonlocal connected
            async with limiter:
                call = await client.place_call(
                    to=f"<tel:+1212{n:07d}>", from_="<tel:+14085550100>;tag=b", identity=IDENTITY
                )
                try:
                    await call.wait_state(CallState.CONNECTED)
                except Exception:
                    return
                connected += 1
                pacer.add(call)

        began = time.monotonic()
        with trio.move_on_after(SETUP_TIMEOUT):
            async with trio.open_nursery() as setup:
                for n in range(args.calls):
                    setup.start_soon(place, n)
        out["setup_seconds"] = time.monotonic() - began
        out["calls"] = connected
        await _measure(pacer, args.duration, out)
        out.update(_stream_waits(pacer))
        nursery.cancel_scope.cancel()


async def _measure(pacer: Pacer, duration: float, out: dict[str, Any]) -> None:
    t0 = time.monotonic() + WARMUP
    t1 = t0 + duration
    out["t0"], out["t1"] = t0, t1
    pacer.stop_at = t1 + GRACE
    await trio.sleep(t1 + 2 * GRACE - time.monotonic())


# ---------------------------------------------------------------- bare processes
class BareCall:
    """One call of the bare baseline: a request stream, a frame counter, a decoder."""

    def __init__(self, connection: BareConnection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.sequence = 0
        self.decoder = FrameDecoder(MEDIA_FRAMES, 1500, 1 << 20)
        self.answered = trio.Event()


def _bare_send(endpoint: BareEndpoint, driver: BareDriver) -> Any:
    duration_units = round(FRAME * 2000)

    def send(call: BareCall, payload: bytes) -> None:
        frame = MediaFrame(
            sequence=call.sequence,
            timestamp=(call.sequence * 960) % (1 << 32),
            codec=Codec.PCMU,
            duration_units=duration_units,
            payload=payload,
        )
        call.sequence += 1
        call.connection.h3.send_data(call.stream_id, encode_media(frame), end_stream=False)
        endpoint.touch(call.connection)
        driver.flush()

    return send


def _bare_receive(recorder: Recorder, call: BareCall, data: bytes) -> None:
    for frame in call.decoder.feed(data):
        if isinstance(frame, MediaFrame):
            recorder.on_payload(frame.payload)


async def bare_server(args: argparse.Namespace, recorder: Recorder, out: dict[str, Any]) -> None:
    calls: dict[tuple[int, int], BareCall] = {}
    profile = _Profile(args.profile, args.calls, args.profile_seconds)
    pending_profile: list[int] = []

    def on_event(connection: BareConnection, event: H3Event, now: float) -> None:
        key = (id(connection), event.stream_id)  # type: ignore[attr-defined]
        if isinstance(event, HeadersReceived):
            path = dict(event.headers).get(b":path", b"")
            if path == b"/setup":  # call-setup baseline: a 201 and done
                connection.h3.send_headers(
                    event.stream_id,
                    [(b":status", b"201"), (b"location", b"https://localhost/x")],
                    end_stream=True,
                )
                endpoint.touch(connection)
                return
            connection.h3.send_headers(event.stream_id, [(b":status", b"200")], end_stream=False)
            endpoint.touch(connection)
            call = calls[key] = BareCall(connection, event.stream_id)
            pacer.add(call)
            pending_profile.append(len(calls))
        elif isinstance(event, DataReceived):
            call = calls.get(key)
            if call is not None:
                _bare_receive(recorder, call, event.data)

    endpoint = BareEndpoint(server_configuration(args.pki), on_event)
    sock = udp_socket(HOST, 0)
    driver = BareDriver(endpoint, sock)
    pacer = Pacer(recorder, _bare_send(endpoint, driver), args.calls)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.serve)
        nursery.start_soon(recorder.sample_cpu)
        if args.mode == "media":
            nursery.start_soon(pacer.run)

        async def watch_profile() -> None:
            while not profile.started:
                if pending_profile:
                    await profile.maybe_start(pending_profile[-1])
                await trio.sleep(0.1)

        if args.profile is not None:
            nursery.start_soon(watch_profile)
        await _until_stdin_closes(args.lifetime)
        profile.stop()
        out["calls"] = len(calls)
        driver.goodbye()
        nursery.cancel_scope.cancel()
    sock.close()


class BarePool:
    """Client connections, at most ``CALLS_PER_CONNECTION`` calls each (as RippClient)."""

    def __init__(self, endpoint: BareEndpoint, driver: BareDriver, port: int) -> None:
        self.endpoint, self.driver, self.port = endpoint, driver, port
        self.ready: dict[int, trio.Event] = {}
        self.current: BareConnection | None = None
        endpoint.on_handshake = lambda connection, now: self.ready[id(connection)].set()

    async def connection(self) -> BareConnection:
        if self.current is None or self.current.calls >= CALLS_PER_CONNECTION:
            self.current = self.endpoint.connect((HOST, self.port), self.driver.now())
            self.ready[id(self.current)] = trio.Event()
            self.driver.flush()
        connection = self.current
        connection.calls += 1
        await self.ready[id(connection)].wait()
        return connection


def bare_request(connection: BareConnection, path: str, n: int, end_stream: bool) -> int:
    """Send a POST like RIPP's call request (same header fields); returns the stream id."""
    stream_id = connection.quic.get_next_available_stream_id()
    connection.h3.send_headers(
        stream_id,
        [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"ripp-version", b"1"),
            (b"to", f"<tel:+1212{n:07d}>".encode()),
            (b"from", b"<tel:+14085550100>;tag=b"),
            (b"identity", IDENTITY.encode()),
        ],
        end_stream=end_stream,
    )
    return stream_id


async def bare_client(args: argparse.Namespace, recorder: Recorder, out: dict[str, Any]) -> None:
    calls: dict[tuple[int, int], BareCall] = {}

    def on_event(connection: BareConnection, event: H3Event, now: float) -> None:
        call = calls.get((id(connection), event.stream_id))  # type: ignore[attr-defined]
        if call is None:
            return
        if isinstance(event, HeadersReceived):
            call.answered.set()
        elif isinstance(event, DataReceived):
            _bare_receive(recorder, call, event.data)

    endpoint = BareEndpoint(_client_configuration(args), on_event)
    sock = udp_socket(HOST, 0)
    driver = BareDriver(endpoint, sock)
    pacer = Pacer(recorder, _bare_send(endpoint, driver), args.calls)
    pool = BarePool(endpoint, driver, args.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.serve)
        nursery.start_soon(recorder.sample_cpu)
        nursery.start_soon(pacer.run)
        limiter = trio.CapacityLimiter(20)
        connected = 0

        async def place(n: int) -> None:
            nonlocal connected
            async with limiter:
                connection = await pool.connection()
                stream_id = bare_request(connection, "/call", n, end_stream=False)
                call = calls[(id(connection), stream_id)] = BareCall(connection, stream_id)
                endpoint.touch(connection)
                driver.flush()
                await call.answered.wait()
                connected += 1
                pacer.add(call)

        began = time.monotonic()
        with trio.move_on_after(SETUP_TIMEOUT):
            async with trio.open_nursery() as setup:
                for n in range(args.calls):
                    setup.start_soon(place, n)
        out["setup_seconds"] = time.monotonic() - began
        out["calls"] = connected
        await _measure(pacer, args.duration, out)
        driver.goodbye()
        nursery.cancel_scope.cancel()
    sock.close()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--stack", choices=["ripp", "ripp-h2", "bare"], required=True)
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lifetime", type=float, default=120.0)
    parser.add_argument("--mode", choices=["media", "setup"], default="media")
    parser.add_argument("--port", type=int)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--profile-seconds", type=float, default=5.0)
    parser.add_argument("--keylog", type=Path, help="client: write TLS secrets here")
    parser.add_argument("--auth", type=Path, help="ripp server: ripp serve's checks, this home")
    args = parser.parse_args()
    logging.getLogger("ripp").setLevel(logging.ERROR)  # calls cut at exit are expected
    recorder = Recorder()
    out: dict[str, Any] = {"role": args.role, "stack": args.stack}
    runner = {
        ("server", "ripp"): ripp_server,
        ("client", "ripp"): ripp_client,
        ("server", "ripp-h2"): ripp_server,
        ("client", "ripp-h2"): ripp_client,
        ("server", "bare"): bare_server,
        ("client", "bare"): bare_client,
    }[(args.role, args.stack)]

    # What `ripp serve` does once started (ripp_cli/_heap.py), for every stack of this tree
    # alike; RIPP_BENCH_GC_FREEZE=0 leaves it out, to measure what it is worth.
    out["gc_frozen"] = (
        freeze_startup_heap() if os.environ.get("RIPP_BENCH_GC_FREEZE", "1") != "0" else 0
    )

    async def main() -> None:
        with trio.move_on_after(args.lifetime + 5):
            await runner(args, recorder, out)

    try:
        trio.run(main)
    except BaseException as exc:
        out["error"] = repr(exc)
        raise
    finally:
        recorder.save(args.out, out)


# ====================================================================== in the runner
def _cpu_between(samples: list[list[float]], t0: float, t1: float, column: int = 1) -> float:
    """CPU seconds (or another sampled counter) used between t0 and t1, interpolated."""

    def at(t: float) -> float:
        if t <= samples[0][0]:
            return samples[0][column]
        for a, b in itertools.pairwise(samples):
            if a[0] <= t <= b[0]:
                share = (t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
                return a[column] + (b[column] - a[column]) * share
        return samples[-1][column]

    return at(t1) - at(t0)


def _direction(sent: array, received: array, t0: float, t1: float) -> dict[str, float]:
    due = [t for t in sent if t0 <= t < t1]
    latencies = sorted(
        received[i + 1] - received[i] for i in range(0, len(received), 2) if t0 <= received[i] < t1
    )
    return {
        "sent": len(due),
        "received": len(latencies),
        "delivered_pct": 100.0 * len(latencies) / len(due) if due else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def _load(prefix: Path) -> tuple[dict[str, Any], array, array]:
    meta = json.loads(prefix.with_suffix(".json").read_text())
    sent, received, lag = array("d"), array("d"), array("d")
    sent.frombytes(prefix.with_suffix(".sent").read_bytes())
    received.frombytes(prefix.with_suffix(".recv").read_bytes())
    lag.frombytes(prefix.with_suffix(".lag").read_bytes())
    meta["lag"] = lag
    return meta, sent, received


def _lag(lag: array, t0: float, t1: float) -> dict[str, float]:
    """How late the pacer ran in the window (a late sender is an overloaded process)."""
    values = sorted(lag[i + 1] for i in range(0, len(lag), 2) if t0 <= lag[i] < t1)
    return {"p50_ms": percentile(values, 0.5) * 1000, "p99_ms": percentile(values, 0.99) * 1000}


def as_stack(stack: str | Stack) -> Stack:
    """A Stack, from itself or from the name of one of this tree's (``ripp``, ``bare``)."""
    if isinstance(stack, Stack):
        return stack
    return {"ripp": RIPP, "bare": BARE, "ripp-h2": RIPP_H2}[stack]


def run_point(
    stack: str | Stack,
    calls: int,
    duration: float,
    pki: Path,
    profile: Path | None = None,
    capture: Any = None,
    keylog: Path | None = None,
) -> dict[str, Any]:
    """One capacity point: spawn both processes, wait for them, compute the figures.

    ``capture``: called with the server's UDP port once it listens, it returns a context
    manager kept open while the client runs (the overhead benchmark's packet capture);
    ``keylog``: the client writes its TLS secrets there (this tree's role processes only).
    """
    spec = as_stack(stack)
    lifetime = SETUP_TIMEOUT + WARMUP + duration + 2 * GRACE + 10
    with tempfile.TemporaryDirectory(prefix="ripp-bench-") as tmp:
        server_out, client_out = Path(tmp) / "server", Path(tmp) / "client"
        extra = ["--profile", str(profile), "--profile-seconds", str(min(duration, 10.0))]
        server = spawn(
            "benchmarks.capacity", "server", *spec.role_args(), "--pki", str(pki),
            "--out", str(server_out), "--lifetime", str(lifetime + 30), "--calls", str(calls),
            *(extra if profile else []), root=spec.root,
        )  # fmt: skip
        try:
            port = read_line(server, "PORT ", timeout=30)
            with capture(int(port)) if capture is not None else contextlib.nullcontext():
                client = spawn(
                    "benchmarks.capacity", "client", *spec.role_args(), "--pki", str(pki),
                    "--out", str(client_out), "--lifetime", str(lifetime), "--port", port,
                    "--calls", str(calls), "--duration", str(duration),
                    *(["--keylog", str(keylog)] if keylog else []), root=spec.root,
                )  # fmt: skip
                reap(client, timeout=lifetime + 30)
        finally:
            reap(server, timeout=30)
        cmeta, csent, crecv = _load(client_out)
        smeta, ssent, srecv = _load(server_out)
    t0, t1 = cmeta.get("t0"), cmeta.get("t1")
    if t0 is None:
        raise RuntimeError(f"{spec.label} client at {calls} calls did not reach the window")
    seconds = t1 - t0
    connected = cmeta["calls"]
    c2s = _direction(csent, srecv, t0, t1)
    s2c = _direction(ssent, crecv, t0, t1)
    client_cpu = _cpu_between(cmeta["cpu"], t0, t1)
    server_cpu = _cpu_between(smeta["cpu"], t0, t1)
    per_call = max(connected, 1) * seconds
    datagrams = _cpu_between(cmeta["cpu"], t0, t1, column=2)
    machine_busy = _cpu_between(cmeta["cpu"], t0, t1, column=3)
    frames = c2s["sent"] + s2c["sent"]
    delivered = min(c2s["delivered_pct"], s2c["delivered_pct"])
    worst_p99 = max(c2s["p99_ms"], s2c["p99_ms"]) / 1000
    saturated = (
        connected < calls
        or delivered < SATURATED_DELIVERY
        or not worst_p99 <= SATURATED_P99  # NaN (nothing received) counts as saturated
    )
    return {
        "stack": spec.label,
        "calls": calls,
        "connected": connected,
        "port": int(port),
        "t0": t0,
        "t1": t1,
        "seconds": seconds,
        "setup_seconds": cmeta.get("setup_seconds"),
        "client_cpu_ms_per_call_s": 1000 * client_cpu / per_call,
        "server_cpu_ms_per_call_s": 1000 * server_cpu / per_call,
        "client_core_pct": 100 * client_cpu / seconds,
        "server_core_pct": 100 * server_cpu / seconds,
        "c2s": c2s,
        "s2c": s2c,
        "delivered_pct": delivered,
        "datagrams_per_frame": datagrams / frames if frames else float("nan"),
        # CPU used by anything but the two benchmark processes (other tenants, the
        # kernel's share not charged to them), in % of one core: should be near 0.
        "other_load_pct": 100 * (machine_busy - client_cpu - server_cpu) / seconds,
        "saturated": saturated,
        "kept_up": kept_up(
            calls,
            connected,
            (c2s["delivered_pct"], s2c["delivered_pct"]),
            (c2s["p99_ms"] / 1000, s2c["p99_ms"] / 1000),
        ),
        "dropped_by_sender": cmeta["dropped"] + smeta["dropped"],
        "client_pacer_lag": _lag(cmeta["lag"], t0, t1),
        "server_pacer_lag": _lag(smeta["lag"], t0, t1),
        "send_errors": cmeta["send_errors"] + smeta["send_errors"],
        # RIPP: frames that waited for a free media stream (both ends, whole run); None
        # from role processes that do not count them (bare H3, an older tree's).
        "frames_waited": (
            cmeta["frames_waited"] + smeta["frames_waited"]
            if "frames_waited" in cmeta and "frames_waited" in smeta
            else None
        ),
        "stream_wait_max_ms": 1000
        * max(cmeta.get("stream_wait_max", 0.0), smeta.get("stream_wait_max", 0.0)),
        "errors": {"client": cmeta["errors"], "server": smeta["errors"]},
        "first_errors": {
            "client": [(t - t0, text) for t, text in cmeta["first_errors"]],
            "server": [(t - t0, text) for t, text in smeta["first_errors"]],
        },
    }


def failed_point(stack: str | Stack, calls: int, error: str) -> dict[str, Any]:
    """A point whose processes did not produce figures: reported as saturated."""
    nan = float("nan")
    direction = {"sent": 0, "received": 0, "delivered_pct": 0.0, "p50_ms": nan, "p99_ms": nan}
    return {
        "stack": as_stack(stack).label,
        "calls": calls,
        "connected": 0,
        "error": error,
        "client_cpu_ms_per_call_s": nan,
        "server_cpu_ms_per_call_s": nan,
        "client_core_pct": nan,
        "server_core_pct": nan,
        "c2s": dict(direction),
        "s2c": dict(direction),
        "delivered_pct": 0.0,
        "datagrams_per_frame": nan,
        "other_load_pct": nan,
        "saturated": True,
        "kept_up": False,
    }


def run(
    calls: tuple[int, ...] = (10, 50, 100, 200, 400),
    duration: float = 10.0,
    stacks: Sequence[str | Stack] = ("ripp", "bare"),
    progress: Any = None,
    disturbed: float | None = None,
) -> list[dict[str, Any]]:
    """Every point for every stack (saturated points included: they are the finding).

    With ``disturbed`` (in % of one core), a point during which other work on the machine
    exceeded it is measured once more after a pause, and the less disturbed run is kept.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="ripp-pki-") as tmp:
        write_pki(Path(tmp))
        for stack in stacks:
            for n in calls:
                result = _measure_point(stack, n, duration, Path(tmp))
                if disturbed is not None and result["other_load_pct"] > disturbed:
                    time.sleep(10)
                    again = _measure_point(stack, n, duration, Path(tmp))
                    again["retried"] = True
                    if not again["other_load_pct"] > result["other_load_pct"]:
                        result = again
                results.append(result)
                if progress is not None:
                    progress(result)
    return results


def _measure_point(stack: str | Stack, calls: int, duration: float, pki: Path) -> dict[str, Any]:
    try:
        return run_point(stack, calls, duration, pki)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        return failed_point(stack, calls, f"{type(exc).__name__}: {exc}")


def search(
    stacks: Sequence[Stack],
    start: int = 10,
    ceiling: int = 640,
    duration: float = 3.0,
    resolution: float = 0.1,
    max_points: int = 8,
    budget: float = 1200.0,
    retry_failures: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """The highest kept-up load of each stack, the searches interleaved point by point.

    Each stack has its own :class:`~benchmarks.search.KeptUpSearch` (doubling from
    ``start``, then bisection to ``resolution``, at most ``max_points`` points); one point
    of each stack is measured in turn, so that a change in the machine's load hits every
    stack alike and their ratio stays meaningful. With ``retry_failures``, a point that
    did not keep up is measured once more and the better outcome kept: on a shared
    machine other work can only make a point fail, never make it pass, so a failure
    deserves a second look and a pass does not. No new point starts after ``budget``
    seconds (the figures then say the search was cut).
    """
    searches = {
        s.label: KeptUpSearch(start=start, ceiling=ceiling, resolution=resolution,
                              max_points=max_points)
        for s in stacks
    }  # fmt: skip
    points: list[dict[str, Any]] = []
    began = time.monotonic()
    cut = False
    with tempfile.TemporaryDirectory(prefix="ripp-pki-") as tmp:
        write_pki(Path(tmp))
        while any(not s.done for s in searches.values()):
            for stack in stacks:
                n = searches[stack.label].next()
                if n is None:
                    continue
                if time.monotonic() - began > budget:
                    cut = True
                    break
                result = _measure_point(stack, n, duration, Path(tmp))
                if retry_failures and not result["kept_up"]:
                    again = _measure_point(stack, n, duration, Path(tmp))
                    again["retried"] = True
                    if again["kept_up"] or _better(again, result):
                        result = again
                searches[stack.label].record(n, result["kept_up"])
                points.append(result)
                if progress is not None:
                    progress(result)
            if cut:
                break
    return {
        "duration": duration,
        "start": start,
        "ceiling": ceiling,
        "resolution": resolution,
        "cut_by_budget": cut,
        "wall": time.monotonic() - began,
        "stacks": {
            label: {"kept_up": s.best, "failed": s.failed, "points": s.points}
            for label, s in searches.items()
        },
        "points": points,
    }


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether point ``a`` came closer to keeping up than ``b`` (more delivered)."""
    return bool(a["delivered_pct"] > b["delivered_pct"])


if __name__ == "__main__":
    _main()
