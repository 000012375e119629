"""Issue 6, class 2: one media frame must not stall or exhaust the process.

A sequence number jumping ahead by 2**20 used to block the server for seconds and allocate
one gap entry per missing number; a jump of 2**31 grew memory without bound. The fixed
server resynchronises: each frame costs O(1) whatever its number says.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .harness import DRIVER_ENGINES, RawConnection, pcmu_frame, pump, scene

#: Frames after which the jump comes, and frames sent after each jump.
BEFORE, AFTER = 10, 10
JUMPS = (1 << 20, 1 << 31)
#: Every frame of the attack is acknowledged within this (a stalled server acks late).
ACK_WITHIN = 2.0


@pytest.mark.slow
@pytest.mark.parametrize(("driver", "engine"), DRIVER_ENGINES)
def test_sequence_jumps_cost_constant_time(driver: str, engine: str, tmp_path: Path) -> None:
    with scene(tmp_path, driver, engine=engine) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        call = raw.open_call(media=2)
        sent: list[int] = []
        sequence = 0
        for jump in (0, *JUMPS):
            sequence += jump
            for _ in range(BEFORE if jump == 0 else AFTER):
                stream = call.media[len(sent) % len(call.media)]
                raw.send(stream, pcmu_frame(sequence))
                sent.append(sequence % (1 << 32))
                sequence += 1
                pump([raw], timeout=0.02)  # real time: one 20 ms frame after another
        began = time.monotonic()
        acked = pump([raw], until=lambda: set(sent) <= call.acked(), timeout=ACK_WITHIN)
        assert acked, f"unacked after {ACK_WITHIN} s: {sorted(set(sent) - call.acked())}"
        assert time.monotonic() - began < ACK_WITHIN
        assert {"type": "terminate"} not in [{"type": m["type"]} for m in call.messages()]
        # the call is still up after the jumps: frames keep being acknowledged
        raw.send(call.media[0], pcmu_frame(sequence))
        assert pump([raw], until=lambda: sequence % (1 << 32) in call.acked(), timeout=2)
        assert raw.alive
        s.check()
