"""Send slots: media of calls that share a connection and fall due together leaves together.

A binding asks a connection for datagrams after every burst of work; a media frame written
at ``t`` on a connection whose other calls will write theirs at ``t + 0.4 ms`` and
``t + 1.1 ms`` costs three QUIC packets (three stream walks, three encryptions, three
``sendto``), where one packet could carry all three frames. :class:`SendSlots` decides,
without I/O, when such a connection may be held back so that its frames are packed:

* Each call's media rhythm is learnt from what it sends: the time of its last frame and
  that frame's duration predict its next one (a paced sender keeps to it).
* When a call writes a frame on a connection, the other calls of that connection whose
  next frame is predicted within ``window`` of the first frame of the current batch are
  *expected*; while any is expected, the connection is held (not asked for datagrams).
* The batch is released as soon as every expected call has written, or at the latest
  ``window`` after its first frame, whatever arrives. A call with no partner predicted in
  the window (a lone call, or calls far apart in their 20 ms cycle) is never delayed.

So no frame waits longer than ``window`` (``RippConfig.send_batch_window``), and nothing
else written on a held connection (acks, signaling) waits longer either: a batch lasts at
most ``window`` and a new one starts only with a new media frame. A window of 0 turns
batching off. The caller (the binding) supplies ``now`` and the connection of each call;
groups are any hashable key.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

K = TypeVar("K")


@attrs.define
class _Rhythm(Generic[K]):
    """What one call's media sending has shown: its connection, last frame, interval."""

    group: K
    last: float
    interval: float


@attrs.define
class _Batch:
    """A held connection: when its batch ends (its first frame + the window), which calls
    it still waits for, and which have written in it."""

    deadline: float
    expected: set[str]
    members: set[str]


class SendSlots(Generic[K]):
    """Which groups (connections) hold their datagrams for a batch, and until when."""

    def __init__(self, window: float) -> None:
        if not window >= 0:
            raise ValueError(f"window must be >= 0, got {window!r}")
        self.window = window
        self._calls: dict[str, _Rhythm[K]] = {}
        self._groups: dict[K, set[str]] = {}
        self._batches: dict[K, _Batch] = {}

    def media(self, group: K, call: str, interval: float, now: float) -> bool:
        """``call`` wrote a media frame of duration ``interval`` on ``group`` at ``now``.

        Returns True if ``group`` is now held (its datagrams wait for the batch), False if
        it may be flushed at once (nobody else expected in the window, or the frame was
        the last one the batch waited for)."""
        rhythm = self._calls.get(call)
        if rhythm is None or rhythm.group != group:
            self._move(call, group)
            rhythm = self._calls[call] = _Rhythm(group, now, interval)
        else:
            rhythm.last, rhythm.interval = now, interval
        if self.window <= 0:
            return False
        batch = self._batches.get(group)
        if batch is None:
            batch = _Batch(deadline=now + self.window, expected=set(), members=set())
        batch.expected.discard(call)
        batch.members.add(call)
        for other in self._groups[group]:
            if other in batch.members or other in batch.expected:
                continue
            peer = self._calls[other]
            due = peer.last + peer.interval
            # Due now or later, within the batch's window: wait for it. A frame already
            # overdue (due < now) is not waited for: its sender may have stopped.
            if now <= due <= batch.deadline:
                batch.expected.add(other)
        if batch.expected and now < batch.deadline:
            self._batches[group] = batch
            return True
        self._batches.pop(group, None)
        return False

    def held(self, group: K, now: float) -> bool:
        """True while ``group``'s batch is open (before its deadline)."""
        batch = self._batches.get(group)
        return batch is not None and now < batch.deadline

    def release(self, group: K) -> None:
        """``group`` was flushed (for whatever reason): its batch, if any, is over."""
        self._batches.pop(group, None)

    def holding(self, now: float) -> set[K]:
        """The groups held at ``now``; batches whose deadline has come are released."""
        gone = [group for group, batch in self._batches.items() if batch.deadline <= now]
        for group in gone:
            del self._batches[group]
        return set(self._batches)

    def deadline_of(self, group: K) -> float | None:
        """When ``group``'s open batch ends, or None."""
        batch = self._batches.get(group)
        return batch.deadline if batch is not None else None

    def group_of(self, call: str) -> K | None:
        """The group ``call`` last wrote media on, or None."""
        rhythm = self._calls.get(call)
        return rhythm.group if rhythm is not None else None

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open batch, or None."""
        return min((batch.deadline for batch in self._batches.values()), default=None)

    def forget_call(self, call: str) -> None:
        """A call ended: stop predicting its frames (and stop waiting for it)."""
        rhythm = self._calls.pop(call, None)
        if rhythm is None:
            return
        self._leave(call, rhythm.group)

    def forget_group(self, group: K) -> None:
        """A connection is gone: its batch and its calls' rhythms with it."""
        self._batches.pop(group, None)
        for call in self._groups.pop(group, set()):
            self._calls.pop(call, None)

    def _move(self, call: str, group: K) -> None:
        old = self._calls.get(call)
        if old is not None:
            self._leave(call, old.group)
        self._groups.setdefault(group, set()).add(call)

    def _leave(self, call: str, group: K) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(call)
            if not members:
                del self._groups[group]
        batch = self._batches.get(group)
        if batch is not None:
            # Not waited for any more; the batch still ends at its deadline at the latest.
            batch.expected.discard(call)
