"""Async authorization hooks for the drivers, loop-agnostic (R13, R14).

A hook that must do I/O (fetch a JWKS or an ``x5u`` chain) is a coroutine function. The
drivers then create the server with ``deferred_checks=True`` and, for each
:class:`~ripp_core.ChecksRequested`, spawn a task running :func:`run_checks`, which awaits
the hooks and answers the parked request. Only the task spawning is per driver; this module
imports no event loop.

The ``now`` handed to hooks is the driver's clock (monotonic), as for sync hooks; a hook
that compares with token or PASSporT times reads a wall clock of its own.

For a re-establishment request (protocol 15, 19.3), an identity verifier object that has a
``verify_reestablishment`` method (same arguments) is asked through it instead, so that it
can accept the original PASSporT however old (ripp_auth's StirVerifier does).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._auth import UNVERIFIED, Authorizer, AuthRequest, IdentityCheck, IdentityVerifier
from ._errors import ChecksTimedOut, RippError
from ._events import ChecksRequested
from ._headers import NameAddr, parse_name_addr
from ._http import HttpServer

logger = logging.getLogger("ripp.checks")

#: An authorizer that awaits: ``await hook(request, now)`` returns the principal.
AsyncAuthorizer = Callable[[AuthRequest, float], Awaitable[str]]
#: An identity verifier that awaits: ``await hook(identity, to, from_, now)``.
AsyncIdentityVerifier = Callable[[str, NameAddr, NameAddr, float], Awaitable[IdentityCheck]]
#: What ``open_server`` accepts for each hook.
AnyAuthorizer = Authorizer | AsyncAuthorizer
AnyIdentityVerifier = IdentityVerifier | AsyncIdentityVerifier


def is_async_hook(hook: object) -> bool:
    """True when ``hook`` is a coroutine function, or an object whose ``__call__`` is."""
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - an async __call__, not callable()
    )


def needs_deferred_checks(authorizer: object, identity_verifier: object) -> bool:
    """Whether a server with these hooks must park requests (either hook is async)."""
    return is_async_hook(authorizer) or is_async_hook(identity_verifier)


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _name_addr(request: AuthRequest, name: str) -> NameAddr:
    value = request.header(name)
    if value is None:  # the core checked both before parking the request
        raise ChecksTimedOut(f"the parked request lost its {name} header")
    return parse_name_addr(value)


async def run_checks(
    driver: Any,
    server: HttpServer,
    event: ChecksRequested,
    authorizer: AnyAuthorizer,
    identity_verifier: AnyIdentityVerifier,
    now: float,
) -> None:
    """Run both hooks (sync or async) for one parked request and answer it: complete
    with the principal and identity check, or fail with the hook's :class:`RippError`
    (its wire status). Any other exception is a bug in a hook: logged, answered 503.
    ``now`` (the driver clock when the request was parked) is what the hooks get."""
    try:
        principal = await _call(authorizer, event.request, now)
        check: IdentityCheck = UNVERIFIED
        if event.identity is not None:
            to = _name_addr(event.request, "to")
            from_ = _name_addr(event.request, "from")
            verify: Callable[..., Any] = identity_verifier
            if event.request.reestablish is not None:
                # protocol 19.3 item 3: a re-establishment carries the original PASSporT,
                # which may be older than the freshness window; a verifier that knows
                # says so with a verify_reestablishment method.
                verify = getattr(identity_verifier, "verify_reestablishment", verify)
            check = await _call(verify, event.identity, to, from_, now)
    except RippError as exc:
        refusal = exc
        driver.run(lambda at: server.fail_checks(event.ticket, refusal, at))
        return
    except Exception:
        logger.exception("an authorization hook failed")
        error = ChecksTimedOut("authorization failed")
        driver.run(lambda at: server.fail_checks(event.ticket, error, at))
        return
    driver.run(
        lambda at: server.complete_checks(event.ticket, at, principal=principal, identity=check)
    )


__all__ = [
    "AnyAuthorizer",
    "AnyIdentityVerifier",
    "AsyncAuthorizer",
    "AsyncIdentityVerifier",
    "is_async_hook",
    "needs_deferred_checks",
    "run_checks",
]
