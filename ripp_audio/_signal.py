"""Test signals and a delay-tolerant signal-to-noise measure."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["snr_db", "tone"]

Int16Array = npt.NDArray[np.int16]


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.3) -> Int16Array:
    """A sine tone as ``int16`` samples; ``amplitude`` is a fraction of full scale (32767)."""
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError("amplitude must be within 0..1")
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    return np.rint(amplitude * 32767.0 * np.sin(2.0 * math.pi * frequency * t)).astype(np.int16)


def snr_db(reference: npt.ArrayLike, test: npt.ArrayLike, max_lag: int = 1024) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference``, in dB, after delay alignment.

    Codecs and resamplers delay the signal (libopus by 6.5 ms = 312 samples at 48 kHz), so
    ``test`` is shifted by the lag in ``-max_lag..max_lag`` samples (positive: ``test`` is
    late) that maximises the cross-correlation, and the SNR is measured over the overlap:
    ``10 log10(sum(ref**2) / sum((ref - test)**2))``. No gain is fitted. Returns ``inf`` for
    identical signals.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    sig = np.asarray(test, dtype=np.float64).reshape(-1)
    if ref.size == 0 or sig.size == 0:
        raise ValueError("empty signal")
    lag = _best_lag(ref, sig, max_lag)
    if lag >= 0:
        sig = sig[lag:]
    else:
        ref = ref[-lag:]
    m = min(ref.size, sig.size)
    ref, sig = ref[:m], sig[:m]
    noise = float(np.sum((ref - sig) ** 2))
    power = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if power == 0.0:
        return -math.inf
    return 10.0 * math.log10(power / noise)


def _best_lag(ref: npt.NDArray[np.float64], sig: npt.NDArray[np.float64], max_lag: int) -> int:
    """Lag of ``sig`` behind ``ref`` with the highest normalised cross-correlation.

    Normalising by the energies of the overlapping parts keeps a short overlap (a lag one
    period off on a tone) from winning over the true alignment.
    """
    size = 1 << (ref.size + sig.size - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)
    ref_energy = np.concatenate([[0.0], np.cumsum(ref**2)])
    sig_energy = np.concatenate([[0.0], np.cumsum(sig**2)])
    best, best_score = 0, -np.inf
    for lag in range(-min(max_lag, ref.size - 1), min(max_lag, sig.size - 1) + 1):
        r0, s0 = (0, lag) if lag >= 0 else (-lag, 0)
        m = min(ref.size - r0, sig.size - s0)
        denom = (ref_energy[r0 + m] - ref_energy[r0]) * (sig_energy[s0 + m] - sig_energy[s0])
        score = corr[lag % size] / np.sqrt(denom) if denom > 0 else 0.0
        if score > best_score:
            best, best_score = lag, score
    return best
