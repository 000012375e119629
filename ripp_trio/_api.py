"""The public Trio API: servers that take calls, clients that place them, and calls."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio
from aioquic.quic.configuration import QuicConfiguration

from ripp_core import (
    AudioItem,
    Authorizer,
    CallInbox,
    CallIncoming,
    CallState,
    CallStats,
    CallTerminated,
    Codec,
    DtmfReceived,
    IdentityVerifier,
    MarkReached,
    MediaFrame,
    RippClient,
    RippConfig,
    RippServer,
    accept_any_bearer,
    accept_well_formed_identity,
)

from ._driver import Driver, open_udp_socket

T = TypeVar("T")


class CallEnded(Exception):
    """The call ended while we waited for something else; ``ended`` says how."""

    def __init__(self, ended: CallTerminated) -> None:
        super().__init__(f"call ended: {ended.code} {ended.reason}")
        self.ended = ended


class Call:
    """One call, on either side. Commands apply at once; waits are async."""

    def __init__(self, driver: Driver, endpoint: RippClient | RippServer, handle: str) -> None:
        self._driver = driver
        self._endpoint = endpoint
        self.handle = handle
        self._inbox: CallInbox = driver.router.inbox(handle)

    # ------------------------------------------------------------ what happened
    @property
    def state(self) -> CallState:
        """The call's current state (R3)."""
        return self._inbox.state

    @property
    def uri(self) -> str | None:
        """The call URI, once the server has created the call."""
        return self._inbox.uri

    @property
    def ended(self) -> CallTerminated | None:
        """How the call ended, or None while it lives."""
        return self._inbox.terminated

    def stats(self) -> CallStats:
        """Media statistics (R7): RTT, loss, jitter, late and duplicate frames."""
        return self._driver.run(lambda now: self._endpoint.stats(self.handle, now))

    async def wait_state(self, state: CallState) -> None:
        """Wait until the call has reached ``state``; raise CallEnded if it ends first."""
        while state not in self._inbox.states and self._inbox.state is not state:
            if self._inbox.terminated is not None and state is not CallState.TERMINATED:
                raise CallEnded(self._inbox.terminated)
            await self._driver.wait_changed(self.handle)

    async def wait_ended(self) -> CallTerminated:
        """Wait for the end of the call and say how it ended."""
        while self._inbox.terminated is None:
            await self._driver.wait_changed(self.handle)
        return self._inbox.terminated

    async def states(self) -> AsyncIterator[CallState]:
        """Every state the call enters, from now until it ends."""
        seen = len(self._inbox.states)
        while True:
            while seen < len(self._inbox.states):
                seen += 1
                yield self._inbox.states[seen - 1]
            if self._inbox.terminated is not None:
                return
            await self._driver.wait_changed(self.handle)

    async def audio(self) -> AsyncIterator[AudioItem]:
        """Received media in playout order (through the jitter buffer): frames, and gaps
        to conceal. Ends when the call ends."""
        async for item in self._drain(self._inbox.audio):
            yield item

    async def dtmf(self) -> AsyncIterator[DtmfReceived]:
        """DTMF digits from the far end (R19)."""
        async for item in self._drain(self._inbox.dtmf):
            yield item

    async def _drain(self, queue: deque[T]) -> AsyncIterator[T]:
        while True:
            while queue:
                yield queue.popleft()
            if self._inbox.terminated is not None:
                return
            await self._driver.wait_changed(self.handle)

    # ------------------------------------------------------------ commands
    def send_audio(self, codec: Codec, duration: float, payload: bytes) -> MediaFrame:
        """Send one frame now, on the next free media stream (R5, R6)."""
        return self._driver.run(
            lambda now: self._endpoint.send_media(self.handle, codec, duration, payload, now)
        )

    def play(self, codec: Codec, duration: float, payload: bytes) -> None:
        """Queue audio at any speed; it leaves at real-time pace (R23)."""
        self._driver.run(
            lambda now: self._endpoint.play(self.handle, codec, duration, payload, now)
        )

    def clear(self) -> int:
        """Barge-in: drop audio not yet sent; returns the number of frames dropped."""
        return self._driver.run(lambda now: self._endpoint.clear(self.handle, now))

    async def mark(self, name: str) -> MarkReached:
        """Wait until the far end has acknowledged all audio queued before this point."""
        self._driver.run(lambda now: self._endpoint.mark(self.handle, name, now))
        while name not in self._inbox.marks:
            if self._inbox.terminated is not None:
                raise CallEnded(self._inbox.terminated)
            await self._driver.wait_changed(self.handle)
        return self._inbox.marks.pop(name)

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits in line with the paced audio (R19)."""
        self._driver.run(lambda now: self._endpoint.send_dtmf(self.handle, digits, now))

    async def terminate(self, code: int = 200, reason: str = "Normal") -> CallTerminated:
        """Hang up (or cancel: 487, or reject on a server: 486/603...) and wait for the end."""
        if self._inbox.terminated is None:
            self._driver.run(lambda now: self._endpoint.terminate(self.handle, now, code, reason))
        return await self.wait_ended()

    def move(self, uri: str | None = None) -> None:
        """Send Move (R9). Servers name the new call URI; clients send none."""
        self._driver.run(lambda now: self._endpoint.move(self.handle, now, uri))


class ServerCall(Call):
    """A call that arrived at a server."""

    def __init__(self, driver: Driver, server: RippServer, incoming: CallIncoming) -> None:
        super().__init__(driver, server, incoming.call)
        self._server = server
        self.incoming = incoming

    async def ring(self) -> None:
        """Alert the caller (waits for the call to be pending first)."""
        await self.wait_state(CallState.PENDING)
        self._driver.run(lambda now: self._server.ring(self.handle, now))

    async def answer(self) -> None:
        """Answer the call (waits for the call to be pending first)."""
        await self.wait_state(CallState.PENDING)
        self._driver.run(lambda now: self._server.answer(self.handle, now))

    async def reject(self, code: int = 486, reason: str = "Busy Here") -> CallTerminated:
        """Refuse the call with a SIP-style status and wait for it to end."""
        await self.wait_state(CallState.PENDING)
        self._driver.run(lambda now: self._server.reject(self.handle, now, code, reason))
        return await self.wait_ended()


class Server:
    """A RIPP server instance on a UDP address. Use :func:`open_server`."""

    def __init__(self, driver: Driver, server: RippServer) -> None:
        self._driver = driver
        self.endpoint = server

    @property
    def address(self) -> tuple[str, int]:
        """The UDP address the server listens on."""
        return self._driver.address

    async def calls(self) -> AsyncIterator[ServerCall]:
        """Incoming calls, as they arrive."""
        incoming = self._driver.router.incoming
        while True:
            while incoming:
                yield ServerCall(self._driver, self.endpoint, incoming.popleft())
            if self._driver.closed:
                return
            await self._driver.wait_changed(None)

    def drain_to(self, other: Server) -> int:
        """Move every live call to ``other`` (rolling upgrade, R9, R17); returns the count."""
        moved = 0
        for handle, call in list(self.endpoint.calls.items()):
            if call.state is CallState.TERMINATED or call.exported:
                continue
            now = self._driver.now()
            handoff = self.endpoint.export_call(handle, now)
            uri = other.endpoint.import_call(handoff, now)
            self.endpoint.move(handle, now, uri)
            moved += 1
        other._driver.flush()
        self._driver.flush()
        return moved


class Client:
    """A RIPP client. Use :func:`open_client`."""

    def __init__(self, driver: Driver, client: RippClient) -> None:
        self._driver = driver
        self.endpoint = client

    @property
    def address(self) -> tuple[str, int]:
        """The local UDP address."""
        return self._driver.address

    async def place_call(
        self,
        *,
        to: str,
        from_: str,
        identity: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Call:
        """Create a call (R1); returns at once, with the call on its way to PENDING."""
        handle = self._driver.run(
            lambda now: self.endpoint.place_call(
                to=to, from_=from_, identity=identity, now=now, headers=headers
            )
        )
        await trio.lowlevel.checkpoint()
        return Call(self._driver, self.endpoint, handle)


@asynccontextmanager
async def _running(driver: Driver) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.serve)
        try:
            yield
        finally:
            # Runs on normal exit, cancellation and Ctrl-C alike: calls are terminated
            # and connections closed before the socket goes.
            driver.close()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_server(
    quic_configuration: QuicConfiguration,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    instance_id: str | None = None,
    authority: str | None = None,
    config: RippConfig | None = None,
    authorizer: Authorizer = accept_any_bearer,
    identity_verifier: IdentityVerifier = accept_well_formed_identity,
) -> AsyncIterator[Server]:
    """Run a RIPP server on ``host:port`` (port 0: any free port) for the ``async with``."""
    endpoint = RippServer(
        quic_configuration,
        instance_id=instance_id or secrets.token_hex(4),
        authority=authority,
        config=config,
        authorizer=authorizer,
        identity_verifier=identity_verifier,
    )
    driver = Driver(endpoint, open_udp_socket(host, port))
    async with _running(driver):
        yield Server(driver, endpoint)


@asynccontextmanager
async def open_client(
    quic_configuration: QuicConfiguration,
    *,
    calls_uris: list[str],
    token: str | Callable[[str], str],
    config: RippConfig | None = None,
    resolver: Callable[[str, int], tuple[str, int]] | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[Client]:
    """Run a RIPP client for the ``async with``; ``calls_uris[0]`` places calls, the rest
    are failover targets for re-establishment (R10)."""
    endpoint = RippClient(
        quic_configuration, calls_uris=calls_uris, token=token, config=config, resolver=resolver
    )
    driver = Driver(endpoint, open_udp_socket(host, 0))
    async with _running(driver):
        yield Client(driver, endpoint)
