"""Authentication for the CLI: the server's hooks, the caller's token and PASSporT (R13, R14).

Out of the box both sides use the ripp home: a default ``ripp serve`` accepts only access
tokens of the local issuer (:mod:`._issuer`) and PASSporTs that chain to the local STI-CA
(:mod:`._sti`); a default ``ripp call`` mints such a token and signs such a PASSporT, and
publishes its STI certificate at an ``https://localhost:PORT/sti.pem`` ``x5u`` (a small
HTTPS server with the local TLS certificate, which the verifier trusts for fetches) while
it runs. Real deployments name their issuer's JWKS, their STIR trust anchors and a token
endpoint instead. Accepting anything takes an option named ``--insecure-...``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ripp_auth import (
    ChainCache,
    ClientCredentials,
    FailurePolicy,
    Fetcher,
    FetchLimits,
    JwksSource,
    StirPolicy,
    StirVerifier,
    TokenAuthorizer,
    TokenPolicy,
    load_anchors,
)
from ripp_core import insecure_accept_any_bearer, insecure_accept_any_identity

from . import _certs, _issuer, _sti
from ._https import Document, HttpsServer

log = logging.getLogger("ripp.cli")


# ------------------------------------------------------------------ options
def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Token and caller-ID options of ``ripp serve``."""
    group = parser.add_argument_group("authentication (R13, R14)")
    group.add_argument("--jwks", metavar="FILE|URL",
                       help="the token issuer's JWKS (default: the local issuer's)")
    group.add_argument("--issuer", help="required token iss (default: the local issuer)")
    group.add_argument("--audience", help="required token aud (default: urn:ripp:local)")
    group.add_argument("--scope", default=_issuer.CALL_SCOPE,
                       help="scope needed to place calls (default: %(default)s)")
    group.add_argument("--stir-trust", action="append", type=Path, metavar="PEM",
                       help="STIR trust anchors, repeatable (default: the local STI-CA)")
    group.add_argument("--x5u-ca", type=Path, metavar="PEM",
                       help="extra CA trusted when fetching x5u/JWKS over HTTPS "
                            "(default: the local TLS CA, besides the system's)")
    group.add_argument("--identity-policy", choices=("reject", "mark"), default="reject",
                       help="a PASSporT failing a check: refuse the call (436/437/438) "
                            "or accept it marked unverified (default: %(default)s)")
    group.add_argument("--insecure-accept-any-token", action="store_true",
                       help="INSECURE: take any bearer token without validating it")
    group.add_argument("--insecure-accept-any-identity", action="store_true",
                       help="INSECURE: take any well-formed Identity header unverified")


def add_call_options(parser: argparse.ArgumentParser) -> None:
    """Token and PASSporT options of ``ripp call``."""
    group = parser.add_argument_group("authentication (R13, R14)")
    group.add_argument("--token", help="bearer token (default: minted by the local issuer)")
    group.add_argument("--token-endpoint", metavar="URL",
                       help="get tokens by OAuth client credentials (RFC 6749 4.4) here")
    group.add_argument("--client-id", help="client id for --token-endpoint")
    group.add_argument("--client-secret", help="client secret for --token-endpoint")
    group.add_argument("--audience", default=_issuer.LOCAL_AUDIENCE,
                       help="aud of locally minted tokens (default: %(default)s)")
    group.add_argument("--attest", choices=("A", "B", "C"), default="A",
                       help="SHAKEN attestation to sign (default: %(default)s)")
    group.add_argument("--identity", metavar="VALUE",
                       help="send this Identity header as is (e.g. one a gateway received)")


def add_token_command(subcommands: Any) -> None:
    """Register ``ripp token``."""
    token = subcommands.add_parser(
        "token", help="mint an access token with the local issuer (or show its JWKS)"
    )
    token.add_argument("--subject", default="ripp-cli")
    token.add_argument("--scope", default=_issuer.CALL_SCOPE)
    token.add_argument("--audience", default=_issuer.LOCAL_AUDIENCE)
    token.add_argument("--lifetime", type=float, default=_issuer.TOKEN_LIFETIME, metavar="S")
    token.add_argument("--jwks", action="store_true", help="print the JWKS file's path")


def run_token(args: argparse.Namespace) -> int:
    """``ripp token``: print a token of the local issuer (made on first use)."""
    issuer = _issuer.ensure_local_issuer()
    if args.jwks:
        print(issuer.jwks_path)
        return 0
    print(issuer.mint(time.time(), subject=args.subject, audience=args.audience,
                      scope=args.scope, lifetime=args.lifetime))
    return 0


