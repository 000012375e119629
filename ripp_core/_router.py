"""Sorting endpoint events into per-call inboxes, for drivers with async APIs.

A driver pulls events from an endpoint and hands each to :meth:`EventRouter.route`, which
files it under its call and says which call changed; the driver then only wakes whoever
waits on that call. Everything a driver's ``Call`` object exposes (its state, received
audio and DTMF, reached marks, how it ended) is read from a :class:`CallInbox`, so the
Trio and asyncio drivers share all of this and hold no protocol logic of their own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import attrs

from ._events import (
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
    MediaGap,
    MediaPlayout,
    MediaReceived,
    MigrationPhase,
    Termination,
)
from ._frames import MediaFrame
from ._http import HttpServer
from ._state import CallState

#: What a call's audio iterator yields: a frame to play, or a gap to conceal.
AudioItem = MediaFrame | MediaGap


#: QUIC carries a TLS alert as CRYPTO_ERROR, 0x100 + the alert code (RFC 9001, 4.8). The
#: HTTP/3 application codes 0x100..0x110 share that range (the close event does not say
#: which kind it was), so only alerts above 16 count: every certificate and handshake alert
#: (40 handshake_failure .. 51 decrypt_error, 116, 120) is among them.
_CRYPTO_ERRORS = range(0x111, 0x200)
#: The SIP-style code a call gets when its connection's TLS handshake failed: 503 with a
#: reason that names TLS (SIP has no code of its own for this; 495 is HTTP-only).
_TLS_FAILURE_CODE = 503


def is_tls_failure(error_code: int) -> bool:
    """True if a connection's close code is a TLS alert (a failed handshake)."""
    return error_code in _CRYPTO_ERRORS


class CallEnded(Exception):
    """The call ended while we waited for something else or tried to act on it; ``ended``
    says how. Both drivers raise this same class."""

    def __init__(self, ended: CallTerminated) -> None:
        super().__init__(f"call ended: {ended.code} {ended.reason}")
        self.ended = ended


class CallMovedAway(Exception):
    """This instance handed the call over to another (R9): its application is done with
    it here, and the call carries on at ``uri``."""

    def __init__(self, uri: str | None) -> None:
        super().__init__(f"call moved away to {uri}")
        self.uri = uri


@attrs.define(eq=False)
class CallInbox:
    """Everything that happened to one call, as a driver's API presents it."""

    handle: str
    state: CallState = CallState.CREATED
    uri: str | None = None
    states: list[CallState] = attrs.Factory(list)
    audio: deque[AudioItem] = attrs.Factory(deque)
    audio_dropped: int = 0
    dtmf: deque[DtmfReceived] = attrs.Factory(deque)
    marks: dict[str, MarkReached] = attrs.Factory(dict)
    migrations: list[Event] = attrs.Factory(list)
    terminated: CallTerminated | None = None
    moved_to: str | None = None
    moved_away: bool = False
    """True once this instance handed the call over (its iterators end)."""
    max_audio: int = 1000
    arrivals: dict[int, float] = attrs.Factory(dict)
    """Arrival time of recently received frames, by sequence number (bounded)."""

    @property
    def ended(self) -> bool:
        """True once the call is terminated."""
        return self.terminated is not None

    def reached(self, state: CallState) -> bool:
        """True once the call has been in ``state`` or gone past it while alive.

        A re-established call starts CONNECTED without a PENDING of its own, and a call
        answered at once never rings: both have still reached PENDING and RINGING. A call
        that ended has reached nothing it was not in before (and TERMINATED).
        """
        if state is CallState.TERMINATED:
            return self.terminated is not None or self.state is state
        if state in self.states or state is self.state:
            return True
        if self.state is CallState.TERMINATED:
            return False
        return _PROGRESS.index(self.state) > _PROGRESS.index(state)


_PROGRESS = list(CallState)


