"""The fuzz target in the suite: a modest number of random bodies against the sans-IO
server (``tests/hostile/fuzz.py``); ``python -m benchmarks.fuzz`` runs a large number."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from .fuzz import FuzzWorld, attacks
from .harness import WITH_QH3

EXAMPLES = 30


@pytest.mark.parametrize("engine", WITH_QH3)
def test_random_bodies_never_escape_and_spare_the_bystander(engine: str) -> None:
    world = FuzzWorld(engine=engine)

    # One world for every example: the bystander call must survive all of them in turn.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(attacks())
    def attack(example: dict[str, Any]) -> None:
        world.attack(example)

    attack()
    world.assert_intact()
    assert world.examples >= EXAMPLES
    # ... and the attacking calls are all freed (issue 6, class 9: calls ended without
    # END_STREAM on their requests were held forever)
    world.assert_forgotten()
