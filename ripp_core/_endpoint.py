"""The endpoint layer: what every RIPP endpoint does whatever HTTP version carries it.

No HTTP and no transport here: a registry of calls by handle, the timer heap that wakes
them, the queue of events for the user, the user's commands on calls, the bookkeeping of
requests parked for deferred checks, and admission control from the event loop's lag.
The HTTP-semantics layer (:mod:`._http`) builds on it, and each transport binding
(:mod:`._h3`, :mod:`._h2`) on that.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ._call import Call
from ._codecs import DURATION_UNIT, Codec
from ._config import RippConfig
from ._errors import NoSuchCall, RippError
from ._events import Event, ProtocolViolation
from ._frames import MediaFrame
from ._logs import LogLimiter
from ._stats import CallStats

logger = logging.getLogger("ripp.endpoint")


#: Longest piece of peer input echoed into a Ripp-Reason value or a log line.
def bounded(text: str, limit: int) -> str:
    """Peer input as it may appear in a reason or log line: at most ``limit`` characters
    (``RippConfig.max_echo_chars``), control characters replaced (never echo unbounded
    input)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[: max(0, limit - 3)] + "..."


class EndpointCore:
    """Calls, call timers, events and commands: the part of an endpoint that knows
    neither HTTP nor a transport."""

    def __init__(self, config: RippConfig, log: logging.Logger) -> None:
        self.config = config
        self._calls: dict[str, Call] = {}
        self._events: deque[Event] = deque()
        self._heap: list[tuple[float, int, str]] = []
        self._deadlines: dict[str, float] = {}
        self._heap_seq = 0
        # Insertion-ordered (a dict, not a set): string hashes differ between processes,
        # and the order calls are re-armed in must not, or runs stop being reproducible.
        self._dirty: dict[str, None] = {}
        self._log_clock = 0.0  # the latest ``now`` seen: the log limiter's clock
        self._log = LogLimiter(log, burst=config.log_burst, interval=config.log_interval)

    def _bounded(self, text: str) -> str:
        """Peer input as it may be quoted in a reason or log line (``max_echo_chars``)."""
        return bounded(text, self.config.max_echo_chars)

    # ---------------------------------------------------------------- events
    def next_event(self) -> Event | None:
        """The next event for the user, or None."""
        return self._events.popleft() if self._events else None

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _limited(self, now: float, fmt: str, *args: object) -> None:
        """A warning a peer can trigger at will: rate-limited."""
        self._log.log(logging.WARNING, now, fmt, *args)

    def _violation(
        self, call: str | None, exc: RippError, status: int | None, stream_error: int | None
    ) -> None:
        self._limited(
            self._log_clock,
            "[%s] %s: %s",
            call or "-",
            type(exc).__name__,
            self._bounded(exc.message),
        )
        self._events.append(
            ProtocolViolation(call, type(exc).__name__, exc.message, status, stream_error)
        )

    # ---------------------------------------------------------------- calls API
    @property
    def calls(self) -> dict[str, Call]:
        """The live calls of this endpoint, by handle (read-only use)."""
        return self._calls

    def call(self, handle: str) -> Call:
        """The call with ``handle``; raises :class:`NoSuchCall`."""
        try:
            return self._calls[handle]
        except KeyError:
            raise NoSuchCall(f"no call {handle!r}") from None

    def send_media(
        self,
        handle: str,
        codec: Codec,
        duration: float,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
    ) -> MediaFrame:
        """Queue a media frame on a call (R5); returns the frame as it will be sent."""
        frame = self._command(
            handle, lambda c: c.send_media(codec, duration, payload, now, marker=marker), now
        )
        assert isinstance(frame, MediaFrame)
        self._media_written(handle, duration, now)
        return frame

    def _media_written(self, handle: str, duration: float, now: float) -> None:
        """Binding hook: a call wrote a media frame of ``duration`` (send slots, 11.9)."""

    def play(
        self,
        handle: str,
        codec: Codec,
        duration: float,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
    ) -> None:
        """Queue audio at any speed; it leaves at real-time pace (R23, paced sender)."""
        self._command(handle, lambda c: c.play(codec, duration, payload, now, marker=marker), now)

    def skip_media(self, handle: str, duration: float, now: float) -> int:
        """Advance a call's sending media clock without sending (protocol 9.4); returns
        the whole 0.5 ms units skipped (see :meth:`Call.skip_media`)."""
        units = self._command(handle, lambda c: c.skip_media(duration, now), now)
        assert isinstance(units, int)
        return units

    def send_dtmf(
        self, handle: str, digits: str, now: float, *, duration: float | None = None
    ) -> None:
        """Send DTMF digits as telephone-event frames, in line with paced audio (R19)."""
        self._command(handle, lambda c: c.send_dtmf(digits, now, duration=duration), now)

    def terminate(self, handle: str, now: float, code: int = 200, reason: str = "Normal") -> None:
        """End a call with a SIP-style status (hang up: 200; cancel: 487; reject: 486...)."""
        self._command(handle, lambda c: c.terminate(code, reason, now), now)

    def move(self, handle: str, now: float, uri: str | None = None) -> None:
        """Send Move (R9): the server names the new URI, the client sends none."""
        self._command(handle, lambda c: c.move(uri, now), now)

    def mark(self, handle: str, name: str, now: float) -> None:
        """Fire :class:`MarkReached` once all media sent so far is acknowledged (R23)."""
        self._command(handle, lambda c: c.mark(name, now), now)

    def clear(self, handle: str, now: float) -> int:
        """Drop media queued on a call that has not left yet (barge-in, R23)."""
        result = self._command(handle, lambda c: c.clear(now), now)
        assert isinstance(result, int)
        return result

    def stats(self, handle: str, now: float) -> CallStats:
        """Media statistics of a call (R7)."""
        return self.call(handle).stats(now)

    def _command(self, handle: str, action: Callable[[Call], object], now: float) -> object:
        call = self.call(handle)
        result = action(call)
        self._dirty[handle] = None
        self._settle(now)
        return result

    # ---------------------------------------------------------------- call timers
    def _touch_call(self, handle: str) -> None:
        """The call had input: re-arm its timer at the next :meth:`_settle`."""
        self._dirty[handle] = None

    def _next_call_deadline(self) -> float | None:
        while self._heap:
            at, _, handle = self._heap[0]
            if self._deadlines.get(handle) != at:
                heapq.heappop(self._heap)  # stale entry
                continue
            return at
        return None

    def _run_call_timers(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            at, _, handle = heapq.heappop(self._heap)
            if self._deadlines.get(handle) != at:
                continue
            del self._deadlines[handle]
            call = self._calls.get(handle)
            if call is not None:
                call.handle_timer(now)
                self._dirty[handle] = None
                units = call.take_paced_release()
                if units is not None:  # a paced frame left: it counts for send slots
                    self._media_written(handle, units * DURATION_UNIT, now)

    def _settle(self, now: float) -> None:
        """Re-arm the timers of calls touched since last time; forget finished calls."""
        for handle in self._dirty:
            call = self._calls.get(handle)
            if call is None:
                continue
            if call.finished:
                self._forget_call(call, now)
                continue
            deadline = call.next_deadline()
            if deadline is None:
                self._deadlines.pop(handle, None)
            elif self._deadlines.get(handle) != deadline:
                self._deadlines[handle] = deadline
                self._heap_seq += 1
                heapq.heappush(self._heap, (deadline, self._heap_seq, handle))
        self._dirty.clear()

    def _forget_call(self, call: Call, now: float | None = None) -> None:
        self._calls.pop(call.handle, None)
        self._deadlines.pop(call.handle, None)


T = TypeVar("T")


class Parking(Generic[T]):
    """Requests waiting for deferred checks, by ticket, each with a deadline (protocol
    19.2). Bounded by ``max_pending_checks``; expired tickets are handed back by
    :meth:`expire` so the caller can refuse them."""

    def __init__(self, config: RippConfig) -> None:
        self._config = config
        self._parked: dict[int, tuple[float, T]] = {}
        self._next_ticket = 1

    def __len__(self) -> int:
        return len(self._parked)

    def full(self) -> bool:
        """True when one more request would exceed ``max_pending_checks``."""
        return len(self._parked) >= self._config.max_pending_checks

    def park(self, item: T, now: float) -> int:
        """Park ``item`` until ``now + check_timeout``; returns its ticket."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._parked[ticket] = (now + self._config.check_timeout, item)
        return ticket

    def pop(self, ticket: int) -> T | None:
        """The item of ``ticket``, removed; None if unknown or expired."""
        entry = self._parked.pop(ticket, None)
        return entry[1] if entry is not None else None

    def expire(self, now: float) -> list[T]:
        """Remove and return every item whose deadline has passed."""
        gone = [ticket for ticket, (at, _) in self._parked.items() if at <= now]
        return [self._parked.pop(ticket)[1] for ticket in gone]

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None."""
        return min((at for at, _ in self._parked.values()), default=None)


class Admission:
    """Admission control from the event loop's own timer lag (protocol 19.5).

    A moving average (gain 1/8) of how late timers ran; while it exceeds
    ``admission_max_lag``, or after one run later than ``admission_max_stall``, new calls
    are refused, and for ``admission_hold`` after."""

    def __init__(self, config: RippConfig) -> None:
        self._config = config
        self._overloaded_until = 0.0
        self.lag = 0.0

    def report(self, lag: float, now: float) -> None:
        """Feed one measurement of timer lateness (seconds)."""
        self.lag += (max(0.0, lag) - self.lag) / 8
        if self.lag > self._config.admission_max_lag or lag > self._config.admission_max_stall:
            if now >= self._overloaded_until:
                logger.warning(
                    "overloaded (event loop %.0f ms late on average): refusing new calls",
                    self.lag * 1000,
                )
            self._overloaded_until = now + self._config.admission_hold

    def overloaded(self, now: float) -> bool:
        """True while new calls are refused."""
        return now < self._overloaded_until
