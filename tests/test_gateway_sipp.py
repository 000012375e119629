"""The gateway against a real SIP peer: sipp (Debian sip-tester 3.6) over loopback UDP.

SIP -> RIPP: sipp's built-in ``uac_pcap`` (PCMA audio from a pcap, then an RFC 2833 DTMF
'1') through the gateway to ``ripp serve`` (echo), the echoed audio and DTMF counted; our
own scenarios in ``tests/sipp/`` for CANCEL, 486/603, a re-INVITE to hold, an UPDATE
refresh and a BYE from the RIPP side, against a RIPP server in the test that behaves by the
called user (``ring``, ``busy``, ``decline``, ``hangup``).

RIPP -> SIP: ``ripp call`` through the gateway to sipp ``-sn uas -rtp_echo``; a trunk that
challenges with digest auth; a busy trunk (486); a dead trunk (timer B -> 408).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

import ripp_trio
from ripp_audio import encoder_for, tone
from ripp_cli import _certs
from ripp_cli._passport import make_identity
from ripp_core import CallEnded, CallState, Codec, MediaFrame
from ripp_core.testing import (
    INSECURE_CHECKS,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)
from ripp_sip import Credentials, SipConfig
from ripp_sip.trio_gateway import GatewayConfig, open_gateway
from tests.gateway_harness import (
    REPO,
    SCENARIOS,
    env,
    free_udp_port,
    ripp_command,
    sipp_args,
    sipp_binary,
    sipp_workdir,
    start_ripp_serve,
    stop,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0.eyJhdHRlc3QiOiJBIn0."
    "c2lnbmF0dXJl;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)


async def run_sipp(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(args, cwd=cwd, check=False, capture_stdout=True,
                                  capture_stderr=True)


def sipp_log(cwd: Path) -> str:
    """Everything sipp traced (-trace_msg, -trace_err) in ``cwd``."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(cwd.glob("*.log")))


# --------------------------------------------------------------- SIP -> RIPP, ripp serve
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_uac_pcap_through_gateway_to_ripp_serve_echo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    sipp_binary()
    home = tmp_path / "home"
    monkeypatch.setenv("RIPP_HOME", str(home))
    serve, uri = start_ripp_serve(home)
    work = sipp_workdir(tmp_path)

    async def main() -> Any:
        quic = _certs.client_configuration(_certs.ensure_local_pki(), "localhost")
        config = GatewayConfig(sip_port=0, calls_uri=uri, sign_identity=make_identity)
        async with open_gateway(config, client_quic_configuration=quic) as gateway:
            args = sipp_args(gateway.sip_address, "-sn", "uac_pcap")
            if transport == "tcp":
                args += ["-t", "t1"]  # SIP over one TCP connection; RTP stays UDP
            done = await run_sipp(args, work)
            await trio.sleep(0.3)
            return done, gateway.records

    try:
        done, records = trio.run(main)
    finally:
        stop(serve)
    assert done.returncode == 0, sipp_log(work) + done.stderr.decode()
    (record,) = records
    assert record.sip_call.startswith("t" if transport == "tcp" else "u")
    # 236 PCMA packets and 10 telephone-event packets (RFC 2833 '1', End sent 3 times);
    # RIPP gets the End once (protocol 10.4): each copy would take 20 ms of its clock.
    assert record.rtp_in == 246
    assert record.frames_to_ripp == 244
    assert record.dtmf_to_ripp == 8
    assert (record.rtp_late, record.rtp_rejected) == (0, 0), "the pcap is in order"
    # ripp serve echoed everything it played out; what came back went out as RTP.
    assert record.frames_from_ripp >= 0.95 * record.frames_to_ripp
    assert record.dtmf_to_sip >= 7
    assert record.rtp_out >= record.frames_from_ripp
    assert record.transcoded == 0, "PCMA both ways: payloads pass through"
    assert record.rtcp_sent >= 1  # sender reports every 5 s, built from RIPP statistics
    assert record.ended == (200, "Normal")  # sipp hung up: BYE -> terminate 200
    assert record.identity is not None and record.identity.endswith("ppt=shaken")


