"""RTP timing through the real Trio gateway (protocol §21.3, docs/gateway.md "RTP timing"):
a SIP phone sends RTP with loss and silence suppression over loopback; the RIPP peer's
frames arrive on their timestamps' schedule (no drift, no late frames). Beside it a second
phone sends a hostile stream (random SSRCs, sequence numbers and timestamps among its
good packets): its call and the first stay fine."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
import trio

import ripp_trio
from ripp_core import MediaFrame, RippConfig
from ripp_core.testing import (
    INSECURE_CHECKS,
    client_quic_configuration,
    server_quic_configuration,
)
from ripp_sip import RtpPacket
from ripp_sip.trio_gateway import GatewayConfig, open_gateway
from tests.test_gateway_trio import Phone, _pki

#: 4 s of 20 ms packets; the good phone loses these (about 12 %) ...
LOST = {5, 6, 17, 30, 31, 32, 50, 77, 78, 101, 120, 121, 122, 123, 150, 170, 171, 180}
#: ... and suppresses this much silence before packet SILENCE_AT (with the marker bit).
SILENCE_AT, SILENCE = 100, 0.6
PACKETS = 200
HOSTILE_BASE = 1_000_000  # payload counters of the hostile phone's good packets


def _payload(index: int) -> bytes:
    return struct.pack("!I", index) + b"\xff" * 156


async def _good_phone(phone: Phone) -> None:
    assert phone.remote is not None
    start = trio.current_time()
    for index in range(PACKETS):
        media_time = index * 0.02 + (SILENCE if index >= SILENCE_AT else 0.0)
        await trio.sleep_until(start + media_time)
        if index in LOST:
            continue
        timestamp = round(media_time * 8000)
        packet = RtpPacket(0, index, timestamp, 0xC0FFEE, _payload(index),
                           index in (0, SILENCE_AT))
        await phone.rtp.sendto(packet.to_bytes(), phone.remote)


async def _hostile_phone(phone: Phone) -> None:
    assert phone.remote is not None
    rng = random.Random(7)
    start = trio.current_time()
    for index in range(PACKETS):
        await trio.sleep_until(start + index * 0.02)
        good = RtpPacket(0, index, index * 160, 0xBADBAD, _payload(HOSTILE_BASE + index),
                         index == 0)
        await phone.rtp.sendto(good.to_bytes(), phone.remote)
        for _ in range(2):  # two spoofed packets per good one, any SSRC, incl. the real one
            ssrc = rng.choice([0xBADBAD, rng.getrandbits(32)])
            spoof = RtpPacket(0, rng.getrandbits(16), rng.getrandbits(32), ssrc,
                              b"\x00" * rng.choice([160, 40, 1]), rng.random() < 0.5)
            await phone.rtp.sendto(spoof.to_bytes(), phone.remote)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_rtp_loss_and_silence_keep_ripp_frames_on_schedule_beside_a_hostile_stream() -> None:
    pki = _pki()
    result: dict[str, Any] = {"frames": {}, "stats": {}}

    async def main() -> None:
        async with ripp_trio.open_server(server_quic_configuration(pki),
                                         config=RippConfig(), **INSECURE_CHECKS) as server, \
                trio.open_nursery() as nursery:

            async def collect(call: Any) -> None:
                frames: list[tuple[int, float, int]] = []
                async for item in call.audio():
                    if isinstance(item, MediaFrame) and len(item.payload) == 160:
                        arrival = call.arrival_time(item.sequence)
                        assert arrival is not None
                        (counter,) = struct.unpack_from("!I", item.payload)
                        frames.append((counter, arrival, item.timestamp))
                        result["frames"][call.handle] = frames
                        result["stats"][call.handle] = call.stats().receiver

            async def answer() -> None:
                async for call in server.calls():
                    await call.answer()
                    nursery.start_soon(collect, call)

            nursery.start_soon(answer)
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            config = GatewayConfig(sip_port=0, calls_uri=uri)
            async with open_gateway(config, client_quic_configuration=client_quic_configuration(
                    pki, "localhost")) as gateway:
                good, hostile = Phone(), Phone()
                await nursery.start(good.run, gateway.sip_address)
                await nursery.start(hostile.run, gateway.sip_address)
                with trio.fail_after(10):
                    await good.answered.wait()
                    await hostile.answered.wait()
                async with trio.open_nursery() as phones:
                    phones.start_soon(_good_phone, good)
                    phones.start_soon(_hostile_phone, hostile)
                await trio.sleep(0.5)  # the last frames play out
                for phone in (good, hostile):
                    assert phone.endpoint is not None
                    phone.endpoint.bye(phone.handle, trio.current_time())
                    await phone.flush()
                await trio.sleep(0.5)
                result["records"] = list(gateway.records)
            nursery.cancel_scope.cancel()

    trio.run(main)
    calls = list(result["frames"].values())
    (good_frames,) = [f for f in calls if f[0][0] < HOSTILE_BASE]
    (hostile_frames,) = [f for f in calls if f[0][0] >= HOSTILE_BASE]

    # The good call: every packet sent arrived, each frame's RIPP timestamp is its RTP
    # media time, and arrival minus timestamp stays flat. Contiguous timestamps would
    # drift by the 18 lost packets and the silence (0.96 s in all).
    assert [c for c, _, _ in good_frames] == [i for i in range(PACKETS) if i not in LOST]
    first_ts = good_frames[0][2]
    for counter, _, timestamp in good_frames:
        media = counter * 0.02 + (SILENCE if counter >= SILENCE_AT else 0.0)
        assert abs((timestamp - first_ts) % 2**32 / 48000 - media) < 0.001, counter
    offsets = [arrival - (timestamp - first_ts) % 2**32 / 48000
               for _, arrival, timestamp in good_frames]
    assert max(offsets) - min(offsets) < 0.25, "loaded machine: generous, drift was 0.96 s"

    # The hostile call: the spoofed packets moved nothing; its good packets are on time.
    assert [c - HOSTILE_BASE for c, _, _ in hostile_frames] == list(range(PACKETS))
    first_ts = hostile_frames[0][2]
    for counter, _, timestamp in hostile_frames:
        assert (timestamp - first_ts) % 2**32 == (counter - HOSTILE_BASE) * 960

    stats = result["stats"]
    assert all(s.late == 0 for s in stats.values()), stats
    records = {r.sip_call: r for r in result["records"]}
    assert len(records) == 2 and all(r.ended == (200, "Normal") for r in records.values())
    good_record, hostile_record = sorted(records.values(), key=lambda r: r.rtp_rejected)
    assert (good_record.rtp_late, good_record.rtp_rejected) == (0, 0)
    assert abs(good_record.rtp_skipped - (len(LOST) * 0.02 + SILENCE)) < 0.001
    assert hostile_record.rtp_rejected >= PACKETS  # every spoof held, then dropped
    assert hostile_record.frames_to_ripp == PACKETS
