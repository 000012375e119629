"""Media quality under loss on the real stack: early re-send against QUIC repair alone.

One process runs a ripp_trio server and client on 127.0.0.1 with the CLI's UDP impairment
relay between them (``ripp_cli._relay_thread.RelayThread``: the same relay ``ripp demo
--delay-ms --loss`` uses), so every datagram takes real sockets, real aioquic, TLS 1.3 and
real timers. Both ends play a 20 ms PCMU frame every 20 ms (``play``, paced in real time)
for the given seconds, at once in both directions, with the receiver's jitter buffer on
(the default). Per direction the result counts frames played (``MediaFrame`` items of
``audio()``), frames the jitter buffer dropped as late, the playout delay it ended with,
and the bandwidth the sender spent on early copies (codec bytes of copies per codec byte
of new frames).

The two variants (``early_resend`` on, the default, and off) run one after the other with
the same seed; the relay draws its loss from that seed, but the packets differ, so the
same seed does not drop the same frames in both.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import ripp_trio
from ripp_cli._relay_thread import RelayThread
from ripp_core import CallState, Codec, MediaFrame, RippConfig
from ripp_core.testing import INSECURE_CHECKS, Impairment

from . import (
    FRAME,
    FRAME_BYTES,
    IDENTITY,
    TOKEN,
    client_configuration,
    server_configuration,
    write_pki,
)

TAIL = 1.0  # seconds after the last frame for stragglers and the jitter buffer to drain


def _sender_cost(call: Any) -> tuple[int, float]:
    """Early copies and their bytes per byte of new frames (the call's ``SenderStats``)."""
    stats = call.stats().sender
    return stats.frames_early_resent, stats.bytes_early_resent / max(1, stats.bytes_sent)


async def _one(
    pki: Path, seconds: float, delay: float, loss: float, seed: int, early: bool
) -> dict[str, Any]:
    config = RippConfig(early_resend=early)
    frames = round(seconds / FRAME)
    payload = b"\xff" * FRAME_BYTES
    result: dict[str, Any] = {"early_resend": early, "seed": seed, "frames": frames}
    sides: dict[str, dict[str, Any]] = {}
    server_done = trio.Event()  # the client hangs up only once both ends have counted

    async def play_and_count(call: Any, name: str) -> None:
        for _ in range(frames):
            call.play(Codec.PCMU, FRAME, payload)
        played = 0
        with trio.move_on_after(seconds + TAIL + 2.0):
            async for item in call.audio():
                if isinstance(item, MediaFrame):
                    played += 1
                    if played >= frames:
                        break
        stats = call.stats()
        copies, cost = _sender_cost(call)
        sides[name] = {
            "received": {
                "played": played,
                "late": stats.receiver.late,
                "playout_delay_ms": stats.receiver.playout_delay * 1000,
            },
            "sent": {"early_resent": copies, "resent_per_sent": cost},
        }
        if name == "server":
            server_done.set()

    async with ripp_trio.open_server(
        server_configuration(pki), config=config, **INSECURE_CHECKS
    ) as server:
        with RelayThread(server.address, Impairment(delay=delay, loss=loss), seed) as relay:
            async with trio.open_nursery() as nursery:

                async def answer() -> None:
                    async for incoming in server.calls():
                        await incoming.answer()
                        nursery.start_soon(play_and_count, incoming, "server")
                        return

                nursery.start_soon(answer)
                uri = f"https://localhost:{relay.address[1]}/ripp/calls"
                async with ripp_trio.open_client(
                    client_configuration(pki), calls_uris=[uri], token=TOKEN, config=config
                ) as client:
                    call = await client.place_call(
                        to="<tel:+12125551234>",
                        from_="<tel:+14085551234>;tag=b",
                        identity=IDENTITY,
                    )
                    await call.wait_state(CallState.CONNECTED)
                    await play_and_count(call, "client")
                    with trio.move_on_after(TAIL + 2.0):
                        await server_done.wait()
                    await call.terminate()
    # A direction's playout is counted at its receiver, its copies at its sender.
    for direction, sender, receiver in (
        ("client_to_server", "client", "server"),
        ("server_to_client", "server", "client"),
    ):
        result[direction] = {**sides[receiver]["received"], **sides[sender]["sent"]}
    return result


def run(
    seeds: tuple[int, ...] = (1, 2, 3),
    seconds: float = 10.0,
    delay: float = 0.050,
    loss: float = 0.05,
) -> dict[str, Any]:
    """Both variants for every seed; machine load is the caller's to record."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        write_pki(pki)
        for seed in seeds:
            for early in (True, False):
                began = time.perf_counter()
                row = trio.run(_one, pki, seconds, delay, loss, seed, early)
                row["wall"] = time.perf_counter() - began
                runs.append(row)
    return {"seconds": seconds, "delay": delay, "loss": loss, "runs": runs}


def _main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loss_real", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("seeds", nargs="*", type=int, default=[1, 2, 3], help="relay seeds")
    parser.add_argument("--seconds", type=float, default=10.0, help="media per run")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="one-way delay")
    parser.add_argument("--loss", type=float, default=0.05, help="loss per datagram")
    args = parser.parse_args()
    result = run(
        seeds=tuple(args.seeds), seconds=args.seconds, delay=args.delay_ms / 1000, loss=args.loss
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    _main()
