"""Signaling messages: the JSON objects carried in SIGNAL frames.

Each message is a UTF-8 JSON object with a ``"type"`` member naming the message. Members
not listed here are ignored on receipt (so the protocol can grow); a missing or ill-typed
required member is a :class:`MessageError`.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs

from ._errors import MessageError


class MessageType(enum.Enum):
    """Names of the signaling messages, as they appear in ``"type"``."""

    PENDING = "pending"
    RINGING = "ringing"
    ANSWER = "answer"
    TERMINATE = "terminate"
    MOVE = "move"
    STREAMS = "streams"
    KEEPALIVE = "keepalive"


@attrs.frozen
class Pending:
    """Server to client: the call is accepted for processing; media may flow (R20)."""

    type = MessageType.PENDING


@attrs.frozen
class Ringing:
    """Server to client: the called party is being alerted."""

    type = MessageType.RINGING


@attrs.frozen
class Answer:
    """Server to client: the called party answered; the call is connected."""

    type = MessageType.ANSWER


def _check_code(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 200 <= value <= 699:
        raise MessageError(f"terminate code {value} is not a SIP final status (200-699)")


@attrs.frozen
class Terminate:
    """Either side: the call is over. ``code``/``reason`` follow SIP status codes.

    200 is a normal hangup, 486 busy, 487 cancelled, 603 declined, 408 timeout.
    """

    code: int = attrs.field(validator=_check_code)
    reason: str = ""
    type = MessageType.TERMINATE


@attrs.frozen
class Move:
    """Either side: move the call (R9).

    From the server, ``uri`` is the call URI to attach to next. From the client, ``uri``
    is ``None``: the client will re-attach to the same call URI from another place.
    """

    uri: str | None = None
    type = MessageType.MOVE


@attrs.frozen
class Streams:
    """Server to client: the server wants at least ``count`` media streams (R6).

    Only the client opens requests, so the server asks for streams it needs for its own
    sending direction. Advisory: the client clamps it to its configured bounds.
    """

    count: int = attrs.field()
    type = MessageType.STREAMS

    @count.validator
    def _check_count(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise MessageError("streams count must be >= 1")


@attrs.frozen
class Keepalive:
    """Either side: nothing else to send for ``keepalive_interval``, but still here.

    It lets the peer's inactivity timer (R10) tell a paused application from a dead one.
    """

    type = MessageType.KEEPALIVE


Message = Pending | Ringing | Answer | Terminate | Move | Streams | Keepalive


def encode_message(message: Message) -> bytes:
    """Encode a message as compact UTF-8 JSON."""
    body: dict[str, Any] = {"type": message.type.value}
    if isinstance(message, Terminate):
        body["code"] = message.code
        body["reason"] = message.reason
    elif isinstance(message, Move):
        if message.uri is not None:
            body["uri"] = message.uri
    elif isinstance(message, Streams):
        body["count"] = message.count
    # A reason text may carry a lone surrogate (it can come from a peer's JSON escape);
    # it must not make the reply unencodable.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", errors="replace"
    )


def _member(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    if name not in body:
        if required:
            raise MessageError(f"signaling message lacks member {name!r}")
        return None
    value = body[name]
    # bool is an int in Python; a JSON true must not pass as a status code.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MessageError(f"member {name!r} must be {kind.__name__}")
    return value


def decode_message(payload: bytes) -> Message:
    """Decode a SIGNAL frame payload, raising :class:`MessageError` if it is not valid."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MessageError(f"signaling message is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MessageError("signaling message is not a JSON object")
    name = _member(body, "type", str)
    try:
        kind = MessageType(name)
    except ValueError:
        raise MessageError(f"unknown signaling message type {name!r}") from None
    if kind is MessageType.PENDING:
        return Pending()
    if kind is MessageType.RINGING:
        return Ringing()
    if kind is MessageType.ANSWER:
        return Answer()
    if kind is MessageType.KEEPALIVE:
        return Keepalive()
    if kind is MessageType.TERMINATE:
        reason = _member(body, "reason", str, required=False) or ""
        return Terminate(code=_member(body, "code", int), reason=reason)
    if kind is MessageType.MOVE:
        return Move(uri=_member(body, "uri", str, required=False))
    count = _member(body, "count", int)
    if count < 1:
        raise MessageError("streams count must be >= 1")
    return Streams(count=count)
