"""Calls kept up per machine with K worker processes against one (issue 9).

    python -m benchmarks.cluster [--workers 1 2] [--calls 40 80 120] [--seconds 5]

Each worker is one server process of :mod:`benchmarks.capacity` with a client process of
its own; the K pairs run at once and share the machine, and a total of N calls is split
evenly over them (as the forwarder of ``ripp cluster`` spreads client sockets; call
media goes straight to the owning instance, so the forwarder is not on the media path).
The same for the ``bare`` stack (aioquic, one request per call, no acks). A point *keeps
up* when every call connected, at least 95 % of the frames of each direction arrived and
the p99 latency stayed under 1 s (capacity's definitions), in every pair.

What it leaves out, by design: the call store. A call costs Redis six writes in its life
plus one snapshot a second (``store_snapshot_interval``), against 100 frames a second of
media; the measured fail-over and upgrade figures are in docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import write_pki
from .capacity import _measure_point, machine_busy_seconds


def run_cluster_point(
    stack: str, workers: int, calls: int, seconds: float, pki: Path
) -> dict[str, Any]:
    """K (server, client) pairs at once, ``calls`` in total; the pairs' figures merged."""
    share = [calls // workers + (1 if i < calls % workers else 0) for i in range(workers)]
    busy0, t0 = machine_busy_seconds(), time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        points = list(pool.map(lambda n: _measure_point(stack, n, seconds, pki), share))
    busy = 100 * (machine_busy_seconds() - busy0) / (time.monotonic() - t0)
    return {
        "stack": stack,
        "workers": workers,
        "calls": calls,
        "connected": sum(p["connected"] for p in points),
        "delivered_pct": min(p["delivered_pct"] for p in points),
        "p99_ms": max(max(p["c2s"]["p99_ms"], p["s2c"]["p99_ms"]) for p in points),
        "server_core_pct": sum(p["server_core_pct"] for p in points),
        "client_core_pct": sum(p["client_core_pct"] for p in points),
        "machine_busy_pct": busy,
        "kept_up": not any(p["saturated"] for p in points),
    }


def main() -> None:
    """Measure and print one JSON line per point, then the summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--calls", type=int, nargs="+", default=[40, 80, 120])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stacks", nargs="+", default=["ripp", "bare"])
    args = parser.parse_args()
    kept: dict[tuple[str, int], int] = {}
    with tempfile.TemporaryDirectory(prefix="ripp-pki-") as tmp:
        write_pki(Path(tmp))
        for stack in args.stacks:
            for workers in args.workers:
                for calls in args.calls:
                    point = run_cluster_point(stack, workers, calls, args.seconds, Path(tmp))
                    print(json.dumps(point), flush=True)
                    if point["kept_up"]:
                        kept[stack, workers] = max(kept.get((stack, workers), 0), calls)
    for (stack, workers), calls in sorted(kept.items()):
        print(f"{stack:<4} {workers} worker(s): kept up {calls} calls", flush=True)


if __name__ == "__main__":
    main()
