"""How many media streams a call needs (R6), and the rule that adapts the number.

A sender puts a MEDIA frame only on a stream that has no unacknowledged frame, so a call
needs enough streams that one is almost always free when the next frame is due.

With frame interval ``T``, round-trip time ``R`` and packet loss probability ``p``:

* an acked frame holds its stream for one RTT plus the time ``h`` the peer holds the ack
  to let it ride with its own media (protocol §9.2), so ``base = ceil((R+h)/T) + 1``
  streams carry a loss-free call (``ceil((R+h)/T)`` frames in flight plus the one being
  sent);
* a frame whose packet or whose ack's packet is lost (probability ``q = 1-(1-p)^2``) holds
  its stream for a further QUIC probe timeout, ``PTO = 3R + 25 ms`` (QUIC's initial PTO);
* while one such frame waits, ``n = ceil((R + h + PTO)/T)`` other frames are sent, and the
  number of them that are also lost is ``Binomial(n, q)``;
* so we add ``k`` streams, the smallest ``k`` with ``P[Binomial(n, q) > k] < quantile``
  (``1e-3``): at most one frame in a thousand finds every stream busy.

``N = clamp(base + k, min_media_streams, max_media_streams)``.

Local lateness is not path delay (protocol §11.8): a process that runs behind acks late and
handles acks late, which looks like a longer RTT and busier streams, and more streams only
make an overloaded process slower. So the adaptation does not grow ``N`` while this process
(:class:`LatenessMeter`) or the peer (its reported ACK hold beyond the riding bound) is
behind.
"""

from __future__ import annotations

import math

import attrs

from ._config import RippConfig

# Ratios such as 0.1/0.02 come out as 5.000000000000001 in binary floating point; a
# ceiling must not turn that into 6. Anything within this relative distance of an integer
# is that integer.
_CEIL_TOLERANCE = 1e-9


def _ceil(value: float) -> int:
    """``ceil`` that ignores floating-point noise just above an integer."""
    nearest = round(value)
    if abs(value - nearest) <= _CEIL_TOLERANCE * max(1.0, abs(value)):
        return int(nearest)
    return math.ceil(value)


def _binomial_quantile(n: int, q: float, quantile: float) -> int:
    """Smallest ``k`` with ``P[Binomial(n, q) > k] < quantile``.

    The probabilities are computed in log space, because ``(1-q)**n`` and the binomial
    coefficients under- and overflow floats for the ``n`` of long RTTs.
    """
    if q <= 0.0 or n == 0:
        return 0
    if q >= 1.0:
        return n
    log_q = math.log(q)
    log_not_q = math.log1p(-q)
    log_n_fact = math.lgamma(n + 1)
    pmf = [
        math.exp(
            log_n_fact
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_q
            + (n - i) * log_not_q
        )
        for i in range(n + 1)
    ]
    # Sum the upper tail from the top, so small tails are not lost to 1 - (sum near 1).
    tail = 0.0  # P[X > k] for the current k, starting at k = n
    for k in range(n, -1, -1):
        if tail >= quantile:
            return k + 1
        tail += pmf[k]
    return 0


def required_streams(
    rtt: float,
    frame_interval: float,
    loss: float,
    *,
    pto_rtt_factor: float = 3.0,
    pto_extra: float = 0.025,
    quantile: float = 1e-3,
    hold: float = 0.0,
) -> int:
    """Media streams needed for ``rtt`` (s), ``frame_interval`` (s) and packet ``loss``.

    ``hold`` (s) is how long the peer holds an ACK for its own next frame (protocol
    §9.2): a stream stays busy for ``rtt + hold``, while QUIC's repair time (PTO) depends
    on the path RTT alone.

    Returns the unclamped ``N = ceil((R+h)/T) + 1 + k`` of the module docstring; see
    :func:`streams_for` for the value bounded by the configuration. Raises ``ValueError``
    for a negative RTT, a non-positive frame interval or a loss outside ``[0, 1]``.
    """
    if rtt < 0:
        raise ValueError(f"rtt must be >= 0, got {rtt!r}")
    if hold < 0:
        raise ValueError(f"hold must be >= 0, got {hold!r}")
    if frame_interval <= 0:
        raise ValueError(f"frame_interval must be > 0, got {frame_interval!r}")
    if not 0.0 <= loss <= 1.0:
        raise ValueError(f"loss must be in [0, 1], got {loss!r}")
    q = 1.0 - (1.0 - loss) ** 2
    pto = pto_rtt_factor * rtt + pto_extra
    base = _ceil((rtt + hold) / frame_interval) + 1
    n = _ceil((rtt + hold + pto) / frame_interval)
    return base + _binomial_quantile(n, q, quantile)


def _clamp_streams(config: RippConfig, count: int) -> int:
    return max(config.min_media_streams, min(config.max_media_streams, count))


def streams_for(
    config: RippConfig, rtt: float, frame_interval: float, loss: float, hold: float = 0.0
) -> int:
    """:func:`required_streams` with the configured PTO and quantile, clamped to
    ``[min_media_streams, max_media_streams]``."""
    return _clamp_streams(
        config,
        required_streams(
            rtt,
            frame_interval,
            loss,
            pto_rtt_factor=config.pto_rtt_factor,
            pto_extra=config.pto_extra,
            quantile=config.stream_target_quantile,
            hold=hold,
        ),
    )


@attrs.frozen
class WorkedRow:
    """One row of the worked example table of the stream-count formula."""

    rtt: float
    """Round-trip time (seconds)."""
    loss: float
    """Packet loss probability."""
    unclamped: int
    """``N`` before the configured bounds are applied."""
    clamped: int
    """``N`` within ``[min_media_streams, max_media_streams]``."""


