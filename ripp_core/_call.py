"""One call's protocol logic, independent of HTTP/3 (and of aioquic).

A :class:`Call` owns the call state machine, the media sender and receiver, the jitter
buffer, failure detection and the migration phase. It talks to the HTTP layer only through
the small :class:`CallTransport` interface, in terms of *channels*: opaque integers naming
one request/response pair (one HTTP/3 stream today, one HTTP/2 stream later). The binding
feeds it body bytes, response statuses and stream ends; the call decides everything else.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import attrs

from ._codecs import Codec, duration_to_units, validate_media
from ._config import RippConfig
from ._dtmf import decode_event, digit_items
from ._errors import (
    H3_REQUEST_CANCELLED,
    BadSkip,
    CallHandedOver,
    FrameError,
    LocalFrameError,
    LocalProtocolError,
    LocalStateError,
    RemoteProtocolError,
    RemoteStateError,
    RippError,
    StateError,
    TooManyStreams,
    local_counterpart,
)
from ._events import (
    CallAttached,
    CallMigrating,
    CallStateChanged,
    CallTerminated,
    DtmfReceived,
    Event,
    MarkReached,
    MediaGap,
    MediaPlayout,
    MediaReceived,
    MigrationPhase,
    ProtocolViolation,
    Termination,
)
from ._frames import (
    MEDIA_FRAMES,
    MEDIA_HEADER_SIZE,
    SIGNALING_FRAMES,
    AckFrame,
    FrameDecoder,
    MediaFrame,
    SignalFrame,
    encode_ack,
    encode_media,
    encode_signal,
)
from ._headers import NameAddr, ReestablishMarker
from ._jitter import Gap, JitterBuffer
from ._liveness import LivenessMonitor
from ._messages import (
    Answer,
    Keepalive,
    Message,
    MessageType,
    Move,
    Pending,
    Ringing,
    Streams,
    Terminate,
    decode_message,
    encode_message,
)
from ._migration import PhaseInput, next_phase
from ._pacer import PacedFrame, PacedMark, Pacer
from ._receiver import AckHolder, MediaReceiver, ReceiverWindow
from ._sender import MediaSender, SenderState
from ._state import CallState, CallStateMachine, Role
from ._stats import CallStats
from ._striping import LatenessMeter, StreamCountController, streams_for

logger = logging.getLogger("ripp.call")

#: SIP code used when a call ends because the peer or path went silent.
TIMEOUT_CODE = 408


class CallTransport(Protocol):
    """What a call needs from the HTTP layer. Implemented by the bindings (HTTP/3 and
    HTTP/2 alike). ``now`` is the time of the call's own input, so that a binding that
    opens a connection or arms a timer needs no remembered clock of its own.

    Error codes are RIPP's stream error codes (the HTTP/3 values of ``_errors``: the
    neutral vocabulary); each binding maps them to its own wire codes (protocol 20.3).
    """

    def send(self, channel: int, data: bytes, now: float) -> None:
        """Append ``data`` to our body on ``channel``."""

    def end(self, channel: int, now: float) -> None:
        """End our body on ``channel`` (END_STREAM)."""

    def stop(self, channel: int, error_code: int, now: float) -> None:
        """Stop reading ``channel`` (STOP_SENDING); sending on it stays possible."""

    def reset(self, channel: int, error_code: int, now: float) -> None:
        """Abort ``channel`` in both directions with a stream error code."""

    def open_signaling(self, call: Call, now: float) -> int | None:
        """Client: open the signaling request to ``call.uri``; None if impossible now."""

    def open_media(self, call: Call, now: float) -> int | None:
        """Client: open one media request to ``call.uri``; None if no stream credit."""

    def create_call(self, call: Call, marker: ReestablishMarker | None, now: float) -> bool:
        """Client: send the call-creation request (to the next calls URI on re-use)."""

    def path_rtt(self, call: Call) -> float | None:
        """The transport's own RTT estimate for the call's path (QUIC measures it during
        the handshake), or None: sizes N before the call's first media ack."""


@attrs.frozen
class CallRequest:
    """What a client asked for when placing the call (kept for re-establishment)."""

    to: NameAddr
    from_: NameAddr
    identity: str
    headers: tuple[tuple[str, str], ...] = ()
    principal: str | None = None
    """Server: who created the call (the authorizer's answer). Every later request on the
    call URI, and every re-establishment of it, must come from the same principal."""


@attrs.frozen
class CallHandoff:
    """Everything a server instance hands to another so the call continues there (R9).

    The sender state carries the next sequence number and every frame not yet
    acknowledged; the receiver window lets the new instance drop duplicates.
    """

    request: CallRequest
    state: CallState
    sender: SenderState
    receiver: ReceiverWindow
    previous_uri: str


