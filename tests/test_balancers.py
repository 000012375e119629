"""RIPP through real L7 load balancers from Debian (issue 8, R17): HAProxy, nginx and
Caddy in front of two ``ripp serve`` instances over HTTP/2 (h2c on both legs), loopback.

Creation requests spread over the instances; every later request of a call reaches its
owner by path (per-instance call URIs, protocol 3.3: a misrouted signaling or media
request would get 404 and the call would never connect); media flows both ways; the
per-frame round trip is measured through each balancer and directly. The configurations
are those of docs/deployment.md (written by benchmarks/balancers.py, which measures the
same thing at length).

``scripts/test`` installs haproxy, nginx and caddy when run as root; a missing one skips
its test, except under CI (env ``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from benchmarks.balancers import (
    BALANCERS,
    Ports,
    calls_through,
    find_program,
    free_port,
    ripp_instances,
    stop,
    wait_port,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

#: Balancers whose absence fails the test under CI (scripts/test installs them).
REQUIRED = ("caddy", "haproxy", "nginx")


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    """Two ``ripp serve`` instances, "a" and "b", each serving h2c on a free TCP port."""
    with ripp_instances(tmp_path_factory.mktemp("ripp-home")) as ports:
        yield ports


def _program(name: str) -> str:
    program = find_program(name)
    if program is None:
        message = f"{name} is not installed (Debian package {name})"
        if os.environ.get("CI") and name in REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return program


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
def test_calls_through_a_real_load_balancer(
    balancer: str, instances: Ports, tmp_path: Path
) -> None:
    program = _program(balancer)
    front = free_port()
    process = subprocess.Popen(
        BALANCERS[balancer](program, tmp_path, front, instances),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_port(front, process)
        uris, rtts = trio.run(calls_through, front, 4, 50)
        _, direct = trio.run(calls_through, instances["a"], 1, 50)
    finally:
        stop(process)
    # Creation spread over both instances (round robin), and each call's URI names its
    # owner; the calls connected and echoed media, so every later request reached it.
    owners = {uri.split("/ripp/instances/", 1)[1].split("/", 1)[0] for uri in uris}
    assert owners == {"a", "b"}, uris
    assert all(uri.startswith(f"https://127.0.0.1:{front}/") for uri in uris)
    assert len(rtts) == 4 * 50 and len(direct) == 50
    added = _median_ms(rtts) - _median_ms(direct)
    print(
        f"\n{balancer}: frame round trip p50 {_median_ms(rtts):.2f} ms through it, "
        f"{_median_ms(direct):.2f} ms direct: {added:.2f} ms added (two balancer passes)"
    )
    # Generous: a loaded machine; the balancers measured here add about 1 ms.
    assert added < 50.0
