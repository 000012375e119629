"""R22: with the TLS key log, tshark decrypts a captured call and shows its HTTP/3 request.

A RIPP server and client run in this process (ripp_trio, certificates from ripp_cli._certs
in a temporary RIPP_HOME, the key log written by ``_certs.debugging`` as ``--keylog``
does) while ``tshark`` captures the server's UDP port on ``lo``. Then tshark reads the
capture twice: with ``tls.keylog_file`` it decrypts QUIC and parses the HTTP/3 frames;
without it, it sees QUIC packets but no HTTP/3 at all, so the decryption came from our key
log.

Debian's tshark 4.0 parses HTTP/3 frames (type, payload) but does not expand the QPACK
field lines inside HEADERS frames, so the test decodes the HEADERS payloads that tshark
extracted with pylsqpack (aioquic's QPACK library). The decryption and the frame parsing
are tshark's. Each payload gets a fresh decoder, which has no dynamic table: the
call-creation request and its 201 response are encoded before either side has the other's
QPACK settings, so they use the static table and literals only; later HEADERS frames that
refer to the dynamic table are skipped (decoding them would need the QPACK encoder streams).

Needs tshark (Debian package ``tshark``; ``scripts/test`` installs it when run as root with
apt-get) and the right to capture on ``lo`` (root). Skipped where tshark is missing, except
in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pylsqpack
import pytest
import trio

import ripp_trio
from ripp_cli import _certs
from ripp_cli._app import FROM, TO
from ripp_core import CallState, Codec, RippConfig
from ripp_core.testing import INSECURE_CHECKS as INSECURE
from tests.call_harness import IDENTITY

TSHARK = shutil.which("tshark")
HEADERS = 1  # HTTP/3 frame type


def _need_tshark() -> str:
    if TSHARK is None:
        if os.environ.get("CI"):
            pytest.fail(
                "tshark is not installed: R22 requires proving that tshark decodes a call "
                "with the key log. Install the Debian package tshark (scripts/test does so "
                "when run as root)."
            )
        pytest.skip("tshark not installed")
    return TSHARK


def _tshark(tshark: str, *args: str) -> str:
    done = subprocess.run([tshark, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"tshark {' '.join(args)}:\n{done.stderr}"
    return done.stdout


async def _capture_a_call(tshark: str, home: Path, capture: Path, keys: Path) -> None:
    """Run a server and a client; capture the server's port with tshark during the call."""
    pki = _certs.ensure_local_pki(home)
    server_config = _certs.server_configuration(pki)
    client_config = _certs.client_configuration(pki)
    status = home / "tshark.stderr"
    with _certs.debugging(client_config, keylog_file=keys):
        async with ripp_trio.open_server(server_config, **INSECURE) as server:
            port = server.address[1]
            with status.open("w") as errors:
                process = subprocess.Popen(
                    [tshark, "-q", "-i", "lo", "-f", f"udp port {port}", "-w", str(capture)],
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                )
            try:
                await _wait_capturing(process, status)
                await _one_call(server, port, client_config)
                await trio.sleep(0.5)  # let the last datagrams reach the capture
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


async def _wait_capturing(process: subprocess.Popen[bytes], status: Path) -> None:
    """Until tshark says "Capturing on" (then a little longer: dumpcap starts after)."""
    deadline = time.monotonic() + 15
    while "Capturing on" not in status.read_text():
        if process.poll() is not None:
            text = status.read_text()
            if not os.environ.get("CI") and "ermission" in text:
                pytest.skip(f"tshark may not capture on lo here: {text.strip()}")
            pytest.fail(f"tshark exited {process.returncode}:\n{text}")
        if time.monotonic() > deadline:
            pytest.fail(f"tshark did not start capturing:\n{status.read_text()}")
        await trio.sleep(0.05)
    await trio.sleep(0.3)


async def _one_call(server: ripp_trio.Server, port: int, client_config: object) -> None:
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            async for call in server.calls():
                await call.answer()

        nursery.start_soon(answer)
        uri = f"https://localhost:{port}{RippConfig().calls_path}"
        async with ripp_trio.open_client(
            client_config, calls_uris=[uri], token="ripp-tshark"
        ) as client:
            call = await client.place_call(to=TO, from_=FROM, identity=IDENTITY)
            await call.wait_state(CallState.CONNECTED)
            for _ in range(5):
                call.send_audio(Codec.PCMU, 0.02, bytes(160))
            await trio.sleep(0.3)
            await call.terminate()
        nursery.cancel_scope.cancel()


def _header_blocks(fields: str) -> tuple[list[dict[str, str]], int]:
    """Decode the HEADERS payloads of ``-T fields -e http3.frame_type -e
    http3.frame_payload`` output; returns the decoded header lists and how many were
    skipped because they refer to the QPACK dynamic table."""
    blocks: list[dict[str, str]] = []
    skipped = 0
    for line in fields.splitlines():
        types_field, _, payloads_field = line.partition("\t")
        types = [int(t, 0) for t in types_field.split(",") if t]
        payloads = [bytes.fromhex(p.replace(":", "")) for p in payloads_field.split(",") if p]
        # One payload per frame, unless an empty frame had none: then try them all (a
        # non-HEADERS payload simply fails to decode).
        if len(types) == len(payloads):
            payloads = [p for t, p in zip(types, payloads, strict=True) if t == HEADERS]
        for payload in payloads:
            try:
                _, headers = pylsqpack.Decoder(4096, 16).feed_header(0, payload)
            except (pylsqpack.StreamBlocked, pylsqpack.DecompressionFailed):
                skipped += 1
                continue
            blocks.append({name.decode(): value.decode() for name, value in headers})
    return blocks, skipped


@pytest.mark.timeout(60)
def test_tshark_decodes_a_call_with_the_key_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tshark = _need_tshark()
    monkeypatch.setenv("RIPP_HOME", str(tmp_path))
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    capture, keys = tmp_path / "call.pcapng", tmp_path / "keys.log"
    trio.run(_capture_a_call, tshark, tmp_path, capture, keys)
    assert "CLIENT_TRAFFIC_SECRET_0 " in keys.read_text()

    # Without the key log: QUIC packets, but nothing tshark can read as HTTP/3.
    quic = _tshark(tshark, "-r", str(capture), "-o", "tls.keylog_file:", "-Y", "quic")
    assert quic.strip(), "the capture holds no QUIC packets"
    opaque = _tshark(
        tshark, "-r", str(capture), "-o", "tls.keylog_file:", "-Y", "http3",
        "-T", "fields", "-e", "http3.frame_type",
    )  # fmt: skip
    assert opaque.strip() == "", "tshark decoded HTTP/3 without the key log"

    # With it: tshark decrypts and parses the HTTP/3 frames.
    fields = _tshark(
        tshark, "-r", str(capture), "-o", f"tls.keylog_file:{keys}",
        "-Y", f"http3.frame_type == {HEADERS}",
        "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
        "-e", "http3.frame_type", "-e", "http3.frame_payload",
    )  # fmt: skip
    blocks, skipped = _header_blocks(fields)
    requests = [h for h in blocks if h.get(":path") == RippConfig().calls_path]
    assert requests, f"no call-creation request among {blocks} ({skipped} skipped)"
    (request,) = requests
    assert request[":method"] == "POST"
    assert request["to"] == TO
    created = [h for h in blocks if h.get(":status") == "201"]
    assert created, f"no 201 response among {blocks} ({skipped} skipped)"
    assert "/calls/" in created[0]["location"]
