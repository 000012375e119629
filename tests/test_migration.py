"""The migration phase table (issue 8): the call's phase moves only as the table says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ripp_core import MigrationPhase, Role
from ripp_core._migration import PHASE_TRANSITIONS, PhaseInput, next_phase

P = MigrationPhase
INITIAL = {Role.CLIENT: P.ATTACHED, Role.SERVER: P.DETACHED}


def test_transitions_seen_in_whole_calls_are_in_the_table() -> None:
    """Every phase change the whole-call, driver and ownership tests make (recorded while
    moving the phase to this table) is a table entry."""
    seen = [
        (Role.SERVER, P.DETACHED, PhaseInput.SIGNALING_ATTACHED, P.ATTACHED),
        (Role.SERVER, P.ATTACHED, PhaseInput.MOVE_SENT, P.MOVED_AWAY),
        (Role.SERVER, P.MOVING, PhaseInput.SIGNALING_ATTACHED, P.ATTACHED),
        (Role.SERVER, P.ATTACHED, PhaseInput.MOVE_RECEIVED, P.MOVING),
        (Role.CLIENT, P.MOVING, PhaseInput.SIGNALING_READY, P.ATTACHED),
        (Role.CLIENT, P.REESTABLISHING, PhaseInput.SIGNALING_READY, P.ATTACHED),
        (Role.CLIENT, P.ATTACHED, PhaseInput.PATH_FAILED, P.REESTABLISHING),
        (Role.CLIENT, P.ATTACHED, PhaseInput.MOVE_RECEIVED, P.MOVING),
        (Role.CLIENT, P.ATTACHED, PhaseInput.IMPORTED, P.MOVING),
        (Role.CLIENT, P.ATTACHED, PhaseInput.MOVE_SENT, P.MOVED_AWAY),
    ]
    for role, before, event, after in seen:
        assert PHASE_TRANSITIONS[(role, before, event)] is after


def test_moved_away_is_final() -> None:
    for role in Role:
        for event in PhaseInput:
            assert next_phase(role, P.MOVED_AWAY, event) is P.MOVED_AWAY


def test_roles_keep_to_their_own_inputs() -> None:
    """Only servers detach and take attachments; only clients re-establish or import."""
    for (role, _, event), after in PHASE_TRANSITIONS.items():
        if event in (PhaseInput.SIGNALING_ATTACHED, PhaseInput.PEER_LOST):
            assert role is Role.SERVER
        if event in (PhaseInput.SIGNALING_READY, PhaseInput.IMPORTED, PhaseInput.PATH_FAILED):
            assert role is Role.CLIENT
        assert after is not P.DETACHED or role is Role.SERVER
        assert after is not P.REESTABLISHING or role is Role.CLIENT


@given(st.sampled_from(list(Role)), st.lists(st.sampled_from(list(PhaseInput)), max_size=30))
def test_any_walk_stays_in_the_roles_phases(role: Role, events: list[PhaseInput]) -> None:
    allowed = {
        Role.CLIENT: {P.ATTACHED, P.MOVING, P.REESTABLISHING, P.MOVED_AWAY},
        Role.SERVER: {P.ATTACHED, P.MOVING, P.DETACHED, P.MOVED_AWAY},
    }[role]
    phase = INITIAL[role]
    moved = False
    for event in events:
        before, phase = phase, next_phase(role, phase, event)
        assert phase in allowed
        moved = moved or phase is P.MOVED_AWAY
        assert phase is P.MOVED_AWAY or not moved
        if phase is P.ATTACHED and before is not P.ATTACHED:
            # Only a signaling request that works attaches a call.
            assert event in (PhaseInput.SIGNALING_ATTACHED, PhaseInput.SIGNALING_READY)
