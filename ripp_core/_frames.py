"""The RIPP frame layer carried inside HTTP request and response bodies.

A body is a sequence of frames ``Type (i) | Length (i) | Payload``; the integers are QUIC
variable-length integers. HTTP DATA frame boundaries carry no meaning (a proxy may split
or join them), so :class:`FrameDecoder` accepts bytes split at any point.
"""

from __future__ import annotations

import enum
import struct

import attrs

from ._codecs import DURATION_UNIT, Codec, codec_from_id, validate_media
from ._errors import BufferOverflow, FrameError, FrameTooLarge
from ._varint import VARINT_MAX, decode_varint, decode_varint_exact, encode_varint


class FrameType(enum.IntEnum):
    """RIPP frame types."""

    SIGNAL = 0x00
    """A signaling message (UTF-8 JSON); only on the signaling request."""
    MEDIA = 0x01
    """One media frame; only on media requests."""
    ACK = 0x02
    """Acknowledges one MEDIA frame; only on media requests."""


#: MEDIA flag: first frame of a talkspurt.
FLAG_MARKER = 0x01
#: MEDIA flag: the frame is a re-send (after a stream closed or the call migrated).
FLAG_RESENT = 0x02

_MEDIA_HEADER = struct.Struct("!IIBBB")
MEDIA_HEADER_SIZE = _MEDIA_HEADER.size  # 11 bytes
_SEQUENCE = struct.Struct("!I")
SEQUENCE_MODULUS = 1 << 32
TIMESTAMP_MODULUS = 1 << 32


@attrs.frozen
class SignalFrame:
    """A SIGNAL frame: one encoded signaling message."""

    payload: bytes


@attrs.frozen
class MediaFrame:
    """A MEDIA frame: one unit of audio (or a telephone event, or comfort noise).

    ``duration_units`` is the frame duration in 0.5 ms units, as on the wire; ``timestamp``
    counts 48 kHz ticks modulo 2**32. Construction validates codec, duration and payload
    size, so an invalid frame cannot exist.
    """

    sequence: int
    timestamp: int
    codec: Codec = attrs.field(converter=codec_from_id)
    duration_units: int
    payload: bytes
    flags: int = 0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.sequence < SEQUENCE_MODULUS:
            raise FrameError(f"sequence {self.sequence} out of range")
        if not 0 <= self.timestamp < TIMESTAMP_MODULUS:
            raise FrameError(f"timestamp {self.timestamp} out of range")
        if not 0 <= self.flags <= 0xFF:
            raise FrameError(f"flags {self.flags} out of range")
        validate_media(self.codec, self.duration_units, self.payload)

    @property
    def duration(self) -> float:
        """Frame duration in seconds."""
        return self.duration_units * DURATION_UNIT

    @property
    def marker(self) -> bool:
        """True on the first frame of a talkspurt."""
        return bool(self.flags & FLAG_MARKER)

    @property
    def resent(self) -> bool:
        """True when this frame is a re-send."""
        return bool(self.flags & FLAG_RESENT)


@attrs.frozen
class AckFrame:
    """An ACK frame: the receiver got MEDIA frame ``sequence``.

    ``ack_delay_us`` is the time in microseconds between receipt and sending the ack, which
    the sender subtracts from its RTT sample.
    """

    sequence: int
    ack_delay_us: int = 0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.sequence < SEQUENCE_MODULUS:
            raise FrameError(f"ack sequence {self.sequence} out of range")
        if not 0 <= self.ack_delay_us <= VARINT_MAX:
            raise FrameError(f"ack delay {self.ack_delay_us} out of range")


Frame = SignalFrame | MediaFrame | AckFrame


def _frame_header(frame_type: int, length: int) -> bytes:
    return encode_varint(frame_type) + encode_varint(length)


def encode_signal(payload: bytes) -> bytes:
    """Encode a SIGNAL frame around an already-encoded message."""
    return _frame_header(FrameType.SIGNAL, len(payload)) + payload


