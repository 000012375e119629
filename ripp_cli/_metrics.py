"""Prometheus metrics for a RIPP endpoint (``ripp serve --metrics-port``).

:class:`CallMetrics` is sans-IO: it is fed the endpoint's events (:meth:`observe`) and,
about once a second, each live call's statistics (:meth:`sample`), with the time passed in;
it keeps prometheus-client metric objects in its own registry. :func:`serve_metrics` is the
only I/O: prometheus-client's HTTP server for ``/metrics``, in a thread (the metric objects
are thread-safe, so scrapes never touch the protocol core).

Metric names follow Prometheus conventions (``_total`` counters, base units: seconds);
what each means is in ``docs/operations.md``.
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ripp_core import (
    CallIncoming,
    CallState,
    CallStateChanged,
    CallStats,
    CallTerminated,
    Codec,
    ConnectionClosed,
    Event,
    MediaPlayout,
    MediaReceived,
    ProtocolViolation,
    is_tls_failure,
    mos_estimate,
)

__all__ = ["CallMetrics", "serve_metrics"]

_SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.0)
_MOS_BUCKETS = (1.0, 2.0, 2.6, 3.1, 3.6, 4.0, 4.3, 4.5)
_STREAM_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 20)
_AUDIO = (Codec.PCMU, Codec.PCMA, Codec.OPUS)


@attrs.define
class _Live:
    """What is remembered of one live call between samples."""

    state: CallState
    began: float
    codec: Codec = Codec.PCMU
    frame_duration: float = 0.02
    sent: int = 0
    received: int = 0
    lost: int = 0
    late: int = 0


class CallMetrics:
    """Call and media metrics of one endpoint, in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge(
            "ripp_calls_active", "Calls alive now, by call state", ["state"], registry=r
        )
        self.calls_ended = Counter(
            "ripp_calls_ended", "Calls ended, by final SIP-style code", ["code"], registry=r
        )
        self.setup_seconds = Histogram(
            "ripp_call_setup_seconds",
            "From the call request to CONNECTED",
            buckets=_SETUP_BUCKETS,
            registry=r,
        )
        self.frames_sent = Counter("ripp_media_frames_sent", "Media frames sent", registry=r)
        self.frames_received = Counter(
            "ripp_media_frames_received", "Media frames received", registry=r
        )
        self.frames_lost = Counter(
            "ripp_media_frames_lost", "Media frames that never arrived", registry=r
        )
        self.frames_late = Counter(
            "ripp_media_frames_late",
            "Media frames that arrived after their playout time",
            registry=r,
        )
        self.jitter = Histogram(
            "ripp_media_jitter_seconds",
            "Interarrival jitter (RFC 3550) of live calls, one observation per call a second",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.rtt = Histogram(
            "ripp_rtt_seconds",
            "Smoothed RTT from RIPP's acks, one observation per call a second",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.streams = Histogram(
            "ripp_media_streams",
            "Media streams open per call (sending direction), one observation per call a second",
            buckets=_STREAM_BUCKETS,
            registry=r,
        )
        self.mos = Histogram(
            "ripp_mos",
            "E-model (ITU-T G.107) MOS estimate, one observation per call a second",
            buckets=_MOS_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "ripp_refusals",
            "Protocol violations by peers, by error class (what was refused)",
            ["reason"],
            registry=r,
        )
        self.connections = Gauge("ripp_connections", "QUIC connections open", registry=r)
        self.connections_closed = Counter(
            "ripp_connections_closed", "QUIC connections closed, by kind", ["kind"], registry=r
        )
        for state in CallState:
            if state is not CallState.TERMINATED:
                self.calls_active.labels(state.value)  # show zeros, not absence
        self._live: dict[str, _Live] = {}

    # ------------------------------------------------------------------ events
    def observe(self, event: Event, now: float) -> None:
        """Account for one endpoint event that happened at ``now``."""
        if isinstance(event, ProtocolViolation):
            self.refusals.labels(event.error).inc()
        elif isinstance(event, ConnectionClosed):
            self.connections_closed.labels(_closing_kind(event.error_code)).inc()
        elif isinstance(event, CallIncoming):
            self._enter(event.call, event.state, now)
        elif isinstance(event, CallStateChanged):
            live = self._live.get(event.call)
            if live is None:  # a client's call: its first event is its first state change
                live = self._enter(event.call, event.previous, now)
            if event.state is CallState.CONNECTED and event.previous is not CallState.CONNECTED:
                self.setup_seconds.observe(max(0.0, now - live.began))
            if event.state is not CallState.TERMINATED:
                self._move(live, event.state)
        elif isinstance(event, MediaPlayout | MediaReceived):
            live = self._live.get(event.call)
            if live is not None and event.frame.codec in _AUDIO:
                live.codec, live.frame_duration = event.frame.codec, event.frame.duration
        elif isinstance(event, CallTerminated):
            live = self._live.pop(event.call, None)
            if live is not None:
                self.calls_active.labels(live.state.value).dec()
                if event.stats is not None:
                    self._count(live, event.stats)
            self.calls_ended.labels(str(event.code)).inc()

    def _enter(self, handle: str, state: CallState, now: float) -> _Live:
        live = self._live[handle] = _Live(state=state, began=now)
        self.calls_active.labels(state.value).inc()
        return live

    def _move(self, live: _Live, state: CallState) -> None:
        self.calls_active.labels(live.state.value).dec()
        self.calls_active.labels(state.value).inc()
        live.state = state

    def _count(self, live: _Live, stats: CallStats) -> tuple[int, int]:
        """Add what changed since the last look; return (frames newly received, lost)."""
        sender, receiver = stats.sender, stats.receiver
        received = receiver.frames_received - live.received
        missing = receiver.lost + receiver.late - live.lost - live.late
        self.frames_sent.inc(max(0, sender.frames_sent - live.sent))
        self.frames_received.inc(max(0, received))
        self.frames_lost.inc(max(0, receiver.lost - live.lost))
        self.frames_late.inc(max(0, receiver.late - live.late))
        live.sent, live.received = sender.frames_sent, receiver.frames_received
        live.lost, live.late = receiver.lost, receiver.late
        return max(0, received), max(0, missing)

    # ------------------------------------------------------------------ samples
    def sample(self, stats: dict[str, CallStats], connections: int) -> None:
        """Account for the statistics of the live calls (by handle), taken now."""
        self.connections.set(connections)
        for handle, snapshot in stats.items():
            live = self._live.get(handle)
            if live is None:
                continue
            received, missing = self._count(live, snapshot)
            sender, receiver = snapshot.sender, snapshot.receiver
            self.jitter.observe(receiver.jitter)
            self.streams.observe(sender.streams_open)
            if sender.rtt_smoothed is not None:
                self.rtt.observe(sender.rtt_smoothed)
            if live.state is CallState.CONNECTED and received + missing > 0:
                self.mos.observe(self.call_mos(live, snapshot, missing / (received + missing)))

    @staticmethod
    def call_mos(live: _Live, stats: CallStats, loss: float) -> float:
        """The E-model MOS of a call: one-way delay is half the RTT, the jitter buffer's
        delay and one frame (packetization); late frames count as lost."""
        rtt = stats.sender.rtt_smoothed or 0.0
        delay = rtt / 2 + stats.receiver.playout_delay + live.frame_duration
        return mos_estimate(delay, min(1.0, loss), live.codec)


def _closing_kind(error_code: int) -> str:
    if error_code == 0 or error_code == 0x100:  # NO_ERROR, H3_NO_ERROR
        return "normal"
    if is_tls_failure(error_code):
        return "tls"
    return "error"


def serve_metrics(metrics: CallMetrics, port: int, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` over HTTP on ``host:port`` (0: any free port) in a daemon
    thread; return the port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_port)
