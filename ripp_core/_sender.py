"""The striping media sender of one direction of one call (R6, R9, R23).

A sender keeps a pool of channels (media streams, named by opaque ints the caller
chooses) and a queue of frames. A frame goes only onto a *free* channel, one with no
unacknowledged frame in this direction; the peer's ack frees the channel again. So a lost
packet delays only its own frame, never the frames behind it.

A lost frame itself would still wait for QUIC's loss recovery (a probe timeout, several
RTTs). So when a frame's ack is overdue, the sender puts a copy of it on another free
stream (an *early re-send*, protocol §11.7) if the copy can still arrive in time to be
played; the receiver drops whichever copy comes second.

The sender owns its direction's media clock. Each frame's timestamp follows the previous
frame's; :meth:`MediaSender.skip` lets an application that relays a playout clock of its
own (an echo, a bridge) advance it across time it had nothing to send (protocol 9.4).
"""

from __future__ import annotations

import attrs

from ._codecs import DURATION_UNIT, Codec, units_to_ticks
from ._config import RippConfig
from ._errors import BadSkip, LocalProtocolError
from ._frames import (
    FLAG_MARKER,
    FLAG_RESENT,
    SEQUENCE_MODULUS,
    TIMESTAMP_MODULUS,
    AckFrame,
    MediaFrame,
)
from ._stats import RttEstimator, SenderStats, sequence_delta

#: Frame interval assumed before the first frame is enqueued (the usual 20 ms packetization).
DEFAULT_FRAME_INTERVAL = 0.02
_MICROSECONDS = 1e6
# Skips arrive as float seconds; one that is a whole number of units up to float rounding
# (41 * 0.0005 is not exactly 0.0205) must count as that many units, not one less.
_UNIT_TOLERANCE = 1e-6


@attrs.frozen
class SenderState:
    """What a sender hands to another instance taking over its call.

    The new instance continues the sequence and timestamp without a gap and sends every
    frame the old one had not got acknowledged (those that were in flight carry the RESENT
    flag), oldest first.
    """

    next_sequence: int
    """Sequence number of the next new frame."""
    next_timestamp: int
    """Media timestamp (48 kHz ticks) of the next new frame."""
    frames: tuple[MediaFrame, ...]
    """Frames not yet acknowledged, in sequence order."""
    skipped_units: int = 0
    """Media time skipped (:meth:`MediaSender.skip`, 0.5 ms units) since the last new
    frame; already counted in ``next_timestamp``. It decides whether the next new frame
    carries MARKER, so a pause that spans the hand-over is still marked."""


@attrs.frozen
class _Queued:
    frame: MediaFrame
    # When the frame last became sendable: enqueued, re-queued after its stream closed, or
    # released by resume(). Queue expiry counts from here, so frames held back by a
    # migration or re-sent after a stream reset get a fair chance to go out.
    eligible_at: float
    # First transmission of a frame re-queued after its stream closed: the early re-send
    # budget keeps counting from there, since playout does.
    first_sent: float | None = None


@attrs.define
class _Flight:
    """One frame that has at least one transmission unacknowledged on some channel."""

    first_sent: float  # the early re-send budget counts from here
    last_sent: float  # the next copy is due one expected RTT after the latest transmission
    carriers: int = 0  # channels holding a transmission of it without an ack
    copies: int = 0  # early re-sends so far
    acked: bool = False  # some transmission was acknowledged: the frame is delivered
    resent: bool = False  # carries RESENT: the receiver acks it at once (§9.2)
    blocked: bool = False  # a copy fell due but found no free channel or no credit


@attrs.define
class _Channel:
    order: int  # creation order, the tie-breaker between channels freed at the same time
    freed_at: float
    unacked: MediaFrame | None = None
    sent_at: float = 0.0
    retired: bool = False  # our side of the stream has ended: no new frames, acks still count


