"""The Trio and asyncio drivers over real UDP on 127.0.0.1, with real TLS.

Every call test runs the four pairings (client driver x server driver). The server runs in
a thread of its own with its own event loop and answers every call, echoing audio back;
the client runs in the test's thread under ``trio.run`` or ``asyncio.run``. The move and
failover tests run both servers and the client in one Trio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    aclosing,
    asynccontextmanager,
    contextmanager,
)
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import ripp_asyncio
import ripp_trio
from ripp_core import (
    CallEnded,
    CallInbox,
    CallMovedAway,
    CallState,
    CallTerminated,
    Codec,
    MediaFrame,
    RippConfig,
    Termination,
)
from ripp_core.testing import INSECURE_CHECKS as INSECURE
from ripp_core.testing import client_quic_configuration, make_test_pki, server_quic_configuration
from tests.call_harness import IDENTITY

PKI = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"
DRIVERS = {"trio": ripp_trio, "asyncio": ripp_asyncio}
pairings = pytest.mark.parametrize(
    ("client_driver", "server_driver"),
    [(c, s) for c in DRIVERS for s in DRIVERS],
)

Spawn = Callable[..., object]


# ---------------------------------------------------------------- what differs per loop
@asynccontextmanager
async def _trio_fail_after(seconds: float) -> AsyncIterator[None]:
    with trio.fail_after(seconds):
        yield


def fail_after(driver: str, seconds: float) -> AbstractAsyncContextManager[Any]:
    """A timeout around a block, in the loop of ``driver`` (raises on expiry)."""
    return _trio_fail_after(seconds) if driver == "trio" else asyncio.timeout(seconds)


def run(driver: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main`` to completion in a fresh loop of ``driver``."""
    if driver == "trio":
        return trio.run(main)

    async def wrapper() -> Any:
        return await main()

    return asyncio.run(wrapper())


def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait (in this thread) until ``predicate()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ---------------------------------------------------------------- the server application
class EchoApp:
    """Answers every call (or rejects it), echoes audio frames, collects DTMF digits."""

    def __init__(self, reject: int | None = None) -> None:
        self.reject = reject
        self.incoming: list[tuple[float, Any]] = []  # (monotonic time, ServerCall)
        self.ended: list[CallTerminated] = []
        self.digits: list[str] = []
        self.sequences: list[int] = []  # sequence numbers of received frames

    async def serve(self, server: Any, spawn: Spawn) -> None:
        async for call in server.calls():
            self.incoming.append((time.monotonic(), call))
            spawn(self.handle, call, spawn)

    async def handle(self, call: Any, spawn: Spawn) -> None:
        if self.reject is not None:
            self.ended.append(await call.reject(self.reject, "Busy Here"))
            return
        if call.incoming.reestablishes is None:
            await call.ring()
            await call.answer()
        spawn(self.collect_dtmf, call)
        await self.echo(call)

    async def echo(self, call: Any) -> None:
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                self.sequences.append(item.sequence)
                # audio may outlive the call a little, or the call may have moved away
                with contextlib.suppress(CallEnded, CallMovedAway):
                    call.send_audio(item.codec, item.duration, item.payload)
        self.ended.append(call.ended)

    async def collect_dtmf(self, call: Any) -> None:
        async for event in call.dtmf():
            self.digits.append(event.digit)


