"""The striping media sender of one direction of one call (R6, R9, R23).

A sender keeps a pool of channels (media streams, named by opaque ints the caller
chooses) and a queue of frames. A frame goes only onto a *free* channel, one with no
unacknowledged frame in this direction; the peer's ack frees the channel again. So a lost
packet delays only its own frame, never the frames behind it.
"""

from __future__ import annotations

import attrs

from ._codecs import DURATION_UNIT, Codec, units_to_ticks
from ._config import RippConfig
from ._errors import LocalProtocolError
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


@attrs.frozen
class _Queued:
    frame: MediaFrame
    # When the frame last became sendable: enqueued, re-queued after its stream closed, or
    # released by resume(). Queue expiry counts from here, so frames held back by a
    # migration or re-sent after a stream reset get a fair chance to go out.
    eligible_at: float


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
        self._queue: list[_Queued] = []
        self._channels: dict[int, _Channel] = {}
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

    @classmethod
    def from_state(cls, config: RippConfig, state: SenderState, now: float) -> MediaSender:
        """A sender that continues where the exporter of ``state`` stopped.

        The imported frames are queued as sendable at ``now``; call :meth:`pause` right
        away if the call's streams are not attached yet.
        """
        sender = cls(
            config, first_sequence=state.next_sequence, first_timestamp=state.next_timestamp
        )
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
            self._requeue(state.unacked, now)
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
            if state.unacked is not None:
                self._requeue(state.unacked, now)
        self._channels.clear()
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

    @property
    def oldest_unacked_sent_at(self) -> float | None:
        """Send time of the oldest frame in flight, for failure detection (R10)."""
        times = [s.sent_at for s in self._channels.values() if s.unacked is not None]
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
        pending += [s.unacked.sequence for s in self._channels.values() if s.unacked]
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
        9.1) and on the first telephone-event frame of each event (10.4: after any other
        frame, or after a telephone-event frame with the End bit).
        """
        event = codec is Codec.TELEPHONE_EVENT
        ends = event and len(payload) > 1 and bool(payload[1] & 0x80)
        if self._next_sequence == 0 and self._frames_enqueued == 0:
            marker = True
        elif event and not self._event_open and payload != self._last_end:
            marker = True  # a new event (a repeated End frame, RTP style, is not one)
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
        self._expire(now)
        if not self._queue:
            return []
        free = sorted(
            (state.freed_at, state.order, channel)
            for channel, state in self._channels.items()
            if state.unacked is None and not state.retired
        )
        sent: list[tuple[int, MediaFrame]] = []
        for _, _, channel in free:
            if not self._queue:
                break
            frame = self._queue.pop(0).frame
            state = self._channels[channel]
            state.unacked = frame
            state.sent_at = now
            self._frames_sent += 1
            self._bytes_sent += len(frame.payload)
            sent.append((channel, frame))
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
        sample = max(0.0, now - state.sent_at - ack.ack_delay_us / _MICROSECONDS)
        minimum = self._rtt.minimum
        if minimum is not None:
            # A sample well above the path minimum means QUIC had to repair the frame or
            # its ack: that is the loss that holds a stream busy, which N must cover.
            repaired = sample > minimum * self._config.repair_rtt_factor + self._config.repair_slack
            gain = self._config.loss_estimate_gain
            self._loss_estimate += gain * ((1.0 if repaired else 0.0) - self._loss_estimate)
        self._rtt.on_sample(sample)
        state.unacked = None
        state.freed_at = now
        self._frames_acked += 1
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
        self._queue = [_Queued(q.frame, now) for q in self._queue]

    def export_state(self) -> SenderState:
        """Everything another instance needs to continue this direction (call handoff)."""
        frames = [q.frame for q in self._queue]
        frames += [
            _as_resent(state.unacked)
            for state in self._channels.values()
            if state.unacked is not None
        ]
        frames.sort(key=lambda frame: sequence_delta(frame.sequence, self._next_sequence))
        return SenderState(self._next_sequence, self._next_timestamp, tuple(frames))

    # --- timers and statistics -----------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the oldest queued frame expires; None if nothing is queued or paused."""
        if self._paused or not self._queue:
            return None
        return min(q.eligible_at for q in self._queue) + self._config.send_queue_max_delay

    @property
    def rtt(self) -> RttEstimator:
        """The RTT estimator fed by this sender's acks."""
        return self._rtt

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
        )

    # --- internals -----------------------------------------------------------------------

    def _requeue(self, frame: MediaFrame, now: float) -> None:
        """Put an in-flight frame back before every queued frame with a later sequence."""
        resent = _as_resent(frame)
        position = len(self._queue)
        for index, queued in enumerate(self._queue):
            if sequence_delta(queued.frame.sequence, resent.sequence) > 0:
                position = index
                break
        self._queue.insert(position, _Queued(resent, now))
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
