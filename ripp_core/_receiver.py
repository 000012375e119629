"""The media receiver of one direction of one call: duplicates, loss and jitter (R6, R7).

Frames arrive over many streams, so out of order, and a frame re-sent after a stream
reset or a migration may arrive twice. The receiver tells new frames from duplicates and
keeps the statistics a gateway needs for RTCP receiver reports. It does not build acks:
the caller acks every frame (new or duplicate) on the stream it came on, through an
:class:`AckHolder` that lets the acks of frames that arrived in order wait, bounded, for
the call's next outgoing frame, so that both leave in one packet (protocol §9.2).
"""

from __future__ import annotations

import attrs

from ._config import RippConfig
from ._frames import MediaFrame
from ._stats import InterarrivalJitter, ReceiverStats, unwrap_sequence


@attrs.frozen
class ReceiverWindow:
    """The duplicate-detection state handed to another instance taking over a call."""

    highest: int | None
    """Extended highest sequence number received; None before any frame."""
    recent: frozenset[int]
    """Extended sequence numbers received within the window below ``highest``."""


@attrs.frozen
class AckDue:
    """One ACK to send now: the frame ``sequence`` that came on ``channel``, held
    ``held`` seconds since its receipt."""

    channel: int
    sequence: int
    held: float


@attrs.frozen
class _Held:
    channel: int
    sequence: int
    received_at: float
    deadline: float


class AckHolder:
    """The ACKs of one call's receive direction that wait to ride with outgoing data.

    Each arriving MEDIA frame is acknowledged on its own stream (§9.2). Sending that ACK
    at once costs a packet of its own (and a QUIC ACK of that packet from the peer);
    in a two-way call the receiver sends a frame of its own within one frame time anyway.
    So an ACK may wait, from the frame's receipt, at most ``media_ack_delay`` less the
    receiver's lateness (a late process already made the frame wait that long, §11.8),
    and only when the call's own next frame is expected within that time (a call that
    only receives has nothing for its ACKs to ride with; a frame already overdue is
    expected at once). All held ACKs leave together as soon as any of these holds
    (protocol §9.2):

    * the call sends anything (the ACKs go first, in the same ``datagrams_to_send``);
    * the oldest hold reaches its deadline;
    * an ACK-eliciting frame arrives: one after a gap, one older than the highest
      received, a duplicate, or one flagged RESENT. These drive the sender's repairs
      (§11.7) and must not wait;
    * ``media_ack_max_pending`` ACKs are held.

    The holder does no I/O: :meth:`hold` says whether to flush, :meth:`take` hands over
    what to send, :meth:`next_deadline` is the time the caller must come back.
    """

    def __init__(self, config: RippConfig) -> None:
        self._delay = config.media_ack_delay
        self._max_pending = config.media_ack_max_pending
        self._held: list[_Held] = []
        self.held_total = 0  # ACKs that waited (were not sent on receipt)
        self.flushed_by_deadline = 0  # flushes caused by a hold reaching its deadline

    def hold(
        self,
        channel: int,
        sequence: int,
        now: float,
        *,
        eliciting: bool,
        lateness: float,
        next_send: float | None,
    ) -> bool:
        """Record the ACK for ``sequence`` on ``channel``; True if every held ACK must be
        sent now: ``eliciting``, enough pending, no hold allowed, or our own next frame
        (expected at ``next_send``, None if we send none) not due within the hold."""
        budget = max(0.0, self._delay - max(0.0, lateness))
        self._held.append(_Held(channel, sequence, now, now + budget))
        rides = next_send is not None and next_send <= now + budget
        if eliciting or not rides or budget <= 0.0 or len(self._held) >= self._max_pending:
            return True
        self.held_total += 1
        return False

    @property
    def pending(self) -> int:
        """ACKs held now."""
        return len(self._held)

    def next_deadline(self) -> float | None:
        """When the oldest held ACK must leave; None when none is held."""
        return min((h.deadline for h in self._held), default=None)

    def due(self, now: float) -> bool:
        """True when some held ACK has reached its deadline."""
        deadline = self.next_deadline()
        return deadline is not None and deadline <= now

    def take(self, now: float) -> list[AckDue]:
        """Every held ACK, oldest first, with how long it was held; the holder is then
        empty."""
        if self.due(now):
            self.flushed_by_deadline += 1
        taken = [AckDue(h.channel, h.sequence, max(0.0, now - h.received_at)) for h in self._held]
        self._held = []
        return taken

    def discard(self, channel: int) -> None:
        """Forget the ACKs held for ``channel``: our side of it can carry nothing more
        (the sender re-sends what they would have acknowledged, §11.6)."""
        self._held = [h for h in self._held if h.channel != channel]


