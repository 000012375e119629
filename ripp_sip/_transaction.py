"""RFC 3261 §17 transaction machines as tables, with RFC 6026's Accepted states.

Each machine is a table ``(kind, state, input) -> (actions, new state)``; an input that is
not in the table raises :class:`TransactionStateError`, so the table is the whole protocol.
Timers A-M are deadlines the caller polls (:meth:`Transaction.next_deadline` and
:meth:`Transaction.fire`); nothing here reads a clock.

Outward actions tell the endpoint what to do: ``SEND`` (the request, for a client; the
last response, for a server), ``SEND_ACK`` (the ACK of a non-2xx final, §17.1.1.3),
``TO_TU`` (hand the message to the transaction user) and ``TIMEOUT`` (tell the TU the
transaction timed out or the transport failed).
"""

from __future__ import annotations

import enum

import attrs

from ._config import SipConfig
from ._errors import LocalSipError


class TxKind(enum.Enum):
    """The four machines of RFC 3261 §17."""

    INVITE_CLIENT = "invite-client"
    NON_INVITE_CLIENT = "non-invite-client"
    INVITE_SERVER = "invite-server"
    NON_INVITE_SERVER = "non-invite-server"


class TxState(enum.Enum):
    """Transaction states (RFC 3261 Figures 5-8, RFC 6026 Figures 5 and 7)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TxInput(enum.Enum):
    """What can happen to a transaction: a message, a TU request or a timer."""

    PROVISIONAL = "1xx"
    """Client: a 1xx arrived. Server: the TU sends a 1xx."""
    SUCCESS = "2xx"
    """Client: a 2xx arrived. Server: the TU sends a 2xx."""
    FAILURE = "3xx-6xx"
    """Client: a 3xx-6xx arrived. Server: the TU sends one."""
    REQUEST = "request retransmission"
    ACK = "ack"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


class TxAction(enum.Enum):
    """Outward actions (for the endpoint) and timer actions (done by the transaction)."""

    SEND = "send"
    SEND_ACK = "send ack"
    TO_TU = "to tu"
    TIMEOUT = "timeout"
    START_A = "start A"
    START_B = "start B"
    START_D = "start D"
    START_E = "start E"
    START_F = "start F"
    START_G = "start G"
    START_H = "start H"
    START_I = "start I"
    START_J = "start J"
    START_K = "start K"
    START_L = "start L"
    START_M = "start M"
    BACKOFF = "double the retransmit interval (A, E, G)"
    E_AT_T2 = "retransmit at T2 (E while proceeding)"
    STOP_G = "stop G"


OUTWARD = frozenset({TxAction.SEND, TxAction.SEND_ACK, TxAction.TO_TU, TxAction.TIMEOUT})

I, K = TxInput, TxKind  # noqa: E741 - short names keep the table readable
S, A = TxState, TxAction
_Row = tuple[tuple[TxAction, ...], TxState]

#: (kind, state, input) -> (actions, new state). Absorbed inputs map to no actions.
TRANSITIONS: dict[tuple[TxKind, TxState, TxInput], _Row] = {
    # --- INVITE client (RFC 3261 Figure 5, RFC 6026 Figure 5) -------------------------
    (K.INVITE_CLIENT, S.CALLING, I.TIMER_A): ((A.SEND, A.BACKOFF), S.CALLING),
    (K.INVITE_CLIENT, S.CALLING, I.TIMER_B): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_CLIENT, S.CALLING, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_CLIENT, S.CALLING, I.PROVISIONAL): ((A.TO_TU,), S.PROCEEDING),
    (K.INVITE_CLIENT, S.CALLING, I.SUCCESS): ((A.TO_TU, A.START_M), S.ACCEPTED),
    (K.INVITE_CLIENT, S.CALLING, I.FAILURE): ((A.SEND_ACK, A.TO_TU, A.START_D), S.COMPLETED),
    (K.INVITE_CLIENT, S.PROCEEDING, I.PROVISIONAL): ((A.TO_TU,), S.PROCEEDING),
    (K.INVITE_CLIENT, S.PROCEEDING, I.SUCCESS): ((A.TO_TU, A.START_M), S.ACCEPTED),
    (K.INVITE_CLIENT, S.PROCEEDING, I.FAILURE): ((A.SEND_ACK, A.TO_TU, A.START_D), S.COMPLETED),
    (K.INVITE_CLIENT, S.PROCEEDING, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_CLIENT, S.ACCEPTED, I.PROVISIONAL): ((), S.ACCEPTED),
    # 2xx retransmissions (and 2xx from other forks) go to the TU, which re-sends its ACK.
    (K.INVITE_CLIENT, S.ACCEPTED, I.SUCCESS): ((A.TO_TU,), S.ACCEPTED),
    (K.INVITE_CLIENT, S.ACCEPTED, I.FAILURE): ((), S.ACCEPTED),
    (K.INVITE_CLIENT, S.ACCEPTED, I.TIMER_M): ((), S.TERMINATED),
    (K.INVITE_CLIENT, S.COMPLETED, I.PROVISIONAL): ((), S.COMPLETED),
    (K.INVITE_CLIENT, S.COMPLETED, I.SUCCESS): ((), S.COMPLETED),
    (K.INVITE_CLIENT, S.COMPLETED, I.FAILURE): ((A.SEND_ACK,), S.COMPLETED),
    (K.INVITE_CLIENT, S.COMPLETED, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_CLIENT, S.COMPLETED, I.TIMER_D): ((), S.TERMINATED),
    # --- non-INVITE client (Figure 6) ---------------------------------------------------
    (K.NON_INVITE_CLIENT, S.TRYING, I.TIMER_E): ((A.SEND, A.BACKOFF), S.TRYING),
    (K.NON_INVITE_CLIENT, S.TRYING, I.TIMER_F): ((A.TIMEOUT,), S.TERMINATED),
    (K.NON_INVITE_CLIENT, S.TRYING, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.NON_INVITE_CLIENT, S.TRYING, I.PROVISIONAL): ((A.TO_TU,), S.PROCEEDING),
    (K.NON_INVITE_CLIENT, S.TRYING, I.SUCCESS): ((A.TO_TU, A.START_K), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.TRYING, I.FAILURE): ((A.TO_TU, A.START_K), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.PROCEEDING, I.TIMER_E): ((A.SEND, A.E_AT_T2), S.PROCEEDING),
    (K.NON_INVITE_CLIENT, S.PROCEEDING, I.TIMER_F): ((A.TIMEOUT,), S.TERMINATED),
    (K.NON_INVITE_CLIENT, S.PROCEEDING, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.NON_INVITE_CLIENT, S.PROCEEDING, I.PROVISIONAL): ((A.TO_TU,), S.PROCEEDING),
    (K.NON_INVITE_CLIENT, S.PROCEEDING, I.SUCCESS): ((A.TO_TU, A.START_K), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.PROCEEDING, I.FAILURE): ((A.TO_TU, A.START_K), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.COMPLETED, I.PROVISIONAL): ((), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.COMPLETED, I.SUCCESS): ((), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.COMPLETED, I.FAILURE): ((), S.COMPLETED),
    (K.NON_INVITE_CLIENT, S.COMPLETED, I.TIMER_K): ((), S.TERMINATED),
    # --- INVITE server (Figure 7, RFC 6026 Figure 7) ----------------------------------
    (K.INVITE_SERVER, S.PROCEEDING, I.REQUEST): ((A.SEND,), S.PROCEEDING),
    (K.INVITE_SERVER, S.PROCEEDING, I.PROVISIONAL): ((A.SEND,), S.PROCEEDING),
    (K.INVITE_SERVER, S.PROCEEDING, I.SUCCESS): ((A.SEND, A.START_G, A.START_L), S.ACCEPTED),
    (K.INVITE_SERVER, S.PROCEEDING, I.FAILURE): ((A.SEND, A.START_G, A.START_H), S.COMPLETED),
    (K.INVITE_SERVER, S.PROCEEDING, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_SERVER, S.ACCEPTED, I.REQUEST): ((), S.ACCEPTED),
    (K.INVITE_SERVER, S.ACCEPTED, I.SUCCESS): ((A.SEND,), S.ACCEPTED),
    # 2xx retransmission until the ACK (RFC 3261 §13.3.1.4), done here rather than in the TU.
    (K.INVITE_SERVER, S.ACCEPTED, I.TIMER_G): ((A.SEND, A.BACKOFF), S.ACCEPTED),
    (K.INVITE_SERVER, S.ACCEPTED, I.ACK): ((A.TO_TU, A.STOP_G, A.START_I), S.CONFIRMED),
    # No ACK for our 2xx within 64*T1: the TU must end the dialog with BYE (§13.3.1.4).
    (K.INVITE_SERVER, S.ACCEPTED, I.TIMER_L): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_SERVER, S.COMPLETED, I.REQUEST): ((A.SEND,), S.COMPLETED),
    (K.INVITE_SERVER, S.COMPLETED, I.TIMER_G): ((A.SEND, A.BACKOFF), S.COMPLETED),
    (K.INVITE_SERVER, S.COMPLETED, I.TIMER_H): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_SERVER, S.COMPLETED, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.INVITE_SERVER, S.COMPLETED, I.ACK): ((A.STOP_G, A.START_I), S.CONFIRMED),
    (K.INVITE_SERVER, S.CONFIRMED, I.ACK): ((), S.CONFIRMED),
    (K.INVITE_SERVER, S.CONFIRMED, I.REQUEST): ((), S.CONFIRMED),
    (K.INVITE_SERVER, S.CONFIRMED, I.TIMER_I): ((), S.TERMINATED),
    # --- non-INVITE server (Figure 8) ---------------------------------------------------
    (K.NON_INVITE_SERVER, S.TRYING, I.REQUEST): ((), S.TRYING),
    (K.NON_INVITE_SERVER, S.TRYING, I.PROVISIONAL): ((A.SEND,), S.PROCEEDING),
    (K.NON_INVITE_SERVER, S.TRYING, I.SUCCESS): ((A.SEND, A.START_J), S.COMPLETED),
    (K.NON_INVITE_SERVER, S.TRYING, I.FAILURE): ((A.SEND, A.START_J), S.COMPLETED),
    (K.NON_INVITE_SERVER, S.PROCEEDING, I.REQUEST): ((A.SEND,), S.PROCEEDING),
    (K.NON_INVITE_SERVER, S.PROCEEDING, I.PROVISIONAL): ((A.SEND,), S.PROCEEDING),
    (K.NON_INVITE_SERVER, S.PROCEEDING, I.SUCCESS): ((A.SEND, A.START_J), S.COMPLETED),
    (K.NON_INVITE_SERVER, S.PROCEEDING, I.FAILURE): ((A.SEND, A.START_J), S.COMPLETED),
    (K.NON_INVITE_SERVER, S.PROCEEDING, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.NON_INVITE_SERVER, S.COMPLETED, I.REQUEST): ((A.SEND,), S.COMPLETED),
    (K.NON_INVITE_SERVER, S.COMPLETED, I.TRANSPORT_ERROR): ((A.TIMEOUT,), S.TERMINATED),
    (K.NON_INVITE_SERVER, S.COMPLETED, I.TIMER_J): ((), S.TERMINATED),
}

INITIAL_STATE = {
    TxKind.INVITE_CLIENT: TxState.CALLING,
    TxKind.NON_INVITE_CLIENT: TxState.TRYING,
    TxKind.INVITE_SERVER: TxState.PROCEEDING,
    TxKind.NON_INVITE_SERVER: TxState.TRYING,
}

_TIMER_OF = {
    A.START_A: I.TIMER_A, A.START_B: I.TIMER_B, A.START_D: I.TIMER_D, A.START_E: I.TIMER_E,
    A.START_F: I.TIMER_F, A.START_G: I.TIMER_G, A.START_H: I.TIMER_H, A.START_I: I.TIMER_I,
    A.START_J: I.TIMER_J, A.START_K: I.TIMER_K, A.START_L: I.TIMER_L, A.START_M: I.TIMER_M,
}
#: Timers that only retransmit, and so never run over a reliable transport (§17.1.1.2).
_RETRANSMIT_TIMERS = frozenset({I.TIMER_A, I.TIMER_E})
#: Timers that only absorb retransmissions: zero over a reliable transport.
_ABSORB_TIMERS = frozenset({I.TIMER_D, I.TIMER_I, I.TIMER_J, I.TIMER_K})


class TransactionStateError(LocalSipError):
    """An input that the transaction's table does not allow in its current state."""


