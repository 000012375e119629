"""SDP offer/answer (RFC 3264), RTP/RTCP (RFC 3550), RFC 4733 and the media bridge."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_core import Codec, MediaFrame, ReceiverStats
from ripp_sip import (
    FrameAssembler,
    NotAcceptable,
    RtpPacket,
    RtpSender,
    accept_answer,
    answer_offer,
    build_sender_report,
    make_offer,
    parse_rtcp,
    parse_rtp,
    parse_sdp,
    report_from_stats,
)
from ripp_sip._mapping import (
    HOP_BY_HOP,
    MediaBridge,
    reason_header,
    ripp_to_sip_headers,
    sip_final_for_termination,
    sip_to_ripp_headers,
    termination_for_bye,
)

OFFER = (
    "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 8 0 18 96 101\r\na=rtpmap:96 opus/48000/2\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:30\r\n{dir}"
    "m=video 5000 RTP/AVP 31\r\n"
)


def offer(direction: str = "") -> bytes:
    return OFFER.format(dir=f"a={direction}\r\n" if direction else "").encode()


def test_answer_keeps_the_offerers_order_and_payload_types_and_refuses_video() -> None:
    answer, negotiated = answer_offer(parse_sdp(offer()), "192.0.2.9", 6000, session_id=7)
    audio, video = answer.media
    assert audio.formats == ("8", "0", "96", "101")  # G.729 (18) is not ours
    assert (video.port, video.media) == (0, "video")
    assert negotiated.remote == ("192.0.2.1", 4000)
    assert [f.codec for f in negotiated.audio] == [Codec.PCMA, Codec.PCMU, Codec.OPUS]
    assert negotiated.telephone_event is not None
    assert negotiated.telephone_event.payload_type == 101
    assert negotiated.ptime == 30
    assert negotiated.direction == "sendrecv"
    again = parse_sdp(answer.to_bytes())
    assert again.media[0].attribute("ptime") == "30"


@pytest.mark.parametrize(("offered", "answered", "sends"), [
    ("sendrecv", "sendrecv", True), ("sendonly", "recvonly", False),
    ("recvonly", "sendonly", True), ("inactive", "inactive", False),
])
def test_hold_is_answered_per_rfc3264(offered: str, answered: str, sends: bool) -> None:
    answer, negotiated = answer_offer(parse_sdp(offer(offered)), "192.0.2.9", 6000,
                                      session_id=7)
    assert answer.media[0].direction == answered
    assert negotiated.sends is sends


def test_rfc2543_hold_with_zero_address() -> None:
    text = offer().decode().replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0")
    answer, negotiated = answer_offer(parse_sdp(text.encode()), "192.0.2.9", 6000, session_id=1)
    assert answer.media[0].direction == "recvonly"
    assert negotiated.remote is None and not negotiated.sends


def test_no_common_codec_is_488() -> None:
    text = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n" \
           "m=audio 4000 RTP/AVP 18\r\n"
    with pytest.raises(NotAcceptable) as caught:
        answer_offer(parse_sdp(text.encode()), "192.0.2.9", 6000, session_id=1)
    assert caught.value.sip_code == 488


def test_offer_lists_every_ripp_codec_and_accepts_an_answer() -> None:
    ours = make_offer("192.0.2.9", 6000, session_id=3)
    m = ours.media[0]
    assert m.formats == ("0", "8", "111", "101", "13")
    assert "111 opus/48000/2" in m.attribute_values("rtpmap")
    # The peer answers with PCMU and telephone-event, on hold toward us (recvonly).
    peer_answer, _ = answer_offer(parse_sdp(ours.to_bytes().replace(b"sendrecv", b"sendonly")),
                                  "192.0.2.1", 4000, session_id=9,
                                  codecs=(Codec.PCMU,))
    negotiated = accept_answer(peer_answer)
    assert [f.codec for f in negotiated.audio] == [Codec.PCMU]
    assert negotiated.direction == "sendonly" and negotiated.sends


@given(st.binary(max_size=300))
def test_sdp_parser_raises_only_its_error(data: bytes) -> None:
    from ripp_sip import SdpError

    with contextlib.suppress(SdpError):
        parse_sdp(data)


# ------------------------------------------------------------------ RTP / RTCP
@given(pt=st.integers(0, 127), seq=st.integers(0, 0xFFFF), ts=st.integers(0, 2**32 - 1),
       ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=200), marker=st.booleans())
def test_rtp_round_trip(pt: int, seq: int, ts: int, ssrc: int, payload: bytes,
                        marker: bool) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker)
    assert parse_rtp(packet.to_bytes()) == packet


def test_rtp_with_csrc_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 0, 1, 2, 3)
    data = header + b"\0\0\0\1" + b"\xbe\xde\x00\x01" + b"1234" + b"pay" + b"\0\0\x03"
    assert parse_rtp(data).payload == b"pay"


def test_sender_keeps_ssrc_sequence_and_timestamp_continuous_and_events_share_a_timestamp(
) -> None:
    sender = RtpSender(ssrc=0x1234, sequence=65534, timestamp=2**32 - 160)
    a = sender.packet(0, b"x" * 160, clock_rate=8000, duration=0.02, now=0.0)
    b = sender.packet(0, b"x" * 160, clock_rate=8000, duration=0.02, now=0.02)
    assert (a.sequence, b.sequence) == (65534, 65535)
    assert (a.timestamp, b.timestamp) == (2**32 - 160, 0)  # wraps
    events = [sender.packet(101, b"\x05\x0a\x00\xa0", clock_rate=8000, duration=0.02,
                            now=0.04 + i * 0.02, marker=i == 0, event=True) for i in range(3)]
    assert {e.timestamp for e in events} == {160}
    assert [e.sequence for e in events] == [0, 1, 2]
    # After a 1 s pause, a MARKER packet re-aligns the timestamp with the clock.
    later = sender.packet(0, b"x" * 160, clock_rate=8000, duration=0.02, now=1.1, marker=True)
    assert later.timestamp == 160 + 3 * 160 + round((1.1 - 0.1) * 8000)
    assert later.ssrc == 0x1234


def test_assembler_recuts_5ms_g711_into_20ms_frames() -> None:
    assembler = FrameAssembler()
    frames = []
    for i in range(8):
        frames += assembler.push(Codec.PCMU, bytes([i]) * 40, marker=i == 0)
    assert [len(f.payload) for f in frames] == [160, 160]
    assert frames[0].marker and not frames[1].marker
    assert [f.duration for f in frames] == [0.02, 0.02]
    assert assembler.push(Codec.PCMA, b"\1" * 240, False)[0].duration == pytest.approx(0.03)


def test_sender_report_round_trip_from_ripp_stats() -> None:
    stats = ReceiverStats(frames_received=90, bytes_received=14400, duplicates=0, lost=10,
                          late=0, jitter=0.002, highest_sequence=99, playout_delay=0.04)
    before = ReceiverStats(50, 8000, 0, 0, 0, 0.001, 49, 0.04)
    block = report_from_stats(0xABCD, stats, before)
    assert block.fraction_lost == 10 * 256 // 50
    report = parse_rtcp(build_sender_report(0x1111, wallclock=1.7e9, rtp_timestamp=8000,
                                            packets=100, octets=16000, blocks=(block,)))
    assert (report.packet_type, report.ssrc, report.packets, report.octets) == (
        200, 0x1111, 100, 16000)
    assert report.blocks == (block,)
    assert report.blocks[0].jitter == 16  # 2 ms at 8 kHz


# ------------------------------------------------------------------ mapping tables
def test_header_mapping_copies_end_to_end_fields_only() -> None:
    sip = (("Via", "SIP/2.0/UDP a"), ("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>"),
           ("Call-ID", "x@y"), ("CSeq", "1 INVITE"), ("Max-Forwards", "70"),
           ("Identity", "abc;info=<https://x>"), ("P-Asserted-Identity", "<sip:+1@b> "),
           ("History-Info", "<sip:a@b>;index=1"), ("History-Info", "<sip:c@d>;index=1.1"),
           ("Session-Expires", "1800"), ("Contact", "<sip:a@1.2.3.4>"))
    ripp = sip_to_ripp_headers(sip)
    assert ripp == (("call-id", "x@y"), ("p-asserted-identity", "<sip:+1@b>"),
                    ("history-info", "<sip:a@b>;index=1"),
                    ("history-info", "<sip:c@d>;index=1.1"))
    back = ripp_to_sip_headers((*ripp, ("x-campaign", "spring"), ("via", "nope")))
    assert back == (("P-Asserted-Identity", "<sip:+1@b>"), ("History-Info", "<sip:a@b>;index=1"),
                    ("History-Info", "<sip:c@d>;index=1.1"), ("X-Campaign", "spring"))
    assert "via" in HOP_BY_HOP
    # Values that would break HTTP/3 (aioquic closes the connection) or inject SIP fields
    # are not copied; tabs and non-ASCII UTF-8 are fine.
    unsafe = (("Subject", "bell \x07"), ("X-A", "a\r\nVia: x"), ("X-B", "tab\there"),
              ("X-C", "d\u00e9j\u00e0"), ("X-D", "nul\x00"))
    assert sip_to_ripp_headers(unsafe) == (("x-b", "tab\there"), ("x-c", "d\u00e9j\u00e0"))
    assert ripp_to_sip_headers((("x-a", "a\r\nVia: x"), ("x-b", " lead"))) == ()


@pytest.mark.parametrize(("code", "final"), [
    (486, (486, "Busy Here")), (603, (603, "Decline")), (404, (404, "Not Found")),
    (200, (480, "Temporarily Unavailable")), (408, (408, "Timeout")),
])
def test_ripp_termination_to_sip_final(code: int, final: tuple[int, str]) -> None:
    reason = {486: "Busy Here", 603: "Decline", 404: "Not Found", 200: "Normal",
              408: "Timeout"}[code]
    assert sip_final_for_termination(code, reason) == final


def test_reason_header_round_trip() -> None:
    assert termination_for_bye(reason_header(503, 'Server "gone"')) == (503, 'Server \\')
    assert termination_for_bye(reason_header(480, "Moved")) == (480, "Moved")
    assert termination_for_bye(None) == (200, "Normal")
    assert termination_for_bye("Q.850;cause=16") == (200, "Normal")


def _bridge(codecs: tuple[Codec, ...] = (Codec.PCMA,)) -> MediaBridge:
    text = ("v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 8 101 13\r\na=rtpmap:101 telephone-event/8000\r\n")
    _, negotiated = answer_offer(parse_sdp(text.encode()), "192.0.2.9", 6000, session_id=1,
                                 codecs=codecs)
    return MediaBridge(negotiated, RtpSender(1, 0, 0))


def test_bridge_passes_through_dtmf_and_cn_and_repeats_the_end() -> None:
    bridge = _bridge()
    frames = bridge.frames_from_rtp(RtpPacket(101, 1, 0, 9, b"\x01\x0a\x00\xa0", True)
                                    .to_bytes())
    assert [(f.codec, f.payload, f.marker) for f in frames] == [
        (Codec.TELEPHONE_EVENT, b"\x01\x0a\x00\xa0", True)]
    end = MediaFrame(sequence=5, timestamp=0, codec=Codec.TELEPHONE_EVENT, duration_units=40,
                     payload=b"\x01\x8a\x03\x20")
    packets = [parse_rtp(p) for p in bridge.rtp_for_frame(end, 0.0)]
    assert len(packets) == 3 and {p.payload for p in packets} == {b"\x01\x8a\x03\x20"}
    assert len({p.sequence for p in packets}) == 3 and len({p.timestamp for p in packets}) == 1
    cn = MediaFrame(sequence=6, timestamp=0, codec=Codec.CN, duration_units=40, payload=b"\x40")
    (packet,) = [parse_rtp(p) for p in bridge.rtp_for_frame(cn, 0.1)]
    assert (packet.payload_type, packet.payload) == (13, b"\x40")
    assert bridge.frames_from_rtp(RtpPacket(0, 2, 0, 9, b"\0" * 160).to_bytes()) == []
    assert bridge.rtp_dropped == 1, "PCMU was not negotiated: dropped"


def test_bridge_transcodes_a_codec_the_sip_side_did_not_negotiate() -> None:
    bridge = _bridge()
    frame = MediaFrame(sequence=1, timestamp=0, codec=Codec.PCMU, duration_units=40,
                       payload=b"\xff" * 160)  # mu-law silence
    (packet,) = [parse_rtp(p) for p in bridge.rtp_for_frame(frame, 0.0)]
    assert packet.payload_type == 8 and len(packet.payload) == 160
    assert set(packet.payload) <= {0xD5, 0x55}  # A-law silence
    assert bridge.transcoded == 1


_CODEC_LINES = {0: None, 8: None, 13: None, 96: "opus/48000/2", 101: "telephone-event/8000",
                18: None, 120: "H264/90000"}


@given(pts=st.lists(st.sampled_from(sorted(_CODEC_LINES)), min_size=1, max_size=6,
                    unique=True),
       direction=st.sampled_from(["", "sendrecv", "sendonly", "recvonly", "inactive"]),
       ptime=st.sampled_from([None, 5, 10, 20, 30, 60, 90]))
def test_answers_only_use_offered_formats_and_mirror_the_direction(
        pts: list[int], direction: str, ptime: int | None) -> None:
    lines = [f"a=rtpmap:{pt} {name}" for pt, name in _CODEC_LINES.items()
             if pt in pts and name]
    if ptime is not None:
        lines.append(f"a=ptime:{ptime}")
    if direction:
        lines.append(f"a={direction}")
    text = ("v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            f"m=audio 4000 RTP/AVP {' '.join(map(str, pts))}\r\n" + "\r\n".join(lines) + "\r\n")
    audio = {0, 8, 96} & set(pts)
    try:
        answer, negotiated = answer_offer(parse_sdp(text.encode()), "192.0.2.9", 6000,
                                          session_id=1)
    except NotAcceptable:
        assert not audio
        return
    assert audio
    answered = [int(f) for f in answer.media[0].formats]
    assert set(answered) <= set(pts) and 18 not in answered and 120 not in answered
    assert answered == [pt for pt in pts if pt in answered]  # the offerer's order
    assert answer.media[0].direction == {
        "": "sendrecv", "sendrecv": "sendrecv", "sendonly": "recvonly",
        "recvonly": "sendonly", "inactive": "inactive"}[direction]
    assert 10 <= negotiated.ptime <= 60 and negotiated.ptime % 10 == 0
    # Our answer, parsed back as an answer to an offer, agrees on the codecs.
    assert [f.codec for f in accept_answer(parse_sdp(answer.to_bytes())).audio] == [
        f.codec for f in negotiated.audio]


@given(blocks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255),
                                 st.integers(-(2**23), 2**23 - 1), st.integers(0, 2**32 - 1),
                                 st.integers(0, 2**32 - 1)), max_size=31),
       packets=st.integers(0, 2**32 - 1), octets=st.integers(0, 2**32 - 1))
def test_rtcp_sender_reports_round_trip(blocks: list[tuple[int, int, int, int, int]],
                                        packets: int, octets: int) -> None:
    from ripp_sip import ReportBlock

    report_blocks = tuple(ReportBlock(*b) for b in blocks)
    data = build_sender_report(7, wallclock=1.7e9, rtp_timestamp=1, packets=packets,
                               octets=octets, blocks=report_blocks)
    assert len(data) == 28 + 24 * len(blocks)
    parsed = parse_rtcp(data)
    assert (parsed.packets, parsed.octets, parsed.blocks) == (packets, octets, report_blocks)
