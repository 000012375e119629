"""Failure detection for one call (R10).

Every MEDIA frame is acked and media flows continuously during a call, so silence on
either path is noticed within about a second: a frame left unacked for ``ack_timeout``
means our direction (or the peer) is dead, and no media for ``media_timeout`` after media
had been flowing means the peer's direction is.
"""

from __future__ import annotations

import enum

from ._config import RippConfig


class FailureReason(enum.Enum):
    """Why :class:`LivenessMonitor` declared the path or peer failed."""

    ACK_TIMEOUT = "ack-timeout"
    """A frame we sent stayed unacknowledged for ``ack_timeout``."""
    MEDIA_TIMEOUT = "media-timeout"
    """Media had been arriving and then stopped for ``media_timeout``."""


class LivenessMonitor:
    """Decides, from ack and media timing, that a call's path or peer has failed.

    The monitor owns no timers: the caller asks :meth:`next_deadline` when to call
    :meth:`check`. The media timeout arms only once media has arrived since the last
    :meth:`reset`, because a peer that never sends (e.g. before answer) has not failed.
    """

    def __init__(self, config: RippConfig) -> None:
        self._config = config
        self._last_media: float | None = None

    @property
    def last_media(self) -> float | None:
        """When media last arrived since the last reset, or None."""
        return self._last_media

    def on_media(self, now: float) -> None:
        """A MEDIA frame arrived at ``now``."""
        self._last_media = now

    def reset(self, now: float) -> None:
        """Forget that media was flowing (after a migration re-attached the call)."""
        self._last_media = None

    def arm(self, now: float) -> None:
        """Same as :meth:`reset`: start watching afresh from ``now``."""
        self.reset(now)

    def check(self, now: float, *, oldest_unacked_sent_at: float | None) -> FailureReason | None:
        """The failure detected at ``now``, or None while everything looks alive.

        ``oldest_unacked_sent_at`` is :attr:`MediaSender.oldest_unacked_sent_at`. An ack
        timeout is reported before a media timeout when both hold.
        """
        if (
            oldest_unacked_sent_at is not None
            and now - oldest_unacked_sent_at >= self._config.ack_timeout
        ):
            return FailureReason.ACK_TIMEOUT
        if self._last_media is not None and now - self._last_media >= self._config.media_timeout:
            return FailureReason.MEDIA_TIMEOUT
        return None

    def next_deadline(self, oldest_unacked_sent_at: float | None) -> float | None:
        """The earliest time :meth:`check` may report a failure, or None."""
        deadlines = []
        if oldest_unacked_sent_at is not None:
            deadlines.append(oldest_unacked_sent_at + self._config.ack_timeout)
        if self._last_media is not None:
            deadlines.append(self._last_media + self._config.media_timeout)
        return min(deadlines) if deadlines else None
