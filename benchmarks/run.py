"""Run the benchmarks and write ``docs/performance.md``.

    python -m benchmarks.run                 # everything (about 20 minutes on 2 cores)
    python -m benchmarks.run --quick         # smoke run (2 to 3 minutes), doc to /tmp
    python -m benchmarks.run --render        # rewrite the doc from performance.json
    python -m benchmarks.run --only soak     # the hostile-load soak (5 minutes; 20 s quick)
    python -m benchmarks.run --only capacity # one benchmark; other sections keep the
                                             # figures of their last run
    python -m benchmarks.run --only capacity --baseline f22f135
                                             # RIPP at that commit beside this tree
                                             # (the default; --baseline '' for none)

Every figure is printed beside its baseline, measured in the same run. The raw results
are kept in ``docs/performance.json`` so that ``--only`` can re-render the whole doc.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import fmt, machine_info, table, write_pki
from .baseline import BASELINE_COMMIT

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
RESULTS = ROOT / "docs" / "performance.json"
SECTIONS = ("hol", "loss", "capacity", "overhead", "setup", "profile", "soak")
QUIET = 15.0  # % of one core of other work below which the machine counts as quiet
DISTURBED = 40.0  # % of one core of other work during a measurement that disturbs it


# ---------------------------------------------------------------- running
def background_load(seconds: float = 2.0) -> float:
    """CPU the machine spends on other work while we wait, in % of one core."""
    from .capacity import machine_busy_seconds

    before = machine_busy_seconds()
    time.sleep(seconds)
    return 100 * (machine_busy_seconds() - before) / seconds


def run_hol(quick: bool) -> dict[str, Any]:
    from . import hol

    seconds = 5.0 if quick else 30.0
    rows = hol.run(seconds=seconds)
    for row in rows:  # the raw latencies are not worth keeping
        for stack in ("ripp", "plain", "single"):
            row[stack].pop("latencies", None)
    return {"seconds": seconds, "delay": 0.050, "seed": 1, "rows": rows}


def run_loss(quick: bool) -> dict[str, Any]:
    from . import loss_real

    seeds = (1,) if quick else (1, 2, 3)
    seconds = 3.0 if quick else 10.0
    data = loss_real.run(seeds=seeds, seconds=seconds)
    data["demo"] = [_ripp_demo(seed, seconds) for seed in seeds]
    data["loadavg_after"] = os.getloadavg()
    return data


def _ripp_demo(seed: int, seconds: float) -> dict[str, Any]:
    """``ripp demo --delay-ms 50 --loss 0.05 --json``, the command a user runs, as is."""
    command = [sys.executable, "-m", "ripp_cli", "demo", "--delay-ms", "50", "--loss", "0.05"]
    command += ["--seconds", f"{seconds:g}", "--json", "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120 + seconds)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["seed"] = seed
    return result


def run_capacity(quick: bool, duration: float | None, baseline: str | None) -> dict[str, Any]:
    """CPU per call-second at fixed loads, then the highest kept-up load of each stack.

    Stacks: this tree's RIPP, RIPP at the ``baseline`` commit (run from an export of that
    commit, :mod:`benchmarks.baseline`) and bare H3; their points interleaved, so that
    the ratios come out of one run.
    """
    from . import baseline as base
    from . import capacity

    fixed: tuple[int, ...] = () if quick else (20, 40)  # quick: the search alone
    repeats = 1 if quick else 3
    fixed_seconds = duration or (1.5 if quick else 5.0)
    search_seconds = duration or (1.5 if quick else 3.0)

    def progress(result: dict[str, Any]) -> None:
        print(
            f"  {result['stack']:<13} {result['calls']:>4} calls: server "
            f"{fmt(result['server_cpu_ms_per_call_s'])} ms CPU/call/s, delivered "
            f"{fmt(result['delivered_pct'], 2)} %, p99 {fmt(result['c2s']['p99_ms'])}/"
            f"{fmt(result['s2c']['p99_ms'])} ms, other load "
            f"{fmt(result.get('other_load_pct'), 0)} %"
            + (" kept up" if result["kept_up"] else " NOT kept up")
            + (" SATURATED" if result["saturated"] else "")
            + (" (second try)" if result.get("retried") else "")
            + (f" error {result['error']}" if result.get("error") else ""),
            flush=True,
        )

    with contextlib.ExitStack() as stack:
        stacks = [capacity.RIPP, capacity.RIPP_QH3]
        commit = None
        if baseline:
            commit = base.resolve(baseline)
            tree = stack.enter_context(base.source_tree(commit))
            stacks.append(capacity.Stack(f"ripp@{commit[:7]}", "ripp", root=tree))
        stacks.append(capacity.BARE)
        print(f"  fixed loads {fixed}, {repeats} run(s) each, {fixed_seconds:g} s", flush=True)
        points = []
        for _ in range(repeats):
            for n in fixed:
                points += capacity.run(
                    calls=(n,), duration=fixed_seconds, stacks=stacks, progress=progress
                )
        print(f"  kept-up search, {search_seconds:g} s per point", flush=True)
        search = capacity.search(
            stacks,
            start=10,
            duration=search_seconds,
            max_points=1 if quick else 7,
            budget=60.0 if quick else 900.0,
            retry_failures=not quick,
            progress=progress,
        )
    return {
        "seconds": fixed_seconds,
        "repeats": repeats,
        "points": points,
        "search": search,
        "stacks": [s.label for s in stacks],
        "baseline": {
            "commit": commit,
            "label": next(s.label for s in stacks if s.root is not None),
            "same_ripp_code": base.same_code(commit),
        }
        if commit
        else None,
    }


def run_overhead(quick: bool) -> dict[str, Any]:
    """Bytes and datagrams on the wire per frame, RIPP and bare H3 against RTP."""
    from . import overhead

    if quick:
        return overhead.run(duration=2.0, loads=(1,), stacks=("ripp",))
    return overhead.run(duration=5.0, loads=(1, 8))


def run_setup(quick: bool) -> dict[str, Any]:
    from . import setup

    calls = 50 if quick else 500
    return {"calls": calls, "stacks": setup.run(calls=calls)}


def highest_kept_up(capacity_results: dict[str, Any] | None, stack: str = "ripp") -> int:
    """The highest load ``stack`` kept up with in the capacity search (0: none, or none
    searched)."""
    if not capacity_results or "search" not in capacity_results:
        return 0
    found = capacity_results["search"]["stacks"].get(stack, {})
    return int(found.get("kept_up", 0))


def run_profile(quick: bool, capacity_results: dict[str, Any] | None) -> dict[str, Any]:
    """Profile the RIPP server at the highest load it kept up with, then bare H3 there.

    The load comes from the capacity section's kept-up search (10 calls if it found none).
    The profiler slows the process down; if the profiled RIPP server does not keep up at
    that load, three quarters of it is tried, then half.
    """
    from . import capacity

    highest = highest_kept_up(capacity_results)
    base = highest or 10
    loads = list(dict.fromkeys([base, max(1, base * 3 // 4), max(1, base // 2)]))
    if quick:
        loads = loads[:1]  # a smoke run: no second try
    seconds = 2.0 if quick else 10.0
    out: dict[str, Any] = {"highest": highest, "seconds": seconds, "tried": []}
    with tempfile.TemporaryDirectory(prefix="ripp-profile-") as tmp:
        write_pki(Path(tmp))
        for load in loads:
            path = Path(tmp) / f"ripp-{load}.profile.json"
            point = capacity.run_point("ripp", load, seconds, Path(tmp), profile=path)
            out["tried"].append({"calls": load, "saturated": not point["kept_up"]})
            out["calls"] = load
            out["ripp"] = json.loads(path.read_text())
            out["ripp"]["point"] = point
            if point["kept_up"]:
                break
        path = Path(tmp) / "bare.profile.json"
        point = capacity.run_point("bare", out["calls"], seconds, Path(tmp), profile=path)
        out["bare"] = json.loads(path.read_text())
        out["bare"]["point"] = point
    return out


# ---------------------------------------------------------------- rendering
def _pct(value: float) -> str:
    return fmt(value, 1)


DEADLINE_KEYS = ("90", "110", "160", "200")  # benchmarks.hol.DEADLINES in ms


def render_hol(data: dict[str, Any]) -> str:
    rows = []
    stacks = (
        ("ripp", "RIPP, early re-send"),
        ("plain", "RIPP, QUIC repair only"),
        ("single", "single stream"),
    )
    for row in data["rows"]:
        for stack, name in stacks:
            if stack not in row:  # results from before early re-send existed
                continue
            r = row[stack]
            lat = r["latency_ms"]
            on_time = r.get("on_time_pct", {})
            rows.append(
                [
                    f"{row['loss'] * 100:g} %",
                    name,
                    f"{r['delivered']}/{r['sent']}",
                    fmt(lat["p50"], 0),
                    fmt(lat["p90"], 0),
                    fmt(lat["p99"], 0),
                    fmt(lat["max"], 0),
                    " / ".join(_pct(on_time[k]) for k in DEADLINE_KEYS if k in on_time) or "-",
                    _pct(100 * r["resent_per_sent"]) if "resent_per_sent" in r else "-",
                ]
            )
    return table(
        [
            "loss",
            "stack",
            "delivered",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "on time % by 90 / 110 / 160 / 200 ms",
            "re-sent bytes %",
        ],
        rows,
    )


def render_hol_playout(data: dict[str, Any]) -> str:
    rows = []
    for row in data["rows"]:
        for stack, name in (("ripp", "early re-send"), ("plain", "QUIC repair only")):
            r = row.get("playout", {}).get(stack)
            if r is None:
                continue
            rows.append(
                [
                    f"{row['loss'] * 100:g} %",
                    name,
                    f"{r['played']}/{r['sent']}",
                    _pct(100 * r["played"] / r["sent"]),
                    str(r["late"]),
                    fmt(r["playout_delay_ms"], 0),
                    _pct(100 * r["resent_per_sent"]),
                ]
            )
    return table(
        [
            "loss",
            "RIPP",
            "played",
            "played %",
            "late",
            "jitter buffer delay at end ms",
            "re-sent bytes %",
        ],
        rows,
    )


def render_loss(data: dict[str, Any]) -> str:
    rows = []
    for run in data["runs"]:
        for direction, name in (("client_to_server", "c→s"), ("server_to_client", "s→c")):
            r = run[direction]
            rows.append(
                [
                    str(run["seed"]),
                    "early re-send" if run["early_resend"] else "QUIC repair only",
                    name,
                    f"{r['played']}/{run['frames']}",
                    _pct(100 * r["played"] / run["frames"]),
                    str(r["late"]),
                    fmt(r["playout_delay_ms"], 0),
                    _pct(100 * r["resent_per_sent"]),
                ]
            )
    return table(
        [
            "seed",
            "RIPP",
            "direction",
            "played",
            "played %",
            "late",
            "jitter buffer delay at end ms",
            "re-sent bytes %",
        ],
        rows,
    )


def render_demo(data: dict[str, Any]) -> str:
    rows = []
    for run in data.get("demo", []):
        for direction, name in (("client_to_server", "c→s"), ("server_to_client", "s→c")):
            m = run["media"][direction]
            lat = m["latency_ms"]
            rows.append(
                [
                    str(run["seed"]),
                    name,
                    f"{m['received']}/{m['sent']}",
                    _pct(100 * m["received"] / m["sent"]) if m["sent"] else "-",
                    str(m["late"]),
                    f"{fmt(lat['p50'], 0)} / {fmt(lat['p99'], 0)} / {fmt(lat['max'], 0)}",
                    str(run["streams"][direction]),
                ]
            )
    return table(
        [
            "seed",
            "direction",
            "played",
            "played %",
            "late",
            "latency p50 / p99 / max ms",
            "streams busy at once (max)",
        ],
        rows,
    )


def _status(point: dict[str, Any]) -> str:
    if point["saturated"]:
        return "SATURATED"
    worst = max(point["c2s"]["p99_ms"], point["s2c"]["p99_ms"])
    return "ok" if worst <= 150 else "late"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "-"


def _load(row: dict[str, Any]) -> str:
    """Other load in % of a core; tick sampling makes small values noisy, so floor at 0."""
    value = row.get("other_load_pct")
    return fmt(max(0.0, value) if value is not None and not math.isnan(value) else None, 0)


def _median(values: list[float]) -> float:
    finite = sorted(v for v in values if not math.isnan(v))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def _stacks(data: dict[str, Any]) -> list[str]:
    return list(data.get("stacks") or dict.fromkeys(p["stack"] for p in data["points"]))


def _versus(medians: dict[str, dict[str, float]], stack: str, other: str | None) -> str:
    """Server CPU per call-second of ``stack`` over ``other``'s at one load."""
    if other is None or stack == other or other not in medians:
        return "-"
    # A saturated process's CPU per call is capped by its core (and by what the machine's
    # other work leaves it), not a cost: no ratio then.
    if medians[stack]["saturated"] or medians[other]["saturated"]:
        return "n/a (saturated)"
    return _ratio(medians[stack]["server_cpu_ms_per_call_s"],
                  medians[other]["server_cpu_ms_per_call_s"])  # fmt: skip


