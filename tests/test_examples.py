"""The programs in examples/ run as real processes over real sockets against real peers.

The voice bot and the IVR are servers: each runs as a subprocess (``--port 0 --calls 1``)
and this test calls it with a client that speaks and presses keys. The recorder is a
client: it calls a real ``ripp serve`` (echo) subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import ripp_trio
from ripp_audio import encoder_for, level_dbfs, tone
from ripp_cli.local import client_tls, dev_identity
from ripp_core import CallState, Codec, MediaFrame

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # Both processes share one local PKI, as two programs of one user would.
    monkeypatch.setenv("RIPP_HOME", str(tmp_path / "pki"))
    return {**os.environ, "RIPP_HOME": str(tmp_path / "pki"), "PYTHONUNBUFFERED": "1"}


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a server process; yield it and the calls URI it printed first."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "/ripp/calls" in first, proc.stderr.read() if proc.stderr else first
        yield proc, next(word for word in first.split() if word.endswith("/ripp/calls"))
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)


def finish(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Wait for a server example to exit after its one call; its JSON lines."""
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def call(uri: str, script: Callable[[Any, list[MediaFrame]], Awaitable[None]]) -> list[MediaFrame]:
    """Place one call to ``uri`` and run ``script`` on it; the frames that came back."""
    received: list[MediaFrame] = []

    async def main() -> None:
        with trio.fail_after(30):
            async with ripp_trio.open_client(client_tls(), calls_uris=[uri], token="t") as client:
                c = await client.place_call(to=TO, from_=FROM, identity=dev_identity(TO, FROM))
                await c.wait_state(CallState.CONNECTED)
                async with trio.open_nursery() as nursery:

                    async def collect() -> None:
                        async for item in c.audio():
                            if isinstance(item, MediaFrame):
                                received.append(item)

                    nursery.start_soon(collect)
                    await script(c, received)
                    await c.wait_ended()

    trio.run(main)
    return received


def speak(c: Any, seconds: float) -> None:
    encoder = encoder_for(Codec.PCMU, 0.02)
    speech = tone(600.0, seconds, 8000, amplitude=0.3)
    for i in range(int(seconds / 0.02)):
        c.play(Codec.PCMU, 0.02, encoder.encode(speech[i * 160 : (i + 1) * 160]))


def test_voice_bot(env: dict[str, str], tmp_path: Path) -> None:
    bot = [sys.executable, str(EXAMPLES / "voice_bot.py"), "--port", "0", "--calls", "1"]
    with process([*bot, "--record", str(tmp_path / "rec")], env) as (proc, uri):

        async def script(c: Any, received: list[MediaFrame]) -> None:
            while len(received) < 25:  # half a second of the greeting
                await trio.sleep(0.02)
            speak(c, 0.5)  # talk over it
            await trio.sleep(0.8)
            c.send_dtmf("7")
            await trio.sleep(0.5)
            c.send_dtmf("#")

        received = call(uri, script)
        (line,) = finish(proc)
    assert line["digits"] == "7#" and line["barge_ins"] == 1 and line["ended"] == 200
    # Greeting 2.4 s (120 frames) cut short; a 4-frame beep for the 7, a 30-frame goodbye
    # played out in full before the hang-up.
    assert 40 < len(received) < 110
    with wave.open(line["recording"]) as wav:
        assert wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert level_dbfs(frames[:, 0]) > -40 and level_dbfs(frames[:, 1]) > -40


def test_ivr(env: dict[str, str]) -> None:
    ivr = [sys.executable, str(EXAMPLES / "ivr.py"), "--port", "0", "--calls", "1"]
    with process(ivr, env) as (proc, uri):

        async def script(c: Any, received: list[MediaFrame]) -> None:
            for digit in "25*0#":
                await trio.sleep(0.4)
                c.send_dtmf(digit)

        call(uri, script)
        lines = finish(proc)
    steps = [(line["digit"], line["action"], line["menu"]) for line in lines if "digit" in line]
    assert steps == [
        ("2", "support", "support"),
        ("5", "invalid", "support"),
        ("*", "repeat", "support"),
        ("0", "top", "main"),
        ("#", "goodbye", None),
    ]
    assert lines[-1]["ended"] == 200


def test_record_call_against_ripp_serve(env: dict[str, str], tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "ripp_cli", "serve", "--port", "0"]
    out = tmp_path / "call.wav"
    with process(serve, env) as (_, uri):
        result = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "record_call.py"),
                uri,
                "--out",
                str(out),
                "--seconds",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
        )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["ended"] == 200
    assert 0.9 < line["seconds"] < 2.0
    # Our tone on the right; the echo of it on the left, a little later.
    with wave.open(str(out)) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    blocks = range(0, frames.shape[0] - 80, 80)
    near = [level_dbfs(frames[i : i + 80, 1]) > -30 for i in blocks]
    far = [level_dbfs(frames[i : i + 80, 0]) > -30 for i in blocks]
    assert near.index(True) < 3  # from the start
    assert 0 < far.index(True) - near.index(True) < 30  # the echo: RTT + jitter buffer
    assert sum(far) > 0.7 * sum(near)
