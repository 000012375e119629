"""The striping spiral under overload (issue 12, protocol §11.8), on the real stack.

One process runs a ``ripp_trio`` server and client on 127.0.0.1 (no relay, a ~0.1 ms
path) and places ``--calls`` two-way calls, each playing a 20 ms PCMU frame every 20 ms in
both directions. With enough calls the one event loop falls behind: timers fire late and
datagrams wait in the socket. Every half second the script samples the client's media
streams per call and, where the code has it, the mean lateness the calls measure.

Before protocol §11.8, the client read that lateness as path delay and loss and opened
more streams, which made each packet costlier for aioquic: a spiral. Run this file against
another checkout with ``PYTHONPATH=/that/checkout python benchmarks/spiral.py`` to compare
(it only uses APIs both have). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import ripp_trio
from ripp_core import CallState, Codec, MediaFrame
from ripp_core.testing import INSECURE_CHECKS, make_test_pki

IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIzNCJdfX0"
    ".c2ln;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
FRAME = 0.02


def _configs(directory: Path) -> tuple[Any, Any]:
    from datetime import UTC, datetime, timedelta

    from ripp_core.testing import client_quic_configuration, server_quic_configuration

    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))
    return server_quic_configuration(pki), client_quic_configuration(pki)


async def main(calls: int, seconds: float) -> dict[str, Any]:
    server_config, client_config = _configs(Path(tempfile.gettempdir()))
    payload = bytes(160)
    frames = round(seconds / FRAME)
    played = {"client": 0, "server": 0}
    samples: list[dict[str, float]] = []
    client_calls: list[Any] = []
    server_calls: list[Any] = []

    async def consume(call: Any, side: str) -> None:
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                played[side] += 1

    async with (
        ripp_trio.open_server(server_config, **INSECURE_CHECKS) as server,
        trio.open_nursery() as nursery,
    ):

        async def answer() -> None:
            async for incoming in server.calls():
                await incoming.answer()
                server_calls.append(incoming)
                for _ in range(frames):
                    incoming.play(Codec.PCMU, FRAME, payload)
                nursery.start_soon(consume, incoming, "server")

        nursery.start_soon(answer)
        uri = f"https://localhost:{server.address[1]}/ripp/calls"
        async with ripp_trio.open_client(client_config, calls_uris=[uri], token="t") as client:
            for n in range(calls):
                call = await client.place_call(
                    to="<tel:+12125551234>",
                    from_=f"<tel:+1408555{n:04d}>;tag=b",
                    identity=IDENTITY,
                )
                client_calls.append(call)
            for call in client_calls:
                await call.wait_state(CallState.CONNECTED)
                for _ in range(frames):
                    call.play(Codec.PCMU, FRAME, payload)
                nursery.start_soon(consume, call, "client")
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                await trio.sleep(0.5)
                cores = [c._endpoint.calls.get(c.handle) for c in client_calls]
                cores = [c for c in cores if c is not None]
                server_cores = [c._endpoint.calls.get(c.handle) for c in server_calls]
                server_cores = [c for c in server_cores if c is not None]
                lateness = [c.lateness.value for c in cores if hasattr(c, "lateness")]
                server_lateness = [c.lateness.value for c in server_cores if hasattr(c, "lateness")]
                samples.append(
                    {
                        "t": round(time.monotonic() - began, 2),
                        "streams_per_call": statistics.fmean(len(c.media_channels) for c in cores),
                        "client_lateness_ms": 1000 * statistics.fmean(lateness)
                        if lateness
                        else float("nan"),
                        "server_lateness_ms": 1000 * statistics.fmean(server_lateness)
                        if server_lateness
                        else float("nan"),
                    }
                )
            nursery.cancel_scope.cancel()
    expected = calls * frames
    cores = [c._endpoint.calls.get(c.handle) for c in client_calls + server_calls]
    senders = [c.sender for c in cores if c is not None]
    copies = sum(getattr(sender, "frames_early_resent", 0) for sender in senders)
    sent = sum(sender.stats(0.0).frames_sent for sender in senders)
    return {
        "early_copies_per_frame_sent": copies / max(1, sent),
        "calls": calls,
        "seconds": seconds,
        "streams_per_call": {
            "first": samples[0]["streams_per_call"],
            "max": max(s["streams_per_call"] for s in samples),
            "last": samples[-1]["streams_per_call"],
        },
        "played_pct": {side: 100 * n / expected for side, n in played.items()},
        "samples": samples,
        "loadavg_after": os.getloadavg(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python benchmarks/spiral.py")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    logging.getLogger("ripp").setLevel(logging.CRITICAL)  # calls failing under overload
    result = trio.run(main, args.calls, args.seconds)
    json.dump(result, sys.stdout)
    print()