# ------------------------------------------------------------------ server side
def fetch_trust(extra_ca: Path | None) -> ssl.SSLContext:
    """What HTTPS fetches trust: the system's CAs and ``extra_ca`` (default: the local
    TLS CA, so a caller's local x5u server can be reached)."""
    context = ssl.create_default_context()
    ca = extra_ca or _certs.ensure_local_pki().ca_cert_path
    context.load_verify_locations(cafile=str(ca))
    return context


def server_checks(args: argparse.Namespace) -> dict[str, Any]:
    """The authorizer and identity verifier of ``ripp serve`` and ``ripp demo``."""
    def option(name: str, default: Any = None) -> Any:
        # ripp demo has none of these options: it takes every default.
        return getattr(args, name, default)

    fetcher = Fetcher(FetchLimits(), verify=fetch_trust(option("x5u_ca")))
    authorizer: Any
    if option("insecure_accept_any_token", False):
        log.warning("INSECURE: accepting any bearer token (--insecure-accept-any-token)")
        authorizer = insecure_accept_any_bearer
    else:
        jwks = option("jwks")
        if jwks is None:
            jwks = _issuer.ensure_local_issuer().jwks_path
        policy = TokenPolicy(
            issuer=option("issuer") or _issuer.LOCAL_ISSUER,
            audience=option("audience") or _issuer.LOCAL_AUDIENCE,
            required_scope=option("scope") or _issuer.CALL_SCOPE,
        )
        authorizer = TokenAuthorizer(policy, JwksSource(jwks, fetcher))
    verifier: Any
    if option("insecure_accept_any_identity", False):
        log.warning("INSECURE: accepting any caller ID unverified "
                    "(--insecure-accept-any-identity)")
        verifier = insecure_accept_any_identity
    else:
        anchors_files = option("stir_trust") or [_sti.ensure_local_sti().ca_cert_path]
        verifier = StirVerifier(
            load_anchors(anchors_files),
            StirPolicy(),
            ChainCache(fetcher),
            on_failure=FailurePolicy(option("identity_policy", "reject")),
        )
    return {"authorizer": authorizer, "identity_verifier": verifier}


# ------------------------------------------------------------------ client side
class CallerAuth:
    """What ``ripp call`` / ``ripp demo`` present: a token (function) and Identity values."""

    def __init__(self, token: str | Callable[[str], str], identity: Callable[[str, str], str]):
        self.token = token
        self.identity = identity


@contextlib.asynccontextmanager
async def caller_auth(rt: Any, args: argparse.Namespace) -> AsyncIterator[CallerAuth]:
    """Set up the caller's credentials for the ``async with``: the token (given, minted,
    or fetched by client credentials and kept fresh in a task), and a PASSporT signer
    whose ``x5u`` is served by a local HTTPS server while the block runs."""
    def option(name: str, default: Any = None) -> Any:
        # ripp demo has none of these options: it takes every default.
        return getattr(args, name, default)

    with contextlib.ExitStack() as stack:
        async with rt.tasks() as tasks:
            token: str | Callable[[str], str]
            if option("token_endpoint"):
                if not (option("client_id") and option("client_secret")):
                    raise SystemExit("ripp: --token-endpoint needs --client-id and "
                                     "--client-secret")
                credentials = ClientCredentials(
                    option("token_endpoint"), option("client_id"), option("client_secret"),
                    verify=fetch_trust(option("ca")),
                )
                await credentials.fetch()  # fail now, not at the first request
                tasks.start_soon(_refresh_later, rt, credentials)
                token = credentials
            elif option("token"):
                token = option("token")
            else:
                token = _issuer.ensure_local_issuer().mint(
                    time.time(), audience=option("audience") or _issuer.LOCAL_AUDIENCE
                )
            fixed = option("identity")
            if fixed:
                yield CallerAuth(token, lambda to, from_: str(fixed))
            else:
                pki = _certs.ensure_local_pki()
                sti = _sti.ensure_local_sti()
                server = stack.enter_context(HttpsServer(
                    pki.server_cert_path, pki.server_key_path,
                    {"/sti.pem": Document(sti.cert_path.read_bytes(),
                                          "application/pem-certificate-chain")},
                ))
                x5u = server.url("/sti.pem")
                key = sti.signing_key()
                attest = option("attest") or "A"

                def sign(to: str, from_: str) -> str:
                    return _sti.sign_passport(key, x5u, to=to, from_=from_,
                                              iat=int(time.time()), attest=attest)

                yield CallerAuth(token, sign)
            # Leaving rt.tasks() cancels the token refresher.


async def _refresh_later(rt: Any, credentials: ClientCredentials) -> None:
    # keep_fresh fetches at once; the first token was fetched already, so wait first.
    await rt.sleep(max(credentials.refresh_due(time.time()), 1.0))
    await credentials.keep_fresh()


__all__ = [
    "CallerAuth",
    "add_call_options",
    "add_serve_options",
    "add_token_command",
    "caller_auth",
    "run_token",
    "server_checks",
]
