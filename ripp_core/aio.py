"""ripp_core.aio: the async API both drivers expose, written once and loop-agnostic.

These classes hold no I/O and import no event loop: they read the per-call inboxes the
:class:`~ripp_core.EventRouter` fills and await ``driver.wait_changed`` / ``driver.checkpoint``,
which each driver (Trio, asyncio) implements with its own primitives. So the two drivers'
public API is the same code, and a behaviour fixed here is fixed in both.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol, TypeVar

from ._call import CallHandoff
from ._codecs import Codec
from ._errors import (
    CallHandedOver,
    LocalProtocolError,
    NoSuchCall,
    RemoteProtocolError,
    local_counterpart,
)
from ._events import CallIncoming, CallTerminated, DtmfReceived, Event, MarkReached
from ._frames import MediaFrame
from ._http import HttpClient, HttpServer
from ._logs import LogLimiter
from ._router import AudioItem, CallEnded, CallInbox, CallMovedAway, EventRouter, drain
from ._state import CallState
from ._stats import CallStats

T = TypeVar("T")

logger = logging.getLogger("ripp.server")

#: A server application: called once per incoming call, in a task of its own.
CallHandler = Callable[["ServerCall"], Awaitable[None]]
# Names of the marks terminate(after_playout=True) waits for; unique per process.
_playout_marks = itertools.count()


def unwrap_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside ``group`` (nested groups flattened), or the group itself.

    The drivers run their tasks in a Trio nursery or an asyncio TaskGroup, which wrap
    whatever leaves the ``async with`` in an exception group. When it holds one exception
    (the usual case: the application's own), ``open_client``/``open_server`` raise that
    exception as itself, so callers catch it with a plain ``except``; several real errors
    at once stay grouped.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else group


class DriverLike(Protocol):
    """What the API classes need from a driver (see ripp_trio/ripp_asyncio ``Driver``)."""

    router: EventRouter
    closed: bool

    @property
    def address(self) -> tuple[str, int]: ...

    def now(self) -> float: ...

    def run(self, action: Callable[[float], T]) -> T: ...

    def flush(self) -> None: ...

    async def wait_changed(self, handle: str | None) -> None: ...

    async def checkpoint(self) -> None: ...

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` in the background until it returns or the driver closes."""


