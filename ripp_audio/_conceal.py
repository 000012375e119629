"""Packet loss concealment by pitch-period repetition with fade-out.

Used by every decoder for :class:`ripp_core.MediaGap`. PyAV gives no access to libopus's own
concealment (an empty packet means end of stream to FFmpeg), so Opus uses this too.

The method is the idea of G.711 Appendix I, simplified: on the first lost frame, find the
pitch period of the last 20 ms of good audio (autocorrelation over 2.5..15 ms) and repeat
the last period cyclically, continuing in phase across consecutive lost frames. The gain
falls linearly by 20 % per 10 ms from the start of the loss, so after 50 ms of consecutive
loss the output is silence. There is no overlap-add into the next good frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]

_HISTORY = 0.040  # seconds of decoded audio kept
_WINDOW = 0.020  # autocorrelation window
_MIN_PERIOD = 0.0025
_MAX_PERIOD = 0.015
_FADE_TIME = 0.050  # gain reaches zero after this much consecutive loss


class Concealer:
    """Remembers recent decoded audio at ``rate`` and synthesises audio for lost frames."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._history: Int16Array = np.zeros(0, dtype=np.int16)
        self._keep = round(_HISTORY * rate)
        self._lost = 0  # samples concealed since the last good frame
        self._period = 0

    def good(self, pcm: Int16Array) -> None:
        """Record a decoded frame; ends any loss in progress."""
        self._history = np.concatenate([self._history, pcm])[-self._keep :]
        self._lost = 0

    def _find_period(self) -> int:
        h = self._history.astype(np.float64)
        window = round(_WINDOW * self.rate)
        lo, hi = round(_MIN_PERIOD * self.rate), round(_MAX_PERIOD * self.rate)
        if h.size < window + hi or not np.any(h[-window:]):
            return 0
        target = h[-window:]
        best, best_score = 0, 0.0
        for lag in range(lo, hi + 1):
            past = h[-window - lag : -lag]
            energy = float(np.dot(past, past))
            if energy <= 0.0:
                continue
            score = float(np.dot(target, past)) / np.sqrt(energy)
            if score > best_score:
                best, best_score = lag, score
        return best

    def conceal(self, samples: int) -> Int16Array:
        """Return ``samples`` samples to play in place of lost audio."""
        if samples <= 0:
            return np.zeros(0, dtype=np.int16)
        if self._lost == 0:
            self._period = self._find_period()
        start = self._lost
        self._lost += samples
        if self._period == 0:
            return np.zeros(samples, dtype=np.int16)
        cycle = self._history[-self._period :].astype(np.float64)
        position = np.arange(start, start + samples)
        fade = np.clip(1.0 - position / (_FADE_TIME * self.rate), 0.0, 1.0)
        out = cycle[position % self._period] * fade
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
