"""Rational-ratio resampling with a Kaiser-windowed sinc polyphase filter, in numpy.

Converting ``from_rate`` to ``to_rate`` reduces the ratio to ``L / M`` (up by L, down by M)
and evaluates only the output samples of the conceptual "upsample by L, low-pass, keep
every M-th sample" chain: output ``n`` lies at input time ``n * M / L``, and is a dot
product of ``2K + 1`` input samples with one of the L phases of the prototype filter.

The low-pass cuts at 0.45 of the lower of the two rates (3.6 kHz for 8 kHz), with a Kaiser
window (beta 8.6, stop band better than about -80 dB) over 16 zero crossings each side
measured at the lower rate. Any pair of integer rates works; 8 kHz <-> 48 kHz is the
common case (L / M = 6 / 1 or 1 / 6), and 44.1 kHz <-> 48 kHz uses L / M = 160 / 147.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["Resampler", "resample"]

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

_ZERO_CROSSINGS = 16
_CUTOFF = 0.9  # of the lower Nyquist frequency
_KAISER_BETA = 8.6
_CHUNK = 8192  # output samples computed per vectorised step (bounds memory)


@lru_cache(maxsize=32)
def _design(up: int, down: int) -> tuple[int, FloatArray]:
    """Return (K, phases): phases[p, j] weighs input ``base - j`` for output phase p."""
    # Half-length in input samples: more taps when the input is the higher rate.
    half = math.ceil(_ZERO_CROSSINGS * max(1.0, down / up))
    length = (2 * half + 1) * up
    # Prototype at the upsampled rate (sample period 1/up input samples), centred at half*up.
    t = (np.arange(length, dtype=np.float64) - half * up) / up  # in input samples
    fc = 0.5 * _CUTOFF * min(1.0, up / down)  # cycles per input sample
    proto = 2.0 * fc * np.sinc(2.0 * fc * t)
    window = np.kaiser(2 * half * up + 1, _KAISER_BETA)
    proto[: window.size] *= window
    proto[window.size :] = 0.0
    phases = proto.reshape(2 * half + 1, up).T.copy()  # phases[p, j] = proto[p + j * up]
    # Unity DC gain for every phase (removes the small per-phase ripple of the window).
    phases /= phases.sum(axis=1, keepdims=True)
    return half, phases


class Resampler:
    """Streaming resampler of 1-D ``int16`` PCM from ``from_rate`` to ``to_rate``.

    :meth:`process` returns every output sample that the input so far determines, which
    lags the input by about 16 samples at the lower rate (2 ms at 8 kHz); :meth:`flush`
    returns the rest as if the input were followed by silence. Concatenated, the outputs of
    one stream are exactly what :func:`resample` returns for the whole input: no delay,
    ``ceil(len(input) * to_rate / from_rate)`` samples.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError("sample rates must be positive")
        g = math.gcd(from_rate, to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._up = to_rate // g
        self._down = from_rate // g
        self._half, self._phases = _design(self._up, self._down)
        self._buffer: FloatArray = np.zeros(0, dtype=np.float64)
        self._buffer_start = 0  # absolute input index of _buffer[0]
        self._received = 0  # input samples seen
        self._next_out = 0  # absolute index of the next output sample
        self._flushed = False

    def _emit(self, stop: int) -> Int16Array:
        """Compute output samples ``_next_out .. stop - 1`` from the buffered input."""
        up, down, half = self._up, self._down, self._half
        pieces: list[FloatArray] = []
        taps = np.arange(2 * half + 1)
        for start in range(self._next_out, stop, _CHUNK):
            n = np.arange(start, min(start + _CHUNK, stop), dtype=np.int64)
            base = (n * down) // up + half  # newest input index used by output n
            phase = (n * down) % up
            index = base[:, None] - taps[None, :] - self._buffer_start
            valid = (index >= 0) & (index < self._buffer.size)
            samples = np.where(valid, self._buffer[np.clip(index, 0, self._buffer.size - 1)], 0.0)
            pieces.append(np.einsum("ij,ij->i", samples, self._phases[phase]))
        self._next_out = max(stop, self._next_out)
        out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float64)
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def _trim(self) -> None:
        keep_from = (self._next_out * self._down) // self._up - self._half
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop

    def process(self, pcm: npt.ArrayLike) -> Int16Array:
        """Feed input samples; return the output samples now determined."""
        if self._flushed:
            raise RuntimeError("Resampler already flushed")
        arr = np.asarray(pcm)
        if arr.ndim != 1:
            raise ValueError(f"expected a 1-D array of samples, got shape {arr.shape}")
        self._buffer = np.concatenate([self._buffer, arr.astype(np.float64)])
        self._received += arr.size
        # Output n needs input up to floor(n*M/L) + K, which must be < received.
        limit = self._received - self._half  # floor(n*M/L) < limit
        stop = max(0, -(-limit * self._up // self._down)) if limit > 0 else 0
        out = self._emit(stop)
        self._trim()
        return out

    def flush(self) -> Int16Array:
        """Return the remaining output, treating the input as ended (zeros after it)."""
        if self._flushed:
            return np.zeros(0, dtype=np.int16)
        self._flushed = True
        total = -(-self._received * self._up // self._down)
        return self._emit(total)


def resample(pcm: npt.ArrayLike, from_rate: int, to_rate: int) -> Int16Array:
    """Resample a whole 1-D ``int16`` signal without delay; see :class:`Resampler`."""
    arr = np.asarray(pcm)
    if from_rate == to_rate:
        return arr.astype(np.int16, copy=True)
    r = Resampler(from_rate, to_rate)
    return np.concatenate([r.process(arr), r.flush()])