#: RTTs (seconds) and loss rates of the worked example in the protocol specification.
WORKED_RTTS: tuple[float, ...] = (0.02, 0.1, 0.3)
WORKED_LOSSES: tuple[float, ...] = (0.0, 0.01, 0.05)


def worked_table(config: RippConfig, frame_interval: float = 0.02) -> list[WorkedRow]:
    """The worked example table: ``N`` for each of :data:`WORKED_RTTS` x
    :data:`WORKED_LOSSES` at ``frame_interval``."""
    rows: list[WorkedRow] = []
    for rtt in WORKED_RTTS:
        for loss in WORKED_LOSSES:
            unclamped = required_streams(
                rtt,
                frame_interval,
                loss,
                pto_rtt_factor=config.pto_rtt_factor,
                pto_extra=config.pto_extra,
                quantile=config.stream_target_quantile,
            )
            rows.append(WorkedRow(rtt, loss, unclamped, _clamp_streams(config, unclamped)))
    return rows


class LatenessMeter:
    """How late this process runs: a moving average of how late timers fire (§11.8).

    The caller feeds :meth:`on_timer` with the deadline it asked for and the time it was
    actually run; an event loop that is behind runs timers late, and datagrams wait in its
    socket for about as long. The average (gain ``lateness_gain``) is what the process
    reports as its ACK hold time and what holds back stream growth.
    """

    def __init__(self, config: RippConfig) -> None:
        self._gain = config.lateness_gain
        self._value = 0.0
        self._samples = 0

    @property
    def value(self) -> float:
        """Moving average of timer lateness (seconds, >= 0)."""
        return self._value

    @property
    def samples(self) -> int:
        """Timer runs measured."""
        return self._samples

    def on_timer(self, deadline: float, now: float) -> None:
        """A timer due at ``deadline`` ran at ``now`` (early runs count as on time)."""
        self._value += self._gain * (max(0.0, now - deadline) - self._value)
        self._samples += 1


class StreamCountController:
    """The adaptation rule for the number of media streams of one call (R6).

    Call :meth:`update` every ``adapt_interval`` (and whenever the peer advertises
    StreamsWanted); it returns how many streams should be open now. The rule:

    * ``target = max(streams_for(rtt, loss), peer_wanted)``, clamped to the bounds. Before
      an RTT is measured ``initial_rtt`` is used; a loss of zero (or ``None``) uses
      ``assumed_loss``, because a window without a lost packet is no evidence that the path
      cannot lose one, and streams are cheap compared with a choppy call.
    * Grow at once to ``target`` when it exceeds the open streams.
    * A busy fraction of at least ``busy_fraction_signal`` is a congestion signal: one
      stream more than are open (within the bounds), counted in :attr:`congestion_signals`.
    * Shrink by one stream only after ``target`` has stayed below ``open_streams - 1``
      without a break for ``shrink_hold``, and then at most one stream per
      ``adapt_interval``. Hysteresis of one stream keeps N from flapping at a boundary.
    * While ``lateness`` (this process's, or the hold the peer reports, whichever is more)
      is at least ``lateness_hold``, never grow and ignore the busy fraction: neither it
      nor the RTT measures the path then (counted in :attr:`lateness_holds`). Shrinking
      goes on by the rule above.
    """

    def __init__(self, config: RippConfig, now: float) -> None:
        self._config = config
        self._target = _clamp_streams(config, config.min_media_streams)
        self._congestion_signals = 0
        self._lateness_holds = 0
        self._too_many_since: float | None = None
        self._last_shrink: float | None = None

    @property
    def target(self) -> int:
        """Streams the formula (and the peer) asked for at the last :meth:`update`."""
        return self._target

    @property
    def congestion_signals(self) -> int:
        """How many times the busy fraction crossed ``busy_fraction_signal``."""
        return self._congestion_signals

    @property
    def lateness_holds(self) -> int:
        """How many updates wanted to grow but were held because an end ran late."""
        return self._lateness_holds

    def update(
        self,
        now: float,
        *,
        rtt: float | None,
        loss: float | None,
        frame_interval: float,
        busy_fraction: float,
        open_streams: int,
        peer_wanted: int = 0,
        lateness: float = 0.0,
        hold: float = 0.0,
    ) -> int:
        """Return the number of media streams that should be open at ``now``.

        ``lateness`` is the larger of this process's timer lateness and the peer's reported
        ACK hold beyond ``media_ack_delay`` (seconds); ``hold`` the part of the peer's
        average ACK hold that is waiting for its own media (§9.2), which keeps streams busy.
        """
        config = self._config
        measured_rtt = rtt if rtt is not None else config.initial_rtt
        measured_loss = loss if loss else config.assumed_loss
        target = streams_for(config, measured_rtt, frame_interval, measured_loss, hold)
        if peer_wanted > 0:
            target = max(target, _clamp_streams(config, peer_wanted))
        self._target = target

        wanted = max(open_streams, target)
        # When either end runs late, slow acks and busy streams measure its backlog, not
        # the path.
        late = lateness >= config.lateness_hold
        if busy_fraction >= config.busy_fraction_signal and not late:
            self._congestion_signals += 1
            wanted = max(wanted, open_streams + 1)
            # Congestion contradicts "too many streams": the shrink hold starts over.
            self._too_many_since = None
        elif target < open_streams - 1:
            if self._too_many_since is None:
                self._too_many_since = now
            held = now - self._too_many_since >= config.shrink_hold
            paced = self._last_shrink is None or now - self._last_shrink >= config.adapt_interval
            if held and paced:
                wanted = open_streams - 1
                self._last_shrink = now
        else:
            self._too_many_since = None
        if wanted > open_streams and late:
            # More streams would only add per-packet work to a process already behind.
            self._lateness_holds += 1
            wanted = open_streams
        return _clamp_streams(config, wanted)
