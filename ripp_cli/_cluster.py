"""``ripp cluster``: a local cluster in one command (issue 9, protocol section 24).

Starts Redis (Debian's ``redis-server``; or uses ``--store``), K ``ripp serve`` instances
sharing call state in it, and an nginx ``stream`` UDP forwarder in front, then prints the
calls URI and runs until Ctrl-C (or SIGTERM). ``ripp serve --workers N`` is the same with
N workers (default: one per core) on ``--port``.

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
from pathlib import Path
from types import FrameType

from ripp_cluster import RedisUnavailable
from ripp_cluster._local import ForwarderUnavailable, LocalCluster, local_cluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ripp cluster``."""
    parser.add_argument("--workers", type=int, default=3, help="instances to run (default 3)")
    parser.add_argument(
        "--rolling-upgrade",
        action="store_true",
        help="instead of serving: run CALLS calls through the cluster while replacing every "
        "instance in turn (SIGTERM drains it), print the figures (frames lost, largest "
        "added delay) and exit (status 1 if a frame was lost)",
    )
    parser.add_argument("--calls", type=int, default=3, help="calls for --rolling-upgrade")
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
            with local_cluster(
                directory,
                workers,
                port=port,
                store=getattr(args, "store", None),
                serve_args=[
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
                if getattr(args, "rolling_upgrade", False):
                    return _rolling_upgrade(cluster, args)
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


def _rolling_upgrade(cluster: LocalCluster, args: argparse.Namespace) -> int:
    import trio

    from ripp_cli import _certs
    from ripp_cluster._upgrade import rolling_upgrade

    ca = _certs.ensure_local_pki().ca_cert_path
    report = trio.run(functools.partial(rolling_upgrade, cluster, Path(ca), calls=args.calls))
    if getattr(args, "json", False):
        print(json.dumps(report), flush=True)
    else:
        print(
            f"ripp cluster: rolling upgrade of {report['instances_replaced']} instances "
            f"under {report['calls']} calls: {report['moves']} moves, frames lost "
            f"{report['client_frames_unacked']} client->server, "
            f"{report['server_sequence_holes']} server->client; largest added delay "
            f"{report['added_delay_ms']} ms; calls up: {report['all_connected']}",
            flush=True,
        )
    lost = report["client_frames_unacked"] + report["server_sequence_holes"]
    return 0 if lost == 0 and report["all_connected"] else 1
