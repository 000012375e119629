"""ripp_auth: real OAuth 2.0 access tokens and STIR/SHAKEN for RIPP servers and clients.

The checks themselves are sans-IO in ``ripp_core`` (``_oauth``, ``_stir``); this package
adds what needs I/O, loop-agnostic (httpx over anyio, so Trio and asyncio alike):

* :class:`TokenAuthorizer`: async authorizer validating RFC 9068 access tokens against a
  JWKS from a file or an HTTPS URL (cached, refreshed on an unknown ``kid``, rate-bounded);
* :class:`StirVerifier`: async identity verifier fetching ``x5u`` chains over HTTPS
  (bounded in time and size, cached) and running the RFC 8224/8588 checks;
* :class:`ClientCredentials`: the RFC 6749 section 4.4 flow as a client token function,
  refreshed before expiry.

Pass the hooks to ``ripp_trio.open_server`` / ``ripp_asyncio.open_server``; they run in a
task per request.
"""

from ripp_core._oauth import (
    InsufficientScope,
    InvalidToken,
    JwksPolicy,
    KeySetUnavailable,
    TokenPolicy,
)
from ripp_core._stir import (
    BadIdentityInfo,
    InvalidIdentityHeader,
    StirError,
    StirPolicy,
    UnsupportedCredential,
)

from ._fetch import ChainCache, Fetcher, FetchError, FetchLimits
from ._hooks import (
    ClientCredentials,
    FailurePolicy,
    JwksSource,
    StirVerifier,
    TokenAuthorizer,
    load_anchors,
)

__all__ = [
    "BadIdentityInfo",
    "ChainCache",
    "ClientCredentials",
    "FailurePolicy",
    "FetchError",
    "FetchLimits",
    "Fetcher",
    "InsufficientScope",
    "InvalidIdentityHeader",
    "InvalidToken",
    "JwksPolicy",
    "JwksSource",
    "KeySetUnavailable",
    "StirError",
    "StirPolicy",
    "StirVerifier",
    "TokenAuthorizer",
    "TokenPolicy",
    "UnsupportedCredential",
    "load_anchors",
]
