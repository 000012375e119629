"""A call recorder: places a call, plays a WAV file (or a tone), records both directions to
a stereo WAV aligned to the clock (left: the far end, right: us), and hangs up once what it
played has been heard.

    ripp serve --port 4433 &                # an echo server
    python examples/record_call.py https://localhost:4433/ripp/calls --out call.wav

Prints one JSON line: the call's end, seconds recorded and each channel's level.
"""

from __future__ import annotations

import argparse
import json
import wave
from pathlib import Path

import numpy as np
import trio

import ripp_trio as ripp
from ripp_audio import CallRecorder, VoiceCall, level_dbfs, read_wav, tone
from ripp_cli.local import client_tls, local_caller
from ripp_core import CallState, Codec

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"
CODECS = {"pcmu": Codec.PCMU, "pcma": Codec.PCMA, "opus": Codec.OPUS}


async def main(args: argparse.Namespace) -> None:
    # A default `ripp serve` takes only calls with a valid access token and a verified
    # PASSporT: the local issuer's token and the local STI certificate give both.
    with local_caller() as caller:
        async with ripp.open_client(
            client_tls(), calls_uris=[args.uri], token=args.token or caller.token
        ) as client:
            call = await client.place_call(to=TO, from_=FROM, identity=caller.identity(TO, FROM))
            await record(call, args)


async def record(call: ripp.Call, args: argparse.Namespace) -> None:
    """Play, record both sides, hang up once heard; print the JSON line."""
    await call.wait_state(CallState.CONNECTED)
    voice = VoiceCall(
        call,
        rate=16000,
        codec=CODECS[args.codec],
        recorder=CallRecorder(args.out, rate=args.rate),
    )
    if args.wav is not None:
        voice.play(*read_wav(args.wav))
    else:
        voice.play(tone(440.0, args.seconds, 16000), 16000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_listen, voice)  # the far end's side of the recording
        ended = await voice.hang_up()  # after our audio has been heard
        nursery.cancel_scope.cancel()
    with wave.open(str(args.out)) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        seconds = wav.getnframes() / wav.getframerate()
    print(
        json.dumps(
            {
                "ended": ended.code,
                "seconds": round(seconds, 2),
                "far_dbfs": round(level_dbfs(frames[:, 0]), 1),
                "near_dbfs": round(level_dbfs(frames[:, 1]), 1),
                "out": str(args.out),
            }
        ),
        flush=True,
    )


async def _listen(voice: VoiceCall) -> None:
    async for _ in voice.events():
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uri", help="calls URI, e.g. https://localhost:4433/ripp/calls")
    parser.add_argument("--out", type=Path, default=Path("call.wav"))
    parser.add_argument("--wav", type=Path, help="play this WAV (else a 440 Hz tone)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the tone")
    parser.add_argument("--codec", choices=sorted(CODECS), default="pcmu")
    parser.add_argument("--rate", type=int, default=8000, help="sample rate of the recording")
    parser.add_argument("--token", help="bearer token (default: one of the local issuer)")
    trio.run(main, parser.parse_args())
