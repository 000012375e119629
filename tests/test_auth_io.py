"""ripp_auth over real HTTPS (a local server on port 0) and async hooks in both drivers.

x5u chains and JWKS documents are served by :class:`ripp_cli._https.HttpsServer` in a
thread, with a certificate of a test CA the fetcher trusts; misbehaving documents (slow,
oversized, missing) sit beside well-behaved ones. The driver tests run a real call over
UDP with the async hooks: a valid token and PASSporT get through, a bad one is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

import ripp_asyncio
import ripp_trio
from ripp_auth import (
    BadIdentityInfo,
    ChainCache,
    ClientCredentials,
    FailurePolicy,
    Fetcher,
    FetchLimits,
    InvalidToken,
    JwksPolicy,
    JwksSource,
    StirVerifier,
    TokenAuthorizer,
    TokenPolicy,
)
from ripp_cli._https import Document, HttpsServer
from ripp_core import CallEnded, CallState
from ripp_core._auth import AuthRequest
from ripp_core.testing import client_quic_configuration, make_test_pki, server_quic_configuration
from tests.auth_pki import (
    AUDIENCE,
    FROM,
    ISSUER,
    TO,
    claims,
    identity,
    issuer_key,
    jwks,
    sti_pki,
    token,
)

TLS = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1),
                    server_key_type="p256")
STI = sti_pki(at=time.time())
DRIVERS = ["trio", "asyncio"]


def run(driver: str, main: Callable[[], Awaitable[Any]]) -> Any:
    if driver == "trio":
        return trio.run(main)

    async def wrapper() -> Any:
        return await main()

    return asyncio.run(wrapper())


def trust() -> ssl.SSLContext:
    return ssl.create_default_context(cadata=TLS.ca_pem.decode())


@pytest.fixture
def https(tmp_path: Path) -> Iterator[HttpsServer]:
    from cryptography.hazmat.primitives import serialization

    cert, key = tmp_path / "tls.pem", tmp_path / "tls-key.pem"
    cert.write_bytes(TLS.server_cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(TLS.server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with HttpsServer(cert, key, {"/sti.pem": Document(STI.chain_pem())}) as server:
        yield server


def verifier(limits: FetchLimits | None = None, **kw: Any) -> StirVerifier:
    return StirVerifier([STI.ca], chains=ChainCache(Fetcher(limits, verify=trust())), **kw)


def live_identity(url: str) -> str:
    return identity(STI, url, iat=time.time())


# ---------------------------------------------------------------- x5u fetching
@pytest.mark.parametrize("driver", DRIVERS)
def test_x5u_fetched_over_https_and_cached(https: HttpsServer, driver: str) -> None:
    check = verifier()
    value = live_identity(https.url("/sti.pem"))

    async def main() -> tuple[Any, Any]:
        first = await check(value, TO, FROM, 0.0)
        del https.documents["/sti.pem"]  # the second verification must use the cache
        return first, await check(value, TO, FROM, 0.0)

    first, second = run(driver, main)
    assert first.verified and second.verified
    assert https.hits["/sti.pem"] == 1


def _refusal(value: str, check: StirVerifier) -> BadIdentityInfo:
    async def main() -> None:
        await check(value, TO, FROM, 0.0)

    with pytest.raises(BadIdentityInfo) as info:
        trio.run(main)
    assert info.value.sip_code == 436
    return info.value


def test_x5u_timeout(https: HttpsServer) -> None:
    https.documents["/slow.pem"] = Document(STI.chain_pem(), delay=2.0)
    started = time.monotonic()
    error = _refusal(live_identity(https.url("/slow.pem")), verifier(FetchLimits(timeout=0.3)))
    assert error.check == "x5u_fetch" and "timeout" in error.message
    assert time.monotonic() - started < 1.8  # gave up at the deadline, not the answer


def test_x5u_oversize(https: HttpsServer) -> None:
    https.documents["/big.pem"] = Document(STI.chain_pem() + b"\n" * 70_000)
    error = _refusal(live_identity(https.url("/big.pem")), verifier())
    assert error.check == "x5u_fetch" and "too large" in error.message


def test_x5u_oversize_without_content_length(https: HttpsServer) -> None:
    https.documents["/chunked.pem"] = Document(b"x" * 70_000, chunked=True)
    error = _refusal(live_identity(https.url("/chunked.pem")), verifier())
    assert "too large" in error.message


def test_x5u_missing(https: HttpsServer) -> None:
    error = _refusal(live_identity(https.url("/nothing.pem")), verifier())
    assert "404" in error.message


def test_x5u_untrusted_tls(https: HttpsServer) -> None:
    check = StirVerifier([STI.ca], chains=ChainCache(Fetcher(verify=True)))  # system CAs
    error = _refusal(live_identity(https.url("/sti.pem")), check)
    assert error.check == "x5u_fetch"


def test_mark_policy_accepts_unverified(https: HttpsServer) -> None:
    check = verifier(on_failure=FailurePolicy.MARK)
    value = identity(STI, https.url("/sti.pem"), iat=time.time() - 600)  # stale

    async def main() -> Any:
        return await check(value, TO, FROM, 0.0)

    result = trio.run(main)
    assert not result.verified
    assert result.sip_code == 438 and "passport_iat" in result.reason
    assert result.attestation == "A"


# ---------------------------------------------------------------- JWKS and tokens
def request(tok: str, creates: bool = True) -> AuthRequest:
    return AuthRequest(method="POST", path="/ripp/calls", authority="x", headers=(),
                       token=tok, call=None if creates else "c1")


POLICY = TokenPolicy(issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize("driver", DRIVERS)
def test_jwks_over_https_refreshed_on_unknown_kid(https: HttpsServer, driver: str) -> None:
    old, new = issuer_key(kid="old"), issuer_key(kid="new")
    https.documents["/jwks"] = Document(json.dumps(jwks(old)).encode())
    source = JwksSource(https.url("/jwks"), Fetcher(verify=trust()))
    authorize = TokenAuthorizer(POLICY, source, JwksPolicy(min_refresh_interval=0.5))

    async def main() -> list[str]:
        now = time.time()
        first = token(old, claims(iat=int(now), exp=int(now) + 60))
        principals = [await authorize(request(first), 0)]
        https.documents["/jwks"] = Document(json.dumps(jwks(old, new)).encode())  # rotation
        fresh = token(new, claims(sub="bob", iat=int(now), exp=int(now) + 60))
        # Within the refresh bound, the unknown kid is refused without a fetch...
        try:
            await authorize(request(fresh), 0)
        except InvalidToken as exc:
            principals.append(exc.check)
        if driver == "trio":
            await trio.sleep(0.6)
        else:
            await asyncio.sleep(0.6)
        principals.append(await authorize(request(fresh), 0))  # ...and accepted after it
        return principals

    # The first token's kid is unknown to the empty cache: fetched once.
    assert run(driver, main) in (["alice", "token_key", "bob"], ["alice", "bob", "bob"])
    assert https.hits["/jwks"] <= 2


def test_jwks_from_a_file(tmp_path: Path) -> None:
    key = issuer_key(kid="f")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    authorize = TokenAuthorizer(POLICY, JwksSource(path))
    now = time.time()
    tok = token(key, claims(iat=int(now), exp=int(now) + 60))

    async def main() -> str:
        return await authorize(request(tok), 0)

    assert trio.run(main) == "alice"


def test_expired_token_is_refused_by_the_hook(tmp_path: Path) -> None:
    key = issuer_key(kid="f")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    authorize = TokenAuthorizer(POLICY, JwksSource(path))
    now = time.time()
    tok = token(key, claims(iat=int(now) - 7200, exp=int(now) - 3600))

    async def main() -> str:
        return await authorize(request(tok), 0)

    with pytest.raises(InvalidToken) as info:
        trio.run(main)
    assert info.value.check == "token_times"


@pytest.mark.parametrize("driver", DRIVERS)
def test_client_credentials_flow(https: HttpsServer, driver: str) -> None:
    seen: list[dict[str, Any]] = []

    def endpoint(path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        auth = base64.b64decode(headers["Authorization"].split()[1]).decode()
        seen.append({"auth": auth, "body": body.decode()})
        if auth != "app:s3cret":
            return 401, b'{"error": "invalid_client"}'
        reply = {"access_token": f"tok{len(seen)}", "token_type": "Bearer", "expires_in": 61.5}
        return 200, json.dumps(reply).encode()

    https.post_handler = endpoint
    good = ClientCredentials(https.url("/token"), "app", "s3cret", verify=trust(),
                             refresh_margin=60.0)
    bad = ClientCredentials(https.url("/token"), "app", "wrong", verify=trust())

    async def main() -> list[str]:
        tokens = []
        if driver == "trio":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(good.keep_fresh)
                while len(seen) < 2:  # fetched at once, refreshed 1.5 s later (1 s floor)
                    await trio.sleep(0.05)
                    with_token = seen and good._token is not None
                    if with_token and good("u") not in tokens:
                        tokens.append(good("u"))
                nursery.cancel_scope.cancel()
        else:
            task = asyncio.create_task(good.keep_fresh())
            while len(seen) < 2:
                await asyncio.sleep(0.05)
                if good._token is not None and good("u") not in tokens:
                    tokens.append(good("u"))
            task.cancel()
        with pytest.raises(Exception, match="401"):
            await bad.fetch()
        return tokens

    tokens = run(driver, main)
    assert tokens[0] == "tok1"
    assert "grant_type=client_credentials" in seen[0]["body"]
    assert "scope=ripp%3Acall" in seen[0]["body"]
    with pytest.raises(InvalidToken):
        bad("u")


# ---------------------------------------------------------------- async hooks in the drivers
@pytest.mark.timeout(30)
@pytest.mark.parametrize("driver", DRIVERS)
def test_async_hooks_in_a_real_call(https: HttpsServer, tmp_path: Path, driver: str) -> None:
    key = issuer_key(kid="live")
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(key)))
    authorize = TokenAuthorizer(POLICY, JwksSource(tmp_path / "jwks.json"))
    check = verifier()
    now = time.time()
    good_token = token(key, claims(iat=int(now), exp=int(now) + 60))
    no_scope = token(key, claims(scope="read", iat=int(now), exp=int(now) + 60))
    module = ripp_trio if driver == "trio" else ripp_asyncio
    x5u = https.url("/sti.pem")
    incoming: list[Any] = []

    async def main() -> list[Any]:
        async with module.open_server(server_quic_configuration(TLS),
                                      authorizer=authorize, identity_verifier=check) as server:
            uri = f"https://localhost:{server.address[1]}/ripp/calls"

            async def place(tok: str, value: str) -> Any:
                async with module.open_client(client_quic_configuration(TLS),
                                              calls_uris=[uri], token=tok) as client:
                    call = await client.place_call(to=f"<{TO.uri}>", from_=f"<{FROM.uri}>",
                                                   identity=value)
                    try:
                        await call.wait_state(CallState.PENDING)
                    except CallEnded:
                        return call.ended.code
                    async for got in server.calls():
                        incoming.append(got.incoming)
                        break
                    await call.terminate()
                    return "pending"

            return [
                await place(good_token, identity(STI, x5u, iat=time.time())),
                await place("not-a-token", identity(STI, x5u, iat=time.time())),
                await place(no_scope, identity(STI, x5u, iat=time.time())),
                await place(good_token, identity(STI, x5u, iat=time.time() - 600)),
            ]

    results = run(driver, main)
    assert results == ["pending", 401, 403, 438]
    assert incoming[0].principal == "alice"
    assert incoming[0].identity_check.verified
    assert incoming[0].identity_check.attestation == "A"


def test_reestablishment_accepts_the_original_passport(https: HttpsServer) -> None:
    check = verifier()
    old = identity(STI, https.url("/sti.pem"), iat=time.time() - 3600)

    async def main() -> Any:
        return await check.verify_reestablishment(old, TO, FROM, 0.0)

    assert trio.run(main).verified
    with pytest.raises(Exception, match="passport_iat"):
        trio.run(lambda: check(old, TO, FROM, 0.0))


# ---------------------------------------------------------------- run_checks, loop-agnostic
class FakeDriver:
    def __init__(self) -> None:
        self.answers: list[tuple[str, Any]] = []

    def run(self, action: Callable[[float], Any]) -> Any:
        return action(5.0)


class FakeServer:
    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver

    def complete_checks(self, ticket: int, now: float, *, principal: str, identity: Any) -> None:
        self.driver.answers.append(("complete", (principal, identity)))

    def fail_checks(self, ticket: int, error: Exception, now: float) -> None:
        self.driver.answers.append(("fail", error))


def _event(reestablish: bool) -> Any:
    from ripp_core._events import ChecksRequested
    from ripp_core._headers import parse_reestablish

    marker = parse_reestablish("<https://x/ripp/instances/a/calls/b>;state=connected")
    marker = marker if reestablish else None
    req = AuthRequest(method="POST", path="/ripp/calls", authority="x",
                      headers=(("to", f"<{TO.uri}>"), ("from", f"<{FROM.uri}>")),
                      token="t", call=None, reestablish=marker)
    return ChecksRequested(1, req, "value")


@pytest.mark.parametrize("reestablish", [False, True])
def test_run_checks_answers_with_the_right_hook(reestablish: bool) -> None:
    from ripp_core.aio_checks import run_checks

    class Verifier:
        async def __call__(self, *args: Any) -> str:
            return "fresh"

        def verify_reestablishment(self, *args: Any) -> str:  # a sync one is fine too
            return "original"

    driver = FakeDriver()

    async def authorize(request: AuthRequest, now: float) -> str:
        assert now == 1.5
        return "p"

    trio.run(run_checks, driver, FakeServer(driver), _event(reestablish), authorize,
             Verifier(), 1.5)
    assert driver.answers == [("complete", ("p", "original" if reestablish else "fresh"))]


def test_run_checks_refuses_on_hook_errors() -> None:
    from ripp_core.aio_checks import run_checks

    driver = FakeDriver()

    async def refuse(request: AuthRequest, now: float) -> str:
        raise InvalidToken("token_issuer", "no")

    async def broken(request: AuthRequest, now: float) -> str:
        raise KeyError("bug")

    trio.run(run_checks, driver, FakeServer(driver), _event(False), refuse, None, 0.0)
    trio.run(run_checks, driver, FakeServer(driver), _event(False), broken, None, 0.0)
    (kind1, first), (kind2, second) = driver.answers
    assert (kind1, first.http_status, first.check) == ("fail", 401, "token_issuer")
    assert (kind2, second.http_status) == ("fail", 503)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_slow_x5u_delays_only_its_own_call(https: HttpsServer, tmp_path: Path,
                                             driver: str) -> None:
    """A misbehaving signer (x5u answering after 1.5 s) beside a well-behaved one: the
    good call is set up at once, the slow one when its chain arrives."""
    key = issuer_key(kid="live")
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(key)))
    authorize = TokenAuthorizer(POLICY, JwksSource(tmp_path / "jwks.json"))
    https.documents["/slow.pem"] = Document(STI.chain_pem(), delay=1.5)
    now = time.time()
    tok = token(key, claims(iat=int(now), exp=int(now) + 60))
    module = ripp_trio if driver == "trio" else ripp_asyncio
    clock = time.monotonic

    async def main() -> dict[str, float]:
        started = clock()
        done: dict[str, float] = {}
        async with module.open_server(server_quic_configuration(TLS), authorizer=authorize,
                                      identity_verifier=verifier(FetchLimits(timeout=5))) as srv:
            uri = f"https://localhost:{srv.address[1]}/ripp/calls"
            async with module.open_client(client_quic_configuration(TLS), calls_uris=[uri],
                                          token=tok) as client:
                async def place(name: str, path: str) -> None:
                    call = await client.place_call(
                        to=f"<{TO.uri}>", from_=f"<{FROM.uri}>",
                        identity=identity(STI, https.url(path), iat=time.time()))
                    await call.wait_state(CallState.PENDING)
                    done[name] = clock() - started

                if driver == "trio":
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(place, "slow", "/slow.pem")
                        nursery.start_soon(place, "good", "/sti.pem")
                else:
                    await asyncio.gather(place("slow", "/slow.pem"), place("good", "/sti.pem"))
        return done

    done = run(driver, main)
    assert done["slow"] >= 1.5
    assert done["good"] < done["slow"] - 0.7, done  # generous: the machine is loaded


@pytest.mark.parametrize("driver", DRIVERS)
def test_concurrent_verifications_share_one_fetch(https: HttpsServer, driver: str) -> None:
    https.documents["/slowish.pem"] = Document(STI.chain_pem(), delay=0.3)
    check = verifier()
    good = live_identity(https.url("/slowish.pem"))
    bad = live_identity(https.url("/missing.pem"))
    results: list[Any] = []

    async def one(value: str) -> None:
        try:
            results.append((await check(value, TO, FROM, 0.0)).verified)
        except BadIdentityInfo as exc:
            results.append(exc.check)

    async def main() -> None:
        values = [good] * 5 + [bad] * 3
        if driver == "trio":
            async with trio.open_nursery() as nursery:
                for value in values:
                    nursery.start_soon(one, value)
        else:
            await asyncio.gather(*(one(v) for v in values))

    run(driver, main)
    assert sorted(map(str, results)) == sorted(["True"] * 5 + ["x5u_fetch"] * 3)
    assert https.hits["/slowish.pem"] == 1
    assert https.hits["/missing.pem"] == 1


def test_unreachable_key_set_is_503_not_401(https: HttpsServer) -> None:
    from ripp_auth import KeySetUnavailable

    source = JwksSource(https.url("/no-jwks"), Fetcher(verify=trust()))
    authorize = TokenAuthorizer(POLICY, source)
    tok = token(issuer_key(), claims(iat=int(time.time()), exp=int(time.time()) + 60))

    async def main() -> str:
        return await authorize(request(tok), 0)

    with pytest.raises(KeySetUnavailable) as info:
        trio.run(main)
    assert info.value.http_status == 503
    # Not retried at once: the refresh bound holds for a failing issuer too.
    with pytest.raises(KeySetUnavailable):
        trio.run(main)
    assert https.hits["/no-jwks"] == 1
