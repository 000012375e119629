"""The SIP <-> RIPP mapping tables (protocol §21), as data and pure functions.

Signalling codes, header fields and media frames: everything the gateway decides without
I/O. ``docs/gateway.md`` prints these tables; the tests check them entry by entry.
"""

from __future__ import annotations

import re

import attrs
import numpy as np

from ripp_audio import Decoder, Encoder, decoder_for, encoder_for, resample
from ripp_core import Codec, MediaFrame

from ._message import canonical_name
from ._rtp import (
    END_REPEATS,
    FrameAssembler,
    FrameOut,
    RtpPacket,
    RtpSender,
    SkipOut,
    event_is_end,
    parse_rtp,
    scale_event_duration,
)
from ._rtp_clock import Arrival, Placement, RtpTimeline, Verdict
from ._sdp import Negotiated

#: SIP fields that belong to one hop (protocol §4.11): never copied to RIPP or from it.
HOP_BY_HOP = frozenset(
    name.lower()
    for name in (
        "Via", "Route", "Record-Route", "Contact", "Max-Forwards", "CSeq", "Content-Length",
        "Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language",
        "Supported", "Require", "Proxy-Require", "Unsupported", "Allow", "Accept",
        "Accept-Encoding", "Accept-Language", "Session-Expires", "Min-SE", "Authorization",
        "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate", "Expires",
        "User-Agent", "Server", "Timestamp", "Retry-After", "Warning", "RSeq", "RAck",
        "Allow-Events", "Event",
    )
)
#: Fields the RIPP request carries in their own right (To, From, Identity) or that belong
#: to the RIPP hop (protocol §4.11); they are not copied as extra fields.
RIPP_OWN = frozenset({"to", "from", "identity", "authorization", "content-type",
                      "ripp-version", "ripp-reestablish"})
#: SIP -> RIPP only: Call-ID names the SIP dialog; RIPP carries it as information, but the
#: SIP leg the gateway creates toward a trunk is a new dialog with its own Call-ID.
NOT_TO_SIP = frozenset({"call-id"})
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def field_value_is_safe(value: str) -> bool:
    """True when ``value`` can be an HTTP/3 field value and a SIP header value as is.

    aioquic closes the whole QUIC connection (every call on it) on some malformed values,
    e.g. control characters or surrounding whitespace; on SIP, CR or LF would inject
    header fields. Such values are never copied across.
    """
    return not _UNSAFE.search(value) and value == value.strip(" \t")


def sip_to_ripp_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """End-to-end SIP fields of an INVITE, as RIPP request fields (lower-case names, SIP
    order, one HTTP field per SIP field). Unsafe values (see :func:`field_value_is_safe`)
    are left out."""
    out = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in RIPP_OWN:
            continue
        value = value.strip(" \t")  # values are single lines already (unfolded)
        if field_value_is_safe(value):
            out.append((lowered, value))
    return tuple(out)


def ripp_to_sip_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """End-to-end fields of a RIPP creation request, as SIP fields for the INVITE."""
    out = []
    for name, value in headers:
        lowered = name.lower()
        if (lowered in HOP_BY_HOP or lowered in RIPP_OWN or lowered in NOT_TO_SIP
                or lowered.startswith(":") or not _TOKEN_NAME.match(name)
                or not field_value_is_safe(value)):
            continue
        canonical = canonical_name(lowered)
        if canonical == lowered:
            canonical = "-".join(part.capitalize() for part in lowered.split("-"))
        out.append((canonical, value))
    return tuple(out)


#: RIPP terminate codes that are not SIP failures, and what an unanswered INVITE gets.
_NOT_A_FAILURE = {200: (480, "Temporarily Unavailable")}


def sip_final_for_termination(code: int, reason: str) -> tuple[int, str]:
    """The final response to an unanswered INVITE when the RIPP call ends (§21.1).

    RIPP terminate codes are SIP codes already: 3xx-6xx pass unchanged; anything else
    (a 200 "Normal" before answer, a 1xx) becomes 480 Temporarily Unavailable.
    """
    if 300 <= code <= 699:
        return code, reason
    return _NOT_A_FAILURE.get(code, (480, "Temporarily Unavailable"))


def termination_for_sip_final(status: int, reason: str) -> tuple[int, str]:
    """The RIPP terminate code for a SIP final failure (§21.2): the same code."""
    if not 300 <= status <= 699:
        raise ValueError(f"{status} is not a SIP failure")
    return status, reason or "Failed"


