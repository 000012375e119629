"""Shared call state: many server instances as one service (R10, R17; protocol section 24).

A *call store* maps each call id to the instance that owns the call, the principal bound to
it, its state, a resume point for media and opaque next-hop data the application sets (a
gateway's SIP leg, say). Each instance holds an *owner lease* with a TTL and renews it;
when an instance dies its lease lapses and its calls become claimable. A re-establishment
(``Ripp-Reestablish``) of such a call that reaches any other instance makes that instance
*claim* the call: an atomic compare-and-set that exactly one claimant wins.

This module is the sans-IO part: the records, the claim rules as one pure function
(:func:`decide_claim`), the :class:`CallStore` interface every implementation offers, and
:class:`MemoryCallStore`, an in-memory store driven by an injected clock for the
virtual-time test bed. The Redis implementation, which does I/O, lives in
``ripp_cluster``.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import attrs

from ._call import Call, CallHandoff, CallRequest
from ._codecs import DURATION_UNIT
from ._config import RippConfig
from ._frames import (
    SEQUENCE_MODULUS,
    TIMESTAMP_MODULUS,
    FrameDecoder,
    FrameType,
    MediaFrame,
    encode_media,
)
from ._headers import parse_name_addr
from ._receiver import ReceiverWindow
from ._sender import SenderState
from ._state import CallState


@attrs.frozen
class ResumePoint:
    """What an instance needs to carry on a call's media after its owner died.

    The owner writes one every ``store_snapshot_interval``; the new owner starts its
    sender at ``next_sequence + sequence_margin`` (frames the dead owner sent after the
    snapshot must not be re-used: the client would drop them as duplicates) and knows
    the client's frames up to ``received_highest`` were delivered before.
    """

    next_sequence: int = 0
    next_timestamp: int = 0
    received_highest: int | None = None

    def to_json(self) -> str:
        """The compact JSON form kept in a store."""
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ResumePoint:
        """Parse :meth:`to_json`; a malformed value is a ``ValueError``."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a resume point is a JSON object")
        highest = data.get("received_highest")
        sequence, timestamp = data.get("next_sequence"), data.get("next_timestamp")
        if not isinstance(sequence, int) or not isinstance(timestamp, int):
            raise ValueError("resume point without integer next_sequence/next_timestamp")
        if highest is not None and not isinstance(highest, int):
            raise ValueError("received_highest must be an integer or null")
        return cls(next_sequence=sequence, next_timestamp=timestamp, received_highest=highest)


@attrs.frozen
class StoredCall:
    """One call as the store knows it."""

    call_id: str
    """The random part of the call URI (128 bits, protocol 3.3): unique across instances."""
    uri: str
    """The call URI its owner gave it (what a re-establishment names)."""
    owner: str
    """Instance id of the owner."""
    principal: str
    """The principal the call is bound to: only it may re-establish the call."""
    state: CallState
    epoch: int = 1
    """Bumped by every claim. Writes carry the writer's epoch and a stale one is refused,
    so an owner that comes back after losing its calls cannot overwrite the new owner."""
    resume: ResumePoint = ResumePoint()
    next_hop: bytes = b""
    """Opaque application data (e.g. how to re-attach a SIP leg); the store never reads it."""


class ClaimOutcome(enum.Enum):
    """What a claim found."""

    CLAIMED = "claimed"
    """The claimant owns the call now (or already did)."""
    OWNER_ALIVE = "owner-alive"
    """Another instance owns the call and its lease has not lapsed."""
    UNKNOWN = "unknown"
    """No such call, or it is bound to another principal (indistinguishable on purpose)."""
    NOT_LEASED = "not-leased"
    """The claimant holds no live lease itself. A claim by an instance without a lease
    could be followed at once by another's (nothing would mark the first winner alive),
    so only leased instances may win: that is what makes the winner unique."""


@attrs.frozen
class Claim:
    """The result of :meth:`CallStore.claim`."""

    outcome: ClaimOutcome
    call: StoredCall | None = None
    """The record as it stands after a CLAIMED outcome (owner = claimant, new epoch)."""


def decide_claim(
    record: StoredCall | None,
    claimant: str,
    principal: str,
    *,
    owner_leased: bool,
    claimant_leased: bool,
) -> Claim:
    """The claim rules (protocol 24.4), as a pure function every store applies atomically.

    ``owner_leased`` says whether the record's owner holds a live lease, and
    ``claimant_leased`` whether the claimant does. Order matters: an unknown call and
    another principal's call answer alike, before any lease is looked at, so a claim
    reveals nothing about calls of other principals.
    """
    if record is None or record.principal != principal:
        return Claim(ClaimOutcome.UNKNOWN)
    if not claimant_leased:
        return Claim(ClaimOutcome.NOT_LEASED)
    if record.owner == claimant:
        return Claim(ClaimOutcome.CLAIMED, record)
    if owner_leased:
        return Claim(ClaimOutcome.OWNER_ALIVE)
    return Claim(ClaimOutcome.CLAIMED, attrs.evolve(record, owner=claimant, epoch=record.epoch + 1))


