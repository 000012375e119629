"""Async server hooks (token authorizer, STIR verifier) and the client-credentials token.

The hooks are coroutine functions, so ``ripp_trio.open_server`` / ``ripp_asyncio.open_server``
run them in a task per request and the event loop never waits on a fetch. The decisions are
the core's (:mod:`ripp_core._oauth`, :mod:`ripp_core._stir`); this module only fetches and
reads the wall clock, which token and PASSporT times are measured in (the ``now`` drivers
pass to hooks is their monotonic clock).
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
from cryptography import x509

from ripp_core import IdentityCheck
from ripp_core._auth import AuthRequest
from ripp_core._headers import NameAddr
from ripp_core._oauth import (
    InvalidToken,
    JwksCache,
    JwksPolicy,
    JwksState,
    KeySetUnavailable,
    TokenPolicy,
    token_key_id,
    verify_access_token,
)
from ripp_core._stir import (
    BadIdentityInfo,
    Passport,
    StirError,
    StirPolicy,
    inspect_identity,
    verify_passport,
)

from ._fetch import ChainCache, Fetcher, FetchError

logger = logging.getLogger("ripp.auth")


class JwksSource:
    """Where the issuer's key set comes from: a file path or an ``https:`` URL."""

    def __init__(self, location: str | Path, fetcher: Fetcher | None = None) -> None:
        self.location = str(location)
        self.fetcher = fetcher or Fetcher()

    async def read(self) -> bytes:
        """The key set document; raises :class:`FetchError` or OSError."""
        if self.location.lower().startswith("https://"):
            return await self.fetcher.get(self.location)
        if "://" in self.location:
            raise FetchError(self.location, "a JWKS is a file path or an https URL")
        path = Path(self.location)
        return await anyio.to_thread.run_sync(path.read_bytes)


