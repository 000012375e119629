"""Rate-limited log lines: a hostile peer must not be able to flood the log.

Every line a peer can trigger at will (a refused request, a dropped packet) goes through a
:class:`LogLimiter`: per kind of line, at most ``burst`` lines per ``interval`` seconds of
the caller's clock; the lines held back are counted and the count is reported with the next
line of that kind that gets through.
"""

from __future__ import annotations

import logging

#: How many lines of one kind may pass per interval, and the interval (seconds).
DEFAULT_BURST = 10
DEFAULT_INTERVAL = 10.0


class LogLimiter:
    """Per-key token bucket in front of a :class:`logging.Logger` (sans-IO: the caller
    passes ``now``)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = DEFAULT_BURST,
        interval: float = DEFAULT_INTERVAL,
        max_keys: int = 64,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._max_keys = max_keys
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> start, sent, held

    def log(self, level: int, now: float, fmt: str, *args: object) -> bool:
        """Log ``fmt % args`` unless lines of this format exceeded the budget; True if it
        was written. The format string is the key, so arguments may vary freely."""
        if not self._logger.isEnabledFor(level):
            return False
        start, sent, held = self._windows.get(fmt, (now, 0, 0))
        if now - start >= self._interval:
            start, sent = now, 0
        if sent >= self._burst:
            self._store(fmt, (start, sent, held + 1))
            return False
        if held:
            self._logger.log(level, fmt + " (%d similar lines suppressed)", *args, held)
        else:
            self._logger.log(level, fmt, *args)
        self._store(fmt, (start, sent + 1, 0))
        return True

    def _store(self, key: str, value: tuple[float, int, int]) -> None:
        if key not in self._windows and len(self._windows) >= self._max_keys:
            self._windows.pop(next(iter(self._windows)))
        self._windows[key] = value
