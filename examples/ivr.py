"""An IVR menu driven by DTMF: the caller picks 1 (sales) or 2 (support, with a sub-menu),
* repeats the menu, 0 goes back to the top, # hangs up. Prompts are tone patterns (N beeps
for menu N), standing in for recorded prompts; ``--prompts DIR`` plays DIR/<menu>.wav instead.

    python examples/ivr.py --port 4433
    ripp call https://localhost:4433/ripp/calls    # ripp call sends no DTMF; see the test

The first line printed is the calls URI; then one JSON line per menu step and per call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import trio

import ripp_trio as ripp
from ripp_audio import VoiceCall, read_wav, tone
from ripp_cli.local import server_tls
from ripp_core import DtmfReceived, insecure_accept_any_bearer, insecure_accept_any_identity

RATE = 8000

#: The menu as a table: (menu, digit) -> (what happens, next menu or None to hang up).
MENU: dict[tuple[str, str], tuple[str, str | None]] = {
    ("main", "1"): ("sales", "sales"),
    ("main", "2"): ("support", "support"),
    ("support", "1"): ("billing", "billing"),
    ("support", "2"): ("technical", "technical"),
}
#: Digits that mean the same in every menu.
ANYWHERE = {"*": "repeat", "0": "top", "#": "goodbye"}
BEEPS = {"main": 1, "sales": 2, "support": 3, "billing": 4, "technical": 5}


def step(menu: str, digit: str) -> tuple[str, str | None]:
    """The IVR's decision for ``digit`` pressed in ``menu``."""
    common = ANYWHERE.get(digit)
    if common == "repeat":
        return "repeat", menu
    if common == "top":
        return "top", "main"
    if common == "goodbye":
        return "goodbye", None
    return MENU.get((menu, digit), ("invalid", menu))


def prompt(menu: str, prompts: Path | None) -> tuple[np.ndarray, int]:
    """The prompt of ``menu``: a WAV from ``prompts``, or BEEPS[menu] beeps."""
    if prompts is not None and (prompts / f"{menu}.wav").exists():
        return read_wav(prompts / f"{menu}.wav")
    beep = np.concatenate([tone(880.0, 0.12, RATE), np.zeros(int(0.1 * RATE), dtype=np.int16)])
    return np.tile(beep, BEEPS[menu]), RATE


async def handle(call: ripp.ServerCall, args: argparse.Namespace) -> None:
    await call.answer()
    voice = VoiceCall(call, rate=RATE)
    menu: str | None = "main"
    voice.play(*prompt("main", args.prompts))
    async for event in voice.events():
        if not isinstance(event, DtmfReceived) or menu is None:
            continue
        action, menu = step(menu, event.digit)
        print(
            json.dumps(
                {"call": call.incoming.uri, "digit": event.digit, "action": action, "menu": menu}
            ),
            flush=True,
        )
        voice.clear()  # a key press interrupts the prompt playing now
        if menu is None:
            break
        voice.play(*prompt(menu, args.prompts))
    ended = await voice.hang_up()
    print(json.dumps({"call": call.incoming.uri, "ended": ended.code}), flush=True)


async def main(args: argparse.Namespace) -> None:
    async with ripp.open_server(
        server_tls(),
        host=args.host,
        port=args.port,
        authorizer=insecure_accept_any_bearer,
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
    parser.add_argument("--prompts", type=Path, help="directory of <menu>.wav prompts")
    trio.run(main, parser.parse_args())
