"""The HTTP/3 binding reads each QUIC connection's timer again only when it may have
changed (``_QuicBinding._timer_of``): a cached value must always equal a fresh one."""

from __future__ import annotations

from typing import Any

import pytest

from ripp_core import RippConfig
from ripp_core.testing import Impairment

from .call_harness import AppEndpoint, Trunk


def _stale_cache_entries(endpoint: Any) -> list[tuple[float | None, float | None]]:
    """(cached, fresh) for every connection whose cached timer would be used as is."""
    wrong = []
    for connection in endpoint._quic_connections():
        if connection.timer_stale or connection in endpoint._touched:
            continue  # the next read asks the QUIC connection itself
        fresh = connection.quic.get_timer()
        if connection.quic_timer != fresh:
            wrong.append((connection.quic_timer, fresh))
    return wrong


@pytest.mark.parametrize("engine", ["aioquic", "qh3"])
@pytest.mark.parametrize("seed", [1, 2])
def test_cached_quic_timers_always_match_the_connections(
    engine: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []
    wrong: list[tuple[float | None, float | None]] = []
    plain = AppEndpoint.get_timer

    def checking_get_timer(self: AppEndpoint) -> float | None:
        # Every time the network asks an endpoint for its next timer, whatever the
        # endpoint would answer from its cache must be what the connection says now.
        wrong.extend(_stale_cache_entries(self.endpoint))
        checked.append(1)
        return plain(self)

    monkeypatch.setattr(AppEndpoint, "get_timer", checking_get_timer)
    config = RippConfig(jitter_buffer=False, quic_engine=engine)
    # Loss, delay and jitter: loss detection, PTO and ACK timers all move.
    trunk = Trunk(
        seed=seed, impairment=Impairment(delay=0.02, jitter=0.01, loss=0.05), config=config
    )
    handles = [trunk.connect() for _ in range(3)]
    start = trunk.net.now + 0.01
    for handle in handles:
        trunk.stream_media(handle, start=start, count=100)
        trunk.stream_media(handle, start=start + 0.005, count=100, from_server=True)
    trunk.net.run_until(lambda: False, timeout=3.0)
    assert len(checked) > 1000
    assert wrong == []
    # And the media went through: the cache did not leave a connection's timer unserved.
    for handle in handles:
        assert len(trunk.c2s[handle].received) >= 95
        assert len(trunk.s2c[handle].received) >= 95
