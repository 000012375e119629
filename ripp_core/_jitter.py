"""Adaptive jitter buffer: frames in, frames (and gaps) out on a playout schedule (R23).

Striping delivers frames out of order and with varying delay; a player needs them in
order, evenly spaced. The buffer holds each frame until its playout time and tells the
player where a frame is missing so it can conceal the gap instead of stalling.
"""

from __future__ import annotations

import heapq

import attrs

from ._codecs import DURATION_UNIT, MEDIA_CLOCK_RATE, units_to_ticks
from ._config import RippConfig
from ._frames import SEQUENCE_MODULUS, TIMESTAMP_MODULUS, MediaFrame
from ._stats import InterarrivalJitter, timestamp_delta, unwrap_sequence


@attrs.frozen
class Gap:
    """A frame that did not arrive in time: the player should conceal this much audio."""

    sequence: int
    """Sequence number of the missing frame."""
    timestamp: int
    """Estimated media timestamp (48 kHz ticks) of the missing frame."""
    duration_units: int
    """Estimated duration of each missing frame in 0.5 ms units (that of the frame played
    before it)."""
    frames: int = 1
    """How many consecutive frames are missing, from ``sequence`` on: a run whose playout
    time has already passed is reported as one gap (so the cost of a gap does not grow
    with its length)."""

    @property
    def duration(self) -> float:
        """Estimated duration of the whole gap in seconds."""
        return self.frames * self.duration_units * DURATION_UNIT


