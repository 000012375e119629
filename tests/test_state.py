"""The call state machine: the transition table, every refused combination, and random
message sequences on both sides of a call."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._errors import LocalStateError, RemoteStateError, StateError
from ripp_core._messages import MessageType
from ripp_core._state import MEDIA_STATES, TRANSITIONS, CallState, CallStateMachine, Role

S, C = Role.SERVER, Role.CLIENT
CREATED, PENDING, RINGING, CONNECTED, TERMINATED = (
    CallState.CREATED,
    CallState.PENDING,
    CallState.RINGING,
    CallState.CONNECTED,
    CallState.TERMINATED,
)
LIVE = (CREATED, PENDING, RINGING, CONNECTED)

# docs/protocol.md section 8.2, written out row by row (not generated from the code).
DOC_TABLE: dict[tuple[CallState, MessageType, Role], CallState] = {
    (CREATED, MessageType.PENDING, S): PENDING,
    (PENDING, MessageType.RINGING, S): RINGING,
    (PENDING, MessageType.ANSWER, S): CONNECTED,
    (RINGING, MessageType.ANSWER, S): CONNECTED,
    (CREATED, MessageType.TERMINATE, S): TERMINATED,
    (CREATED, MessageType.TERMINATE, C): TERMINATED,
    (PENDING, MessageType.TERMINATE, S): TERMINATED,
    (PENDING, MessageType.TERMINATE, C): TERMINATED,
    (RINGING, MessageType.TERMINATE, S): TERMINATED,
    (RINGING, MessageType.TERMINATE, C): TERMINATED,
    (CONNECTED, MessageType.TERMINATE, S): TERMINATED,
    (CONNECTED, MessageType.TERMINATE, C): TERMINATED,
    (PENDING, MessageType.MOVE, S): PENDING,
    (PENDING, MessageType.MOVE, C): PENDING,
    (RINGING, MessageType.MOVE, S): RINGING,
    (RINGING, MessageType.MOVE, C): RINGING,
    (CONNECTED, MessageType.MOVE, S): CONNECTED,
    (CONNECTED, MessageType.MOVE, C): CONNECTED,
    (PENDING, MessageType.STREAMS, S): PENDING,
    (RINGING, MessageType.STREAMS, S): RINGING,
    (CONNECTED, MessageType.STREAMS, S): CONNECTED,
    (CREATED, MessageType.KEEPALIVE, S): CREATED,
    (CREATED, MessageType.KEEPALIVE, C): CREATED,
    (PENDING, MessageType.KEEPALIVE, S): PENDING,
    (PENDING, MessageType.KEEPALIVE, C): PENDING,
    (RINGING, MessageType.KEEPALIVE, S): RINGING,
    (RINGING, MessageType.KEEPALIVE, C): RINGING,
    (CONNECTED, MessageType.KEEPALIVE, S): CONNECTED,
    (CONNECTED, MessageType.KEEPALIVE, C): CONNECTED,
}

ALL_TRIPLES = list(itertools.product(CallState, MessageType, Role))


def test_table_matches_protocol_document() -> None:
    assert TRANSITIONS == DOC_TABLE


def test_terminated_has_no_exits() -> None:
    assert not [key for key in TRANSITIONS if key[0] is TERMINATED]


def test_role_peer() -> None:
    assert C.peer is S
    assert S.peer is C


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("state", "message", "sender"), ALL_TRIPLES)
def test_every_combination(
    role: Role, state: CallState, message: MessageType, sender: Role
) -> None:
    machine = CallStateMachine(role, state)
    expected = TRANSITIONS.get((state, message, sender))
    we_send = sender is role
    if expected is not None:
        if we_send:
            assert machine.check_send(message) is expected
            assert machine.state is state  # check_send does not apply
            assert machine.send(message) is expected
        else:
            assert machine.check_receive(message) is expected
            assert machine.state is state
            assert machine.receive(message) is expected
        assert machine.state is expected
        assert machine.history == ([state] if expected is state else [state, expected])
        return
    # Not in the table: refused, with the error naming the side at fault.
    if we_send:
        for attempt in (machine.check_send, machine.send):
            with pytest.raises(LocalStateError) as local:
                attempt(message)
            assert not isinstance(local.value, RemoteStateError)
            error: StateError = local.value
    else:
        for attempt in (machine.check_receive, machine.receive):
            with pytest.raises(RemoteStateError) as remote:
                attempt(message)
            assert not isinstance(remote.value, LocalStateError)
            error = remote.value
    assert error.http_status == 409 and error.sip_code == 409
    assert machine.state is state
    assert machine.history == [state]


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("terminator", list(Role))
@pytest.mark.parametrize("role", list(Role))
def test_terminate_from_every_live_state_either_side(
    state: CallState, terminator: Role, role: Role
) -> None:
    machine = CallStateMachine(role, state)
    apply = machine.send if terminator is role else machine.receive
    assert apply(MessageType.TERMINATE) is TERMINATED
    assert machine.state is TERMINATED
    assert not machine.media_allowed


@pytest.mark.parametrize("state", list(CallState))
def test_media_allowed_only_in_pending_ringing_connected(state: CallState) -> None:
    expected = state in (PENDING, RINGING, CONNECTED)
    assert CallStateMachine(C, state).media_allowed is expected
    assert CallStateMachine(S, state).media_allowed is expected
    assert (state in MEDIA_STATES) is expected


def test_typical_call_both_sides() -> None:
    client, server = CallStateMachine(C), CallStateMachine(S)
    assert client.state is server.state is CREATED
    for message in (
        MessageType.PENDING,
        MessageType.STREAMS,
        MessageType.RINGING,
        MessageType.MOVE,
        MessageType.ANSWER,
        MessageType.KEEPALIVE,
    ):
        server.send(message)
        client.receive(message)
        assert client.state is server.state
    client.send(MessageType.TERMINATE)
    server.receive(MessageType.TERMINATE)
    expected = [CREATED, PENDING, RINGING, CONNECTED, TERMINATED]
    assert client.history == server.history == expected


@pytest.mark.parametrize(
    ("state", "message", "sender"),
    [
        (RINGING, MessageType.RINGING, S),  # ringing twice
        (CREATED, MessageType.ANSWER, S),  # answer in created
        (PENDING, MessageType.PENDING, S),  # pending after re-attachment
        (CONNECTED, MessageType.STREAMS, C),  # streams from the client
        (PENDING, MessageType.RINGING, C),  # ringing from the client
        (CREATED, MessageType.MOVE, S),  # move in created
        (CREATED, MessageType.MOVE, C),
        (CONNECTED, MessageType.ANSWER, S),
        (CREATED, MessageType.PENDING, C),
    ],
)
def test_documented_protocol_errors(state: CallState, message: MessageType, sender: Role) -> None:
    # docs/protocol.md section 8.3 examples: refused by the sender and by the receiver.
    sender_machine = CallStateMachine(sender, state)
    with pytest.raises(LocalStateError):
        sender_machine.send(message)
    receiver_machine = CallStateMachine(sender.peer, state)
    with pytest.raises(RemoteStateError):
        receiver_machine.receive(message)
    assert sender_machine.state is receiver_machine.state is state


@pytest.mark.parametrize("state", list(CallState))
def test_force_terminated(state: CallState) -> None:
    machine = CallStateMachine(C, state)
    assert machine.force_terminated() is TERMINATED
    assert machine.state is TERMINATED
    assert machine.history == ([TERMINATED] if state is TERMINATED else [state, TERMINATED])
    # Idempotent.
    machine.force_terminated()
    assert machine.history.count(TERMINATED) == 1


def test_state_errors_are_state_errors() -> None:
    assert issubclass(LocalStateError, StateError)
    assert issubclass(RemoteStateError, StateError)


# --- random sequences ------------------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(list(MessageType)), st.sampled_from(["send", "receive", "check", "force"])
    ),
    max_size=25,
)


def legal_step(before: CallState, after: CallState) -> bool:
    return any(key[0] is before and value is after for key, value in TRANSITIONS.items()) or (
        after is TERMINATED and before is not TERMINATED
    )


@settings(max_examples=300)
@given(st.sampled_from(list(Role)), operations)
def test_random_sequences_keep_invariants(role: Role, ops: list[tuple[MessageType, str]]) -> None:
    machine = CallStateMachine(role)
    for message, how in ops:
        before_state, before_history = machine.state, list(machine.history)
        if how == "force":
            machine.force_terminated()
            assert machine.state is TERMINATED
            continue
        sender = machine.role if how in ("send", "check") else machine.role.peer
        expected = TRANSITIONS.get((before_state, message, sender))
        method = {
            "send": machine.send,
            "receive": machine.receive,
            "check": machine.check_send,
        }[how]
        if before_state is TERMINATED:
            assert expected is None  # TERMINATED is absorbing
        if expected is None:
            error = LocalStateError if sender is machine.role else RemoteStateError
            with pytest.raises(error):
                method(message)
            assert machine.state is before_state
            assert machine.history == before_history
        else:
            assert method(message) is expected
            if how == "check":
                assert machine.state is before_state
                assert machine.history == before_history
            else:
                assert machine.state is expected
        assert isinstance(machine.state, CallState)
        assert machine.history[-1] is machine.state
    # History only records changes, each a legal step (a tabled transition or a forced end).
    assert machine.history[0] is CREATED
    for before, after in itertools.pairwise(machine.history):
        assert before is not after
        assert legal_step(before, after)
    if TERMINATED in machine.history:
        assert machine.history.index(TERMINATED) == len(machine.history) - 1


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(MessageType)), st.sampled_from(list(Role))), max_size=25
    )
)
def test_client_and_server_agree(ops: list[tuple[MessageType, Role]]) -> None:
    """A message the sender may send is exactly one its peer accepts: the two machines stay
    in step for any sequence of attempted messages."""
    machines = {C: CallStateMachine(C), S: CallStateMachine(S)}
    for message, sender in ops:
        sender_machine, receiver_machine = machines[sender], machines[sender.peer]
        try:
            sender_machine.send(message)
        except LocalStateError:
            with pytest.raises(RemoteStateError):
                receiver_machine.receive(message)
        else:
            receiver_machine.receive(message)
        assert machines[C].state is machines[S].state
    assert machines[C].history == machines[S].history


@settings(max_examples=100)
@given(st.sampled_from(list(Role)), st.lists(st.sampled_from(list(MessageType)), max_size=10))
def test_terminated_is_absorbing(role: Role, messages: list[MessageType]) -> None:
    machine = CallStateMachine(role, CREATED)
    machine.send(MessageType.TERMINATE)
    for message in messages:
        with pytest.raises(LocalStateError):
            machine.send(message)
        with pytest.raises(RemoteStateError):
            machine.receive(message)
        assert machine.state is TERMINATED
    assert machine.history == [CREATED, TERMINATED]
