"""The migration phase of a call (R9, R10) as a table, like the call state table.

A call's phase says where it stands with respect to its connection: attached, moving,
detached (server: the client vanished), re-establishing (client: the path failed), or
moved away (this instance handed it over). :data:`PHASE_TRANSITIONS` maps
``(role, phase, input)`` to the next phase; an input the table does not list for a phase
leaves the phase as it is (a moved-away call, say, ignores a lost peer: it only drains).
"""

from __future__ import annotations

import enum

from ._events import MigrationPhase
from ._state import Role


class PhaseInput(enum.Enum):
    """What can move a call between migration phases."""

    MOVE_SENT = "move sent"
    """We sent Move: the call is handed over (server) or handed to another client."""
    MOVE_RECEIVED = "move received"
    """The peer sent Move: client, attach to the new URI; server, hold for the client."""
    SIGNALING_ATTACHED = "signaling attached"
    """Server: a signaling request attached to the call."""
    SIGNALING_READY = "signaling ready"
    """Client: the signaling request (to a new URI, or re-established) got its 200."""
    IMPORTED = "imported"
    """Client: the call was imported from another client instance and is re-attaching."""
    PATH_FAILED = "path failed"
    """Client: the server or path failed; the call is being re-established."""
    PEER_LOST = "peer lost"
    """Server: the client's requests went away; the call waits to be re-attached."""


_P = MigrationPhase
_LIVE = (_P.ATTACHED, _P.MOVING, _P.DETACHED, _P.REESTABLISHING)

#: ``(role, phase, input) -> phase``. MOVED_AWAY has no way out.
PHASE_TRANSITIONS: dict[tuple[Role, MigrationPhase, PhaseInput], MigrationPhase] = {
    **{(role, p, PhaseInput.MOVE_SENT): _P.MOVED_AWAY for role in Role for p in _LIVE},
    # Server side.
    **{
        (Role.SERVER, p, PhaseInput.SIGNALING_ATTACHED): _P.ATTACHED
        for p in (_P.DETACHED, _P.MOVING, _P.ATTACHED)
    },
    **{
        (Role.SERVER, p, PhaseInput.MOVE_RECEIVED): _P.MOVING
        for p in (_P.ATTACHED, _P.DETACHED, _P.MOVING)
    },
    **{
        (Role.SERVER, p, PhaseInput.PEER_LOST): _P.DETACHED
        for p in (_P.ATTACHED, _P.MOVING, _P.DETACHED)
    },
    # Client side.
    (Role.CLIENT, _P.ATTACHED, PhaseInput.IMPORTED): _P.MOVING,
    **{
        (Role.CLIENT, p, PhaseInput.SIGNALING_READY): _P.ATTACHED
        for p in (_P.MOVING, _P.REESTABLISHING, _P.ATTACHED)
    },
    **{
        (Role.CLIENT, p, PhaseInput.MOVE_RECEIVED): _P.MOVING
        for p in (_P.ATTACHED, _P.MOVING, _P.REESTABLISHING)
    },
    **{
        (Role.CLIENT, p, PhaseInput.PATH_FAILED): _P.REESTABLISHING
        for p in (_P.ATTACHED, _P.MOVING, _P.REESTABLISHING)
    },
}


def next_phase(role: Role, phase: MigrationPhase, event: PhaseInput) -> MigrationPhase:
    """The phase after ``event`` (the same phase if the table has no entry)."""
    return PHASE_TRANSITIONS.get((role, phase, event), phase)