class TokenAuthorizer:
    """Async authorizer: the request's bearer token must be a valid access token of
    ``policy.issuer`` (checked by :func:`ripp_core._oauth.verify_access_token`); its
    principal is the token's subject. Unknown ``kid`` values refresh the key set, no more
    often than ``jwks_policy.min_refresh_interval``."""

    def __init__(
        self,
        policy: TokenPolicy,
        jwks: JwksSource,
        jwks_policy: JwksPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.source = jwks
        self.cache = JwksCache(jwks_policy)
        self._clock = clock
        self._lock = anyio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            if not self.cache.wants_refresh(now):  # another task just did it
                return
            self.cache.fetching(now)
            try:
                document = await self.source.read()
                self.cache.loaded(document, self._clock())
            except (FetchError, OSError, ValueError) as exc:
                self.cache.failed(self._clock())
                logger.warning("JWKS %s: %s", self.source.location, exc)

    async def __call__(self, request: AuthRequest, now: float) -> str:
        """The principal of ``request``'s token; raises InvalidToken / InsufficientScope."""
        wall = self._clock()
        kid = token_key_id(request.token)
        self.cache.lookup(kid, wall)  # an unknown kid marks the key set stale
        if self.cache.wants_refresh(wall) or self._lock.locked():
            # Also when another request's fetch is in flight: wait for its keys rather
            # than refuse this request while the first fetch of the key set runs.
            await self._refresh()
        if self.cache.state is JwksState.EMPTY:
            raise KeySetUnavailable(f"the key set at {self.source.location} is unavailable")
        wall = self._clock()
        grant = verify_access_token(
            request.token,
            lambda k: self.cache.lookup(k, wall),
            self.policy,
            wall,
            creates_call=request.creates_call,
        )
        return grant.principal


class FailurePolicy(enum.Enum):
    """What a :class:`StirVerifier` does with a PASSporT that fails a check."""

    REJECT = "reject"
    """Refuse the call with the check's SIP code (436/437/438)."""
    MARK = "mark"
    """Accept the call, marked unverified with the reason (the application decides)."""


class StirVerifier:
    """Async identity verifier: runs the checks of :mod:`ripp_core._stir`, fetching the
    ``x5u`` chain through a :class:`ChainCache`, against ``anchors``."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        policy: StirPolicy | None = None,
        chains: ChainCache | None = None,
        on_failure: FailurePolicy = FailurePolicy.REJECT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.anchors = list(anchors)
        self.policy = policy or StirPolicy()
        self.chains = chains or ChainCache(Fetcher())
        self.on_failure = on_failure
        self._clock = clock

    async def __call__(
        self, identity: str, to: NameAddr, from_: NameAddr, now: float
    ) -> IdentityCheck:
        """What verifying ``identity`` found; raises the failed check's StirError when
        the policy is REJECT."""
        return await self._verify(identity, to, from_, self.policy)

    async def verify_reestablishment(
        self, identity: str, to: NameAddr, from_: NameAddr, now: float
    ) -> IdentityCheck:
        """As a call, but for a re-establishment (protocol 19.3 item 3): the original
        PASSporT is not refused for its age; every other check applies."""
        return await self._verify(identity, to, from_, attrs.evolve(self.policy,
                                                                    freshness=math.inf))

    async def _verify(
        self, identity: str, to: NameAddr, from_: NameAddr, policy: StirPolicy
    ) -> IdentityCheck:
        passport: Passport | None = None
        try:
            passport = inspect_identity(identity, to, from_, policy, self._clock())
            try:
                chain = await self.chains.get(passport.x5u)
            except FetchError as exc:
                raise BadIdentityInfo("x5u_fetch", exc.reason) from None
            return verify_passport(passport, chain, self.anchors, policy, self._clock())
        except StirError as exc:
            if self.on_failure is FailurePolicy.REJECT:
                raise
            reason = f"{exc.sip_code} {exc.reason_phrase}: {exc.message}"
            passport = passport or exc.passport
            if passport is None:
                return IdentityCheck(verified=False, reason=reason, sip_code=exc.sip_code)
            return passport.check(False, reason, exc.sip_code)


def load_anchors(paths: Sequence[str | Path]) -> list[x509.Certificate]:
    """Trust anchors from PEM files (each may hold several certificates)."""
    anchors: list[x509.Certificate] = []
    for path in paths:
        anchors.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    return anchors


class ClientCredentials:
    """An OAuth 2.0 client-credentials token (RFC 6749 section 4.4), kept fresh.

    Call it as the client's token function (``token=credentials``): it returns the current
    access token. Run :meth:`keep_fresh` in a task beside the client: it fetches a token
    at once and again ``refresh_margin`` seconds before each one expires (retrying after
    ``retry_delay`` on failure). :meth:`fetch` gets one token, for a one-shot use.
    """

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str = "ripp:call",
        audience: str | None = None,
        refresh_margin: float = 60.0,
        retry_delay: float = 5.0,
        timeout: float = 10.0,
        verify: Any = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_endpoint = token_endpoint
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.audience = audience
        self.refresh_margin = refresh_margin
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._verify = verify
        self._clock = clock
        self._token: str | None = None
        self.expires_at = -math.inf
        """When the current token expires (POSIX seconds)."""

    def __call__(self, uri: str) -> str:
        """The current access token (for any ``uri``); raises InvalidToken before the
        first fetch has succeeded."""
        if self._token is None:
            raise InvalidToken("client_credentials", "no token fetched yet")
        return self._token

    async def fetch(self) -> str:
        """Ask the token endpoint for a new token; raises FetchError on failure."""
        form = {"grant_type": "client_credentials", "scope": self.scope}
        if self.audience is not None:
            form["audience"] = self.audience
        try:
            with anyio.fail_after(self.timeout):
                async with httpx.AsyncClient(verify=self._verify, trust_env=False) as client:
                    response = await client.post(
                        self.token_endpoint, data=form, auth=(self.client_id, self._secret)
                    )
        except TimeoutError:
            raise FetchError(self.token_endpoint, "timeout") from None
        except httpx.HTTPError as exc:
            raise FetchError(self.token_endpoint, f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise FetchError(self.token_endpoint, f"HTTP status {response.status_code}")
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError(self.token_endpoint, f"bad token response: {exc}") from None
        if not isinstance(token, str) or body.get("token_type", "Bearer").lower() != "bearer":
            raise FetchError(self.token_endpoint, "not a bearer access token")
        self._token = token
        self.expires_at = self._clock() + lifetime
        return token

    def refresh_due(self, now: float) -> float:
        """Seconds from ``now`` until the next refresh (0 when due)."""
        return max(0.0, self.expires_at - self.refresh_margin - now)

    async def keep_fresh(self) -> None:
        """Fetch now and before every expiry, until cancelled."""
        while True:
            try:
                await self.fetch()
            except FetchError as exc:
                logger.warning("token endpoint: %s", exc)
                await anyio.sleep(self.retry_delay)
                continue
            await anyio.sleep(max(self.refresh_due(self._clock()), 1.0))


__all__ = [
    "ClientCredentials",
    "FailurePolicy",
    "JwksSource",
    "StirVerifier",
    "TokenAuthorizer",
    "load_anchors",
]