def reason_header(code: int, text: str) -> str:
    """An RFC 3326 Reason value for a BYE caused by RIPP terminate ``code``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'SIP;cause={code};text="{escaped}"'


_REASON = re.compile(r'^\s*SIP\s*;(?:.*?;)?\s*cause\s*=\s*(\d{3})(?:.*?text\s*=\s*"([^"]*)")?',
                     re.I)


def termination_for_bye(reason: str | None) -> tuple[int, str]:
    """The RIPP terminate code for a SIP BYE: its Reason header's cause, else 200."""
    if reason:
        match = _REASON.match(reason)
        if match:
            return int(match.group(1)), match.group(2) or "Normal"
    return 200, "Normal"


def _clock_rate(codec: Codec) -> int:
    return 48000 if codec is Codec.OPUS else 8000


#: Default largest RTP timestamp jump taken as loss or silence suppression (seconds);
#: beyond it a jump is a new timeline, confirmed by the next packet (``_rtp_clock``).
RTP_MAX_GAP = 30.0


@attrs.define
class MediaBridge:
    """RTP <-> RIPP frames for one call (protocol §21.3), with transcoding when the RIPP
    peer sends an audio codec the SIP side did not negotiate.

    RTP -> RIPP follows the RTP timestamps (:class:`~ripp_sip._rtp_clock.RtpTimeline`):
    the output says what media time to skip (:class:`SkipOut`) before which frame, so
    RIPP timestamps carry RTP's timing across loss and silence suppression.
    """

    negotiated: Negotiated
    sender: RtpSender
    assembler: FrameAssembler = attrs.Factory(FrameAssembler)
    max_gap: float = RTP_MAX_GAP
    """Largest RTP timestamp jump (seconds) skipped as loss or silence; keep it within
    the RIPP leg's ``media_skip_max``. Beyond it: a new timeline, MARKER, no skip."""
    rtp_received: int = 0
    rtp_dropped: int = 0
    rtp_late_placed: int = 0
    """Late packets that still fitted the assembler's incomplete frame."""
    remote_ssrc: int | None = None
    transcoded: int = 0
    timeline: RtpTimeline | None = None
    """The received stream's clock mapping (None until the first packet)."""
    timeline_rate: int = 8000
    """Clock rate of ``timeline``'s units."""
    _event_end_sent: bool = False
    _decoders: dict[Codec, Decoder] = attrs.Factory(dict)
    _encoders: dict[tuple[Codec, float], Encoder] = attrs.Factory(dict)

    def update(self, negotiated: Negotiated) -> None:
        """A new offer/answer (re-INVITE, hold): RTP state carries on unchanged."""
        self.negotiated = negotiated
        self.assembler.ptime = negotiated.ptime / 1000

    # --------------------------------------------------------------- RTP -> RIPP
    def frames_from_rtp(self, data: bytes) -> list[FrameOut | SkipOut]:
        """The RIPP frames for one received RTP datagram, with the media time to skip
        before them (none for unknown payloads, late, held or repeated packets).

        Raises :class:`~ripp_sip.RtpError` for a datagram that is not RTP.
        """
        packet = parse_rtp(data)
        fmt = self.negotiated.format_for(packet.payload_type)
        if fmt is None:
            self.rtp_dropped += 1
            return []
        self.rtp_received += 1
        payload = packet.payload
        event = fmt.codec is Codec.TELEPHONE_EVENT
        if event and fmt.clock_rate == 48000:
            payload = scale_event_duration(payload, 1 / 6)
        timeline = self._timeline_for(event, fmt.clock_rate)
        rate = self.timeline_rate
        frame_units = round(self.assembler.ptime * rate)
        if fmt.codec in (Codec.PCMU, Codec.PCMA):
            units = extent = len(payload) * rate // 8000
        elif event:
            # The event's duration so far, in 8 kHz units (§10.4), on the stream's clock.
            units = frame_units
            extent = (int.from_bytes(payload[2:4], "big") * rate // 8000
                      if len(payload) == 4 else 0)
        else:
            units = extent = round(self.assembler.duration_of(fmt.codec, payload) * rate)
        arrival = Arrival(packet.ssrc, packet.sequence, packet.timestamp, fmt.codec, payload,
                          packet.marker, units, extent)
        out: list[FrameOut | SkipOut] = []
        for placement in timeline.receive(arrival):
            out += self._output(timeline, placement, rate)
        self.remote_ssrc = timeline.ssrc
        return out

    def _timeline_for(self, event: bool, clock_rate: int) -> RtpTimeline:
        timeline = self.timeline
        if timeline is not None and (event or clock_rate == self.timeline_rate):
            return timeline
        # First packet, or an audio codec on another clock: a new timeline (MARKER on its
        # first frame); counters carry on.
        fresh = RtpTimeline(max_gap=round(self.max_gap * clock_rate))
        if timeline is not None:
            fresh.late, fresh.repeats, fresh.rejected = (timeline.late, timeline.repeats,
                                                        timeline.rejected)
            fresh.reanchored = timeline.reanchored + 1
            fresh.skipped = timeline.skipped * clock_rate // self.timeline_rate
        self.timeline, self.timeline_rate = fresh, clock_rate
        return fresh

    def _output(self, timeline: RtpTimeline, placement: Placement,
                rate: int) -> list[FrameOut | SkipOut]:
        arrival = placement.arrival
        if placement.verdict is Verdict.PLACE:
            gap_out = self.assembler.fill(placement.gap, rate) if rate == 8000 else (
                [SkipOut(placement.gap / rate)] if placement.gap else [])
            return gap_out + self.assembler.push(arrival.codec, arrival.payload,
                                                 arrival.marker or placement.anchor)
        if placement.verdict is Verdict.LATE and self.assembler.pending and rate == 8000:
            # The incomplete frame spans [placed_end - pending, placed_end): a late packet
            # inside it takes its place there (over the silence a gap left).
            offset = placement.start - (timeline.placed_end - self.assembler.pending)
            if self.assembler.place(offset, arrival.codec, arrival.payload):
                self.rtp_late_placed += 1
        return []

    # --------------------------------------------------------------- RIPP -> RTP
    def rtp_for_frame(self, frame: MediaFrame, now: float) -> list[bytes]:
        """The RTP datagrams for one RIPP frame: copied, or transcoded if need be."""
        n = self.negotiated
        codec = frame.codec
        if codec is Codec.TELEPHONE_EVENT:
            pt = n.payload_type_for(codec)
            if pt is None:
                return []
            fmt = n.format_for(pt)
            payload = frame.payload
            if fmt is not None and fmt.clock_rate == 48000:
                payload = scale_event_duration(payload, 6)
            packet = self.sender.packet(pt, payload, clock_rate=8000, duration=frame.duration,
                                        now=now, marker=frame.marker, event=True)
            if frame.marker:
                self._event_end_sent = False
            if event_is_end(frame.payload) and not self._event_end_sent:
                self._event_end_sent = True
                # RFC 4733 §2.5.1.4: the End packet goes out three times, each with its
                # own sequence number and the event's timestamp.
                out = [packet.to_bytes()]
                for _ in range(END_REPEATS - 1):
                    out.append(attrs.evolve(packet, sequence=self.sender.sequence,
                                            marker=False).to_bytes())
                    self.sender.sequence = (self.sender.sequence + 1) & 0xFFFF
                return out
            return [packet.to_bytes()]
        if codec is Codec.CN:
            pt = n.payload_type_for(codec)
            if pt is None:
                return []
            return [self._packet(pt, frame.payload, 8000, frame, now).to_bytes()]
        pt = n.payload_type_for(codec)
        if pt is not None:  # the SIP side negotiated this codec: copy the payload
            return [self._packet(pt, frame.payload, _clock_rate(codec), frame, now).to_bytes()]
        target = n.audio[0]
        converted = self._transcode(frame, target.codec)
        if converted is None:
            return []
        self.transcoded += 1
        return [self._packet(target.payload_type, converted, _clock_rate(target.codec), frame,
                             now).to_bytes()]

    def _packet(self, pt: int, payload: bytes, rate: int, frame: MediaFrame,
                now: float) -> RtpPacket:
        return self.sender.packet(pt, payload, clock_rate=rate, duration=frame.duration,
                                  now=now, marker=frame.marker)

    def _transcode(self, frame: MediaFrame, target: Codec) -> bytes | None:
        decoder = self._decoders.get(frame.codec)
        if decoder is None:
            decoder = self._decoders[frame.codec] = decoder_for(frame.codec)
        key = (target, frame.duration)
        encoder = self._encoders.get(key)
        if encoder is None:
            try:
                encoder = self._encoders[key] = encoder_for(target, frame.duration)
            except ValueError:
                return None  # a duration the target codec cannot carry
        pcm = decoder.decode(frame.payload)
        if decoder.output_rate != encoder.input_rate:
            pcm = resample(pcm, decoder.output_rate, encoder.input_rate)
        step = encoder.samples_per_frame
        if len(pcm) < step:
            pcm = np.concatenate([pcm, np.zeros(step - len(pcm), dtype=np.int16)])
        return encoder.encode(pcm[:step])
