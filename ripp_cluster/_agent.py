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

import inspect
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.abc import TaskGroup

from ripp_core import (
    UNVERIFIED,
    CallIncoming,
    CallMigrating,
    CallStateChanged,
    CallStore,
    CallTerminated,
    ChecksRequested,
    ClaimOutcome,
    Event,
    IdentityCheck,
    MigrationPhase,
    OwnerAlive,
    RippError,
    StoredCall,
    UnknownCall,
    claim_target,
    parse_name_addr,
    resume_point,
)
from ripp_core._headers import FROM, TO
from ripp_core._store import decode_handoff, encode_handoff, split_call_path
from ripp_core.aio import Server
from ripp_core.aio_checks import AnyAuthorizer, AnyIdentityVerifier

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
        authorizer: AnyAuthorizer,
        identity_verifier: AnyIdentityVerifier,
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
        self.draining = False
        """True once :meth:`drain` started: new calls are refused (503)."""
        self._imports: dict[str, anyio.Event] = {}  # call id -> set when imported (or not)
        self.address = server.endpoint.authority or ""
        server.observe(self._observe)

    # ------------------------------------------------------------------ public
    async def run(self) -> None:
        """Hold the lease, process the server's events and snapshot calls until cancelled."""
        await self.store.renew(self.instance, self.config.store_lease_ttl, self.address)
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

    async def drain(self, timeout: float | None = None) -> int:
        """Move every call of this instance to the other live instances (rolling upgrade,
        protocol 14.5 and 24.7) and wait until they have left; returns how many were moved.

        Each call is exported and sent ``move`` in one step (nothing the application sends
        can slip in between), naming a call id on the target chosen here; the handoff then
        goes into the store, where the target takes it when the client arrives. New calls
        are refused with 503 from now on.
        """
        self.draining = True
        targets = {
            name: address
            for name, address in (await self.store.live_instances()).items()
            if name != self.instance and address
        }
        if not targets:
            logger.warning("drain: no other live instance; calls stay")
            return 0
        names = sorted(targets)
        moved = 0
        base = self.config.instances_path.rstrip("/")
        for index, handle in enumerate(list(self._owned)):
            record = self._owned.get(handle)
            if record is None or handle not in self.server.endpoint.calls:
                continue
            target = names[index % len(names)]
            call_id = secrets.token_urlsafe(16)  # 128 bits, like every call id (3.3)
            uri = f"https://{targets[target]}{base}/{target}/calls/{call_id}"

            def hand_over(
                now: float, handle: str = handle, uri: str = uri, hop: bytes = record.next_hop
            ) -> bytes:
                handoff = self.server.endpoint.export_call(handle, now)
                self.server.endpoint.move(handle, now, uri)
                return encode_handoff(handoff, hop)

            try:
                data = self.server.run(hand_over)
            except RippError as exc:  # ended or moving meanwhile
                logger.info("drain: %s not moved: %s", record.uri, exc)
                continue
            await self.store.put_handoff(call_id, data, 2 * self.config.move_timeout)
            moved += 1
            logger.info("drain: %s -> %s", record.uri, uri)
        limit = timeout if timeout is not None else 2 * self.config.move_timeout
        with anyio.move_on_after(limit):
            while any(h in self.server.endpoint.calls for h in self._owned):
                await anyio.sleep(0.05)
        return moved

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
                await self.store.renew(self.instance, self.config.store_lease_ttl, self.address)
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

    async def _import(self, path: str) -> None:
        """A request for a call this instance does not hold: if another instance moved
        the call here through the store, import it first (once, however many of the
        call's requests arrive together)."""
        target = split_call_path(path, self.config.instances_path)
        if target is None or target[0] != self.instance:
            return
        call_id = target[1]
        pending = self._imports.get(call_id)
        if pending is not None:
            await pending.wait()
            return
        done = self._imports[call_id] = anyio.Event()
        try:
            data = None
            with anyio.move_on_after(self.config.store_handoff_wait):
                # The old instance writes the handoff right after its move; the client
                # may be faster.
                while (data := await self.store.take_handoff(call_id)) is None:
                    await anyio.sleep(0.02)
            if data is None:
                raise UnknownCall(f"no call {call_id!r} here")
            handoff, next_hop = decode_handoff(data, self.config)
            self.server.run(
                lambda now: self.server.endpoint.import_call(
                    handoff, now, call_id=call_id, announce=True, next_hop=next_hop
                )
            )
            logger.info("imported %s (moved from %s)", call_id, handoff.previous_uri)
        finally:
            done.set()
            self._imports.pop(call_id, None)

    async def _check(self, event: ChecksRequested) -> None:
        run = self.server.run
        request = event.request
        try:
            # The hooks may be async (ripp serve's token and PASSporT checks fetch keys and
            # certificates): await what they return when it is awaitable.
            checked_at = run(lambda now: now)
            principal = await _resolved(self._authorizer(request, checked_at))
            identity: IdentityCheck = UNVERIFIED
            headers = dict(request.headers)
            if event.identity is not None:
                to, from_ = parse_name_addr(headers[TO]), parse_name_addr(headers[FROM])
                identity = await _resolved(
                    self._identity_verifier(event.identity or "", to, from_, checked_at)
                )
            if request.call is None and self.draining:
                # New calls and re-establishments go to instances that stay.
                raise OwnerAlive("this instance is draining")
            if request.call is not None and request.call not in self.server.endpoint.calls:
                await self._import(request.path)
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


async def _resolved(value: Any) -> Any:
    """``value``, awaited first if a hook returned an awaitable (an async hook)."""
    if inspect.isawaitable(value):
        return await value
    return value
