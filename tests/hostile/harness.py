"""The hostile-peer harness: a real ``ripp serve`` subprocess, an ordinary call beside it,
the server's memory, and a raw aioquic client that can send anything.

Everything runs on loopback. The server binds port 0 and prints its calls URI on its first
line; ``RIPP_HOME`` points into the test's tmp dir, so each server makes its own CA. The
raw client is aioquic's ``QuicConnection`` + ``H3Connection`` over a real UDP socket with
a small synchronous loop (:func:`pump`): no ripp client code is involved, so it can send
requests, frames and bytes that ``RippClient`` never would.

Attackers bind to other loopback addresses (``127.0.0.2``, ``127.0.0.3``: all of
127.0.0.0/8 is loopback on Linux) so that per-address limits hit them and not the ordinary
call, which comes from ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from ripp_core import Codec
from ripp_core._frames import (
    AckFrame,
    Frame,
    FrameDecoder,
    FrameType,
    MediaFrame,
    SignalFrame,
    encode_ack,
    encode_media,
    encode_signal,
)
from ripp_core._varint import encode_varint

#: The tree whose ``ripp`` runs the server and the ordinary call: this one, or another
#: checkout named by RIPP_HOSTILE_REPO (to show that a finding reproduces on older code,
#: e.g. ``git archive 0b5b7cb | tar -x -C /tmp/old``).
REPO = Path(os.environ.get("RIPP_HOSTILE_REPO") or Path(__file__).resolve().parents[2])
SIGNALING = "application/ripp-signaling"
MEDIA = "application/ripp-media"
# A syntactically valid PASSporT: `ripp serve` checks Identity syntax only (issue 7).
IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIzNCJdfX0"
    ".c2lnbmF0dXJl;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)

# ---------------------------------------------------------------- stated bounds
#: The ordinary call must get back at least this fraction of the frames it sent.
MIN_FRAMES_KEPT = 0.99
#: p99 of the ordinary call's RTT (RIPP's own acks, sampled every 0.1 s). Unloaded it is
#: 2-6 ms here; the bound is generous because six agents share two cores.
MAX_RTT_P99_MS = 150.0
#: Growth of the server's RSS from just before the attack to its peak. The findings in
#: issue 6 grew by 47 MB (refusals) to 2 GB (sequence jump, junk Initials).
MAX_RSS_GROWTH_MB = 40.0
#: Seconds to let the server process start and print its URI.
START_TIMEOUT = 20.0

#: The QUIC engines ``ripp serve`` can run on (``--quic-engine``); the attacker is always
#: a raw aioquic client, which speaks QUIC to either.
ENGINES = ("aioquic", "qh3")
#: The engine of every server the suite starts unless a test names one:
#: ``RIPP_HOSTILE_ENGINE=qh3 pytest tests/hostile`` runs the whole suite against qh3.
ENGINE = os.environ.get("RIPP_HOSTILE_ENGINE") or "aioquic"
if ENGINE not in ENGINES:
    raise ValueError(f"RIPP_HOSTILE_ENGINE={ENGINE!r}: one of {', '.join(ENGINES)}")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSLKEYLOGFILE", "RIPP_HOME")}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(RIPP_HOME=str(home), PYTHONPATH=path, PYTHONUNBUFFERED="1")
    return env


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (``VmRSS`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.start = rss_bytes(pid)
        self.samples: list[tuple[float, int]] = [(time.monotonic(), self.start)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            except (OSError, AssertionError):
                return  # the process is gone; the test's liveness check says so

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        self._thread.join(timeout=2)

    @property
    def peak(self) -> int:
        """Largest RSS seen."""
        return max(rss for _, rss in self.samples)

    @property
    def growth_mb(self) -> float:
        """Peak minus the first sample, in MB."""
        return (self.peak - self.start) / 1e6


# ---------------------------------------------------------------- the server process
class ServeProcess:
    """``ripp serve --port 0`` as a subprocess; its URI, CA, stderr and memory."""

    def __init__(
        self,
        home: Path,
        driver: str,
        settings: Sequence[str] = (),
        engine: str | None = None,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.driver = driver
        self.engine = engine or ENGINE
        self.stderr_path = home / "serve.stderr"
        self._stderr = self.stderr_path.open("wb")
        # The attacks here are on the process and the protocol, not on token or PASSporT
        # validation (tests/test_auth*.py): every distinct token is its own principal.
        args = [
            "serve", "--port", "0", "--driver", driver,
            "--insecure-accept-any-token", "--insecure-accept-any-identity",
        ]
        if self.engine != "aioquic":
            # as a setting, not --quic-engine: a RIPP_HOSTILE_REPO checkout older than
            # the flag still runs the default engine without it
            args += ["--set", f"quic_engine={self.engine}"]
        for setting in settings:
            args += ["--set", setting]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ripp_cli", *args],
            cwd=REPO,
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("ripp serve"):
            self.close()
            raise AssertionError(f"ripp serve did not start: {line!r}\n{self.stderr()}")
        # "ripp serve (trio): https://localhost:PORT/ripp/calls  CA /path/ca.pem"
        words = line.split()
        self.uri = words[3]
        self.ca = Path(words[5])
        self.port = urlsplit(self.uri).port or 0
        self.address = ("127.0.0.1", self.port)
        self.authority = f"localhost:{self.port}"

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """Read the server's stdout until a line starting with ``prefix`` (``ripp serve``
        prints ``call <uri> from <from>`` for each call it takes)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if not ready:
                break
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"ripp serve printed no {prefix!r} line in {timeout} s")

    @property
    def pid(self) -> int:
        """The server's process id (the Python process itself)."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def rss(self) -> int:
        """Current RSS in bytes."""
        return rss_bytes(self.pid)

    def stderr(self) -> str:
        """What the server has logged so far."""
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        """The process is still running (with its log in the failure message)."""
        assert self.alive(), f"ripp serve exited {self.process.returncode}:\n{self.stderr()}"

    def close(self) -> None:
        """Interrupt the server (as Ctrl-C would), then kill it if it lingers."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def ordinary_call(self, seconds: float = 3.0, token: str = "ordinary") -> OrdinaryCall:
        """Start ``ripp call URI --json`` against this server (runs beside the attack)."""
        return OrdinaryCall(self, seconds, token)


