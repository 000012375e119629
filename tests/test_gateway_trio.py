"""The Trio gateway over real loopback sockets, with a SIP phone written on ripp_sip's
own core: RTP continuity across a RIPP move, and a misbehaving SIP peer beside a
well-behaved call."""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import ripp_trio
from ripp_core import CallMovedAway, MediaFrame, RippConfig
from ripp_core.testing import (
    INSECURE_CHECKS,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)
from ripp_sip import (
    ByeReceived,
    ResponseReceived,
    RtpPacket,
    SipEndpoint,
    make_offer,
    parse_rtp,
    parse_sdp,
)
from ripp_sip.trio_gateway import GatewayConfig, open_gateway
from tests.data.sip_torture import INVALID

IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0.eyJhdHRlc3QiOiJBIn0."
    "c2ln;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)


class Phone:
    """A SIP phone on loopback: one call, PCMU RTP with a counter in each payload."""

    def __init__(self) -> None:
        self.sip = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.endpoint: SipEndpoint | None = None
        self.received: list[RtpPacket] = []
        self.answered = trio.Event()
        self.remote: tuple[str, int] | None = None
        self.handle = ""
        self.events: list[Any] = []

    async def run(self, gateway: tuple[str, int], *, task_status: Any) -> None:
        await self.sip.bind(("127.0.0.1", 0))
        await self.rtp.bind(("127.0.0.1", 0))
        self.endpoint = SipEndpoint(self.sip.getsockname(), seed=3)
        body = make_offer("127.0.0.1", self.rtp.getsockname()[1], session_id=1).to_bytes()
        self.handle = self.endpoint.invite(
            f"sip:echo@{gateway[0]}:{gateway[1]}", to="<sip:echo@127.0.0.1>",
            from_="<sip:phone@127.0.0.1>", destination=gateway, now=trio.current_time(),
            body=body, headers=(("Identity", IDENTITY),))
        await self.flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rtp_loop)
            task_status.started()
            while True:
                deadline = self.endpoint.get_timer()
                with trio.move_on_at(deadline if deadline is not None else
                                     trio.current_time() + 0.2):
                    data, addr = await self.sip.recvfrom(65536)
                    self.endpoint.receive_datagram(data, addr[:2], trio.current_time())
                self.endpoint.handle_timer(trio.current_time())
                await self.flush()

    async def flush(self) -> None:
        assert self.endpoint is not None
        for data, addr in self.endpoint.datagrams_to_send():
            await self.sip.sendto(data, addr)
        while (event := self.endpoint.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, ResponseReceived) and event.response.status == 200:
                sdp = parse_sdp(event.response.body)
                self.remote = ("127.0.0.1", sdp.media[0].port)
                self.answered.set()

    async def _rtp_loop(self) -> None:
        while True:
            self.received.append(parse_rtp(await self.rtp.recv(2048)))

    async def send(self, index: int) -> None:
        assert self.remote is not None
        payload = struct.pack("!I", index) + b"\xff" * 156
        packet = RtpPacket(0, index, index * 160, 0xC0FFEE, payload, index == 0)
        await self.rtp.sendto(packet.to_bytes(), self.remote)

    async def send_digit_5(self, sequence: int, timestamp: int) -> None:
        """RFC 4733 digit 5, 100 ms: four updates, then the End packet three times."""
        assert self.remote is not None
        for i in range(7):
            end = i >= 4
            duration = 160 * min(i + 1, 5)
            payload = struct.pack("!BBH", 5, (0x80 if end else 0) | 10, duration)
            packet = RtpPacket(101, sequence + i, timestamp, 0xC0FFEE, payload, i == 0)
            await self.rtp.sendto(packet.to_bytes(), self.remote)
            await trio.sleep(0.02 if i < 4 else 0.0)


_BEL_INVITE = (
    "INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbel\r\n"
    'From: "BEL:\\\x07" <sip:bad@127.0.0.1>;tag=b\r\nTo: <sip:echo@127.0.0.1>\r\n'
    "Call-ID: bel@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    f"Identity: {IDENTITY}\r\nContent-Type: application/sdp\r\n\r\n"
    "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\n"
).encode()


def _pki() -> Any:
    return make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))


