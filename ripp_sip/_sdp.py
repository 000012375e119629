"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for the gateway's audio leg.

The gateway offers and accepts PCMU, PCMA, Opus, telephone-event and CN: exactly the codecs
RIPP frames can carry (protocol §10.1), so RTP payloads map to frames by a table. Hold is
answered per RFC 3264 §6.1: ``sendonly`` is answered ``recvonly``, ``recvonly``
``sendonly``, ``inactive`` ``inactive``; an RFC 2543 hold (``c=0.0.0.0``) counts as
``sendonly``.
"""

from __future__ import annotations

import attrs

from ripp_core import Codec

from ._errors import NotAcceptable, SdpError

#: Payload types we use in offers; 0, 8 and 13 are static (RFC 3551), the others dynamic.
OFFER_PAYLOAD_TYPES = {Codec.PCMU: 0, Codec.PCMA: 8, Codec.OPUS: 111,
                       Codec.TELEPHONE_EVENT: 101, Codec.CN: 13}
#: encoding name (lower case) -> codec; the clock rate is checked separately.
ENCODINGS = {"pcmu": Codec.PCMU, "pcma": Codec.PCMA, "opus": Codec.OPUS,
             "telephone-event": Codec.TELEPHONE_EVENT, "cn": Codec.CN}
#: Static payload types of RFC 3551 that may appear without an rtpmap.
STATIC = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 13: ("CN", 8000, 1)}
RTPMAP_NAMES = {Codec.PCMU: "PCMU/8000", Codec.PCMA: "PCMA/8000", Codec.OPUS: "opus/48000/2",
                Codec.TELEPHONE_EVENT: "telephone-event/8000", Codec.CN: "CN/8000"}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: RFC 3264 §6.1: the direction to answer with, for each offered direction.
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                    "recvonly": "sendonly", "inactive": "inactive"}
AUDIO_CODECS = (Codec.PCMU, Codec.PCMA, Codec.OPUS)


@attrs.frozen
class MediaDescription:
    """One ``m=`` section with its ``c=`` and ``a=`` lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name`` ('' for a flag), or None."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def attribute_values(self, name: str) -> list[str]:
        """Every value of ``a=name``."""
        return [value or "" for key, value in self.attributes if key == name]

    @property
    def direction(self) -> str:
        """sendrecv, sendonly, recvonly or inactive (default sendrecv, RFC 4566 §6)."""
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return "sendrecv"