class MediaSender:
    """Sends the MEDIA frames of one direction of one call over a pool of channels.

    Rules:

    * At most one unacknowledged frame per channel, ever.
    * :meth:`poll` gives queued frames, oldest first, to free channels, the channel freed
      longest ago first, so the load rotates over every stream.
    * A frame waiting for a free channel for ``send_queue_max_delay`` is dropped: late
      audio is worse than lost audio. The age counts from when the frame last became
      sendable (enqueued, re-queued, or released by :meth:`resume`).
    * While paused (a migration), nothing is sent or expired; instead the queue keeps at
      most ``migration_buffer`` seconds of media, dropping the oldest beyond it.
    * A frame whose channel goes away before its ack is queued again at the head, with the
      RESENT flag and its sequence and timestamp unchanged; the receiver drops duplicates.
      Not if another copy of it is still in flight or was already acknowledged.
    * Early re-send (protocol §11.7): a frame whose latest transmission's ack is overdue
      (later than the path RTT plus a margin) gets a copy on a free channel, once the
      queue is empty, while the copy can still arrive within ``early_resend_budget`` of
      the first send, at most ``early_resend_max_copies`` times, and only with credit
      (``early_resend_max_fraction`` per new frame, at most ``early_resend_burst``). The
      channel carrying the original stays busy until its own ack: a stream never holds two
      unacknowledged frames.
    """

    def __init__(
        self, config: RippConfig, *, first_sequence: int = 0, first_timestamp: int = 0
    ) -> None:
        if not 0 <= first_sequence < SEQUENCE_MODULUS:
            raise LocalProtocolError(f"first_sequence {first_sequence} out of range")
        if not 0 <= first_timestamp < TIMESTAMP_MODULUS:
            raise LocalProtocolError(f"first_timestamp {first_timestamp} out of range")
        self._config = config
        self._next_sequence = first_sequence
        self._next_timestamp = first_timestamp
        self._skipped_units = 0  # skipped since the last new frame (decides MARKER)
        self._skip_residue = 0.0  # seconds skipped but less than one unit, kept to add up
        self._queue: list[_Queued] = []
        self._channels: dict[int, _Channel] = {}
        self._last_ack_sent_at: float | None = None  # send time of the newest acked frame
        self._channel_order = 0
        self._paused = False
        self._frame_interval = DEFAULT_FRAME_INTERVAL
        self._rtt = RttEstimator()
        self._frames_enqueued = 0
        self._event_open = False  # the last frame queued was a telephone event not ended
        self._last_end = b""  # payload of the End frame just queued (repeats get no MARKER)
        self._frames_sent = 0
        self._frames_acked = 0
        self._frames_resent = 0
        self._frames_dropped = 0
        self._bytes_sent = 0
        self._max_busy = 0
        self._loss_estimate = 0.0
        # Early re-send (§11.7).
        self._flights: dict[int, _Flight] = {}
        self._path_rtt = RttEstimator()  # samples that needed no repair: the path itself
        self._resend_credit = float(config.early_resend_burst)
        self._last_poll: float | None = None
        self._frames_early_resent = 0
        self._bytes_early_resent = 0
        self._frames_waited = 0  # new frames that found every stream busy (§11.2)
        self._stream_wait_max = 0.0
        self._early_resends_cancelled = 0
        # Lateness (§11.8): the peer's reported hold (ACK Delay) and our own timer lateness.
        self._peer_hold = 0.0
        # Until when the peer may be holding our ACKs for frames of its own (§9.2): it
        # holds only while it sends media, so only then is a held ACK worth waiting for.
        self._peer_media_until: float | None = None
        self._last_new_sent: float | None = None  # when the newest new frame went out
        self._local_lateness = 0.0
        self._raw_min: float | None = None  # smallest RTT sample less its riding hold only

    @classmethod
    def from_state(cls, config: RippConfig, state: SenderState, now: float) -> MediaSender:
        """A sender that continues where the exporter of ``state`` stopped.

        The imported frames are queued as sendable at ``now``; call :meth:`pause` right
        away if the call's streams are not attached yet.
        """
        sender = cls(
            config, first_sequence=state.next_sequence, first_timestamp=state.next_timestamp
        )
        sender._skipped_units = state.skipped_units
        for frame in state.frames:
            sender._queue.append(_Queued(frame, now))
            sender._frames_enqueued += 1
        return sender

    # --- channels ------------------------------------------------------------------------

    def add_channel(self, channel: int, now: float) -> None:
        """Make a newly opened media stream available for sending."""
        if channel in self._channels:
            raise LocalProtocolError(f"channel {channel} is already open")
        self._channels[channel] = _Channel(order=self._channel_order, freed_at=now)
        self._channel_order += 1

    def remove_channel(self, channel: int, now: float) -> None:
        """Forget a media stream that closed or was reset.

        Its unacknowledged frame, if any, is queued again at the head with the RESENT flag.
        Removing an unknown channel does nothing: a reset may race with our own close.
        """
        state = self._channels.pop(channel, None)
        if state is not None and state.unacked is not None:
            lost = self._drop_carrier(state.unacked.sequence)
            if lost is not None:
                self._requeue(state.unacked, now, lost.first_sent)
                self._trim_to_migration_buffer()

    def retire_channel(self, channel: int) -> None:
        """Stop putting frames on ``channel`` (our side of it ended); an ack still frees it.

        Its frame in flight, if any, is re-queued only if the channel is later removed
        without an ack, which is what makes a graceful move lose nothing and duplicate
        nothing.
        """
        state = self._channels.get(channel)
        if state is not None:
            state.retired = True

    def is_idle(self, channel: int) -> bool:
        """True when ``channel`` exists, is not retired and has no frame in flight."""
        state = self._channels.get(channel)
        return state is not None and not state.retired and state.unacked is None

    def requeue_all_unacked(self, now: float) -> None:
        """Every channel went away at once: re-queue all in-flight frames, drop channels."""
        for state in self._channels.values():
            if state.unacked is None:
                continue
            lost = self._drop_carrier(state.unacked.sequence)
            if lost is not None:
                self._requeue(state.unacked, now, lost.first_sent)
        self._channels.clear()
        self._flights.clear()
        self._trim_to_migration_buffer()

    @property
    def open_channels(self) -> int:
        """Number of channels available to this sender."""
        return len(self._channels)

    @property
    def busy_channels(self) -> int:
        """Number of channels holding an unacknowledged frame."""
        return sum(1 for state in self._channels.values() if state.unacked is not None)

    @property
    def busy_fraction(self) -> float:
        """Busy channels divided by channels (0 with no channels)."""
        if not self._channels:
            return 0.0
        return self.busy_channels / len(self._channels)

    def stuck_channels(self, now: float, timeout: float) -> list[int]:
        """Channels whose frame in flight has waited ``timeout`` for its ack while an ack
        sent later came back on another channel: the path works, so that stream alone is
        broken (a peer that never acks on it), not the call (protocol 15.1)."""
        if self._last_ack_sent_at is None:
            return []
        return [
            channel
            for channel, s in self._channels.items()
            if s.unacked is not None
            and not self._delivered(s.unacked.sequence)
            and now - s.sent_at >= timeout
            and self._last_ack_sent_at > s.sent_at
        ]

    @property
    def oldest_unacked_sent_at(self) -> float | None:
        """Send time of the oldest frame in flight, for failure detection (R10)."""
        times = [
            s.sent_at
            for s in self._channels.values()
            if s.unacked is not None and not self._delivered(s.unacked.sequence)
        ]
        return min(times) if times else None

    # --- frames --------------------------------------------------------------------------

    @property
    def frame_interval(self) -> float:
        """Duration (seconds) of the last frame enqueued; 20 ms before the first."""
        return self._frame_interval

    @property
    def queued(self) -> int:
        """Frames waiting for a free channel."""
        return len(self._queue)

    @property
    def frames_enqueued(self) -> int:
        """Frames this sender was given (including frames imported by :meth:`from_state`)."""
        return self._frames_enqueued

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    @property
    def oldest_pending_sequence(self) -> int | None:
        """Lowest sequence number neither acknowledged nor dropped, or None.

        Every frame before it has been acknowledged or dropped, which is what an
        application's "the far end has this audio" mark waits for (R23).
        """
        pending = [q.frame.sequence for q in self._queue]
        pending += [
            s.unacked.sequence
            for s in self._channels.values()
            if s.unacked and not self._delivered(s.unacked.sequence)
        ]
        if not pending:
            return None
        reference = pending[0]
        return min(pending, key=lambda seq: sequence_delta(seq, reference))

    def enqueue(
        self,
        codec: Codec,
        duration_units: int,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
    ) -> MediaFrame:
        """Queue one frame of media and return it with its sequence and timestamp.

        Raises :class:`~ripp_core.BadDuration` (via :class:`MediaFrame`) when the codec
        does not allow the duration or payload.

        MARKER is set whatever ``marker`` says on the first frame a call sends (protocol
        9.1), on the first telephone-event frame of each event (10.4: after any other
        frame, or after a telephone-event frame with the End bit), and after a pause: when
        :meth:`skip` advanced the clock since the previous frame by at least this frame's
        duration (9.4).
        """
        event = codec is Codec.TELEPHONE_EVENT
        ends = event and len(payload) > 1 and bool(payload[1] & 0x80)
        if self._next_sequence == 0 and self._frames_enqueued == 0:
            marker = True
        elif event and not self._event_open and payload != self._last_end:
            marker = True  # a new event (a repeated End frame, RTP style, is not one)
        elif self._skipped_units >= duration_units:
            # A whole frame's time or more went by unsent: a talkspurt starts, and the
            # receiver may re-align its playout. Less is the relayed playout stretching
            # within a talkspurt, which the timestamps alone carry.
            marker = True
        self._skipped_units = 0
        self._event_open = event and not ends
        self._last_end = payload if ends else (self._last_end if event else b"")
        frame = MediaFrame(
            sequence=self._next_sequence,
            timestamp=self._next_timestamp,
            codec=codec,
            duration_units=duration_units,
            payload=payload,
            flags=FLAG_MARKER if marker else 0,
        )
        self._next_sequence = (self._next_sequence + 1) % SEQUENCE_MODULUS
        self._next_timestamp = (
            self._next_timestamp + units_to_ticks(duration_units)
        ) % TIMESTAMP_MODULUS
        self._frame_interval = frame.duration
        self._frames_enqueued += 1
        self._queue.append(_Queued(frame, now))
        self._expire(now)
        self._trim_to_migration_buffer()
        return frame

    def skip(self, duration: float) -> int:
        """Advance the media clock by ``duration`` seconds without sending (protocol 9.4).

        The next new frame's timestamp covers the skipped time, as RTP's does across
        silence (RFC 3550 5.1: the timestamp reflects the sampling instant). The clock
        moves in whole wire units (0.5 ms = 24 ticks, so an 8 kHz RTP mapping stays
        exact); the remainder is kept and added to the next skip, so small skips add up
        instead of vanishing. Returns the whole units the clock advanced now.

        The time skipped since the last new frame is capped at ``media_skip_max`` (beyond
        it the next frame carries MARKER and the receiver re-aligns on that anyway); a
        single skip that is negative, not finite or longer than ``media_skip_max`` raises
        :class:`~ripp_core.BadSkip`. Frames already queued keep their timestamps.
        """
        limit = self._config.media_skip_max
        if not 0.0 <= duration <= limit:  # also rejects NaN and infinities
            raise BadSkip(f"skip of {duration!r} s is not within 0..{limit} s")
        total = self._skip_residue + duration
        units = int(total / DURATION_UNIT + _UNIT_TOLERANCE)
        self._skip_residue = max(0.0, total - units * DURATION_UNIT)
        room = int(limit / DURATION_UNIT) - self._skipped_units
        if units > room:
            units, self._skip_residue = room, 0.0
        self._skipped_units += units
        self._next_timestamp = (self._next_timestamp + units_to_ticks(units)) % TIMESTAMP_MODULUS
        return units

    @property
    def next_timestamp(self) -> int:
        """Timestamp (48 kHz ticks) the next enqueued frame will get."""
        return self._next_timestamp

    @property
    def skipped_units(self) -> int:
        """Media time skipped since the last new frame, in 0.5 ms units."""
        return self._skipped_units

    def clear(self) -> int:
        """Drop every queued (not yet sent) frame, for barge-in (R23); return how many.

        Frames already in flight are not recalled. The dropped frames are counted in
        ``frames_dropped``.
        """
        dropped = len(self._queue)
        self._queue.clear()
        self._frames_dropped += dropped
        return dropped

    def poll(self, now: float) -> list[tuple[int, MediaFrame]]:
        """Assign queued frames to free channels; return ``(channel, frame)`` to send."""
        if self._paused:
            return []
        self._last_poll = now
        self._expire(now)
        if not self._queue and not (self._flights and self._config.early_resend):
            return []  # the common case between frames: nothing to place, no copy possible
        free = [
            channel
            for _, _, channel in sorted(
                (state.freed_at, state.order, channel)
                for channel, state in self._channels.items()
                if state.unacked is None and not state.retired
            )
        ]
        sent: list[tuple[int, MediaFrame]] = []
        while free and self._queue:
            channel, queued = free.pop(0), self._queue.pop(0)
            frame = queued.frame
            waited = now - queued.eligible_at
            if waited > 0 and not frame.resent:
                # It found no free stream when it became sendable (§11.2's quantile).
                self._frames_waited += 1
                self._stream_wait_max = max(self._stream_wait_max, waited)
            self._transmit(channel, frame, now, queued.first_sent)
            self._frames_sent += 1
            self._bytes_sent += len(frame.payload)
            self._last_new_sent = now
            # Credit for early re-sends grows with new media only, which bounds them.
            self._resend_credit = min(
                float(self._config.early_resend_burst),
                self._resend_credit + self._config.early_resend_max_fraction,
            )
            sent.append((channel, frame))
        if free and not self._queue:
            sent += self._early_resends(free, now)
        self._max_busy = max(self._max_busy, self.busy_channels)
        return sent

    def on_ack(self, channel: int, ack: AckFrame, now: float) -> float | None:
        """Process an ack that arrived on ``channel``; return the RTT sample or None.

        An ack that does not match the channel's frame in flight (stale, duplicate, or for
        a channel already removed) returns None and changes nothing: acks race with
        re-sends, which is not an error.
        """
        state = self._channels.get(channel)
        if state is None or state.unacked is None or state.unacked.sequence != ack.sequence:
            return None
        config = self._config
        raw = max(0.0, now - state.sent_at)
        # No frame can have been held longer than its whole round trip: a larger Ack Delay
        # is a confused or hostile peer, and must not stall early re-sends for good.
        hold = min(ack.ack_delay_us / _MICROSECONDS, raw)
        self._peer_hold += config.lateness_gain * (hold - self._peer_hold)
        # Up to media_ack_delay the hold is the peer's measured wait for its own next frame
        # (§9.2), taken off always: with a steady two-way call every ACK waits about as
        # long, so no raw sample would show the path alone. Beyond it, the hold is an
        # estimate (the peer's lateness, §11.8), and as RFC 9002 section 5.3 does with
        # QUIC's ack_delay it is taken off only where that leaves at least the smallest
        # sample so far: an RTT below the path's would be worse than none.
        if self._raw_min is None:
            # The first sample is never corrected: nothing yet shows what the path can do.
            self._raw_min = raw
            sample = raw
        else:
            riding = raw - min(hold, config.media_ack_delay)
            self._raw_min = min(self._raw_min, riding)
            # Ack Delay counts whole microseconds: compare to that resolution.
            fits = raw - hold >= self._raw_min - 1 / _MICROSECONDS
            sample = raw - hold if fits else riding
        late = max(self.peer_lateness, self._local_lateness) >= config.lateness_hold
        minimum = self._rtt.minimum
        repaired = False
        if minimum is not None and not late:
            # A sample well above the path minimum means QUIC had to repair the frame or
            # its ack: that is the loss that holds a stream busy, which N must cover.
            # While either end runs late, a long sample is more likely lateness (§11.8).
            repaired = sample > minimum * config.repair_rtt_factor + config.repair_slack
            gain = config.loss_estimate_gain
            self._loss_estimate += gain * ((1.0 if repaired else 0.0) - self._loss_estimate)
        self._rtt.on_sample(sample)
        if not repaired and not late:
            # The early re-send deadline must come from the path, not from repairs.
            self._path_rtt.on_sample(sample)
        if self._last_ack_sent_at is None or state.sent_at > self._last_ack_sent_at:
            self._last_ack_sent_at = state.sent_at
        state.unacked = None
        state.freed_at = now
        flight = self._flights.get(ack.sequence)
        if flight is None or not flight.acked:
            self._frames_acked += 1
        if flight is not None:
            flight.acked = True
            self._drop_carrier(ack.sequence)
        return sample

    @property
    def loss_estimate(self) -> float:
        """Moving average of the fraction of frames that needed repair (0 before data)."""
        return self._loss_estimate

    @property
    def next_sequence(self) -> int:
        """Sequence number the next enqueued frame will get."""
        return self._next_sequence

    @property
    def frames_dropped(self) -> int:
        """Frames given up (expired in the queue, cleared, or beyond the migration buffer)."""
        return self._frames_dropped

    # --- migration -----------------------------------------------------------------------

    def pause(self) -> None:
        """Stop sending (a migration began); queued media is kept up to
        ``migration_buffer`` seconds."""
        self._paused = True
        self._trim_to_migration_buffer()

    def resume(self, now: float) -> None:
        """Send again (the call re-attached); the held frames count as sendable from
        ``now``."""
        if not self._paused:
            return
        self._paused = False
        self._queue = [attrs.evolve(q, eligible_at=now) for q in self._queue]

    def export_state(self) -> SenderState:
        """Everything another instance needs to continue this direction (call handoff)."""
        frames = [q.frame for q in self._queue]
        in_flight = {
            state.unacked.sequence: _as_resent(state.unacked)
            for state in self._channels.values()
            if state.unacked is not None and not self._delivered(state.unacked.sequence)
        }
        frames += in_flight.values()
        frames.sort(key=lambda frame: sequence_delta(frame.sequence, self._next_sequence))
        return SenderState(
            self._next_sequence, self._next_timestamp, tuple(frames), self._skipped_units
        )

    # --- timers and statistics -----------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the oldest queued frame expires or the next early re-send falls due; None
        if neither (or paused).

        A re-send that was already due at the last :meth:`poll` but found no free channel
        or no credit is not a deadline: the ack that frees a channel (and the new frame
        that earns credit) polls again.
        """
        if self._paused:
            return None
        deadlines: list[float] = []
        if self._queue:
            deadlines.append(
                min(q.eligible_at for q in self._queue) + self._config.send_queue_max_delay
            )
        if self._last_poll is not None:
            for flight in self._flights.values():
                due = self._copy_due(flight)
                if due is not None and due > self._last_poll:
                    deadlines.append(due)
        return min(deadlines, default=None)

    @property
    def rtt(self) -> RttEstimator:
        """The RTT estimator fed by this sender's acks."""
        return self._rtt

    @property
    def path_rtt(self) -> RttEstimator:
        """The RTT estimator fed only by samples that needed no repair (the path itself);
        early re-sends are timed from it."""
        return self._path_rtt

    @property
    def frames_early_resent(self) -> int:
        """Copies sent by early re-send (§11.7)."""
        return self._frames_early_resent

    @property
    def bytes_early_resent(self) -> int:
        """Codec payload bytes of those copies (compare with ``bytes_sent``)."""
        return self._bytes_early_resent

    @property
    def early_resends_cancelled(self) -> int:
        """Frames whose early re-send fell due but was given up: no free channel or credit
        before the copy could no longer arrive within ``early_resend_budget``."""
        return self._early_resends_cancelled

    @property
    def peer_hold(self) -> float:
        """Moving average of the hold time the peer reports in its ACK Delay (seconds)."""
        return self._peer_hold

    def note_peer_media(self, now: float, duration: float) -> None:
        """A new MEDIA frame of ``duration`` seconds came from the peer at ``now``.

        The peer may hold our ACKs for its next frame (§9.2) while it sends media: for
        transmissions until its next frame is due plus ``media_ack_delay``, an ACK is
        allowed that much longer before it counts as overdue (§11.7)."""
        self._peer_media_until = now + duration + self._config.media_ack_delay

    def next_send_expected(self, now: float) -> float | None:
        """When this sender's next new frame is expected, from its cadence: the last new
        frame's send time plus the frame interval. None before any was sent, and when
        none went out for two frame intervals (one late frame is tolerated): the call
        has stopped sending."""
        last = self._last_new_sent
        if last is None or now - last > 2 * self._frame_interval:
            return None
        return last + self._frame_interval

    @property
    def peer_lateness(self) -> float:
        """How far the peer's average reported hold exceeds ``media_ack_delay`` (seconds):
        its lateness, as far as ACKs that may ride with its media let us see it (§11.8)."""
        return max(0.0, self._peer_hold - self._config.media_ack_delay)

    @property
    def ride_hold(self) -> float:
        """The part of the peer's average hold that may be ACKs waiting for its media, not
        lateness (seconds): streams stay busy that much longer than the path RTT (§11.2)."""
        return min(self._peer_hold, self._config.media_ack_delay)

    @property
    def local_lateness(self) -> float:
        """This process's lateness as last given to :meth:`note_lateness` (seconds)."""
        return self._local_lateness

    def note_lateness(self, lateness: float) -> None:
        """Tell the sender how late this process runs (seconds, the caller's moving
        average of timer lateness); an overdue ack is judged with it added (§11.8)."""
        self._local_lateness = max(0.0, lateness)

    def stats(self, now: float, *, congestion_signals: int = 0) -> SenderStats:
        """A snapshot of this direction's sender statistics."""
        busy = self.busy_channels
        return SenderStats(
            frames_sent=self._frames_sent,
            frames_acked=self._frames_acked,
            frames_resent=self._frames_resent,
            frames_dropped=self._frames_dropped,
            frames_outstanding=busy,
            bytes_sent=self._bytes_sent,
            rtt_latest=self._rtt.latest,
            rtt_min=self._rtt.minimum,
            rtt_smoothed=self._rtt.smoothed,
            rtt_variance=self._rtt.variance,
            streams_open=len(self._channels),
            streams_busy=busy,
            streams_max_busy=max(self._max_busy, busy),
            congestion_signals=congestion_signals,
            frames_early_resent=self._frames_early_resent,
            bytes_early_resent=self._bytes_early_resent,
            frames_waited=self._frames_waited,
            stream_wait_max=self._stream_wait_max,
        )

    # --- internals -----------------------------------------------------------------------

    def _transmit(
        self, channel: int, frame: MediaFrame, now: float, first_sent: float | None = None
    ) -> None:
        state = self._channels[channel]
        state.unacked = frame
        state.sent_at = now
        flight = self._flights.get(frame.sequence)
        if flight is None:
            first = now if first_sent is None else first_sent
            flight = self._flights[frame.sequence] = _Flight(first_sent=first, last_sent=now)
        flight.last_sent = now
        flight.carriers += 1
        flight.resent = flight.resent or frame.resent

    def _drop_carrier(self, sequence: int) -> _Flight | None:
        """One channel no longer carries ``sequence``. Returns the frame's flight if the
        frame must be re-queued (no other copy in flight and none acknowledged)."""
        flight = self._flights.get(sequence)
        if flight is None:
            return None
        flight.carriers -= 1
        if flight.carriers > 0:
            return None
        del self._flights[sequence]
        return None if flight.acked else flight

    def _delivered(self, sequence: int) -> bool:
        flight = self._flights.get(sequence)
        return flight is not None and flight.acked

    def _copy_due(self, flight: _Flight, now: float | None = None) -> float | None:
        """When the next early re-send of ``flight`` falls due; None if it never will
        (done, out of copies, no path RTT yet, or a copy sent then, or at ``now`` if that
        is later, would arrive too late)."""
        config = self._config
        path = self._path_rtt
        if (
            not config.early_resend
            or flight.acked
            or flight.copies >= config.early_resend_max_copies
            or path.smoothed is None
            or path.variance is None
            # While either end runs late, an overdue ack is more likely lateness than loss,
            # and copies would only add work to a process already behind (§11.8).
            or max(self.peer_lateness, self._local_lateness) >= config.lateness_hold
        ):
            return None
        margin = max(
            config.early_resend_rttvar_factor * path.variance, config.early_resend_min_margin
        )
        # The peer may hold the ACK up to media_ack_delay for its own next frame (§9.2),
        # unless an ACK of a later transmission came back already (a receiver sends every
        # ACK it holds together, so this one was not merely held), or the transmission is
        # one a receiver acks at once: a copy (later frames arrived before it) or RESENT.
        later_acked = (
            self._last_ack_sent_at is not None and self._last_ack_sent_at > flight.last_sent
        )
        peer_holds = (
            self._peer_media_until is not None and flight.last_sent <= self._peer_media_until
        )
        acked_at_once = flight.copies > 0 or flight.resent
        ride = config.media_ack_delay if peer_holds and not (later_acked or acked_at_once) else 0.0
        # Either end running late delays the ack without any loss: not a reason to re-send.
        due = (
            flight.last_sent
            + path.smoothed
            + margin
            + ride
            + self.peer_lateness
            + self._local_lateness
        )
        sent_at = due if now is None else max(due, now)
        if sent_at + path.smoothed / 2 > flight.first_sent + config.early_resend_budget:
            return None  # a copy sent then would arrive too late to be played
        return due

    def _early_resends(self, free: list[int], now: float) -> list[tuple[int, MediaFrame]]:
        """Copies of overdue frames onto the ``free`` channels, oldest frame first."""
        if not self._config.early_resend or self._path_rtt.smoothed is None:
            return []
        sent: list[tuple[int, MediaFrame]] = []
        carried = {
            state.unacked.sequence: state.unacked
            for state in self._channels.values()
            if state.unacked is not None
        }
        overdue = sorted(
            (flight.first_sent, sequence)
            for sequence, flight in self._flights.items()
            if not flight.acked and flight.carriers > 0
        )
        for _, sequence in overdue:
            flight = self._flights[sequence]
            due = self._copy_due(flight, now)
            if due is None:
                if flight.blocked:
                    # It fell due but never found a stream or credit before its budget ran
                    # out: cancelled, so it cannot take a stream from playable audio.
                    flight.blocked = False
                    self._early_resends_cancelled += 1
                continue
            if due > now:
                continue
            if len(free) <= self._config.early_resend_reserve or self._resend_credit < 1.0:
                flight.blocked = True  # stays due; the next ack or new frame polls again
                continue
            channel = free.pop(0)
            frame = carried[sequence]
            self._transmit(channel, frame, now)
            flight.copies += 1
            flight.blocked = False
            self._resend_credit -= 1.0
            self._frames_early_resent += 1
            self._bytes_early_resent += len(frame.payload)
            sent.append((channel, frame))
        return sent

    def _requeue(self, frame: MediaFrame, now: float, first_sent: float | None) -> None:
        """Put an in-flight frame back before every queued frame with a later sequence."""
        resent = _as_resent(frame)
        position = len(self._queue)
        for index, queued in enumerate(self._queue):
            if sequence_delta(queued.frame.sequence, resent.sequence) > 0:
                position = index
                break
        self._queue.insert(position, _Queued(resent, now, first_sent))
        self._frames_resent += 1

    def _expire(self, now: float) -> None:
        if self._paused:
            return
        limit = self._config.send_queue_max_delay
        kept = [q for q in self._queue if now - q.eligible_at < limit]
        self._frames_dropped += len(self._queue) - len(kept)
        self._queue = kept

    def _trim_to_migration_buffer(self) -> None:
        if not self._paused:
            return
        total_units = sum(q.frame.duration_units for q in self._queue)
        while self._queue and total_units * DURATION_UNIT > self._config.migration_buffer:
            total_units -= self._queue.pop(0).frame.duration_units
            self._frames_dropped += 1


def _as_resent(frame: MediaFrame) -> MediaFrame:
    return attrs.evolve(frame, flags=frame.flags | FLAG_RESENT)