def _waited(point: dict[str, Any]) -> str:
    """RIPP points: frames that found every media stream busy (both ends, the whole run
    with set-up and warm-up) and the longest wait; older results and bare H3 have none."""
    waited = point.get("frames_waited")
    if waited is None or point["stack"].startswith("bare"):
        return "-"
    return f"{waited} ({fmt(point.get('stream_wait_max_ms'), 0)})"


def render_capacity(data: dict[str, Any]) -> str:
    """The fixed-load CPU table, the kept-up search and its ratios."""
    stacks = _stacks(data)
    baseline = (data.get("baseline") or {}).get("label")
    loads = sorted({p["calls"] for p in data["points"]})
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in data["points"]:
        by.setdefault((p["stack"], p["calls"]), []).append(p)
    cpu_rows = []
    for n in loads:
        medians: dict[str, dict[str, float]] = {}
        for stack in stacks:
            runs = by.get((stack, n), [])
            medians[stack] = {
                key: _median([r.get(key, math.nan) for r in runs])
                for key in ("server_cpu_ms_per_call_s", "client_cpu_ms_per_call_s",
                            "datagrams_per_frame", "other_load_pct")
            }  # fmt: skip
            medians[stack]["kept"] = sum(bool(r["kept_up"]) for r in runs)
            medians[stack]["runs"] = len(runs)
            medians[stack]["saturated"] = any(r["saturated"] for r in runs)

        for stack in stacks:
            m = medians[stack]
            cpu_rows.append(
                [
                    str(n),
                    stack,
                    f"{int(m['kept'])}/{int(m['runs'])}"
                    + (" (saturated)" if m["saturated"] else ""),
                    fmt(m["server_cpu_ms_per_call_s"], 2),
                    _versus(medians, stack, baseline),
                    _versus(medians, stack, "bare"),
                    fmt(m["client_cpu_ms_per_call_s"], 2),
                    fmt(m["datagrams_per_frame"], 2),
                    fmt(max(0.0, m["other_load_pct"]), 0)
                    if not math.isnan(m["other_load_pct"]) else "-",
                ]
            )  # fmt: skip
    cpu = "(no fixed-load points in this run)" if not cpu_rows else table(
        [
            "calls",
            "stack",
            "kept up (runs)",
            "server CPU ms per call-s (median)",
            f"vs {baseline}" if baseline else "vs baseline",
            "vs bare",
            "client CPU ms per call-s",
            "UDP datagrams per frame",
            "other load %",
        ],
        cpu_rows,
    )
    search = data.get("search")
    if search is None:
        return cpu
    found = search["stacks"]
    search_rows = []
    for stack in stacks:
        f = found.get(stack, {})
        search_rows.append(
            [
                stack,
                str(f.get("kept_up") or "none"),
                str(f.get("failed") or "-"),
                ", ".join(f"{n}{'' if ok else '✗'}" for n, ok in f.get("points", [])),
            ]
        )
    search_table = table(
        ["stack", "highest kept up", "lowest not kept up", "loads measured (✗: not kept up)"],
        search_rows,
    )
    point_rows = []
    for p in search["points"]:
        point_rows.append(
            [
                p["stack"],
                str(p["calls"]),
                "yes" if p["kept_up"] else "no",
                f"{fmt(p['c2s']['delivered_pct'], 2)} / {fmt(p['s2c']['delivered_pct'], 2)}",
                f"{fmt(p['c2s']['p99_ms'])} / {fmt(p['s2c']['p99_ms'])}",
                fmt(p["server_cpu_ms_per_call_s"], 2),
                fmt(p.get("server_core_pct"), 0),
                fmt(p["datagrams_per_frame"], 2),
                _waited(p),
                _load(p),
                "yes" if p.get("retried") else "",
            ]
        )
    points = table(
        ["stack", "calls", "kept up", "delivered % c→s / s→c", "p99 ms c→s / s→c",
         "server CPU ms per call-s", "server core %", "datagrams per frame",
         "frames that waited for a stream, whole run (longest ms)", "other load %", "second try"],
        point_rows,
    )  # fmt: skip
    ripp = found.get("ripp", {}).get("kept_up", 0)
    bare = found.get("bare", {}).get("kept_up", 0)
    base = found.get(baseline, {}).get("kept_up", 0) if baseline else 0
    qh3 = found.get("ripp-qh3", {}).get("kept_up", 0)
    ratios = [f"RIPP / bare H3: {_ratio(ripp, bare)}"]
    if "ripp-qh3" in found:
        ratios.append(f"RIPP on qh3 / bare H3 (aioquic): {_ratio(qh3, bare)}")
    if baseline:
        ratios.insert(0, f"**RIPP now / {baseline}: {_ratio(ripp, base)}**")
        if "ripp-qh3" in found:
            ratios.insert(1, f"**RIPP now on qh3 / {baseline}: {_ratio(qh3, base)}**")
    cut = " The search was cut by its time budget." if search.get("cut_by_budget") else ""
    if (data.get("baseline") or {}).get("same_ripp_code"):
        cut += (
            f" This tree's `ripp_core` and `ripp_trio` are identical to {baseline}'s, so "
            "that ratio shows only the harness's run-to-run noise at this machine load."
        )
    return (
        "CPU time per call-second, in milliseconds of CPU per second of call (10 ms = 1 % of "
        f"one core), at fixed loads, median of {data.get('repeats', 1)} run(s) of "
        f"{data['seconds']:g} s, the stacks interleaved; *vs*: ratio of the medians. "
        "*Other load*: CPU the machine spent on anything but the two benchmark processes "
        "during the window, in % of one core (/proc/stat, tick-sampled: only a large value "
        "means a disturbed point).\n\n"
        + cpu
        + "\n\nHighest load kept up (issue 12: at least 99.5 % of the frames due delivered "
        "in each direction and p99 one-way latency within 20 ms, every call connected), "
        f"found by doubling from {search['start']} calls then bisecting to within "
        f"{100 * search['resolution']:g} %, {search['duration']:g} s per point, one point "
        "of each stack in turn; a point that did not keep up is measured a second time "
        "(other work on a shared machine can only make a point fail).\n\n"
        + search_table
        + "\n\n"
        + " · ".join(ratios)
        + f" (highest kept-up loads, same run).{cut}\n\n"
        + points
    )


