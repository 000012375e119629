"""The call store in Redis (protocol section 24), through coredis.

coredis runs on AnyIO, so one store object works under Trio and asyncio alike (redis-py's
async client is asyncio-only, which would have split the store in two). Every operation
that reads before it writes is one Lua script, which Redis runs without interleaving any
other command: that is what makes a claim atomic across processes and machines.

Keys (``prefix`` defaults to ``ripp:``): ``<prefix>lease:<instance>`` holds an owner lease
(a string with a millisecond TTL); ``<prefix>call:<call-id>`` a hash with the record's
fields; ``<prefix>owned:<instance>`` the set of call ids an instance owns. The scripts
build lease and set keys from their arguments, so the store needs one Redis node (or a
prefix with a hash tag, ``{ripp}:``, putting every key in one Cluster slot).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import coredis

from ripp_core import CallState, Claim, ClaimOutcome, ResumePoint, StoredCall

# A claim, ripp_core.decide_claim in Lua: unknown / another principal -> 'unknown';
# claimant without a lease -> 'not-leased'; ours already -> 'claimed' + record; owner
# leased -> 'owner-alive'; else take it (new epoch, move between the owner sets).
_CLAIM = """
local r = redis.call('HMGET', KEYS[1], 'owner', 'principal')
if not r[1] or r[2] ~= ARGV[2] then return {'unknown'} end
if redis.call('EXISTS', ARGV[3] .. ARGV[1]) == 0 then return {'not-leased'} end
if r[1] ~= ARGV[1] then
  if redis.call('EXISTS', ARGV[3] .. r[1]) == 1 then return {'owner-alive'} end
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
  redis.call('SREM', ARGV[4] .. r[1], ARGV[5])
  redis.call('SADD', ARGV[4] .. ARGV[1], ARGV[5])
end
return {'claimed', redis.call('HGETALL', KEYS[1])}
"""

# A fenced write: only the owner at its epoch changes the record.
_UPDATE = """
local r = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then return 0 end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
return 1
"""

_FORGET = """
local r = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[3])
return 1
"""

# The first record of a call id stays (ids are random; a clash must not steal a call).
_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(call_id: str, flat: list[Any] | dict[Any, Any]) -> StoredCall:
    """A record from HGETALL's reply (a flat list from a script, a dict from the client)."""
    if isinstance(flat, dict):
        fields = {_text(k): v for k, v in flat.items()}
    else:
        fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
    next_hop = fields.get("next_hop", b"")
    return StoredCall(
        call_id=call_id,
        uri=_text(fields["uri"]),
        owner=_text(fields["owner"]),
        principal=_text(fields["principal"]),
        state=CallState(_text(fields["state"])),
        epoch=int(_text(fields["epoch"])),
        resume=ResumePoint.from_json(_text(fields["resume"])),
        next_hop=next_hop if isinstance(next_hop, bytes) else str(next_hop).encode(),
    )


