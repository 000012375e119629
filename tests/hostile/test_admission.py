"""Issue 6, class 10: admission control. Past capacity every call used to degrade
together. Now, past ``max_calls`` or while the event loop lags more than
``admission_max_lag`` (50 ms), new calls get 503 with ``retry-after: 1`` and the calls
already up keep their quality.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .harness import WITH_QH3, RawConnection, RawResponse, assert_refused, pump, scene, serve

STOP = 0.3  # seconds the server process is stopped (SIGSTOP): a lag of 300 ms
HOLD = 1.0  # admission_hold: how long the server refuses new calls after lagging


def assert_overloaded(response: RawResponse) -> None:
    """503 with ``retry-after: 1`` and a ``ripp-reason``."""
    assert_refused(response, 503)
    assert response.headers.get("retry-after") == "1", response


@pytest.mark.slow
def test_past_max_calls_new_calls_get_503(tmp_path: Path) -> None:
    with scene(tmp_path, "trio", ["max_calls=3"]) as s:  # the ordinary call + 2
        raw = RawConnection(s.server, source="127.0.0.2")
        calls = [raw.open_call(media=1) for _ in range(2)]
        raw.talking += calls
        pump([raw], timeout=0.3)
        for _ in range(3):
            assert_overloaded(raw.create())
        # the calls already up carry on ...
        sent = calls[0].sent
        pump([raw], timeout=0.5)
        for call in calls:
            assert call.sent - len(call.acked()) <= 5, (call.sent, len(call.acked()))
        assert calls[0].sent > sent
        # ... and a call that ends makes room again
        raw.talking.remove(calls[0])
        calls[0].terminate()
        created = False
        deadline = time.monotonic() + 3
        while not created and time.monotonic() < deadline:
            pump([raw], timeout=0.3)
            created = raw.create().status == 201
        assert created, "no room after a call ended"
        assert raw.alive
        s.check()


@pytest.mark.slow
@pytest.mark.parametrize("engine", WITH_QH3)
def test_lagging_server_refuses_new_calls_and_keeps_old_ones(tmp_path: Path, engine: str) -> None:
    # It used to miss the stall about one run in ten on either engine (4 of 48 runs): when
    # the Trio driver's receive task ran first after SIGCONT, the datagrams it handled
    # re-armed the timer the stall made late. A server now measures its lateness on every
    # input too (HttpServer._input_arrived; tests/test_calls.py has the unit test).
    settings = [f"admission_hold={HOLD}"]
    with serve(tmp_path, "trio", settings, engine) as server:
        raw = RawConnection(server, source="127.0.0.2")
        call = raw.open_call(media=2)
        raw.talking.append(call)
        pump([raw], timeout=0.5)
        # Freeze the process: when it runs again, its timers fire STOP seconds late.
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(STOP)
        os.kill(server.pid, signal.SIGCONT)
        pump([raw], timeout=0.1)
        assert_overloaded(raw.create())
        # The call that was up keeps going.
        acked = len(call.acked())
        pump([raw], timeout=0.5)
        assert len(call.acked()) > acked + 10
        # After the hold, new calls get in again; an ordinary call keeps its quality.
        pump([raw], timeout=HOLD + 0.2)
        assert raw.create().status == 201
        ordinary = server.ordinary_call(seconds=2.0)
        pump([raw], until=lambda: ordinary.process.poll() is not None, timeout=20)
        ordinary.assert_kept()
        assert call.sent - len(call.acked()) <= 5
        assert not [m for m in call.messages() if m["type"] == "terminate"]
        server.assert_alive()
