"""RFC 3261 §17 transaction tables and timers, in virtual time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_sip import (
    TRANSITIONS,
    SipConfig,
    Transaction,
    TransactionStateError,
    TxAction,
    TxInput,
    TxKind,
    TxState,
)

CONFIG = SipConfig()  # T1 0.5 s, T2 4 s, T4 5 s


def fire_all(tx: Transaction, until: float) -> list[tuple[float, TxInput, tuple[TxAction, ...]]]:
    """Fire the transaction's timers in order until ``until`` (or it terminates)."""
    log = []
    while not tx.terminated:
        deadline = tx.next_deadline()
        if deadline is None or deadline > until:
            break
        for timer in tx.due(deadline):
            log.append((deadline, timer, tx.handle(timer, deadline)))
            if tx.terminated:
                break
    return log


def test_timer_a_doubles_without_cap_and_timer_b_ends_at_64_t1() -> None:
    tx = Transaction(TxKind.INVITE_CLIENT, CONFIG, reliable=False)
    tx.start(0.0)
    log = fire_all(tx, 100.0)
    resends = [at for at, timer, _ in log if timer is TxInput.TIMER_A]
    assert resends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert log[-1][:2] == (32.0, TxInput.TIMER_B)
    assert log[-1][2] == (TxAction.TIMEOUT,)
    assert tx.state is TxState.TERMINATED


def test_timer_e_caps_at_t2_and_runs_at_t2_when_proceeding() -> None:
    tx = Transaction(TxKind.NON_INVITE_CLIENT, CONFIG, reliable=False)
    tx.start(0.0)
    log = fire_all(tx, 8.0)
    assert [at for at, t, _ in log if t is TxInput.TIMER_E] == [0.5, 1.5, 3.5, 7.5]
    tx.handle(TxInput.PROVISIONAL, 8.0)
    log = fire_all(tx, 20.0)
    # E was set at 7.5 + 4 = 11.5 before the 1xx; then every T2.
    assert [at for at, t, _ in log if t is TxInput.TIMER_E] == [11.5, 15.5, 19.5]
    log = fire_all(tx, 40.0)
    assert log[-1][1] is TxInput.TIMER_F and log[-1][0] == 32.0


def test_reliable_transport_has_no_retransmissions_and_zero_wait_timers() -> None:
    tx = Transaction(TxKind.INVITE_CLIENT, CONFIG, reliable=True)
    tx.start(0.0)
    assert set(tx.deadlines) == {TxInput.TIMER_B}
    tx.handle(TxInput.FAILURE, 1.0)
    assert tx.deadlines == {TxInput.TIMER_D: 1.0}
    server = Transaction(TxKind.INVITE_SERVER, CONFIG, reliable=True)
    server.handle(TxInput.FAILURE, 0.0)
    assert TxInput.TIMER_G not in server.deadlines
    ok = Transaction(TxKind.INVITE_SERVER, CONFIG, reliable=True)
    ok.handle(TxInput.SUCCESS, 0.0)
    assert TxInput.TIMER_G in ok.deadlines, "2xx are retransmitted on every transport"


def test_invite_server_failure_completed_confirmed_terminated() -> None:
    tx = Transaction(TxKind.INVITE_SERVER, CONFIG, reliable=False)
    assert tx.handle(TxInput.PROVISIONAL, 0.0) == (TxAction.SEND,)
    assert tx.handle(TxInput.FAILURE, 0.1) == (TxAction.SEND,)
    assert tx.state is TxState.COMPLETED
    assert tx.handle(TxInput.REQUEST, 0.2) == (TxAction.SEND,)
    assert tx.handle(TxInput.ACK, 0.3) == ()
    assert tx.state is TxState.CONFIRMED
    assert set(tx.deadlines) == {TxInput.TIMER_I}
    assert tx.deadlines[TxInput.TIMER_I] == pytest.approx(5.3)
    fire_all(tx, 10.0)
    assert tx.terminated


def test_invite_server_without_ack_times_out_on_timer_h() -> None:
    tx = Transaction(TxKind.INVITE_SERVER, CONFIG, reliable=False)
    tx.handle(TxInput.FAILURE, 0.0)
    log = fire_all(tx, 100.0)
    assert [at for at, t, _ in log if t is TxInput.TIMER_G] == [0.5, 1.5, 3.5, 7.5, 11.5,
                                                                15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1][1:] == (TxInput.TIMER_H, (TxAction.TIMEOUT,))


def test_inputs_outside_the_table_raise() -> None:
    tx = Transaction(TxKind.NON_INVITE_SERVER, CONFIG, reliable=False)
    tx.handle(TxInput.SUCCESS, 0.0)
    with pytest.raises(TransactionStateError):
        tx.handle(TxInput.FAILURE, 0.1)  # a second final from our own TU
    with pytest.raises(TransactionStateError):
        Transaction(TxKind.INVITE_CLIENT, CONFIG, reliable=False).handle(TxInput.ACK, 0.0)


def test_every_kind_can_reach_terminated_in_its_table() -> None:
    for kind in TxKind:
        states = {s for (k, s, _), (_, new) in TRANSITIONS.items() if k is kind}
        targets = {new for (k, _, _), (_, new) in TRANSITIONS.items() if k is kind}
        assert TxState.TERMINATED in targets
        assert TxState.TERMINATED not in states, "nothing leaves Terminated"


_INPUTS = st.sampled_from([i for i in TxInput if not i.name.startswith("TIMER_")])


@given(kind=st.sampled_from(list(TxKind)), reliable=st.booleans(),
       steps=st.lists(st.tuples(_INPUTS, st.floats(0.0, 5.0)), max_size=30))
def test_random_walks_follow_the_table_and_timers_stay_consistent(
        kind: TxKind, reliable: bool, steps: list[tuple[TxInput, float]]) -> None:
    tx = Transaction(kind, CONFIG, reliable)
    tx.start(0.0)
    now = 0.0
    for event, gap in steps:
        fire_all(tx, now + gap)
        now += gap
        if tx.terminated:
            break
        row = TRANSITIONS.get((kind, tx.state, event))
        if row is None:
            with pytest.raises(TransactionStateError):
                tx.handle(event, now)
            continue
        before = tx.state
        actions = tx.handle(event, now)
        assert actions == tuple(a for a in row[0] if a.name in {"SEND", "SEND_ACK", "TO_TU",
                                                                   "TIMEOUT"})
        assert tx.state is row[1], (before, event)
        # Only timers that the current state reacts to may be pending.
        allowed = {t for (k, s, t) in TRANSITIONS if k is kind and s is tx.state}
        assert set(tx.deadlines) <= allowed
        assert all(at >= now for at in tx.deadlines.values())
    # Every machine ends: with only timers left, it terminates within 64*T1 + T4 + 32 s
    # (or it is an INVITE client in Proceeding, which waits for its TU by design).
    fire_all(tx, now + 100.0)
    assert tx.terminated or (kind is TxKind.INVITE_CLIENT and tx.state is TxState.PROCEEDING) \
        or (tx.state in (TxState.PROCEEDING, TxState.TRYING) and kind in (
            TxKind.INVITE_SERVER, TxKind.NON_INVITE_SERVER))
