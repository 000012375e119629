"""OpenTelemetry traces of calls (optional: ``pip install ripp[otel]``).

The draft's argument for carrying calls over HTTP is that the tools of HTTP apply, tracing
among them. :class:`CallTracer` makes one trace per call: a ``ripp.call`` span from the
call request to its end, with child spans for creation (request to PENDING), signaling
(PENDING to the end), each move and each re-establishment, and the end's code, reason and
media statistics as attributes. It is an observer (``server.observe(tracer)``), so it sees
every call of an endpoint without touching the application's code.

The ``traceparent`` header (W3C Trace Context) links the two sides: a client places calls
with :meth:`CallTracer.place_call`, which puts the call span's context on the creation
request; a server's call span continues the trace the header names, and
:meth:`CallTracer.headers_for` gives the headers to pass the trace on to the next hop.

Spans are timed by the OpenTelemetry clock (wall time), as the events happen.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ripp_core import (
    CallAttached,
    CallIncoming,
    CallMigrating,
    CallState,
    CallStateChanged,
    CallTerminated,
    Event,
    MigrationPhase,
)
from ripp_core.aio import Call, Client

__all__ = ["CallTracer"]


class CallTracer:
    """Traces every call of the endpoint it observes (see the module docstring)."""

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self._tracer = tracer or trace.get_tracer("ripp")
        self._calls: dict[str, Span] = {}
        self._phases: dict[tuple[str, str], Span] = {}

    # ------------------------------------------------------------------ client side
    async def place_call(
        self,
        client: Client,
        *,
        to: str,
        from_: str,
        identity: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Call:
        """``client.place_call`` inside a new ``ripp.call`` span (a child of the current
        span, if any), with its ``traceparent`` on the creation request. Observe
        ``client`` with this tracer so the span follows the call."""
        span = self._tracer.start_span(
            "ripp.call",
            kind=SpanKind.CLIENT,
            attributes={"ripp.side": "client", "ripp.to": to, "ripp.from": from_},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        extra = tuple((k, v) for k, v in carrier.items())
        try:
            call = await client.place_call(
                to=to, from_=from_, identity=identity, headers=headers + extra
            )
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        self._calls[call.handle] = span
        self._start_phase(call.handle, "ripp.create")
        return call

    # ------------------------------------------------------------------ passing it on
    def headers_for(self, handle: str) -> tuple[tuple[str, str], ...]:
        """``traceparent`` (and ``tracestate``) naming the call's span, for a request the
        application makes on the call's behalf (a gateway's next hop)."""
        span = self._calls.get(handle)
        if span is None:
            return ()
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return tuple(carrier.items())

    # ------------------------------------------------------------------ the observer
    def __call__(self, event: Event) -> None:
        """Follow one endpoint event."""
        handle = getattr(event, "call", None)
        if not isinstance(handle, str):
            return
        if isinstance(event, CallIncoming):
            self._incoming(event)
            return
        span = self._calls.get(handle)
        if span is None:
            return
        if isinstance(event, CallStateChanged):
            span.add_event("state", {"ripp.state": event.state.value})
            if event.state is CallState.PENDING and event.previous is CallState.CREATED:
                self._end_phase(handle, "ripp.create")
                self._start_phase(handle, "ripp.signaling")
        elif isinstance(event, CallMigrating):
            span.add_event(
                "migration", {"ripp.phase": event.phase.value, "ripp.reason": event.reason}
            )
            if event.phase is MigrationPhase.MOVING:
                self._start_phase(handle, "ripp.move", {"ripp.uri": event.uri or ""})
            elif event.phase is MigrationPhase.REESTABLISHING:
                self._start_phase(handle, "ripp.reestablish", {"ripp.reason": event.reason})
            elif event.phase is MigrationPhase.MOVED_AWAY:
                self._end_phase(handle, "ripp.signaling")
                self._finish(handle, {"ripp.moved_to": event.uri or ""}, error=None)
        elif isinstance(event, CallAttached):
            span.set_attribute("ripp.call.uri", event.uri)
            self._end_phase(handle, "ripp.move")
            self._end_phase(handle, "ripp.reestablish")
        elif isinstance(event, CallTerminated):
            attributes: dict[str, Any] = {
                "ripp.end.code": event.code,
                "ripp.end.reason": event.reason,
                "ripp.end.by": event.by.value,
            }
            if event.stats is not None:
                sender, receiver = event.stats.sender, event.stats.receiver
                attributes.update(
                    {
                        "ripp.media.sent": sender.frames_sent,
                        "ripp.media.received": receiver.frames_received,
                        "ripp.media.lost": receiver.lost,
                        "ripp.media.late": receiver.late,
                        "ripp.media.jitter": receiver.jitter,
                    }
                )
                if sender.rtt_smoothed is not None:
                    attributes["ripp.rtt"] = sender.rtt_smoothed
            # A call that ends with a 4xx-6xx status (other than a normal cancel) failed.
            error = event.code >= 400 and event.code != 487
            self._finish(
                handle, attributes, error=f"{event.code} {event.reason}" if error else None
            )

    def _incoming(self, event: CallIncoming) -> None:
        carrier = {name: value for name, value in event.headers}
        parent = propagate.extract(carrier) if "traceparent" in carrier else None
        span = self._tracer.start_span(
            "ripp.call",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "ripp.side": "server",
                "ripp.call.uri": event.uri,
                "ripp.to": event.to.uri,
                "ripp.from": event.from_.uri,
                "ripp.reestablishes": event.reestablishes or "",
            },
        )
        self._calls[event.call] = span
        if event.reestablishes is None:
            self._start_phase(event.call, "ripp.create")
        else:
            self._start_phase(event.call, "ripp.signaling")

    def _start_phase(
        self, handle: str, name: str, attributes: dict[str, str] | None = None
    ) -> None:
        parent = trace.set_span_in_context(self._calls[handle])
        self._end_phase(handle, name)
        self._phases[(handle, name)] = self._tracer.start_span(
            name, context=parent, attributes=attributes or {}
        )

    def _end_phase(self, handle: str, name: str) -> None:
        span = self._phases.pop((handle, name), None)
        if span is not None:
            span.end()

    def _finish(self, handle: str, attributes: dict[str, Any], error: str | None) -> None:
        for key in [key for key in self._phases if key[0] == handle]:
            self._end_phase(*key)
        span = self._calls.pop(handle)
        span.set_attributes(attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
