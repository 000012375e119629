"""Call statistics (R7) and the estimators behind them.

RIPP has no RTCP: every MEDIA frame is acked, so the sender knows RTT and delivery exactly
and the receiver knows loss, jitter, duplicates and lateness. The snapshots here carry what
a gateway needs to synthesize RTCP sender and receiver reports.
"""

from __future__ import annotations

import attrs

from ._codecs import MEDIA_CLOCK_RATE
from ._frames import SEQUENCE_MODULUS, TIMESTAMP_MODULUS

# RFC 6298 section 2 / RFC 9002 section 5.3 gains of the smoothed RTT and its variance.
_RTT_ALPHA = 1 / 8
_RTT_BETA = 1 / 4
# The first RTT sample sets the variance to half the sample (RFC 6298 section 2.2).
_FIRST_RTTVAR_RATIO = 1 / 2
# RFC 3550 section 6.4.1: the interarrival jitter estimate moves 1/16 of the way per sample.
_JITTER_GAIN = 1 / 16


@attrs.frozen
class SenderStats:
    """What the sending side of one call direction knows (from acks)."""

    frames_sent: int
    """MEDIA frames put on a stream, counting each re-send."""
    frames_acked: int
    """Distinct frames the peer acknowledged."""
    frames_resent: int
    """Frames queued again after their stream closed before the ack came."""
    frames_dropped: int
    """Frames dropped unsent (queued too long, or beyond the migration buffer)."""
    frames_outstanding: int
    """Frames sent and not yet acknowledged."""
    bytes_sent: int
    """Codec payload bytes sent (without RIPP headers, like RTCP's sender octet count)."""
    rtt_latest: float | None
    """Most recent RTT sample (seconds); None before the first ack."""
    rtt_min: float | None
    """Smallest RTT sample (seconds)."""
    rtt_smoothed: float | None
    """Smoothed RTT (RFC 6298) in seconds."""
    rtt_variance: float | None
    """RTT variation (RFC 6298 RTTVAR) in seconds."""
    streams_open: int
    """Media streams currently usable in this direction."""
    streams_busy: int
    """Streams with an unacknowledged frame now."""
    streams_max_busy: int
    """Most streams ever busy at once."""
    congestion_signals: int
    """Times the busy fraction reached the congestion threshold."""
    frames_early_resent: int = 0
    """Early copies sent: frames put on a second stream because their ack was overdue
    (protocol §11.7); not counted in ``frames_resent``."""
    bytes_early_resent: int = 0
    """Codec payload bytes of those copies (their cost, beside ``bytes_sent``)."""
    frames_waited: int = 0
    """New frames that found every stream busy and waited in the queue for one (§11.2
    sizes N so that at most ``stream_target_quantile`` of frames do)."""
    stream_wait_max: float = 0.0
    """Longest such wait (seconds)."""


@attrs.frozen
class ReceiverStats:
    """What the receiving side of one call direction knows."""

    frames_received: int
    """Distinct MEDIA frames received."""
    bytes_received: int
    """Codec payload bytes of the distinct frames received."""
    duplicates: int
    """Frames received again, or too old to tell (see :class:`MediaReceiver`)."""
    lost: int
    """Expected minus received frames (RTCP cumulative number of packets lost, floor 0)."""
    late: int
    """Frames that arrived after their playout time (from the jitter buffer)."""
    jitter: float
    """RFC 3550 interarrival jitter in seconds."""
    highest_sequence: int | None
    """Extended (unwrapped) highest sequence number received; None before any frame."""
    playout_delay: float
    """Current playout delay of the jitter buffer in seconds."""


@attrs.frozen
class CallStats:
    """Statistics of one call: our sending direction and our receiving direction."""

    sender: SenderStats
    receiver: ReceiverStats


class RttEstimator:
    """Smoothed RTT, RTT variation, minimum and latest sample (RFC 6298, RFC 9002)."""

    def __init__(self) -> None:
        self.latest: float | None = None
        """Most recent sample (seconds)."""
        self.minimum: float | None = None
        """Smallest sample seen (seconds)."""
        self.smoothed: float | None = None
        """Smoothed RTT (seconds)."""
        self.variance: float | None = None
        """RTT variation (seconds)."""

    def on_sample(self, sample: float) -> None:
        """Fold one RTT sample (seconds, >= 0) into the estimate."""
        if sample < 0:
            raise ValueError(f"RTT sample must be >= 0, got {sample!r}")
        self.latest = sample
        self.minimum = sample if self.minimum is None else min(self.minimum, sample)
        if self.smoothed is None or self.variance is None:
            self.smoothed = sample
            self.variance = sample * _FIRST_RTTVAR_RATIO
            return
        # RFC 6298 updates the variance with the old smoothed value first.
        self.variance += _RTT_BETA * (abs(self.smoothed - sample) - self.variance)
        self.smoothed += _RTT_ALPHA * (sample - self.smoothed)


def timestamp_delta(later: int, earlier: int) -> int:
    """Signed difference of two 32-bit media timestamps (serial number arithmetic)."""
    delta = (later - earlier) % TIMESTAMP_MODULUS
    if delta >= TIMESTAMP_MODULUS // 2:
        delta -= TIMESTAMP_MODULUS
    return delta


def sequence_delta(later: int, earlier: int) -> int:
    """Signed difference of two 32-bit sequence numbers (serial number arithmetic)."""
    delta = (later - earlier) % SEQUENCE_MODULUS
    if delta >= SEQUENCE_MODULUS // 2:
        delta -= SEQUENCE_MODULUS
    return delta


def unwrap_sequence(sequence: int, reference: int | None) -> int:
    """Extend a 32-bit ``sequence`` to the unbounded index nearest to ``reference``.

    ``reference`` is an already extended index (e.g. the highest received); with no
    reference the sequence is its own extended index. Like RFC 3550's extended highest
    sequence number, this counts wraps instead of losing them.
    """
    if reference is None:
        return sequence
    return reference + sequence_delta(sequence, reference % SEQUENCE_MODULUS)


class InterarrivalJitter:
    """RFC 3550 interarrival jitter from 48 kHz media timestamps and arrival times.

    For consecutive arrivals ``i``, ``j``: ``D = (Rj - Ri) - (Sj - Si) / 48000`` and
    ``J += (|D| - J) / 16``.
    """

    def __init__(self) -> None:
        self._previous: tuple[float, int] | None = None
        self.jitter = 0.0
        """Current estimate in seconds."""

    def on_arrival(self, arrival: float, timestamp: int, *, restart: bool = False) -> None:
        """Fold in one frame that arrived at ``arrival`` with media ``timestamp``.

        With ``restart`` the frame only becomes the reference for the next one: used where
        the timestamps are known not to track the sending time (a talkspurt start: RIPP
        timestamps advance by frame durations only, so they skip over silence).
        """
        if self._previous is not None and not restart:
            previous_arrival, previous_timestamp = self._previous
            transit_change = (arrival - previous_arrival) - timestamp_delta(
                timestamp, previous_timestamp
            ) / MEDIA_CLOCK_RATE
            self.jitter += _JITTER_GAIN * (abs(transit_change) - self.jitter)
        self._previous = (arrival, timestamp)