@contextlib.contextmanager
def serve(
    home: Path, driver: str, settings: Sequence[str] = (), engine: str | None = None
) -> Iterator[ServeProcess]:
    """A ``ripp serve`` process for the duration of the block (on ``engine``, by default
    :data:`ENGINE`)."""
    server = ServeProcess(home, driver, settings, engine)
    try:
        yield server
    finally:
        server.close()


class OrdinaryCall:
    """One well-behaved ``ripp call`` subprocess: a tone, echoed back by the server."""

    def __init__(self, server: ServeProcess, seconds: float, token: str) -> None:
        self.server = server
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "ripp_cli", "call", server.uri, "--json",
                "--seconds", str(seconds), "--ca", str(server.ca), "--token", token,
            ],
            cwd=REPO,
            env=_env(server.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seconds = seconds

    def result(self, timeout: float = 40.0) -> dict[str, Any]:
        """Wait for the call to end; its JSON summary (the test fails if it failed)."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(f"ripp call did not finish:\n{err}") from None
        assert self.process.returncode == 0, f"ripp call exited {self.process.returncode}:\n{err}"
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def assert_kept(self, *, max_rtt_p99_ms: float = MAX_RTT_P99_MS) -> dict[str, Any]:
        """The call connected, ended normally, got back >= 99 % of its frames and kept
        its RTT p99 under the bound."""
        result = self.result()
        assert result["states"] == ["pending", "ringing", "connected", "terminated"], result
        assert result["ended"]["code"] == 200, result
        sent = result["media"]["client_to_server"]["sent"]
        received = result["media"]["server_to_client"]["received"]
        assert sent > 0 and received >= MIN_FRAMES_KEPT * sent, result
        # The echo server sends back what it gets: more than we sent means someone else's
        # frames were injected into our call.
        assert received <= sent, f"frames injected into the ordinary call: {result}"
        p99 = result["rtt_ms"]["p99"]
        assert p99 is not None and p99 < max_rtt_p99_ms, result
        return result


# ---------------------------------------------------------------- the raw client
def monotonic() -> float:
    """The raw client's clock (aioquic only needs a monotonic one)."""
    return time.monotonic()


@attrs.define
class RawResponse:
    """Everything the raw client saw on one request stream."""

    headers: dict[str, str] = attrs.Factory(dict)
    data: bytearray = attrs.Factory(bytearray)
    ended: bool = False
    reset: int | None = None
    stop_sending: int | None = None
    _decoder: FrameDecoder = attrs.Factory(
        lambda: FrameDecoder(frozenset(FrameType), 1 << 20, 1 << 24)
    )
    frames: list[Frame] = attrs.Factory(list)

    @property
    def status(self) -> int | None:
        """The final ``:status``, if one arrived."""
        value = self.headers.get(":status")
        return int(value) if value is not None else None

    @property
    def done(self) -> bool:
        """The response is complete (END_STREAM) or the stream was reset."""
        return self.ended or self.reset is not None

    def feed(self, data: bytes) -> None:
        """Body bytes arrived: keep them and decode RIPP frames out of them."""
        self.data += data
        self.frames += self._decoder.feed(data)

    def messages(self) -> list[dict[str, Any]]:
        """The signaling messages received so far."""
        return [json.loads(f.payload) for f in self.frames if isinstance(f, SignalFrame)]

    def media(self) -> list[MediaFrame]:
        """MEDIA frames received so far."""
        return [f for f in self.frames if isinstance(f, MediaFrame)]

    def acks(self) -> list[int]:
        """Sequence numbers acknowledged so far."""
        return [f.sequence for f in self.frames if isinstance(f, AckFrame)]


def client_configuration(ca: Path, server_name: str = "localhost") -> QuicConfiguration:
    """A QUIC client configuration that trusts only the server's CA (verification on)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name)
    config.load_verify_locations(str(ca))
    return config


class RawConnection:
    """One QUIC connection with HTTP/3 on top, on its own UDP socket; nothing of ripp.

    Call :func:`pump` to move datagrams. ``auto_ack`` makes the connection acknowledge
    every MEDIA frame it receives on a media request (as a well-behaved peer would),
    except on the streams in ``no_ack``. Signaling requests in ``keepalives`` get a
    keepalive every 0.25 s, and each call in ``talking`` a PCMU frame every 20 ms, while
    the connection is pumped.
    """

    def __init__(
        self,
        server: ServeProcess,
        *,
        source: str = "127.0.0.1",
        token: str = "raw-token",
        auto_ack: bool = True,
    ) -> None:
        self.server = server
        self.token = token
        self.auto_ack = auto_ack
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.quic = QuicConnection(configuration=client_configuration(server.ca))
        self.h3 = H3Connection(self.quic)
        self.responses: dict[int, RawResponse] = {}
        self.no_ack: set[int] = set()  # media streams on which we never acknowledge
        self.keepalives: set[int] = set()  # signaling requests we keep alive
        self.talking: list[RawCall] = []  # calls that send a frame every 20 ms
        self._next_frame = 0.0
        self._next_keepalive = 0.0
        self.connected = False
        self.terminated: quic_events.ConnectionTerminated | None = None
        self.retries_seen = 0  # QUIC Retry packets received
        self.quic.connect(server.address, monotonic())
        self.flush()

    # ------------------------------------------------------------- datagrams
    def fileno(self) -> int:
        """The socket, for select()."""
        return self.sock.fileno()

    @property
    def alive(self) -> bool:
        """Handshaken and not closed."""
        return self.connected and self.terminated is None

    def flush(self) -> None:
        """Send whatever aioquic has queued."""
        for data, addr in self.quic.datagrams_to_send(monotonic()):
            with contextlib.suppress(OSError):
                self.sock.sendto(data, addr)

    def read(self) -> None:
        """Feed every datagram waiting on the socket to aioquic."""
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:  # nothing waiting (BlockingIOError), or the socket is closed
                break
            if is_retry(data):
                self.retries_seen += 1
            self.quic.receive_datagram(data, addr, monotonic())
        self._process()

    def swallow(self) -> int:
        """Read and drop whatever the server sent, without answering: this connection's
        handshake stays in progress at the server. Returns the datagrams dropped."""
        count = 0
        while True:
            try:
                self.sock.recvfrom(65536)
            except OSError:
                return count
            count += 1

    def timer(self) -> float | None:
        """When aioquic wants ``handle_timer``."""
        return self.quic.get_timer()

    def on_timer(self, now: float) -> None:
        """Run aioquic's timer if due; send keepalives and media on our calls when due."""
        if self.talking and now >= self._next_frame and self.alive:
            self._next_frame = max(self._next_frame + 0.02, now - 0.1)
            for call in self.talking:
                call.send_frames(1)
        if self.keepalives and now >= self._next_keepalive and self.alive:
            # The server ends a call it hears nothing on for media_timeout (1 s).
            self._next_keepalive = now + 0.25
            for stream_id in list(self.keepalives):
                if self.responses[stream_id].done:
                    self.keepalives.discard(stream_id)
                    continue
                with contextlib.suppress(Exception):
                    self.send(stream_id, signal_frame({"type": "keepalive"}))
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now)
            self._process()

    def close(self) -> None:
        """Close the QUIC connection politely and the socket."""
        if self.terminated is None:
            self.quic.close()
            self.flush()
        self.sock.close()

    def _process(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, quic_events.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, quic_events.ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, quic_events.StreamReset):
                self.response(event.stream_id).reset = event.error_code
            elif isinstance(event, quic_events.StopSendingReceived):
                self.response(event.stream_id).stop_sending = event.error_code
            try:
                h3_events = self.h3.handle_event(event)
            except Exception:  # our own raw frames may confuse our H3 layer: not the test
                h3_events = []
            for h3_event in h3_events:
                if isinstance(h3_event, HeadersReceived):
                    response = self.response(h3_event.stream_id)
                    for name, value in h3_event.headers:
                        response.headers[name.decode()] = value.decode(errors="replace")
                    response.ended |= h3_event.stream_ended
                elif isinstance(h3_event, DataReceived):
                    response = self.response(h3_event.stream_id)
                    before = len(response.frames)
                    # not RIPP frames (we may have asked for it): the raw bytes are kept
                    with contextlib.suppress(Exception):
                        response.feed(h3_event.data)
                    response.ended |= h3_event.stream_ended
                    self._ack(h3_event.stream_id, response.frames[before:])

    def _ack(self, stream_id: int, frames: list[Frame]) -> None:
        if not self.auto_ack or stream_id in self.no_ack:
            return
        for frame in frames:
            if isinstance(frame, MediaFrame) and not self.responses[stream_id].done:
                with contextlib.suppress(Exception):
                    self.h3.send_data(stream_id, encode_ack(AckFrame(frame.sequence)), False)

    def response(self, stream_id: int) -> RawResponse:
        """The response record of a stream (made on first use)."""
        return self.responses.setdefault(stream_id, RawResponse())

    # ------------------------------------------------------------- requests
    def request(
        self, headers: Iterable[tuple[str, str]], body: bytes = b"", end_stream: bool = True
    ) -> int:
        """Send one request through H3; returns its stream id. A lone surrogate in a value
        (``"\udcff"``) goes out as that byte (``b"\xff"``): octets that are not UTF-8."""
        stream_id = self.quic.get_next_available_stream_id()
        self.responses[stream_id] = RawResponse()
        fields = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers]
        self.h3.send_headers(stream_id, fields, end_stream=end_stream and not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=end_stream)
        return stream_id

    def raw_stream(self, data: bytes, end_stream: bool = False) -> int:
        """Open a request stream and write ``data`` on it as raw bytes, bypassing H3."""
        stream_id = self.quic.get_next_available_stream_id()
        self.responses[stream_id] = RawResponse()
        self.quic.send_stream_data(stream_id, data, end_stream)
        return stream_id

    def literal_request(self, headers: Iterable[tuple[str, str]], end_stream: bool = True) -> int:
        """Send a request whose header block we encode ourselves (:func:`qpack_literal`),
        for fields aioquic's encoder refuses to send (a 64 KB value)."""
        block = qpack_literal(headers)
        return self.raw_stream(encode_varint(H3_HEADERS) + encode_varint(len(block)) + block,
                               end_stream)

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Body bytes on an open request."""
        self.h3.send_data(stream_id, data, end_stream=end_stream)

    def creation_headers(self, **overrides: str | None) -> list[tuple[str, str]]:
        """A valid creation request; ``overrides`` replace (None: drop) fields."""
        fields: dict[str, str | None] = {
            ":method": "POST",
            ":scheme": "https",
            ":authority": self.server.authority,
            ":path": "/ripp/calls",
            "authorization": f"Bearer {self.token}",
            "ripp-version": "1",
            "to": "<tel:+12125550000>",
            "from": '"Mallory" <tel:+14085550000>;tag=9',
            "identity": IDENTITY,
        }
        for name, value in overrides.items():
            fields[name.replace("_", "-")] = value
        return [(k, v) for k, v in fields.items() if v is not None]

    def call_headers(
        self, path: str, content_type: str, token: str | None = None
    ) -> list[tuple[str, str]]:
        """A signaling or media request on a call URI path."""
        return [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", self.server.authority),
            (":path", path),
            ("authorization", f"Bearer {token or self.token}"),
            ("content-type", content_type),
        ]

    def exchange(
        self,
        headers: Iterable[tuple[str, str]],
        body: bytes = b"",
        end_stream: bool = True,
        timeout: float = 5.0,
    ) -> RawResponse:
        """Send a request and pump until it has a final status (or is reset/closed)."""
        stream_id = self.request(headers, body, end_stream)
        response = self.responses[stream_id]
        pump(
            [self],
            until=lambda: response.done
            or response.status is not None
            or self.terminated is not None,
            timeout=timeout,
        )
        return response

    def create(self, **overrides: str | None) -> RawResponse:
        """A creation request, answered."""
        return self.exchange(self.creation_headers(**overrides))

    def create_call(self) -> str:
        """Create a call; its call URI path."""
        response = self.create()
        if response.status != 201:
            state = "alive" if self.server.alive() else "EXITED:\n" + self.server.stderr()[-2000:]
            raise AssertionError(f"creation got {response}; ripp serve {state}")
        return urlsplit(response.headers["location"]).path

    def open(self, path: str, content_type: str, token: str | None = None) -> int:
        """Open a signaling or media request on a call URI (body left open)."""
        return self.request(self.call_headers(path, content_type, token), end_stream=False)

    def open_call(self, media: int = 2, until: str = "answer") -> RawCall:
        """Create a call, attach signaling, wait for the message ``until`` (``ripp serve``
        rings and answers on its own), then attach ``media`` media requests. The call is
        kept alive (a keepalive every 0.25 s while pumping) until it is terminated."""
        path = self.create_call()
        signaling = self.open(path, SIGNALING)
        sig = self.responses[signaling]
        self.keepalives.add(signaling)
        pump([self], until=lambda: {"type": until} in sig.messages() or sig.done, timeout=5)
        assert {"type": until} in sig.messages(), (sig, sig.messages())
        streams = [self.open(path, MEDIA) for _ in range(media)]
        pump(
            [self],
            until=lambda: all(self.responses[s].status is not None for s in streams),
            timeout=5,
        )
        assert all(self.responses[s].status == 200 for s in streams), [
            self.responses[s] for s in streams
        ]
        return RawCall(self, path, signaling, streams)


H3_HEADERS = 0x01


def _prefixed_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK/QPACK prefixed integer (RFC 7541 5.1) whose first byte starts with
    ``first`` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def qpack_literal(headers: Iterable[tuple[str, str]]) -> bytes:
    """A QPACK field section of literal lines only (RFC 9204 4.5.6): no dynamic table,
    no Huffman, so any size goes onto the wire as it is."""
    out = bytearray(b"\x00\x00")  # Required Insert Count 0, Base 0
    for name, value in headers:
        raw_name, raw_value = name.encode(), value.encode()
        out += _prefixed_int(len(raw_name), 3, 0x20) + raw_name  # 001 N=0 H=0
        out += _prefixed_int(len(raw_value), 7, 0x00) + raw_value  # H=0
    return bytes(out)


def pcmu_frame(sequence: int, payload_byte: int | None = None) -> bytes:
    """An encoded 20 ms PCMU MEDIA frame numbered ``sequence``."""
    fill = sequence & 0xFF if payload_byte is None else payload_byte
    frame = MediaFrame(
        sequence=sequence % (1 << 32),
        timestamp=(sequence * 960) % (1 << 32),
        codec=Codec.PCMU,
        duration_units=40,
        payload=bytes([fill]) * 160,
    )
    return encode_media(frame)


def signal_frame(message: dict[str, Any] | bytes) -> bytes:
    """An encoded SIGNAL frame carrying a JSON message (or raw payload bytes)."""
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    return encode_signal(payload)


@attrs.define
class RawCall:
    """A call the raw client created and attached (signaling + media requests)."""

    connection: RawConnection
    path: str
    signaling: int
    media: list[int]
    sent: int = 0

    def send_frames(self, count: int, *, start: int | None = None, fill: int = 0x55) -> None:
        """Send ``count`` PCMU frames, round-robin over the media streams."""
        first = self.sent if start is None else start
        responses = self.connection.responses
        usable = [
            s for s in self.media if not responses[s].done and responses[s].stop_sending is None
        ]
        for index in range(count):
            if not usable:
                break
            stream = usable[index % len(usable)]
            with contextlib.suppress(Exception):  # the server may end a stream under us
                self.connection.send(stream, pcmu_frame(first + index, fill))
        self.sent = first + count

    def received(self) -> list[MediaFrame]:
        """Every MEDIA frame the server sent on this call's media streams."""
        return [f for s in self.media for f in self.connection.responses[s].media()]

    def acked(self) -> set[int]:
        """Sequence numbers the server acknowledged."""
        return {seq for s in self.media for seq in self.connection.responses[s].acks()}

    def messages(self) -> list[dict[str, Any]]:
        """Signaling messages from the server."""
        return self.connection.responses[self.signaling].messages()

    def terminate(self, code: int = 200, end_stream: bool = True) -> None:
        """Send ``terminate``; with ``end_stream`` close every request body too."""
        self.connection.keepalives.discard(self.signaling)
        self.connection.send(
            self.signaling, signal_frame({"type": "terminate", "code": code, "reason": "bye"})
        )
        if end_stream:
            self.connection.send(self.signaling, b"", end_stream=True)
            for stream in self.media:
                self.connection.send(stream, b"", end_stream=True)