class ServerThread:
    """A server of one driver in a thread with its own loop; stops and joins on exit."""

    def __init__(self, driver: str, app: EchoApp, config: RippConfig | None = None) -> None:
        self.driver = driver
        self.app = app
        self.config = config
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._main, name=f"ripp-{driver}-server")

    @property
    def uri(self) -> str:
        return f"https://localhost:{self.port}/ripp/calls"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            # It may have stopped by itself in the meantime (self.error says why).
            with contextlib.suppress(trio.RunFinishedError):
                self._stop()
        self._thread.join(10)
        assert not self._thread.is_alive(), "server thread did not stop"
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            if self.driver == "trio":
                trio.run(self._trio)
            else:
                asyncio.run(self._asyncio())
        except asyncio.CancelledError:
            pass  # how an asyncio server is stopped
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def _started(self, server: Any, stop: Callable[[], None]) -> None:
        self.port = server.address[1]
        self._stop = stop
        self._ready.set()

    async def _trio(self) -> None:
        configuration = server_quic_configuration(PKI)
        async with (
            ripp_trio.open_server(configuration, config=self.config, **INSECURE) as server,
            trio.open_nursery() as nursery,
        ):
            token = trio.lowlevel.current_trio_token()
            self._started(server, lambda: token.run_sync_soon(nursery.cancel_scope.cancel))
            nursery.start_soon(self.app.serve, server, nursery.start_soon)

    async def _asyncio(self) -> None:
        configuration = server_quic_configuration(PKI)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        async with (
            ripp_asyncio.open_server(configuration, config=self.config, **INSECURE) as server,
            asyncio.TaskGroup() as tasks,
        ):

            def spawn(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
                tasks.create_task(fn(*args))  # type: ignore[arg-type]

            self._started(server, lambda: loop.call_soon_threadsafe(main.cancel))
            spawn(self.app.serve, server, spawn)


@contextmanager
def echo_server(driver: str, reject: int | None = None) -> Iterator[tuple[ServerThread, EchoApp]]:
    app = EchoApp(reject)
    with ServerThread(driver, app) as thread:
        yield thread, app


def open_client(driver: str, *uris: str, config: RippConfig | None = None) -> Any:
    return DRIVERS[driver].open_client(
        client_quic_configuration(PKI), calls_uris=list(uris), token="t", config=config
    )


async def place_call(client: Any) -> Any:
    return await client.place_call(to=TO, from_=FROM, identity=IDENTITY)


# ---------------------------------------------------------------- the four pairings
@pytest.mark.timeout(30)
@pairings
def test_setup_and_hang_up(client_driver: str, server_driver: str) -> None:
    with echo_server(server_driver) as (server, app):

        async def main() -> tuple[list[CallState], CallTerminated]:
            async with open_client(client_driver, server.uri) as client:
                call = await place_call(client)
                states = []
                async with fail_after(client_driver, 5), aclosing(call.states()) as changes:
                    async for state in changes:
                        states.append(state)
                        if state is CallState.CONNECTED:
                            break
                return states, await call.terminate()

        states, ended = run(client_driver, main)
        assert states == [CallState.PENDING, CallState.RINGING, CallState.CONNECTED]
        assert (ended.code, ended.by) == (200, Termination.LOCAL)
        eventually(lambda: app.ended)
        assert (app.ended[0].code, app.ended[0].by) == (200, Termination.REMOTE)


@pytest.mark.timeout(30)
@pairings
def test_two_way_audio_is_paced_and_echoed(client_driver: str, server_driver: str) -> None:
    count = 50
    with echo_server(server_driver) as (server, app):

        async def main() -> tuple[float, list[int]]:
            async with open_client(client_driver, server.uri) as client:
                call = await place_call(client)
                async with fail_after(client_driver, 10):
                    await call.wait_state(CallState.CONNECTED)
                    start = time.monotonic()
                    for i in range(count):
                        call.play(Codec.PCMU, 0.02, bytes([i]) * 160)
                    await call.mark("played")
                    sent_in = time.monotonic() - start
                    echoed: list[int] = []
                    async with aclosing(call.audio()) as audio:
                        async for item in audio:
                            if isinstance(item, MediaFrame):
                                echoed.append(item.payload[0])
                                if len(echoed) == count:
                                    break
                await call.terminate()
                return sent_in, echoed

        sent_in, echoed = run(client_driver, main)
    assert echoed == list(range(count))
    # The mark fires once every frame is acknowledged: the last left after 49 x 20 ms.
    assert sent_in >= 0.9
    assert sorted(app.sequences) == app.sequences and len(app.sequences) == count


@pytest.mark.timeout(30)
@pairings
def test_dtmf(client_driver: str, server_driver: str) -> None:
    with echo_server(server_driver) as (server, app):

        async def main() -> None:
            async with open_client(client_driver, server.uri) as client:
                call = await place_call(client)
                async with fail_after(client_driver, 5):
                    await call.wait_state(CallState.CONNECTED)
                    call.send_dtmf("123#")
                    await call.mark("dialled")
                await call.terminate()

        run(client_driver, main)
        eventually(lambda: app.ended)
    assert app.digits == list("123#")


@pytest.mark.timeout(30)
@pairings
def test_reject(client_driver: str, server_driver: str) -> None:
    with echo_server(server_driver, reject=486) as (server, app):

        async def main() -> CallTerminated:
            async with open_client(client_driver, server.uri) as client:
                call = await place_call(client)
                async with fail_after(client_driver, 5):
                    with pytest.raises(CallEnded) as raised:
                        await call.wait_state(CallState.CONNECTED)
                ended: CallTerminated = raised.value.ended
                assert call.ended == ended
                return ended

        ended = run(client_driver, main)
        assert (ended.code, ended.by) == (486, Termination.REMOTE)
        eventually(lambda: app.ended)
        assert (app.ended[0].code, app.ended[0].by) == (486, Termination.LOCAL)


@pytest.mark.timeout(30)
@pairings
def test_cancelled_client_says_goodbye(client_driver: str, server_driver: str) -> None:
    with echo_server(server_driver) as (server, app):

        async def main() -> None:
            with contextlib.suppress(trio.TooSlowError, TimeoutError):
                async with (
                    fail_after(client_driver, 1),
                    open_client(client_driver, server.uri) as client,
                ):
                    call = await place_call(client)
                    await call.wait_state(CallState.CONNECTED)
                    await call.wait_ended()  # until the timeout cancels us

        run(client_driver, main)
        eventually(lambda: app.ended, timeout=0.5)  # well before any liveness timeout
    assert (app.ended[0].code, app.ended[0].reason) == (200, "Endpoint closing")
    assert app.ended[0].by is Termination.REMOTE


# ---------------------------------------------------------------- moves and failover (Trio)
class TrioServer:
    """A Trio server in the test's own loop that can be stopped cleanly or crashed."""

    def __init__(self, app: EchoApp, config: RippConfig) -> None:
        self.app = app
        self.config = config
        self.scope = trio.CancelScope()
        self.server: Any = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            configuration = server_quic_configuration(PKI)
            async with ripp_trio.open_server(
                configuration, config=self.config, **INSECURE
            ) as server:
                self.server = server
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.app.serve, server, nursery.start_soon)
                    task_status.started()

    @property
    def uri(self) -> str:
        return f"https://localhost:{self.server.address[1]}/ripp/calls"

    def crash(self) -> None:
        """Stop without a goodbye: calls are not terminated, connections not closed."""
        self.server.endpoint.close = lambda *args, **kwargs: None
        self.scope.cancel()