# --------------------------------------------------------------- SIP -> RIPP, scripted peer
def _pki() -> Any:
    return make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))


async def _ripp_peer(server: Any, seen: list[Any], nursery: trio.Nursery) -> None:
    """A RIPP server that behaves by the called user: ring, busy, decline, hangup."""

    async def handle(call: Any) -> None:
        seen.append(call)
        user = call.incoming.to.uri.split(":", 1)[1].split("@", 1)[0]
        if user == "busy":
            await call.reject(486, "Busy Here")
        elif user == "decline":
            await call.reject(603, "Decline")
        elif user == "ring":
            await call.ring()
        elif user == "early":
            # Early media (R20) in Opus, which the SIP side did not offer: the gateway sends
            # 183 with its SDP and transcodes to PCMA.
            await call.ring()
            encoder = encoder_for(Codec.OPUS, 0.02)
            pcm = tone(440.0, 0.4, encoder.input_rate)
            step = encoder.samples_per_frame
            for i in range(20):
                call.play(Codec.OPUS, 0.02, encoder.encode(pcm[i * step:(i + 1) * step]))
            await trio.sleep(0.6)
            await call.answer()
        elif user == "hangup":
            await call.ring()
            await call.answer()
            await trio.sleep(1.5)
            await call.terminate(200, "Normal")
        call.final = await call.wait_ended()

    async for call in server.calls():
        nursery.start_soon(handle, call)


def _scripted(tmp_path: Path, scenario: str, user: str,
              sign: bool = True) -> tuple[Any, list[Any], Path]:
    pki = _pki()
    work = sipp_workdir(tmp_path)
    seen: list[Any] = []

    async def main() -> Any:
        async with ripp_trio.open_server(
            server_quic_configuration(pki), **INSECURE_CHECKS
        ) as server, \
                trio.open_nursery() as nursery:
            nursery.start_soon(_ripp_peer, server, seen, nursery)
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            config = GatewayConfig(sip_port=0, calls_uri=uri,
                                   sign_identity=make_identity if sign else None)
            quic = client_quic_configuration(pki, "localhost")
            async with open_gateway(config, client_quic_configuration=quic) as gateway:
                args = sipp_args(gateway.sip_address, "-sf", str(SCENARIOS / scenario),
                                 "-s", user)
                done = await run_sipp(args, work)
                await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
            return done, gateway.records

    done, records = trio.run(main)
    assert done.returncode == 0, sipp_log(work) + done.stderr.decode()
    return records, seen, work


def test_sip_cancel_terminates_the_ripp_call_with_487(tmp_path: Path) -> None:
    sipp_binary()
    records, seen, _ = _scripted(tmp_path, "uac_cancel.xml", "ring")
    assert [c.final.code for c in seen] == [487]
    assert records[0].sip_final == 487


@pytest.mark.parametrize(("user", "code"), [("busy", 486), ("decline", 603)])
def test_ripp_rejection_becomes_the_sip_final_response(tmp_path: Path, user: str,
                                                       code: int) -> None:
    sipp_binary()
    records, _seen, work = _scripted(tmp_path, "uac_rejected.xml", user)
    assert records[0].sip_final == code
    assert f"SIP/2.0 {code} " in sipp_log(work)


def test_invite_without_identity_gets_428_without_a_signer(tmp_path: Path) -> None:
    sipp_binary()
    records, seen, work = _scripted(tmp_path, "uac_rejected.xml", "anyone", sign=False)
    assert records[0].sip_final == 428 and seen == []
    assert "SIP/2.0 428 Use Identity Header" in sipp_log(work)


def test_early_media_gives_183_and_is_transcoded_to_the_negotiated_codec(
    tmp_path: Path,
) -> None:
    sipp_binary()
    records, seen, _ = _scripted(tmp_path, "uac_early_media.xml", "early")
    (record,) = records
    assert record.sip_final == 200
    assert record.frames_from_ripp >= 15  # of 20 Opus frames played before the answer
    assert record.transcoded == record.rtp_out >= 15  # all sent to SIP as PCMA
    assert seen[0].final.code == 200


