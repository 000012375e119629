"""Issue 6, class 3: no caller can overhear, inject into or end another's call.

Call URIs used to come from a counter: with another token, on another connection, a peer
opened media requests on a neighbour's call URI, heard its audio and injected frames, or
ended it with a forged ``Ripp-Reestablish``. Now each call URI ends in 128 random bits
(22 base64url characters), each call belongs to the principal that created it (``ripp
serve``: one principal per bearer token), and every request on it, and every
re-establishment of it, from another principal gets 404 with ``ripp-reason: 481``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .harness import (
    MEDIA,
    SIGNALING,
    RawConnection,
    assert_refused,
    pcmu_frame,
    pump,
    scene,
)

CALL_PATH = re.compile(r"^/ripp/instances/(?P<instance>[^/]+)/calls/(?P<id>[A-Za-z0-9_-]{22})$")
VICTIM_FILL, MALLORY_FILL = 0x55, 0xAA  # payload bytes of each side's frames


@pytest.mark.slow
def test_calls_are_bound_to_their_creator(tmp_path: Path) -> None:
    with scene(tmp_path, "trio") as s:
        victim = RawConnection(s.server, token="victim")
        call = victim.open_call(media=2)
        victim.talking.append(call)
        mallory = RawConnection(s.server, source="127.0.0.2", token="mallory")
        pump([victim, mallory], until=lambda: mallory.connected, timeout=5)
        match = CALL_PATH.match(call.path)
        assert match, f"call URI path {call.path!r} is not .../calls/<22 base64url chars>"
        # unguessable: another call gets an unrelated id (not a counter step)
        other = CALL_PATH.match(mallory.create_call())
        assert other and other["id"] != match["id"]
        assert other["instance"] == match["instance"]
        pump([victim, mallory], until=lambda: len(call.received()) >= 5, timeout=3)

        # Mallory, on her own connection with her own token, tries the victim's call URI:
        attempts = [mallory.open(call.path, MEDIA) for _ in range(3)]
        attempts.append(mallory.open(call.path, SIGNALING))
        for stream in attempts[:3]:  # inject (only reaches the server if it said 200)
            mallory.send(stream, pcmu_frame(0, MALLORY_FILL) + pcmu_frame(1, MALLORY_FILL))
        responses = [mallory.responses[a] for a in attempts]
        pump(
            [victim, mallory],
            until=lambda: all(r.status is not None or r.done for r in responses),
            timeout=3,
        )
        for response in responses:
            assert_refused(response, 404, 481)
            assert not response.media(), "Mallory heard the victim's audio"
        # ... and re-establishing it as her own (which would take the call over)
        victim_uri = f"https://{s.server.authority}{call.path}"
        for state in ("connected", "pending"):
            assert_refused(
                mallory.create(ripp_reestablish=f"<{victim_uri}>;state={state}"), 404, 481
            )

        # The same against the ordinary call (another process; its URI from the server's
        # log): media requests carrying frames numbered far from its own, a forged
        # re-establishment. If any got through, the echo server would send the injected
        # frames back to the ordinary caller (Scene.check: no more frames than it sent).
        tries = [mallory.open(s.ordinary_path, MEDIA) for _ in range(2)]
        for stream in tries:
            mallory.send(stream, b"".join(pcmu_frame(100_000 + i, MALLORY_FILL) for i in range(5)))
        ordinary_uri = f"https://{s.server.authority}{s.ordinary_path}"
        forged = mallory.create(ripp_reestablish=f"<{ordinary_uri}>;state=connected")
        pump(
            [victim, mallory],
            until=lambda: all(mallory.responses[t].done for t in tries),
            timeout=3,
        )
        for response in [*(mallory.responses[t] for t in tries), forged]:
            assert_refused(response, 404, 481)
            assert not response.media(), "Mallory heard the ordinary call's audio"

        # The victim's call never noticed: up, its frames acked, only its own audio back.
        heard_before = len(call.received())
        pump([victim, mallory], timeout=1.0)
        assert len(call.received()) > heard_before
        assert {f.payload[0] for f in call.received()} == {VICTIM_FILL}, "frames injected"
        assert call.sent - len(call.acked()) <= 5, (call.sent, len(call.acked()))
        assert not [m for m in call.messages() if m["type"] in ("terminate", "move")]
        assert victim.alive and mallory.alive
        s.check()
