"""Issue 6, class 9: ended calls are freed, and one stream that never acks costs only
that stream.

Calls hung up without END_STREAM on their requests used to be held forever (a call is
forgotten only once every channel is closed), each still counting against ``max_calls``.
Now they are freed after a bounded linger. And a media stream that never acknowledges
used to make the server declare the peer lost after ``ack_timeout`` (1 s) and reset every
stream of the call; now that stream alone is reset.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .harness import WITH_QH3, RawConnection, pump, scene

LINGERING = 3  # calls hung up without END_STREAM
#: Seconds within which the server frees them: a linger as long as reattach_timeout
#: (10 s, the longest the server waits for a client anyway) is accepted.
LINGER_BOUND = 10.0


@pytest.mark.slow
def test_calls_ended_without_end_stream_are_freed(tmp_path: Path) -> None:
    # max_calls = the ordinary call + LINGERING: while they linger, nobody else gets in.
    settings = [f"max_calls={LINGERING + 1}"]
    # The ordinary call lasts past LINGER_BOUND so that its own slot stays taken.
    with scene(tmp_path, "trio", settings, seconds=LINGER_BOUND + 2.5) as s:
        raw = RawConnection(s.server, source="127.0.0.2", auto_ack=False)
        calls = [raw.open_call(media=1) for _ in range(LINGERING)]
        for call in calls:
            call.send_frames(3)
        pump([raw], timeout=0.3)
        for call in calls:
            call.terminate(end_stream=False)  # hang up, leave every request body open
        pump([raw], timeout=0.2)
        hung_up = time.monotonic()
        # The server is full while they linger: a new call gets 503 + retry-after ...
        refused = raw.create()
        if refused.status == 503:
            assert refused.headers.get("retry-after") == "1", refused
        # ... and gets in once they are freed, within the bound.
        created = None
        while time.monotonic() - hung_up < LINGER_BOUND:
            response = raw.create()
            if response.status == 201:
                created = response
                break
            assert response.status == 503, response
            pump([raw], timeout=0.5)
        assert created is not None, f"calls hung up without END_STREAM still held after " \
            f"{LINGER_BOUND} s (max_calls={LINGERING + 1})"
        assert raw.alive
        s.check()


@pytest.mark.slow
@pytest.mark.parametrize("engine", WITH_QH3)
def test_stream_that_never_acks_costs_only_itself(engine: str, tmp_path: Path) -> None:
    with scene(tmp_path, "trio", engine=engine) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        call = raw.open_call(media=2)
        good, silent = call.media
        raw.no_ack.add(silent)  # this request's peer side never acknowledges
        raw.talking.append(call)  # frames keep going out (the server echoes them)
        pump([raw], until=lambda: bool(raw.responses[silent].media()), timeout=3)
        # past ack_timeout (1 s) by a wide margin
        pump([raw], until=lambda: raw.responses[silent].reset is not None, timeout=3.0)
        heard = len(raw.responses[good].media())
        pump([raw], timeout=1.0)
        assert raw.responses[good].reset is None, "the acking stream was reset too"
        assert len(raw.responses[good].media()) > heard, "the acking stream went quiet"
        assert raw.responses[silent].reset is not None, "the never-acking stream lives on"
        assert not [m for m in call.messages() if m["type"] == "terminate"]
        assert raw.alive
        s.check()