_OVERHEAD_NAMES = {"ripp": "RIPP/H3", "bare": "bare H3", "ripp-h2": "RIPP/HTTP/2 (TCP, TLS)"}
_BUDGET = (
    ("payload", "G.711 payload"),
    ("ripp_media_header", "RIPP MEDIA frame header (type, length, sequence, timestamp, "
     "codec, duration, flags)"),
    ("h3_data_header", "HTTP/3 DATA frame header"),
    ("ripp_acks", "RIPP ACK frames (of the other direction's media), with their HTTP/3 "
     "DATA headers"),
    ("quic", "QUIC: short headers, AEAD tags, STREAM frame headers, ACK frames, other "
     "frames, padding"),
    ("udp_ip", "UDP + IPv4 headers"),
)  # fmt: skip


def render_overhead(data: dict[str, Any]) -> str:
    """Wire cost per direction against RTP, and the per-frame byte budget."""
    rtp = data["rtp_computed"]
    rows = [["RTP/UDP G.711 20 ms (computed)", "-", "-", "1.00", "-",
             fmt(rtp["bytes_per_frame"], 0), fmt(rtp["datagrams_per_s"], 0),
             fmt(rtp["kbit_per_s"], 1), "1.00x"]]  # fmt: skip
    measured = data.get("rtp_measured", {})
    if "error" in measured:
        rows.append(["sipp RTP (measured)", "-", "-", "-", "-", "-", "-", measured["error"], "-"])
    else:
        for direction in ("c2s", "s2c"):
            m = measured[direction]
            rows.append(
                [
                    f"sipp RTP G.711 {fmt(m.get('frame_ms'), 0)} ms (measured)",
                    "caller→echo" if direction == "c2s" else "echo→caller",
                    "-",
                    "1.00",
                    "-",
                    fmt(m["bytes_per_datagram"], 0),
                    fmt(m["datagrams_per_s"], 1),
                    fmt(m["kbit_per_s"], 1),
                    "-",
                ]
            )
    for p in data["points"]:
        if "error" in p:
            rows.append([f"{p['stack']} {p['calls']} call(s)", "-", "-", "-", "-", "-", "-",
                         p["error"][:60], "-"])  # fmt: skip
            continue
        for direction in ("c2s", "s2c"):
            d = p[direction]
            dec = d["decoded"]
            rows.append(
                [
                    f"{_OVERHEAD_NAMES.get(p['stack'], p['stack'])}, {p['calls']} call(s) "
                    "on one connection",
                    "c→s" if direction == "c2s" else "s→c",
                    f"{fmt(p['delivered_pct'], 1)}" + ("" if p["kept_up"] else " (not kept up)"),
                    fmt(d["datagrams_per_frame"], 2),
                    f"{fmt(dec['media_datagrams_per_frame'], 2)} / "
                    f"{fmt(dec['ack_datagrams_per_frame'], 2)} / "
                    f"{fmt(dec['quic_datagrams_per_frame'], 2)}"
                    if dec
                    else "(TCP segments, not decoded)",
                    fmt(d["bytes_per_frame"], 0),
                    fmt(d["datagrams_per_s"], 0),
                    fmt(d["kbit_per_s"], 1),
                    _ratio(d["bytes_per_frame"], rtp["bytes_per_frame"]),
                ]
            )
    wire = table(
        ["stack", "direction", "delivered % (worse direction)", "datagrams per frame",
         "of which media / RIPP-ack-only / QUIC-only", "bytes per frame",
         "datagrams per call-s", "kbit/s per call", "bytes vs RTP"],
        rows,
    )  # fmt: skip
    budget_heads = ["bytes per frame, by what they are"]
    columns = []
    for p in data["points"]:
        if "error" in p or p["c2s"]["decoded"] is None:
            continue
        for direction in ("c2s", "s2c"):
            name = "RIPP" if p["stack"] == "ripp" else "bare"
            budget_heads.append(f"{name} {p['calls']} {'c→s' if direction == 'c2s' else 's→c'}")
            columns.append(p[direction]["decoded"]["budget"])
    budget_heads.append("RTP")
    rtp_budget = {"payload": 160.0, "ripp_media_header": 12.0, "h3_data_header": 0.0,
                  "ripp_acks": 0.0, "quic": 0.0, "udp_ip": 28.0}  # fmt: skip
    budget_rows = []
    for key, name in _BUDGET:
        label = "RTP header (RTP column)" if key == "ripp_media_header" else ""
        budget_rows.append(
            [name + (f"; {label}" if label else "")]
            + [fmt(c[key], 1) for c in columns]
            + [fmt(rtp_budget[key], 0)]
        )
    budget_rows.append(
        ["total"] + [fmt(sum(c.values()), 1) for c in columns] + [fmt(sum(rtp_budget.values()), 0)]
    )
    budget = table(budget_heads, budget_rows)
    packing = ", ".join(
        f"{'RIPP' if p['stack'] == 'ripp' else 'bare'} {p['calls']} "
        f"{'c→s' if d == 'c2s' else 's→c'}: "
        f"{fmt(p[d]['decoded']['media_frames_per_media_datagram'], 2)}"
        for p in data["points"] if "error" not in p and p["c2s"]["decoded"]
        for d in ("c2s", "s2c")
    )  # fmt: skip
    return (
        wire
        + "\n\nMedia frames per media-carrying datagram: "
        + packing
        + ".\n\nPer-frame byte budget (bytes of one direction's datagrams per media "
        "frame delivered in that direction; a datagram in the c→s column also carries "
        "the RIPP acks of s→c frames and the QUIC ACKs of s→c packets; a payload above "
        "160 bytes per frame means early re-send copies, §11.7). The rows are told apart "
        "by STREAM data length (100 bytes or more: a media frame); when frames are packed, "
        "aioquic may split one across two packets and a short piece then counts as acks, "
        "and under overload capture and delivery windows shift apart, so the split "
        "between rows is approximate there; the totals are exact:\n\n"
        + budget
    )


