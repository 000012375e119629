"""Errors as users meet them (issue 11): each is raised as documented, as itself, and says
what went wrong. Real sockets and TLS on 127.0.0.1, both drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

import ripp_asyncio
import ripp_trio
from ripp_cli.local import client_tls, dev_identity, server_tls
from ripp_core import (
    CallEnded,
    CallState,
    Codec,
    LocalBadRequest,
    LocalFrameError,
    LocalInvalidIdentity,
    LocalProtocolError,
    RemoteProtocolError,
    RippConfig,
    Termination,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
)
from ripp_core.aio import unwrap_group
from ripp_core.testing import client_quic_configuration, make_test_pki

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"
DRIVERS = {"trio": ripp_trio, "asyncio": ripp_asyncio}
drivers = pytest.mark.parametrize("name", list(DRIVERS))


@pytest.fixture(autouse=True)
def _ripp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPP_HOME", str(tmp_path / "pki"))


def run(name: str, main: Callable[[], Awaitable[Any]]) -> Any:
    if name == "trio":
        return trio.run(main)

    async def wrapper() -> Any:
        return await main()

    return asyncio.run(wrapper())


def server(ripp: Any) -> Any:
    return ripp.open_server(
        server_tls(),
        authorizer=insecure_accept_any_bearer,
        identity_verifier=insecure_accept_any_identity,
    )


class AppError(Exception):
    pass


# ------------------------------------------------------------------ exception groups
@drivers
def test_an_exception_leaving_open_client_arrives_as_itself(name: str) -> None:
    """Also the Trio race: a body that raises before the receive loop ran must not add
    "file descriptor cannot be a negative integer" (that made an exception group of two)."""
    ripp = DRIVERS[name]

    async def main() -> None:
        cause = KeyError("why")
        async with ripp.open_client(
            client_tls(), calls_uris=["https://localhost:9/ripp/calls"], token="t"
        ):
            raise AppError("boom") from cause

    for _ in range(15):  # the race hit most runs before the fix
        with pytest.raises(AppError) as info:
            run(name, main)
        assert isinstance(info.value.__cause__, KeyError)  # its own chain is kept


@drivers
def test_an_exception_leaving_open_server_arrives_as_itself(name: str) -> None:
    ripp = DRIVERS[name]

    async def main() -> None:
        async with server(ripp):
            raise AppError("boom")

    with pytest.raises(AppError):
        run(name, main)


def test_several_errors_stay_grouped() -> None:
    group = ExceptionGroup("g", [ValueError(1), ExceptionGroup("h", [KeyError(2)])])
    assert unwrap_group(group) is group
    only = ValueError(3)
    assert unwrap_group(ExceptionGroup("g", [ExceptionGroup("h", [only])])) is only


# ------------------------------------------------------------------ documented classes
@drivers
def test_bad_arguments_raise_the_documented_local_errors(name: str) -> None:
    ripp = DRIVERS[name]

    async def main() -> None:
        async with server(ripp) as srv:
            uri = f"https://localhost:{srv.address[1]}/ripp/calls"
            async with ripp.open_client(client_tls(), calls_uris=[uri], token="t") as client:
                with pytest.raises(LocalInvalidIdentity) as bad_identity:
                    await client.place_call(to=TO, from_=FROM, identity="not a passport")
                assert bad_identity.value.sip_code == 438
                with pytest.raises(LocalBadRequest):
                    await client.place_call(
                        to="no uri here", from_=FROM, identity=dev_identity(TO, FROM)
                    )
                with pytest.raises(LocalBadRequest):
                    await client.place_call(to=TO, from_="<<", identity=dev_identity(TO, FROM))
                good = dev_identity(TO, FROM)
                for extra in (
                    [("x-note", "ends in a space ")],  # aioquic would close the connection
                    [("x-note", "line\r\nbreak")],
                    [("x-note", "nul\x00")],
                    [("bad name", "v")],
                    [("to", "<sip:mallory@example.com>")],  # RIPP sets To itself
                    [("authorization", "Bearer stolen")],
                    [(":path", "/elsewhere")],
                ):
                    with pytest.raises(LocalBadRequest):
                        await client.place_call(to=TO, from_=FROM, identity=good, headers=extra)
                call = await client.place_call(to=TO, from_=FROM, identity=dev_identity(TO, FROM))
                await call.wait_state(CallState.PENDING)
                for send in (call.send_audio, call.play):
                    with pytest.raises(LocalFrameError):
                        send(Codec.PCMU, 0.02, bytes(10))  # 20 ms of PCMU is 160 bytes
                    with pytest.raises(LocalFrameError):
                        send(Codec.PCMU, 0.025, bytes(200))  # not a PCMU duration
                    with pytest.raises(LocalFrameError):
                        send(Codec.OPUS, 0.02, bytes(5000))  # beyond max_frame_size
                with pytest.raises(LocalProtocolError):
                    call.send_dtmf("x")
                # None of them is a RemoteProtocolError: the peer did nothing wrong.
                for error in (bad_identity.value,):
                    assert not isinstance(error, RemoteProtocolError)
                call.send_audio(Codec.PCMU, 0.02, bytes(160))  # the call is unharmed

    run(name, main)


# ------------------------------------------------------------------ TLS and no server
@drivers
def test_a_tls_failure_says_so(name: str) -> None:
    ripp = DRIVERS[name]
    stranger = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))

    async def main() -> Any:
        async with server(ripp) as srv:
            uri = f"https://localhost:{srv.address[1]}/ripp/calls"
            wrong_ca = client_quic_configuration(stranger, server_name="localhost")
            async with ripp.open_client(wrong_ca, calls_uris=[uri], token="t") as client:
                call = await client.place_call(to=TO, from_=FROM, identity=dev_identity(TO, FROM))
                with pytest.raises(CallEnded) as info:
                    await call.wait_state(CallState.CONNECTED)
                return info.value.ended

    ended = run(name, main)
    assert ended.reason.startswith("TLS handshake failed")
    assert "issuer" in ended.reason or "certificate" in ended.reason
    assert ended.by is Termination.FAILURE


def test_connect_timeout_bounds_call_setup_not_ack_timeout() -> None:
    """What docs/api.md says: connect_timeout, not ack_timeout, limits waiting for a server."""

    async def attempt(config: RippConfig) -> tuple[float, Any]:
        async with ripp_trio.open_client(
            client_tls(), calls_uris=["https://localhost:9/ripp/calls"], token="t", config=config
        ) as client:
            began = trio.current_time()
            call = await client.place_call(to=TO, from_=FROM, identity=dev_identity(TO, FROM))
            ended = await call.wait_ended()
            return trio.current_time() - began, ended

    async def main() -> None:
        elapsed, ended = await attempt(RippConfig(connect_timeout=0.5, ack_timeout=5.0))
        assert ended.code == 408 and elapsed < 2.5
        with trio.move_on_after(1.5) as scope:  # a short ack_timeout does not shorten it
            await attempt(RippConfig(connect_timeout=5.0, ack_timeout=0.2))
        assert scope.cancelled_caught

    trio.run(main)