class RedisCallStore:
    """A :class:`ripp_core.CallStore` on one Redis server (Debian's ``redis-server`` 7).

    Use as ``async with RedisCallStore(host=..., port=...) as store:``; keyword arguments
    go to :class:`coredis.Redis` (``unix_socket_path``, ``password``, timeouts...).
    """

    def __init__(self, *, prefix: str = "ripp:", **redis_options: Any) -> None:
        self.prefix = prefix
        self._redis: coredis.Redis[bytes] = coredis.Redis(decode_responses=False, **redis_options)
        self._claim = self._redis.register_script(_CLAIM)
        self._update = self._redis.register_script(_UPDATE)
        self._forget = self._redis.register_script(_FORGET)
        self._register = self._redis.register_script(_REGISTER)

    async def __aenter__(self) -> RedisCallStore:
        await self._redis.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._redis.__aexit__(exc_type, exc, tb)

    def _call_key(self, call_id: str) -> str:
        return f"{self.prefix}call:{call_id}"

    def _owned_key(self, owner: str) -> str:
        return f"{self.prefix}owned:{owner}"

    async def renew(self, instance: str, ttl: float, address: str = "") -> None:
        """See :meth:`ripp_core.CallStore.renew` (a ``SET`` with a millisecond TTL; the
        value is the address)."""
        await self._redis.set(
            f"{self.prefix}lease:{instance}", address.encode(), px=max(1, int(ttl * 1000))
        )

    async def live_instances(self) -> dict[str, str]:
        """See :meth:`ripp_core.CallStore.live_instances` (SCAN over the lease keys)."""
        prefix = f"{self.prefix}lease:"
        keys = [_text(k) async for k in self._redis.scan_iter(match=f"{prefix}*")]
        if not keys:
            return {}
        values = await self._redis.mget(keys)
        return {
            key[len(prefix) :]: _text(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def put_handoff(self, call_id: str, data: bytes, ttl: float) -> None:
        """See :meth:`ripp_core.CallStore.put_handoff`."""
        await self._redis.set(f"{self.prefix}handoff:{call_id}", data, px=max(1, int(ttl * 1000)))

    async def take_handoff(self, call_id: str) -> bytes | None:
        """See :meth:`ripp_core.CallStore.take_handoff` (``GETDEL``, Redis 6.2+)."""
        value = await self._redis.getdel(f"{self.prefix}handoff:{call_id}")
        return None if value is None else bytes(value)

    async def release(self, instance: str) -> None:
        """See :meth:`ripp_core.CallStore.release`."""
        await self._redis.delete([f"{self.prefix}lease:{instance}"])

    async def leased(self, instance: str) -> bool:
        """Whether ``instance`` holds a live lease now."""
        return bool(await self._redis.exists([f"{self.prefix}lease:{instance}"]))

    async def register(self, call: StoredCall) -> None:
        """See :meth:`ripp_core.CallStore.register`."""
        fields: list[str | bytes] = [
            "uri", call.uri, "owner", call.owner, "principal", call.principal,
            "state", call.state.value, "epoch", str(call.epoch),
            "resume", call.resume.to_json(), "next_hop", call.next_hop,
        ]  # fmt: skip
        await self._register(
            keys=[self._call_key(call.call_id), self._owned_key(call.owner)],
            args=[call.call_id, *fields],
        )

    async def update(
        self,
        call_id: str,
        owner: str,
        epoch: int,
        *,
        state: CallState | None = None,
        resume: ResumePoint | None = None,
        next_hop: bytes | None = None,
    ) -> bool:
        """See :meth:`ripp_core.CallStore.update`."""
        fields: list[str | bytes] = []
        if state is not None:
            fields += ["state", state.value]
        if resume is not None:
            fields += ["resume", resume.to_json()]
        if next_hop is not None:
            fields += ["next_hop", next_hop]
        done: Any = await self._update(
            keys=[self._call_key(call_id)], args=[owner, str(epoch), *fields]
        )
        return bool(done)

    async def forget(self, call_id: str, owner: str, epoch: int) -> bool:
        """See :meth:`ripp_core.CallStore.forget`."""
        done: Any = await self._forget(
            keys=[self._call_key(call_id), self._owned_key(owner)],
            args=[owner, str(epoch), call_id],
        )
        return bool(done)

    async def get(self, call_id: str) -> StoredCall | None:
        """See :meth:`ripp_core.CallStore.get`."""
        fields = await self._redis.hgetall(self._call_key(call_id))
        return _record(call_id, dict(fields)) if fields else None

    async def claim(self, call_id: str, claimant: str, principal: str) -> Claim:
        """See :meth:`ripp_core.CallStore.claim`: one Lua script, so atomic."""
        reply: Any = await self._claim(
            keys=[self._call_key(call_id)],
            args=[claimant, principal, f"{self.prefix}lease:", f"{self.prefix}owned:", call_id],
        )
        assert isinstance(reply, list)
        outcome = ClaimOutcome(_text(reply[0]))
        if outcome is ClaimOutcome.CLAIMED:
            return Claim(outcome, _record(call_id, reply[1]))
        return Claim(outcome)

    async def calls_of(self, owner: str) -> list[StoredCall]:
        """See :meth:`ripp_core.CallStore.calls_of`."""
        records = []
        for member in await self._redis.smembers(self._owned_key(owner)):
            record = await self.get(_text(member))
            if record is not None and record.owner == owner:
                records.append(record)
        return records
