"""RTP and RTCP packets (RFC 3550), and the RTP <-> RIPP media frame mapping (protocol §21.3).

:class:`RtpSender` owns the SSRC, sequence number and timestamp of the RTP stream the
gateway sends. It lives with the SIP leg, not with the RIPP call, so a RIPP move or
re-establishment changes nothing the SIP peer can see: SSRC, sequence and timestamp run on.
:class:`FrameAssembler` turns received RTP packets into frames RIPP allows, re-packetising
G.711 when the SIP side uses a duration RIPP does not (e.g. 5 ms).
"""

from __future__ import annotations

import struct

import attrs

from ripp_core import ALLOWED_DURATION_UNITS, Codec, ReceiverStats

from ._errors import RtpError

RTP_VERSION = 2
RTCP_SR, RTCP_RR = 200, 201
#: RFC 4733 §2.5.1.4: an End packet is sent three times.
END_REPEATS = 3
#: G.711 bytes per 10 ms at 8 kHz: RIPP's duration step for G.711 (§10.2).
G711_BYTES_PER_10MS = 80
_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


@attrs.frozen
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1). CSRCs and header extensions are not kept."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def to_bytes(self) -> bytes:
        """The wire form (12-byte header, no padding, CSRCs or extension)."""
        first = RTP_VERSION << 6
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        return struct.pack("!BBHII", first, second, self.sequence & 0xFFFF,
                           self.timestamp & 0xFFFFFFFF, self.ssrc) + self.payload


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet, skipping CSRCs, header extension and padding."""
    if len(data) < 12:
        raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its header")
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}")
    offset = 12 + 4 * (first & 0x0F)
    end = len(data)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            raise RtpError("truncated RTP header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    if first & 0x20:  # padding: the last octet counts the padding octets
        if end == 0 or data[-1] == 0:
            raise RtpError("bad RTP padding")
        end -= data[-1]
    if offset > end:
        raise RtpError("RTP header runs past the packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:end]),
                     bool(second & 0x80))


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 192-223 share the second octet's range with no RTP PT
    we use, so a muxed port can tell them apart."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@attrs.define
class RtpSender:
    """Sequence and timestamp state of the RTP stream we send (RFC 3550 §5.1, RFC 4733)."""

    ssrc: int
    sequence: int
    timestamp: int
    packets: int = 0
    octets: int = 0
    _last_end: float | None = None  # media time the last packet ended, on our clock
    _event_timestamp: int | None = None  # RTP timestamp of the telephone event in progress

    def packet(self, payload_type: int, payload: bytes, *, clock_rate: int, duration: float,
               now: float, marker: bool = False, event: bool = False) -> RtpPacket:
        """The next packet. A MARKER after a pause re-aligns the timestamp with ``now``
        (protocol §21.3); all packets of one telephone event share the timestamp of its
        first packet (RFC 4733 §2.5.1.1)."""
        if marker and self._last_end is not None and now > self._last_end:
            self.timestamp += round((now - self._last_end) * clock_rate)
            self._last_end = now
        if event:
            # Every packet of an event carries the timestamp of its first (MARKER) packet,
            # including repeated End packets and any that arrive after an audio packet.
            if marker or self._event_timestamp is None:
                self._event_timestamp = self.timestamp
            stamp = self._event_timestamp
        else:
            stamp = self.timestamp
        packet = RtpPacket(payload_type, self.sequence, stamp & 0xFFFFFFFF, self.ssrc,
                           payload, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + round(duration * clock_rate)) & 0xFFFFFFFF
        self._last_end = (self._last_end if self._last_end is not None else now) + duration
        self.packets += 1
        self.octets += len(payload)
        return packet



@attrs.frozen
class FrameOut:
    """A RIPP frame to send, built from RTP."""

    codec: Codec
    duration: float
    payload: bytes
    marker: bool


@attrs.frozen
class SkipOut:
    """Media time to skip on the RIPP clock before the next frame (``skip_audio``)."""

    seconds: float


#: What a G.711 decoder plays as silence, to fill a gap inside a frame being re-cut.
G711_SILENCE = {Codec.PCMU: 0xFF, Codec.PCMA: 0xD5}


@attrs.define
class FrameAssembler:
    """RTP packets -> RIPP frames, one for one where RIPP allows the duration.

    G.711 packets of a duration RIPP does not allow (not a multiple of 10 ms, or above
    60 ms) are gathered and re-cut into 20 ms frames. Its output is ordered: frames and
    the media time to skip between them (:class:`SkipOut`), so that audio keeps its RTP
    timing: a gap inside the incomplete frame is filled with silence (skipping there
    would shift the audio already gathered), and an incomplete frame dropped by a codec
    change becomes a skip.
    """

    ptime: float = 0.02
    _pending: bytearray = attrs.Factory(bytearray)
    _pending_codec: Codec | None = None
    _pending_marker: bool = False

    @property
    def pending(self) -> int:
        """Samples (8 kHz) gathered toward the next re-cut frame, not sent yet."""
        return len(self._pending)

    def push(self, codec: Codec, payload: bytes, marker: bool) -> list[FrameOut | SkipOut]:
        """Frames for one received packet's payload."""
        if codec in (Codec.PCMU, Codec.PCMA):
            size = len(payload)
            if (not self._pending and size % G711_BYTES_PER_10MS == 0
                    and 0 < size <= 6 * G711_BYTES_PER_10MS):
                return [FrameOut(codec, size / 8000, payload, marker)]
            out: list[FrameOut | SkipOut] = []
            if self._pending_codec is not codec:
                out += self._discard()
                self._pending_marker = marker
            self._pending_codec = codec
            self._pending += payload
            return out + self._cut()
        return [*self._discard(), FrameOut(codec, self.duration_of(codec, payload), payload,
                                           marker)]

    def duration_of(self, codec: Codec, payload: bytes) -> float:
        """The RIPP frame duration of a non-G.711 packet: an Opus packet's own (its TOC
        byte) when RIPP allows it, else the negotiated ptime (CN, telephone-event, and
        Opus packets RIPP cannot carry as they are, e.g. 120 ms)."""
        if codec is Codec.OPUS:
            seconds = opus_duration(payload)
            if seconds is not None and round(seconds / 0.0005) in ALLOWED_DURATION_UNITS[codec]:
                return seconds
        return self.ptime

    def fill(self, gap: int, clock_rate: int) -> list[FrameOut | SkipOut]:
        """Output for ``gap`` RTP units of missed media before the next packet."""
        if gap <= 0:
            return []
        out: list[FrameOut | SkipOut] = []
        codec = self._pending_codec
        if self._pending and codec is not None:
            room = 2 * G711_BYTES_PER_10MS - len(self._pending)
            filled = min(gap, room)
            self._pending += bytes([G711_SILENCE[codec]]) * filled
            gap -= filled
            out += self._cut()
        if gap:
            out.append(SkipOut(gap / clock_rate))
        return out

    def place(self, offset: int, codec: Codec, payload: bytes) -> bool:
        """Write a late packet into the incomplete frame, ``offset`` samples from its
        start, if it fits there entirely (True); else leave it (False)."""
        if codec is not self._pending_codec or offset < 0 or offset + len(payload) > len(
                self._pending):
            return False
        self._pending[offset:offset + len(payload)] = payload
        return True

    def _cut(self) -> list[FrameOut | SkipOut]:
        out: list[FrameOut | SkipOut] = []
        chunk = 2 * G711_BYTES_PER_10MS
        codec = self._pending_codec
        assert codec is not None
        while len(self._pending) >= chunk:
            out.append(FrameOut(codec, 0.02, bytes(self._pending[:chunk]), self._pending_marker))
            self._pending_marker = False
            del self._pending[:chunk]
        return out

    def _discard(self) -> list[FrameOut | SkipOut]:
        # The gathered samples are not sent, but their time is on the RIPP clock already.
        if not self._pending:
            return []
        seconds = len(self._pending) / 8000
        self._pending.clear()
        self._pending_codec = None
        return [SkipOut(seconds)]


