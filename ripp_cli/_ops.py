"""What ``--log-json`` and ``--metrics-port`` add to a running server or client: the glue
between the driver API and :mod:`._eventlog` / :mod:`._metrics` (kept out of ``_app``)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ripp_core import CallStats, NoSuchCall

from ._eventlog import EventRecorder
from ._metrics import CallMetrics, serve_metrics
from ._runtime import Runtime

log = logging.getLogger("ripp.cli")

#: How often live calls' statistics are sampled into the metrics.
SAMPLE_INTERVAL = 1.0


def add_arguments(parser: argparse.ArgumentParser, *, metrics: bool) -> None:
    """``--metrics-port`` (servers) and ``--metrics-host``."""
    if metrics:
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)",
        )
        parser.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics")


def attach(
    rt: Runtime, tasks: Any, owner: Any, args: argparse.Namespace, side: str, *, metrics: bool
) -> None:
    """Observe ``owner`` (a driver ``Server`` or ``Client``): log its events as structured
    records with ``--log-json``, and (``metrics``) serve metrics with ``--metrics-port``."""
    if getattr(args, "log_json", False):
        owner.observe(EventRecorder(side, rt.now))
    port = getattr(args, "metrics_port", None)
    if not metrics or port is None:
        return
    collector = CallMetrics()
    owner.observe(lambda event: collector.observe(event, rt.now()))
    bound = serve_metrics(collector, port, args.metrics_host)
    if args.json:  # stdout is for the one JSON line
        log.warning("metrics: http://%s:%d/metrics", args.metrics_host, bound)
    else:
        print(f"metrics: http://{args.metrics_host}:{bound}/metrics", flush=True)
    tasks.start_soon(_sample, rt, owner.endpoint, collector)


async def _sample(rt: Runtime, endpoint: Any, metrics: CallMetrics) -> None:
    while True:
        await rt.sleep(SAMPLE_INTERVAL)
        now = rt.now()
        stats: dict[str, CallStats] = {}
        for handle in list(endpoint.calls):
            try:
                stats[handle] = endpoint.stats(handle, now)
            except NoSuchCall:
                continue
        # The endpoint has no public connection count yet; its connection list is it.
        metrics.sample(stats, endpoint.connection_count)