def pump(
    connections: Sequence[RawConnection],
    *,
    until: Callable[[], bool] | None = None,
    timeout: float = 1.0,
) -> bool:
    """Run the raw connections' I/O until ``until()`` holds or ``timeout`` passes.

    Returns whether the predicate held (always False without one: pump for ``timeout``).
    """
    deadline = monotonic() + timeout
    live = [c for c in connections if c.sock.fileno() >= 0]
    for connection in live:
        connection.flush()
    while True:
        if until is not None and until():
            return True
        now = monotonic()
        if now >= deadline:
            return False
        wake = deadline
        for connection in live:
            timer = connection.timer()
            if timer is not None:
                wake = min(wake, timer)
        ready, _, _ = select.select(live, [], [], max(0.0, min(wake - now, 0.01)))
        for connection in ready:
            connection.read()
        now = monotonic()
        for connection in live:
            connection.on_timer(now)
            connection.flush()


def is_retry(datagram: bytes) -> bool:
    """Whether a datagram from the server is a QUIC Retry packet."""
    try:
        header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
    except ValueError:
        return False
    return header.packet_type == QuicPacketType.RETRY


def junk_initial(size: int = 1200) -> bytes:
    """A full-size QUIC v1 Initial that no server can decrypt: a random DCID and token-less
    long header, a length covering the rest, then random bytes."""
    dcid, scid = secrets.token_bytes(8), secrets.token_bytes(8)
    head = bytes([0xC3]) + (1).to_bytes(4, "big")
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + b"\x00"  # no token
    rest = size - len(head) - 2
    head += (0x4000 | rest).to_bytes(2, "big")
    return head + secrets.token_bytes(rest)


