"""The echo of ``ripp demo`` / ``ripp serve`` on the real stack: its timestamps follow its
playout clock (issue 12, protocol 9.4).

``ripp demo`` runs in this process (real UDP on loopback through the impairing relay,
real QUIC and TLS, the real ``serve_call`` echo), with a spy around the client side that
keeps every echoed frame as the client received it and the echo's send times. What the
wire must show:

* consecutive echoed frames' timestamps advance by at least a frame's duration (the
  clock never goes back), and by more where the echo concealed a gap or its playout
  stretched;
* MARKER exactly on the first frame and where at least a whole frame's time was skipped
  (protocol 9.1, 9.4);
* no echoed frame leaves later, relative to its timestamp, than the first one did (up
  to timer noise): what keeps the caller's jitter buffer from dropping echoes as late.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import ripp_cli
from ripp_cli import _app
from ripp_core import MediaFrame, MediaPlayout

TICKS = 960  # one 20 ms frame at 48 kHz
# The echo reads the clock, skips and sends, then the spy reads the clock again: a little
# Python in between, more on a loaded machine.
SEND_SLACK = 0.005


@pytest.mark.timeout(90)
def test_echo_timestamps_follow_its_playout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RIPP_HOME", str(tmp_path))
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    echoed: dict[int, MediaFrame] = {}
    seen: dict[str, Any] = {}
    original = _app.place_and_play

    async def spy(rt: Any, client: Any, args: Any, *rest: Any) -> dict[str, Any]:
        def keep(event: object) -> None:
            if isinstance(event, MediaPlayout):
                echoed.setdefault(event.frame.sequence, event.frame)

        client.observe(keep)
        seen["s2c"] = rest[3]  # to, from_, c2s, s2c, identity
        return await original(rt, client, args, *rest)

    monkeypatch.setattr(_app, "place_and_play", spy)
    argv = ["demo", "--json", "--delay-ms", "50", "--loss", "0.05", "--seconds", "4"]
    assert ripp_cli.main([*argv, "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ended"]["code"] == 200
    sent_at: dict[int, float] = seen["s2c"].sent
    assert len(echoed) >= 180, len(echoed)

    order = sorted(echoed)
    assert order[0] == 0 and echoed[0].marker
    skipped = 0
    for before, after in itertools.pairwise(order):
        if after != before + 1:
            continue  # a frame between them was late at the client: no step to check
        step = echoed[after].timestamp - echoed[before].timestamp
        assert step >= TICKS, (before, step)
        skipped += step - TICKS
        # MARKER iff the skip since the previous frame covers this frame's duration.
        assert echoed[after].marker == (step - TICKS >= TICKS), (after, step)
    # 5 % loss makes the echo's jitter buffer conceal gaps or stretch: the clock ran on.
    assert skipped > 0

    first = sent_at[0] - echoed[0].timestamp / 48000
    worst = max(sent_at[n] - echoed[n].timestamp / 48000 - first for n in order)
    assert worst <= SEND_SLACK, worst