#: Opus frame sizes by TOC configuration (RFC 6716 §3.1, Table 2), in ms: SILK 0-11,
#: Hybrid 12-15, CELT 16-31.
_OPUS_FRAME_MS = (10, 20, 40, 60) * 3 + (10, 20) * 2 + (2.5, 5, 10, 20) * 4


def opus_duration(payload: bytes) -> float | None:
    """An Opus packet's duration in seconds from its TOC byte (RFC 6716 §3.1), or None
    for an empty or malformed packet."""
    if not payload:
        return None
    toc = payload[0]
    code = toc & 0x03
    if code == 3:
        if len(payload) < 2:
            return None
        frames = payload[1] & 0x3F
    else:
        frames = 1 if code == 0 else 2
    return frames * _OPUS_FRAME_MS[toc >> 3] / 1000 or None


def scale_event_duration(payload: bytes, factor: float) -> bytes:
    """Scale an RFC 4733 payload's duration (for ``telephone-event/48000``, §10.4)."""
    if len(payload) != 4:
        raise RtpError("telephone-event payload must be 4 bytes")
    event, flags, duration = struct.unpack("!BBH", payload)
    return struct.pack("!BBH", event, flags, min(0xFFFF, round(duration * factor)))


def event_is_end(payload: bytes) -> bool:
    """True when an RFC 4733 payload has its E bit set."""
    return len(payload) == 4 and bool(payload[1] & 0x80)


