"""The Trio driver over real TCP on 127.0.0.1 (issue 8): RIPP over HTTP/2 with TLS (ALPN
h2) and h2c, and one process serving HTTP/3 and HTTP/2 at once."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

import ripp_asyncio
import ripp_trio
from ripp_core import CallEnded, CallMovedAway, CallState, Codec, MediaFrame, Termination
from ripp_core.aio import ServerCall
from ripp_core.testing import INSECURE_CHECKS, client_quic_configuration, make_test_pki
from ripp_core.testing import server_quic_configuration as h3_server_configuration
from tests.call_harness import IDENTITY

PKI = make_test_pki(
    ["localhost"], not_before=datetime.now(UTC) - timedelta(days=1), server_key_type="p256"
)
TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_bytes(PKI.server_cert_pem)
    key.write_bytes(PKI.server_key_pem)
    ca.write_bytes(PKI.ca_pem)
    return (
        ripp_trio.server_ssl_context(str(cert), str(key)),
        ripp_asyncio.client_ssl_context(str(ca)),
    )


async def _echo(call: ServerCall) -> None:
    """Answer, and send every audio frame back."""
    await call.ring()
    await call.answer()
    with contextlib.suppress(CallEnded, CallMovedAway):
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                call.send_audio(item.codec, item.duration, item.payload)


async def _call_and_echo(client: ripp_trio.Client, frames: int = 20) -> tuple[int, int]:
    call = await client.place_call(to=TO, from_=FROM, identity=IDENTITY)
    with trio.fail_after(10):
        await call.wait_state(CallState.CONNECTED)
    received = 0

    async def receive() -> None:
        nonlocal received
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                received += 1
                if received == frames:
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        for _ in range(frames):
            call.send_audio(Codec.PCMU, 0.02, bytes(160))
            await trio.sleep(0.02)
        with trio.fail_after(10):
            while received < frames:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    ended = await call.terminate()
    assert (ended.code, ended.by) == (200, Termination.LOCAL)
    return frames, received


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tls", [True, False], ids=["tls-alpn-h2", "h2c"])
def test_call_with_media_over_http2(tls: bool, tmp_path: Path) -> None:
    server_tls, client_tls = _tls(tmp_path) if tls else (None, None)

    async def main() -> tuple[int, int]:
        async with ripp_trio.open_h2_server(
            ssl_context=server_tls, authority=None, **INSECURE_CHECKS
        ) as server, trio.open_nursery() as nursery:
            nursery.start_soon(server.serve, _echo)
            port = server.address[1]
            async with ripp_trio.open_h2_client(
                calls_uris=[f"https://localhost:{port}/ripp/calls"],
                token="t",
                ssl_context=client_tls,
            ) as client:
                result = await _call_and_echo(client)
            nursery.cancel_scope.cancel()
        return result

    sent, received = trio.run(main)
    assert received == sent


@pytest.mark.timeout(60)
def test_tls_client_refuses_a_server_without_alpn_h2(tmp_path: Path) -> None:
    """A server that does not agree to ALPN h2 gets no call: the client fails it (503)."""
    server_tls, client_tls = _tls(tmp_path)
    server_tls.set_alpn_protocols(["http/1.1"])

    async def main() -> int:
        async with ripp_trio.open_h2_server(ssl_context=server_tls, **INSECURE_CHECKS) as server:
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            async with ripp_trio.open_h2_client(
                calls_uris=[uri], token="t", ssl_context=client_tls
            ) as client:
                call = await client.place_call(to=TO, from_=FROM, identity=IDENTITY)
                with trio.fail_after(10):
                    ended = await call.wait_ended()
                return ended.code

    assert trio.run(main) >= 400


@pytest.mark.timeout(60)
def test_one_process_serves_http3_and_http2_at_once(tmp_path: Path) -> None:
    server_tls, client_tls = _tls(tmp_path)

    async def main() -> list[tuple[int, int]]:
        async with (
            ripp_trio.open_server(h3_server_configuration(PKI), **INSECURE_CHECKS) as h3,
            ripp_trio.open_h2_server(ssl_context=server_tls, **INSECURE_CHECKS) as h2,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(h3.serve, _echo)
            nursery.start_soon(h2.serve, _echo)
            results = []
            async with ripp_trio.open_client(
                client_quic_configuration(PKI),
                calls_uris=[f"https://localhost:{h3.address[1]}/ripp/calls"],
                token="t",
            ) as quic_client:
                results.append(await _call_and_echo(quic_client, 10))
            async with ripp_trio.open_h2_client(
                calls_uris=[f"https://localhost:{h2.address[1]}/ripp/calls"],
                token="t",
                ssl_context=client_tls,
            ) as tcp_client:
                results.append(await _call_and_echo(tcp_client, 10))
            nursery.cancel_scope.cancel()
        return results

    assert trio.run(main) == [(10, 10), (10, 10)]


# ---------------------------------------------------------------- the asyncio driver
async def _asyncio_call_and_echo(client: ripp_asyncio.Client, frames: int) -> int:
    call = await client.place_call(to=TO, from_=FROM, identity=IDENTITY)
    await asyncio.wait_for(call.wait_state(CallState.CONNECTED), 10)
    received = 0

    async def receive() -> None:
        nonlocal received
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                received += 1
                if received == frames:
                    return

    receiving = asyncio.ensure_future(receive())
    for _ in range(frames):
        call.send_audio(Codec.PCMU, 0.02, bytes(160))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(receiving, 10)
    await call.terminate()
    return received


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tls", [True, False], ids=["tls-alpn-h2", "h2c"])
def test_asyncio_call_with_media_over_http2(tls: bool, tmp_path: Path) -> None:
    server_tls, client_tls = _tls(tmp_path) if tls else (None, None)

    async def main() -> int:
        async with ripp_asyncio.open_h2_server(ssl_context=server_tls, **INSECURE_CHECKS) as server:
            serving = asyncio.ensure_future(server.serve(_echo))
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            async with ripp_asyncio.open_h2_client(
                calls_uris=[uri], token="t", ssl_context=client_tls
            ) as client:
                received = await _asyncio_call_and_echo(client, 20)
            serving.cancel()
        return received

    assert asyncio.run(main()) == 20


@pytest.mark.timeout(60)
def test_trio_client_calls_an_asyncio_server_over_http2(tmp_path: Path) -> None:
    """The drivers interoperate over HTTP/2 as over HTTP/3 (C2)."""
    server_tls, client_tls = _tls(tmp_path)
    ready: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with ripp_asyncio.open_h2_server(ssl_context=server_tls, **INSECURE_CHECKS) as server:
            serving = asyncio.ensure_future(server.serve(_echo))
            ready.put(server.address[1])
            while not stop.is_set():
                await asyncio.sleep(0.05)
            serving.cancel()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        port = ready.get(timeout=10)

        async def main() -> tuple[int, int]:
            async with ripp_trio.open_h2_client(
                calls_uris=[f"https://localhost:{port}/ripp/calls"],
                token="t",
                ssl_context=client_tls,
            ) as client:
                return await _call_and_echo(client, 10)

        assert trio.run(main) == (10, 10)
    finally:
        stop.set()
        thread.join(10)