# ---------------------------------------------------------------- one probe's scene
DRIVERS = ("trio", "asyncio")
#: The engines a test where the QUIC engine matters runs on: the suite's :data:`ENGINE`
#: and qh3 (once, when ENGINE is qh3). The drivers' own paths are the same on either
#: engine, so a test that also runs on each driver runs on qh3 with Trio only
#: (:data:`DRIVER_ENGINES`); ``RIPP_HOSTILE_ENGINE=qh3`` runs every test on qh3.
WITH_QH3 = tuple(dict.fromkeys((ENGINE, "qh3")))
#: (driver, engine) pairs for a test parametrized over both (ids ``trio-aioquic``, ...).
DRIVER_ENGINES = [
    pytest.param(driver, engine, id=f"{driver}-{engine}")
    for driver, engine in dict.fromkeys(
        [*((driver, ENGINE) for driver in DRIVERS), ("trio", "qh3")]
    )
]
#: Seconds the ordinary call's media runs before the attack starts (after the server has
#: printed that it took the call), so that the attack overlaps its media.
CALL_WARMUP = 0.4


@attrs.define
class Scene:
    """A server, an ordinary call beside the attack, and the server's memory."""

    server: ServeProcess
    ordinary: OrdinaryCall
    rss: RssSampler
    ordinary_path: str
    """The call URI path of the ordinary call (``ripp serve`` prints it)."""

    def check(
        self,
        *,
        max_rss_growth_mb: float = MAX_RSS_GROWTH_MB,
        max_rtt_p99_ms: float = MAX_RTT_P99_MS,
    ) -> dict[str, Any]:
        """The three checks every probe ends with: the process is alive, the ordinary
        call kept its frames and RTT, memory stayed bounded."""
        self.server.assert_alive()
        result = self.ordinary.assert_kept(max_rtt_p99_ms=max_rtt_p99_ms)
        self.server.assert_alive()
        self.rss.stop()
        assert self.rss.growth_mb < max_rss_growth_mb, (
            f"server RSS grew {self.rss.growth_mb:.1f} MB (bound {max_rss_growth_mb} MB)"
        )
        return result


