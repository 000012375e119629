"""Command-line entry point for ripp (the ``ripp`` console script).

``ripp demo`` runs a server and a client on loopback with real QUIC, TLS and audio codecs;
``ripp serve`` and ``ripp call`` are the two halves on their own (``ripp cluster``, or
``ripp serve --workers N``, runs many instances behind a forwarder); ``ripp simulate`` runs
whole calls in virtual time over an in-memory network; ``ripp ladder`` draws a call from
its log. All but ``simulate`` take
``--driver trio|asyncio``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import _app, _cluster, _ladder, _simulate


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ripp",
        description="RIPP: phone calls over HTTP/3 (Real Time Internet Peering Protocol).",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulate = subcommands.add_parser(
        "simulate",
        help="run calls between a RIPP client and server over a simulated network",
        description=_simulate.__doc__,
    )
    _simulate.add_arguments(simulate)
    ladder = subcommands.add_parser(
        "ladder",
        help="draw a call as a sequence diagram from a --log-json log or a qlog file",
        description=_ladder.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _ladder.add_arguments(ladder)
    _app.add_arguments(subcommands)
    cluster = subcommands.add_parser(
        "cluster",
        help="a local cluster: Redis, an nginx UDP forwarder and K ripp serve instances",
        description=_cluster.__doc__,
    )
    _cluster.add_arguments(cluster)
    cluster.add_argument("--port", type=int, default=0, help="forwarder UDP port (0: any)")
    cluster.add_argument(
        "--json", action="store_true", help="print the URIs (or the figures) as one JSON line"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ripp`` command line and return the process exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate.run(args)
    if args.command == "ladder":
        return _ladder.run(args)
    if args.command == "cluster":
        return _cluster.run(args, port=args.port)
    if args.command == "serve" and args.workers is not None:
        return _cluster.run(args, port=args.port)
    return _app.run(args.command, args)
