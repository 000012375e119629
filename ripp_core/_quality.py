"""A call-quality estimate: the ITU-T G.107 E-model, from delay, loss and codec.

Operators of telephone networks watch a MOS (mean opinion score, 1 to 4.5) per call; RTP
tools compute it from RTCP reports. RIPP's acknowledgements give the same inputs (R7): the
RTT, the receiver's loss and late frames, and the jitter buffer's delay. The E-model turns
them into a transmission rating R and R into a MOS:

    R = R0 - Is - Id - Ie_eff + A

with the G.107 defaults for everything not measured here (R0 - Is = 93.2, the advantage
factor A = 0, echo perfectly cancelled so only the pure-delay term Idd of Id counts), and

* Idd = 0 for a one-way delay Ta <= 100 ms, else
  ``25 * ((1 + X**6) ** (1/6) - 3 * (1 + (X/3)**6) ** (1/6) + 2)``, X = log2(Ta / 100);
* Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl), Ppl the loss in percent (late
  frames count as lost: they were never played), BurstR = 1 (random loss);
* MOS = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6 for 0 < R < 100 (1 below, 4.5 above;
  never below 1, where the polynomial dips slightly for R < 6.5).

Codec figures (Ie, Bpl) are G.113 Appendix I's for G.711 with packet-loss concealment
(Ie 0, Bpl 25.1), since ripp_audio conceals every loss. G.113 gives no narrowband figures
for Opus; it is rated here like G.711 with concealment (an assumption: at the bit rates
ripp uses, Opus speech is at least as good as G.711), which a caller may override.
"""

from __future__ import annotations

import math

import attrs

from ._codecs import Codec

__all__ = ["CODEC_IMPAIRMENT", "CodecImpairment", "mos_estimate", "mos_from_r", "r_factor"]

#: R0 - Is with G.107's default values (the best a narrowband call can rate).
_R_BASE = 93.2


@attrs.frozen
class CodecImpairment:
    """A codec's E-model figures: equipment impairment ``ie`` and loss robustness ``bpl``."""

    ie: float
    bpl: float


#: Ie and Bpl per codec (G.113 Appendix I, G.711 with PLC; Opus: see the module docstring).
CODEC_IMPAIRMENT: dict[Codec, CodecImpairment] = {
    Codec.PCMU: CodecImpairment(ie=0.0, bpl=25.1),
    Codec.PCMA: CodecImpairment(ie=0.0, bpl=25.1),
    Codec.OPUS: CodecImpairment(ie=0.0, bpl=25.1),
}


def _delay_impairment(one_way: float) -> float:
    """Idd of G.107 for a one-way mouth-to-ear delay in seconds."""
    ta = one_way * 1000.0
    if ta <= 100.0:
        return 0.0
    x = math.log2(ta / 100.0)
    return 25.0 * (math.pow(1 + x**6, 1 / 6) - 3 * math.pow(1 + (x / 3) ** 6, 1 / 6) + 2)


def r_factor(
    one_way_delay: float,
    loss: float,
    codec: Codec = Codec.PCMU,
    *,
    impairment: CodecImpairment | None = None,
) -> float:
    """The E-model rating R for ``one_way_delay`` seconds and a ``loss`` fraction (0..1)."""
    if one_way_delay < 0 or not 0.0 <= loss <= 1.0:
        raise ValueError("delay must not be negative and loss must be within 0..1")
    figures = impairment or CODEC_IMPAIRMENT.get(codec, CODEC_IMPAIRMENT[Codec.PCMU])
    ppl = 100.0 * loss
    ie_eff = figures.ie + (95.0 - figures.ie) * ppl / (ppl + figures.bpl)
    return _R_BASE - _delay_impairment(one_way_delay) - ie_eff


def mos_from_r(r: float) -> float:
    """G.107's conversion of R to a MOS (1.0 to 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    # The polynomial dips to 0.99 for R below about 6.5; a MOS is never below 1.
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def mos_estimate(
    one_way_delay: float,
    loss: float,
    codec: Codec = Codec.PCMU,
    *,
    impairment: CodecImpairment | None = None,
) -> float:
    """A MOS for a call: :func:`mos_from_r` of :func:`r_factor`."""
    return mos_from_r(r_factor(one_way_delay, loss, codec, impairment=impairment))