def render_setup(data: dict[str, Any]) -> str:
    by = {s["stack"]: s for s in data["stacks"]}
    base = by["bare"]
    rows = []
    for label, stack in by.items():
        for parallel in ("1", "10"):
            r = stack["rows"].get(parallel) or stack["rows"].get(int(parallel))
            b = base["rows"].get(parallel) or base["rows"].get(int(parallel))
            name = {"ripp": "RIPP, ripp serve's checks", "ripp-noauth": "RIPP, accept-any checks",
                    "bare": "bare H3 POST → 201"}.get(label, label)  # fmt: skip
            rows.append(
                [
                    name,
                    "sequential" if parallel == "1" else f"{parallel} in parallel",
                    fmt(r["rate"], 0),
                    _ratio(b["rate"], r["rate"]) if label != "bare" else "-",
                    f"{fmt(r['latency_ms']['p50'], 2)} / {fmt(r['latency_ms']['p99'], 2)}",
                    f"{fmt(r['client_cpu_ms'], 2)} / {fmt(r['server_cpu_ms'], 2)}",
                    _load(r),
                ]
            )
    text = table(
        ["stack", "mode", "calls (requests) per s", "bare / this", "latency p50 / p99 ms",
         "CPU ms per call client / server", "other load %"],
        rows,
    )  # fmt: skip
    ripp = by.get("ripp", {})
    return (
        text + f"\n\n{data['calls']} calls per mode, each mode after as many unmeasured "
        "calls as it runs at once (they open the connections it needs). The authenticated "
        f"RIPP client used {ripp.get('connections')} QUIC connection(s) and opened "
        f"{ripp.get('streams')} request streams in all."
    )


