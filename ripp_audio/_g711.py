"""G.711 (ITU-T G.711) mu-law and A-law, vectorised in numpy.

Written from the segment/quantisation description of the Recommendation, not from
``audioop`` (deprecated, removed in Python 3.13) or another project's code.

Both laws take 16-bit linear PCM. mu-law quantises a 14-bit magnitude scale (full scale
8159, so the 16-bit input is divided by 4), A-law a 13-bit one (full scale 4096, input
divided by 8). Each law has 8 segments of 16 equal steps; the step doubles from one
segment to the next (mu-law: 2, 4, ... 256; A-law: 2, 2, 4, ... 128), and a code decodes to
the middle of its interval.

A negative 16-bit sample ``x`` is quantised on the magnitude ``-x - 1`` (one's complement),
which makes the quantiser symmetric about -0.5 and maps ``-32768`` like ``32767``. So ``-1``
encodes to mu-law 0x7F ("negative zero"), which decodes to 0 like 0xFF.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

Int16Array = npt.NDArray[np.int16]

_ULAW_BIAS = 33  # 14-bit scale: magnitude + 33 puts segment s in [2**(s+5), 2**(s+6))
_ULAW_CLIP = 8158  # largest 14-bit magnitude that still fits segment 7 after the bias


def _as_int32(pcm: npt.ArrayLike) -> npt.NDArray[np.int32]:
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of samples, got shape {arr.shape}")
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {arr.dtype}")
    return arr.astype(np.int32)


def _segment_of(value: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """floor(log2(value)) for positive int32 values, exactly (no floating point)."""
    seg = np.zeros(value.shape, dtype=np.int32)
    v = value.copy()
    for shift in (8, 4, 2, 1):
        big = v >= (1 << shift)
        seg[big] += shift
        v[big] >>= shift
    return seg


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Encode 16-bit linear PCM (1-D ``int16`` array) to G.711 mu-law bytes."""
    x = _as_int32(pcm)
    negative = x < 0
    magnitude = np.where(negative, -x - 1, x) >> 2  # 14-bit scale
    biased = np.minimum(magnitude, _ULAW_CLIP) + _ULAW_BIAS  # 33 .. 8191
    segment = _segment_of(biased) - 5  # 0 .. 7
    mantissa = (biased >> (segment + 1)) & 0x0F
    code = (negative.astype(np.int32) << 7) | (segment << 4) | mantissa
    return bytes((~code & 0xFF).astype(np.uint8).tobytes())


def ulaw_decode(data: bytes) -> Int16Array:
    """Decode G.711 mu-law bytes to 16-bit linear PCM."""
    code = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    segment = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 1) + _ULAW_BIAS) << segment) - _ULAW_BIAS  # 14-bit scale
    value = np.where(code & 0x80, -magnitude, magnitude) << 2
    return value.astype(np.int16)


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Encode 16-bit linear PCM (1-D ``int16`` array) to G.711 A-law bytes."""
    x = _as_int32(pcm)
    negative = x < 0
    magnitude = np.where(negative, -x - 1, x) >> 3  # 13-bit scale, 0 .. 4095
    # Segments 0 and 1 share step 2; segment s >= 1 covers [2**(s+4), 2**(s+5)).
    segment = np.maximum(_segment_of(np.maximum(magnitude, 1)) - 4, 0)
    mantissa = np.where(segment == 0, magnitude >> 1, magnitude >> segment) & 0x0F
    code = ((~negative).astype(np.int32) << 7) | (segment << 4) | mantissa
    return bytes(((code ^ 0x55) & 0xFF).astype(np.uint8).tobytes())


def alaw_decode(data: bytes) -> Int16Array:
    """Decode G.711 A-law bytes to 16-bit linear PCM."""
    code = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    segment = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        segment == 0,
        (mantissa << 1) + 1,
        ((mantissa << 1) + 33) << np.maximum(segment - 1, 0),
    )  # 13-bit scale, middle of the interval
    value = np.where(code & 0x80, magnitude, -magnitude) << 3
    return value.astype(np.int16)
