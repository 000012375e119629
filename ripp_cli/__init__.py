"""Command-line entry point for ripp (the ``ripp`` console script).

``ripp simulate`` runs whole calls between real RIPP cores over an in-memory network in
virtual time. The commands over real UDP sockets (``serve``, ``call``, ``demo``) arrive with
the Trio and asyncio drivers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import _simulate


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ripp`` command line and return the process exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate.run(args)
    return 2
