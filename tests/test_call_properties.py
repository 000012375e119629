"""Whole calls under random impairment (hypothesis): delivery invariants hold for any seed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ripp_core import CallState, CallTerminated, RippConfig
from ripp_core.testing import Impairment

from .call_harness import Trunk

impairments = st.builds(
    Impairment,
    delay=st.floats(0.001, 0.08),
    jitter=st.floats(0.0, 0.01),
    loss=st.floats(0.0, 0.08),
    duplicate=st.floats(0.0, 0.05),
    reorder=st.floats(0.0, 0.1),
    reorder_delay=st.floats(0.001, 0.02),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), impairment=impairments, jitter_buffer=st.booleans())
def test_media_arrives_exactly_once_under_any_impairment(
    seed: int, impairment: Impairment, jitter_buffer: bool
) -> None:
    trunk = Trunk(seed=seed, impairment=impairment, config=RippConfig(jitter_buffer=jitter_buffer))
    handle = trunk.connect()
    count = 60
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=count)
    trunk.stream_media(handle, start=start, count=count, from_server=True)
    trunk.net.run_for(count * 0.02 + 3.0)
    name, server_handle = trunk.server_calls[handle]
    dropped = {
        "c2s": trunk.rclient.stats(handle, trunk.net.now).sender.frames_dropped,
        "s2c": trunk.rserver(name).stats(server_handle, trunk.net.now).sender.frames_dropped,
    }
    for direction, log in (("c2s", trunk.c2s[handle]), ("s2c", trunk.s2c[handle])):
        # never a duplicate at the application, whatever the network duplicated
        assert log.duplicates == 0
        assert set(log.received) <= set(range(count))
        if not jitter_buffer:
            # arrival delivery: QUIC repairs every loss, so every frame arrives unless its
            # sender gave it up (it waited longer than send_queue_max_delay for a stream)
            assert len(log.received) + dropped[direction] == count
        else:
            # playout delivery: in sequence order, each frame at most once; a frame repaired
            # too late for its playout time is counted late, never played out of order
            played = [s for s, _ in sorted(log.received.items(), key=lambda kv: kv[1])]
            assert played == sorted(played)
    # the receivers' own statistics agree: every frame arrived or was given up by its sender
    server_stats = trunk.rserver(name).stats(server_handle, trunk.net.now).receiver
    assert server_stats.frames_received + dropped["c2s"] == count
    assert server_stats.lost <= dropped["c2s"]  # every sequence gap is a frame given up
    # and the call is still up at both ends, and hangs up cleanly
    assert trunk.client_state(handle) is CallState.CONNECTED
    trunk.rclient.terminate(handle, trunk.net.now)
    trunk.client.drain()
    assert trunk.run_until(lambda: bool(trunk.servers[name].of(CallTerminated)), 5.0)
