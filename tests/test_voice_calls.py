"""The voice-application API (ripp_audio.VoiceCall) on live calls over real UDP and TLS.

Server and client run in one event loop on 127.0.0.1; the server side is a VoiceCall
application, the client a plain Call that sends and counts frames.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import ripp_asyncio
import ripp_trio
from ripp_audio import (
    AudioChunk,
    BargeIn,
    CallRecorder,
    ChunkKind,
    EnergyVad,
    VoiceCall,
    encoder_for,
    level_dbfs,
    tone,
)
from ripp_cli.local import client_tls, dev_identity, dev_identity_verifier, server_tls
from ripp_core import CallState, Codec, DtmfReceived, MediaFrame, insecure_accept_any_bearer

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"
ServerApp = Callable[[Any], Awaitable[None]]
ClientApp = Callable[[Any], Awaitable[None]]


@pytest.fixture(autouse=True)
def _ripp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPP_HOME", str(tmp_path / "pki"))


async def _call_pair(ripp: Any, server_app: ServerApp, client_app: ClientApp, spawn: Any) -> None:
    async with ripp.open_server(
        server_tls(), authorizer=insecure_accept_any_bearer, identity_verifier=dev_identity_verifier
    ) as server:
        uri = f"https://localhost:{server.address[1]}/ripp/calls"

        async def serve_one() -> None:
            async for call in server.calls():
                await call.ring()
                await call.answer()
                await server_app(call)
                return

        spawn(serve_one)
        async with ripp.open_client(client_tls(), calls_uris=[uri], token="t") as client:
            call = await client.place_call(to=TO, from_=FROM, identity=dev_identity(TO, FROM))
            await call.wait_state(CallState.CONNECTED)
            await client_app(call)


def run_trio(server_app: ServerApp, client_app: ClientApp, timeout: float = 20.0) -> None:
    async def main() -> None:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                await _call_pair(ripp_trio, server_app, client_app, nursery.start_soon)

    trio.run(main)


def run_asyncio(server_app: ServerApp, client_app: ClientApp, timeout: float = 20.0) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as tasks:
            await _call_pair(ripp_asyncio, server_app, client_app, lambda f: tasks.create_task(f()))

    asyncio.run(main())


async def count_frames(call: Any, into: list[MediaFrame]) -> None:
    async for item in call.audio():
        if isinstance(item, MediaFrame):
            into.append(item)


RUNNERS = pytest.mark.parametrize("runner", [run_trio, run_asyncio], ids=["trio", "asyncio"])


@RUNNERS
def test_hang_up_after_playout_delivers_everything_queued(runner: Any) -> None:
    received: list[MediaFrame] = []
    ended: list[Any] = []

    async def server(call: Any) -> None:
        voice = VoiceCall(call, rate=16000)
        assert voice.play(tone(440.0, 1.0, 16000), 16000) == 50
        ended.append(await voice.hang_up())

    runner(server, lambda call: count_frames(call, received))
    assert len(received) == 50  # every frame queued was played before the hang-up
    assert ended[0].code == 200


def test_plain_terminate_still_drops_queued_audio() -> None:
    """The contrast that makes after_playout necessary (and shows the test above can fail)."""
    received: list[MediaFrame] = []

    async def server(call: Any) -> None:
        voice = VoiceCall(call, rate=16000)
        voice.play(tone(440.0, 1.0, 16000), 16000)
        await voice.hang_up(after_playout=False)

    run_trio(server, lambda call: count_frames(call, received))
    assert len(received) < 10


def test_far_end_hanging_up_ends_a_pending_playout_wait() -> None:
    ended: list[Any] = []

    async def server(call: Any) -> None:
        voice = VoiceCall(call)
        voice.play(tone(440.0, 5.0, 16000), 16000)
        ended.append(await voice.hang_up())  # waits for playout; the caller leaves first

    async def client(call: Any) -> None:
        await trio.sleep(0.3)
        await call.terminate()

    run_trio(server, client)
    assert ended[0].code == 200 and ended[0].by.name == "REMOTE"


def test_barge_in_clears_the_prompt_and_dtmf_and_audio_arrive_apart(tmp_path: Path) -> None:
    received: list[MediaFrame] = []
    seen: list[Any] = []
    recording = tmp_path / "call.wav"

    async def server(call: Any) -> None:
        voice = VoiceCall(
            call, rate=16000, vad=EnergyVad(), recorder=CallRecorder(recording, rate=8000)
        )
        voice.play(tone(300.0, 4.0, 16000, amplitude=0.2), 16000)  # a long prompt
        async for event in voice.events():
            seen.append(event)
            if isinstance(event, DtmfReceived) and event.digit == "#":
                await voice.hang_up()

    async def client(call: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_frames, call, received)
            await trio.sleep(0.5)
            encoder = encoder_for(Codec.PCMU, 0.02)
            speech = tone(600.0, 0.6, 8000, amplitude=0.3)
            for i in range(30):  # the caller talks over the prompt
                call.play(Codec.PCMU, 0.02, encoder.encode(speech[i * 160 : (i + 1) * 160]))
            call.send_dtmf("42#")
            await call.wait_ended()

    run_trio(server, client)
    barge = [e for e in seen if isinstance(e, BargeIn)]
    assert len(barge) == 1 and barge[0].dropped > 100  # most of the 200-frame prompt
    assert len(received) < 120
    assert [e.digit for e in seen if isinstance(e, DtmfReceived)] == ["4", "2", "#"]
    chunks = [e for e in seen if isinstance(e, AudioChunk)]
    assert {c.rate for c in chunks} == {16000}
    assert ChunkKind.SILENCE in {c.kind for c in chunks}  # the digits' own frames

    with wave.open(str(recording)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    far, near = frames[:, 0], frames[:, 1]
    # The caller's speech is on the left; our prompt on the right stops at the barge-in.
    loud_far = np.flatnonzero([level_dbfs(far[i : i + 80]) > -20 for i in range(0, far.size, 80)])
    loud_near = np.flatnonzero(
        [level_dbfs(near[i : i + 80]) > -30 for i in range(0, near.size, 80)]
    )
    assert loud_far.size and loud_near.size
    speech_start = loud_far[0] / 100  # in seconds, 10 ms blocks
    prompt_end = loud_near[-1] / 100
    assert 0.4 < speech_start < 1.2
    assert speech_start - 0.1 < prompt_end < speech_start + 0.5  # cut at the barge-in
    assert loud_near[0] / 100 < 0.1  # the prompt started at the beginning


def test_a_caller_sending_garbage_beside_a_good_one() -> None:
    """Corrupt Opus payloads (right size, wrong content) are concealed on that call; a good
    call on the same server is decoded as usual; neither stream stops."""
    results: dict[str, list[AudioChunk]] = {}

    async def main() -> None:
        async with ripp_trio.open_server(
            server_tls(),
            authorizer=insecure_accept_any_bearer,
            identity_verifier=dev_identity_verifier,
        ) as server:
            uri = f"https://localhost:{server.address[1]}/ripp/calls"

            async def serve(call: Any) -> None:
                await call.answer()
                chunks = results.setdefault(call.incoming.from_.uri, [])
                async for event in VoiceCall(call, rate=16000).events():
                    if isinstance(event, AudioChunk):
                        chunks.append(event)

            async def caller(number: str, payload: Callable[[int], bytes], codec: Codec) -> None:
                async with ripp_trio.open_client(client_tls(), calls_uris=[uri], token="t") as c:
                    from_ = f"<tel:{number}>"
                    call = await c.place_call(to=TO, from_=from_, identity=dev_identity(TO, from_))
                    await call.wait_state(CallState.CONNECTED)
                    for i in range(25):
                        call.play(codec, 0.02, payload(i))
                    await call.terminate(after_playout=True)

            opus = encoder_for(Codec.OPUS, 0.02)
            speech = tone(440.0, 0.5, 48000)
            good = [opus.encode(speech[i * 960 : (i + 1) * 960]) for i in range(25)]
            async with trio.open_nursery() as nursery:

                async def accept() -> None:
                    async for call in server.calls():
                        nursery.start_soon(serve, call)

                nursery.start_soon(accept)
                async with trio.open_nursery() as callers:
                    callers.start_soon(caller, "+15550001", lambda i: b"\xff\xfe" * 40, Codec.OPUS)
                    callers.start_soon(caller, "+15550002", lambda i: good[i], Codec.OPUS)
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()

    async def bounded() -> None:
        with trio.fail_after(20):
            await main()

    trio.run(bounded)
    bad, fine = results["tel:+15550001"], results["tel:+15550002"]
    assert sum(c.samples.size for c in bad) >= 0.45 * 16000  # the timeline kept going
    assert {c.kind for c in bad} == {ChunkKind.CONCEALED}
    assert sum(c.samples.size for c in fine) >= 0.45 * 16000
    decoded = [c for c in fine if c.kind is ChunkKind.DECODED]
    assert len(decoded) >= 24
    assert level_dbfs(np.concatenate([c.samples for c in decoded])) > -20
