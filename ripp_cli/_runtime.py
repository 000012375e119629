"""The little the CLI needs from an event loop, for Trio and for asyncio.

The CLI's call logic is written once against this shim and the drivers' shared API shape
(``open_server``/``open_client``/``Call``), so ``--driver trio|asyncio`` runs the same code.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class TaskGroup(Protocol):
    """Start background tasks; they are cancelled when the group's block ends."""

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None: ...


class Runtime:
    """Base class: one event loop flavour."""

    name = ""
    driver: ModuleType

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    def run_until_interrupted(self, main: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``main``; Ctrl-C (SIGINT) cancels it in an orderly way and gives None.

        SIGINT is taken as a signal and turned into a cancellation, instead of a
        KeyboardInterrupt that could land anywhere (even inside the shutdown that closes
        calls and connections).
        """
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def tasks(self) -> Any:
        """An async context manager yielding a :class:`TaskGroup`."""
        raise NotImplementedError

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T | None:
        """``awaitable``'s result, or None if it took longer than ``timeout``."""
        raise NotImplementedError


class TrioRuntime(Runtime):
    """Trio flavour."""

    name = "trio"

    def __init__(self) -> None:
        import trio

        import ripp_trio

        self._trio = trio
        self.driver = ripp_trio

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        return self._trio.run(main)

    def run_until_interrupted(self, main: Callable[[], Awaitable[T]]) -> T | None:
        trio = self._trio

        async def guarded() -> T | None:
            result: T | None = None
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:

                    async def on_signal() -> None:
                        async for _ in signals:
                            nursery.cancel_scope.cancel()
                            return

                    async def body() -> None:
                        nonlocal result
                        result = await main()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(on_signal)
                    nursery.start_soon(body)
            return result

        return self._trio.run(guarded)

    async def sleep(self, seconds: float) -> None:
        await self._trio.sleep(max(0.0, seconds))

    def now(self) -> float:
        return float(self._trio.current_time())

    @asynccontextmanager
    async def tasks(self) -> AsyncIterator[TaskGroup]:
        async with self._trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T | None:
        result: T | None = None
        with self._trio.move_on_after(timeout if timeout < math.inf else math.inf):
            result = await awaitable
        return result


class AsyncioRuntime(Runtime):
    """asyncio flavour."""

    name = "asyncio"

    def __init__(self) -> None:
        import ripp_asyncio

        self.driver = ripp_asyncio

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        async def runner() -> T:
            return await main()

        return asyncio.run(runner())

    def run_until_interrupted(self, main: Callable[[], Awaitable[T]]) -> T | None:
        async def guarded() -> T | None:
            task = asyncio.ensure_future(main())
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            try:
                return await task
            except asyncio.CancelledError:
                return None
            finally:
                loop.remove_signal_handler(signal.SIGINT)

        return asyncio.run(guarded())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    @asynccontextmanager
    async def tasks(self) -> AsyncIterator[TaskGroup]:
        tasks: list[asyncio.Task[Any]] = []

        class _Group:
            def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
                tasks.append(asyncio.ensure_future(fn(*args)))

        try:
            yield _Group()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T | None:
        try:
            return await asyncio.wait_for(awaitable, None if timeout == math.inf else timeout)
        except TimeoutError:
            return None


def runtime(name: str) -> Runtime:
    """The runtime for ``--driver NAME``."""
    return TrioRuntime() if name == "trio" else AsyncioRuntime()
