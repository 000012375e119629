"""Issue 6, classes 6-8: bad requests cost that request only, with bounded memory.

Class 6: refused requests leaked (~47 MB per 2 500) and each refusal logged and echoed the
whole 15 KB path in ``ripp-reason``. Now refusals cost nothing that stays, logs are
rate-limited, and ``ripp-reason`` echoes at most 64 characters of peer input.

Class 7: a HEADERS frame announcing 2**62 bytes was accepted and buffered (23 MB on four
streams, the ordinary call's RTT p99 from 3 to 182 ms). Now a header block over
``max_header_bytes`` costs that request only: 400 and/or a reset with H3_MESSAGE_ERROR.

Class 8: one malformed request (a header value ending in a space; a 64 KB ``To``) made
aioquic close the whole connection and every call on it. Now it is a stream error.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ripp_core._varint import encode_varint

from .harness import (
    DRIVER_ENGINES,
    H3_HEADERS,
    MEDIA,
    WITH_QH3,
    RawConnection,
    RawResponse,
    assert_refused,
    pump,
    scene,
)

H3_MESSAGE_ERROR = 0x10E
H3_EXCESSIVE_LOAD = 0x107


def assert_request_error(response: RawResponse) -> None:
    """A malformed request's only cost: a 400 refusal and/or a stream reset."""
    if response.status is not None:
        assert_refused(response, 400)
    else:
        assert response.reset in (H3_MESSAGE_ERROR, H3_EXCESSIVE_LOAD), response


# ------------------------------------------------------------------ class 6
REFUSALS = 1000  # refused requests, sent in batches of 10...
REFUSAL_RATE = 200.0  # ... at this many a second: a leak test, not a CPU flood
MIN_REFUSALS = 500  # the run must get at least this far to mean anything
LONG_PATH = "/ripp/instances/x/calls/" + "A" * 15000  # 15 KB, under max_header_bytes
LONG_PATHS = 20  # requests with it (each costs ~1 ms of server CPU)
MAX_LOG_BYTES = 20_000  # server stderr for all the refusals together


def refused_request(raw: RawConnection, index: int) -> tuple[list[tuple[str, str]], int, int]:
    """The ``index``-th refused request of the flood (a mix of kinds), with the status
    and ``ripp-reason`` code it must get."""
    path = f"/ripp/instances/x/calls/{'B' * 200}{index}"  # well-shaped, no such call
    headers = raw.call_headers(path, MEDIA)
    kind = index % 4
    if kind == 0:
        return headers, 404, 481
    if kind == 1:
        return [(k, "GET" if k == ":method" else v) for k, v in headers], 405, 405
    if kind == 2:
        return [(k, "text/plain" if k == "content-type" else v) for k, v in headers], 415, 415
    return raw.creation_headers(identity=None), 428, 428


@pytest.mark.slow
@pytest.mark.parametrize("engine", WITH_QH3)
def test_refusals_leak_nothing_and_echo_little(engine: str, tmp_path: Path) -> None:
    with scene(tmp_path, "trio", seconds=5.0, engine=engine) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        assert pump([raw], until=lambda: raw.connected, timeout=5)
        # a few refusals whose path is 15 KB: the reason echoes at most 64 characters
        long = [raw.request(raw.call_headers(f"{LONG_PATH}{i}", MEDIA)) for i in range(LONG_PATHS)]
        pump([raw], until=lambda: all(raw.responses[x].done for x in long), timeout=5)
        for stream in long:
            assert_refused(raw.responses[stream], 404, 481)
        # a flood of refusals of four kinds
        began = time.monotonic()
        deadline = began + 2 * REFUSALS / REFUSAL_RATE
        expected: dict[int, tuple[int, int]] = {}
        while len(expected) < REFUSALS and time.monotonic() < deadline:
            pump([raw], timeout=began + len(expected) / REFUSAL_RATE - time.monotonic())
            batch = []
            for _ in range(10):
                headers, status, sip = refused_request(raw, len(expected))
                stream = raw.request(headers)
                expected[stream] = (status, sip)
                batch.append(stream)
            pump(
                [raw],
                until=lambda b=batch: all(raw.responses[x].done for x in b),  # type: ignore[misc]
                timeout=5,
            )
        done = {x: raw.responses[x] for x in expected if raw.responses[x].done}
        assert len(done) >= MIN_REFUSALS, f"only {len(done)} refusals answered"
        for stream, response in done.items():
            assert_refused(response, *expected[stream])
        assert raw.alive
        log = s.server.stderr().encode()
        assert len(log) < MAX_LOG_BYTES, f"{len(log)} bytes of log for {len(done)} refusals"
        # nothing of the refused requests stays (no EventRouter pile-up)
        s.check(max_rss_growth_mb=10.0)


# ------------------------------------------------------------------ class 7
HUGE = (1 << 62) - 1  # the largest QUIC varint: a HEADERS frame "of 4 EiB"
JUNK_PER_STREAM = 256 * 1024


@pytest.mark.slow
@pytest.mark.parametrize(("driver", "engine"), DRIVER_ENGINES)
def test_huge_headers_frame_costs_the_request_only(
    driver: str, engine: str, tmp_path: Path
) -> None:
    with scene(tmp_path, driver, engine=engine) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        assert pump([raw], until=lambda: raw.connected, timeout=5)
        head = encode_varint(H3_HEADERS) + encode_varint(HUGE)
        streams = [raw.raw_stream(head + b"\x00" * JUNK_PER_STREAM) for _ in range(4)]
        pump(
            [raw],
            until=lambda: all(
                raw.responses[x].done or raw.responses[x].status for x in streams
            ),
            timeout=3,
        )
        for stream in streams:
            assert_request_error(raw.responses[stream])
        # the connection carries on: a call can still be created on it
        assert raw.alive, raw.terminated
        assert raw.create().status == 201
        s.check(max_rss_growth_mb=20.0)


