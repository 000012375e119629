"""Command-line entry point for ripp (``ripp`` console script).

Only the argument skeleton exists so far; the ``simulate`` subcommand is a placeholder that
the CLI work will fill in.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with its (placeholder) subcommands."""
    parser = argparse.ArgumentParser(
        prog="ripp",
        description="RIPP: phone calls over HTTP/3 (Real Time Internet Peering Protocol).",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.add_parser(
        "simulate",
        help="run simulated calls over an in-memory network (not implemented yet)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ripp`` command line and return the process exit status.

    Placeholder: whatever the arguments, print the help text and succeed.
    """
    parser = _build_parser()
    # Parse anyway so that ``--help`` and unknown options behave as users expect.
    parser.parse_known_args(argv)
    parser.print_help()
    return 0
