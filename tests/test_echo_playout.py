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

import contextlib
import itertools
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

import ripp_cli
from ripp_cli import _app
from ripp_core import BadSkip, MediaFrame, MediaPlayout

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


API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _api_echo_snippet() -> str:
    """The echo program of docs/api.md ("Receive audio"), the block using PlayoutClock."""
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    matches = [b for b in blocks if "PlayoutClock()" in b and "skip_audio" in b]
    assert len(matches) == 1, "docs/api.md has one echo example with PlayoutClock"
    return matches[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("driver", ["trio", "asyncio"])
def test_the_api_doc_echo_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    """docs/api.md's echo, pasted into a server handler, on either driver: the caller hears
    its audio back, every frame in order."""
    monkeypatch.setenv("RIPP_HOME", str(tmp_path))
    from ripp_cli._runtime import runtime
    from ripp_cli.local import client_tls, dev_identity, dev_identity_verifier, server_tls
    from ripp_core import CallState, Codec, insecure_accept_any_bearer

    namespace: dict[str, Any] = {"contextlib": contextlib}
    body = textwrap.indent(_api_echo_snippet(), "    ")
    exec(f"async def echo(call):\n    await call.answer()\n{body}", namespace)
    to, from_ = "<tel:+12125551234>", "<tel:+14085551234>"
    heard: list[MediaFrame] = []
    rt = runtime(driver)

    async def listen(call: Any) -> None:
        async for item in call.audio():
            if isinstance(item, MediaFrame):
                heard.append(item)
                if len(heard) == 25:
                    return

    async def main() -> None:
        async with rt.driver.open_server(
            server_tls(), authorizer=insecure_accept_any_bearer,
            identity_verifier=dev_identity_verifier,
        ) as server, rt.tasks() as tasks:  # fmt: skip
            tasks.start_soon(server.serve, namespace["echo"])
            uri = f"https://localhost:{server.address[1]}/ripp/calls"
            async with rt.driver.open_client(client_tls(), calls_uris=[uri], token="t") as client:
                identity = dev_identity(to, from_)
                call = await client.place_call(to=to, from_=from_, identity=identity)
                await call.wait_state(CallState.CONNECTED)
                for _ in range(25):
                    call.play(Codec.PCMU, 0.02, bytes(160))
                await rt.wait_for(listen(call), 3.0)
                # The pacer has run dry: the client may skip too, through either driver.
                last = call.send_audio(Codec.PCMU, 0.02, bytes(160))
                assert call.skip_audio(0.0201) == 40  # the 0.1 ms remainder is kept
                after = call.send_audio(Codec.PCMU, 0.02, bytes(160))
                assert after.timestamp - last.timestamp == 2 * 960 and after.marker
                with pytest.raises(BadSkip):
                    call.skip_audio(math.inf)
                await call.terminate()

    rt.run(main)
    assert len(heard) == 25
    assert heard[0].marker and [f.sequence for f in heard] == list(range(25))