class JitterBuffer:
    """Adaptive playout buffer for one direction of one call.

    **Schedule.** A frame plays at ``anchor_arrival + (ts - anchor_ts) / 48000 + delay``.
    The anchor is the arrival time and timestamp of the first frame, and is set again:

    * at a MARKER frame that arrives while nothing is pending (a talkspurt starts after
      silence); and
    * at a frame newer than every frame before it that breaks the schedule by more than
      ``jitter_max_delay``: it arrives that much after its scheduled arrival (a migration
      or stall held media back; keeping the anchor would drop all of it as late), or its
      timestamp advanced that much more than the time since the previous newest frame
      arrived (the sender's timestamps jumped; keeping the anchor would hold everything
      back). A burst of held-back frames advances timestamps by one frame each while
      arriving together, so it does not trip the second test.

    **Delay.** ``target = clamp(jitter_factor * J, jitter_min_delay, jitter_max_delay)``
    where ``J`` is the RFC 3550 jitter of the frames pushed (RESENT frames left out, and a
    frame that sets a new anchor only starts a new reference: its transit jump is silence or
    a stall, not jitter). The delay starts at ``jitter_initial_delay`` and then:

    * rises to ``target`` at once whenever ``target`` exceeds it;
    * rises by the lateness of a late frame plus ``jitter_late_margin`` (capped at
      ``jitter_max_delay``), so the same lateness would not lose a frame again (not for
      RESENT frames, whose delay is not the network's);
    * falls only at a talkspurt start (the MARKER re-anchor above), straight to ``target``.
      Lowering it mid-talkspurt would squeeze audio together; at a talkspurt start the
      change falls into silence.

    **Late frames.** A frame whose playout time has passed, or whose sequence number is
    not after the last one played (its gap was already concealed), is dropped and counted
    in :attr:`late`. A second copy of a frame still waiting is ignored (returns False,
    counted nowhere: :class:`MediaReceiver` counts duplicates).

    **Output.** :meth:`pop` returns items in strictly increasing sequence order, each frame
    at or after its playout time. A missing sequence number becomes a :class:`Gap` once a
    later frame is waiting and either the missing frame's estimated playout time or the
    later frame's playout time has passed. With nothing waiting the buffer emits nothing:
    it cannot tell loss from the sender pausing.

    **Size.** At most ``jitter_max_frames`` frames wait; beyond that the oldest is dropped
    (counted in :attr:`dropped`) and later concealed as a gap.

    **Cost.** Every push and every item popped costs O(1) whatever the sequence numbers
    and timestamps say (plus O(log n) in the frames waiting). A run of missing frames whose
    playout time has passed comes out as one :class:`Gap` with ``frames`` > 1. A frame
    whose sequence number is more than ``max_sequence_jump`` ahead of every frame before it
    resynchronises the buffer: the frames still waiting are dropped (counted in
    :attr:`dropped`), the skipped numbers are not reported as gaps, and playout re-anchors
    on that frame (counted in :attr:`resyncs`).
    """

    def __init__(self, config: RippConfig) -> None:
        self._config = config
        self._delay = config.jitter_initial_delay
        self._jitter = InterarrivalJitter()
        self._frames: dict[int, MediaFrame] = {}
        self._top: int | None = None
        self._anchor: tuple[float, int] | None = None
        self._newest_arrival: tuple[float, int] | None = None
        self._last_played: int | None = None
        self._last_timestamp = 0
        self._last_duration_units = 0
        self._late = 0
        self._played = 0
        self._gaps = 0
        self._dropped = 0
        self._resyncs = 0
        self._heap: list[int] = []  # extended sequence numbers waiting (lazy deletion)

    # --- counters and settings -----------------------------------------------------------

    @property
    def delay(self) -> float:
        """Current playout delay (seconds)."""
        return self._delay

    @property
    def target_delay(self) -> float:
        """Delay the jitter estimate asks for (seconds)."""
        config = self._config
        wanted = config.jitter_factor * self._jitter.jitter
        return max(config.jitter_min_delay, min(config.jitter_max_delay, wanted))

    @property
    def jitter(self) -> float:
        """RFC 3550 jitter of the frames pushed (seconds)."""
        return self._jitter.jitter

    @property
    def late(self) -> int:
        """Frames dropped because they arrived after their playout."""
        return self._late

    @property
    def played(self) -> int:
        """Frames returned by :meth:`pop`."""
        return self._played

    @property
    def gaps(self) -> int:
        """Gaps returned by :meth:`pop`."""
        return self._gaps

    @property
    def dropped(self) -> int:
        """Frames dropped because the buffer was full."""
        return self._dropped

    @property
    def resyncs(self) -> int:
        """How often a sequence jump beyond ``max_sequence_jump`` restarted playout."""
        return self._resyncs

    @property
    def pending(self) -> int:
        """Frames waiting for their playout time."""
        return len(self._frames)

    def playout_time(self, frame: MediaFrame) -> float | None:
        """When ``frame`` plays under the current anchor and delay; None before the first
        frame was pushed."""
        if self._anchor is None:
            return None
        return self._time_of(frame.timestamp)

    # --- input ---------------------------------------------------------------------------

    def push(self, frame: MediaFrame, now: float) -> bool:
        """Add an arriving frame; False if it came too late (dropped and counted) or is a
        copy of a frame already waiting."""
        extended = unwrap_sequence(frame.sequence, self._top)
        newest = self._top is None or extended > self._top
        if (
            newest
            and self._top is not None
            and extended - self._top > self._config.max_sequence_jump
        ):
            self._resync(extended)
        restart = talkspurt = late = False
        if self._last_played is not None and extended <= self._last_played:
            late = True
        elif extended in self._frames:
            return False
        elif self._anchor is None:
            self._anchor, restart = (now, frame.timestamp), True
        elif newest and frame.marker and not self._frames:
            self._anchor, restart, talkspurt = (now, frame.timestamp), True, True
        elif newest and self._discontinuity(frame, now):
            self._anchor, restart = (now, frame.timestamp), True
        else:
            late = self._time_of(frame.timestamp) < now
        lateness = now - self._time_of(frame.timestamp) if late else 0.0
        delay_before = self._delay
        if not frame.resent:
            # A new anchor means the timestamps broke from the arrival times: no sample.
            self._jitter.on_arrival(now, frame.timestamp, restart=restart)
            if talkspurt:
                # A talkspurt starts after silence: the only moment the delay may fall.
                self._delay = self.target_delay
            else:
                self._delay = max(self._delay, self.target_delay)
            if lateness > 0:
                # Enough extra delay that this lateness would not lose a frame again.
                raised = min(
                    self._config.jitter_max_delay,
                    delay_before + lateness + self._config.jitter_late_margin,
                )
                self._delay = max(self._delay, raised)
        if late:
            self._late += 1
            return False
        self._frames[extended] = frame
        heapq.heappush(self._heap, extended)
        if newest:
            self._top = extended
            self._newest_arrival = (now, frame.timestamp)
        while len(self._frames) > self._config.jitter_max_frames:
            del self._frames[self._lowest()]
            self._dropped += 1
        return True

    def _resync(self, extended: int) -> None:
        """The peer's sequence numbers jumped beyond the window: start afresh there."""
        self._dropped += len(self._frames)
        self._frames.clear()
        self._heap.clear()
        self._anchor = self._newest_arrival = None
        self._last_played = extended - 1
        self._top = extended - 1
        self._resyncs += 1

    def _lowest(self) -> int:
        """The lowest extended sequence number waiting (the heap may hold stale ones)."""
        while self._heap[0] not in self._frames:
            heapq.heappop(self._heap)
        return self._heap[0]

    # --- output --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`pop` will next have something to return; None if nothing waits."""
        due = self._next_item()
        return None if due is None else due[0]

    def pop(self, now: float) -> list[MediaFrame | Gap]:
        """Every frame and gap due by ``now``, in sequence order."""
        out: list[MediaFrame | Gap] = []
        while True:
            due = self._next_item()
            if due is None or due[0] > now:
                return out
            _, extended, item = due
            if isinstance(item, MediaFrame):
                del self._frames[extended]
                self._played += 1
            else:
                item = self._coalesce(item, extended, now)
                self._gaps += 1
                extended += item.frames - 1
            self._last_played = extended
            self._last_timestamp = (
                item.timestamp + units_to_ticks(item.duration_units * (item.frames - 1))
                if isinstance(item, Gap)
                else item.timestamp
            ) % TIMESTAMP_MODULUS
            self._last_duration_units = item.duration_units
            out.append(item)

    # --- internals -----------------------------------------------------------------------

    def _time_of(self, timestamp: int) -> float:
        assert self._anchor is not None
        anchor_arrival, anchor_timestamp = self._anchor
        offset = timestamp_delta(timestamp, anchor_timestamp) / MEDIA_CLOCK_RATE
        return anchor_arrival + offset + self._delay

    def _discontinuity(self, frame: MediaFrame, now: float) -> bool:
        """True if the newest frame breaks the schedule by more than ``jitter_max_delay``."""
        limit = self._config.jitter_max_delay
        behind = now - (self._time_of(frame.timestamp) - self._delay)
        if behind > limit:
            return True
        if self._newest_arrival is None:
            return False
        previous_arrival, previous_timestamp = self._newest_arrival
        media_step = timestamp_delta(frame.timestamp, previous_timestamp) / MEDIA_CLOCK_RATE
        return media_step - (now - previous_arrival) > limit

    def _coalesce(self, gap: Gap, extended: int, now: float) -> Gap:
        """Extend a due gap over the following missing frames that are due too."""
        run = self._lowest() - extended  # missing frames before the next one waiting
        if run <= 1 or gap.duration_units <= 0:
            return gap
        frame_time = gap.duration_units * DURATION_UNIT
        overdue = now - self._time_of(gap.timestamp)
        frames = max(1, min(run, int(overdue / frame_time) + 1))
        if self._time_of(self._frames[self._lowest()].timestamp) <= now:
            frames = run  # the frame after the run is due: the whole run is
        return attrs.evolve(gap, frames=frames)

    def _next_item(self) -> tuple[float, int, MediaFrame | Gap] | None:
        """The next item in sequence order and the time it is due."""
        if not self._frames:
            return None
        lowest = self._lowest()
        if self._last_played is None or lowest == self._last_played + 1:
            frame = self._frames[lowest]
            return self._time_of(frame.timestamp), lowest, frame
        missing = self._last_played + 1
        timestamp = (
            self._last_timestamp + units_to_ticks(self._last_duration_units)
        ) % TIMESTAMP_MODULUS
        gap = Gap(missing % SEQUENCE_MODULUS, timestamp, self._last_duration_units)
        due = min(self._time_of(timestamp), self._time_of(self._frames[lowest].timestamp))
        return due, missing, gap
