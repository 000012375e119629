"""Bounded HTTPS fetches for key sets and certificate chains (async, loop-agnostic).

httpx's AsyncClient runs on asyncio and on Trio (through anyio and httpcore), so one
fetcher serves both drivers. Every fetch is bounded: ``https:`` only, no redirects (a
redirect could lead a verifier anywhere), a deadline for the whole fetch (connect, TLS,
headers and body), and a byte limit counted while the body streams in, so a peer cannot
make the verifier wait or buffer without bound.
"""

from __future__ import annotations

import ssl
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import attrs
import httpx


class FetchError(Exception):
    """A fetch failed: not https, unreachable, too slow, too big, or not 200."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url[:120]}: {reason}")
        self.url = url
        self.reason = reason
        """What went wrong, in words (``timeout``, ``too large`` ...)."""


@attrs.frozen
class FetchLimits:
    """The bounds of a :class:`Fetcher` (documented in docs/protocol.md "Caller
    identity" and "Access tokens")."""

    timeout: float = 2.0
    """Seconds for the whole fetch; the call it gates waits at most this long."""
    max_bytes: int = 64 * 1024
    """Largest body accepted (a certificate chain is a few KB; a JWKS rarely more)."""
    cache_ttl: float = 3600.0
    """Seconds a fetched certificate chain is reused."""
    cache_entries: int = 256
    """Most certificate chains kept (least recently used go first)."""


class Fetcher:
    """GET over HTTPS within :class:`FetchLimits`, trusting ``verify`` (an SSL context,
    or True for the system's CAs)."""

    def __init__(self, limits: FetchLimits | None = None, verify: ssl.SSLContext | bool = True):
        self.limits = limits or FetchLimits()
        self._verify = verify

    async def get(self, url: str) -> bytes:
        """The body of ``url``; raises :class:`FetchError`."""
        if not url.lower().startswith("https://"):
            raise FetchError(url, "not an https URL")
        limit = self.limits.max_bytes
        try:
            with anyio.fail_after(self.limits.timeout):
                async with (
                    httpx.AsyncClient(
                        verify=self._verify, follow_redirects=False, trust_env=False
                    ) as client,
                    client.stream("GET", url) as response,
                ):
                    if response.status_code != 200:
                        raise FetchError(url, f"HTTP status {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > limit:
                        raise FetchError(url, f"too large ({declared} bytes)")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise FetchError(url, f"too large (over {limit} bytes)")
                    return bytes(body)
        except TimeoutError:
            raise FetchError(url, f"timeout after {self.limits.timeout} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(url, f"{type(exc).__name__}: {exc}") from None


class ChainCache:
    """Certificate chains by ``x5u``, fetched on first use and kept ``cache_ttl``.

    Concurrent requests for a URL not cached yet share one fetch: a burst of calls signed
    by a new certificate costs its signer one GET, not one per call.
    """

    def __init__(self, fetcher: Fetcher, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetcher = fetcher
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._inflight: dict[str, _Flight] = {}

    def _cached(self, url: str) -> bytes | None:
        entry = self._entries.get(url)
        if entry is None or self._clock() - entry[1] >= self.fetcher.limits.cache_ttl:
            return None
        self._entries.move_to_end(url)
        return entry[0]

    async def get(self, url: str) -> bytes:
        """The chain at ``url``, from the cache when fresh; raises :class:`FetchError`
        (as do the requests that waited on a fetch that failed)."""
        body = self._cached(url)
        if body is not None:
            return body
        flight = self._inflight.get(url)
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.body is not None
            return flight.body
        flight = self._inflight[url] = _Flight()
        try:
            flight.body = await self.fetcher.get(url)
        except FetchError as exc:
            flight.error = exc
            raise
        finally:
            del self._inflight[url]
            flight.done.set()
        self._entries[url] = (flight.body, self._clock())
        self._entries.move_to_end(url)
        while len(self._entries) > self.fetcher.limits.cache_entries:
            self._entries.popitem(last=False)
        return flight.body


class _Flight:
    """One fetch in progress, which other requests for the same URL wait on."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.body: bytes | None = None
        self.error: FetchError | None = None


__all__ = ["ChainCache", "FetchError", "FetchLimits", "Fetcher"]
