"""QUIC variable-length integers (RFC 9000, section 16)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._errors import FrameError
from ripp_core._varint import VARINT_MAX, decode_varint, decode_varint_exact, encode_varint


def shortest_length(value: int) -> int:
    """Independent statement of the rule: the smallest of 1, 2, 4, 8 bytes whose 2-bit
    length prefix leaves enough bits for ``value``."""
    for length in (1, 2, 4, 8):
        if value < 1 << (8 * length - 2):
            return length
    raise AssertionError("unreachable")


def test_varint_max_is_2_pow_62_minus_1() -> None:
    assert VARINT_MAX == 2**62 - 1


# RFC 9000, appendix A.1 sample encodings, and the examples of docs/protocol.md.
@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        ("c2197c5eff14e88c", 151_288_809_941_952_652),
        ("9d7f3e7d", 494_878_333),
        ("7bbd", 15_293),
        ("25", 37),
        # docs/protocol.md section 1.3
        ("19", 25),
        ("40ab", 171),
        ("44e2", 1250),
        ("80004000", 16384),
    ],
)
def test_sample_encodings(encoded: str, value: int) -> None:
    data = bytes.fromhex(encoded)
    assert encode_varint(value) == data
    assert decode_varint(data, 0) == (value, len(data))


def test_non_shortest_encodings_decode() -> None:
    # RFC 9000 A.1: "the two-byte sequence 0x40 0x25 also decodes to 37".
    assert decode_varint(bytes.fromhex("4025"), 0) == (37, 2)
    assert decode_varint(bytes.fromhex("80000025"), 0) == (37, 4)
    assert decode_varint(bytes.fromhex("c000000000000025"), 0) == (37, 8)


@pytest.mark.parametrize(
    ("value", "length"),
    [
        (0, 1),
        (63, 1),
        (64, 2),
        (16383, 2),
        (16384, 4),
        (2**30 - 1, 4),
        (2**30, 8),
        (VARINT_MAX, 8),
    ],
)
def test_length_boundaries(value: int, length: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == length
    assert decode_varint(encoded, 0) == (value, length)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=VARINT_MAX))
def test_round_trip_and_shortest(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == shortest_length(value)
    # The two-bit prefix names the length.
    assert 1 << (encoded[0] >> 6) == len(encoded)
    assert decode_varint(encoded, 0) == (value, len(encoded))
    assert decode_varint_exact(encoded, 0) == (value, len(encoded))


@given(
    st.integers(min_value=0, max_value=VARINT_MAX),
    st.binary(max_size=8),
    st.binary(max_size=8),
)
def test_decode_at_offset_ignores_surrounding_bytes(
    value: int, before: bytes, after: bytes
) -> None:
    encoded = encode_varint(value)
    data = before + encoded + after
    assert decode_varint(data, len(before)) == (value, len(before) + len(encoded))
    assert decode_varint(bytearray(data), len(before)) == (value, len(before) + len(encoded))
    assert decode_varint(memoryview(data), len(before)) == (value, len(before) + len(encoded))


@given(st.integers(min_value=0, max_value=VARINT_MAX))
def test_every_strict_prefix_is_incomplete(value: int) -> None:
    encoded = encode_varint(value)
    for cut in range(len(encoded)):
        assert decode_varint(encoded[:cut], 0) is None
        with pytest.raises(FrameError):
            decode_varint_exact(encoded[:cut], 0)


def test_offset_at_or_past_end_is_incomplete() -> None:
    assert decode_varint(b"", 0) is None
    assert decode_varint(b"\x25", 1) is None
    assert decode_varint(b"\x25", 5) is None


@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=VARINT_MAX + 1),
    )
)
def test_out_of_range_raises(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


@pytest.mark.parametrize("value", [-1, 2**62, 2**64])
def test_out_of_range_edges(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)
