"""The rolling-upgrade exercise: calls run while every instance of a local cluster is
replaced in turn (SIGTERM: it drains its calls to the others through the store, exits,
and a new instance takes its port). What it reports:

* ``client_frames_unacked``: frames the client sent that no server acknowledged (lost
  client -> server; must be 0);
* ``server_sequence_holes``: sequence numbers missing from what the client received
  (lost server -> client; must be 0: a hand-over carries every unacknowledged frame);
* ``max_gap_ms``: the largest interval between two frames arriving at the client, and
  ``added_delay_ms`` that minus the frame interval (what a move costs a listener);
* ``moves``: how many times the calls changed instance.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import trio

from ripp_cli import _certs
from ripp_cli._app import _resolve
from ripp_cli.local import local_caller
from ripp_core import CallState, Codec, MediaFrame, RippConfig
from ripp_trio import open_client

from ._local import LocalCluster

FRAME = 0.02


async def rolling_upgrade(
    cluster: LocalCluster,
    ca: Path,
    *,
    calls: int = 3,
    settle: float = 1.0,
    token: str | None = None,
) -> dict[str, Any]:
    """Run ``calls`` echoed calls through the cluster while replacing every instance.
    ``token``: the bearer token to use (default: one of the local issuer, whose STI
    certificate also signs the PASSporTs, so that an authenticating cluster takes the
    calls)."""
    with local_caller() as caller:
        return await _exercise(cluster, ca, calls, settle, token or caller.token, caller.identity)


async def _exercise(
    cluster: LocalCluster,
    ca: Path,
    calls: int,
    settle: float,
    token: str,
    identity: Any,
) -> dict[str, Any]:
    config = _certs.client_configuration_from_ca(ca, "localhost")
    to, from_ = "<tel:+12125551234>", "<tel:+14085551234>"
    arrivals: list[list[tuple[float, int]]] = [[] for _ in range(calls)]
    uris: list[list[str]] = [[] for _ in range(calls)]
    sent = [0] * calls
    async with open_client(
        config,
        calls_uris=[cluster.calls_uri],
        token=token,
        resolver=_resolve,
        # Frames as they arrive: a jitter buffer would skip late ones, and a hole must
        # mean a frame the network path lost, not one played out too late.
        config=RippConfig(jitter_buffer=False),
    ) as client:
        placed = [
            await client.place_call(to=to, from_=from_, identity=identity(to, from_))
            for _ in range(calls)
        ]
        with trio.fail_after(15):
            for call in placed:
                await call.wait_state(CallState.CONNECTED)

        async def collect(index: int) -> None:
            call = placed[index]
            async for item in call.audio():
                if isinstance(item, MediaFrame):
                    arrivals[index].append((trio.current_time(), item.sequence))
                if call.uri is not None and (not uris[index] or uris[index][-1] != call.uri):
                    uris[index].append(call.uri)

        async def stream(done: trio.Event) -> None:
            start = trio.current_time()
            for tick in itertools.count(1):
                for index, call in enumerate(placed):
                    call.send_audio(Codec.PCMU, FRAME, bytes([tick % 256]) * 160)
                    sent[index] += 1
                if done.is_set():
                    return
                await trio.sleep_until(start + tick * FRAME)

        upgraded = trio.Event()
        async with trio.open_nursery() as nursery:
            for index in range(calls):
                nursery.start_soon(collect, index)
            nursery.start_soon(stream, upgraded)
            await trio.sleep(settle)
            split = [len(rows) for rows in arrivals]  # the upgrade phase starts here
            for index in range(len(cluster.instances)):
                # Blocking process management: run it beside the event loop.
                await trio.to_thread.run_sync(cluster.replace, index)
                await trio.sleep(settle)
            upgraded.set()
            await trio.sleep(settle)  # let the last acknowledgements come in
            unacked = sum(
                c.stats().sender.frames_sent - c.stats().sender.frames_acked for c in placed
            )
            states = [c.state for c in placed]
            for call in placed:
                await call.terminate()
            nursery.cancel_scope.cancel()
    holes = 0
    max_gap = 0.0
    echoed = sum(len({seq for _, seq in rows[: split[i]]}) for i, rows in enumerate(arrivals))
    for index, all_rows in enumerate(arrivals):
        rows = all_rows[split[index] :]
        sequences = sorted({seq for _, seq in rows})
        echoed += len(sequences)
        if sequences:
            holes += sequences[-1] - sequences[0] + 1 - len(sequences)
        times = [t for t, _ in rows]
        max_gap = max([max_gap, *(b - a for a, b in itertools.pairwise(times))])
    return {
        "calls": calls,
        "instances_replaced": len(cluster.instances),
        "all_connected": all(state is CallState.CONNECTED for state in states),
        "moves": sum(len(u) - 1 for u in uris),
        "path_of_each_call": [[u.split("/")[-3] for u in rows] for rows in uris],
        "frames_sent": sum(sent),
        "client_frames_unacked": unacked,
        "server_sequence_holes": holes,
        "echo_missing": sum(sent) - echoed,
        "max_gap_ms": round(max_gap * 1000, 1),
        "added_delay_ms": round(max(0.0, max_gap - FRAME) * 1000, 1),
    }