def render_profile(data: dict[str, Any]) -> str:
    parts = []
    for stack, title in (("ripp", "RIPP server"), ("bare", "bare H3 server (baseline)")):
        prof = data.get(stack)
        if prof is None:
            continue
        busy = prof["busy"] or 1.0
        point = prof.get("point", {})
        head = (
            f"**{title}**, {data['calls']} two-way calls, {fmt(prof['duration'], 1)} s "
            f"sampled: busy {fmt(100 * prof['busy'] / prof['duration'], 0)} % of the time "
            f"(process CPU while profiled: {fmt(point.get('server_core_pct'), 0)} % of a "
            "core). Shares below are of the busy time, by self time.\n\n"
        )
        packages = table(
            ["package", "share"],
            [[name, f"{100 * t / busy:.1f} %"] for name, t in prof["packages"]],
        )
        functions = table(
            ["function (self time)", "share"],
            [[name, f"{100 * t / busy:.1f} %"] for name, t in prof["functions"][:15]],
        )
        inclusive = table(
            ["function (inclusive time)", "share"],
            [[name, f"{100 * t / busy:.1f} %"] for name, t in prof.get("inclusive", [])[:12]],
        )
        parts.append(head + packages + "\n\n" + functions + "\n\n" + inclusive)
        if stack == "ripp":
            parts.append(_profile_summary(prof))
    return "\n\n".join(parts)


def _profile_fallback(data: dict[str, Any]) -> str:
    tried = data.get("tried", [])
    given_up = [str(t["calls"]) for t in tried if t["saturated"]]
    if not given_up:
        return ""
    ended = tried[-1]
    return (
        f"; under the profiler's overhead the server did not keep up at "
        f"{', '.join(given_up)} calls, so the profile shown is of {ended['calls']} calls"
        + (" (still saturated: read it as an overloaded server)" if ended["saturated"] else "")
    )


def _profile_summary(prof: dict[str, Any]) -> str:
    """One sentence on the RIPP server's biggest cost centres, from inclusive times."""
    busy = prof["busy"] or 1.0
    inclusive = dict(prof.get("inclusive", []))

    def share(prefix: str) -> str:
        total = max((t for name, t in inclusive.items() if name.startswith(prefix)), default=0)
        return f"{100 * total / busy:.0f} %"

    return (
        f"In the RIPP server, {share('flush (ripp_trio')} of the busy time is spent under "
        "the driver's `flush` (collecting the endpoint's datagrams and events), "
        f"{share('datagrams_to_send (aioquic')} inside aioquic's "
        "`QuicConnection.datagrams_to_send` (building and encrypting packets), and "
        f"{share('receive_datagram (aioquic')} inside aioquic's `receive_datagram`."
    )


