"""``ripp serve``, ``ripp call`` and ``ripp demo``: real calls over UDP with real audio.

Written once over :mod:`._runtime` and the drivers' shared API, so ``--driver trio`` and
``--driver asyncio`` run the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from ripp_audio import WavWriter, decoder_for, encoder_for, frames_from_wav, tone
from ripp_core import (
    QUIC_ENGINES,
    CallEnded,
    CallState,
    CallTerminated,
    Codec,
    MediaFrame,
    MediaGap,
    NoSuchCall,
    PlayoutClock,
    RippConfig,
    RippError,
)
from ripp_core.aio import unwrap_group
from ripp_core.testing import Impairment

from . import _auth_cli, _certs, _gateway, _ops
from ._eventlog import setup_logging
from ._heap import freeze_startup_heap
from ._relay_thread import RelayThread
from ._runtime import Runtime, runtime

log = logging.getLogger("ripp.cli")

#: Exit statuses of demo, serve and call (documented in the README).
EXIT_OK = 0
EXIT_CALL_FAILED = 1  # the call ended before it was connected (refused, unreachable, TLS)
EXIT_USAGE = 2  # a bad command line (argparse's own status)
EXIT_ERROR = 3  # a local failure: a port in use, an unreadable file, a bad argument
EXIT_INTERRUPTED = 130  # Ctrl-C


class CallFailed(Exception):
    """The call ended before it was connected: an expected failure, told in one line."""

    def __init__(self, ended: CallTerminated, unanswered: bool = False) -> None:
        hint = ""
        if unanswered and ended.code == 408:
            hint = " (no RIPP server answered: is one running at that address and port?)"
        super().__init__(f"call failed: {ended.code} {ended.reason}{hint}")
        self.ended = ended


CODECS = {"pcmu": Codec.PCMU, "pcma": Codec.PCMA, "opus": Codec.OPUS}
TO, FROM = "<tel:+12125551234>", '"ripp" <tel:+14085551234>;tag=cli'


# ------------------------------------------------------------------ arguments
def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    parser.add_argument("--driver", choices=("trio", "asyncio"), default="trio")
    parser.add_argument("--qlog", type=Path, metavar="DIR", help="write qlog files to DIR")
    parser.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append TLS secrets to FILE (default: $SSLKEYLOGFILE)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol events")
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log to stderr as JSON lines, with each call's events (for ripp ladder)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a RippConfig setting (docs/protocol.md, limits and timers); repeatable",
    )
    parser.add_argument(
        "--quic-engine",
        choices=QUIC_ENGINES,
        help="QUIC + HTTP/3 implementation (default aioquic; qh3 needs pip install 'ripp[qh3]'"
        " and writes no qlog); same as --set quic_engine=NAME",
    )


def ripp_config(args: argparse.Namespace) -> RippConfig:
    """The RippConfig of a command: the defaults with ``--set`` and ``--quic-engine``
    applied."""
    try:
        config = RippConfig().with_settings(list(args.set))
    except ValueError as exc:
        raise SystemExit(f"ripp: --set: {exc}") from None
    engine = getattr(args, "quic_engine", None)
    if engine is not None:
        if engine != "aioquic" and getattr(args, "qlog", None) is not None:
            raise SystemExit(f"ripp: --qlog needs the aioquic engine, not {engine}")
        config = attrs.evolve(config, quic_engine=engine)
    return config


def add_media(parser: argparse.ArgumentParser) -> None:
    """Options of commands that send audio."""
    parser.add_argument("--codec", choices=sorted(CODECS), default="pcmu")
    parser.add_argument("--frame-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the tone")
    parser.add_argument("--wav", type=Path, help="play this WAV file instead of a tone")
    parser.add_argument("--record", type=Path, metavar="FILE", help="record what comes back")


def add_arguments(subcommands: Any) -> None:
    """Register serve, call, demo and token."""
    demo = subcommands.add_parser("demo", help="a server and a client in one command, on loopback")
    add_common(demo)
    add_media(demo)
    demo.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (relay)")
    demo.add_argument("--jitter-ms", type=float, default=0.0, help="+- delay variation (relay)")
    demo.add_argument("--loss", type=float, default=0.0, help="loss fraction (relay)")
    demo.add_argument("--seed", type=int, default=1)
    _ops.add_arguments(demo, metrics=True)
    demo.add_argument("--port", type=int, default=0, help="server UDP port (default: any free)")
    serve = subcommands.add_parser("serve", help="answer calls: echo, or play a WAV")
    add_common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4433)
    serve.add_argument("--play", type=Path, help="play this WAV to each caller (else echo)")
    serve.add_argument("--record", type=Path, metavar="DIR", help="record each call to DIR")
    serve.add_argument("--codec", choices=sorted(CODECS), default="pcmu")
    serve.add_argument("--frame-ms", type=float, default=20.0)
    serve.add_argument(
        "--instance-id",
        help="this instance's name in call URIs (default: random); load balancers route "
        "/ripp/instances/NAME/ to it (docs/deployment.md)",
    )
    serve.add_argument(
        "--authority",
        metavar="HOST:PORT",
        help="authority put in call URIs (default: the one each client used)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        nargs="?",
        const=os.cpu_count() or 1,
        metavar="N",
        help="run N instances (default: one per core) behind an nginx UDP forwarder on "
        "--port, sharing call state in --store (default: a Redis of their own)",
    )
    serve.add_argument(
        "--instance-arg", action="append", default=[], metavar="ARG",
        help="with --workers: pass ARG to every instance; repeatable",
    )  # fmt: skip
    serve.add_argument("--dir", type=Path, help="with --workers: where logs go")
    serve.add_argument(
        "--store",
        metavar="redis://HOST:PORT",
        help="share call state in this Redis (protocol 24): calls of dead instances "
        "are claimed here when their clients re-establish them",
    )
    _ops.add_arguments(serve, metrics=True)
    _auth_cli.add_serve_options(serve)
    serve.add_argument(
        "--http2-port",
        type=int,
        metavar="PORT",
        help="also serve RIPP over HTTP/2 on this TCP port (0: any free port); for load "
        "balancers, docs/deployment.md",
    )
    serve.add_argument(
        "--http2-cleartext",
        action="store_true",
        help="HTTP/2 without TLS (h2c): only behind a load balancer on a trusted network",
    )
    call = subcommands.add_parser("call", help="place a call to a RIPP server")
    add_common(call)
    add_media(call)
    call.add_argument("uri", help="calls URI, e.g. https://localhost:4433/ripp/calls")
    _auth_cli.add_call_options(call)
    call.add_argument("--to", default=TO)
    call.add_argument("--from", dest="from_", default=FROM)
    call.add_argument("--ca", type=Path, help="CA certificate (default: the local ripp CA)")
    call.add_argument(
        "--http2",
        action="store_true",
        help="call over HTTP/2 with TLS (ALPN h2) instead of HTTP/3: for a server behind an "
        "L7 load balancer (docs/deployment.md)",
    )
    call.add_argument(
        "--http2-cleartext",
        action="store_true",
        help="with --http2: h2c, no TLS; only to a balancer on a trusted network",
    )
    call.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on a call not answered by then (default 5, RippConfig.connect_timeout)",
    )
    _auth_cli.add_token_command(subcommands)
    _gateway.add_arguments(subcommands)


# ------------------------------------------------------------------ audio
def source_frames(args: argparse.Namespace) -> list[bytes]:
    """The encoded frames to send: the WAV file, or a 440 Hz tone."""
    codec, frame = CODECS[args.codec], args.frame_ms / 1000
    if args.wav is not None:
        return list(frames_from_wav(args.wav, codec, frame))
    encoder = encoder_for(codec, frame)
    pcm = tone(440.0, args.seconds, encoder.input_rate)
    step = encoder.samples_per_frame
    count = len(pcm) // step
    return [encoder.encode(pcm[i * step : (i + 1) * step]) for i in range(count)]


class Recorder:
    """Decodes received frames (any codec, as they come) into a WAV file."""

    def __init__(self, path: Path | None) -> None:
        self._writer = WavWriter(path, 8000) if path is not None else None
        self._decoders: dict[Codec, Any] = {}

    def add(self, item: MediaFrame | MediaGap) -> None:
        if self._writer is None:
            return
        if isinstance(item, MediaGap):
            decoder = next(iter(self._decoders.values()), None)
            if decoder is not None:
                self._writer.write(decoder.conceal(item.duration), decoder.output_rate)
            return
        if item.codec not in (Codec.PCMU, Codec.PCMA, Codec.OPUS):
            return  # DTMF and comfort noise are not recorded
        decoder = self._decoders.get(item.codec) or decoder_for(item.codec)
        self._decoders = {item.codec: decoder}
        self._writer.write(decoder.decode(item.payload), decoder.output_rate)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# ------------------------------------------------------------------ measurement
@attrs.define
class Direction:
    """Send and arrival times of one direction's frames, by sequence number."""

    sent: dict[int, float] = attrs.Factory(dict)
    received: dict[int, float] = attrs.Factory(dict)
    duplicates: int = 0
    late: int = 0  # arrived after their playout time (the receiver's jitter buffer dropped them)
    streams_used: int = 0  # most media streams this direction's sender had in flight at once

    def summary(self) -> dict[str, Any]:
        latencies = [self.received[s] - self.sent[s] for s in self.received if s in self.sent]
        missing = len(set(self.sent) - set(self.received))
        return {
            "sent": len(self.sent),
            "received": len(self.received),
            "late": self.late,
            "lost": max(0, missing - self.late),
            "duplicates": self.duplicates,
            "latency_ms": percentiles(latencies),
        }


