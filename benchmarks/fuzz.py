"""The hostile fuzz target at scale: many random signaling and media bodies against the
sans-IO RIPP server over the virtual network (``tests/hostile/fuzz.py``), one bystander
call up throughout.

    python -m benchmarks.fuzz                   # 1000 examples (a few minutes)
    python -m benchmarks.fuzz --examples 100    # quicker
    python -m benchmarks.fuzz --seed 7          # another random sequence

Fails (with hypothesis's shrunk example) if anything escaped the server or the bystander
call lost a frame; exits 1 if ended calls were still held 30 virtual seconds after the
last example. Prints the violations the server reported, by kind.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

from ripp_core import CallTerminated, ProtocolViolation
from tests.hostile.fuzz import FORGET_WITHIN


def run(examples: int, random_seed: int) -> dict[str, Any]:
    """Run ``examples`` fuzz examples; the counts of what the server reported."""
    from tests.hostile.fuzz import FuzzWorld, attacks

    world = FuzzWorld()

    @seed(random_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(attacks())
    def attack(example: dict[str, Any]) -> None:
        world.attack(example)

    began = time.perf_counter()
    attack()
    world.assert_intact()
    seconds = time.perf_counter() - began
    held = world.ended_calls_held()
    server = world.trunk.servers["a"]
    return {
        "examples": world.examples,
        "seconds": round(seconds, 1),
        "ended_calls_held": held,
        "calls_held": len(world.server.calls) - 1,
        "violations": Counter(v.error for v in server.of(ProtocolViolation)),
        "terminations": Counter(t.code for t in server.of(CallTerminated)),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the server logs every violation: thousands
    result = run(args.examples, args.seed)
    print(f"{result['examples']} examples in {result['seconds']} s: nothing escaped, "
          "the bystander call kept every frame")
    print("violations reported:", dict(result["violations"].most_common()))
    print("calls ended with:", dict(result["terminations"].most_common()))
    print(f"after {FORGET_WITHIN:g} more virtual seconds the server holds "
          f"{result['calls_held']} attacking calls, {result['ended_calls_held']} of them ended")
    return 1 if result["ended_calls_held"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
