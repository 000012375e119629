"""Issue 6, classes 4 and 5: the QUIC layer cannot be exhausted.

Class 4: junk Initials (undecryptable, thousands a second) used to cost ~800 us and kept
state each; memory grew to 2 GB and the ordinary call failed. Now junk costs no state and,
with ``retry_threshold`` handshakes in progress, new Initials get a stateless QUIC Retry.

Class 5: 64 handshaken connections that never sent a request used to be kept forever and
lock new callers out at the connection limit. Now a connection without calls closes after
``idle_connection_timeout``, the longest-idle one is evicted for a new caller at
``max_connections``, and one address holds at most ``max_connections_per_address``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ripp_core._varint import encode_varint

from .harness import DRIVER_ENGINES, WITH_QH3, RawConnection, junk_initial, pump, scene

#: Connections that handshake and end (half hung up, half closed by the server for a
#: protocol error), and the server log they may add all together: no line per connection.
CHURN = 40
MAX_CHURN_LOG_BYTES = 500  # a line is about 60 bytes
JUNK_COUNT = 3000  # Initials, sent at JUNK_RATE from one socket
JUNK_RATE = 2000.0  # per second: a stateless check (~56 us each) is 11 % of a core


@pytest.mark.slow
@pytest.mark.parametrize(("driver", "engine"), DRIVER_ENGINES)
def test_junk_initials_and_retry(driver: str, engine: str, tmp_path: Path) -> None:
    settings = ["retry_threshold=2", "handshake_timeout=3"]
    with scene(tmp_path, driver, settings, engine=engine) as s:
        # Junk first, while no handshake is in progress (so the server cannot answer it
        # with Retries): full-size v1 Initials with random DCIDs that nothing decrypts.
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        junk.bind(("127.0.0.3", 0))
        began = time.monotonic()
        for index in range(JUNK_COUNT):
            junk.sendto(junk_initial(), s.server.address)
            ahead = began + index / JUNK_RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        junk.close()
        s.server.assert_alive()

        # Two handshakes left hanging: the server's first flight reaches each client,
        # which never answers (it only re-sends its Initial on its own timer) ...
        stuck = [RawConnection(s.server, source="127.0.0.2") for _ in range(2)]
        heard = [0, 0]
        deadline = time.monotonic() + 5
        while min(heard) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
            heard = [h + c.swallow() for h, c in zip(heard, stuck, strict=True)]
            for connection in stuck:
                connection.on_timer(time.monotonic())
                connection.flush()
        assert min(heard) > 0, "the server never answered the hanging clients' Initials"
        # ... so the next client's Initial gets a Retry; it comes back with the token and
        # its handshake completes: address validation costs honest clients one round trip.
        fresh = RawConnection(s.server, source="127.0.0.4")
        assert pump([fresh], until=lambda: fresh.connected, timeout=5), fresh.terminated
        assert fresh.retries_seen >= 1, "no QUIC Retry with retry_threshold handshakes open"
        assert fresh.create().status == 201
        for connection in [*stuck, fresh]:
            connection.close()
        s.check()


@pytest.mark.slow
@pytest.mark.parametrize("engine", WITH_QH3)
def test_idle_connections_never_lock_callers_out(engine: str, tmp_path: Path) -> None:
    limit, per_address, idle = 8, 4, 2.0
    settings = [
        f"max_connections={limit}",
        f"max_connections_per_address={per_address}",
        f"idle_connection_timeout={idle}",
    ]
    with scene(tmp_path, "trio", settings, seconds=3.0, engine=engine) as s:
        # One address may hold only `per_address` connections: the rest never handshake.
        crowd = [RawConnection(s.server, source="127.0.0.2") for _ in range(per_address + 2)]
        pump(crowd, timeout=1.5)
        assert 0 < sum(c.connected for c in crowd) <= per_address
        # Fill the server from other addresses: more idle connections than it may hold.
        crowd += [RawConnection(s.server, source=f"127.0.0.{3 + i % 2}") for i in range(limit)]
        pump(crowd, until=lambda: sum(c.connected for c in crowd) >= limit, timeout=3)
        # A new caller still gets in (an idle connection is evicted for it) and calls.
        caller = RawConnection(s.server, source="127.0.0.5")
        assert pump([caller, *crowd], until=lambda: caller.connected, timeout=3)
        assert caller.create().status == 201
        # Every handshaken connection that carries no call is closed after `idle`.
        handshaken = [c for c in crowd if c.connected]
        assert pump(
            [caller, *crowd],
            until=lambda: all(c.terminated is not None for c in handshaken),
            timeout=idle + 2.0,
        ), f"{sum(c.terminated is None for c in handshaken)} idle connections still open"
        for connection in [caller, *crowd]:
            connection.close()
        s.check()


@pytest.mark.slow
@pytest.mark.parametrize("engine", WITH_QH3)
def test_connection_churn_leaves_no_log_line_per_connection(engine: str, tmp_path: Path) -> None:
    # qh3 warned for every connection a peer closed (and ripp serve shows warnings): one
    # peer could grow the log by a line per connection, without limit.
    data_first = encode_varint(0x00) + encode_varint(1) + b"x"  # DATA before HEADERS
    with scene(tmp_path, "trio", engine=engine) as s:
        before = len(s.server.stderr().encode())
        for index in range(CHURN):
            raw = RawConnection(s.server, source=f"127.0.0.{2 + index % 4}")
            assert pump([raw], until=lambda r=raw: r.connected, timeout=5), raw.terminated  # type: ignore[misc]
            if index % 2:
                raw.raw_stream(data_first, end_stream=True)  # H3_FRAME_UNEXPECTED
                assert pump([raw], until=lambda r=raw: r.terminated is not None, timeout=3)  # type: ignore[misc]
            raw.close()
        s.check()  # the ordinary call has ended: the server has seen every close by now
        log = s.server.stderr().encode()[before:]
        assert len(log) < MAX_CHURN_LOG_BYTES, log[-600:]
