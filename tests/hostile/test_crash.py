"""Issue 6, class 1: no failure while handling one call may end the process.

Each of the four findings ended ``ripp serve`` (Trio) and every call on it. Here they run
one after another against one server, on each driver, with an ordinary call beside them;
the process must be alive after each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import (
    DRIVERS,
    SIGNALING,
    RawConnection,
    ServeProcess,
    pump,
    scene,
    signal_frame,
)

#: connect_timeout=1: a created call never attached is ended after 1 s (default 5 s).
SETTINGS = ["connect_timeout=1"]


def cancel_while_ringing(raw: RawConnection, server: ServeProcess) -> None:
    """The caller sends terminate 487 before the answer (the serving task's answer()
    used to raise CallEnded out of the process)."""
    path = raw.create_call()
    sig = raw.open(path, SIGNALING)
    ringing = raw.responses[sig]
    assert pump([raw], until=lambda: {"type": "ringing"} in ringing.messages(), timeout=3)
    raw.send(sig, signal_frame({"type": "terminate", "code": 487, "reason": "cancel"}))
    pump([raw], timeout=0.5)  # ripp serve answers 0.1 s after ringing: wait past that


def never_attached(raw: RawConnection, server: ServeProcess) -> None:
    """A created call whose signaling request never comes: the connect timeout ends it."""
    raw.create_call()
    pump([raw], timeout=1.6)


def malformed_after_pending(raw: RawConnection, server: ServeProcess) -> None:
    """A signaling message that is not JSON, right after pending."""
    path = raw.create_call()
    sig = raw.open(path, SIGNALING)
    pending = raw.responses[sig]
    assert pump([raw], until=lambda: {"type": "pending"} in pending.messages(), timeout=3)
    raw.send(sig, signal_frame(b'{"type": "terminate", "code": '))
    pump([raw], timeout=0.5)


def reestablish_unknown(raw: RawConnection, server: ServeProcess) -> None:
    """A creation request whose Ripp-Reestablish names a call of another instance, with
    state=connected: the server takes it over as a new, already connected call (protocol
    15.4 case 2; R10). This is what used to raise LocalStateError in `ripp serve`'s
    handler (ring/answer on a connected call) and end the process. A marker naming a call
    of *this* instance that it does not hold gets 404 (tests/test_ownership.py)."""
    calls = f"https://{server.authority}/ripp/instances/nope/calls/"
    response = raw.create(ripp_reestablish=f"<{calls}AAAAAAAAAAAAAAAAAAAAAA>;state=connected")
    assert response.status == 201, response
    pump([raw], timeout=0.3)


ATTACKS: list[Callable[[RawConnection, ServeProcess], None]] = [
    cancel_while_ringing,
    never_attached,
    malformed_after_pending,
    reestablish_unknown,
]


@pytest.mark.slow
@pytest.mark.parametrize("driver", DRIVERS)
def test_no_call_failure_ends_the_process(driver: str, tmp_path: Path) -> None:
    with scene(tmp_path, driver, SETTINGS) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        assert pump([raw], until=lambda: raw.connected, timeout=5)
        for attack in ATTACKS:
            attack(raw, s.server)
            assert s.server.alive(), f"ripp serve exited after {attack.__name__}"
        assert raw.alive, raw.terminated  # none of this cost the attacker's connection
        s.check()