def run_soak(quick: bool) -> dict[str, Any]:
    """Ordinary calls against a real ``ripp serve`` under mixed hostile load."""
    from . import soak

    return soak.run(minutes=20 / 60 if quick else 5.0)


def render_soak(data: dict[str, Any]) -> str:
    """The soak's report, as a Markdown list."""
    from . import soak

    return "\n".join(f"- {line}" for line in soak.render(data).splitlines())


#: The line after which docs/performance.md is written by hand (figures measured by other
#: benchmarks and their commentary); render_doc's output replaces only what comes before.
HAND_WRITTEN = (
    "<!-- Hand-written sections below: `python -m benchmarks.run` keeps everything after "
    "this line. -->"
)


def with_hand_written(generated: str, previous: str | None) -> str:
    """The generated document followed by the hand-written part of ``previous`` (from the
    :data:`HAND_WRITTEN` line on), if it has one."""
    if previous is None or HAND_WRITTEN not in previous:
        return generated
    return generated.rstrip("\n") + "\n\n" + previous[previous.index(HAND_WRITTEN) :]


def _write_doc(out: Path, results: dict[str, Any]) -> None:
    """Write the report, keeping the hand-written part of the one it replaces."""
    previous = out.read_text() if out.exists() else None
    out.write_text(with_hand_written(render_doc(results), previous))


