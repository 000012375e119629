"""Call set-up: how many calls one client can set up and tear down against one server.

Client and server are separate processes on 127.0.0.1 (the server is the capacity
benchmark's, in ``--mode setup``: it answers every call at once and sends no media). The
client runs the calls back to back
(``parallel`` 1) and then with 10 in flight; before each batch as many unmeasured calls
as it runs at once open the connections it needs. For each call it measures the set-up latency
from ``place_call`` (the call request leaves) to CONNECTED, then hangs up (terminate) before
the next one starts in that slot. The rate is calls completed (set up and torn down) per
second of wall time.

Baseline: bare H3 request/response round trips on the same stack: a POST with the same
header fields as RIPP's call request (no body), answered ``201`` with a Location, on one
open connection, timed from send to response headers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from aioquic.h3.events import H3Event, HeadersReceived

from ripp_core import CallState

from . import (
    HOST,
    IDENTITY,
    TOKEN,
    client_configuration,
    cpu_seconds,
    latency_summary,
    read_line,
    reap,
    spawn,
    write_pki,
)
from .bare_h3 import BareConnection, BareDriver, BareEndpoint, udp_socket
from .capacity import BarePool, _cpu_between, bare_request, machine_busy_seconds, ripp_config

PARALLEL = (1, 10)


async def _batches(
    one: Callable[[int], Awaitable[float]], calls: int, out: dict[str, Any]
) -> None:
    """Run ``calls`` set-ups at each parallelism; record latencies, wall time, CPU.

    Before each batch, ``parallel`` calls run at once unmeasured, so that the connections
    the batch needs (RIPP pools 8 calls per connection) are open and warm.
    """
    number = 0
    for parallel in PARALLEL:
        async with trio.open_nursery() as warmup:
            for n in range(number, number + parallel):
                warmup.start_soon(one, n)
        number += parallel
        latencies: list[float] = []
        queue = list(range(number, number + calls))
        number += calls
        t0, c0, m0 = time.monotonic(), cpu_seconds(), machine_busy_seconds()
        with trio.move_on_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(parallel):
                    nursery.start_soon(_worker, one, queue, latencies)
        t1, c1, m1 = time.monotonic(), cpu_seconds(), machine_busy_seconds()
        out[str(parallel)] = {
            "calls": len(latencies),
            "t0": t0,
            "t1": t1,
            "client_cpu": c1 - c0,
            "machine_busy": m1 - m0,
            "latencies": latencies,
        }


async def _worker(
    one: Callable[[int], Awaitable[float]], queue: list[int], latencies: list[float]
) -> None:
    while queue:
        latencies.append(await one(queue.pop()))


async def ripp_setup(args: argparse.Namespace, out: dict[str, Any]) -> None:
    with contextlib.ExitStack() as stack:
        token, identity = TOKEN, lambda to, from_: IDENTITY
        if args.auth is not None:
            # What `ripp call` presents to a default `ripp serve`: a token of the local
            # issuer, and a PASSporT signed per call by the local STI certificate, whose
            # x5u this process serves over HTTPS on loopback (ripp_cli.local).
            from ripp_cli.local import local_caller

            caller = stack.enter_context(local_caller(directory=args.auth))
            token, identity = caller.token, caller.identity
        await _ripp_setup(args, out, token, identity)


async def _ripp_setup(
    args: argparse.Namespace, out: dict[str, Any], token: str, identity: Callable[[str, str], str]
) -> None:
    from ripp_trio import open_client

    async with open_client(
        client_configuration(args.pki),
        calls_uris=[f"https://localhost:{args.port}/ripp/calls"],
        token=token,
        config=ripp_config(),
    ) as client:

        async def one(n: int) -> float:
            to, from_ = f"<tel:+1212{n:07d}>", "<tel:+14085550100>;tag=b"
            began = time.monotonic()
            call = await client.place_call(to=to, from_=from_, identity=identity(to, from_))
            await call.wait_state(CallState.CONNECTED)
            latency = time.monotonic() - began
            await call.terminate()
            return latency

        await _batches(one, args.calls, out)
        connections = client.endpoint._connections
        out["connections"] = len(connections)
        out["streams"] = sum(c.quic._local_next_stream_id_bidi // 4 for c in connections)


async def bare_setup(args: argparse.Namespace, out: dict[str, Any]) -> None:
    answers: dict[tuple[int, int], trio.Event] = {}

    def on_event(connection: BareConnection, event: H3Event, now: float) -> None:
        if isinstance(event, HeadersReceived):
            answered = answers.pop((id(connection), event.stream_id), None)
            if answered is not None:
                answered.set()

    endpoint = BareEndpoint(client_configuration(args.pki), on_event)
    sock = udp_socket(HOST, 0)
    driver = BareDriver(endpoint, sock)
    pool = BarePool(endpoint, driver, args.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.serve)
        connection = await pool.connection()

        async def one(n: int) -> float:
            began = time.monotonic()
            stream_id = bare_request(connection, "/setup", n, end_stream=True)
            answered = answers[(id(connection), stream_id)] = trio.Event()
            endpoint.touch(connection)
            driver.flush()
            await answered.wait()
            return time.monotonic() - began

        await _batches(one, args.calls, out)
        out["connections"] = len(endpoint.connections)
        driver.goodbye()
        nursery.cancel_scope.cancel()
    sock.close()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.setup")
    parser.add_argument("--stack", choices=["ripp", "bare"], required=True)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--lifetime", type=float, default=300.0)
    parser.add_argument("--auth", type=Path, help="ripp: authenticate as ripp call does")
    args = parser.parse_args()
    logging.getLogger("ripp").setLevel(logging.ERROR)
    out: dict[str, Any] = {"stack": args.stack}

    async def main() -> None:
        with trio.move_on_after(args.lifetime):
            await (ripp_setup if args.stack == "ripp" else bare_setup)(args, out)

    try:
        trio.run(main)
    finally:
        args.out.write_text(json.dumps(out))


def run_stack(
    stack: str, calls: int, pki: Path, auth: Path | None = None, label: str | None = None
) -> dict[str, Any]:
    """Set-up figures of one stack: per parallelism, rate, latency and CPU per call.

    ``auth`` (RIPP only): a ripp home (``RIPP_HOME``) with the local issuer and STI-CA;
    the server then runs ``ripp serve``'s default checks and the client presents what
    ``ripp call`` does (see :func:`benchmarks.capacity.server_checks`).
    """
    lifetime = 300.0
    checks = ["--auth", str(auth)] if auth is not None else []
    with tempfile.TemporaryDirectory(prefix="ripp-setup-") as tmp:
        server_out, client_out = Path(tmp) / "server", Path(tmp) / "client.json"
        server = spawn(
            "benchmarks.capacity", "server", "--stack", stack, "--pki", str(pki),
            "--out", str(server_out), "--lifetime", str(lifetime + 30), "--mode", "setup",
            *checks,
        )  # fmt: skip
        try:
            port = read_line(server, "PORT ", timeout=30)
            client = spawn(
                "benchmarks.setup", "--stack", stack, "--pki", str(pki), "--out",
                str(client_out), "--port", port, "--calls", str(calls),
                "--lifetime", str(lifetime), *checks,
            )  # fmt: skip
            reap(client, timeout=lifetime + 30)
        finally:
            reap(server, timeout=30)
        result = json.loads(client_out.read_text())
        server_meta = json.loads(server_out.with_suffix(".json").read_text())
    rows = {}
    for parallel in PARALLEL:
        batch = result.get(str(parallel))
        if batch is None:
            raise RuntimeError(f"{stack} set-up client did not finish parallel={parallel}")
        done = max(batch["calls"], 1)
        elapsed = batch["t1"] - batch["t0"]
        server_cpu = _cpu_between(server_meta["cpu"], batch["t0"], batch["t1"])
        rows[parallel] = {
            "calls": batch["calls"],
            "rate": batch["calls"] / elapsed,
            "latency_ms": latency_summary(batch["latencies"]),
            "client_cpu_ms": 1000 * batch["client_cpu"] / done,
            "server_cpu_ms": 1000 * server_cpu / done,
            "other_load_pct": 100
            * (batch["machine_busy"] - batch["client_cpu"] - server_cpu)
            / max(elapsed, 1e-9),
        }
    return {
        "stack": label or stack,
        "authenticated": auth is not None,
        "connections": result.get("connections"),
        "streams": result.get("streams"),
        "rows": rows,
    }


#: The set-up stacks: RIPP with ``ripp serve``'s default checks (label ``ripp``), RIPP
#: accepting any token and Identity (``ripp-noauth``, the capacity runs' setting, so the
#: checks' cost shows), and the bare H3 baseline (no checks at all).
STACKS = ("ripp", "ripp-noauth", "bare")


def run(calls: int = 500, stacks: tuple[str, ...] = STACKS) -> list[dict[str, Any]]:
    """Set-up figures of each stack, one after the other, against fresh processes."""
    with tempfile.TemporaryDirectory(prefix="ripp-pki-") as tmp:
        write_pki(Path(tmp))
        home = Path(tmp) / "ripp-home"
        _local_credentials(home)
        results = []
        for label in stacks:
            if label == "ripp":
                results.append(run_stack("ripp", calls, Path(tmp), auth=home, label=label))
            elif label == "ripp-noauth":
                results.append(run_stack("ripp", calls, Path(tmp), label=label))
            else:
                results.append(run_stack(label, calls, Path(tmp)))
        return results


def _local_credentials(home: Path) -> None:
    """The local TLS PKI, token issuer and STI-CA of a ripp home, made before the two
    processes start (so that they do not both make them)."""
    from ripp_cli._certs import ensure_local_pki
    from ripp_cli._issuer import ensure_local_issuer
    from ripp_cli._sti import ensure_local_sti

    ensure_local_pki(home)
    ensure_local_issuer(home)
    ensure_local_sti(home)


if __name__ == "__main__":
    _main()