def percentiles(
    values: list[float], keys: tuple[str, ...] = ("p50", "p90", "p99", "max")
) -> dict[str, float | None]:
    """Nearest-rank percentiles in milliseconds."""
    if not values:
        return dict.fromkeys(keys)
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for key in keys:
        q = 1.0 if key == "max" else int(key[1:]) / 100
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        out[key] = round(ordered[index] * 1000, 2)
    return out


def bounded(text: str, limit: int = 80) -> str:
    """Peer-supplied text as the CLI prints it: at most ``limit`` printable characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def say(args: argparse.Namespace, text: str) -> None:
    """Human progress output (suppressed with --json)."""
    if not args.json:
        print(text, flush=True)


# ------------------------------------------------------------------ server side
def server_checks(args: argparse.Namespace) -> dict[str, Any]:
    """The authorizer and identity verifier ``ripp serve`` and ``ripp demo`` use: by
    default, access tokens of the local issuer and PASSporTs chaining to the local STI-CA
    (``--jwks``/``--issuer``/``--audience`` and ``--stir-trust`` name others); accepting
    anything takes ``--insecure-accept-any-token`` / ``--insecure-accept-any-identity``.
    """
    return _auth_cli.server_checks(args)


async def serve_call(
    rt: Runtime,
    call: Any,
    args: argparse.Namespace,
    echo: bool,
    s2c: Direction,
    c2s: Direction,
    record: Path | None,
) -> None:
    """Answer ``call``; echo what arrives (or play a WAV), record it if asked.

    The echo sends each frame as its jitter buffer plays it out, so the echoed
    direction's media clock follows that playout (protocol 9.4): a
    :class:`~ripp_core.PlayoutClock` says how much to skip for concealed gaps and for
    playout that stretched, or the caller's jitter buffer would see frames late.
    """
    recorder = Recorder(record)
    clock = PlayoutClock(ripp_config(args))
    try:
        await call.ring()
        await rt.sleep(0.1)
        await call.answer()
        if not echo:
            for payload in frames_from_wav(args.play, CODECS[args.codec], args.frame_ms / 1000):
                call.play(CODECS[args.codec], args.frame_ms / 1000, payload)
        async for item in call.audio():
            recorder.add(item)
            if isinstance(item, MediaFrame):
                arrival = call.arrival_time(item.sequence)
                if item.sequence in c2s.received:
                    c2s.duplicates += 1
                c2s.received[item.sequence] = arrival if arrival is not None else rt.now()
            if not echo or call.ended is not None:
                continue
            skip = clock.played(item, rt.now())
            try:
                if skip:
                    call.skip_audio(skip)
                if isinstance(item, MediaFrame):
                    sent = call.send_audio(item.codec, item.duration, item.payload)
                    s2c.sent[sent.sequence] = rt.now()
            except Exception as exc:  # the call may be ending under us
                log.info("[server %s] echo stopped: %s", call.incoming.uri, exc)
    finally:
        recorder.close()
        with contextlib.suppress(NoSuchCall):
            stats = call.stats()
            c2s.late += stats.receiver.late
            s2c.streams_used = max(s2c.streams_used, stats.sender.streams_max_busy)


def _redis_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"--store wants redis://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 6379


async def run_serve(rt: Runtime, args: argparse.Namespace) -> int:
    """``ripp serve``: answer every call until interrupted (with ``--store``, as one
    instance of a cluster sharing call state in Redis)."""
    if args.store is None:
        return await _serve(rt, args, None)
    from ripp_cluster import RedisCallStore

    host, port = _redis_address(args.store)
    async with RedisCallStore(host=host, port=port, connect_timeout=5.0) as store:
        return await _serve(rt, args, store)


async def _drain_on_sigterm(agent: Any, args: argparse.Namespace) -> None:
    """SIGTERM (rolling upgrade): move every call to the other instances, drop the lease,
    then stop as on Ctrl-C."""
    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            moved = await agent.drain()
            await agent.release()
            say(args, f"instance {agent.instance} drained: {moved} calls moved")
            os.kill(os.getpid(), signal.SIGINT)
            return


async def _serve(rt: Runtime, args: argparse.Namespace, store: Any) -> int:
    pki = _certs.ensure_local_pki(hostnames=("localhost", args.host))
    config = _certs.server_configuration(pki)
    with _certs.debugging(config, qlog_dir=args.qlog, keylog_file=args.keylog):
        async with rt.driver.open_server(
            config,
            host=args.host,
            port=args.port,
            instance_id=args.instance_id,
            config=ripp_config(args),
            authority=args.authority,
            deferred_checks=store is not None,
            **server_checks(args),
        ) as server:
            say(
                args,
                f"ripp serve ({rt.name}): https://localhost:{server.address[1]}"
                f"{RippConfig().calls_path}  CA {pki.ca_cert_path}",
            )
            # Started: keep the collector's full passes off start-up objects (_heap.py).
            freeze_startup_heap()

            async def handle(call: Any) -> None:
                incoming = call.incoming
                check = incoming.identity_check
                verdict = (
                    f"verified, attestation {check.attestation}"
                    if check.verified
                    else f"not verified: {bounded(check.reason, 60)}"
                )
                say(
                    args,
                    f"call {incoming.uri} from {bounded(incoming.from_.uri)}"
                    f" ({bounded(incoming.principal, 40)}; caller ID {verdict})",
                )
                record = None
                if args.record is not None:
                    args.record.mkdir(parents=True, exist_ok=True)
                    record = args.record / f"call-{call.handle}.wav"
                await serve_call(
                    rt, call, args, args.play is None, Direction(), Direction(), record
                )

            async with rt.tasks() as tasks:
                _ops.attach(rt, tasks, server, args, "server", metrics=True)
                if store is not None:
                    from ripp_cluster import ClusterAgent

                    agent = ClusterAgent(server, store, **server_checks(args))
                    tasks.start_soon(agent.run)
                    tasks.start_soon(_drain_on_sigterm, agent, args)
                    await agent.ready.wait()
                    say(args, f"instance {server.endpoint.instance_id} in store {args.store}")
                if args.http2_port is not None:
                    await serve_http2(rt, args, pki, server, handle)
                else:
                    # Each call runs in its own task; a failing call ends that call only.
                    await server.serve(handle)
    return 0


async def serve_http2(
    rt: Runtime, args: argparse.Namespace, pki: Any, server: Any, handle: Any
) -> None:
    """Serve HTTP/3 (``server``) and HTTP/2 on ``--http2-port`` at once, one handler."""
    if not hasattr(rt.driver, "open_h2_server"):
        raise SystemExit(f"ripp: --http2-port is not supported by the {rt.name} driver yet")
    ssl_context = (
        None
        if args.http2_cleartext
        else rt.driver.server_ssl_context(str(pki.server_cert_path), str(pki.server_key_path))
    )
    async with rt.driver.open_h2_server(
        host=args.host,
        port=args.http2_port,
        ssl_context=ssl_context,
        instance_id=server.endpoint.instance_id,
        config=ripp_config(args),
        **server_checks(args),
    ) as h2server:
        say(
            args,
            f"ripp serve ({rt.name}): HTTP/2 {'h2c' if args.http2_cleartext else 'h2'} "
            f"on {args.host}:{h2server.address[1]}",
        )
        async with rt.tasks() as tasks:
            tasks.start_soon(h2server.serve, handle)
            await server.serve(handle)


# ------------------------------------------------------------------ client side
async def place_and_play(
    rt: Runtime,
    client: Any,
    args: argparse.Namespace,
    to: str,
    from_: str,
    c2s: Direction,
    s2c: Direction,
    identity: Callable[[str, str], str],
) -> dict[str, Any]:
    """Place a call, play the source audio (paced), collect what comes back, hang up.

    A call the server refuses (401, 403, 436-438...) or never answers raises
    :class:`CallFailed` (one line, exit status 1)."""
    codec, frame = CODECS[args.codec], args.frame_ms / 1000
    frames = source_frames(args)
    states: list[str] = []
    rtts: list[float] = []
    max_streams = 0
    recorder = Recorder(args.record)
    call = await client.place_call(to=to, from_=from_, identity=identity(to, from_))
    try:
        await call.wait_state(CallState.PENDING)
    except CallEnded as exc:  # refused (401, 403, 436-438...) or never answered
        recorder.close()
        raise CallFailed(exc.ended, unanswered=call.uri is None) from None

    async def watch_states() -> None:
        async for state in call.states():
            states.append(state.value)
            say(args, f"  {rt.now() - began:6.3f}s  {state.value}")

    async def collect() -> None:
        async for item in call.audio():
            recorder.add(item)
            if isinstance(item, MediaFrame):
                if item.sequence in s2c.received:
                    s2c.duplicates += 1
                arrival = call.arrival_time(item.sequence)
                s2c.received[item.sequence] = arrival if arrival is not None else rt.now()

    async def sample() -> None:
        nonlocal max_streams
        ticks = 0
        while True:
            await rt.sleep(0.1)
            stats = call.stats()
            if stats.sender.rtt_latest is not None:
                rtts.append(stats.sender.rtt_latest)
            max_streams = max(max_streams, stats.sender.streams_open)
            ticks += 1
            if ticks % 10 == 0:
                say(
                    args,
                    f"  {rt.now() - began:6.3f}s  sent {stats.sender.frames_sent}"
                    f"  acked {stats.sender.frames_acked}  received {len(s2c.received)}"
                    f"  streams {stats.sender.streams_open}",
                )

    began = rt.now()
    try:
        async with rt.tasks() as tasks:
            tasks.start_soon(watch_states)
            tasks.start_soon(collect)
            tasks.start_soon(sample)
            try:
                await call.wait_state(CallState.CONNECTED)
            except CallEnded as exc:
                raise CallFailed(exc.ended, call.uri is None) from None
            start = rt.now()
            for index, payload in enumerate(frames):
                call.play(codec, frame, payload)
                # The pacer releases frame k at start + k * frame: that is its send time.
                c2s.sent[index] = start + index * frame
            # The far end may hang up first: then the call is over, and that is no error.
            with contextlib.suppress(CallEnded):
                await call.mark("all-sent")
            # An echo server plays our last frames out of its jitter buffer before echoing
            # them: give the echoes time to come back (bounded) before hanging up.
            deadline = rt.now() + 1.5
            while len(s2c.received) < len(frames) and rt.now() < deadline and not call.ended:
                await rt.sleep(0.05)
            await rt.sleep(0.1)
            ended = await call.terminate()
            await rt.sleep(0.05)
    finally:
        recorder.close()
        with contextlib.suppress(NoSuchCall):
            stats = call.stats()
            s2c.late = stats.receiver.late
            c2s.streams_used = stats.sender.streams_max_busy
    return {
        "states": states,
        "codec": args.codec,
        "ended": {"code": ended.code, "reason": ended.reason},
        "rtt_ms": percentiles(rtts, ("p50", "p99")),
        "streams_open_max": max_streams,
    }


async def run_call(rt: Runtime, args: argparse.Namespace) -> int:
    """``ripp call URI``."""
    from urllib.parse import urlsplit

    host = urlsplit(args.uri).hostname or "localhost"
    if args.ca is not None:
        config = _certs.client_configuration_from_ca(args.ca, host)
    else:
        config = _certs.client_configuration(_certs.ensure_local_pki(), host)
    c2s, s2c = Direction(), Direction()
    settings = (
        ripp_config(args)
        if args.connect_timeout is None
        else attrs.evolve(ripp_config(args), connect_timeout=args.connect_timeout)
    )
    if args.http2_cleartext and not args.http2:
        raise SystemExit("ripp: --http2-cleartext needs --http2")
    with _certs.debugging(config, qlog_dir=args.qlog, keylog_file=args.keylog):
        async with (
            _auth_cli.caller_auth(rt, args) as auth,
            (
                rt.driver.open_h2_client(
                    calls_uris=[args.uri],
                    token=auth.token,
                    ssl_context=None
                    if args.http2_cleartext
                    else rt.driver.client_ssl_context(
                        str(args.ca or _certs.ensure_local_pki().ca_cert_path)
                    ),
                    resolver=_resolve,
                    config=settings,
                )
                if args.http2
                else rt.driver.open_client(
                    config,
                    calls_uris=[args.uri],
                    token=auth.token,
                    resolver=_resolve,
                    config=settings,
                )
            ) as client,
        ):
            http = " over HTTP/2" + (" cleartext" if args.http2_cleartext else "")
            say(args, f"ripp call ({rt.name}) {args.uri}{http if args.http2 else ''}")
            _ops.attach(rt, None, client, args, "client", metrics=False)
            result = await place_and_play(
                rt, client, args, args.to, args.from_, c2s, s2c, auth.identity
            )
    # A lone caller knows its own send times and what came back, not the server's clock:
    # one-way latency needs both ends (ripp demo), so it is not reported here.
    result["media"] = {
        "client_to_server": {"sent": len(c2s.sent)},
        "server_to_client": {
            "received": len(s2c.received),
            "late": s2c.late,
            "duplicates": s2c.duplicates,
        },
    }
    result["streams"] = {"client_to_server": c2s.streams_used}
    result["http"] = ("h2c" if args.http2_cleartext else "h2") if args.http2 else "h3"
    report(args, result)
    return 0


def _resolve(host: str, port: int) -> tuple[str, int]:
    import socket

    # The client's socket is IPv4 (127.0.0.1 for loopback use): ask for IPv4 addresses, so
    # "localhost" never resolves to ::1 first.
    info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    address = info[0][4]
    return str(address[0]), int(address[1])


async def run_demo(rt: Runtime, args: argparse.Namespace) -> int:
    """``ripp demo``: server, optional impairment relay and client on loopback."""
    pki = _certs.ensure_local_pki()
    server_config = _certs.server_configuration(pki)
    client_config = _certs.client_configuration(pki)
    c2s, s2c = Direction(), Direction()
    impairment = Impairment(
        delay=args.delay_ms / 1000, jitter=args.jitter_ms / 1000, loss=args.loss
    )
    with ExitStack() as stack:
        stack.enter_context(
            _certs.debugging(client_config, qlog_dir=args.qlog, keylog_file=args.keylog)
        )
        if args.qlog is not None:
            stack.enter_context(
                _certs.debugging(server_config, qlog_dir=args.qlog, keylog_file=None)
            )
        async with rt.driver.open_server(
            server_config, port=args.port, config=ripp_config(args), **server_checks(args)
        ) as server:
            target = server.address
            if impairment != Impairment():
                relay = stack.enter_context(RelayThread(target, impairment, args.seed))
                target = relay.address
            say(
                args,
                f"ripp demo ({rt.name}): server on udp/{server.address[1]}"
                + (f", relay on udp/{target[1]}" if target != server.address else ""),
            )
            async with rt.tasks() as tasks:

                async def handle(call: Any) -> None:
                    await serve_call(rt, call, args, True, s2c, c2s, None)

                tasks.start_soon(server.serve, handle)
                _ops.attach(rt, tasks, server, args, "server", metrics=True)
                uri = f"https://localhost:{target[1]}{RippConfig().calls_path}"
                async with _auth_cli.caller_auth(rt, args) as auth, rt.driver.open_client(
                    client_config, calls_uris=[uri], token=auth.token, config=ripp_config(args)
                ) as client:
                    _ops.attach(rt, tasks, client, args, "client", metrics=False)
                    result = await place_and_play(
                        rt, client, args, TO, FROM, c2s, s2c, auth.identity
                    )
    result["media"] = {"client_to_server": c2s.summary(), "server_to_client": s2c.summary()}
    result["streams"] = {"client_to_server": c2s.streams_used, "server_to_client": s2c.streams_used}
    report(args, result)
    return 0


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Summary table for people, or one JSON object as the last line (--json)."""
    if args.json:
        print(json.dumps(result), flush=True)
        return
    print(
        f"\nstates: {' -> '.join(result['states'])}; ended {result['ended']['code']} "
        f"{result['ended']['reason']}; codec {result['codec']}"
    )
    for name, row in result["media"].items():
        cells = "  ".join(f"{k} {v}" for k, v in row.items() if k != "latency_ms")
        latency = row.get("latency_ms")
        if latency:
            cells += "  latency ms " + " ".join(f"{k}={v}" for k, v in latency.items())
        print(f"  {name:<17} {cells}")
    print(
        f"  rtt ms p50={result['rtt_ms']['p50']} p99={result['rtt_ms']['p99']}; "
        "media streams in use at once (max): "
        + ", ".join(f"{k} {v}" for k, v in result["streams"].items())
    )


