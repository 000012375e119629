"""Real-time pacing of media handed over faster than real time (R23).

Voice applications (speech synthesis, recorded prompts) produce audio in bursts, much faster
than it plays. The :class:`Pacer` accepts any amount and releases one frame per frame
duration, so the far end gets a steady stream instead of a burst that overflows its jitter
buffer. Marks and silences travel in the same queue, so their position in the audio is kept.
"""

from __future__ import annotations

from collections import deque

import attrs

from ._codecs import DURATION_UNIT, Codec


@attrs.frozen
class PacedFrame:
    """A frame waiting for its turn."""

    codec: Codec
    duration_units: int
    payload: bytes
    marker: bool = False


@attrs.frozen
class PacedMark:
    """A named position in the paced audio (fires once everything before it is acked)."""

    name: str


@attrs.frozen
class PacedPause:
    """Silence: nothing is sent for ``duration`` seconds (e.g. between DTMF digits)."""

    duration: float


PacedItem = PacedFrame | PacedMark | PacedPause


class Pacer:
    """Releases queued frames at real-time pace, starting when the first one is queued."""

    def __init__(self) -> None:
        self._queue: deque[PacedItem] = deque()
        self._next: float | None = None  # when the head of the queue may go
        self._clock: float | None = None  # end of the audio released so far
        self._paused_since: float | None = None  # queue ran dry with audio finished then

    @property
    def queued(self) -> int:
        """Frames waiting (marks and pauses not counted)."""
        return sum(1 for item in self._queue if isinstance(item, PacedFrame))

    @property
    def queued_seconds(self) -> float:
        """Media time waiting to be released."""
        return sum(
            item.duration_units * DURATION_UNIT if isinstance(item, PacedFrame) else 0.0
            for item in self._queue
        )

    def push(self, item: PacedItem, now: float) -> None:
        """Queue a frame, mark or pause behind everything queued before."""
        if not self._queue:
            # Continue the running clock if the previous audio has not finished playing,
            # so back-to-back bursts join without a gap or an overlap.
            self._next = max(now, self._clock) if self._clock is not None else now
            if self._clock is not None and now > self._clock:
                self._paused_since = self._clock  # the audio stopped for a while
        self._queue.append(item)

    def due(self, now: float) -> list[PacedFrame | PacedMark]:
        """Everything whose time has come at ``now``, in order."""
        out: list[PacedFrame | PacedMark] = []
        while self._queue and self._next is not None and self._next <= now:
            item = self._queue.popleft()
            if isinstance(item, PacedFrame):
                paused = self._paused_since
                self._paused_since = None
                if (
                    paused is not None
                    and self._next - paused >= item.duration_units * DURATION_UNIT
                ):
                    # Nothing was sent for a frame's time or more: this frame starts a
                    # talkspurt and carries MARKER (protocol 9.4), so the receiver may
                    # re-align its playout. A shorter lull is within a talkspurt.
                    item = attrs.evolve(item, marker=True)
                out.append(item)
                self._next += item.duration_units * DURATION_UNIT
                self._clock = self._next
            elif isinstance(item, PacedPause):
                self._next += item.duration
                self._clock = self._next
            else:
                out.append(item)
        if not self._queue:
            self._next = None
        return out

    def clear(self) -> tuple[int, list[tuple[str, int]]]:
        """Drop every queued frame (barge-in).

        Returns the number of frames dropped and each queued mark with the number of
        dropped frames that were ahead of it.
        """
        frames = 0
        marks: list[tuple[str, int]] = []
        for item in self._queue:
            if isinstance(item, PacedFrame):
                frames += 1
            elif isinstance(item, PacedMark):
                marks.append((item.name, frames))
        self._queue.clear()
        self._next = None
        self._clock = None
        self._paused_since = None
        return frames, marks

    def next_deadline(self) -> float | None:
        """When :meth:`due` next has something, or None."""
        return self._next if self._queue else None