@attrs.frozen
class SessionDescription:
    """A whole SDP body."""

    origin: str
    session_name: str = "-"
    connection: str | None = None
    media: tuple[MediaDescription, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()

    def to_bytes(self) -> bytes:
        """The SDP text (CRLF line ends)."""
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.append("t=0 0")
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection is not None:
                lines.append(f"c={m.connection}")
            lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` (400) when it is not SDP."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    origin: str | None = None
    name, connection = "-", None
    session_attrs: list[tuple[str, str | None]] = []
    media: list[MediaDescription] = []
    current: dict[str, object] | None = None

    def close() -> None:
        if current is not None:
            media.append(MediaDescription(**current))  # type: ignore[arg-type]

    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            close()
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"bad m= line {value!r}")
            current = {"media": parts[0], "port": int(parts[1].split("/")[0]),
                       "proto": parts[2], "formats": tuple(parts[3:]),
                       "connection": None, "attributes": ()}
        elif kind == "a":
            key, colon, val = value.partition(":")
            item = (key, val if colon else None)
            if current is None:
                session_attrs.append(item)
            else:
                current["attributes"] = (*current["attributes"], item)  # type: ignore[misc]
        elif kind == "c":
            if current is None:
                connection = value
            else:
                current["connection"] = value
        elif kind == "o":
            origin = value
        elif kind == "s":
            name = value
    close()
    if origin is None:
        raise SdpError("SDP without an o= line")
    return SessionDescription(origin, name, connection, tuple(media), tuple(session_attrs))


@attrs.frozen
class RtpFormat:
    """One negotiated payload type."""

    payload_type: int
    codec: Codec
    clock_rate: int
    fmtp: str | None = None


@attrs.frozen
class Negotiated:
    """What offer/answer settled for the audio stream, from our point of view."""

    remote: tuple[str, int] | None
    """Where to send RTP (None while the peer holds us with port 0 or c=0.0.0.0)."""
    audio: tuple[RtpFormat, ...]
    """Audio formats both sides accept, the first being the one we send."""
    telephone_event: RtpFormat | None
    comfort_noise: RtpFormat | None
    ptime: int
    """Packetisation time we send, in milliseconds."""
    direction: str
    """Our direction: sending is allowed in sendrecv and sendonly."""

    @property
    def sends(self) -> bool:
        """True when we may send RTP."""
        return self.direction in ("sendrecv", "sendonly") and self.remote is not None

    def format_for(self, payload_type: int) -> RtpFormat | None:
        """The negotiated format of a received payload type, or None."""
        for fmt in (*self.audio, self.telephone_event, self.comfort_noise):
            if fmt is not None and fmt.payload_type == payload_type:
                return fmt
        return None

    def payload_type_for(self, codec: Codec) -> int | None:
        """The payload type negotiated for ``codec``, or None."""
        for fmt in (*self.audio, self.telephone_event, self.comfort_noise):
            if fmt is not None and fmt.codec is codec:
                return fmt.payload_type
        return None


def offered_formats(m: MediaDescription) -> list[RtpFormat]:
    """The formats of an m= line that we understand, in the offerer's order."""
    rtpmaps: dict[int, tuple[str, int]] = {}
    for value in m.attribute_values("rtpmap"):
        number, _, encoding = value.partition(" ")
        parts = encoding.split("/")
        if number.isdigit() and len(parts) >= 2 and parts[1].isdigit():
            rtpmaps[int(number)] = (parts[0].lower(), int(parts[1]))
    fmtps: dict[int, str] = {}
    for value in m.attribute_values("fmtp"):
        number, _, params = value.partition(" ")
        if number.isdigit():
            fmtps[int(number)] = params
    out: list[RtpFormat] = []
    for text in m.formats:
        if not text.isdigit():
            continue
        pt: int = int(text)
        if pt in rtpmaps:
            encoding, rate = rtpmaps[pt]
        elif pt in STATIC:
            encoding, rate = STATIC[pt][0].lower(), STATIC[pt][1]
        else:
            continue
        codec = ENCODINGS.get(encoding)
        if codec is None:
            continue
        expected = 48000 if codec is Codec.OPUS else 8000
        if rate != expected and not (codec is Codec.TELEPHONE_EVENT and rate == 48000):
            continue
        out.append(RtpFormat(pt, codec, rate, fmtps.get(pt)))
    return out


def _remote(session: SessionDescription, m: MediaDescription) -> tuple[str, int] | None:
    connection = m.connection or session.connection
    if connection is None or m.port == 0:
        return None
    address = connection.split()[-1].split("/")[0]
    if address in ("0.0.0.0", "::"):
        return None
    return address, m.port


def _ptime(m: MediaDescription, default: int) -> int:
    value = m.attribute("ptime")
    if value is not None and value.strip().isdigit():
        ms = int(value.strip())
        # RIPP allows 10-60 ms in 10 ms steps (§10.2); round the peer's wish into range.
        return min(60, max(10, round(ms / 10) * 10))
    return default


def _direction_of_offer(session: SessionDescription, m: MediaDescription) -> str:
    connection = m.connection or session.connection or ""
    if connection.split()[-1:] == ["0.0.0.0"] and m.direction == "sendrecv":
        return "sendonly"  # RFC 2543 hold (RFC 3264 §8.4)
    return m.direction


def _origin(address: str, session_id: int, version: int) -> str:
    family = "IP6" if ":" in address else "IP4"
    return f"ripp {session_id} {version} IN {family} {address}"


def _connection(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"


def _media_attributes(formats: list[RtpFormat], ptime: int,
                      direction: str) -> tuple[tuple[str, str | None], ...]:
    attributes: list[tuple[str, str | None]] = []
    for fmt in formats:
        name = RTPMAP_NAMES[fmt.codec]
        if fmt.codec is Codec.TELEPHONE_EVENT and fmt.clock_rate == 48000:
            name = "telephone-event/48000"
        attributes.append(("rtpmap", f"{fmt.payload_type} {name}"))
        if fmt.fmtp is not None:
            attributes.append(("fmtp", f"{fmt.payload_type} {fmt.fmtp}"))
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    return tuple(attributes)


def make_offer(address: str, port: int, *, session_id: int, version: int = 1,
               ptime: int = 20, codecs: tuple[Codec, ...] = AUDIO_CODECS,
               direction: str = "sendrecv") -> SessionDescription:
    """Our offer: the audio codecs in ``codecs`` order, then telephone-event and CN."""
    formats = [RtpFormat(OFFER_PAYLOAD_TYPES[c], c, 48000 if c is Codec.OPUS else 8000)
               for c in codecs]
    formats.append(RtpFormat(101, Codec.TELEPHONE_EVENT, 8000, "0-16"))
    formats.append(RtpFormat(13, Codec.CN, 8000))
    m = MediaDescription("audio", port, "RTP/AVP",
                         tuple(str(f.payload_type) for f in formats),
                         None, _media_attributes(formats, ptime, direction))
    return SessionDescription(_origin(address, session_id, version), "-",
                              _connection(address), (m,))


def _negotiate(session: SessionDescription, m: MediaDescription, formats: list[RtpFormat],
               ptime: int, direction: str) -> Negotiated:
    audio = tuple(f for f in formats if f.codec in AUDIO_CODECS)
    if not audio:
        raise NotAcceptable("no common audio codec (PCMU, PCMA or Opus)")
    te = next((f for f in formats if f.codec is Codec.TELEPHONE_EVENT), None)
    cn = next((f for f in formats if f.codec is Codec.CN), None)
    return Negotiated(_remote(session, m), audio, te, cn, ptime, direction)


def answer_offer(offer: SessionDescription, address: str, port: int, *, session_id: int,
                 version: int = 1, ptime: int = 20,
                 codecs: tuple[Codec, ...] = AUDIO_CODECS) -> tuple[SessionDescription,
                                                                     Negotiated]:
    """Answer ``offer`` (RFC 3264 §6): the first audio stream is accepted with the formats
    we share, in the offerer's order and with its payload types; other streams are
    refused with port 0. Raises :class:`NotAcceptable` (488) when nothing fits."""
    answer_media: list[MediaDescription] = []
    negotiated: Negotiated | None = None
    for m in offer.media:
        usable = [f for f in offered_formats(m)
                  if f.codec not in AUDIO_CODECS or f.codec in codecs]
        if (negotiated is None and m.media == "audio" and m.proto.startswith("RTP/AVP")
                and m.port != 0 and any(f.codec in AUDIO_CODECS for f in usable)):
            direction = ANSWER_DIRECTION[_direction_of_offer(offer, m)]
            send_ptime = _ptime(m, ptime)
            negotiated = _negotiate(offer, m, usable, send_ptime, direction)
            answer_media.append(MediaDescription(
                "audio", port, m.proto, tuple(str(f.payload_type) for f in usable), None,
                _media_attributes(usable, send_ptime, direction)))
        else:
            answer_media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
    if negotiated is None:
        raise NotAcceptable("the offer has no audio stream we can use")
    answer = SessionDescription(_origin(address, session_id, version), "-",
                                _connection(address), tuple(answer_media))
    return answer, negotiated


def accept_answer(answer: SessionDescription, *, ptime: int = 20) -> Negotiated:
    """What an answer to our :func:`make_offer` settles (RFC 3264 §7)."""
    for m in answer.media:
        if m.media == "audio" and m.port != 0:
            formats = offered_formats(m)
            # Their direction is the answer's; ours is its mirror image.
            ours = ANSWER_DIRECTION[_direction_of_offer(answer, m)]
            return _negotiate(answer, m, formats, _ptime(m, ptime), ours)
    raise NotAcceptable("the answer accepted no audio stream")