def test_reinvite_hold_update_and_bye_from_the_ripp_side(tmp_path: Path) -> None:
    sipp_binary()
    records, seen, work = _scripted(tmp_path, "uac_reinvite_wait_bye.xml", "hangup")
    (record,) = records
    (call,) = seen
    # Identity copied unchanged, with its parameters; end-to-end fields copied, hop-by-hop not.
    assert call.incoming.identity == IDENTITY
    headers = dict(call.incoming.headers)
    assert headers["p-asserted-identity"] == "<sip:+14085551234@example.org>"
    assert "call-id" in headers
    assert not {"via", "contact", "max-forwards", "cseq", "session-expires"} & set(headers)
    # The hold re-INVITE was answered recvonly (sipp checks the body too) and the RIPP call
    # never noticed: it stayed up until the RIPP side hung up, with 200 Normal.
    assert record.directions == ["sendrecv", "recvonly"]
    assert record.reinvites == 1
    assert call.final.code == 200
    log = sipp_log(work)
    assert 'Reason: SIP;cause=200;text="Normal"' in log
    assert "SIP/2.0 100 Trying" in log and "SIP/2.0 180 Ringing" in log  # ring -> 180
    assert "Session-Expires: 1800;refresher=uac" in log and "Require: timer" in log


# --------------------------------------------------------------- RIPP -> SIP
def test_ripp_call_cli_through_gateway_to_sipp_uas_rtp_echo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sipp_binary()
    home = tmp_path / "home"
    monkeypatch.setenv("RIPP_HOME", str(home))
    work = sipp_workdir(tmp_path)
    trunk_port = free_udp_port()

    async def main() -> Any:
        pki = _certs.ensure_local_pki()
        config = GatewayConfig(sip_port=0, trunk=f"sip:127.0.0.1:{trunk_port}")
        async with open_gateway(config, server_quic_configuration=_certs.server_configuration(
                pki), **INSECURE_CHECKS) as gateway, trio.open_nursery() as nursery:
            results: dict[str, Any] = {}

            async def uas() -> None:
                args = sipp_args(("127.0.0.1", 5060), "-sn", "uas", "-rtp_echo")
                args[args.index("-p") + 1] = str(trunk_port)
                args.remove("127.0.0.1:5060")
                results["sipp"] = await run_sipp(args, work)

            nursery.start_soon(uas)
            await trio.sleep(0.5)  # sipp binds its port
            assert gateway.ripp_address is not None
            uri = f"https://localhost:{gateway.ripp_address[1]}/ripp/calls"
            results["call"] = await trio.run_process(
                ripp_command("call", uri, "--json", "--seconds", "2"), cwd=REPO,
                env=env(home), check=False, capture_stdout=True, capture_stderr=True)
        return results, gateway.records

    results, records = trio.run(main)
    call = results["call"]
    assert call.returncode == 0, call.stderr.decode()
    summary = json.loads(call.stdout.decode().strip().splitlines()[-1])
    assert summary["states"] == ["pending", "ringing", "connected", "terminated"]
    sent = summary["media"]["client_to_server"]["sent"]
    received = summary["media"]["server_to_client"]["received"]
    assert sent == 100
    assert received >= 0.8 * sent, summary  # echoed by sipp's -rtp_echo, back through RIPP
    assert results["sipp"].returncode == 0, sipp_log(work)
    (record,) = records
    assert record.identity is not None
    assert f"Identity: {record.identity}" in sipp_log(work)


