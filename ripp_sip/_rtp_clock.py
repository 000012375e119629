"""Where each received RTP packet falls on the RIPP media clock (protocol §21.3), sans-IO.

RIPP timestamps must say when each frame's audio was sampled (§9.4), as RTP's do. The
gateway forwards RTP as it arrives, so whatever RTP's timestamps skip (a lost packet, an
RTP sender's silence suppression) must be skipped on the RIPP clock too, or every later
frame looks that much later than its timestamp says and the RIPP peer's jitter buffer
drops it as late. :class:`RtpTimeline` follows one RTP stream's timestamps and says, per
packet, how much media time was missed before it (for ``skip_audio``), or that the packet
is late (its time is already past on the RIPP clock), a repeated RFC 4733 End, or held
while a new timeline is confirmed.

Positions are RTP timestamp units of the stream, unwrapped from 32 bits to unbounded
integers. The RIPP clock's position is ``placed_end``: the RTP time up to which media has
been laid on it (sent, waiting in the assembler, or skipped). A new SSRC, or a timestamp
or sequence jump beyond what loss or silence suppression explains, is a new timeline
(RFC 3550 §8.2 and A.1): it is taken only when the next packet confirms it (consecutive
sequence number, timestamp close by), so a single spoofed packet cannot move the clock,
and it is anchored at ``placed_end`` with MARKER and no skip: the RIPP receiver re-aligns
on MARKER (§9.4), so no skip is ever longer than ``max_gap``.
"""

from __future__ import annotations

import enum

import attrs

from ripp_core import Codec

from ._rtp import event_is_end

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def _signed(value: int, modulus: int) -> int:
    """``value`` modulo ``modulus`` as a signed difference (-modulus/2 .. modulus/2-1)."""
    half = modulus >> 1
    return (value + half) % modulus - half


@attrs.frozen
class Arrival:
    """One received RTP packet, as the timeline sees it."""

    ssrc: int
    sequence: int
    timestamp: int
    codec: Codec
    payload: bytes
    marker: bool
    units: int
    """RTP time the RIPP frame(s) made of it occupy (G.711: its samples; other codecs: the
    ptime the assembler gives them; telephone-event: one frame of ptime)."""
    extent: int
    """RTP time its media really covers from its timestamp: ``units`` for audio; for a
    telephone-event, the event's duration so far (RFC 4733 §2.5.1.3)."""


class Verdict(enum.Enum):
    """What to do with one packet."""

    PLACE = "place"
    """Send it, after skipping ``Placement.gap`` of media time."""
    LATE = "late"
    """Its time is already past on the RIPP clock (reordered, late or duplicated): drop
    it, unless it falls in the assembler's incomplete frame, where it can be placed."""
    REPEAT = "repeat"
    """A repeat of an RFC 4733 End packet already forwarded: RIPP needs it once (§10.4),
    and each copy would take a frame's time on the RIPP clock."""
    HELD = "held"
    """It starts a new timeline (new SSRC or a jump) that the next packet must confirm."""


@attrs.frozen
class Placement:
    """The verdict for one packet and where it falls."""

    arrival: Arrival
    verdict: Verdict
    gap: int = 0
    """RTP time missed before it (lost packets, silence): skip this much first."""
    start: int = 0
    """Its position (unwrapped RTP units) on the timeline."""
    anchor: bool = False
    """It starts a timeline (first packet, new SSRC, confirmed jump): send with MARKER."""


