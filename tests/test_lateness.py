"""Local lateness is not path delay (protocol §11.8): measuring it, reporting it in ACK
Delay, and holding stream growth while either end runs late.

The whole-call tests put a server behind :class:`BusyLoop`, an event loop that only gets
round to its work every ``period`` seconds (as an overloaded process does): datagrams wait
until the next turn and timers fire at the next turn. Everything runs in virtual time.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_core import RippConfig
from ripp_core._striping import LatenessMeter, StreamCountController
from ripp_core.testing import Impairment

from .call_harness import AppEndpoint, Trunk


def test_lateness_meter_is_a_moving_average_of_timer_lateness() -> None:
    meter = LatenessMeter(RippConfig(lateness_gain=0.5))
    assert meter.value == 0.0
    meter.on_timer(1.0, 1.04)
    assert meter.value == pytest.approx(0.02)
    meter.on_timer(2.0, 1.9)  # run early: on time, not negative lateness
    assert meter.value == pytest.approx(0.01)
    assert meter.samples == 2


def _update(
    controller: StreamCountController, now: float, *, lateness: float, busy: float, open_: int
) -> int:
    return controller.update(
        now,
        rtt=0.3,  # a long RTT: the formula asks for many more streams than are open
        loss=0.01,
        frame_interval=0.02,
        busy_fraction=busy,
        open_streams=open_,
        lateness=lateness,
    )


def test_no_growth_while_an_end_runs_late() -> None:
    config = RippConfig()
    controller = StreamCountController(config, 0.0)
    # On time: the RTT asks for the maximum at once, busy streams add one more.
    assert _update(controller, 1.0, lateness=0.0, busy=0.0, open_=4) == 20
    assert _update(controller, 2.0, lateness=0.0, busy=1.0, open_=4) == 20
    signals = controller.congestion_signals
    # Late by the threshold or more: neither the RTT nor busy streams add a stream.
    late = config.lateness_hold
    assert _update(controller, 3.0, lateness=late, busy=1.0, open_=4) == 4
    assert controller.congestion_signals == signals  # busy streams are no signal then
    assert controller.lateness_holds == 1
    # Just under the threshold the normal rule applies again.
    assert _update(controller, 4.0, lateness=late * 0.99, busy=1.0, open_=4) == 20


def test_shrinking_goes_on_while_late() -> None:
    config = RippConfig(shrink_hold=1.0, adapt_interval=1.0)
    controller = StreamCountController(config, 0.0)

    def update(now: float) -> int:
        return controller.update(
            now,
            rtt=0.001,
            loss=0.0,
            frame_interval=0.02,
            busy_fraction=1.0,  # busy because late, which must not block shrinking either
            open_streams=10,
            lateness=0.05,
        )

    assert update(0.0) == 10
    assert update(1.0) == 9
    assert controller.lateness_holds == 0  # nothing wanted to grow


class BusyLoop:
    """An endpoint whose event loop gets to its work only every ``period`` seconds."""

    def __init__(self, inner: AppEndpoint, period: float) -> None:
        self.inner = inner
        self.period = period
        self.pending: list[tuple[float, bytes, tuple[str, int]]] = []
        self.turn: float | None = None

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.pending.append((now, data, addr))  # waits in the socket until the next turn

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return self.inner.datagrams_to_send(now) if now == self.turn else []

    def get_timer(self) -> float | None:
        wanted = [t for t in (self.inner.get_timer(),) if t is not None]
        if self.pending:
            wanted.append(self.pending[0][0])
        if not wanted:
            return None
        at = math.ceil(min(wanted) / self.period - 1e-9) * self.period
        if self.turn is not None and at <= self.turn:
            at = self.turn + self.period
        return at

    def handle_timer(self, now: float) -> None:
        self.turn = now
        pending, self.pending = self.pending, []
        for _, data, addr in pending:
            self.inner.receive_datagram(data, addr, now)
        timer = self.inner.get_timer()
        if timer is not None and timer <= now:
            self.inner.handle_timer(now)


def _call_with_busy_server(config: RippConfig, period: float) -> tuple[Trunk, str, int, int]:
    """A two-way call, 5 ms one-way, server loop turning every ``period``; returns the
    trunk, the call, and the client's media streams at the start and at most."""
    trunk = Trunk(seed=3, impairment=Impairment(delay=0.005), config=config)
    addr = trunk.server_addrs["a"]
    trunk.net.remove(addr)
    trunk.net.add(addr, BusyLoop(trunk.servers["a"], period))
    handle = trunk.connect()
    call = trunk.rclient.calls[handle]
    initial = most = len(call.media_channels)
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=400)
    trunk.stream_media(handle, start=start, count=400, from_server=True)
    for _ in range(85):
        trunk.net.run_for(0.1)
        most = max(most, len(call.media_channels))
    return trunk, handle, initial, most


