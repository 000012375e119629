"""``ripp cluster``: a local cluster in one command (issue 9, protocol section 24).

Starts Redis (Debian's ``redis-server``; or uses ``--store``), K ``ripp serve`` instances
sharing call state in it, and an nginx ``stream`` UDP forwarder in front, then prints the
calls URI and runs until Ctrl-C (or SIGTERM). ``ripp serve --workers N`` is the same with
N workers (default: one per core) on ``--port``.

``--exercise`` shows, instead of serving, that the cluster keeps its calls: it places
``--calls`` calls from ``--clients`` clients through the forwarder, SIGKILLs the instance
holding the most calls, waits for them to resume on the others (protocol 15.3, 24.4),
restarts it, replaces every instance in turn (a rolling upgrade: each drains its calls
with ``move``, protocol 24.6), ends the calls and prints the figures and a verdict (exit
status 0 only if every call was kept). ``--rolling-upgrade`` is the same without the kill.

How calls reach instances: see :mod:`ripp_cluster._local`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from ripp_cluster import RedisUnavailable
from ripp_cluster._local import ForwarderUnavailable, LocalCluster, local_cluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ripp cluster``."""
    parser.add_argument("--workers", type=int, default=3, help="instances to run (default 3)")
    exercise = parser.add_mutually_exclusive_group()
    exercise.add_argument(
        "--exercise",
        action="store_true",
        help="instead of serving: run CALLS calls through the cluster, SIGKILL the instance "
        "holding the most, wait for its calls to resume elsewhere, then replace every "
        "instance in turn; print the figures and exit (status 1 unless every call was kept)",
    )
    exercise.add_argument(
        "--rolling-upgrade",
        action="store_true",
        help="the same without the SIGKILL: replace every instance in turn under CALLS calls",
    )
    parser.add_argument("--calls", type=int, default=4, help="calls of the exercise (default 4)")
    parser.add_argument(
        "--clients",
        type=int,
        default=2,
        help="client endpoints (UDP sockets) the exercise's calls are spread over (default 2)",
    )
    parser.add_argument(
        "--resume-bound",
        type=float,
        metavar="SECONDS",
        help="longest media gap a killed call may have (default: protocol 24.7's bound for "
        "the default settings, 5 s)",
    )
    add_cluster_options(parser)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``ripp cluster`` and ``ripp serve --workers``."""
    parser.add_argument(
        "--dir",
        type=Path,
        help="where logs, the nginx configuration and Redis files go (default: a tmp dir)",
    )
    parser.add_argument(
        "--instance-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to every ripp serve instance (e.g. --instance-arg=--set=...); repeatable",
    )


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, port: int = 0) -> int:
    """Run the cluster until interrupted; return the exit status."""
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise SystemExit("ripp: --workers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="ripp-cluster-") as scratch:
        directory = args.dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        # Ctrl-C and SIGTERM alike (a shell may start us with SIGINT ignored).
        signal.signal(signal.SIGTERM, _interrupted)
        signal.signal(signal.SIGINT, _interrupted)
        try:
            exercising = getattr(args, "exercise", False) or getattr(args, "rolling_upgrade", False)
            instance_args: tuple[str, ...] = ()
            if exercising:
                from ripp_cluster._upgrade import INSTANCE_ARGS as instance_args
            with local_cluster(
                directory,
                workers,
                port=port,
                store=getattr(args, "store", None),
                serve_args=[
                    *instance_args,
                    *args.instance_arg,
                    *(f"--set={setting}" for setting in getattr(args, "set", [])),
                ],
            ) as cluster:
                summary = {
                    "calls_uri": cluster.calls_uri,
                    "store": cluster.redis_url,
                    "instances": {i.name: i.calls_uri for i in cluster.instances},
                    "logs": str(directory),
                }
                if exercising:
                    return _exercise(cluster, args)
                if getattr(args, "json", False):
                    print(json.dumps(summary), flush=True)
                else:
                    print(f"ripp cluster: {cluster.calls_uri}", flush=True)
                    print(f"  store {cluster.redis_url}; logs in {directory}", flush=True)
                    for instance in cluster.instances:
                        print(f"  instance {instance.name}: {instance.calls_uri}", flush=True)
                while True:
                    time.sleep(0.5)
                    for instance in cluster.instances:
                        if instance.process.poll() is not None:
                            print(
                                f"ripp cluster: instance {instance.name} exited "
                                f"{instance.process.returncode}; see {instance.log}",
                                flush=True,
                            )
                            return 1
        except KeyboardInterrupt:
            return 0
        except (RedisUnavailable, ForwarderUnavailable, RuntimeError) as exc:
            print(f"ripp cluster: {exc}", flush=True)
            return 1


def _exercise(cluster: LocalCluster, args: argparse.Namespace) -> int:
    import trio

    from ripp_cli import _certs
    from ripp_cluster._upgrade import cluster_exercise

    kill = bool(args.exercise)
    if args.calls < 1 or args.clients < 1:
        raise SystemExit("ripp: --calls and --clients must be at least 1")
    ca = _certs.ensure_local_pki().ca_cert_path
    # Without the kill, one client as before: the calls move between instances anyway.
    clients = min(args.clients, args.calls) if kill else 1
    print(
        f"ripp cluster: {len(cluster.instances)} instances behind nginx stream on "
        f"{cluster.calls_uri}, store {cluster.redis_url}; {args.calls} calls from "
        f"{clients} client{'s' if clients > 1 else ''}",
        flush=True,
    )
    report = trio.run(
        functools.partial(
            cluster_exercise,
            cluster,
            Path(ca),
            calls=args.calls,
            clients=clients,
            kill=kill,
            bound=args.resume_bound,
        )
    )
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(format_report(report), flush=True)
    return 0 if report["ok"] else 1


def format_report(report: dict[str, Any]) -> str:
    """The exercise's figures as a table for people."""
    lines = []
    kill = report.get("kill")
    if kill is not None:
        lines.append(
            f"SIGKILL {kill['victim']}: media gap of its calls (bound {kill['bound_ms']} ms); "
            "frames sent in the gap are the gap, not loss (the clients buffered them; "
            f"{kill['dropped_by_client_sender']} given up)"
        )
        lines.append("  call  on killed  path                media gap  frames in gap  resumed")
        for row in kill["calls"]:
            lines.append(
                f"  {row['call']:<4}  {'yes' if row['killed'] else 'no':<9}  {row['path']:<18}"
                f"  {row['gap_ms']:>6} ms  {row['gap_frames']:>13}  "
                + (
                    "yes"
                    if row["resumed"] and row["killed"]
                    else "-"
                    if not row["killed"]
                    else "NO"
                )
            )
    upgrade = report.get("upgrade")
    if upgrade is not None:
        lines.append(
            f"rolling upgrade: {upgrade['instances_replaced']} instances replaced, "
            f"{upgrade['moves']} moves, {upgrade['frames_sent']} frames sent; frames lost "
            f"{upgrade['lost_client_to_server']} client->server, "
            f"{upgrade['lost_server_to_client']} server->client; largest added delay "
            f"{upgrade['added_delay_ms']} ms"
        )
    ends = ", ".join(f"{n} x {line}" for line, n in Counter(report["ended"]).items())
    lines.append(f"calls ended: {ends}")
    lines.append(
        "verdict: every call kept" if report["ok"] else "verdict: FAILED (a call was not kept)"
    )
    return "\n".join(lines)
