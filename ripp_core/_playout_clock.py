"""Keeping a relayed direction's media clock on the playout clock it relays (protocol 9.4).

An application that sends what its own jitter buffer plays out (an echo, a conference
bridge, a gateway bridging from a playout clock) sends each frame when it plays, not when
the far end sampled it. Its playout stretches: the buffer's delay rises after a late frame
or a jitter spike, and a missing frame is concealed, not sent. If the relayed direction's
timestamps ran on without those stretches, each frame would leave later than its
timestamp says, by more and more, and the far end's jitter buffer would drop frames as
late. RTP's rule (RFC 3550 5.1: the timestamp reflects the sampling instant) answers it:
let the media clock run across the time the relay had nothing to send.

:class:`PlayoutClock` decides how far, from the items played and when; the application
passes the answer to ``skip_audio`` (``Call.skip_media`` in the core). No I/O here: the
caller supplies every time.
"""

from __future__ import annotations

import math

from ._codecs import DURATION_UNIT
from ._config import RippConfig
from ._errors import LocalProtocolError
from ._events import MediaGap
from ._frames import MediaFrame

# Playout times are floats: a lateness that is a whole number of units up to rounding
# (0.0205 s is not exactly 41 units) must not round up to one unit more.
_UNIT_TOLERANCE = 1e-6


class PlayoutClock:
    """Says how much media time to skip so a relay's sent timestamps follow its playout.

    Feed :meth:`played` every audio item the relay plays (a ``MediaFrame`` it is about to
    send on, or a ``MediaGap`` it concealed), in order, with the time it played. Each item
    is placed on the sent media clock at the later of

    * where the previous item ended (the clock never goes back: an item played early,
      as in a burst after the relay's own stall, keeps the timestamps contiguous), and
    * its playout time less the first item's playout time (an item played late starts
      that much later on the media clock, rounded up to whole 0.5 ms units, so no frame
      leaves later than the first one did relative to its timestamp).

    A gap is skipped whole: its media time passes with nothing sent. :meth:`played`
    returns the seconds to skip now (whole units; 0 when the item is on time): before
    sending a frame, or for a gap. When what it would skip exceeds ``media_skip_max``
    (the relay heard nothing for an hour), it skips that much and starts counting afresh
    from this item, which is then on time.
    """

    def __init__(self, config: RippConfig | None = None) -> None:
        self._max_units = int((config or RippConfig()).media_skip_max / DURATION_UNIT)
        self._offset: float | None = None  # playout minus media time (s), set by item one
        self._media_units = 0  # where the next item starts on the sent media clock
        self._skipped_units = 0

    @property
    def media_units(self) -> int:
        """Media time (0.5 ms units from the first item's start) where the next item
        starts if it plays on time."""
        return self._media_units

    @property
    def skipped_units(self) -> int:
        """Total media time skipped so far (0.5 ms units): gaps and lateness."""
        return self._skipped_units

    def played(self, item: MediaFrame | MediaGap, now: float) -> float:
        """``item`` played at ``now``: the seconds (whole 0.5 ms units) to skip now.

        Raises :class:`~ripp_core.LocalProtocolError` for a time that is not finite.
        """
        if not math.isfinite(now):
            raise LocalProtocolError(f"playout time {now!r} is not finite")
        if isinstance(item, MediaFrame):
            units, gap = item.duration_units, 0
        else:
            # A gap's duration is whole frames of whole units; round off float error.
            units = gap = min(self._max_units, max(0, round(item.duration / DURATION_UNIT)))
        if self._offset is None:
            self._offset = now - self._media_units * DURATION_UNIT
        behind = (now - self._offset) / DURATION_UNIT - self._media_units
        late = max(0, math.ceil(behind - _UNIT_TOLERANCE))
        if late + gap > self._max_units:
            # Longer than a sender may skip: skip the most it may and re-base the clock
            # on this item (the far end re-aligns on the MARKER such a pause brings).
            late = self._max_units - gap
            self._offset = now - (self._media_units + late) * DURATION_UNIT
        self._media_units += late + units
        self._skipped_units += late + gap
        return (late + gap) * DURATION_UNIT