@pytest.mark.parametrize("ack_delay", [0.0, RippConfig().media_ack_delay])
def test_a_late_server_reports_its_lateness_and_the_client_does_not_add_streams(
    ack_delay: float,
) -> None:
    """With ACKs sent at once and with ACKs riding on media (§9.2): a server that runs
    later than ``media_ack_delay`` holds nothing back for riding, so its Ack Delay is its
    lateness, and the client sees it beyond the riding bound."""
    period = 0.05  # the server's loop comes round every 50 ms: up to 50 ms late
    config = RippConfig(media_ack_delay=ack_delay)
    trunk, handle, initial, most = _call_with_busy_server(config, period)
    client_call = trunk.rclient.calls[handle]
    server_call = trunk.rserver("a").calls[trunk.server_calls[handle][1]]
    # The server measured its own lateness and reported it as ACK Delay...
    assert server_call.lateness.value >= RippConfig().lateness_hold
    assert client_call.sender.peer_hold == pytest.approx(server_call.lateness.value, rel=0.3)
    # ...so the client's RTT stays near the path's 10 ms, not the 35 ms it measures raw...
    rtt = client_call.sender.rtt.smoothed
    assert rtt is not None and rtt < 0.03
    # ...and the client opened no stream beyond what the path asked for at the start.
    assert most == initial
    # Long samples while the server was late did not count as QUIC repairs (loss).
    assert client_call.sender.loss_estimate < 0.1
    # The media still flows (late playout is the jitter buffer's business).
    assert len(trunk.c2s[handle].received) >= 0.95 * 400
    assert len(trunk.s2c[handle].received) >= 0.95 * 400


def test_without_the_growth_hold_the_same_call_adds_streams() -> None:
    """The comparison point: with ``lateness_hold`` out of reach, the long RTT samples the
    server's lateness causes read as repaired losses and the client grows N. ACKs go at
    once here, so that all of Ack Delay is lateness (riding ACKs take up to
    ``media_ack_delay`` of it off every sample, which hides part of it even without the
    rule)."""
    config = RippConfig(lateness_hold=100.0, media_ack_delay=0.0)
    trunk, handle, initial, most = _call_with_busy_server(config, 0.05)
    assert most > initial
    # the server's lateness read as loss repaired by QUIC
    assert trunk.rclient.calls[handle].sender.loss_estimate > 0.2
    # and a server that keeps up leaves N alone either way
    trunk, handle, initial, most = _call_with_busy_server(RippConfig(media_ack_delay=0.0), 0.001)
    assert most == initial
    server_call = trunk.rserver("a").calls[trunk.server_calls[handle][1]]
    assert server_call.lateness.value < RippConfig().lateness_hold


@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 0.5),  # rtt
            st.floats(0.0, 0.3),  # loss
            st.floats(0.0, 1.0),  # busy fraction
            st.integers(2, 20),  # open streams
            st.floats(0.0, 0.1),  # lateness
            st.integers(0, 25),  # peer wanted
        ),
        min_size=1,
        max_size=30,
    )
)
def test_controller_never_grows_while_late_and_stays_in_bounds(
    steps: list[tuple[float, float, float, int, float, int]],
) -> None:
    config = RippConfig()
    controller = StreamCountController(config, 0.0)
    now = 0.0
    for rtt, loss, busy, open_streams, lateness, wanted in steps:
        now += config.adapt_interval
        result = controller.update(
            now,
            rtt=rtt,
            loss=loss,
            frame_interval=0.02,
            busy_fraction=busy,
            open_streams=open_streams,
            peer_wanted=wanted,
            lateness=lateness,
        )
        assert config.min_media_streams <= result <= config.max_media_streams
        if lateness >= config.lateness_hold:
            assert result <= open_streams


def test_lateness_is_seen_to_fall_without_playout_or_pacing_timers() -> None:
    """Jitter buffer off and unpaced sending (as in the capacity benchmark): the lateness
    probe keeps on-time samples coming, so a server that caught up stops reporting hold."""
    config = RippConfig(jitter_buffer=False)
    trunk = Trunk(seed=5, impairment=Impairment(delay=0.005), config=config)
    addr = trunk.server_addrs["a"]
    # 40 ms turns: the 250 ms lateness probe falls between turns, as deadlines do in a real
    # loop (a probe landing exactly on a turn would be on time however busy the loop).
    busy = BusyLoop(trunk.servers["a"], 0.04)
    trunk.net.remove(addr)
    trunk.net.add(addr, busy)
    handle = trunk.connect()
    start = trunk.net.now + 0.01
    trunk.stream_media(handle, start=start, count=300)
    trunk.stream_media(handle, start=start, count=300, from_server=True)
    trunk.net.run_for(3.0)
    server_call = trunk.rserver("a").calls[trunk.server_calls[handle][1]]
    assert server_call.lateness.value >= config.lateness_hold
    busy.period = 1e-4  # the server's loop keeps up from now on
    trunk.net.run_for(3.0)
    # 12 probes at gain 1/8 in 3 s: about a fifth of the busy value, below the hold
    assert server_call.lateness.value < config.lateness_hold / 2
    client_call = trunk.rclient.calls[handle]
    # (the peer's average hold itself includes ACKs riding with its media, up to 20 ms)
    assert client_call.sender.peer_lateness < config.lateness_hold