def _ripp_client_call(tmp_path: Path, scenario: list[str], *, seconds: float,
                      credentials: Credentials | None = None,
                      sip: SipConfig | None = None, start_sipp: bool = True,
                      cancel_when_ringing: bool = False, transport: str = "udp",
                      early: bool = False) -> Any:
    """Place one RIPP call through the gateway to a sipp UAS; play PCMU for ``seconds``."""
    pki = _pki()
    work = sipp_workdir(tmp_path)
    trunk_port = free_udp_port()

    async def main() -> Any:
        suffix = ";transport=tcp" if transport == "tcp" else ""
        config = GatewayConfig(sip_port=0, trunk=f"sip:127.0.0.1:{trunk_port}{suffix}",
                               credentials=credentials, sip=sip or SipConfig())
        out: dict[str, Any] = {"echoed": 0, "echoed_early": 0}
        async with open_gateway(config, server_quic_configuration=server_quic_configuration(
                pki), **INSECURE_CHECKS) as gateway, trio.open_nursery() as nursery:

            async def uas() -> None:
                args = [sipp_binary(), *scenario, "-i", "127.0.0.1", "-p", str(trunk_port),
                        "-mp", str(free_udp_port(even=True)), "-m", "1", "-timeout", "30s",
                        "-timeout_error", "-nostdin", "-trace_msg", "-trace_err"]
                if transport == "tcp":
                    args += ["-t", "t1"]
                out["sipp"] = await run_sipp(args, work)

            if start_sipp:
                nursery.start_soon(uas)
                await trio.sleep(0.5)
            assert gateway.ripp_address is not None
            uri = f"https://localhost:{gateway.ripp_address[1]}/ripp/calls"
            async with ripp_trio.open_client(client_quic_configuration(pki, "localhost"),
                                             calls_uris=[uri], token="t") as client:
                to, from_ = "<tel:+12125551234>", '"ripp" <tel:+14085551234>;tag=x'
                out["identity"] = make_identity(to, from_)
                call = await client.place_call(to=to, from_=from_, identity=out["identity"],
                                               headers=(("p-asserted-identity",
                                                         "<tel:+14085551234>"),))

                async def count() -> None:
                    async for item in call.audio():
                        if isinstance(item, MediaFrame):
                            out["echoed"] += 1
                            if call.state is not CallState.CONNECTED:
                                out["echoed_early"] += 1

                nursery.start_soon(count)
                try:
                    if cancel_when_ringing:
                        await call.wait_state(CallState.RINGING)
                        out["ended"] = await call.terminate(487, "Request Terminated")
                        await trio.sleep(1.0)  # the CANCEL, 487 and ACK on the SIP side
                        raise CallEnded(out["ended"])
                    if early:  # media may flow once the call is pending (R20)
                        await call.wait_state(CallState.PENDING)
                    else:
                        await call.wait_state(CallState.CONNECTED)
                    for _ in range(int(seconds / 0.02)):
                        call.play(Codec.PCMU, 0.02, bytes([0x55]) * 160)
                    await trio.sleep(seconds + 0.5)
                    out["ended"] = await call.terminate()
                except CallEnded as exc:
                    out["ended"] = exc.ended
                await trio.sleep(0.5)
        out["records"] = gateway.records
        return out

    return trio.run(main), work


def test_trunk_digest_challenge_answer_audio_and_bye(tmp_path: Path) -> None:
    sipp_binary()
    out, work = _ripp_client_call(
        tmp_path, ["-sf", str(SCENARIOS / "uas_digest_wait_bye.xml"), "-rtp_echo"],
        seconds=1.0, credentials=Credentials("gw", "s3cret"))
    assert out["sipp"].returncode == 0, sipp_log(work)
    assert "Authorization: Digest" in sipp_log(work)
    assert out["ended"].code == 200
    assert out["echoed"] >= 35, out  # 50 frames sent; sipp echoed them back through RIPP
    (record,) = out["records"]
    assert record.sip_final is None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_busy_trunk_ends_the_ripp_call_with_486(tmp_path: Path, transport: str) -> None:
    sipp_binary()
    out, work = _ripp_client_call(tmp_path, ["-sf", str(SCENARIOS / "uas_busy.xml")],
                                  seconds=0.2, transport=transport)
    assert out["sipp"].returncode == 0, sipp_log(work)
    assert (out["ended"].code, out["ended"].reason) == (486, "Busy Here")
    assert out["records"][0].sip_call.startswith("t" if transport == "tcp" else "u")
    # Identity exactly as the RIPP caller sent it, and the end-to-end field with it.
    log = sipp_log(work)
    assert f"Identity: {out['identity']}" in log
    assert "P-Asserted-Identity: <tel:+14085551234>" in log