@attrs.define
class RtpTimeline:
    """The RTP -> RIPP clock mapping of one call's received RTP (see the module doc).

    Cost per packet is O(1) whatever the header claims; counters say what happened.
    """

    max_gap: int
    """Largest timestamp jump (RTP units) taken as loss or silence; beyond it, a new
    timeline that must be confirmed. Keep ``max_gap / rate`` within ``media_skip_max``."""
    max_dropout: int = 3000
    """Largest forward sequence jump taken as loss (RFC 3550 A.1 MAX_DROPOUT)."""
    max_misorder: int = 100
    """Largest backward sequence step taken as reordering (RFC 3550 A.1 MAX_MISORDER)."""
    placed_end: int = 0
    """RTP time up to which media has been laid on the RIPP clock."""
    covered: int = 0
    """End of the latest media received: a packet starting before it overlaps sent audio."""
    late: int = 0
    """Packets whose time had already passed (dropped or placed by the assembler)."""
    repeats: int = 0
    """Repeated RFC 4733 End packets not forwarded."""
    reanchored: int = 0
    """New timelines taken (new SSRC, confirmed jump)."""
    rejected: int = 0
    """Packets that claimed a new timeline the next packet did not confirm (spoofed or
    stray): dropped."""
    skipped: int = 0
    """RTP time skipped in all."""
    ssrc: int | None = None
    _last_sequence: int = 0
    _last_raw: int = 0  # raw timestamp of the newest packet, for unwrapping
    _last_ext: int = 0  # its unwrapped position
    _event_start: int | None = None
    _event_end_sent: bool = False
    _candidate: Arrival | None = None

    def receive(self, arrival: Arrival) -> list[Placement]:
        """Placements for one packet: usually one; two when it confirms a held packet's
        new timeline (the held one first); one HELD when it claims a new timeline."""
        if self.ssrc is None:
            return [self._anchor(arrival)]
        if arrival.ssrc == self.ssrc and self._plausible(arrival):
            if self._candidate is not None:
                self._candidate = None
                self.rejected += 1
            return [self._place(arrival)]
        candidate = self._candidate
        if candidate is not None and self._confirms(candidate, arrival):
            self._candidate = None
            self.reanchored += 1
            return [self._anchor(candidate), self._place(arrival)]
        if candidate is not None:
            self.rejected += 1
        self._candidate = arrival
        return [Placement(arrival, Verdict.HELD)]

    def _plausible(self, arrival: Arrival) -> bool:
        step = _signed(arrival.sequence - self._last_sequence, _SEQ_MOD)
        if not -self.max_misorder <= step <= self.max_dropout:
            return False
        position = self._unwrap(arrival.timestamp)
        return abs(position - self.placed_end) <= self.max_gap

    def _confirms(self, candidate: Arrival, arrival: Arrival) -> bool:
        return (arrival.ssrc == candidate.ssrc
                and (arrival.sequence - candidate.sequence) % _SEQ_MOD == 1
                and 0 <= _signed(arrival.timestamp - candidate.timestamp, _TS_MOD)
                <= self.max_gap)

    def _unwrap(self, timestamp: int) -> int:
        return self._last_ext + _signed(timestamp - self._last_raw, _TS_MOD)

    def _anchor(self, arrival: Arrival) -> Placement:
        # The new timeline's first timestamp maps to where the RIPP clock stands: no skip
        # (it could be anything), MARKER so the receiver re-aligns.
        self.ssrc = arrival.ssrc
        self._last_sequence = arrival.sequence
        self._last_raw = arrival.timestamp
        self._last_ext = self.placed_end
        self.covered = self.placed_end
        self._event_start = None
        self._event_end_sent = False
        placement = self._place(arrival)
        return attrs.evolve(placement, anchor=True)

    def _place(self, arrival: Arrival) -> Placement:
        position = self._unwrap(arrival.timestamp)
        if _signed(arrival.sequence - self._last_sequence, _SEQ_MOD) > 0:
            self._last_sequence = arrival.sequence
            self._last_raw = arrival.timestamp
            self._last_ext = position
        if arrival.codec is Codec.TELEPHONE_EVENT:
            return self._place_event(arrival, position)
        if position < self.covered:
            self.late += 1
            return Placement(arrival, Verdict.LATE, start=position)
        return self._lay(arrival, position)

    def _place_event(self, arrival: Arrival, position: int) -> Placement:
        # RFC 4733 §2.5.1.1: every packet of an event carries the event's start timestamp,
        # so packets of the current event are not "going back in time".
        end = event_is_end(arrival.payload)
        if position == self._event_start:
            if end and self._event_end_sent:
                self.repeats += 1
                return Placement(arrival, Verdict.REPEAT, start=position)
            self._event_end_sent = end
            start = self.placed_end
            self.placed_end += arrival.units
            self.covered = max(self.covered, position + arrival.extent)
            return Placement(arrival, Verdict.PLACE, start=start)
        if self._event_start is not None and position < self._event_start:
            self.late += 1  # a packet of an earlier event
            return Placement(arrival, Verdict.LATE, start=position)
        self._event_start = position
        self._event_end_sent = end
        return self._lay(arrival, position)

    def _lay(self, arrival: Arrival, position: int) -> Placement:
        # A packet starting before placed_end (but not before covered) follows media that
        # took more RIPP time than RTP time (repeated event frames, a ptime that is not
        # the packet's): it goes right after, and the next silence absorbs the offset.
        gap = max(0, position - self.placed_end)
        start = max(position, self.placed_end)
        self.placed_end = start + arrival.units
        self.covered = max(self.covered, position + arrival.extent)
        self.skipped += gap
        return Placement(arrival, Verdict.PLACE, gap=gap, start=start)