@pytest.mark.timeout(30)
def test_graceful_move_between_instances_loses_no_frames() -> None:
    count = 100
    config = RippConfig(jitter_buffer=False)  # servers see every frame as it arrives
    a, b = TrioServer(EchoApp(), config), TrioServer(EchoApp(), config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            async with open_client("trio", a.uri) as client:
                call = await place_call(client)
                with trio.fail_after(10):
                    await call.wait_state(CallState.CONNECTED)
                    for i in range(count):
                        call.play(Codec.PCMU, 0.02, bytes([i]) * 160)
                    await trio.sleep(count * 0.02 / 2)
                    moved = a.server.drain_to(b.server, f"localhost:{b.server.address[1]}")
                    assert len(moved) == 1
                    nursery.start_soon(b.app.echo, moved[0])
                    await call.mark("played")
                    assert "/" + b.server.endpoint.instance_id + "/" in call.uri
                    assert call.state is CallState.CONNECTED
                    await call.terminate()
            nursery.cancel_scope.cancel()

    trio.run(main)
    at_a, at_b = a.app.sequences, b.app.sequences
    assert at_a and at_b, (len(at_a), len(at_b))
    assert sorted(at_a + at_b) == list(range(count))  # every frame exactly once


@pytest.mark.timeout(30)
def test_crashed_instance_call_reestablished_on_the_next() -> None:
    config = RippConfig(ack_timeout=0.5)
    a, b = TrioServer(EchoApp(), config), TrioServer(EchoApp(), config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            async with open_client("trio", a.uri, b.uri, config=config) as client:
                call = await place_call(client)
                with trio.fail_after(10):
                    await call.wait_state(CallState.CONNECTED)
                    for i in range(150):
                        call.play(Codec.PCMU, 0.02, bytes([i % 256]) * 160)
                    await trio.sleep(0.5)
                    crashed_at = time.monotonic()
                    a.crash()
                    while not b.app.incoming:
                        await trio.sleep(0.01)
                    took = b.app.incoming[0][0] - crashed_at
                    assert took <= config.ack_timeout + 1.0, took
                    assert b.app.incoming[0][1].incoming.reestablishes is not None
                    while len(b.app.sequences) < 10:  # audio flows again, now to b
                        await trio.sleep(0.01)
                    assert call.state is CallState.CONNECTED
                    await call.terminate()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert a.app.sequences


def test_inbox_reached_counts_skipped_states() -> None:
    """wait_state() must not hang on a state the call went past without entering it."""
    answered = CallInbox("c1", state=CallState.CONNECTED, states=[CallState.PENDING])
    answered.states.append(CallState.CONNECTED)
    assert answered.reached(CallState.RINGING)  # answered without ringing
    reestablished = CallInbox("c2", state=CallState.CONNECTED)  # no states of its own
    assert reestablished.reached(CallState.PENDING)
    assert not reestablished.reached(CallState.TERMINATED)
    rejected = CallInbox("c3", state=CallState.TERMINATED, states=[CallState.PENDING])
    rejected.states.append(CallState.TERMINATED)
    assert rejected.reached(CallState.PENDING) and rejected.reached(CallState.TERMINATED)
    assert not rejected.reached(CallState.CONNECTED)


def test_router_forgets_old_ended_calls_but_keeps_recent_ones() -> None:
    from ripp_core import CallTerminated, EventRouter, Termination

    router = EventRouter(max_ended=3)
    inboxes = []
    for n in range(10):
        handle = f"c{n}"
        inboxes.append(router.inbox(handle))
        router.route(CallTerminated(handle, 200, "Normal", Termination.REMOTE))
    assert sorted(router.calls) == ["c7", "c8", "c9"]
    # a caller still holding an old inbox still sees how its call ended
    assert inboxes[0].terminated is not None and inboxes[0].terminated.code == 200


@pytest.mark.timeout(30)
def test_client_instance_hands_its_call_to_another_client_instance() -> None:
    """Client-side move through the driver API: hand_over, move, take_over (R9)."""
    count = 60
    config = RippConfig(jitter_buffer=False)
    server = TrioServer(EchoApp(), config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            async with (
                open_client("trio", server.uri) as first,
                open_client("trio", server.uri) as second,
            ):
                call = await place_call(first)
                with trio.fail_after(10):
                    await call.wait_state(CallState.CONNECTED)
                    for i in range(count // 2):
                        call.play(Codec.PCMU, 0.02, bytes([i]) * 160)
                    await call.mark("first-half")
                    handoff = call.hand_over()
                    call.move()
                    adopted = await second.take_over(handoff)
                    assert adopted.uri == call.uri
                    for i in range(count // 2, count):
                        adopted.play(Codec.PCMU, 0.02, bytes([i]) * 160)
                    await adopted.mark("second-half")
                    assert adopted.state is CallState.CONNECTED
                    await adopted.terminate()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert sorted(server.app.sequences) == list(range(count))  # each frame once, no gap