def claim_target(call_uri: str, instance_id: str, instances_path: str) -> str | None:
    """The call id a re-establishment of ``call_uri`` must claim on ``instance_id``, or
    None when there is nothing to claim (not a call URI, or one of this instance's own)."""
    target = split_call_path(urlsplit(call_uri).path, instances_path)
    if target is None or target[0] == instance_id:
        return None
    return target[1]


def resume_point(call: Call) -> ResumePoint:
    """The resume point of a live call, as its owner writes it to the store."""
    sender = call.sender.export_state()
    return ResumePoint(
        next_sequence=sender.next_sequence,
        next_timestamp=sender.next_timestamp,
        received_highest=call.receiver.export_window().highest,
    )


def resumed_sender(point: ResumePoint, config: RippConfig) -> SenderState:
    """Where a claimed call's sender starts: ``store_sequence_margin`` frames past the
    last resume point (nothing the dead owner may have sent since is re-used), with the
    media timestamp moved on by as many 20 ms frames (48 kHz ticks)."""
    margin = config.store_sequence_margin
    return SenderState(
        next_sequence=(point.next_sequence + margin) % SEQUENCE_MODULUS,
        next_timestamp=(point.next_timestamp + margin * 960) % TIMESTAMP_MODULUS,
        frames=(),
    )


def resumed_window(point: ResumePoint) -> ReceiverWindow:
    """The duplicate-detection state a claimed call starts from: frames up to the last
    resume point's highest were delivered by the dead owner."""
    return ReceiverWindow(point.received_highest, frozenset())