def test_early_media_from_the_trunk_flows_before_the_answer(tmp_path: Path) -> None:
    sipp_binary()
    out, work = _ripp_client_call(
        tmp_path, ["-sf", str(SCENARIOS / "uas_early_media.xml"), "-rtp_echo"],
        seconds=2.0, early=True)
    assert out["sipp"].returncode == 0, sipp_log(work)
    assert out["ended"].code == 200
    # 183 + SDP let RTP flow both ways before the 200 (1 s later): echoes came back early.
    assert out["echoed_early"] >= 20, out
    assert out["echoed"] >= 80, out


def test_ripp_cancel_before_answer_cancels_the_invite(tmp_path: Path) -> None:
    sipp_binary()
    out, work = _ripp_client_call(tmp_path, ["-sf", str(SCENARIOS / "uas_ring_wait_cancel.xml")],
                                  seconds=0.2, cancel_when_ringing=True)
    assert out["sipp"].returncode == 0, sipp_log(work)
    assert out["ended"].code == 487
    log = sipp_log(work)
    assert "CANCEL sip:" in log and "ACK sip:" in log


def test_dead_trunk_times_out_with_408(tmp_path: Path) -> None:
    # Nobody listens on the trunk port: timer B (64 * T1) ends the INVITE; T1 = 50 ms here.
    out, _ = _ripp_client_call(tmp_path, [], seconds=0.2, sip=SipConfig(t1=0.05),
                               start_sipp=False)
    assert out["ended"].code == 408


# --------------------------------------------------------------- the ripp gateway command
def test_ripp_gateway_command_bridges_both_ways(tmp_path: Path) -> None:
    """`ripp gateway` as a user runs it: sipp uac -> gateway -> ripp serve, and
    ripp call -> gateway -> sipp uas -rtp_echo, through one gateway process."""
    sipp_binary()
    home = tmp_path / "home"
    work = sipp_workdir(tmp_path)
    # A default server checks the gateway's token and PASSporT. sipp's From is no telephone
    # number, so no PASSporT can vouch for it: the server takes the call marked unverified
    # (what a terminating provider does), and would refuse it with "reject" (438).
    serve, uri = start_ripp_serve(
        home, authenticated=True, options=("--identity-policy", "mark")
    )
    trunk_port = free_udp_port()
    uas = subprocess.Popen(
        [sipp_binary(), "-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-p", str(trunk_port),
         "-mp", str(free_udp_port(even=True)), "-m", "1", "-timeout", "40s", "-nostdin",
         "-trace_err"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    gateway = subprocess.Popen(
        ripp_command("gateway", "--sip-port", "0", "--ripp-port", "0", "--calls-uri", uri,
                     "--sign-identity", "--trunk", f"sip:127.0.0.1:{trunk_port}"),
        cwd=REPO, env=env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout is not None
        banner = gateway.stdout.readline()
        assert banner.startswith("ripp gateway: sip udp/127.0.0.1:"), banner
        sip_port = int(banner.split("udp/127.0.0.1:")[1].split()[0])
        assert f"tcp/127.0.0.1:{sip_port}" in banner
        ripp_uri = banner.split("; ripp ")[1].split()[0]
        uac = subprocess.run(sipp_args(("127.0.0.1", sip_port), "-sn", "uac", "-d", "500"),
                             cwd=work, capture_output=True, timeout=60)
        assert uac.returncode == 0, uac.stderr.decode() + sipp_log(work)
        call = subprocess.run(ripp_command("call", ripp_uri, "--json", "--seconds", "1"),
                              cwd=REPO, env=env(home), capture_output=True, text=True,
                              timeout=60)
        assert call.returncode == 0, call.stderr
        summary = json.loads(call.stdout.strip().splitlines()[-1])
        assert summary["ended"]["code"] == 200
        assert summary["media"]["server_to_client"]["received"] >= 40  # of 50, echoed by sipp
        assert uas.wait(20) == 0
        lines = [gateway.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("call sip-to-ripp ended 200 Normal"), lines
        assert lines[1].startswith("call ripp-to-sip ended 200 Normal"), lines
    finally:
        stop(gateway)  # type: ignore[arg-type]
        stop(serve)
        if uas.poll() is None:
            uas.kill()
            uas.wait()
