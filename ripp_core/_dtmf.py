"""DTMF as telephone-event frames (R19, RFC 4733 event payload).

A digit is a series of frames, one per ``dtmf_frame_duration``, whose payload carries the
event code, the volume and the event's duration so far (8 kHz units); the last frame has
the End bit. RIPP frames are delivered reliably, so the End frame is sent once (RTP senders
repeat it three times; receivers here ignore such repeats).
"""

from __future__ import annotations

import math

import attrs

from ._codecs import Codec, duration_to_units
from ._errors import LocalProtocolError
from ._pacer import PacedFrame, PacedItem, PacedPause

#: RFC 4733 event codes of the DTMF digits.
DIGIT_EVENTS = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
EVENT_DIGITS = {code: digit for digit, code in DIGIT_EVENTS.items()}
END_BIT = 0x80
_VOLUME_MASK = 0x3F
_TELEPHONE_EVENT_RATE = 8000


@attrs.frozen
class TelephoneEvent:
    """A decoded RFC 4733 event payload."""

    event: int
    end: bool
    volume: int
    duration: int  # in 8 kHz units

    @property
    def seconds(self) -> float:
        """The event's duration so far, in seconds."""
        return self.duration / _TELEPHONE_EVENT_RATE

    @property
    def digit(self) -> str | None:
        """The DTMF digit, or None for other events."""
        return EVENT_DIGITS.get(self.event)


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """Build a 4-byte RFC 4733 payload."""
    return bytes([event, (END_BIT if end else 0) | (volume & _VOLUME_MASK)]) + min(
        duration, 0xFFFF
    ).to_bytes(2, "big")


def decode_event(payload: bytes) -> TelephoneEvent:
    """Parse a 4-byte RFC 4733 payload (size already checked by the frame layer)."""
    return TelephoneEvent(
        event=payload[0],
        end=bool(payload[1] & END_BIT),
        volume=payload[1] & _VOLUME_MASK,
        duration=int.from_bytes(payload[2:4], "big"),
    )


def digit_items(
    digits: str, *, duration: float, gap: float, volume: int, frame_duration: float
) -> list[PacedItem]:
    """The paced frames (and pauses) that play ``digits``."""
    units = duration_to_units(frame_duration)
    count = max(1, math.ceil(duration / frame_duration - 1e-9))
    step = round(frame_duration * _TELEPHONE_EVENT_RATE)
    items: list[PacedItem] = []
    for index, digit in enumerate(digits.upper()):
        if digit not in DIGIT_EVENTS:
            raise LocalProtocolError(f"{digit!r} is not a DTMF digit")
        if index:
            items.append(PacedPause(gap))
        for n in range(count):
            payload = encode_event(DIGIT_EVENTS[digit], n == count - 1, volume, step * (n + 1))
            items.append(PacedFrame(Codec.TELEPHONE_EVENT, units, payload, marker=n == 0))
    return items