def split_call_path(path: str, instances_path: str) -> tuple[str, str] | None:
    """``<instances_path>/<instance>/calls/<call>`` -> (instance, call id), else None."""
    prefix = instances_path.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if len(parts) != 3 or parts[1] != "calls" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode_handoff(handoff: CallHandoff, next_hop: bytes = b"") -> bytes:
    """A :class:`CallHandoff` (and the call's next-hop data) as bytes for the store, so a
    call can be moved to an instance in another process (draining, protocol 24.6).
    Unacknowledged frames travel in their wire encoding."""
    request = handoff.request
    document = {
        "to": str(request.to),
        "from": str(request.from_),
        "identity": request.identity,
        "headers": [list(pair) for pair in request.headers],
        "principal": request.principal,
        "state": handoff.state.value,
        "next_sequence": handoff.sender.next_sequence,
        "next_timestamp": handoff.sender.next_timestamp,
        "skipped_units": handoff.sender.skipped_units,
        "frames": [_b64(encode_media(frame)) for frame in handoff.sender.frames],
        "highest": handoff.receiver.highest,
        "recent": sorted(handoff.receiver.recent),
        "previous_uri": handoff.previous_uri,
        "next_hop": _b64(next_hop),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def decode_handoff(data: bytes, config: RippConfig) -> tuple[CallHandoff, bytes]:
    """Parse :func:`encode_handoff`; anything malformed raises ``ValueError`` (or a
    :class:`RippError` for a bad frame or header)."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("a handoff is a JSON object")
    decoder = FrameDecoder(
        frozenset({FrameType.MEDIA}), config.max_frame_size, config.max_frame_size + 16
    )
    frames: list[MediaFrame] = []
    for item in doc["frames"]:
        decoded = decoder.feed(base64.b64decode(item, validate=True))
        if len(decoded) != 1 or not isinstance(decoded[0], MediaFrame):
            raise ValueError("a handoff frame is not one MEDIA frame")
        frames.append(decoded[0])
    # Absent in documents written before skips existed: nothing was skipped.
    skipped = int(doc.get("skipped_units", 0))
    if not 0 <= skipped <= int(config.media_skip_max / DURATION_UNIT):
        raise ValueError(f"skipped_units {skipped} out of range")
    request = CallRequest(
        to=parse_name_addr(str(doc["to"])),
        from_=parse_name_addr(str(doc["from"])),
        identity=str(doc["identity"]),
        headers=tuple((str(k), str(v)) for k, v in doc["headers"]),
        principal=None if doc["principal"] is None else str(doc["principal"]),
    )
    handoff = CallHandoff(
        request=request,
        state=CallState(doc["state"]),
        sender=SenderState(
            int(doc["next_sequence"]), int(doc["next_timestamp"]), tuple(frames), skipped
        ),
        receiver=ReceiverWindow(
            None if doc["highest"] is None else int(doc["highest"]),
            frozenset(int(n) for n in doc["recent"]),
        ),
        previous_uri=str(doc["previous_uri"]),
    )
    return handoff, base64.b64decode(doc["next_hop"], validate=True)


class CallStore(Protocol):
    """What a server needs from shared call state. Every method is one atomic step.

    Implementations: :class:`MemoryCallStore` (tests, one process) and
    ``ripp_cluster.RedisCallStore``.
    """

    async def renew(self, instance: str, ttl: float, address: str = "") -> None:
        """Hold (or extend) ``instance``'s owner lease for ``ttl`` seconds from now;
        ``address`` is the authority (host:port) its call URIs use."""

    async def live_instances(self) -> dict[str, str]:
        """Every instance holding a live lease, with the address it renewed it with."""
        ...

    async def put_handoff(self, call_id: str, data: bytes, ttl: float) -> None:
        """Leave an encoded handoff (:func:`encode_handoff`) for the instance that will
        answer ``call_id``; it expires after ``ttl`` seconds if nobody takes it."""

    async def take_handoff(self, call_id: str) -> bytes | None:
        """Take (read and delete, atomically) the handoff left for ``call_id``."""
        ...

    async def release(self, instance: str) -> None:
        """Drop ``instance``'s lease at once (a clean shutdown: its calls are claimable)."""

    async def register(self, call: StoredCall) -> None:
        """Record a call its owner has just created (overwrites nothing of another owner:
        call ids are random, so a clash is a bug, and the first record stays)."""

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
        """Change fields of a call ``owner`` holds at ``epoch``; False (nothing written)
        when the call is gone or someone else holds it now (fencing)."""
        ...

    async def forget(self, call_id: str, owner: str, epoch: int) -> bool:
        """Delete an ended call, fenced like :meth:`update`."""
        ...

    async def get(self, call_id: str) -> StoredCall | None:
        """The record of ``call_id``, if any."""
        ...

    async def claim(self, call_id: str, claimant: str, principal: str) -> Claim:
        """Apply :func:`decide_claim` atomically: of any number of concurrent claimants of
        one call whose owner's lease has lapsed, exactly one gets CLAIMED."""
        ...

    async def calls_of(self, owner: str) -> list[StoredCall]:
        """Every call ``owner`` holds (for draining and for audits)."""
        ...


class MemoryCallStore:
    """An in-memory :class:`CallStore` for one process and the virtual-time test bed.

    ``clock`` gives the current time (the test bed's virtual clock). No method awaits
    anything, so each runs to completion without interleaving: the atomicity the Redis
    store gets from running its claim as one Lua script.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._calls: dict[str, StoredCall] = {}
        self._leases: dict[str, tuple[float, str]] = {}  # instance -> (expiry, address)
        self._handoffs: dict[str, tuple[float, bytes]] = {}  # call id -> (expiry, data)

    def leased(self, instance: str) -> bool:
        """Whether ``instance`` holds a live lease now."""
        lease = self._leases.get(instance)
        return lease is not None and lease[0] > self._clock()

    async def renew(self, instance: str, ttl: float, address: str = "") -> None:
        """See :meth:`CallStore.renew`."""
        self._leases[instance] = (self._clock() + ttl, address)

    async def live_instances(self) -> dict[str, str]:
        """See :meth:`CallStore.live_instances`."""
        return {name: lease[1] for name, lease in self._leases.items() if self.leased(name)}

    async def put_handoff(self, call_id: str, data: bytes, ttl: float) -> None:
        """See :meth:`CallStore.put_handoff`."""
        self._handoffs[call_id] = (self._clock() + ttl, data)

    async def take_handoff(self, call_id: str) -> bytes | None:
        """See :meth:`CallStore.take_handoff`."""
        entry = self._handoffs.pop(call_id, None)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    async def release(self, instance: str) -> None:
        """See :meth:`CallStore.release`."""
        self._leases.pop(instance, None)

    async def register(self, call: StoredCall) -> None:
        """See :meth:`CallStore.register`."""
        self._calls.setdefault(call.call_id, call)

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
        """See :meth:`CallStore.update`."""
        record = self._calls.get(call_id)
        if record is None or record.owner != owner or record.epoch != epoch:
            return False
        self._calls[call_id] = attrs.evolve(
            record,
            state=record.state if state is None else state,
            resume=record.resume if resume is None else resume,
            next_hop=record.next_hop if next_hop is None else next_hop,
        )
        return True

    async def forget(self, call_id: str, owner: str, epoch: int) -> bool:
        """See :meth:`CallStore.forget`."""
        record = self._calls.get(call_id)
        if record is None or record.owner != owner or record.epoch != epoch:
            return False
        del self._calls[call_id]
        return True

    async def get(self, call_id: str) -> StoredCall | None:
        """See :meth:`CallStore.get`."""
        return self._calls.get(call_id)

    async def claim(self, call_id: str, claimant: str, principal: str) -> Claim:
        """See :meth:`CallStore.claim`."""
        record = self._calls.get(call_id)
        result = decide_claim(
            record,
            claimant,
            principal,
            owner_leased=record is not None and self.leased(record.owner),
            claimant_leased=self.leased(claimant),
        )
        if result.call is not None:
            self._calls[call_id] = result.call
        return result

    async def calls_of(self, owner: str) -> list[StoredCall]:
        """See :meth:`CallStore.calls_of`."""
        return [c for c in self._calls.values() if c.owner == owner]
