"""QUIC variable-length integers (RFC 9000, section 16), used by the RIPP frame layer."""

from __future__ import annotations

from ._errors import FrameError

#: Largest value a variable-length integer can hold.
VARINT_MAX = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    """Encode ``value`` in the shortest QUIC variable-length form."""
    if value < 0 or value > VARINT_MAX:
        raise ValueError(f"varint out of range: {value}")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")


def decode_varint(data: bytes | bytearray | memoryview, offset: int) -> tuple[int, int] | None:
    """Decode one varint at ``offset``.

    Returns ``(value, new_offset)``, or ``None`` when ``data`` ends before the integer does
    (the caller waits for more bytes).
    """
    if offset >= len(data):
        return None
    first = data[offset]
    length = 1 << (first >> 6)
    if offset + length > len(data):
        return None
    value = first & 0x3F
    for index in range(offset + 1, offset + length):
        value = (value << 8) | data[index]
    return value, offset + length


def decode_varint_exact(data: bytes, offset: int) -> tuple[int, int]:
    """Like :func:`decode_varint` but for a complete buffer: truncation is an error."""
    result = decode_varint(data, offset)
    if result is None:
        raise FrameError("truncated variable-length integer")
    return result
