"""Head-of-line blocking: RIPP's striped media against one pipelined stream, in virtual time.

Both stacks run real aioquic QUIC and HTTP/3 with real TLS 1.3 over the in-memory
:class:`~ripp_core.testing.VirtualNetwork`, with the same one-way delay and the same loss
rate in both directions and the same seed. The client sends a 20 ms PCMU frame every
20 ms; the server records when each frame arrives; the one-way latency of a frame is
arrival minus send time, in virtual time.

* RIPP: a RippClient / RippServer call (answered at once), media sent with ``send_media``
  (striped over N media requests, one unacknowledged frame per stream, acks per frame),
  twice: with early re-send (protocol §11.7, the default) and without it (QUIC's own loss
  recovery only).
* Single stream: the client POSTs one request and writes every frame (``encode_media``) on
  that one request body, without waiting for anything; the server decodes the body with
  ``FrameDecoder``. A lost packet holds back every frame behind it on the stream.

Each RIPP variant also runs with the receiver's jitter buffer on (its default), for what a
listener gets: frames played, frames dropped as late, and the playout delay the buffer
settled on.

Deterministic: the network draws all loss from ``random.Random(seed)``. The two stacks send
different packets, so the same seed does not drop "the same" frames in both; it makes
each run repeatable.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aioquic.h3.events import DataReceived, H3Event, HeadersReceived

from ripp_core import (
    CallState,
    CallStateChanged,
    Codec,
    MediaFrame,
    MediaPlayout,
    MediaReceived,
    RippClient,
    RippConfig,
    RippServer,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
)
from ripp_core._frames import MEDIA_FRAMES, FrameDecoder, encode_media
from ripp_core.testing import (
    Impairment,
    TestPki,
    VirtualNetwork,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)

from . import FRAME, FRAME_BYTES, IDENTITY, TOKEN, latency_summary
from .bare_h3 import BareConnection, BareEndpoint

SERVER = ("127.0.0.1", 4433)  # labels on the virtual network; nothing is bound
CLIENT = ("127.0.0.1", 50000)
LATE = 0.150  # a frame later than this is useless for a conversation (ITU-T G.114)
#: Fixed playout points (after sending) reported per stack: with 50 ms one-way, the one-way
#: delay plus 2, 3, 5.5 and 7.5 frames of 20 ms (160 ms: one RTT plus a margin after the
#: one-way delay, when an early copy of a lost frame arrives).
DEADLINES = (0.090, 0.110, 0.160, 0.200)
TAIL = 5.0  # virtual seconds run after the last frame, for stragglers


class _Drained:
    """Hands every event of a RIPP endpoint to a callback right after each input."""

    def __init__(self, endpoint: RippClient | RippServer, on_event: Any) -> None:
        self.endpoint = endpoint
        self.on_event = on_event

    def _drain(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.on_event(event)

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


def _network(seed: int, delay: float, loss: float) -> VirtualNetwork:
    return VirtualNetwork(seed=seed, default=Impairment(delay=delay, loss=loss))


def run_ripp(
    pki: TestPki,
    seconds: float,
    delay: float,
    loss: float,
    seed: int,
    *,
    early_resend: bool = True,
    jitter_buffer: bool = False,
) -> dict[str, Any]:
    """One RIPP call; client-to-server latency of every frame.

    Without the jitter buffer, frames are reported on arrival (MediaReceived); with it,
    the result also says how many were played, how many came too late, and the playout
    delay the buffer ended with (latency then covers the played frames only).
    """
    net = _network(seed, delay, loss)
    config = RippConfig(jitter_buffer=jitter_buffer, early_resend=early_resend)
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
    arrivals: dict[int, float] = {}
    states: dict[str, CallState] = {}

    def on_server(event: object) -> None:
        if isinstance(event, CallStateChanged) and event.state is CallState.PENDING:
            server.answer(event.call, net.now)
        elif isinstance(event, (MediaReceived, MediaPlayout)):
            arrivals.setdefault(event.frame.sequence, event.arrival)

    def on_client(event: object) -> None:
        if isinstance(event, CallStateChanged):
            states[event.call] = event.state

    net.add(SERVER, _Drained(server, on_server))
    net.add(CLIENT, _Drained(client, on_client))
    handle = client.place_call(
        to="<tel:+12125551234>", from_="<tel:+14085551234>;tag=b", identity=IDENTITY, now=net.now
    )
    if not net.run_until(lambda: states.get(handle) is CallState.CONNECTED, timeout=30.0):
        raise RuntimeError("RIPP call did not connect")
    sent: dict[int, float] = {}
    payload = b"\xff" * FRAME_BYTES

    def send() -> None:
        if handle in client.calls:
            frame = client.send_media(handle, Codec.PCMU, FRAME, payload, net.now)
            sent[frame.sequence] = net.now

    start = net.now
    for index in range(round(seconds / FRAME)):
        net.schedule(start + index * FRAME, send)
    net.run_for(seconds + TAIL)
    call = client.calls[handle]
    sender = call.sender
    extra: dict[str, Any] = {
        "media_streams_at_end": len(call.media_channels),
        "early_resent": sender.frames_early_resent,
        # the bandwidth cost: codec bytes of early copies per codec byte of new frames
        "resent_per_sent": sender.bytes_early_resent / max(1, sender.stats(net.now).bytes_sent),
    }
    if jitter_buffer:
        [server_handle] = list(server.calls)
        receiver = server.stats(server_handle, net.now).receiver
        extra["played"] = len(arrivals)
        extra["late"] = receiver.late
        extra["playout_delay_ms"] = receiver.playout_delay * 1000
    return _result(sent, arrivals, extra=extra)


def run_single_stream(
    pki: TestPki, seconds: float, delay: float, loss: float, seed: int
) -> dict[str, Any]:
    """Bare H3: every frame pipelined on one request body; latency of every frame."""
    net = _network(seed, delay, loss)
    arrivals: dict[int, float] = {}
    ready: list[int] = []  # the client's request stream once the response headers came

    def on_server_event(connection: BareConnection, event: H3Event, now: float) -> None:
        if isinstance(event, HeadersReceived):
            connection.h3.send_headers(event.stream_id, [(b":status", b"200")], end_stream=False)
            connection.state[event.stream_id] = FrameDecoder(MEDIA_FRAMES, 1500, 1 << 24)
            server.touch(connection)
        elif isinstance(event, DataReceived):
            decoder = connection.state.get(event.stream_id)
            if isinstance(decoder, FrameDecoder):
                for frame in decoder.feed(event.data):
                    if isinstance(frame, MediaFrame):
                        arrivals.setdefault(frame.sequence, now)

    def on_client_event(connection: BareConnection, event: H3Event, now: float) -> None:
        if isinstance(event, HeadersReceived) and not ready:
            ready.append(event.stream_id)

    def on_handshake(connection: BareConnection, now: float) -> None:
        stream_id = connection.quic.get_next_available_stream_id()
        connection.h3.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/media"),
                (b"content-type", b"application/ripp-media"),
            ],
            end_stream=False,
        )
        client.touch(connection)

    server = BareEndpoint(server_quic_configuration(pki), on_server_event)
    client = BareEndpoint(client_quic_configuration(pki), on_client_event)
    client.on_handshake = on_handshake
    net.add(SERVER, server)
    net.add(CLIENT, client)
    connection = client.connect(SERVER, net.now)
    if not net.run_until(lambda: bool(ready), timeout=30.0):
        raise RuntimeError("bare H3 request was not answered")
    stream_id = ready[0]
    sent: dict[int, float] = {}
    payload = b"\xff" * FRAME_BYTES

    def send(sequence: int) -> None:
        frame = MediaFrame(
            sequence=sequence,
            timestamp=(sequence * 960) % (1 << 32),
            codec=Codec.PCMU,
            duration_units=round(FRAME * 2000),
            payload=payload,
        )
        connection.h3.send_data(stream_id, encode_media(frame), end_stream=False)
        client.touch(connection)
        sent[sequence] = net.now

    start = net.now
    for index in range(round(seconds / FRAME)):
        net.schedule(start + index * FRAME, lambda i=index: send(i))
    net.run_for(seconds + TAIL)
    return _result(sent, arrivals)


def _result(
    sent: dict[int, float], arrivals: dict[int, float], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    latencies = [arrivals[s] - t for s, t in sent.items() if s in arrivals]
    late = sum(1 for s, t in sent.items() if s not in arrivals or arrivals[s] - t > LATE)
    result = {
        "sent": len(sent),
        "delivered": len(latencies),
        "latency_ms": latency_summary(latencies),
        "late_pct": 100.0 * late / len(sent) if sent else float("nan"),
        # on time for a fixed playout point of DEADLINES after sending (one-way + k frames)
        "on_time_pct": {
            f"{deadline * 1000:g}": 100.0
            * sum(1 for s, t in sent.items() if s in arrivals and arrivals[s] - t <= deadline)
            / max(1, len(sent))
            for deadline in DEADLINES
        },
        "latencies": latencies,
    }
    result.update(extra or {})
    return result


def run(
    losses: tuple[float, ...] = (0.01, 0.02, 0.05),
    seconds: float = 30.0,
    delay: float = 0.050,
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Both stacks at every loss rate; one dict per loss rate."""
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))
    rows = []
    for loss in losses:
        began = time.perf_counter()
        ripp = run_ripp(pki, seconds, delay, loss, seed)
        plain = run_ripp(pki, seconds, delay, loss, seed, early_resend=False)
        single = run_single_stream(pki, seconds, delay, loss, seed)
        playout = {
            "ripp": run_ripp(pki, seconds, delay, loss, seed, jitter_buffer=True),
            "plain": run_ripp(
                pki, seconds, delay, loss, seed, early_resend=False, jitter_buffer=True
            ),
        }
        for result in playout.values():
            result.pop("latencies", None)
        rows.append(
            {
                "loss": loss,
                "delay": delay,
                "seconds": seconds,
                "seed": seed,
                "ripp": ripp,
                "plain": plain,
                "single": single,
                "playout": playout,
                "wall": time.perf_counter() - began,
            }
        )
    return rows
