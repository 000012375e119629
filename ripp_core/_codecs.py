"""Codec identifiers and the frame durations each codec allows (R5, R19).

RIPP has no offer/answer: every entity sends and receives all of these, and every MEDIA
frame names its own codec and duration. Identifiers follow the RTP payload types that
gateways already use for these codecs, so mapping to RTP is a copy.
"""

from __future__ import annotations

import enum

from ._errors import BadDuration, UnknownCodec

#: Timestamps of every codec run on one 48 kHz media clock.
MEDIA_CLOCK_RATE = 48000
#: Durations travel on the wire in units of half a millisecond.
DURATION_UNIT = 0.0005


class Codec(enum.IntEnum):
    """Codec identifier carried in every MEDIA frame."""

    PCMU = 0x00
    """G.711 mu-law, 8 kHz, one byte per sample."""
    CN = 0x0D
    """Comfort noise (RFC 3389): noise level byte, optional spectral coefficients."""
    PCMA = 0x08
    """G.711 A-law, 8 kHz, one byte per sample."""
    TELEPHONE_EVENT = 0x65
    """DTMF and other telephone events (RFC 4733 event payload, 4 bytes)."""
    OPUS = 0x6F
    """Opus (RFC 6716), 48 kHz media clock."""


_TEN_TO_SIXTY = frozenset(range(20, 121, 20))  # 10..60 ms in 10 ms steps, in 0.5 ms units
_OPUS = _TEN_TO_SIXTY | {5, 10}  # plus 2.5 ms and 5 ms

#: Allowed durations per codec, in wire units of 0.5 ms.
ALLOWED_DURATION_UNITS: dict[Codec, frozenset[int]] = {
    Codec.PCMU: _TEN_TO_SIXTY,
    Codec.PCMA: _TEN_TO_SIXTY,
    Codec.OPUS: frozenset(_OPUS),
    Codec.TELEPHONE_EVENT: _TEN_TO_SIXTY,
    Codec.CN: _TEN_TO_SIXTY,
}

#: G.711 carries one byte per 8 kHz sample: 8 bytes per millisecond = 4 per wire unit.
G711_BYTES_PER_UNIT = 4
TELEPHONE_EVENT_PAYLOAD_SIZE = 4


def codec_from_id(value: int) -> Codec:
    """Return the :class:`Codec` for a wire identifier, or raise :class:`UnknownCodec`."""
    try:
        return Codec(value)
    except ValueError:
        raise UnknownCodec(f"unknown codec identifier 0x{value:02x}") from None


def duration_to_units(duration: float) -> int:
    """Convert a duration in seconds to wire units (0.5 ms), exactly."""
    units = round(duration / DURATION_UNIT)
    if abs(units * DURATION_UNIT - duration) > 1e-9:
        raise BadDuration(f"duration {duration!r} s is not a multiple of 0.5 ms")
    return units


def units_to_ticks(units: int) -> int:
    """Media clock ticks (48 kHz) covered by a duration in wire units."""
    return units * 24


def validate_media(codec: Codec, duration_units: int, payload: bytes) -> None:
    """Check that ``duration_units`` and ``payload`` are legal for ``codec``.

    Raises :class:`BadDuration` naming the rule that failed.
    """
    if duration_units not in ALLOWED_DURATION_UNITS[codec]:
        raise BadDuration(f"{codec.name} does not allow a duration of {duration_units * 0.5} ms")
    size = len(payload)
    if codec in (Codec.PCMU, Codec.PCMA):
        expected = duration_units * G711_BYTES_PER_UNIT
        if size != expected:
            raise BadDuration(
                f"{codec.name} {duration_units * 0.5} ms needs {expected} bytes, got {size}"
            )
    elif codec is Codec.TELEPHONE_EVENT:
        if size != TELEPHONE_EVENT_PAYLOAD_SIZE:
            raise BadDuration(f"telephone-event payload must be 4 bytes, got {size}")
    elif size == 0:
        raise BadDuration(f"{codec.name} payload must not be empty")