# --------------------------------------------------------------------------- RTCP


@attrs.frozen
class ReportBlock:
    """An RTCP reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int = 0
    delay_since_last_sr: int = 0

    def to_bytes(self) -> bytes:
        """The 24-byte wire form."""
        lost = max(-(2**23), min(2**23 - 1, self.cumulative_lost)) & 0xFFFFFF
        return struct.pack("!IBBHIIII", self.ssrc, self.fraction_lost & 0xFF, lost >> 16,
                           lost & 0xFFFF, self.highest_sequence & 0xFFFFFFFF,
                           self.jitter & 0xFFFFFFFF, self.last_sr, self.delay_since_last_sr)


def report_from_stats(source_ssrc: int, stats: ReceiverStats, previous: ReceiverStats | None,
                      clock_rate: int = 8000) -> ReportBlock:
    """A report block describing the RIPP leg's reception, from RIPP's ack statistics.

    RIPP needs no RTCP because every frame is acknowledged (R7); these are the same
    figures, restated for the SIP side: loss since the last report as a fraction of 256,
    cumulative loss, the highest sequence number and the RFC 3550 jitter in timestamp
    units of ``clock_rate``.
    """
    expected = stats.frames_received + stats.lost
    fraction = 0
    if previous is not None:
        interval_expected = expected - (previous.frames_received + previous.lost)
        interval_lost = stats.lost - previous.lost
        if interval_expected > 0 and interval_lost > 0:
            fraction = min(255, interval_lost * 256 // interval_expected)
    highest = max(0, stats.highest_sequence if stats.highest_sequence is not None else 0)
    return ReportBlock(source_ssrc, fraction, stats.lost, highest,
                       round((stats.jitter or 0.0) * clock_rate))


def build_sender_report(ssrc: int, *, wallclock: float, rtp_timestamp: int, packets: int,
                        octets: int, blocks: tuple[ReportBlock, ...] = ()) -> bytes:
    """An RTCP SR (RFC 3550 §6.4.1); ``wallclock`` is Unix time in seconds."""
    ntp = wallclock + _NTP_EPOCH_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * 2**32) & 0xFFFFFFFF
    body = struct.pack("!IIIIII", ssrc, seconds & 0xFFFFFFFF, fraction,
                       rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    body += b"".join(block.to_bytes() for block in blocks)
    return _rtcp_header(RTCP_SR, len(blocks), body) + body


def build_receiver_report(ssrc: int, blocks: tuple[ReportBlock, ...]) -> bytes:
    """An RTCP RR (RFC 3550 §6.4.2)."""
    body = struct.pack("!I", ssrc) + b"".join(block.to_bytes() for block in blocks)
    return _rtcp_header(RTCP_RR, len(blocks), body) + body


def _rtcp_header(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise RtpError("an RTCP packet carries at most 31 report blocks")
    length = (4 + len(body)) // 4 - 1  # in 32-bit words minus one (RFC 3550 §6.4.1)
    return struct.pack("!BBH", (RTP_VERSION << 6) | count, packet_type, length)


@attrs.frozen
class RtcpReport:
    """A parsed SR or RR: who sent it, sender info (SR only) and the report blocks."""

    packet_type: int
    ssrc: int
    packets: int | None
    octets: int | None
    blocks: tuple[ReportBlock, ...]


def parse_rtcp(data: bytes) -> RtcpReport:
    """Parse the first packet of a compound RTCP packet, if it is an SR or RR."""
    if len(data) < 8:
        raise RtpError("RTCP packet too short")
    first, packet_type, length = struct.unpack_from("!BBH", data)
    if first >> 6 != RTP_VERSION or packet_type not in (RTCP_SR, RTCP_RR):
        raise RtpError(f"not an SR/RR (type {packet_type})")
    if len(data) < 4 * (length + 1):
        raise RtpError("truncated RTCP packet")
    (ssrc,) = struct.unpack_from("!I", data, 4)
    offset, packets, octets = 8, None, None
    if packet_type == RTCP_SR:
        _, _, _, packets, octets = struct.unpack_from("!IIIII", data, 8)
        offset = 28
    blocks = []
    for _ in range(first & 0x1F):
        ssrc_b, fraction, hi, lo, highest, jitter, lsr, dlsr = struct.unpack_from(
            "!IBBHIIII", data, offset)
        lost = (hi << 16) | lo
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc_b, fraction, lost, highest, jitter, lsr, dlsr))
        offset += 24
    return RtcpReport(packet_type, ssrc, packets, octets, tuple(blocks))
