"""A voice bot: rings, greets, confirms DTMF digits, lets the caller talk over it (barge-in),
records each call to a stereo WAV, and hangs up once its goodbye has been heard.

    python examples/voice_bot.py --port 4433 --record calls/
    ripp call https://localhost:4433/ripp/calls        # in another terminal

The first line printed is the calls URI; then one JSON line per call. ``--calls N`` stops
after N calls (the test suite runs it with ``--port 0 --calls 1``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import trio

import ripp_trio as ripp
from ripp_audio import BargeIn, CallRecorder, EnergyVad, VoiceCall, read_wav, tone
from ripp_cli.local import server_tls
from ripp_core import DtmfReceived, insecure_accept_any_bearer, insecure_accept_any_identity

RATE = 16000


def chime(*frequencies: float, seconds: float = 0.25) -> np.ndarray:
    """Tones one after the other, with a short pause after each: our stand-in for speech."""
    pause = np.zeros(int(0.05 * RATE), dtype=np.int16)
    return np.concatenate([part for f in frequencies for part in (tone(f, seconds, RATE), pause)])


async def handle(call: ripp.ServerCall, args: argparse.Namespace) -> None:
    await call.ring()
    await trio.sleep(0.2)  # let it ring a moment, as a person would
    await call.answer()
    recording = None
    if args.record is not None:
        args.record.mkdir(parents=True, exist_ok=True)
        recording = args.record / f"call-{call.handle}.wav"
    voice = VoiceCall(
        call,
        rate=RATE,
        vad=EnergyVad(),
        recorder=CallRecorder(recording) if recording is not None else None,
    )
    if args.greeting is not None:
        samples, rate = read_wav(args.greeting)
        voice.play(samples, rate)
    else:
        voice.play(chime(523.0, 659.0, 784.0, 659.0, 523.0, 659.0, 784.0, 1047.0), RATE)
    digits, barge_ins = "", 0
    with trio.move_on_after(args.max_seconds):
        async for event in voice.events():
            if isinstance(event, BargeIn):
                barge_ins += 1  # the caller spoke over the greeting: it stopped
            elif isinstance(event, DtmfReceived):
                digits += event.digit
                if event.digit == "#":
                    voice.play(chime(784.0, 523.0), RATE)  # goodbye
                    break
                voice.play(chime(1200.0, seconds=0.08), RATE)  # "got it"
    ended = await voice.hang_up()  # after the goodbye has been heard
    line = {
        "call": call.incoming.uri,
        "from": call.incoming.from_.uri,
        "digits": digits,
        "barge_ins": barge_ins,
        "ended": ended.code,
        "recording": str(recording) if recording else None,
    }
    print(json.dumps(line), flush=True)


async def main(args: argparse.Namespace) -> None:
    async with ripp.open_server(
        server_tls(),
        host=args.host,
        port=args.port,
        authorizer=insecure_accept_any_bearer,  # development: any non-empty bearer token
        identity_verifier=insecure_accept_any_identity,
    ) as server:
        print(f"https://localhost:{server.address[1]}/ripp/calls", flush=True)
        async with trio.open_nursery() as nursery:
            served = 0
            async for call in server.calls():
                nursery.start_soon(handle, call, args)
                served += 1
                if served == args.calls:
                    break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433, help="0: any free port")
    parser.add_argument("--calls", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--record", type=Path, metavar="DIR", help="record each call here")
    parser.add_argument("--greeting", type=Path, help="a WAV file to greet with")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest call")
    trio.run(main, parser.parse_args())