class Call:
    """One call, on either side. Commands apply at once (and raise CallEnded once the call
    has ended); waits are async."""

    def __init__(self, driver: DriverLike, endpoint: HttpClient | HttpServer, handle: str) -> None:
        self._driver = driver
        self._endpoint = endpoint
        self.handle = handle
        self._inbox: CallInbox = driver.router.inbox(handle)
        self._last_stats: CallStats | None = None

    # ------------------------------------------------------------ what happened
    @property
    def state(self) -> CallState:
        """The call's current state (R3)."""
        return self._inbox.state

    @property
    def uri(self) -> str | None:
        """The call URI, once the server has created the call."""
        return self._inbox.uri

    @property
    def ended(self) -> CallTerminated | None:
        """How the call ended, or None while it lives."""
        return self._inbox.terminated

    def _command(self, action: Callable[[float], T]) -> T:
        if self._inbox.terminated is not None:
            raise CallEnded(self._inbox.terminated)
        if self._inbox.moved_away:
            raise CallMovedAway(self._inbox.moved_to)
        try:
            return self._driver.run(action)
        except CallHandedOver:
            raise CallMovedAway(self._inbox.moved_to) from None

    def arrival_time(self, sequence: int) -> float | None:
        """When a recently received frame arrived (driver clock), before jitter buffering."""
        return self._inbox.arrivals.get(sequence)

    def stats(self) -> CallStats:
        """Media statistics (R7): RTT, loss, jitter, late and duplicate frames. After the
        call has ended and been forgotten by the core, the last snapshot taken."""
        if self.handle in self._endpoint.calls:
            self._last_stats = self._driver.run(lambda now: self._endpoint.stats(self.handle, now))
        elif self._inbox.terminated is not None and self._inbox.terminated.stats is not None:
            self._last_stats = self._inbox.terminated.stats
        if self._last_stats is None:
            raise NoSuchCall(f"no statistics for call {self.handle!r}")
        return self._last_stats

    async def wait_state(self, state: CallState) -> None:
        """Wait until the call has reached ``state``; raise CallEnded if it ends first."""
        while not self._inbox.reached(state):
            if self._inbox.terminated is not None:
                raise CallEnded(self._inbox.terminated)
            await self._driver.wait_changed(self.handle)

    async def wait_ended(self) -> CallTerminated:
        """Wait for the end of the call and say how it ended."""
        while self._inbox.terminated is None:
            await self._driver.wait_changed(self.handle)
        return self._inbox.terminated

    async def states(self) -> AsyncGenerator[CallState, None]:
        """Every state the call has entered since it was created, then each new one until
        it ends (replaying the past makes a late subscriber miss nothing)."""
        seen = 0
        while True:
            while seen < len(self._inbox.states):
                seen += 1
                yield self._inbox.states[seen - 1]
            if self._inbox.terminated is not None:
                return
            await self._driver.wait_changed(self.handle)

    def audio(self) -> AsyncGenerator[AudioItem, None]:
        """Received media in playout order (through the jitter buffer): frames, and gaps
        to conceal. Ends when the call ends."""
        return self._drain(self._inbox.audio)

    def dtmf(self) -> AsyncGenerator[DtmfReceived, None]:
        """DTMF digits from the far end (R19)."""
        return self._drain(self._inbox.dtmf)

    async def media(self) -> AsyncGenerator[AudioItem | DtmfReceived, None]:
        """Audio items and DTMF digits from one iterator, as they come (what a voice
        application reads; ``ripp_audio.VoiceCall`` decodes it). Ends when the call ends."""
        audio, dtmf = self._inbox.audio, self._inbox.dtmf
        while True:
            while audio or dtmf:
                # Audio first: what is queued was released before the digit was reported.
                yield audio.popleft() if audio else dtmf.popleft()
            if self._inbox.terminated is not None or self._inbox.moved_away:
                return
            await self._driver.wait_changed(self.handle)

    def time(self) -> float:
        """The driver's clock (the time commands run at), in seconds."""
        return self._driver.run(lambda now: now)

    async def _drain(self, queue: deque[T]) -> AsyncGenerator[T, None]:
        while True:
            while queue:
                yield queue.popleft()
            if self._inbox.terminated is not None or self._inbox.moved_away:
                return
            await self._driver.wait_changed(self.handle)

    # ------------------------------------------------------------ commands
    def send_audio(
        self, codec: Codec, duration: float, payload: bytes, *, marker: bool = False
    ) -> MediaFrame:
        """Send one frame now, on the next free media stream (R5, R6).

        ``marker`` sets MARKER (a talkspurt or event starts), as a gateway copies it from
        the RTP marker bit (protocol §21.3).
        """
        return self._command(
            lambda now: self._endpoint.send_media(
                self.handle, codec, duration, payload, now, marker=marker
            )
        )

    def skip_audio(self, seconds: float) -> int:
        """Let the sending media clock run ``seconds`` without sending (protocol 9.4).

        For an application that relays its own playout (an echo, a conference bridge):
        feed each item of :meth:`audio` and the time it played to a
        :class:`~ripp_core.PlayoutClock`, and skip what it says before sending, so the
        frames' timestamps keep pace with when they are sent. The next frame carries
        MARKER if at least its own duration was skipped. Returns the whole 0.5 ms units
        skipped now; a remainder is kept for the next skip. Raises
        :class:`~ripp_core.BadSkip` for a negative, non-finite or too long skip
        (``RippConfig.media_skip_max``) or while :meth:`play` audio is waiting.
        """
        return self._command(lambda now: self._endpoint.skip_media(self.handle, seconds, now))

    def play(self, codec: Codec, duration: float, payload: bytes) -> None:
        """Queue audio at any speed; it leaves at real-time pace (R23)."""
        self._command(lambda now: self._endpoint.play(self.handle, codec, duration, payload, now))

    def clear(self) -> int:
        """Barge-in: drop audio not yet sent; returns the number of frames dropped."""
        return self._command(lambda now: self._endpoint.clear(self.handle, now))

    async def mark(self, name: str) -> MarkReached:
        """Wait until the far end has acknowledged all audio queued before this point."""
        self._command(lambda now: self._endpoint.mark(self.handle, name, now))
        while name not in self._inbox.marks:
            if self._inbox.terminated is not None:
                raise CallEnded(self._inbox.terminated)
            await self._driver.wait_changed(self.handle)
        return self._inbox.marks.pop(name)

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits in line with the paced audio (R19)."""
        self._command(lambda now: self._endpoint.send_dtmf(self.handle, digits, now))

    async def terminate(
        self, code: int = 200, reason: str = "Normal", *, after_playout: bool = False
    ) -> CallTerminated:
        """Hang up (or cancel: 487, or reject on a server: 486/603...) and wait for the end.

        Audio still queued is dropped, unless ``after_playout``: then the call ends only
        once the far end has acknowledged everything queued so far (a final mark)."""
        if after_playout and self._inbox.terminated is None:
            with contextlib.suppress(CallEnded):  # the far end hung up first: that's the end
                await self.mark(f"ripp-playout-{next(_playout_marks)}")
        if self._inbox.terminated is None:
            self._command(lambda now: self._endpoint.terminate(self.handle, now, code, reason))
        return await self.wait_ended()

    def hand_over(self) -> CallHandoff:
        """Freeze the call and return what another instance needs to take it over (R9).

        On a client, follow with :meth:`Client.take_over` on the new client instance and
        :meth:`move` here; on a server, :meth:`Server.drain_to` does all three steps.
        """
        return self._command(lambda now: self._endpoint.export_call(self.handle, now))

    def move(self, uri: str | None = None) -> None:
        """Send Move (R9). Servers name the new call URI; clients send none."""
        self._command(lambda now: self._endpoint.move(self.handle, now, uri))


class ServerCall(Call):
    """A call that arrived at a server."""

    def __init__(self, driver: DriverLike, server: HttpServer, incoming: CallIncoming) -> None:
        super().__init__(driver, server, incoming.call)
        self._server = server
        self.incoming = incoming

    @property
    def reestablished(self) -> bool:
        """True when this call re-establishes an earlier one (R10): it arrives already in
        ``incoming.state`` and must not be rung or answered again; reconnect it to its
        next hop instead."""
        return self.incoming.reestablishes is not None

    async def ring(self) -> None:
        """Alert the caller (waits for the call to be pending first). Does nothing for a
        call that is already ringing or connected (a re-established call)."""
        await self.wait_state(CallState.PENDING)
        if self._inbox.reached(CallState.RINGING):
            return
        self._command(lambda now: self._server.ring(self.handle, now))

    async def answer(self) -> None:
        """Answer the call (waits for the call to be pending first). Does nothing for a
        call that is already connected (a re-established call)."""
        await self.wait_state(CallState.PENDING)
        if self._inbox.reached(CallState.CONNECTED):
            return
        self._command(lambda now: self._server.answer(self.handle, now))

    async def reject(self, code: int = 486, reason: str = "Busy Here") -> CallTerminated:
        """Refuse the call with a SIP-style status and wait for it to end."""
        await self.wait_state(CallState.PENDING)
        self._command(lambda now: self._server.reject(self.handle, now, code, reason))
        return await self.wait_ended()


class Server:
    """A RIPP server instance on a UDP address. Use :func:`open_server`."""

    def __init__(self, driver: DriverLike, server: HttpServer) -> None:
        self._driver = driver
        self.endpoint = server
        self._log = LogLimiter(
            logger, burst=server.config.log_burst, interval=server.config.log_interval
        )

    @property
    def address(self) -> tuple[str, int]:
        """The UDP address the server listens on."""
        return self._driver.address

    def run(self, action: Callable[[float], T]) -> T:
        """Run ``action(now)`` against the sans-IO server in the driver's loop and send
        what it queued: how a helper beside the server (ripp_cluster's agent, an
        application answering deferred checks) drives :attr:`endpoint` directly."""
        return self._driver.run(action)

    def observe(self, observer: Callable[[Event], None]) -> None:
        """Call ``observer`` with every event of this server (all calls), as it happens:
        the hook for metrics and structured logs. It runs in the driver's loop: keep it
        quick, and do not raise."""
        self._driver.router.observers.append(observer)

    async def calls(self) -> AsyncGenerator[ServerCall, None]:
        """Incoming calls, as they arrive."""
        incoming = self._driver.router.incoming
        while True:
            while incoming:
                yield ServerCall(self._driver, self.endpoint, incoming.popleft())
            if self._driver.closed:
                return
            await self._driver.wait_changed(None)

    async def serve(self, handler: CallHandler) -> None:
        """Run ``handler`` for every incoming call, each in its own task, until the server
        closes. A failing handler costs its own call only:

        * :class:`CallEnded` (the caller hung up or cancelled, the call timed out) and
          :class:`CallMovedAway` end the handler quietly;
        * any other exception is logged (rate-limited) and the call, if still up, is
          terminated with ``500 Server Internal Error``.

        The server and every other call carry on.
        """
        async for call in self.calls():
            self._driver.start_soon(functools.partial(self._guarded, handler, call))

    async def _guarded(self, handler: CallHandler, call: ServerCall) -> None:
        try:
            await handler(call)
        except (CallEnded, CallMovedAway) as exc:
            logger.debug("[%s] handler stopped: %s", call.incoming.uri, exc)
        except Exception as exc:
            if self._log.log(
                logging.ERROR,
                self._driver.run(lambda now: now),
                "[%s] call handler failed: %s: %s",
                call.incoming.uri,
                type(exc).__name__,
                exc,
            ):
                logger.debug("handler traceback", exc_info=exc)
            if call.ended is None and not self._driver.closed:
                # It may have ended (or moved) on its own meanwhile.
                with contextlib.suppress(CallEnded, CallMovedAway, LocalProtocolError):
                    call._command(
                        lambda now: self.endpoint.terminate(
                            call.handle, now, 500, "Server Internal Error"
                        )
                    )

    def drain_to(self, other: Server, authority: str | None = None) -> list[Call]:
        """Move every live call to ``other`` (rolling upgrade, R9, R17); returns the moved
        calls as ``other`` sees them, for its application to take over. ``authority`` is
        the host[:port] clients reach ``other`` at, if not the one they use now."""
        handles = self._driver.run(lambda now: drain(self.endpoint, other.endpoint, now, authority))
        other._driver.flush()
        self._driver.flush()
        return [Call(other._driver, other.endpoint, handle) for handle in handles]


class Client:
    """A RIPP client. Use :func:`open_client`."""

    def __init__(self, driver: DriverLike, client: HttpClient) -> None:
        self._driver = driver
        self.endpoint = client

    @property
    def address(self) -> tuple[str, int]:
        """The local UDP address."""
        return self._driver.address

    def observe(self, observer: Callable[[Event], None]) -> None:
        """Call ``observer`` with every event of this client (all calls); see
        :meth:`Server.observe`."""
        self._driver.router.observers.append(observer)

    async def take_over(self, handoff: CallHandoff) -> Call:
        """Adopt a call another client instance handed over (client-side move, R9): opens
        new requests to the same call URI; the server re-attaches the call."""
        handle = self._driver.run(lambda now: self.endpoint.import_call(handoff, now))
        self._driver.router.adopt(handle, handoff.previous_uri, handoff.state)
        await self._driver.checkpoint()
        return Call(self._driver, self.endpoint, handle)

    async def place_call(
        self,
        *,
        to: str,
        from_: str,
        identity: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Call:
        """Create a call (R1); returns at once, with the call on its way to PENDING."""
        try:
            handle = self._driver.run(
                lambda now: self.endpoint.place_call(
                    to=to, from_=from_, identity=identity, now=now, headers=headers
                )
            )
        except LocalProtocolError as exc:
            # The binding raises a plain LocalProtocolError over the shared check's error;
            # give our user the class that names what was wrong.
            cause = exc.__cause__
            if type(exc) is LocalProtocolError and isinstance(cause, RemoteProtocolError):
                raise local_counterpart(cause) from cause
            raise
        await self._driver.checkpoint()
        return Call(self._driver, self.endpoint, handle)
