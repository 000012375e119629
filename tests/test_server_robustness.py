"""A failure while handling one call ends that call only (issue 6, class 1).

Real servers and clients of both drivers over loopback UDP with real TLS, in one event
loop per test: ``Server.serve(handler)`` runs each call's handler in its own task, and a
handler that raises, a caller that cancels while ringing, or a command on a call that has
ended under the handler's feet must leave the server and every other call untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import ripp_asyncio
import ripp_trio
from ripp_core import CallEnded, CallState, Codec, MediaFrame, RippConfig, Termination
from ripp_core.testing import (
    INSECURE_CHECKS,
    client_quic_configuration,
    make_test_pki,
    server_quic_configuration,
)
from tests.call_harness import IDENTITY

PKI = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
DRIVERS = {"trio": ripp_trio, "asyncio": ripp_asyncio}
FROM = "<tel:+14085551234>"
ORDINARY, FAULTY, SLOW = "<tel:+12125550001>", "<tel:+12125550666>", "<tel:+12125550777>"
CONFIG = RippConfig(connect_timeout=1.0)


async def sleep(driver: str, seconds: float) -> None:
    await (trio.sleep(seconds) if driver == "trio" else asyncio.sleep(seconds))


def run(driver: str, main: Callable[[], Awaitable[Any]]) -> Any:
    if driver == "trio":
        return trio.run(main)

    async def wrapper() -> Any:
        return await main()

    return asyncio.run(wrapper())


class App:
    """Echoes ordinary calls; raises inside the handler for FAULTY; rings SLOW for long."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.handled: list[str] = []
        self.echoed = 0

    async def handle(self, call: Any) -> None:
        self.handled.append(call.incoming.to.uri)
        await call.ring()
        if call.incoming.to.uri == "tel:+12125550666":
            raise RuntimeError("a bug in the application")
        if call.incoming.to.uri == "tel:+12125550777":
            await sleep(self.driver, 30)  # the caller cancels while we ring
        await call.answer()
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                with contextlib.suppress(CallEnded):
                    call.send_audio(item.codec, item.duration, item.payload)
                    self.echoed += 1


async def ordinary_call(driver: str, client: Any, frames: int = 25) -> tuple[int, int]:
    """Place an ordinary call, send ``frames`` 20 ms frames, hang up: (sent, echoed)."""
    call = await client.place_call(to=ORDINARY, from_=FROM, identity=IDENTITY)
    await call.wait_state(CallState.CONNECTED)
    received = 0

    async def count() -> None:
        nonlocal received
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                received += 1

    payload = bytes(160)
    if driver == "trio":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            for _ in range(frames):
                call.send_audio(Codec.PCMU, 0.02, payload)
                await trio.sleep(0.02)
            await trio.sleep(0.3)
            await call.terminate()
    else:
        task = asyncio.ensure_future(count())
        for _ in range(frames):
            call.send_audio(Codec.PCMU, 0.02, payload)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await call.terminate()
        await task
    return frames, received


async def alongside(
    driver: str, background: Callable[[], Awaitable[None]], body: Callable[[], Awaitable[None]]
) -> None:
    """Run ``body`` while ``background`` runs; cancel ``background`` when ``body`` is done."""
    if driver == "trio":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(background)
            await body()
            nursery.cancel_scope.cancel()
        return
    task = asyncio.ensure_future(background())
    try:
        await body()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_a_failing_handler_ends_its_own_call_only(driver: str) -> None:
    module = DRIVERS[driver]
    app = App(driver)

    async def main() -> None:
        async with (
            module.open_server(
                server_quic_configuration(PKI), config=CONFIG, **INSECURE_CHECKS
            ) as server,
            module.open_client(
                client_quic_configuration(PKI),
                calls_uris=[f"https://localhost:{server.address[1]}/ripp/calls"],
                token="t",
                config=CONFIG,
            ) as client,
        ):

            async def body() -> None:
                # The faulty call: its handler raises after ringing; it ends with 500.
                faulty = await client.place_call(to=FAULTY, from_=FROM, identity=IDENTITY)
                ended = await faulty.wait_ended()
                assert (ended.code, ended.reason) == (500, "Server Internal Error")
                assert ended.by is Termination.REMOTE
                # The slow call: the caller cancels while it rings, so the handler's
                # answer() meets a call that ended under its feet.
                slow = await client.place_call(to=SLOW, from_=FROM, identity=IDENTITY)
                await slow.wait_state(CallState.RINGING)
                cancelled = await slow.terminate(487, "Request Terminated")
                assert cancelled.code == 487
                # The server is still up and carries an ordinary call in full.
                sent, echoed = await ordinary_call(driver, client)
                assert echoed >= sent - 1, (sent, echoed)
                assert app.handled == ["tel:+12125550666", "tel:+12125550777", "tel:+12125550001"]

            await alongside(driver, lambda: server.serve(app.handle), body)

    run(driver, main)