async def _echo(call: Any, digits: list[str] | None = None) -> None:
    if digits is not None:

        async def collect() -> None:
            with contextlib.suppress(CallMovedAway):
                async for event in call.dtmf():
                    digits.append(event.digit)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await _echo(call)
            nursery.cancel_scope.cancel()
        return
    with contextlib.suppress(CallMovedAway):
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                with contextlib.suppress(Exception):
                    call.send_audio(item.codec, item.duration, item.payload,
                                    marker=item.marker)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sip_leg_sees_one_rtp_stream_across_a_ripp_move_and_survives_a_bad_peer() -> None:
    pki = _pki()
    result: dict[str, Any] = {}

    async def main() -> None:
        server_quic = server_quic_configuration(pki)
        # The echo peers forward on arrival: frames held in the old instance's jitter
        # buffer would never be played (echoed) there after the move.
        direct = RippConfig(jitter_buffer=False)
        async with ripp_trio.open_server(server_quic, config=direct, **INSECURE_CHECKS) as first, \
                ripp_trio.open_server(server_quic, config=direct, **INSECURE_CHECKS) as second, \
                trio.open_nursery() as nursery:

            async def answer() -> None:
                async for call in first.calls():
                    await call.ring()
                    await call.answer()
                    nursery.start_soon(_echo, call, result.setdefault("digits", []))

            nursery.start_soon(answer)
            uri = f"https://localhost:{first.address[1]}/ripp/calls"
            config = GatewayConfig(sip_port=0, calls_uri=uri, jitter_buffer=False)
            async with open_gateway(config, client_quic_configuration=client_quic_configuration(
                    pki, "localhost")) as gateway:
                phone = Phone()
                await nursery.start(phone.run, gateway.sip_address)
                with trio.fail_after(10):
                    await phone.answered.wait()
                # A misbehaving peer beside the call: every RFC 4475 invalid message.
                bad = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await bad.bind(("127.0.0.1", 0))
                start = trio.current_time()
                for index in range(150):  # 3 s of audio; the RIPP call moves at 1.5 s
                    await trio.sleep_until(start + index * 0.02)
                    await phone.send(index)
                    if index == 75:
                        moved = first.drain_to(second,
                                               authority=f"localhost:{second.address[1]}")
                        for call in moved:
                            nursery.start_soon(_echo, call)
                        result["moved"] = len(moved)
                    if index < len(INVALID):
                        data = list(INVALID.values())[index][0]
                        await bad.sendto(data, gateway.sip_address)
                    if index == 30:  # well-formed SIP, but a BEL would break HTTP/3
                        await bad.sendto(_BEL_INVITE, gateway.sip_address)
                    if index == 40:  # a digit, in place of 100 ms of audio
                        await phone.send_digit_5(1000, 40 * 160)
                answers = []
                with trio.move_on_after(1.0):
                    while True:
                        answers.append(int((await bad.recv(65536)).split()[1]))  # may echo junk
                result["bad_answers"] = answers
                assert phone.endpoint is not None
                phone.endpoint.bye(phone.handle, trio.current_time())
                await phone.flush()
                await trio.sleep(0.5)
                result["records"] = [r for r in gateway.records if r.sip_final == 200]
                result["all_records"] = list(gateway.records)
                result["received"] = phone.received
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert result["moved"] == 1
    received: list[RtpPacket] = result["received"]
    # DTMF intact: the RIPP peer reported the digit once; the echo came back to SIP as
    # RFC 4733 packets sharing one timestamp, with the End packet three times.
    assert result["digits"] == ["5"]
    events = [p for p in received if p.payload_type == 101]
    assert len({p.timestamp for p in events}) == 1 and events[0].marker
    assert sum(1 for p in events if p.payload[1] & 0x80) >= 3
    received = [p for p in received if p.payload_type == 0]
    counters = [struct.unpack_from("!I", p.payload)[0] for p in received]
    # Every frame came back once across the move, but for those in flight to the old
    # instance as it handed over: RIPP gives those to the old instance's application
    # (protocol §14.2), and the test's echo there has stopped.
    assert len(counters) == len(set(counters)) >= 147
    assert set(range(70)) | set(range(80, 150)) <= set(counters)
    # One RTP stream: one SSRC, consecutive sequence numbers, 160-tick timestamp steps
    # in arrival order (marker packets may re-align the timestamp, and only forward).
    assert len({p.ssrc for p in received}) == 1
    sequences = [p.sequence for p in result["received"]]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(received)]
    assert all(step >= 160 for step in steps) and steps.count(160) >= 130
    record = result["records"][0]
    assert record.ended == (200, "Normal")
    # The bad peer got error answers (400/416/505), never a dialog; responses are dropped.
    # Its INVITE with a control character got 100 then 400, and never reached RIPP, where
    # it would have closed the QUIC connection that carries the good call.
    codes = set(result["bad_answers"])
    assert codes == {100, 400, 416, 505}
    assert [r.sip_final for r in result["all_records"]] == [200, 400]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_closing_the_gateway_says_bye_on_the_sip_side() -> None:
    pki = _pki()
    result: dict[str, Any] = {}

    async def main() -> None:
        async with ripp_trio.open_server(
            server_quic_configuration(pki), **INSECURE_CHECKS
        ) as server, \
                trio.open_nursery() as nursery:

            async def answer() -> None:
                async for call in server.calls():
                    await call.ring()
                    await call.answer()

            nursery.start_soon(answer)
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            phone = Phone()
            async with open_gateway(GatewayConfig(sip_port=0, calls_uri=uri),
                                    client_quic_configuration=client_quic_configuration(
                                        pki, "localhost")) as gateway:
                await nursery.start(phone.run, gateway.sip_address)
                with trio.fail_after(10):
                    await phone.answered.wait()
            await trio.sleep(0.3)
            result["events"] = phone.events
            nursery.cancel_scope.cancel()

    trio.run(main)
    (bye,) = [e for e in result["events"] if isinstance(e, ByeReceived)]
    assert bye.request.header("Reason") == 'SIP;cause=503;text="Gateway closing"'

