"""Structured logs: JSON lines on request (``--log-json``), and a log of each call's events.

:class:`JsonFormatter` writes every log record as one JSON object (``ts``, ``level``,
``logger``, ``message``, plus the structured fields the record carries: ``call`` is the call
URI on every record about a call). :class:`EventRecorder` turns an endpoint's events into
such records under the ``ripp.events`` logger: the call's signaling, migration, DTMF and
its end with the media statistics, but not per-frame events. ``ripp ladder`` draws a call
from those records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ripp_core import (
    CallAttached,
    CallCreated,
    CallIncoming,
    CallMigrating,
    CallStateChanged,
    CallTerminated,
    ConnectionClosed,
    DtmfReceived,
    Event,
    MarkReached,
    ProtocolViolation,
)

__all__ = ["EVENT_LOGGER", "EventRecorder", "JsonFormatter", "setup_logging"]

#: The logger that carries call events as structured records.
EVENT_LOGGER = "ripp.events"
#: Attributes every LogRecord has; anything else was passed as ``extra`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (Unix seconds), level, logger, message, and the
    record's extra fields (``call``, ``side``, ``event``...)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(*, verbose: bool, json_lines: bool, stream: Any) -> None:
    """Log to ``stream``: JSON lines at INFO with ``json_lines``, else text (INFO with
    ``verbose``, WARNING otherwise)."""
    handler = logging.StreamHandler(stream)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose or json_lines else logging.WARNING)


class EventRecorder:
    """Logs the events of one endpoint (``side``: "client", "server", or an instance name)
    as structured records; times come from ``clock`` (the driver's, or virtual time)."""

    def __init__(self, side: str, clock: Callable[[], float]) -> None:
        self.side = side
        self._clock = clock
        self._uris: dict[str, str] = {}
        self._log = logging.getLogger(EVENT_LOGGER)

    def __call__(self, event: Event) -> None:
        """Record ``event`` (an observer for :meth:`ripp_core.aio.Server.observe`)."""
        record = self.record(event)
        if record is not None:
            self._log.info("%s %s", record["event"], record.get("call") or "-", extra=record)

    def record(self, event: Event) -> dict[str, Any] | None:
        """The structured fields for ``event``, or None for per-frame events."""
        handle = getattr(event, "call", None)
        fields: dict[str, Any]
        if isinstance(event, CallIncoming):
            self._uris[event.call] = event.uri
            fields = {
                "to": event.to.uri,
                "from": event.from_.uri,
                "reestablishes": event.reestablishes,
                "state": event.state.value,
            }
        elif isinstance(event, CallCreated):
            self._uris[event.call] = event.uri
            fields = {}
        elif isinstance(event, CallStateChanged):
            fields = {"state": event.state.value, "previous": event.previous.value}
        elif isinstance(event, CallMigrating):
            fields = {"phase": event.phase.value, "reason": event.reason, "uri": event.uri}
        elif isinstance(event, CallAttached):
            fields = {"uri": event.uri, "migrated": event.migrated}
            previous = self._uris.get(event.call)
            self._uris[event.call] = event.uri
            if previous is not None:
                fields["previous_uri"] = previous
        elif isinstance(event, DtmfReceived):
            fields = {"digit": event.digit, "duration": event.duration}
        elif isinstance(event, MarkReached):
            fields = {"mark": event.name, "dropped": event.dropped}
        elif isinstance(event, CallTerminated):
            fields = {"code": event.code, "reason": event.reason, "by": event.by.value}
            if event.stats is not None:
                s, r = event.stats.sender, event.stats.receiver
                fields["media"] = {
                    "sent": s.frames_sent,
                    "acked": s.frames_acked,
                    "resent": s.frames_resent,
                    "received": r.frames_received,
                    "lost": r.lost,
                    "late": r.late,
                    "duplicates": r.duplicates,
                    "jitter_ms": round(r.jitter * 1000, 2),
                    "rtt_ms": None if s.rtt_smoothed is None else round(s.rtt_smoothed * 1000, 2),
                    "streams_max": s.streams_max_busy,
                }
        elif isinstance(event, ProtocolViolation):
            fields = {"error": event.error, "detail": event.message, "status": event.status}
        elif isinstance(event, ConnectionClosed):
            fields = {"peer": list(event.peer), "code": event.error_code, "reason": event.reason}
        else:
            return None  # media frames, gaps: too many for a log
        record = {
            "event": type(event).__name__,
            "side": self.side,
            "t": round(self._clock(), 6),
            "handle": handle,
            "call": self._uris.get(handle) if isinstance(handle, str) else None,
            **fields,
        }
        return record
