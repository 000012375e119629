"""The RIPP frame layer: encoding, incremental decoding under arbitrary chunking, and every
way a peer can send a bad body. Also the wire codes carried by the error classes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core import _errors as errors
from ripp_core._codecs import ALLOWED_DURATION_UNITS, Codec, duration_to_units
from ripp_core._errors import (
    BadDuration,
    BufferOverflow,
    FrameError,
    FrameTooLarge,
    RemoteProtocolError,
    UnknownCodec,
)
from ripp_core._frames import (
    FLAG_MARKER,
    FLAG_RESENT,
    MEDIA_FRAMES,
    MEDIA_HEADER_SIZE,
    SIGNALING_FRAMES,
    AckFrame,
    Frame,
    FrameDecoder,
    FrameType,
    MediaFrame,
    SignalFrame,
    decode_ack_payload,
    decode_media_payload,
    encode_frame,
)
from ripp_core._varint import encode_varint
from tests.strategies import (
    any_frames,
    chunkings,
    media_frames,
    media_stream_frames,
    signal_frames,
    unknown_frame_bytes,
)

MAX_FRAME = 1500
MAX_BUFFERED = 65536
ALL_FRAMES = frozenset(FrameType)


def media_decoder(max_frame: int = MAX_FRAME, max_buffered: int = MAX_BUFFERED) -> FrameDecoder:
    return FrameDecoder(MEDIA_FRAMES, max_frame, max_buffered)


def signal_decoder(max_frame: int = MAX_FRAME, max_buffered: int = MAX_BUFFERED) -> FrameDecoder:
    return FrameDecoder(SIGNALING_FRAMES, max_frame, max_buffered)


def raw_frame(frame_type: int, payload: bytes) -> bytes:
    return encode_varint(frame_type) + encode_varint(len(payload)) + payload


def media_payload(
    codec_id: int,
    duration_units: int,
    payload: bytes,
    sequence: int = 7,
    timestamp: int = 960,
    flags: int = 0,
) -> bytes:
    return struct.pack("!IIBBB", sequence, timestamp, codec_id, duration_units, flags) + payload


def pcmu(units: int = 40, **kwargs: int) -> MediaFrame:
    return MediaFrame(
        sequence=kwargs.get("sequence", 1),
        timestamp=kwargs.get("timestamp", 0),
        codec=Codec.PCMU,
        duration_units=units,
        payload=bytes(units * 4),
        flags=kwargs.get("flags", 0),
    )


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


# --- encoding -------------------------------------------------------------------------------


def test_media_frame_wire_layout() -> None:
    frame = MediaFrame(
        sequence=0x01020304,
        timestamp=0xA0B0C0D0,
        codec=Codec.OPUS,
        duration_units=40,
        payload=b"\xfc\xff",
        flags=FLAG_MARKER,
    )
    assert encode_frame(frame) == (
        b"\x01"  # type MEDIA
        + b"\x0d"  # length 13 = 11-byte header + 2
        + b"\x01\x02\x03\x04"
        + b"\xa0\xb0\xc0\xd0"
        + b"\x6f"  # Opus
        + b"\x28"  # 40 units = 20 ms
        + b"\x01"  # marker
        + b"\xfc\xff"
    )
    assert MEDIA_HEADER_SIZE == 11


def test_ack_frame_wire_layout() -> None:
    assert encode_frame(AckFrame(sequence=5, ack_delay_us=300)) == (
        b"\x02\x06" + b"\x00\x00\x00\x05" + b"\x41\x2c"
    )
    assert encode_frame(AckFrame(sequence=0)) == b"\x02\x05" + bytes(5)


def test_signal_frame_wire_layout() -> None:
    assert encode_frame(SignalFrame(b'{"type":"ringing"}')) == b"\x00\x12" + b'{"type":"ringing"}'
    assert encode_frame(SignalFrame(b"")) == b"\x00\x00"


def test_protocol_doc_pcmu_and_ack_examples() -> None:
    # docs/protocol.md section 9.3.
    media = bytes.fromhex("0140ab0000002a00009d80002801") + b"\xff" * 160
    frame = MediaFrame(
        sequence=42,
        timestamp=40320,
        codec=Codec.PCMU,
        duration_units=40,
        payload=b"\xff" * 160,
        flags=FLAG_MARKER,
    )
    assert len(media) == 174
    assert encode_frame(frame) == media
    ack = bytes.fromhex("02060000002a44e2")
    assert encode_frame(AckFrame(42, 1250)) == ack
    assert encode_frame(AckFrame(42)) == bytes.fromhex("02050000002a00")
    assert media_decoder().feed(media + ack) == [frame, AckFrame(42, 1250)]


def test_protocol_doc_comfort_noise_example() -> None:
    # docs/protocol.md section 10.5.
    wire = bytes.fromhex("010c000000fa0003a9800d280040")
    frame = MediaFrame(
        sequence=250, timestamp=240000, codec=Codec.CN, duration_units=40, payload=b"\x40"
    )
    assert encode_frame(frame) == wire
    assert media_decoder().feed(wire) == [frame]


def test_codec_identifiers_match_rtp_payload_types() -> None:
    assert {codec.name: int(codec) for codec in Codec} == {
        "PCMU": 0,
        "PCMA": 8,
        "CN": 13,
        "TELEPHONE_EVENT": 101,
        "OPUS": 111,
    }


@given(media_frames())
def test_media_payload_round_trip(frame: MediaFrame) -> None:
    encoded = encode_frame(frame)
    decoder = media_decoder()
    assert decoder.feed(encoded) == [frame]
    # The payload-level decoder agrees.
    assert decode_media_payload(encoded[-(MEDIA_HEADER_SIZE + len(frame.payload)) :]) == frame


@given(
    st.builds(AckFrame, sequence=st.integers(0, 2**32 - 1), ack_delay_us=st.integers(0, 2**62 - 1))
)
def test_ack_payload_round_trip(frame: AckFrame) -> None:
    encoded = encode_frame(frame)
    assert media_decoder().feed(encoded) == [frame]


# --- decoding under arbitrary chunking ---------------------------------------------------


def _encode_with_unknowns(items: list[Frame | bytes]) -> tuple[bytes, list[Frame]]:
    data = b"".join(item if isinstance(item, bytes) else encode_frame(item) for item in items)
    expected = [item for item in items if not isinstance(item, bytes)]
    return data, expected


@settings(max_examples=150)
@given(
    st.lists(st.one_of(media_stream_frames(), unknown_frame_bytes()), max_size=12),
    st.data(),
)
def test_media_decoder_any_chunking(items: list[Frame | bytes], data: st.DataObject) -> None:
    encoded, expected = _encode_with_unknowns(items)
    chunks = data.draw(chunkings(encoded))
    assert b"".join(chunks) == encoded
    decoder = media_decoder()
    assert feed_all(decoder, chunks) == expected
    assert decoder.buffered == 0


@settings(max_examples=100)
@given(
    st.lists(st.one_of(signal_frames(), unknown_frame_bytes()), max_size=8),
    st.data(),
)
def test_signal_decoder_any_chunking(items: list[Frame | bytes], data: st.DataObject) -> None:
    encoded, expected = _encode_with_unknowns(items)
    chunks = data.draw(chunkings(encoded))
    decoder = signal_decoder()
    assert feed_all(decoder, chunks) == expected
    assert decoder.buffered == 0


@settings(max_examples=150)
@given(st.lists(st.one_of(any_frames(), unknown_frame_bytes()), max_size=12), st.data())
def test_all_types_decoder_any_chunking(items: list[Frame | bytes], data: st.DataObject) -> None:
    encoded, expected = _encode_with_unknowns(items)
    chunks = data.draw(chunkings(encoded))
    decoder = FrameDecoder(ALL_FRAMES, MAX_FRAME, MAX_BUFFERED)
    assert feed_all(decoder, chunks) == expected
    assert decoder.buffered == 0


@given(st.lists(any_frames(), min_size=1, max_size=5))
def test_one_byte_at_a_time_yields_each_frame_on_its_last_byte(frames: list[Frame]) -> None:
    decoder = FrameDecoder(ALL_FRAMES, MAX_FRAME, MAX_BUFFERED)
    for frame in frames:
        encoded = encode_frame(frame)
        for index, byte in enumerate(encoded):
            got = decoder.feed(bytes([byte]))
            if index < len(encoded) - 1:
                assert got == []
                assert decoder.buffered == index + 1
            else:
                assert got == [frame]
                assert decoder.buffered == 0


def test_unknown_frame_types_are_skipped() -> None:
    frame = pcmu()
    data = (
        raw_frame(0x21, b"whatever")
        + encode_frame(frame)
        + raw_frame(0x21, b"")
        + raw_frame(0x3FFF, bytes(100))
        + encode_frame(AckFrame(1))
        + raw_frame(2**62 - 1, b"x")
    )
    assert media_decoder().feed(data) == [frame, AckFrame(1)]


def test_unknown_frame_waits_for_its_whole_payload() -> None:
    decoder = media_decoder()
    assert decoder.feed(encode_varint(0x21) + encode_varint(10) + b"abc") == []
    assert decoder.buffered == 5
    assert decoder.feed(bytes(7) + encode_frame(AckFrame(9))) == [AckFrame(9)]
    assert decoder.buffered == 0


def test_empty_feed_returns_nothing() -> None:
    decoder = media_decoder()
    assert decoder.feed(b"") == []
    assert decoder.buffered == 0


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(MEDIA_HEADER_SIZE))
def test_truncated_media_payload_is_frame_error(size: int) -> None:
    payload = media_payload(Codec.PCMU, 40, bytes(160))[:size]
    with pytest.raises(FrameError):
        media_decoder().feed(raw_frame(FrameType.MEDIA, payload))
    with pytest.raises(FrameError):
        decode_media_payload(payload)


@pytest.mark.parametrize("frame_type", [FrameType.MEDIA, FrameType.ACK, FrameType.SIGNAL, 0x21])
def test_oversized_length_raises_before_payload_arrives(frame_type: int) -> None:
    decoder = FrameDecoder(ALL_FRAMES, max_frame_size=100, max_buffered=MAX_BUFFERED)
    # Only the header arrives: type and a length of 101.
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(encode_varint(frame_type) + encode_varint(101))
    assert info.value.http_status == 413


def test_oversized_length_raises_when_length_completes_across_chunks() -> None:
    decoder = media_decoder(max_frame=100)
    header = encode_varint(FrameType.MEDIA) + encode_varint(5000)  # 2-byte length
    assert decoder.feed(header[:2]) == []  # length varint incomplete: nothing known yet
    with pytest.raises(FrameTooLarge):
        decoder.feed(header[2:])


def test_length_at_limit_is_accepted() -> None:
    frame = pcmu(units=40)  # payload 11 + 160 = 171 bytes
    decoder = media_decoder(max_frame=MEDIA_HEADER_SIZE + 160)
    assert decoder.feed(encode_frame(frame)) == [frame]
    with pytest.raises(FrameTooLarge):
        media_decoder(max_frame=MEDIA_HEADER_SIZE + 159).feed(encode_frame(frame))


def test_backlog_beyond_max_buffered_overflows() -> None:
    decoder = media_decoder(max_frame=1000, max_buffered=50)
    header = encode_varint(FrameType.MEDIA) + encode_varint(500)
    # Exactly max_buffered undecoded bytes is still fine ...
    assert decoder.feed(header + bytes(50 - len(header))) == []
    assert decoder.buffered == 50
    # ... one more is not.
    with pytest.raises(BufferOverflow) as info:
        decoder.feed(b"\x00")
    assert info.value.http_status == 413
    assert info.value.stream_error == errors.H3_EXCESSIVE_LOAD


def test_complete_frames_do_not_count_against_max_buffered() -> None:
    frame = pcmu(units=120)  # 491-byte payload, far above max_buffered
    decoder = media_decoder(max_frame=MAX_FRAME, max_buffered=16)
    assert decoder.feed(encode_frame(frame) * 3) == [frame, frame, frame]
    assert decoder.buffered == 0


def test_unknown_codec() -> None:
    with pytest.raises(UnknownCodec) as info:
        media_decoder().feed(raw_frame(FrameType.MEDIA, media_payload(0x42, 40, b"x")))
    assert info.value.http_status == 415
    assert isinstance(info.value, FrameError)


@pytest.mark.parametrize("codec", [Codec.PCMU, Codec.PCMA])
@pytest.mark.parametrize("delta", [-1, 1, -160])
def test_g711_payload_size_must_match_duration(codec: Codec, delta: int) -> None:
    payload = bytes(160 + delta)  # 20 ms needs exactly 160 bytes
    with pytest.raises(BadDuration):
        media_decoder().feed(raw_frame(FrameType.MEDIA, media_payload(codec, 40, payload)))
    with pytest.raises(BadDuration):
        MediaFrame(sequence=0, timestamp=0, codec=codec, duration_units=40, payload=payload)


@pytest.mark.parametrize(
    ("codec", "units"),
    [
        (Codec.PCMU, 30),  # 15 ms
        (Codec.OPUS, 30),  # 15 ms
        (Codec.PCMU, 5),  # 2.5 ms is Opus-only
        (Codec.PCMA, 10),  # 5 ms is Opus-only
        (Codec.CN, 5),
        (Codec.TELEPHONE_EVENT, 5),
        (Codec.OPUS, 0),
        (Codec.PCMU, 0),
        (Codec.OPUS, 140),  # 70 ms
        (Codec.PCMU, 255),
    ],
)
def test_illegal_durations(codec: Codec, units: int) -> None:
    size = units * 4 if codec in (Codec.PCMU, Codec.PCMA) else 4
    payload = bytes(size)
    with pytest.raises(BadDuration):
        media_decoder().feed(raw_frame(FrameType.MEDIA, media_payload(codec, units, payload)))
    with pytest.raises(BadDuration):
        MediaFrame(sequence=0, timestamp=0, codec=codec, duration_units=units, payload=payload)


@pytest.mark.parametrize("units", [5, 10, 20, 40, 60, 80, 100, 120])
def test_opus_durations_including_2_5_ms(units: int) -> None:
    frame = MediaFrame(
        sequence=0, timestamp=0, codec=Codec.OPUS, duration_units=units, payload=b"\x08"
    )
    assert media_decoder().feed(encode_frame(frame)) == [frame]
    assert frame.duration == pytest.approx(units * 0.0005)


def test_allowed_duration_table() -> None:
    ten_to_sixty = {duration_to_units(ms / 1000) for ms in (10, 20, 30, 40, 50, 60)}
    for codec in (Codec.PCMU, Codec.PCMA, Codec.CN, Codec.TELEPHONE_EVENT):
        assert ALLOWED_DURATION_UNITS[codec] == ten_to_sixty
    assert ALLOWED_DURATION_UNITS[Codec.OPUS] == ten_to_sixty | {5, 10}


def test_duration_to_units_rejects_non_multiples() -> None:
    assert duration_to_units(0.0025) == 5
    assert duration_to_units(0.02) == 40
    with pytest.raises(BadDuration):
        duration_to_units(0.0012)


@pytest.mark.parametrize("size", [0, 1, 3, 5, 8])
def test_telephone_event_payload_must_be_4_bytes(size: int) -> None:
    payload = bytes(size)
    with pytest.raises(BadDuration):
        media_decoder().feed(
            raw_frame(FrameType.MEDIA, media_payload(Codec.TELEPHONE_EVENT, 40, payload))
        )
    ok = MediaFrame(
        sequence=0, timestamp=0, codec=Codec.TELEPHONE_EVENT, duration_units=40, payload=bytes(4)
    )
    assert media_decoder().feed(encode_frame(ok)) == [ok]


@pytest.mark.parametrize("codec", [Codec.OPUS, Codec.CN])
def test_variable_rate_payload_must_not_be_empty(codec: Codec) -> None:
    with pytest.raises(BadDuration):
        media_decoder().feed(raw_frame(FrameType.MEDIA, media_payload(codec, 40, b"")))


def test_ack_with_trailing_bytes() -> None:
    body = struct.pack("!I", 3) + encode_varint(10) + b"\x00"
    with pytest.raises(FrameError):
        media_decoder().feed(raw_frame(FrameType.ACK, body))
    with pytest.raises(FrameError):
        decode_ack_payload(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x00\x00\x01",  # no delay varint at all
        b"\x00\x00\x00\x01\x40",  # 2-byte varint cut short
        b"\x00\x00\x00\x01\xc0\x00\x00",  # 8-byte varint cut short
    ],
)
def test_short_ack_is_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        media_decoder().feed(raw_frame(FrameType.ACK, body))


def test_signal_frame_on_media_decoder() -> None:
    with pytest.raises(FrameError):
        media_decoder().feed(encode_frame(SignalFrame(b'{"type":"pending"}')))


@pytest.mark.parametrize("frame", [pcmu(), AckFrame(1)])
def test_media_and_ack_on_signaling_decoder(frame: Frame) -> None:
    with pytest.raises(FrameError):
        signal_decoder().feed(encode_frame(frame))


def test_disallowed_frame_after_good_ones_in_separate_feeds() -> None:
    decoder = media_decoder()
    assert decoder.feed(encode_frame(AckFrame(1))) == [AckFrame(1)]
    with pytest.raises(FrameError):
        decoder.feed(encode_frame(SignalFrame(b"{}")))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sequence", -1),
        ("sequence", 2**32),
        ("timestamp", -1),
        ("timestamp", 2**32),
        ("flags", -1),
        ("flags", 0x100),
    ],
)
def test_media_frame_constructor_rejects_out_of_range(field: str, value: int) -> None:
    kwargs = {"sequence": 0, "timestamp": 0, "flags": 0, field: value}
    with pytest.raises(FrameError):
        MediaFrame(codec=Codec.PCMU, duration_units=40, payload=bytes(160), **kwargs)


def test_media_frame_constructor_accepts_range_edges() -> None:
    frame = MediaFrame(
        sequence=2**32 - 1,
        timestamp=2**32 - 1,
        codec=Codec.PCMU,
        duration_units=40,
        payload=bytes(160),
        flags=0xFF,
    )
    assert media_decoder().feed(encode_frame(frame)) == [frame]


def test_media_frame_flag_properties() -> None:
    assert not pcmu().marker and not pcmu().resent
    assert pcmu(flags=FLAG_MARKER).marker and not pcmu(flags=FLAG_MARKER).resent
    assert pcmu(flags=FLAG_RESENT).resent and not pcmu(flags=FLAG_RESENT).marker
    both = pcmu(flags=FLAG_MARKER | FLAG_RESENT)
    assert both.marker and both.resent
    assert pcmu(units=120).duration == pytest.approx(0.060)


def test_frame_errors_are_remote_protocol_errors() -> None:
    for cls in (FrameError, FrameTooLarge, UnknownCodec, BadDuration, BufferOverflow):
        assert issubclass(cls, RemoteProtocolError)
    for cls in (FrameTooLarge, UnknownCodec, BadDuration):
        assert issubclass(cls, FrameError)


# --- error wire codes -----------------------------------------------------------------------


def test_h3_error_code_values() -> None:
    # RFC 9114, section 8.1.
    assert errors.H3_NO_ERROR == 0x100
    assert errors.H3_GENERAL_PROTOCOL_ERROR == 0x101
    assert errors.H3_INTERNAL_ERROR == 0x102
    assert errors.H3_EXCESSIVE_LOAD == 0x107
    assert errors.H3_REQUEST_REJECTED == 0x10B
    assert errors.H3_REQUEST_CANCELLED == 0x10C
    assert errors.H3_MESSAGE_ERROR == 0x10E


@pytest.mark.parametrize(
    ("cls", "http_status", "stream_error", "sip_code"),
    [
        (errors.RippError, 400, 0x10E, 400),
        (errors.FrameError, 400, 0x10E, 400),
        (errors.FrameTooLarge, 413, 0x10E, 513),
        (errors.UnknownCodec, 415, 0x10E, 415),
        (errors.BadDuration, 400, 0x10E, 400),
        (errors.MessageError, 400, 0x10E, 400),
        (errors.StateError, 409, 0x10B, 409),
        (errors.LocalStateError, 409, 0x10B, 409),
        (errors.RemoteStateError, 409, 0x10B, 409),
        (errors.UnknownCall, 404, 0x10B, 481),
        (errors.NoSuchCall, 404, 0x10E, 481),
        (errors.BadRequest, 400, 0x10E, 400),
        (errors.MethodNotAllowed, 405, 0x10E, 405),
        (errors.UnsupportedMediaType, 415, 0x10E, 415),
        (errors.Unauthorized, 401, 0x10B, 401),
        (errors.Forbidden, 403, 0x10B, 403),
        (errors.IdentityRequired, 428, 0x10B, 428),
        (errors.InvalidIdentity, 403, 0x10B, 438),
        (errors.TooManyStreams, 429, 0x107, 503),
        (errors.TooManyCalls, 503, 0x107, 503),
        (errors.BufferOverflow, 413, 0x107, 513),
    ],
)
def test_error_wire_codes(
    cls: type[errors.RippError], http_status: int, stream_error: int, sip_code: int
) -> None:
    error = cls("boom")
    assert (error.http_status, error.stream_error, error.sip_code) == (
        http_status,
        stream_error,
        sip_code,
    )
    assert error.message == "boom"
    assert str(error) == "boom"
    assert isinstance(error, errors.RippError)


def test_error_sides() -> None:
    assert issubclass(errors.LocalStateError, errors.LocalProtocolError)
    assert issubclass(errors.RemoteStateError, errors.RemoteProtocolError)
    assert not issubclass(errors.LocalStateError, errors.RemoteProtocolError)
    assert not issubclass(errors.RemoteStateError, errors.LocalProtocolError)
    assert issubclass(errors.NoSuchCall, errors.LocalProtocolError)
    assert issubclass(errors.UnknownCall, errors.RemoteProtocolError)