@attrs.define
class Transaction:
    """One transaction: its table-driven state and its timers as deadlines."""

    kind: TxKind
    config: SipConfig
    reliable: bool
    state: TxState = attrs.field(init=False)
    deadlines: dict[TxInput, float] = attrs.Factory(dict)
    intervals: dict[TxInput, float] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.state = INITIAL_STATE[self.kind]

    def start(self, now: float) -> None:
        """Start the timers a new client transaction runs (A and B, or E and F)."""
        if self.kind is TxKind.INVITE_CLIENT:
            self._start(I.TIMER_A, now)
            self._start(I.TIMER_B, now)
        elif self.kind is TxKind.NON_INVITE_CLIENT:
            self._start(I.TIMER_E, now)
            self._start(I.TIMER_F, now)

    def _duration(self, timer: TxInput) -> float:
        c = self.config
        if self.reliable and timer in _ABSORB_TIMERS:
            return 0.0
        return {
            I.TIMER_A: c.t1, I.TIMER_E: c.t1, I.TIMER_G: c.t1,
            I.TIMER_B: 64 * c.t1, I.TIMER_F: 64 * c.t1, I.TIMER_H: 64 * c.t1,
            I.TIMER_J: 64 * c.t1, I.TIMER_L: 64 * c.t1, I.TIMER_M: 64 * c.t1,
            I.TIMER_D: c.timer_d, I.TIMER_I: c.t4, I.TIMER_K: c.t4,
        }[timer]

    def _start(self, timer: TxInput, now: float, cause: TxInput | None = None) -> None:
        if self.reliable and timer in _RETRANSMIT_TIMERS:
            return
        # Timer G retransmits a non-2xx final only over UDP; a 2xx is retransmitted on
        # every transport, since a UDP hop may lie beyond a TCP one (§13.3.1.4).
        if self.reliable and timer is I.TIMER_G and cause is not I.SUCCESS:
            return
        interval = self._duration(timer)
        self.intervals[timer] = interval
        self.deadlines[timer] = now + interval

    def handle(self, event: TxInput, now: float) -> tuple[TxAction, ...]:
        """Apply ``event``; return the outward actions for the endpoint, in order."""
        row = TRANSITIONS.get((self.kind, self.state, event))
        if row is None:
            raise TransactionStateError(
                f"{self.kind.value} transaction in state {self.state.value} "
                f"does not accept {event.value}"
            )
        actions, new_state = row
        timer = event if event.name.startswith("TIMER_") else None
        if timer is not None:
            self.deadlines.pop(timer, None)
        old_state = self.state
        for action in actions:
            if action in _TIMER_OF:
                self._start(_TIMER_OF[action], now, event)
            elif action is A.BACKOFF and timer is not None:
                interval = self.intervals.get(timer, self.config.t1) * 2
                if timer is not I.TIMER_A:  # A doubles without a cap; E and G stop at T2
                    interval = min(interval, self.config.t2)
                self.intervals[timer] = interval
                self.deadlines[timer] = now + interval
            elif action is A.E_AT_T2:
                self.intervals[I.TIMER_E] = self.config.t2
                self.deadlines[I.TIMER_E] = now + self.config.t2
            elif action is A.STOP_G:
                self.deadlines.pop(I.TIMER_G, None)
        self.state = new_state
        if new_state is not old_state:
            self._drop_stale_timers()
        return tuple(action for action in actions if action in OUTWARD)

    def _drop_stale_timers(self) -> None:
        allowed = {t for (k, s, t) in TRANSITIONS if k is self.kind and s is self.state}
        for timer in list(self.deadlines):
            if timer not in allowed:
                del self.deadlines[timer]

    def next_deadline(self) -> float | None:
        """The earliest pending timer's deadline, or None."""
        return min(self.deadlines.values(), default=None)

    def due(self, now: float) -> list[TxInput]:
        """The timers whose deadline has passed, earliest first."""
        return sorted((t for t, at in self.deadlines.items() if at <= now),
                      key=lambda t: self.deadlines[t])

    @property
    def terminated(self) -> bool:
        """True once the machine reached Terminated."""
        return self.state is TxState.TERMINATED
