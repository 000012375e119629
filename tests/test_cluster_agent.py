"""The cluster agent beside real Trio servers on loopback, sharing an in-memory call store
(issue 9, protocol 24): the claim after a crash carries the next-hop data to the new
instance's application; a drain through the store moves a call with every frame
delivered exactly once; the handoff codec round-trips whatever a handoff can hold.

The same paths run against real processes and Redis in tests/test_failover.py (slow);
these are quick and need nothing installed.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import ripp_trio
from ripp_cluster import ClusterAgent
from ripp_core import (
    CallRequest,
    CallState,
    ClaimOutcome,
    Codec,
    MemoryCallStore,
    RippConfig,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
    parse_name_addr,
)
from ripp_core._call import CallHandoff
from ripp_core._receiver import ReceiverWindow
from ripp_core._sender import SenderState
from ripp_core._store import decode_handoff, encode_handoff
from ripp_core.testing import server_quic_configuration

from .strategies import media_frames
from .test_drivers import PKI, EchoApp, open_client, place_call

CHECKS: dict[str, Any] = {
    "authorizer": insecure_accept_any_bearer,
    "identity_verifier": insecure_accept_any_identity,
}


class ClusterServer:
    """A Trio server with deferred checks and a cluster agent, crashable."""

    def __init__(self, name: str, store: MemoryCallStore, config: RippConfig) -> None:
        self.name = name
        self.store = store
        self.config = config
        self.app = EchoApp()
        self.scope = trio.CancelScope()
        self.server: Any = None
        self.agent: ClusterAgent | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            async with ripp_trio.open_server(
                server_quic_configuration(PKI),
                instance_id=self.name,
                config=self.config,
                deferred_checks=True,
                **CHECKS,
            ) as server:
                self.server = server
                # Call URIs (and the lease) name this instance's own address.
                server.endpoint.authority = f"localhost:{server.address[1]}"
                self.agent = ClusterAgent(server, self.store, **CHECKS)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.agent.run)
                    await self.agent.ready.wait()
                    nursery.start_soon(self.app.serve, server, nursery.start_soon)
                    task_status.started()

    @property
    def uri(self) -> str:
        return f"https://localhost:{self.server.address[1]}/ripp/calls"

    def crash(self) -> None:
        """Die without a goodbye: nothing is sent, and the lease is no longer renewed."""
        self.server.endpoint.close = lambda *args, **kwargs: None
        self.scope.cancel()


@pytest.mark.timeout(30)
def test_a_crashed_owners_call_is_claimed_with_its_next_hop() -> None:
    # The lease (1 s) outlives the client's detection (0.5 s without acks): its first
    # attempt, at b, finds the owner alive (503); the next goes to the dead a and is not
    # answered, so it is abandoned after reestablish_attempt_timeout; then b claims.
    config = RippConfig(
        ack_timeout=0.5,
        store_lease_ttl=1.0,
        store_renew_interval=0.25,
        reestablish_attempt_timeout=1.0,
    )
    store = MemoryCallStore(trio.current_time)
    a, b = ClusterServer("a", store, config), ClusterServer("b", store, config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            async with open_client("trio", a.uri, b.uri, config=config) as client:
                call = await place_call(client)
                with trio.fail_after(15):
                    await call.wait_state(CallState.CONNECTED)
                    while not a.app.incoming:
                        await trio.sleep(0.01)
                    assert a.agent is not None
                    handle = a.app.incoming[0][1].handle
                    while not await a.agent.set_next_hop(handle, b"sip:leg-1@gw"):
                        await trio.sleep(0.01)  # the registration may still be on its way
                    for i in range(200):
                        call.play(Codec.PCMU, 0.02, bytes([i % 256]) * 160)
                    await trio.sleep(0.4)
                    a.crash()
                    while not b.app.incoming:
                        await trio.sleep(0.01)
                    incoming = b.app.incoming[0][1].incoming
                    assert incoming.reestablishes is not None and "/a/calls/" in (
                        incoming.reestablishes
                    )
                    assert incoming.next_hop == b"sip:leg-1@gw"
                    assert incoming.state is CallState.CONNECTED
                    assert b.agent is not None and b.agent.claims[ClaimOutcome.CLAIMED] == 1
                    assert b.agent.claims[ClaimOutcome.OWNER_ALIVE] >= 1
                    while len(b.app.sequences) < 10:  # audio flows again, now to b
                        await trio.sleep(0.01)
                    # One record left: the new call, owned by b; a's is gone.
                    assert await store.calls_of("a") == []
                    (record,) = await store.calls_of("b")
                    assert record.next_hop == b"sip:leg-1@gw"
                    await call.terminate()
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.timeout(30)
def test_drain_through_the_store_delivers_every_frame_once() -> None:
    count = 100
    config = RippConfig(jitter_buffer=False)
    store = MemoryCallStore(trio.current_time)
    a, b = ClusterServer("a", store, config), ClusterServer("b", store, config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            async with open_client("trio", a.uri) as client:
                call = await place_call(client)
                with trio.fail_after(15):
                    await call.wait_state(CallState.CONNECTED)
                    for i in range(count):
                        call.play(Codec.PCMU, 0.02, bytes([i]) * 160)
                    await trio.sleep(count * 0.02 / 2)
                    assert a.agent is not None
                    assert await a.agent.drain() == 1
                    await call.mark("played")
                    assert "/b/calls/" in (call.uri or "")
                    assert call.state is CallState.CONNECTED
                    assert a.agent.draining and a.agent.owned == []
                    assert [r.owner for r in await store.calls_of("b")] == ["b"]
                    await call.terminate()
            nursery.cancel_scope.cancel()

    trio.run(main)
    at_a, at_b = a.app.sequences, b.app.sequences
    assert at_a and at_b, (len(at_a), len(at_b))
    assert sorted(at_a + at_b) == list(range(count))  # every frame exactly once
    moved = b.app.incoming[0][1].incoming
    assert moved.reestablishes is not None and "/a/calls/" in moved.reestablishes


@given(
    st.lists(media_frames(), max_size=5),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.none() | st.integers(0, 2**40),
    st.frozensets(st.integers(0, 2**40), max_size=5),
    st.binary(max_size=64),
    st.sampled_from([CallState.PENDING, CallState.RINGING, CallState.CONNECTED]),
)
def test_handoff_codec_round_trips(
    frames: list[Any],
    sequence: int,
    timestamp: int,
    highest: int | None,
    recent: frozenset[int],
    next_hop: bytes,
    state: CallState,
) -> None:
    handoff = CallHandoff(
        request=CallRequest(
            to=parse_name_addr("<tel:+12125551234>"),
            from_=parse_name_addr('"Ann" <tel:+14085551234>;tag=x'),
            identity="eyJ.eyJ.sig;info=<https://cert.example/c.pem>",
            headers=(("x-trunk", "7"),),
            principal="alice",
        ),
        state=state,
        sender=SenderState(sequence, timestamp, tuple(frames)),
        receiver=ReceiverWindow(highest, recent),
        previous_uri="https://h:1/ripp/instances/a/calls/XYZ",
    )
    assert decode_handoff(encode_handoff(handoff, next_hop), RippConfig()) == (handoff, next_hop)


@pytest.mark.parametrize("data", [b"[]", b"{}", b'{"frames": ["!!"]}', b"nope"])
def test_a_malformed_handoff_is_refused(data: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_handoff(data, RippConfig())


def test_memory_store_lists_live_instances_and_hands_over_once() -> None:
    clock = [0.0]
    store = MemoryCallStore(lambda: clock[0])

    async def main() -> None:
        await store.renew("a", 1.0, "localhost:1")
        await store.renew("b", 5.0, "localhost:2")
        clock[0] = 2.0
        assert await store.live_instances() == {"b": "localhost:2"}
        await store.put_handoff("c1", b"data", 1.0)
        assert await store.take_handoff("c1") == b"data"
        assert await store.take_handoff("c1") is None  # taken once
        await store.put_handoff("c2", b"late", 1.0)
        clock[0] = 3.5
        assert await store.take_handoff("c2") is None  # expired

    trio.run(main)