class EventRouter:
    """Files endpoint events under their calls; keeps new incoming calls in a queue."""

    def __init__(self, max_audio: int = 1000, max_ended: int = 256, max_other: int = 256) -> None:
        self.calls: dict[str, CallInbox] = {}
        # Inboxes of ended calls are kept for late readers, but only the most recent ones:
        # a server that runs for months must not keep every call it ever had. A Call object
        # holds its own inbox, so forgetting it here does not break it.
        self._ended: deque[str] = deque()
        self._max_ended = max_ended
        self.incoming: deque[CallIncoming] = deque()
        # Events of no call (refusals, closed connections): recent ones only, or a peer
        # making refused requests would grow this for ever.
        self.other: deque[Event] = deque(maxlen=max_other)
        self._max_audio = max_audio
        self._tls_failure: ConnectionClosed | None = None
        self.observers: list[Callable[[Event], None]] = []
        """Called with every event routed (after any rewording), for metrics and logs."""

    def inbox(self, handle: str) -> CallInbox:
        """The inbox of ``handle``, created on first use."""
        inbox = self.calls.get(handle)
        if inbox is None:
            inbox = self.calls[handle] = CallInbox(handle, max_audio=self._max_audio)
        return inbox

    def route(self, event: Event) -> str | None:
        """File ``event``; return the handle of the call it changed, or None."""
        handle = self._file(event)
        for observer in self.observers:
            observer(event if handle is None else self._latest(handle, event))
        return handle

    def _latest(self, handle: str, event: Event) -> Event:
        # A CallTerminated may have been reworded while filed: observers see what was filed.
        inbox = self.calls.get(handle)
        if isinstance(event, CallTerminated) and inbox is not None and inbox.terminated:
            return inbox.terminated
        return event

    def _file(self, event: Event) -> str | None:
        handle = getattr(event, "call", None)
        if not isinstance(event, CallStateChanged | CallTerminated):
            self._tls_failure = None
        if isinstance(event, ConnectionClosed) and is_tls_failure(event.error_code):
            # The binding ends the connection's calls right after this event, as if their
            # requests had been reset; those not yet created failed because of TLS.
            self._tls_failure = event
        if not isinstance(handle, str):
            self.other.append(event)
            return None
        inbox = self.inbox(handle)
        if isinstance(event, CallIncoming):
            inbox.uri = event.uri
            inbox.state = event.state
            self.incoming.append(event)
        elif isinstance(event, CallCreated):
            inbox.uri = event.uri
        elif isinstance(event, CallStateChanged):
            inbox.state = event.state
            inbox.states.append(event.state)
        elif isinstance(event, MediaPlayout | MediaReceived):
            if len(inbox.arrivals) >= 2 * inbox.max_audio:
                inbox.arrivals.pop(next(iter(inbox.arrivals)))
            inbox.arrivals[event.frame.sequence] = event.arrival
            self._audio(inbox, event.frame)
        elif isinstance(event, MediaGap):
            self._audio(inbox, event)
        elif isinstance(event, DtmfReceived):
            inbox.dtmf.append(event)
        elif isinstance(event, MarkReached):
            inbox.marks[event.name] = event
        elif isinstance(event, CallMigrating | CallAttached):
            if isinstance(event, CallAttached):
                inbox.uri = event.uri
            elif event.phase is MigrationPhase.MOVED_AWAY:
                inbox.moved_away, inbox.moved_to = True, event.uri
            inbox.migrations.append(event)
        elif isinstance(event, CallTerminated):
            if self._tls_failure is not None and inbox.uri is None and event.code == 503:
                event = attrs.evolve(
                    event,
                    code=_TLS_FAILURE_CODE,
                    reason=f"TLS handshake failed: {self._tls_failure.reason}",
                    by=Termination.FAILURE,
                )
            inbox.terminated = event
            self._ended.append(handle)
            while len(self._ended) > self._max_ended:
                self.calls.pop(self._ended.popleft(), None)
        else:
            self.other.append(event)
        return handle

    def _audio(self, inbox: CallInbox, item: AudioItem) -> None:
        # A consumer that stopped reading must not grow memory without bound: drop the
        # oldest audio (it is stale anyway) and count it.
        if len(inbox.audio) >= inbox.max_audio:
            inbox.audio.popleft()
            inbox.audio_dropped += 1
        inbox.audio.append(item)

    def adopt(self, handle: str, uri: str, state: CallState) -> CallInbox:
        """Open the inbox of a call taken over from another instance, already in ``state``."""
        inbox = self.inbox(handle)
        inbox.uri, inbox.state = uri, state
        return inbox


def drain(
    source: HttpServer, target: HttpServer, now: float, authority: str | None = None
) -> list[str]:
    """Move every live call of ``source`` to ``target``, both in this process (rolling
    upgrade, R9, R17): export, import there, Move here. ``authority`` is the host[:port]
    clients reach ``target`` at (default: ``target.authority``, else the calls' current
    one, as behind a load balancer). Returns the calls' handles on ``target``; collect both
    endpoints' datagrams afterwards."""
    moved = []
    for handle, call in list(source.calls.items()):
        if call.state is CallState.TERMINATED or call.exported:
            continue
        reach = authority or target.authority or urlsplit(call.uri or "").netloc or None
        uri = target.import_call(source.export_call(handle, now), now, reach)
        source.move(handle, now, uri)
        moved.append(uri.rsplit("/", 1)[1])  # a server's call URI ends with its handle
    return moved