def render_doc(results: dict[str, Any]) -> str:
    out = [
        "# Performance",
        "",
        "Generated by `python -m benchmarks.run` (see `benchmarks/`); every RIPP figure is",
        "shown beside a baseline measured in the same run on the same machine. Raw results:",
        "`docs/performance.json`. Re-run one section with",
        "`--only hol|loss|capacity|overhead|setup|profile|soak`.",
        "",
    ]
    machines = {
        json.dumps(
            {k: v for k, v in results[s]["machine"].items() if k not in ("date", "commit")},
            sort_keys=True,
        )
        for s in SECTIONS
        if s in results
    }
    if len(machines) == 1:
        first = next(results[s]["machine"] for s in SECTIONS if s in results)
        out += ["## Machine", "", _machine_table(first), ""]
    if "hol" in results:
        data = results["hol"]
        out += [
            "## Head-of-line blocking under loss",
            "",
            _stamp(results, "hol", len(machines) > 1),
            f"One call, client to server, a 20 ms PCMU frame every 20 ms for "
            f"{data['seconds']:g} s of media, {data['delay'] * 1000:g} ms one-way delay and "
            "the given loss rate in both directions. Real aioquic QUIC + HTTP/3 and TLS 1.3, "
            "in **virtual time** on `ripp_core.testing.VirtualNetwork`: deterministic for a "
            f"given seed (seed {data['seed']}); the two stacks send different packets, so "
            "the same seed does not drop the same frames in both. *RIPP striped*: a RIPP "
            "call (media striped over N requests, one unacknowledged frame per stream). "
            "*single stream*: the same frames (`encode_media`) pipelined on one request "
            "body without waiting for anything, decoded with `FrameDecoder`. Latency is "
            "arrival minus send time; '> 150 ms' counts frames later than 150 ms or never "
            "delivered (150 ms: ITU-T G.114's limit for one-way delay). *On time by X*: "
            "arrived within X of being sent, i.e. playable by a receiver that plays each "
            "frame X after it was sent (90 ms = one-way delay + 2 frames). *RIPP, early "
            "re-send*: the default, a copy of a frame whose ACK is overdue goes out on "
            "another free stream (protocol §11.7); *QUIC repair only*: `early_resend` off. "
            "*Re-sent bytes*: codec bytes of early copies per codec byte of new frames. "
            "Every stack starts sending at once when the call is connected, before its "
            "media streams are open, so the first few frames are late in every stack.",
            "",
            render_hol(data),
            "",
            "The same RIPP calls with the receiver's adaptive jitter buffer on (its "
            "default): frames played, frames it dropped as late, and the playout delay "
            "it had settled on at the end (it rises with late frames and falls only at a "
            "talkspurt start, so in one long talkspurt it keeps its highest value).",
            "",
            render_hol_playout(data),
            "",
        ]
    if "loss" in results:
        data = results["loss"]
        load = data.get("loadavg_after")
        out += [
            "## Media quality under loss on the real stack",
            "",
            _stamp(results, "loss", len(machines) > 1),
            f"`benchmarks/loss_real.py`: one process runs a `ripp_trio` server and client on "
            "127.0.0.1 with the UDP impairment relay of `ripp demo` between them "
            f"({data['delay'] * 1000:g} ms one-way delay and {data['loss'] * 100:g} % loss "
            "each way, seeded): real sockets, aioquic, TLS 1.3 and timers. Both ends play a "
            f"20 ms PCMU frame every 20 ms (`play`) for {data['seconds']:g} s at once, with "
            "the receiver's jitter buffer on (the default). *Played*: frames the jitter "
            "buffer released; *late*: frames it dropped because they came after their "
            "playout time; *jitter buffer delay*: the playout delay it ended with (it only "
            "rises within a talkspurt). *Re-sent bytes*: codec bytes of early copies per "
            "codec byte of new frames. The same seed drives the relay in both variants, but "
            "they send different packets, so it does not drop the same frames."
            + (
                f" Load average (1/5/15 min) right after: {load[0]:.2f} / {load[1]:.2f} / "
                f"{load[2]:.2f} on {first_cores(results)} cores."
                if load
                else ""
            ),
            "",
            render_loss(data),
            "",
        ]
        if data.get("demo"):
            out += [
                "The command a user runs, `ripp demo --delay-ms 50 --loss 0.05 --seconds "
                f"{data['seconds']:g} --json --seed N`, with the defaults (early re-send on), "
                "right after the runs above. The server echoes each frame as it plays it out, "
                "so the s→c direction also carries the server's jitter-buffer adjustments: "
                "each rise of the server's playout delay shifts the rest of the echo stream "
                "later, which the client's jitter buffer sees as late frames. That is the "
                "likely reason s→c loses more frames here than c→s, and than either direction "
                "in the table above, where both ends play their own audio.",
                "",
                render_demo(data),
                "",
            ]
    if "capacity" in results:
        data = results["capacity"]
        out += [
            "## Capacity: concurrent two-way calls",
            "",
            _stamp(results, "capacity", len(machines) > 1),
            "One client process and one server process on 127.0.0.1 (real UDP), each call "
            "a 20 ms G.711 frame every 20 ms in each direction, measured after all calls "
            "connected and 1 s of warm-up. *ripp*: this tree's `ripp_trio` driver "
            "(`open_server`/`open_client`, `answer`, `send_audio`), default `RippConfig` "
            "but the jitter buffer off (frames reported on arrival), the server accepting any "
            "token and Identity (per-call checks do not bear on media capacity); "
            "*ripp-qh3*: the same on the optional qh3 QUIC engine "
            "(`RippConfig.quic_engine`, protocol §17)"
            + (
                f"; *{data['baseline']['label']}*: the same role processes run from an "
                f"export of commit {data['baseline']['commit'][:12]} (`--baseline`), its "
                "own `ripp_core`/`ripp_trio`/`benchmarks`, the fixed comparison point"
                if data.get("baseline")
                else ""
            )
            + ". *bare*: aioquic H3 carrying the same frames "
            "with no RIPP logic: one bidirectional request per call, the client's frames "
            "on the request body and the server's on the response body, no acks, no "
            "striping; a minimal Trio UDP loop (`benchmarks/bare_h3.py`). All pool "
            "**8 calls per QUIC connection** (RippClient's default "
            "`max_calls_per_connection`). CPU is each process's user+system time (getrusage) "
            "over the window. Latency is one-way: the sender puts the `time.monotonic()` at "
            "which the frame was due in its first 8 payload bytes, the receiver subtracts "
            "it on arrival (both processes share CLOCK_MONOTONIC), so a sender that falls "
            "behind shows as latency. Datagrams per frame: UDP datagrams both processes "
            "sent (kernel counter, so other programs' UDP counts too) over media frames due "
            "in both directions. On a loaded machine the 20 ms p99 limit fails first, so "
            "the kept-up loads are only meaningful measured quiet; the CPU ratios at fixed "
            "loads hold up better under moderate load, as long as no point saturates (a "
            "starved process's CPU per call is capped by what it was given, not a cost).",
            "",
            render_capacity(data),
            "",
        ]
    if "overhead" in results:
        data = results["overhead"]
        load = data.get("loadavg_after")
        out += [
            "## On the wire: RIPP against RTP",
            "",
            _stamp(results, "overhead", len(machines) > 1),
            "The objection to carrying media over HTTP/3 with per-frame acks is its cost "
            "against RTP. Per direction and per media frame delivered in that direction "
            "(not per frame due: a starved sender skips frames, which would flatter it), "
            "bytes counted at the IP layer (IPv4 + UDP headers "
            "included, loopback's dummy Ethernet header not). *RTP computed*: 160 bytes of "
            "G.711 + 12 RTP + 8 UDP + 20 IPv4 = 200 bytes, 50 per second, 80 kbit/s (no "
            "RTCP). *sipp RTP*: `sipp -sn uac_pcap` against `sipp -sn uas -rtp_echo` on "
            "loopback, captured with dumpcap: sipp's pcap is G.711 A-law in **30 ms** "
            "frames (240-byte payloads), so its rate and size differ from 20 ms by design; "
            "it confirms the arithmetic (one datagram per frame, 40 bytes of headers). "
            "*RIPP* and *bare H3*: the capacity benchmark's processes (1 call, and 8 calls "
            f"on one connection), {data['duration']:g} s captured with dumpcap on `lo`; "
            "the client logs its TLS secrets (`--keylog`, SSLKEYLOGFILE format) so tshark "
            "decrypts every QUIC packet: a datagram is *media* if it carries a STREAM frame "
            "with a media frame, *RIPP-ack-only* if it carries only small STREAM data (RIPP "
            "ACK frames, signaling), *QUIC-only* if it carries no STREAM data (QUIC ACK "
            "frames and other control). *RIPP/HTTP/2*: the same processes on ripp_trio's "
            "TCP driver (`open_h2_server`/`open_h2_client`, TLS 1.3, one connection), "
            "packets counted per direction but not decoded: they are TCP segments (pure "
            "ACKs included) and their bytes include TCP headers with options and TLS "
            "record framing."
            + (
                f" Load average (1/5/15 min) right after: {load[0]:.2f} / {load[1]:.2f} / "
                f"{load[2]:.2f} on {first_cores(results)} cores."
                if load
                else ""
            ),
            "",
            render_overhead(data),
            "",
        ]
    if "setup" in results:
        data = results["setup"]
        out += [
            "## Call set-up rate",
            "",
            _stamp(results, "setup", len(machines) > 1),
            "One client process and one server process on 127.0.0.1. RIPP: `place_call`, "
            "wait for CONNECTED (the server answers at once), `terminate`; latency is "
            "request sent to CONNECTED (call request, 201, signaling request, Pending, "
            "Answer). *ripp serve's checks*: the server runs the checks of a default "
            "`ripp serve` (a throwaway ripp home): the bearer token is an ES256 access "
            "token of the local issuer, verified against its JWKS (signature, `iss`, "
            "`aud`, lifetime, `ripp:call` scope) on every request; each call's Identity "
            "is a SHAKEN PASSporT the client signs for that call with the local STI "
            "certificate, verified by the server (x5u fetched over HTTPS from the client "
            "process once and cached, chain to the STI-CA, ES256 signature, freshness, "
            "orig/dest against From/To, TN authorization). *accept-any checks*: the same "
            "with `insecure_accept_any_bearer` and `insecure_accept_any_identity`, as the "
            "capacity runs, so the checks' cost shows. Baseline: a bare H3 POST with the "
            "same header fields, answered 201, on one open connection, no checks; latency "
            "is request to response headers. Rates are completed calls (or requests) per "
            "second of wall time.",
            "",
            render_setup(data),
            "",
        ]
    if "profile" in results:
        data = results["profile"]
        out += [
            "## Where the time goes",
            "",
            _stamp(results, "profile", len(machines) > 1),
            "pyinstrument (1 ms sampling) on the server process at the highest "
            "load RIPP kept up with in the capacity search ("
            + (f"{data['highest']} calls" if data.get("highest") else "none found: 10 calls")
            + ")"
            + _profile_fallback(data)
            + f", over {data['seconds']:g} s of steady media, and on the bare H3 server at "
            f"the same load ({data['calls']} calls). The profiler "
            "slows the process down (its hook runs on every Python call), so the shares "
            "are indicative and the CPU figures above are measured without it. Time "
            "blocked in `epoll.poll` is idle and left out; a C function's time (socket "
            "calls, AEAD) is counted to itself.",
            "",
            render_profile(data),
            "",
        ]
    if "soak" in results:
        data = results["soak"]
        out += [
            "## Soak under hostile load",
            "",
            _stamp(results, "soak", len(machines) > 1),
            f"Ordinary `ripp call`s (two at a time, 5 s each) against one `ripp serve` "
            f"({data['driver']}) for {data['minutes']:g} minutes while a raw aioquic client "
            "cycles through the attacks of issue 6 (`benchmarks/soak.py`, "
            "`docs/hostile.md`).",
            "",
            render_soak(data),
            "",
        ]
    out += [
        "## Caveats",
        "",
        "- The virtual-time figures are exact for their seed; the loopback figures are not:",
        "  on a shared 2-core VM the p99 tails of the capacity runs vary from run to run",
        "  (a point near its limit can be *ok* in one run and *late* in the next).",
        "- Client and server share one machine, one process each: a capacity point",
        "  measures one core per side, and each side's CPU includes its load generator",
        "  (the pacer and the latency bookkeeping, the same code for both stacks).",
        "- The bare baseline is meant as the dependency's ceiling: no call state, no",
        "  acks, no striping, a minimal loop that asks only the connections it touched",
        "  for datagrams. Everything RIPP and its driver add is in the RIPP/bare ratio.",
        "- Not measured here: the asyncio driver, the jitter buffer (off in the capacity",
        "  runs), Opus, and the capacity of RIPP over HTTP/2 (only its wire cost is).",
        "",
    ]
    return "\n".join(out)