def run(command: str, args: argparse.Namespace) -> int:
    """Entry point for the commands (``gateway`` is Trio-only and has its own runner)."""
    if command == "token":
        return _auth_cli.run_token(args)
    if command == "gateway":
        return _gateway.run(args)
    setup_logging(verbose=args.verbose, json_lines=args.log_json, stream=sys.stderr)
    rt = runtime(args.driver)
    main = {"demo": run_demo, "serve": run_serve, "call": run_call}[command]
    try:
        try:
            status = rt.run_until_interrupted(lambda: main(rt, args))
        except BaseExceptionGroup as group:  # the task groups wrap what they raise
            raise unwrap_group(group) from None
    except KeyboardInterrupt:  # Ctrl-C before the loop took the signal over
        return EXIT_INTERRUPTED
    except CallFailed as exc:
        return fail(command, args, str(exc), EXIT_CALL_FAILED, exc.ended)
    except (OSError, ValueError, RippError) as exc:  # a port in use, a missing file...
        return fail(command, args, f"{type(exc).__name__}: {exc}", EXIT_ERROR)
    return EXIT_INTERRUPTED if status is None else status


def fail(
    command: str,
    args: argparse.Namespace,
    message: str,
    status: int,
    ended: CallTerminated | None = None,
) -> int:
    """Report an expected failure in one line (and the --json line); return ``status``."""
    print(f"ripp {command}: {message}", file=sys.stderr, flush=True)
    if args.json:
        line: dict[str, Any] = {"error": message, "exit": status}
        if ended is not None:
            line["ended"] = {"code": ended.code, "reason": ended.reason, "by": ended.by.value}
        print(json.dumps(line), flush=True)
    return status