@contextlib.contextmanager
def scene(
    home: Path,
    driver: str,
    settings: Sequence[str] = (),
    *,
    seconds: float = 4.0,
    warmup: Sequence[RawConnection] = (),
    engine: str | None = None,
) -> Iterator[Scene]:
    """Start ``ripp serve`` (on ``engine``, by default :data:`ENGINE`) and an ordinary
    call; the block runs the attack (bounded in count and time); afterwards call
    :meth:`Scene.check`."""
    with serve(home, driver, settings, engine) as server:
        ordinary = server.ordinary_call(seconds)
        try:
            rss = RssSampler(server.pid)
            # "call https://localhost:PORT/ripp/instances/I/calls/C from <tel:...>"
            line = server.wait_for_line("call ", timeout=START_TIMEOUT)
            time.sleep(CALL_WARMUP)
            yield Scene(server, ordinary, rss, urlsplit(line.split()[1]).path)
        finally:
            rss.stop()
            if ordinary.process.poll() is None and not server.alive():
                ordinary.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                ordinary.process.wait(timeout=30)


def assert_refused(response: RawResponse, status: int, sip: int | None = None) -> None:
    """A refusal as the spec writes it: the status, END_STREAM, and a bounded
    ``ripp-reason`` starting with the SIP-style code."""
    assert response.status == status, response
    assert response.ended, response
    reason = response.headers.get("ripp-reason", "")
    code, _, text = reason.partition(" ")
    assert code == str(sip if sip is not None else status) and text, reason
    assert len(reason.encode()) <= 200, f"ripp-reason of {len(reason)} characters"