class Call:
    """The protocol logic of one call, for one role. Created by an endpoint binding."""

    def __init__(
        self,
        *,
        role: Role,
        handle: str,
        config: RippConfig,
        transport: CallTransport,
        emit: Callable[[Event], None],
        request: CallRequest,
        now: float,
        uri: str | None = None,
        state: CallState = CallState.CREATED,
        sender_state: SenderState | None = None,
    ) -> None:
        self.role = role
        self.handle = handle
        self.config = config
        self.uri = uri
        self.request = request
        self._transport = transport
        self._emit = emit
        self.machine = CallStateMachine(role, state)
        if sender_state is not None:
            self.sender = MediaSender.from_state(config, sender_state, now)
            self.sender.pause()
        else:
            self.sender = MediaSender(config)
        self.receiver = MediaReceiver(config)
        self.acks = AckHolder(config)
        self.jitter = JitterBuffer(config) if config.jitter_buffer else None
        self.liveness = LivenessMonitor(config)
        self.streams = StreamCountController(config, now)
        self.lateness = LatenessMeter(config)
        self._reported_deadline: float | None = None  # last next_deadline() result
        self._next_probe: float | None = None  # lateness probe (§11.8), while media flows
        self.phase = MigrationPhase.ATTACHED if role is Role.CLIENT else MigrationPhase.DETACHED
        self.signaling: int | None = None
        self.signaling_ready = False  # client: 200 seen on the current signaling request
        self._decoders: dict[int, FrameDecoder] = {}
        self.media_channels: set[int] = set()
        self._closing: set[int] = set()  # our side ended, peer's not yet
        self._deaf: set[int] = set()  # we sent STOP_SENDING: input is ignored
        self._outbox: deque[Message] = deque()
        self._marks: deque[tuple[str, int, int]] = deque()  # name, last seq, dropped base
        self.pacer = Pacer()
        # Units of the last paced frame released by a timer, until the endpoint reads it
        # (send slots, protocol 11.9, align paced frames like those sent directly).
        self._paced_units: int | None = None
        self._arrivals: dict[int, float] = {}  # sequence -> arrival, frames in the jitter buffer
        # Recent telephone-event End frames and event starts, by sequence number, to tell a
        # repeated End (RTP style) from a new digit whatever order the frames arrive in.
        self._dtmf_ends: deque[tuple[int, bytes]] = deque(maxlen=_DTMF_HISTORY)
        self._dtmf_starts: deque[int] = deque(maxlen=_DTMF_HISTORY)
        self._peer_wanted = 0
        self._next_adapt: float | None = None
        self._phase_deadline: float | None = None
        self._linger_deadline: float | None = None
        self._reestablish_deadline: float | None = None
        self._retry_at: float | None = None
        self.terminated_code: int | None = None
        self._last_sent = now
        self.attachments = 0
        self.exported = False
        self._late_before = 0

    # ------------------------------------------------------------------ properties
    @property
    def state(self) -> CallState:
        """The call's current state."""
        return self.machine.state

    @property
    def finished(self) -> bool:
        """Terminated and every channel closed: the endpoint may forget the call."""
        gone = self.state is CallState.TERMINATED or self.phase is MigrationPhase.MOVED_AWAY
        return gone and not self._decoders

    @property
    def channels(self) -> list[int]:
        """Every channel the call still uses."""
        return list(self._decoders)

    def stats(self, now: float) -> CallStats:
        """A snapshot of the call's media statistics (R7)."""
        late = self._late_before + (self.jitter.late if self.jitter is not None else 0)
        delay = self.jitter.delay if self.jitter is not None else 0.0
        return CallStats(
            sender=self.sender.stats(now, congestion_signals=self.streams.congestion_signals),
            receiver=self.receiver.stats(now, late=late, playout_delay=delay),
        )

    # ------------------------------------------------------------------ helpers
    def _log(self, level: int, text: str, *args: object) -> None:
        # The call URI as a field too, so structured (JSON) logs name the call on every line.
        logger.log(
            level,
            "[%s %s] " + text,
            self.role.value,
            self.uri or self.handle,
            *args,
            extra={"call": self.uri, "side": self.role.value, "handle": self.handle},
        )

    def _set_phase(self, event: PhaseInput, reason: str, uri: str | None = None) -> None:
        """Move to the phase the table (``_migration.PHASE_TRANSITIONS``) gives for
        ``event``; announce it with :class:`CallMigrating` unless it is ATTACHED."""
        phase = next_phase(self.role, self.phase, event)
        if phase is self.phase:
            return
        self.phase = phase
        self._log(logging.INFO, "phase %s (%s)", phase.value, reason)
        if phase is not MigrationPhase.ATTACHED:
            self._emit(CallMigrating(self.handle, phase, reason, uri))

    def _transition(self, previous: CallState) -> None:
        if self.state is not previous:
            self._log(logging.INFO, "state %s -> %s", previous.value, self.state.value)
            self._emit(CallStateChanged(self.handle, self.state, previous))

    def _send(self, channel: int, data: bytes, now: float) -> None:
        if self.acks.pending:
            # Held ACKs ride with whatever the call sends: queued before it, they leave in
            # the same datagrams_to_send, most often in the same packet (§9.2).
            self._flush_acks(now)
        self._last_sent = now
        self._transport.send(channel, data, now)

    def _flush_acks(self, now: float) -> None:
        """Send every held ACK, each reporting its hold plus our lateness (§9.2, §11.8)."""
        lateness = self.lateness.value
        for ack in self.acks.take(now):
            hold_us = round((ack.held + lateness) * _MICROSECONDS)
            self._transport.send(ack.channel, encode_ack(AckFrame(ack.sequence, hold_us)), now)
        self._last_sent = now

    def _send_message(self, message: Message, now: float) -> None:
        if self.signaling is not None and self.signaling not in self._closing:
            self._send(self.signaling, encode_signal(encode_message(message)), now)
        else:
            self._outbox.append(message)

    def _flush_outbox(self, now: float) -> None:
        while self._outbox and self.signaling is not None:
            message = self._outbox.popleft()
            self._send(self.signaling, encode_signal(encode_message(message)), now)

    def _add_channel(self, channel: int, signaling: bool, now: float) -> None:
        self._decoders[channel] = FrameDecoder(
            SIGNALING_FRAMES if signaling else MEDIA_FRAMES,
            self.config.max_signal_size if signaling else self.config.max_frame_size,
            self.config.max_buffered_bytes_per_stream,
        )
        if signaling:
            self.signaling = channel
        else:
            self.media_channels.add(channel)
            self.sender.add_channel(channel, now)

    def _end_channel(self, channel: int, now: float) -> None:
        """End our side of ``channel``; keep reading until the peer ends too."""
        if channel in self._decoders and channel not in self._closing:
            if self.acks.pending:
                self._flush_acks(now)  # an ACK cannot follow the end of our body (§9.2)
            self._closing.add(channel)
            if channel in self.media_channels:
                self.sender.retire_channel(channel)
            self._transport.end(channel, now)

    def _forget_channel(self, channel: int, now: float) -> None:
        self.acks.discard(channel)
        self._decoders.pop(channel, None)
        self._deaf.discard(channel)
        self._closing.discard(channel)
        if channel in self.media_channels:
            self.media_channels.discard(channel)
            self.sender.remove_channel(channel, now)
        if channel == self.signaling:
            self.signaling = None
            self.signaling_ready = False

    def _drop_all_channels(self, now: float, reset: bool) -> None:
        for channel in list(self._decoders):
            if reset:
                self._transport.reset(channel, H3_REQUEST_CANCELLED, now)
            self._forget_channel(channel, now)
        self.sender.requeue_all_unacked(now)

    def _terminate_locally(self, code: int, reason: str, by: Termination, now: float) -> None:
        """Enter TERMINATED and close every channel (R8)."""
        if self.state is CallState.TERMINATED:
            return
        if self.jitter is not None:
            # Frames that arrived (and were acknowledged, so the sender counts them as
            # delivered) are handed over now instead of dying in the buffer: a call hung up
            # after its last prompt has been acknowledged must not lose the prompt's tail.
            self._release_jitter(now)
        previous = self.state
        self.machine.force_terminated()
        self.terminated_code = code
        self._transition(previous)
        self._emit(CallTerminated(self.handle, code, reason, by, self.stats(now)))
        self._phase_deadline = self._reestablish_deadline = self._retry_at = None
        self._linger_deadline = now + self.config.close_linger
        self._next_adapt = None
        self._outbox.clear()
        for channel in list(self._decoders):
            self._end_channel(channel, now)

    # ------------------------------------------------------------------ user commands
    def _require_live(self) -> None:
        if self.state is CallState.TERMINATED:
            raise LocalStateError(f"call {self.handle} is terminated")

    def send_signal(self, message: Message, now: float) -> None:
        """Send a signaling message, applying it to the state machine first."""
        previous = self.state
        if isinstance(message, Terminate):
            self.machine.check_send(message.type)
            self._send_message(message, now)
            self._terminate_locally(message.code, message.reason, Termination.LOCAL, now)
            return
        self.machine.send(message.type)
        self._send_message(message, now)
        self._transition(previous)

    def ring(self, now: float) -> None:
        """Server: tell the client the called party is being alerted."""
        self.send_signal(Ringing(), now)

    def answer(self, now: float) -> None:
        """Server: the called party answered."""
        self.send_signal(Answer(), now)

    def terminate(self, code: int, reason: str, now: float) -> None:
        """End the call (hang up, reject, cancel) with a SIP-style status (R3, R8)."""
        self._require_live()
        if self.role is Role.CLIENT and self.uri is None:
            # Not created yet: there is no signaling channel to carry Terminate.
            self._terminate_locally(code, reason, Termination.LOCAL, now)
            return
        self.send_signal(Terminate(code, reason), now)

    def send_media(
        self,
        codec: Codec,
        duration: float,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
    ) -> MediaFrame:
        """Queue one media frame; it leaves on the next free stream (R5, R6)."""
        self._require_sendable()
        self._check_size(payload)
        with _ours():
            units = duration_to_units(duration)
            validate_media(codec, units, payload)
        frame = self.sender.enqueue(codec, units, payload, now, marker=marker)
        self._pump(now)
        return frame

    def skip_media(self, duration: float, now: float) -> int:
        """Advance this direction's media clock by ``duration`` seconds without sending
        (protocol 9.4): the next frame's timestamp covers the time, and carries MARKER if
        at least its own duration was skipped since the previous frame. For an
        application relaying a playout clock of its own (see :class:`PlayoutClock`).
        Returns the whole 0.5 ms units skipped now (the remainder is kept).

        Not while paced audio waits (:meth:`play`): the pacer keeps that audio's clock,
        and a skip now would land before audio already queued.
        """
        self._require_sendable()
        if self.pacer.next_deadline() is not None:
            raise BadSkip("skip_media while paced audio is waiting")
        return self.sender.skip(duration)

    def play(
        self, codec: Codec, duration: float, payload: bytes, now: float, *, marker: bool = False
    ) -> None:
        """Queue audio handed over faster than real time; it leaves at real-time pace (R23)."""
        self._require_sendable()
        with _ours():
            units = duration_to_units(duration)
            validate_media(codec, units, payload)
        self._check_size(payload)
        self.pacer.push(PacedFrame(codec, units, payload, marker), now)
        self._release_paced(now)

    def send_dtmf(self, digits: str, now: float, *, duration: float | None = None) -> None:
        """Play DTMF digits as telephone-event frames, in line with paced audio (R19)."""
        self._require_sendable()
        items = digit_items(
            digits,
            duration=duration if duration is not None else self.config.dtmf_duration,
            gap=self.config.dtmf_gap,
            volume=self.config.dtmf_volume,
            frame_duration=self.config.dtmf_frame_duration,
        )
        for item in items:
            self.pacer.push(item, now)
        self._release_paced(now)

    def _check_size(self, payload: bytes) -> None:
        if len(payload) + MEDIA_HEADER_SIZE > self.config.max_frame_size:
            raise LocalFrameError(
                f"a {len(payload)}-byte payload exceeds max_frame_size "
                f"({self.config.max_frame_size} bytes with the {MEDIA_HEADER_SIZE}-byte header)"
            )

    def _require_sendable(self) -> None:
        self._require_live()
        if self.exported or self.phase is MigrationPhase.MOVED_AWAY:
            raise CallHandedOver("the call was handed over; send media at its new instance")
        if not self.machine.media_allowed and self.state is not CallState.CREATED:
            raise LocalStateError(f"media not allowed in state {self.state.value}")
        if self.state is CallState.CREATED and self.role is Role.SERVER:
            raise LocalStateError("server cannot send media before the call is pending")

    def mark(self, name: str, now: float) -> None:
        """Report :class:`MarkReached` once every frame queued so far (paced or not) has
        been acknowledged by the far end (R23)."""
        if self.pacer.next_deadline() is not None:
            self.pacer.push(PacedMark(name), now)
            return
        self._mark_here(name)

    def _mark_here(self, name: str, dropped_ahead: int = 0) -> None:
        last = (self.sender.next_sequence - 1) % (1 << 32)
        # The base is lowered by frames dropped before the mark reached the sender, so
        # MarkReached.dropped counts every frame ahead of the mark that was given up.
        self._marks.append((name, last, self.sender.frames_dropped - dropped_ahead))
        self._check_marks()

    def clear(self, now: float) -> int:
        """Drop media that has not left yet, paced or queued (barge-in). Returns frames
        dropped; marks behind the dropped audio fire once what did leave is acknowledged."""
        paced, marks = self.pacer.clear()
        for name, dropped_ahead in marks:
            self._mark_here(name, dropped_ahead)
        dropped = paced + self.sender.clear()
        self._check_marks()
        return dropped

    def _release_paced(self, now: float) -> None:
        for item in self.pacer.due(now):
            if isinstance(item, PacedMark):
                self._mark_here(item.name)
            else:
                self.sender.enqueue(
                    item.codec, item.duration_units, item.payload, now, marker=item.marker
                )
                self._paced_units = item.duration_units
        self._pump(now)

    def take_paced_release(self) -> int | None:
        """The duration (wire units) of the last paced frame released since the previous
        call, or None: the endpoint's send slots learn paced calls' rhythm from it."""
        units, self._paced_units = self._paced_units, None
        return units

    def move(self, uri: str | None, now: float) -> None:
        """Send Move (R9). Server: ``uri`` is where the client goes next. Client: None."""
        self._require_live()
        if self.role is Role.SERVER and not uri:
            raise LocalProtocolError("a server move needs the new call URI")
        if self.role is Role.CLIENT and uri is not None:
            raise LocalProtocolError("a client move carries no URI")
        self.machine.check_send(MessageType.MOVE)
        self._send_message(Move(uri), now)
        self.sender.pause()
        self._set_phase(PhaseInput.MOVE_SENT, "moved by us", uri)
        self._phase_deadline = now + self.config.move_timeout
        # Whoever moves keeps its side of every stream open and acking until the peer has
        # ended it: every frame the peer sent here is acknowledged here and never re-sent
        # to the new instance, so the move neither loses nor duplicates media.

    def export(self, now: float) -> CallHandoff:
        """Server: freeze sending and hand the call over to another instance (R9)."""
        self._require_live()
        self.sender.pause()
        self.exported = True
        return CallHandoff(
            request=self.request,
            state=self.state,
            sender=self.sender.export_state(),
            receiver=self.receiver.export_window(),
            previous_uri=self.uri or "",
        )

    # ------------------------------------------------------------------ server side
    def check_attach(self, *, signaling: bool) -> None:
        """Server: raise the refusal (409 StateError, 429 TooManyStreams) a signaling or
        media request for this call would get now, without changing anything."""
        if self.phase is MigrationPhase.MOVED_AWAY:
            raise RemoteStateError("the call has moved to another instance")
        if signaling:
            if self.state is CallState.TERMINATED:
                raise RemoteStateError("the call is terminated")
            live_signaling = self.signaling is not None and self.signaling not in self._closing
            if live_signaling and self.phase is MigrationPhase.ATTACHED:
                raise RemoteStateError("the call already has a signaling channel")
            return
        if not self.machine.media_allowed:
            raise RemoteStateError(f"media requests are not allowed in state {self.state.value}")
        live = len(self.media_channels - self._closing)
        if live >= self.config.max_media_streams:
            raise TooManyStreams(f"call already has {live} media streams")

    def attach_signaling(self, channel: int, now: float) -> None:
        """Server: a signaling request for this call arrived (R2); raises StateError."""
        self.check_attach(signaling=True)
        if self.signaling is not None:
            self._forget_channel(self.signaling, now)
        migrated = self.attachments > 0 or self.state is not CallState.CREATED
        self.attachments += 1
        self._add_channel(channel, signaling=True, now=now)
        self._set_phase(PhaseInput.SIGNALING_ATTACHED, "signaling attached")
        self._phase_deadline = None
        self.liveness.reset(now)
        self._emit(CallAttached(self.handle, self.uri or "", migrated=migrated))
        if self.state is CallState.CREATED:
            self.send_signal(Pending(), now)
        self._flush_outbox(now)
        self.sender.resume(now)
        self._pump(now)

    def attach_media(self, channel: int, now: float) -> None:
        """Server: a media request for this call arrived (R6); raises on refusal."""
        self.check_attach(signaling=False)
        self._add_channel(channel, signaling=False, now=now)
        self._pump(now)

    # ------------------------------------------------------------------ client side
    def start(self, now: float) -> None:
        """Client: send the call-creation request (R1)."""
        self._phase_deadline = now + self.config.connect_timeout
        if not self._transport.create_call(self, None, now):
            self._terminate_locally(503, "no connection available", Termination.FAILURE, now)

    def begin_reattach(self, now: float) -> None:
        """Client: attach an imported call to its existing call URI (client-side move)."""
        self._set_phase(PhaseInput.IMPORTED, "imported from another client", self.uri)
        self._phase_deadline = now + self.config.move_timeout
        self._open_signaling(now)
        self._open_media(self._wanted_streams(now), now)

    def on_created(self, uri: str, now: float) -> None:
        """Client: 201 Created arrived with the call URI (or re-establishment did)."""
        if self.uri is not None and uri != self.uri:
            # Re-established on an instance that never saw this call: its media sequence
            # starts afresh, so ours must too or its first frames would look like old ones.
            self.receiver.restart()
            if self.jitter is not None:
                self._late_before += self.jitter.late
                self.jitter = JitterBuffer(self.config)
        self.uri = uri
        self._retry_at = None  # the attempt was answered
        self._phase_deadline = now + self.config.connect_timeout
        self._open_signaling(now)
        if self.machine.media_allowed:
            self._open_media(self._wanted_streams(now), now)

    def on_create_failed(self, code: int, reason: str, now: float) -> None:
        """Client: the creation request was refused or reset."""
        if self.phase is MigrationPhase.REESTABLISHING:
            self._log(logging.WARNING, "re-establishment attempt refused: %d %s", code, reason)
            self._retry_at = now + self.config.reestablish_attempt_interval
            return
        self._terminate_locally(code, reason, Termination.REMOTE, now)

    def on_response(self, channel: int, status: int, reason: str, now: float) -> None:
        """Client: the response headers of a signaling or media request arrived."""
        if channel not in self._decoders:
            return
        if status == 200:
            if channel == self.signaling:
                self.signaling_ready = True
                self._phase_deadline = None
                if self.phase is not MigrationPhase.ATTACHED:
                    self._set_phase(PhaseInput.SIGNALING_READY, "signaling re-attached")
                    # Attached again: the re-establishment is over, and its give-up time
                    # (section 15.3 step 6) must not end the call later on.
                    self._reestablish_deadline = self._retry_at = None
                    self.liveness.reset(now)
                    self._emit(CallAttached(self.handle, self.uri or "", migrated=True))
                    self._next_adapt = now
                    self.sender.resume(now)
                    self._flush_outbox(now)
                else:
                    self._emit(CallAttached(self.handle, self.uri or "", migrated=False))
                self._pump(now)
            return
        self._log(logging.WARNING, "request on channel %d refused: %d %s", channel, status, reason)
        self._forget_channel(channel, now)
        if channel == self.signaling or self.signaling is None:
            if self.phase in (MigrationPhase.MOVING, MigrationPhase.REESTABLISHING):
                self._begin_reestablish(f"signaling refused with {status}", now)
            elif self.state is not CallState.TERMINATED:
                self._terminate_locally(
                    481 if status == 404 else status, reason, Termination.REMOTE, now
                )

    def _open_signaling(self, now: float) -> None:
        channel = self._transport.open_signaling(self, now)
        if channel is None:
            self._begin_reestablish("cannot open signaling", now)
            return
        self._add_channel(channel, signaling=True, now=now)
        self.signaling_ready = False
        self._flush_outbox(now)

    def _wanted_streams(self, now: float) -> int:
        rtt = self.sender.rtt.smoothed or self._transport.path_rtt(self) or self.config.initial_rtt
        # A stream stays busy for the RTT plus the time the peer holds its ACK for its own
        # next frame (§9.2): half the bound on average, when the two sides' frames fall
        # at independent times.
        return streams_for(
            self.config,
            rtt,
            self.sender.frame_interval,
            self.config.assumed_loss,
            self.config.media_ack_delay / 2,
        )

    def _open_media(self, count: int, now: float) -> None:
        live = len(self.media_channels - self._closing)
        for _ in range(max(0, count - live)):
            channel = self._transport.open_media(self, now)
            if channel is None:
                break
            self._add_channel(channel, signaling=False, now=now)
        if self._next_adapt is None:
            self._next_adapt = now + self.config.adapt_interval

    def _adapt_streams(self, now: float) -> None:
        live = sorted(self.media_channels - self._closing)
        loss = self.sender.loss_estimate
        wanted = self.streams.update(
            now,
            rtt=self.sender.rtt.smoothed,
            loss=loss,
            frame_interval=self.sender.frame_interval,
            busy_fraction=self.sender.busy_fraction,
            open_streams=len(live),
            peer_wanted=self._peer_wanted,
            lateness=max(self.lateness.value, self.sender.peer_lateness),
            hold=self.sender.ride_hold,
        )
        if wanted > len(live):
            self._open_media(wanted, now)
        elif wanted < len(live):
            idle = [c for c in live if self.sender.is_idle(c)]
            for channel in idle[: len(live) - wanted]:
                self._end_channel(channel, now)

    def _begin_reestablish(self, reason: str, now: float) -> None:
        """Client: the path or server failed; re-create the call elsewhere (R10)."""
        if self.state is CallState.TERMINATED:
            return
        if self.uri is None or self.state is CallState.CREATED:
            self._terminate_locally(TIMEOUT_CODE, reason, Termination.FAILURE, now)
            return
        self._drop_all_channels(now, reset=True)
        self.sender.pause()
        if self.phase is not MigrationPhase.REESTABLISHING:
            self._set_phase(PhaseInput.PATH_FAILED, reason)
            self._reestablish_deadline = now + self.config.reestablish_timeout
        self._phase_deadline = None
        self._retry_at = None
        marker = ReestablishMarker(call_uri=self.uri, state=self.state)
        if not self._transport.create_call(self, marker, now):
            self._retry_at = now + self.config.reestablish_attempt_interval
        else:
            # An attempt nobody answers (a dead instance among the calls URIs, whose
            # handshake never completes) must not hold up the others: try the next URI.
            self._retry_at = now + self.config.reestablish_attempt_timeout

    # ------------------------------------------------------------------ inbound data
    def on_data(self, channel: int, data: bytes, ended: bool, now: float) -> None:
        """Body bytes (and possibly END_STREAM) arrived on one of the call's channels."""
        self._note_lateness(now)
        decoder = self._decoders.get(channel)
        if decoder is None:
            return
        if channel in self._deaf:
            if ended:
                self._on_peer_end(channel, now)
            return
        try:
            frames = decoder.feed(data) if data else []
            if ended and decoder.buffered:
                raise _truncated(decoder.buffered)
        except RippError as exc:
            self._channel_error(channel, exc, now)
            return
        if frames:
            self.liveness.on_media(now)
        for frame in frames:
            if isinstance(frame, MediaFrame):
                self._on_media(channel, frame, now)
            elif isinstance(frame, AckFrame):
                self.sender.on_ack(channel, frame, now)
            elif isinstance(frame, SignalFrame):
                self._on_signal(frame, now)
                if channel not in self._decoders:
                    return
        if frames:
            self._check_marks()
            self._pump(now)
        if ended:
            self._on_peer_end(channel, now)

    def _on_media(self, channel: int, frame: MediaFrame, now: float) -> None:
        in_order = self.receiver.in_order(frame)
        new = self.receiver.on_frame(frame, now)
        if channel not in self._closing:
            # The ACK may wait for our next outgoing frame unless the sender needs it to
            # repair something: a gap, reordering, a duplicate or a re-send (§9.2, §11.7).
            eliciting = not (in_order and new) or frame.resent
            if self.acks.hold(
                channel,
                frame.sequence,
                now,
                eliciting=eliciting,
                lateness=self.lateness.value,
                next_send=self.sender.next_send_expected(now),
            ):
                self._flush_acks(now)
        if not new:
            return
        self.sender.note_peer_media(now, frame.duration)
        if frame.codec is Codec.TELEPHONE_EVENT:
            self._on_telephone_event(frame)
        if self.jitter is not None:
            if self.jitter.push(frame, now):
                if len(self._arrivals) >= self.config.jitter_max_frames:
                    self._arrivals.pop(next(iter(self._arrivals)))  # oldest: dropped frame
                self._arrivals[frame.sequence] = now
            self._drain_jitter(now)
        else:
            self._emit(MediaReceived(self.handle, frame, now))

    def _on_telephone_event(self, frame: MediaFrame) -> None:
        event = decode_event(frame.payload)
        if frame.marker:
            self._dtmf_starts.append(frame.sequence)
        if not event.end or event.digit is None:
            return
        seq = frame.sequence
        repeat = any(
            payload == frame.payload
            and 0 < _distance(seq, other) <= _DTMF_REPEAT_WINDOW
            and not any(_between(start, seq, other) for start in self._dtmf_starts)
            for other, payload in self._dtmf_ends
        )
        self._dtmf_ends.append((seq, frame.payload))
        if repeat:
            return
        self._emit(DtmfReceived(self.handle, event.digit, event.seconds, event.volume))

    def _drain_jitter(self, now: float) -> None:
        assert self.jitter is not None
        for item in self.jitter.pop(now):
            if isinstance(item, Gap):
                self._emit(MediaGap(self.handle, item.sequence, item.duration, item.frames))
            else:
                arrival = self._arrivals.pop(item.sequence, now)
                self._emit(MediaPlayout(self.handle, item, arrival))

    def _release_jitter(self, now: float) -> None:
        """Hand over everything the jitter buffer holds, without waiting for its time."""
        assert self.jitter is not None
        for item in self.jitter.pop(math.inf):
            if isinstance(item, Gap):
                self._emit(MediaGap(self.handle, item.sequence, item.duration))
            else:
                self._emit(MediaPlayout(self.handle, item, self._arrivals.pop(item.sequence, now)))

    def _on_signal(self, frame: SignalFrame, now: float) -> None:
        if self.state is CallState.TERMINATED:
            return  # glare: both sides ended the call at once
        previous = self.state
        try:
            message = decode_message(frame.payload)
            if isinstance(message, Terminate):
                self.machine.check_receive(message.type)
            else:
                self.machine.receive(message.type)
        except RemoteProtocolError as exc:
            # A message that is not valid here is never a silent state change: the call
            # ends with the error's SIP code, and the peer is told why.
            self._fail_call(exc, now)
            return
        if isinstance(message, Terminate):
            self._terminate_locally(message.code, message.reason, Termination.REMOTE, now)
            return
        self._transition(previous)
        if isinstance(message, Pending) and self.role is Role.CLIENT:
            self._open_media(self._wanted_streams(now), now)
        elif isinstance(message, Move):
            self._on_move(message, now)
        elif isinstance(message, Streams):
            self._peer_wanted = min(message.count, self.config.max_media_streams)
            self._next_adapt = now

    def _on_move(self, message: Move, now: float) -> None:
        if self.role is Role.CLIENT:
            if message.uri is None:
                self._violation(RemoteProtocolError("server Move without a URI"), fatal=False)
                return
            # Stop sending, let the old instance drain, attach to the new URI in parallel.
            self.sender.pause()
            self._set_phase(PhaseInput.MOVE_RECEIVED, "moved by server", message.uri)
            for channel in list(self._decoders):
                self._end_channel(channel, now)
            self.uri = message.uri
            self._phase_deadline = now + self.config.move_timeout
            self._open_signaling(now)
            self._open_media(self._wanted_streams(now), now)
        else:
            # The client re-attaches from elsewhere; hold the call and buffer media.
            self.sender.pause()
            self._set_phase(PhaseInput.MOVE_RECEIVED, "moved by client")
            for channel in list(self._decoders):
                self._end_channel(channel, now)
            self._phase_deadline = now + self.config.reattach_timeout

    def _on_peer_end(self, channel: int, now: float) -> None:
        was_signaling = channel == self.signaling
        if channel not in self._closing:
            self._end_channel(channel, now)
        self._forget_channel(channel, now)
        live = was_signaling and self.state is not CallState.TERMINATED
        if live and self.phase is MigrationPhase.ATTACHED:
            self._lost("peer ended the signaling channel", now)

    def on_peer_stopped_reading(self, channel: int) -> None:
        """The peer sent STOP_SENDING on ``channel``: write nothing more on it."""
        if channel in self._decoders:
            self._closing.add(channel)
            self.acks.discard(channel)

    def on_reset(self, channel: int, now: float) -> None:
        """The peer reset one of the call's channels (or its connection died)."""
        if channel not in self._decoders:
            return
        was_signaling = channel == self.signaling
        self._forget_channel(channel, now)
        live = was_signaling and self.state is not CallState.TERMINATED
        if live and self.phase in (MigrationPhase.ATTACHED, MigrationPhase.MOVING):
            self._lost("signaling channel reset", now)

    def await_attach(self, timeout: float, now: float) -> None:
        """Server: the client must attach a signaling request within ``timeout`` (after
        creation, re-establishment or an import); else the call ends (408)."""
        self._phase_deadline = now + timeout

    def detach(self, reason: str, now: float) -> None:
        """The old path of the call is gone (R10): the binding saw the client come back
        through a re-establishment request. Same as a detected failure."""
        self._lost(reason, now)

    def _lost(self, reason: str, now: float) -> None:
        """The peer or path is gone (R10)."""
        self._log(logging.WARNING, "peer lost: %s", reason)
        if self.role is Role.CLIENT:
            self._begin_reestablish(reason, now)
            return
        self._drop_all_channels(now, reset=True)
        self.sender.pause()
        self._set_phase(PhaseInput.PEER_LOST, reason)
        self._phase_deadline = now + self.config.reattach_timeout

    def _channel_error(self, channel: int, exc: RippError, now: float) -> None:
        if channel != self.signaling:
            # A broken media stream costs that stream only; the call carries on.
            self._violation(exc, fatal=False)
            self._transport.reset(channel, exc.stream_error, now)
            self._forget_channel(channel, now)
            return
        # A broken signaling body: stop reading it, but tell the peer why on the side that
        # still works, so it ends the call instead of mistaking this for a failure.
        self._transport.stop(channel, exc.stream_error, now)
        self._deaf.add(channel)
        self._fail_call(exc, now)

    def _fail_call(self, exc: RippError, now: float) -> None:
        """The peer broke the protocol on signaling: Terminate with its SIP code (R3)."""
        self._violation(exc, fatal=True)
        if self.state is CallState.TERMINATED:
            return
        reason = f"protocol error: {exc.message}"
        self._send_message(Terminate(exc.sip_code, reason), now)
        self._terminate_locally(exc.sip_code, reason, Termination.FAILURE, now)

    def _violation(self, exc: RippError, fatal: bool) -> None:
        self._log(logging.WARNING, "protocol violation: %s", exc.message)
        self._emit(
            ProtocolViolation(
                self.handle,
                type(exc).__name__,
                exc.message,
                None,
                exc.stream_error,
                fatal_to_call=fatal,
            )
        )

    # ------------------------------------------------------------------ sending
    def _pump(self, now: float) -> None:
        for channel, frame in self.sender.poll(now):
            self._send(channel, encode_media(frame), now)

    def _check_marks(self) -> None:
        while self._marks:
            name, last, dropped_base = self._marks[0]
            lowest = self.sender.oldest_pending_sequence
            if lowest is not None and _seq_le(lowest, last):
                return
            self._marks.popleft()
            self._emit(MarkReached(self.handle, name, self.sender.frames_dropped - dropped_base))

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work to do."""
        if self.state is CallState.TERMINATED:
            return self._linger_deadline if self._decoders else None
        candidates = [
            self.pacer.next_deadline(),
            self._phase_deadline,
            self._reestablish_deadline,
            self._retry_at,
        ]
        if self.jitter is not None:
            candidates.append(self.jitter.next_deadline())
        if self._keepalive_due():
            candidates.append(self._last_sent + self.config.keepalive_interval)
        if self.phase is MigrationPhase.ATTACHED and self.machine.media_allowed:
            candidates.append(self.liveness.next_deadline(self.sender.oldest_unacked_sent_at))
            candidates.append(self._next_probe)
            if self.role is Role.CLIENT:
                candidates.append(self._next_adapt)
        fixed = min((c for c in candidates if c is not None), default=None)
        # Lateness is measured against these only: the sender's re-send deadlines already
        # allow for lateness, and measuring against them would talk the estimate down.
        self._reported_deadline = fixed
        # Held ACKs likewise: most leave early with outgoing media, so their deadline would
        # read as lateness when the next input came after it.
        others = [
            d for d in (self.sender.next_deadline(), self.acks.next_deadline()) if d is not None
        ]
        if not others:
            return fixed
        soonest = min(others)
        return soonest if fixed is None else min(fixed, soonest)

    def _note_lateness(self, now: float) -> None:
        """Sample how far this process is behind (§11.8): an input that finds the deadline
        we last reported (other than the sender's) already passed comes that late, whether
        it is the timer itself or data that got there first (and did the due work on the
        way)."""
        due = self._reported_deadline
        if due is not None and due <= now:
            self._reported_deadline = None  # one sample per reported deadline
            self.lateness.on_timer(due, now)
            self.sender.note_lateness(self.lateness.value)
        if self._next_probe is None or now >= self._next_probe:
            # Some deadline must come round regularly, or lateness would be sampled only
            # when late (data finding a deadline passed) and never seen to fall again.
            self._next_probe = now + self.config.lateness_probe_interval

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``."""
        if self.state is CallState.TERMINATED:
            if self._linger_deadline is not None and now >= self._linger_deadline:
                # The peer never ended its side of our streams: abort them, so that a
                # call hung up without END_STREAM is not held for ever.
                self._linger_deadline = None
                self._drop_all_channels(now, reset=True)
            return
        self._note_lateness(now)
        if self.acks.due(now):
            self._flush_acks(now)
        if self.jitter is not None:
            self._drain_jitter(now)
        # Paced frames go to the sender even while it is paused by a migration: the
        # sender's migration buffer holds them, bounded, until the call re-attaches.
        self._release_paced(now)
        self._check_marks()
        if self._reestablish_deadline is not None and now >= self._reestablish_deadline:
            self._terminate_locally(
                TIMEOUT_CODE, "re-establishment failed", Termination.FAILURE, now
            )
            return
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._begin_reestablish("retrying re-establishment", now)
        if self._phase_deadline is not None and now >= self._phase_deadline:
            self._phase_deadline = None
            self._on_phase_timeout(now)
            return
        if self._keepalive_due() and now >= self._last_sent + self.config.keepalive_interval:
            self._send_message(Keepalive(), now)
        if self.phase is MigrationPhase.ATTACHED and self.machine.media_allowed:
            for channel in self.sender.stuck_channels(now, self.config.ack_timeout):
                # Acks for later frames come back on other streams: the path works, and
                # only this stream is broken. Reset it (its frame goes out elsewhere)
                # instead of failing the whole call.
                self._log(logging.WARNING, "no ack on channel %d: stream reset", channel)
                self._transport.reset(channel, H3_REQUEST_CANCELLED, now)
                self._forget_channel(channel, now)
            failure = self.liveness.check(
                now, oldest_unacked_sent_at=self.sender.oldest_unacked_sent_at
            )
            if failure is not None:
                self._lost(f"failure detected: {failure.value}", now)
                return
            if (
                self.role is Role.CLIENT
                and self._next_adapt is not None
                and now >= self._next_adapt
            ):
                self._next_adapt = now + self.config.adapt_interval
                self._adapt_streams(now)
                self._pump(now)

    def _keepalive_due(self) -> bool:
        return (
            self.phase is MigrationPhase.ATTACHED
            and self.signaling is not None
            and self.signaling not in self._closing
            and (self.role is Role.SERVER or self.signaling_ready)
        )

    def _on_phase_timeout(self, now: float) -> None:
        if self.phase is MigrationPhase.MOVED_AWAY:
            # The peer never closed the old streams: abort them and let the call go.
            self._drop_all_channels(now, reset=True)
            return
        if self.role is Role.CLIENT:
            # creation, signaling attach or move did not complete in time
            self._begin_reestablish("timed out waiting for the server", now)
        else:
            self._terminate_locally(
                TIMEOUT_CODE, "client did not come back", Termination.FAILURE, now
            )


@contextlib.contextmanager
def _ours() -> Iterator[None]:
    """Checks shared with the receive path raise the *remote* error classes; applied to
    what our own user asked for, they are our user's mistake (LocalProtocolError)."""
    try:
        yield
    except RemoteProtocolError as exc:
        raise local_counterpart(exc) from exc


def _truncated(count: int) -> RippError:
    return FrameError(f"body ended with {count} bytes of an incomplete frame")


#: Repeated End frames of one event lie within this many sequence numbers of each other.
_DTMF_REPEAT_WINDOW = 3
_MICROSECONDS = 1e6
_DTMF_HISTORY = 16


def _distance(a: int, b: int) -> int:
    """Absolute distance between two 32-bit sequence numbers."""
    forward = (a - b) % (1 << 32)
    return min(forward, (1 << 32) - forward)


def _between(x: int, a: int, b: int) -> bool:
    """``x`` lies after the earlier and at or before the later of ``a`` and ``b``."""
    low, high = (a, b) if _seq_le(a, b) else (b, a)
    return x != low and _seq_le(low, x) and _seq_le(x, high)


def _seq_le(a: int, b: int) -> bool:
    """``a <= b`` in 32-bit sequence space (RFC 1982 serial number arithmetic)."""
    return a == b or ((b - a) % (1 << 32)) < (1 << 31)


__all__ = [
    "Call",
    "CallHandoff",
    "CallRequest",
    "CallTransport",
    "LocalProtocolError",
    "StateError",
]
