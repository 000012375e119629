"""The call state machine (R3, R4) as a table.

A reader checks the protocol by reading :data:`TRANSITIONS`: every legal
``(state, message type, sender role)`` maps to the next state. Anything not in the table is
a protocol error: :class:`LocalStateError` when we try to send it, and
:class:`RemoteStateError` when the peer sent it. A refused message never changes state.
"""

from __future__ import annotations

import enum

from ._errors import LocalStateError, RemoteStateError
from ._messages import MessageType


class CallState(enum.Enum):
    """States of a call, shared by client and server (R3)."""

    CREATED = "created"
    PENDING = "pending"
    RINGING = "ringing"
    CONNECTED = "connected"
    TERMINATED = "terminated"


class Role(enum.Enum):
    """Which side of the call: the client places calls, the server is authoritative."""

    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        """The other role."""
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


_S, _C = Role.SERVER, Role.CLIENT
_CREATED, _PENDING, _RINGING, _CONNECTED, _TERMINATED = CallState

#: (state, message, sender) -> next state. Everything else is a protocol error.
TRANSITIONS: dict[tuple[CallState, MessageType, Role], CallState] = {
    # progress is driven by the server
    (_CREATED, MessageType.PENDING, _S): _PENDING,
    (_PENDING, MessageType.RINGING, _S): _RINGING,
    (_PENDING, MessageType.ANSWER, _S): _CONNECTED,
    (_RINGING, MessageType.ANSWER, _S): _CONNECTED,
    # either side may end the call from any live state (reject, cancel, hang up)
    **{
        (state, MessageType.TERMINATE, role): _TERMINATED
        for state in (_CREATED, _PENDING, _RINGING, _CONNECTED)
        for role in Role
    },
    # mid-call operations that keep the state (R4, R9, R6)
    **{
        (state, MessageType.MOVE, role): state
        for state in (_PENDING, _RINGING, _CONNECTED)
        for role in Role
    },
    **{
        (state, MessageType.KEEPALIVE, role): state
        for state in (_CREATED, _PENDING, _RINGING, _CONNECTED)
        for role in Role
    },
    **{(state, MessageType.STREAMS, _S): state for state in (_PENDING, _RINGING, _CONNECTED)},
}

#: States in which media may flow (R20: early media from PENDING on).
MEDIA_STATES = frozenset({_PENDING, _RINGING, _CONNECTED})


class CallStateMachine:
    """Tracks one call's state from the point of view of ``role``."""

    def __init__(self, role: Role, state: CallState = CallState.CREATED) -> None:
        self.role = role
        self.state = state
        self.history: list[CallState] = [state]

    def _next(self, message: MessageType, sender: Role) -> CallState:
        try:
            return TRANSITIONS[(self.state, message, sender)]
        except KeyError:
            error = LocalStateError if sender is self.role else RemoteStateError
            raise error(
                f"{message.value!r} from the {sender.value} is not allowed in state "
                f"{self.state.value!r}"
            ) from None

    def check_send(self, message: MessageType) -> CallState:
        """Return the state sending ``message`` would lead to, or raise LocalStateError."""
        return self._next(message, self.role)

    def check_receive(self, message: MessageType) -> CallState:
        """Return the state a message from the peer would lead to, or raise RemoteStateError."""
        return self._next(message, self.role.peer)

    def send(self, message: MessageType) -> CallState:
        """Apply a message we send."""
        return self._apply(self._next(message, self.role))

    def receive(self, message: MessageType) -> CallState:
        """Apply a message the peer sent, or raise RemoteStateError."""
        return self._apply(self._next(message, self.role.peer))

    def force_terminated(self) -> CallState:
        """Enter TERMINATED without a message (failure, timeout, connection loss)."""
        return self._apply(CallState.TERMINATED)

    def _apply(self, state: CallState) -> CallState:
        if state is not self.state:
            self.state = state
            self.history.append(state)
        return state

    @property
    def media_allowed(self) -> bool:
        """True when media may flow in this state."""
        return self.state in MEDIA_STATES
