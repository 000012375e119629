"""The cluster agent: the I/O half of shared call state, beside one server instance.

The server runs with ``deferred_checks=True``, so every request waits for the agent. The
agent runs the authorizer and the identity verifier; for a re-establishment naming a call
of another instance it claims the call in the store first (I/O, awaited here, never in
the core) and resumes the request with the claimed record
(``RippServer.complete_checks(resumed=...)``), or refuses it with 503 while the owner
still holds its lease. Beside that it keeps the store in step with the server: it holds
the instance's owner lease, registers each call the server creates, writes its state and
resume point, and forgets it when it ends or moves away.

It uses AnyIO (which coredis brings) for its tasks and sleeps, so one agent serves the
Trio and the asyncio driver alike.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.abc import TaskGroup

from ripp_core import (
    UNVERIFIED,
    Authorizer,
    CallIncoming,
    CallMigrating,
    CallStateChanged,
    CallStore,
    CallTerminated,
    ChecksRequested,
    ClaimOutcome,
    Event,
    IdentityCheck,
    IdentityVerifier,
    MigrationPhase,
    OwnerAlive,
    RippError,
    StoredCall,
    claim_target,
    parse_name_addr,
    resume_point,
)
from ripp_core._headers import FROM, TO
from ripp_core.aio import Server

logger = logging.getLogger("ripp.cluster")


def _call_id(uri: str) -> str:
    return urlsplit(uri).path.rsplit("/", 1)[-1]


class ClusterAgent:
    """Keeps one server instance and the shared call store in step (protocol 24).

    ``server`` must have been opened with ``deferred_checks=True``. ``authorizer`` and
    ``identity_verifier`` are the hooks the server would otherwise have run itself. Run
    :meth:`run` in a task for as long as the server serves; cancel it to stop (the lease
    then lapses after ``store_lease_ttl``), or call :meth:`release` first for a clean exit.
    """

    def __init__(
        self,
        server: Server,
        store: CallStore,
        *,
        authorizer: Authorizer,
        identity_verifier: IdentityVerifier,
    ) -> None:
        self.server = server
        self.store = store
        self.instance = server.endpoint.instance_id
        self.config = server.endpoint.config
        self._authorizer = authorizer
        self._identity_verifier = identity_verifier
        # Bounded: past this many unprocessed events the agent is hopelessly behind, and a
        # dropped check expires with 503 (check_timeout) instead of growing memory.
        self._events_in, self._events_out = anyio.create_memory_object_stream[Event](
            max_buffer_size=4 * self.config.max_pending_checks + 1024
        )
        self._owned: dict[str, StoredCall] = {}  # handle -> record as registered
        self._claimed: dict[str, StoredCall] = {}  # old call id -> record we claimed
        self.claims: dict[ClaimOutcome, int] = dict.fromkeys(ClaimOutcome, 0)
        """How many claims ended each way (for tests and metrics)."""
        self.ready = anyio.Event()
        """Set once the first lease renewal went through."""
        server.observe(self._observe)

    # ------------------------------------------------------------------ public
    async def run(self) -> None:
        """Hold the lease, process the server's events and snapshot calls until cancelled."""
        await self.store.renew(self.instance, self.config.store_lease_ttl)
        self.ready.set()
        async with anyio.create_task_group() as group:
            group.start_soon(self._renew_loop)
            group.start_soon(self._snapshot_loop)
            async for event in self._events_out:
                await self._handle(event, group)

    async def set_next_hop(self, handle: str, data: bytes) -> bool:
        """Store opaque next-hop data for a call this instance owns (what the application
        needs to re-attach the call's other leg after a fail-over). False if not owned."""
        record = self._owned.get(handle)
        if record is None:
            return False
        done = await self.store.update(record.call_id, self.instance, record.epoch, next_hop=data)
        if done:
            self._owned[handle] = attrs.evolve(record, next_hop=data)
        return done

    async def release(self) -> None:
        """Drop the lease now (clean shutdown): this instance's calls become claimable."""
        await self.store.release(self.instance)

    @property
    def owned(self) -> list[str]:
        """Handles of the calls this agent has registered and not yet forgotten."""
        return list(self._owned)

    # ------------------------------------------------------------------ internals
    def _observe(self, event: Event) -> None:
        if isinstance(
            event, ChecksRequested | CallIncoming | CallStateChanged | CallTerminated
        ) or (isinstance(event, CallMigrating) and event.phase is MigrationPhase.MOVED_AWAY):
            try:
                self._events_in.send_nowait(event)
            except anyio.WouldBlock:
                logger.warning("cluster agent behind: dropped %s", type(event).__name__)

    async def _renew_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.store_renew_interval)
            try:
                await self.store.renew(self.instance, self.config.store_lease_ttl)
            except Exception as exc:  # the store is down: keep trying, say so
                logger.warning("lease renewal failed: %s: %s", type(exc).__name__, exc)

    async def _snapshot_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.store_snapshot_interval)
            calls = self.server.endpoint.calls
            for handle, record in list(self._owned.items()):
                call = calls.get(handle)
                if call is None:
                    continue
                point = resume_point(call)  # a read: nothing to send
                try:
                    await self.store.update(
                        record.call_id, self.instance, record.epoch, resume=point
                    )
                except Exception as exc:
                    logger.warning("snapshot of %s failed: %s", record.uri, exc)

    async def _handle(self, event: Event, group: TaskGroup) -> None:
        try:
            if isinstance(event, ChecksRequested):
                # A claim waits on the store: one task per request, so one slow claim
                # does not hold up the others.
                group.start_soon(self._check, event)
            elif isinstance(event, CallIncoming):
                await self._register(event)
            elif isinstance(event, CallStateChanged):
                record = self._owned.get(event.call)
                if record is not None:
                    await self.store.update(
                        record.call_id, self.instance, record.epoch, state=event.state
                    )
            elif isinstance(event, CallTerminated | CallMigrating):
                record = self._owned.pop(event.call, None)
                if record is not None:
                    await self.store.forget(record.call_id, self.instance, record.epoch)
        except Exception as exc:
            logger.warning("store write for %s failed: %s", type(event).__name__, exc)

    async def _register(self, event: CallIncoming) -> None:
        record = StoredCall(
            call_id=_call_id(event.uri),
            uri=event.uri,
            owner=self.instance,
            principal=event.principal,
            state=event.state,
            next_hop=event.next_hop or b"",
        )
        self._owned[event.call] = record
        await self.store.register(record)
        if event.reestablishes is not None and event.next_hop is not None:
            # The claimed record has a successor now: drop it (fenced by the claim's epoch).
            old = self._claimed.pop(_call_id(event.reestablishes), None)
            if old is not None:
                await self.store.forget(old.call_id, self.instance, old.epoch)

    async def _check(self, event: ChecksRequested) -> None:
        run = self.server.run
        request = event.request
        try:
            principal = run(lambda now: self._authorizer(request, now))
            identity: IdentityCheck = UNVERIFIED
            headers = dict(request.headers)
            if event.identity is not None:
                to, from_ = parse_name_addr(headers[TO]), parse_name_addr(headers[FROM])
                identity = run(
                    lambda now: self._identity_verifier(event.identity or "", to, from_, now)
                )
            resumed: StoredCall | None = None
            marker = request.reestablish
            target = (
                claim_target(marker.call_uri, self.instance, self.config.instances_path)
                if marker is not None
                else None
            )
            if target is not None:
                claim = await self.store.claim(target, self.instance, principal)
                self.claims[claim.outcome] += 1
                if claim.outcome is ClaimOutcome.OWNER_ALIVE:
                    raise OwnerAlive(f"the owner of {target} still holds its lease")
                if claim.outcome is ClaimOutcome.NOT_LEASED:
                    # Our own lease lapsed (the store was slow or away): we may be
                    # taken for dead, so take nothing; the client tries elsewhere.
                    raise OwnerAlive("this instance holds no lease")
                if claim.call is not None:
                    resumed = claim.call
                    self._claimed[target] = claim.call
                    logger.info("claimed %s (epoch %d)", claim.call.uri, claim.call.epoch)
        except Exception as exc:
            if isinstance(exc, RippError):
                error: RippError = exc
            else:  # the store failed: refuse with 503, the client retries
                logger.warning("checks for ticket %d failed: %r", event.ticket, exc)
                error = OwnerAlive(f"call store unavailable: {type(exc).__name__}")
            run(lambda now: self.server.endpoint.fail_checks(event.ticket, error, now))
            return
        run(
            lambda now: self.server.endpoint.complete_checks(
                event.ticket, now, principal=principal, identity=identity, resumed=resumed
            )
        )
