"""The public asyncio API: open_server and open_client.

The API classes themselves (Call, ServerCall, Server, Client) are shared with the other
driver and live in :mod:`ripp_core.aio`; this module only runs the driver's tasks.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aioquic.quic.configuration import QuicConfiguration

from ripp_core import ChecksRequested, RippClient, RippConfig, RippServer
from ripp_core.aio import Client, Server, unwrap_group
from ripp_core.aio_checks import (
    AnyAuthorizer,
    AnyIdentityVerifier,
    needs_deferred_checks,
    run_checks,
)

from ._driver import Driver, open_udp_socket


@asynccontextmanager
async def _running(driver: Driver) -> AsyncIterator[None]:
    try:
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(driver.serve())
            try:
                yield
            finally:
                # Runs on normal exit, cancellation and Ctrl-C alike: calls are terminated
                # and connections closed before the socket goes.
                driver.close()
                serving.cancel()
    except BaseExceptionGroup as group:
        single = unwrap_group(group)
        if single is group:
            raise
    else:
        return
    # The task group wrapped the body's exception: hand it back as itself (raised outside
    # the handler, so its own __cause__ and __context__ stay as they were).
    raise single


@asynccontextmanager
async def open_server(
    quic_configuration: QuicConfiguration,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    instance_id: str | None = None,
    authority: str | None = None,
    config: RippConfig | None = None,
    authorizer: AnyAuthorizer,
    identity_verifier: AnyIdentityVerifier,
    deferred_checks: bool = False,
) -> AsyncIterator[Server]:
    """Run a RIPP server on ``host:port`` (port 0: any free port) for the ``async with``.

    Either hook may be a coroutine function (one that fetches keys or certificates): the
    server then parks each request and runs the hooks in a task of its own.
    """
    # deferred_checks=True: the application answers ChecksRequested itself (the cluster
    # agent does, to claim re-established calls); async hooks defer on their own.
    deferred = deferred_checks or needs_deferred_checks(authorizer, identity_verifier)
    run_hooks_here = deferred and not deferred_checks
    endpoint = RippServer(
        quic_configuration,
        instance_id=instance_id or secrets.token_hex(4),
        authority=authority,
        config=config,
        authorizer=None if deferred else authorizer,  # type: ignore[arg-type]
        identity_verifier=None if deferred else identity_verifier,  # type: ignore[arg-type]
        deferred_checks=deferred,
    )
    driver = Driver(endpoint, open_udp_socket(host, port, endpoint.config))
    checks: set[asyncio.Task[None]] = set()

    def spawn(event: ChecksRequested) -> None:
        task = asyncio.get_running_loop().create_task(
            run_checks(driver, endpoint, event, authorizer, identity_verifier, driver.now())
        )
        checks.add(task)  # a strong reference until done (asyncio keeps only weak ones)
        task.add_done_callback(checks.discard)

    if run_hooks_here:
        driver.on_checks = spawn
    async with _running(driver):
        try:
            yield Server(driver, endpoint)
        finally:
            for task in list(checks):
                task.cancel()


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
    driver = Driver(endpoint, open_udp_socket(host, 0, endpoint.config))
    async with _running(driver):
        yield Client(driver, endpoint)
