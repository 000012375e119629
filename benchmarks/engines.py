"""QUIC engines: CPU per call-second and datagrams per frame, aioquic against qh3.

A machine shared with other work cannot measure capacity by wall clock, but CPU time spent
on a fixed amount of work is far less disturbed. So this runs the whole thing in one
process and in **virtual time** on :class:`~ripp_core.testing.VirtualNetwork`: a
RippClient and a RippServer (real QUIC, HTTP/3 and TLS 1.3 of the engine under test), N
two-way G.711 calls, each a 20 ms PCMU frame every 20 ms in each direction, the calls
spread over twenty 1 ms send slots (as ``benchmarks/capacity.py``), no loss. Each point is
:func:`benchmarks.sendpath.run` with ``quic_engine`` set: the process's CPU over the media
window after 1 s of warm-up, split between client and server by the time spent in each.
The engines run alternately in the same process, ``repeat`` times, and the medians are
reported.

Virtual time flushes each endpoint after every input, where the real drivers flush once
per wake-up, so datagrams per frame is a property of the engine here, not a figure for
the real stack (``benchmarks/capacity.py`` measures that with its ``ripp-qh3`` stack).

``python -m benchmarks.engines [--calls 20,40] [--seconds 5] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from ripp_core.testing import TestPki, make_test_pki

from . import sendpath, table


def run_point(pki: TestPki, engine: str, calls: int, seconds: float) -> dict[str, Any]:
    """One engine, ``calls`` two-way calls for ``seconds`` of media in virtual time."""
    point = sendpath.run(pki, calls, seconds, [f"quic_engine={engine}"])
    keys = ("server_cpu_ms_per_call_s", "client_cpu_ms_per_call_s", "delivered_pct",
            "datagrams_per_frame")  # fmt: skip
    return {"engine": engine, "calls": calls, "seconds": seconds} | {k: point[k] for k in keys}


def run(
    calls: tuple[int, ...] = (20, 40),
    seconds: float = 5.0,
    repeat: int = 3,
    engines: tuple[str, ...] = ("aioquic", "qh3"),
) -> list[dict[str, Any]]:
    """Medians over ``repeat`` alternating runs of each engine at each load."""
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for n in calls:
            for engine in engines:
                samples.setdefault((engine, n), []).append(run_point(pki, engine, n, seconds))
    results = []
    for (engine, n), points in samples.items():
        row: dict[str, Any] = {"engine": engine, "calls": n, "runs": len(points)}
        for key in points[0]:
            if key.endswith(("_per_call_s", "_pct", "_per_frame")):
                row[key] = statistics.median(p[key] for p in points)
                row[key + "_all"] = [round(p[key], 3) for p in points]
        results.append(row)
    return results


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`run`'s medians, with qh3/aioquic ratios."""
    base = {r["calls"]: r for r in results if r["engine"] == "aioquic"}
    rows = []
    for r in results:
        ref = base.get(r["calls"])

        def ratio(key: str, r: dict[str, Any] = r, ref: dict[str, Any] | None = ref) -> str:
            return "-" if ref is None or r is ref else f"{r[key] / ref[key]:.2f}x"

        rows.append([
            str(r["calls"]), r["engine"],
            f"{r['server_cpu_ms_per_call_s']:.2f}", ratio("server_cpu_ms_per_call_s"),
            f"{r['client_cpu_ms_per_call_s']:.2f}", ratio("client_cpu_ms_per_call_s"),
            f"{r['datagrams_per_frame']:.2f}", f"{r['delivered_pct']:.1f}",
        ])  # fmt: skip
    return table(
        ["calls", "engine", "server CPU ms/call-s", "vs aioquic", "client CPU ms/call-s",
         "vs aioquic", "datagrams/frame", "delivered %"],
        rows,
    )  # fmt: skip


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines")
    parser.add_argument("--calls", default="20,40", help="comma-separated loads")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    loads = tuple(int(n) for n in args.calls.split(","))
    results = run(loads, args.seconds, args.repeat)
    print(json.dumps(results, indent=1) if args.json else render(results))


if __name__ == "__main__":
    _main()