class MediaReceiver:
    """Receives the MEDIA frames of one direction of one call.

    Sequence numbers are extended beyond 32 bits relative to the highest one received, as
    RFC 3550 does, so a call may run through a wrap. Duplicate detection remembers the
    ``receive_window`` sequence numbers below the highest: a frame older than that window
    cannot be told apart from a duplicate and is counted as one (and not delivered). With
    the default window of 1024 frames (20 s of 20 ms frames) only a frame delayed far
    beyond any playout deadline is affected.

    Statistics: ``lost`` is the RTCP cumulative loss, expected frames (highest minus lowest
    extended sequence received, plus one) minus distinct frames received, never below 0;
    after :meth:`import_window`, frames the previous instance received are not counted as
    lost.
    ``jitter`` is the RFC 3550 interarrival jitter over consecutive new arrivals; frames
    flagged RESENT are left out, because their delay measures a stream reset or a
    migration, not the network, and a MARKER frame starts a new reference instead of
    giving a sample, because timestamps advance by frame durations only and so do not
    count the silence before a talkspurt.

    A frame more than ``max_sequence_jump`` ahead of the highest one starts a new sequence
    space (as :meth:`restart`; counted in ``resyncs``): frames cost O(1) whatever their
    numbers, and a hostile jump cannot make the loss count meaningless.
    """

    def __init__(self, config: RippConfig) -> None:
        self._window = config.receive_window
        self._max_jump = config.max_sequence_jump
        self.resyncs = 0  # sequence jumps beyond max_sequence_jump
        # Duplicate detection (may be imported from another instance).
        self._top: int | None = None
        self._seen: set[int] = set()
        # Statistics over the frames this instance received itself.
        self._lowest: int | None = None
        self._highest: int | None = None
        self._imported: frozenset[int] = frozenset()
        self._received = 0
        self._space_received = 0  # frames received in the current sequence space
        self._lost_before = 0  # losses counted in earlier sequence spaces
        self.restarts = 0  # how many times the peer's sequence space started afresh
        self._bytes = 0
        self._duplicates = 0
        self._jitter = InterarrivalJitter()

    def in_order(self, frame: MediaFrame) -> bool:
        """True when ``frame`` is the one after the highest received (or the first): its
        ACK may wait (:class:`AckHolder`). A gap, an older frame or a repeat is not."""
        if self._top is None:
            return True
        return unwrap_sequence(frame.sequence, self._top) == self._top + 1

    def on_frame(self, frame: MediaFrame, now: float) -> bool:
        """Account for one arriving frame; True if it is new, False for a duplicate."""
        extended = unwrap_sequence(frame.sequence, self._top)
        if self._top is not None and extended - self._top > self._max_jump:
            # Beyond the documented window: a new sequence space, not 2**20 lost frames.
            self.restart()
            self.resyncs += 1
            extended = frame.sequence
        if not self._remember(extended):
            self._duplicates += 1
            return False
        self._received += 1
        self._space_received += 1
        self._bytes += len(frame.payload)
        self._lowest = extended if self._lowest is None else min(self._lowest, extended)
        self._highest = extended if self._highest is None else max(self._highest, extended)
        if not frame.resent:
            self._jitter.on_arrival(now, frame.timestamp, restart=frame.marker)
        return True

    @property
    def jitter(self) -> float:
        """RFC 3550 interarrival jitter (seconds)."""
        return self._jitter.jitter

    @property
    def received(self) -> int:
        """Distinct frames received."""
        return self._received

    @property
    def duplicates(self) -> int:
        """Frames counted as duplicates (including those older than the window)."""
        return self._duplicates

    @property
    def lost(self) -> int:
        """Expected minus received frames, at least 0."""
        if self._lowest is None or self._highest is None:
            return self._lost_before
        low, high = self._lowest, self._highest
        # Frames the previous instance received (handoff) are not lost, just not ours.
        elsewhere = sum(1 for seq in self._imported if low <= seq <= high)
        return self._lost_before + max(0, high - low + 1 - self._space_received - elsewhere)

    def restart(self) -> None:
        """The peer starts a new sequence space (R10: a new server instance took the call
        over without a handoff). Duplicate detection starts afresh; counters carry on."""
        self._lost_before = self.lost
        self.restarts += 1
        self._top = None
        self._seen = set()
        self._lowest = self._highest = None
        self._imported = frozenset()
        self._space_received = 0
        self._jitter = InterarrivalJitter()

    def stats(self, now: float, *, late: int = 0, playout_delay: float = 0.0) -> ReceiverStats:
        """A snapshot of the receiver statistics.

        ``late`` and ``playout_delay`` come from the jitter buffer the caller plays from,
        if any.
        """
        return ReceiverStats(
            frames_received=self._received,
            bytes_received=self._bytes,
            duplicates=self._duplicates,
            lost=self.lost,
            late=late,
            jitter=self._jitter.jitter,
            highest_sequence=self._highest,
            playout_delay=playout_delay,
        )

    def export_window(self) -> ReceiverWindow:
        """Duplicate-detection state for a call handoff."""
        if self._top is None:
            return ReceiverWindow(None, frozenset())
        floor = self._top - self._window
        return ReceiverWindow(self._top, frozenset(seq for seq in self._seen if seq > floor))

    def import_window(self, window: ReceiverWindow) -> None:
        """Merge the duplicate-detection state of the instance that had this call before.

        Frames that instance received are then dropped here as duplicates.
        """
        if window.highest is None:
            return
        if self._top is None or window.highest > self._top:
            self._top = window.highest
        self._seen |= window.recent
        self._imported |= window.recent
        self._prune()

    def _remember(self, extended: int) -> bool:
        """Record ``extended``; False if it was seen before or is older than the window."""
        if self._top is None or extended > self._top:
            self._top = extended
            self._seen.add(extended)
            self._prune()
            return True
        if extended <= self._top - self._window or extended in self._seen:
            return False
        self._seen.add(extended)
        return True

    def _prune(self) -> None:
        # Prune in batches: walking the set on every new frame would cost O(window).
        if self._top is None or len(self._seen) <= 2 * self._window:
            return
        floor = self._top - self._window
        self._seen = {seq for seq in self._seen if seq > floor}
