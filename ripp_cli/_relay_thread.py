"""Run the Trio UDP relay in a thread, so an asyncio demo can use it too."""

from __future__ import annotations

import contextlib
import threading

import trio

from ripp_core.testing import Impairment

from ._relay import open_relay


class RelayThread:
    """A loopback relay in front of ``target`` running on its own Trio loop."""

    def __init__(self, target: tuple[str, int], impairment: Impairment, seed: int) -> None:
        self._target, self._impairment, self._seed = target, impairment, seed
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._thread = threading.Thread(target=self._run, name="ripp-relay", daemon=True)

    def __enter__(self) -> RelayThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._cancel is not None:
            # run_sync_soon is thread-safe and never blocks, so this works from inside
            # another Trio or asyncio loop as well as from a plain thread.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._cancel.cancel)
        self._thread.join(10)

    def _run(self) -> None:
        trio.run(self._main)

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self._cancel = scope
            self._token = trio.lowlevel.current_trio_token()
            async with open_relay(self._target, self._impairment, seed=self._seed) as relay:
                self.address = relay.address
                self._ready.set()
                await trio.sleep_forever()