# ------------------------------------------------------------------ class 8
@pytest.mark.slow
@pytest.mark.parametrize(("driver", "engine"), DRIVER_ENGINES)
def test_malformed_request_costs_the_request_only(
    driver: str, engine: str, tmp_path: Path
) -> None:
    with scene(tmp_path, driver, engine=engine) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        call = raw.open_call(media=2)  # another call on the same connection
        raw.talking.append(call)
        pump([raw], until=lambda: len(call.received()) >= 5, timeout=3)

        # a header value ending in a space (what `ripp call --token ""` used to send)
        trailing_space = raw.exchange(raw.creation_headers(authorization="Bearer "))
        assert_request_error(trailing_space)
        also = raw.exchange(raw.creation_headers(to="<tel:+12125550000> "))
        assert_request_error(also)
        # a Latin-1 display name: a valid field value, not UTF-8 (qh3's QPACK decoder
        # failed it and closed the connection)
        latin = raw.exchange(raw.creation_headers(**{"from": '"Jos\udce9" <tel:+14085550000>'}))
        assert_request_error(latin)
        # a 64 KB To: over max_header_bytes, refused with 400 (not a connection error)
        huge = raw.literal_request(raw.creation_headers(to="<tel:+1" + "2" * 65536 + ">"))
        huge_to = raw.responses[huge]
        pump([raw], until=lambda: huge_to.done or raw.terminated is not None, timeout=3)
        assert_refused(huge_to, 400)

        assert raw.alive, raw.terminated
        heard = len(call.received())
        pump([raw], timeout=0.5)
        assert len(call.received()) > heard, "the other call on the connection stopped"
        assert call.sent - len(call.acked()) <= 5
        assert raw.create().status == 201
        s.check()


# ------------------------------------------------------------------ check order
#: Each request below breaks two rules; the refusal must name the one checked first.
PAD = "x" * 20_000  # a header block over max_header_bytes (16384)


@pytest.mark.slow
@pytest.mark.parametrize("engine", WITH_QH3)
def test_refusals_follow_the_documented_check_order(engine: str, tmp_path: Path) -> None:
    # max_calls=1: the ordinary call fills the server, so creation reaches the 503 check.
    with scene(tmp_path, "trio", ["max_calls=1"], engine=engine) as s:
        raw = RawConnection(s.server, source="127.0.0.2")
        assert pump([raw], until=lambda: raw.connected, timeout=5)
        create = raw.creation_headers
        shaped = "/ripp/instances/x/calls/AAAAAAAAAAAAAAAAAAAAAA"  # well-shaped, unknown

        def on(path: str, content_type: str, token: str | None = "mallory",
               method: str = "POST", pad: bool = False) -> list[tuple[str, str]]:
            headers = [
                (":method", method), (":scheme", "https"),
                (":authority", s.server.authority), (":path", path),
                ("content-type", content_type),
            ]
            if token is not None:
                headers.append(("authorization", f"Bearer {token}"))
            if pad:
                headers.append(("x-pad", PAD))
            return headers

        cases: list[tuple[str, list[tuple[str, str]], int, int]] = [
            # creation: 400/405 -> 400 (version, To, From) -> 428/438 -> 400 (marker)
            #           -> 503 -> 401/403
            ("size before method", create(**{":method": "GET", "x-pad": PAD}), 400, 400),
            ("method before version", create(**{":method": "GET", "ripp-version": "2"}),
             405, 405),
            ("version before identity", create(ripp_version="2", identity=None), 400, 400),
            ("From before identity", create(**{"from": "nonsense", "identity": None}),
             400, 400),
            ("identity before marker", create(identity=None, ripp_reestablish="<x>"),
             428, 428),
            ("identity syntax before marker",
             create(identity="not-a-jws", ripp_reestablish="<x>"), 403, 438),
            ("marker before capacity",
             create(ripp_reestablish=f"<https://{s.server.authority}{shaped}>;state=bogus"),
             400, 400),
            ("capacity before token", create(authorization=None), 503, 503),
            # call URI: 400 -> 405 -> 404 (shape) -> 415 -> 401/403 -> 404 (no such call)
            ("size before method", on(shaped, MEDIA, method="GET", pad=True), 400, 400),
            ("method before shape", on("/ripp/nowhere", MEDIA, method="GET"), 405, 405),
            ("shape before content type", on("/ripp/nowhere", "text/plain"), 404, 481),
            ("content type before token", on(shaped, "text/plain", token=None), 415, 415),
            ("token before call", on(shaped, MEDIA, token=None), 401, 401),
            ("someone else's call", on(s.ordinary_path, MEDIA), 404, 481),
        ]
        streams = [raw.literal_request(headers) for _, headers, _, _ in cases]
        pump([raw], until=lambda: all(raw.responses[x].done for x in streams), timeout=5)
        wrong = []
        for (name, _, status, sip), stream in zip(cases, streams, strict=True):
            response = raw.responses[stream]
            reason = response.headers.get("ripp-reason", "")
            if name == "size before method" and response.reset == H3_MESSAGE_ERROR:
                continue  # an oversized header block may also be refused by a reset
            if response.status != status or not reason.startswith(f"{sip} "):
                wrong.append(f"{name}: wanted {status}/{sip}, got {response.status} "
                             f"{reason!r} (reset {response.reset})")
        assert not wrong, "\n".join(wrong)
        assert raw.create().headers.get("retry-after") == "1"
        assert raw.alive
        s.check()