def encode_media(frame: MediaFrame) -> bytes:
    """Encode a MEDIA frame."""
    body = (
        _MEDIA_HEADER.pack(
            frame.sequence, frame.timestamp, int(frame.codec), frame.duration_units, frame.flags
        )
        + frame.payload
    )
    return _frame_header(FrameType.MEDIA, len(body)) + body


def encode_ack(frame: AckFrame) -> bytes:
    """Encode an ACK frame."""
    body = _SEQUENCE.pack(frame.sequence) + encode_varint(frame.ack_delay_us)
    return _frame_header(FrameType.ACK, len(body)) + body


def encode_frame(frame: Frame) -> bytes:
    """Encode any RIPP frame."""
    if isinstance(frame, MediaFrame):
        return encode_media(frame)
    if isinstance(frame, AckFrame):
        return encode_ack(frame)
    return encode_signal(frame.payload)


def decode_media_payload(payload: bytes) -> MediaFrame:
    """Decode the payload of a MEDIA frame (validating codec, duration and size)."""
    if len(payload) < MEDIA_HEADER_SIZE:
        raise FrameError(f"MEDIA frame of {len(payload)} bytes is shorter than its header")
    sequence, timestamp, codec_id, duration_units, flags = _MEDIA_HEADER.unpack_from(payload)
    return MediaFrame(
        sequence=sequence,
        timestamp=timestamp,
        codec=codec_from_id(codec_id),
        duration_units=duration_units,
        flags=flags,
        payload=bytes(payload[MEDIA_HEADER_SIZE:]),
    )


def decode_ack_payload(payload: bytes) -> AckFrame:
    """Decode the payload of an ACK frame."""
    if len(payload) < _SEQUENCE.size + 1:
        raise FrameError(f"ACK frame of {len(payload)} bytes is too short")
    (sequence,) = _SEQUENCE.unpack_from(payload)
    delay, end = decode_varint_exact(payload, _SEQUENCE.size)
    if end != len(payload):
        raise FrameError("ACK frame has trailing bytes")
    return AckFrame(sequence=sequence, ack_delay_us=delay)


class FrameDecoder:
    """Incremental decoder for one body (one direction of one stream).

    Feed it bytes as they arrive, split anywhere; it returns the complete frames. Frames of
    a known type that is not in ``allowed`` raise :class:`FrameError`; frames of an unknown
    type are skipped, so the protocol can grow new frame types. A frame longer than
    ``max_frame_size`` raises :class:`FrameTooLarge` as soon as its length is read, and a
    backlog over ``max_buffered`` raises :class:`BufferOverflow`.
    """

    def __init__(
        self,
        allowed: frozenset[FrameType],
        max_frame_size: int,
        max_buffered: int,
    ) -> None:
        self._allowed = allowed
        self._max_frame_size = max_frame_size
        self._max_buffered = max_buffered
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame it completes, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        offset = 0
        size = len(buffer)
        while offset < size:
            head = decode_varint(buffer, offset)
            if head is None:
                break
            frame_type, after_type = head
            length_result = decode_varint(buffer, after_type)
            if length_result is None:
                break
            length, start = length_result
            if length > self._max_frame_size:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self._max_frame_size}"
                )
            end = start + length
            if end > size:
                break
            offset = end
            if frame_type not in _KNOWN_TYPES:
                continue
            kind = FrameType(frame_type)
            if kind not in self._allowed:
                raise FrameError(f"{kind.name} frame is not allowed on this stream")
            payload = bytes(buffer[start:end])
            if kind is FrameType.MEDIA:
                frames.append(decode_media_payload(payload))
            elif kind is FrameType.ACK:
                frames.append(decode_ack_payload(payload))
            else:
                frames.append(SignalFrame(payload))
        if offset:
            del buffer[:offset]
        if len(buffer) > self._max_buffered:
            raise BufferOverflow(f"{len(buffer)} undecoded bytes buffered on one stream")
        return frames


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)

#: Frame types allowed on a signaling request or response body.
SIGNALING_FRAMES = frozenset({FrameType.SIGNAL})
#: Frame types allowed on a media request or response body.
MEDIA_FRAMES = frozenset({FrameType.MEDIA, FrameType.ACK})