def _machine_table(machine: dict[str, str]) -> str:
    return table(["", ""], [[k, v] for k, v in machine.items() if k not in ("date", "commit")])


def first_cores(results: dict[str, Any]) -> str:
    """The core count of the machine of the first section measured."""
    for section in SECTIONS:
        if section in results:
            return str(results[section]["machine"].get("cores", "?"))
    return "?"


def _stamp(results: dict[str, Any], section: str, always: bool) -> str:
    machine = results[section]["machine"]
    text = (
        f"Measured {machine['date']} on commit {machine.get('commit', 'unknown')}, "
        f"{results[section]['wall']:.0f} s wall time"
    )
    load = results[section].get("load_before")
    if load is not None:
        text += f" (machine busy with other work just before: {load:.0f} % of one core)"
    text += "."
    if always:
        text += f" Machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}."
    return text + "\n"


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny configuration, smoke test")
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite the Markdown from the saved results (performance.json)",
    )
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these")
    parser.add_argument("--duration", type=float, help="seconds measured per capacity point")
    parser.add_argument("--out", type=Path, help="the Markdown file to write")
    parser.add_argument(
        "--baseline",
        default=BASELINE_COMMIT,
        metavar="COMMIT",
        help="capacity: also run RIPP at this commit, interleaved, as a fixed comparison "
        f"point (default {BASELINE_COMMIT}, the code before issue 12; '' for none)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"wait up to this long for other work on the machine to fall below {QUIET} %% "
        "of one core before starting",
    )
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    out = args.out or (Path(tempfile.gettempdir()) / "ripp-performance-quick.md" if args.quick
                       else DOC)  # fmt: skip
    results_path = out.with_suffix(".json")
    results: dict[str, Any] = {}
    if results_path.exists() and not args.quick:
        results = json.loads(results_path.read_text())
    if args.render:
        _write_doc(out, results)
        print(f"wrote {out} from {results_path}")
        return 0
    machine = machine_info()
    print(f"ripp benchmarks on {machine['cpu']}, {machine['cores']} cores, {machine['python']}")
    load_before = background_load()
    waited = time.monotonic()
    while load_before > QUIET and time.monotonic() - waited < args.wait_quiet:
        print(f"machine busy with other work ({load_before:.0f} % of one core); waiting")
        time.sleep(10)
        load_before = background_load(5.0)
    print(f"background load before the run: {load_before:.0f} % of one core")
    began = time.monotonic()
    for section in SECTIONS:
        if section not in sections:
            continue
        print(f"\n== {section}", flush=True)
        start = time.monotonic()
        if section == "hol":
            data = run_hol(args.quick)
        elif section == "loss":
            data = run_loss(args.quick)
        elif section == "capacity":
            data = run_capacity(args.quick, args.duration, args.baseline or None)
        elif section == "overhead":
            data = run_overhead(args.quick)
        elif section == "setup":
            data = run_setup(args.quick)
        elif section == "soak":
            data = run_soak(args.quick)
        else:
            data = run_profile(args.quick, results.get("capacity"))
        data["machine"] = machine
        data["wall"] = time.monotonic() - start
        data["load_before"] = load_before
        results[section] = data
        render = {
            "hol": render_hol,
            "loss": render_loss,
            "capacity": render_capacity,
            "overhead": render_overhead,
            "setup": render_setup,
            "profile": render_profile,
            "soak": render_soak,
        }[section]
        print(render(data), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1, default=str))
    _write_doc(out, results)
    print(f"\nwrote {out} and {results_path} in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
