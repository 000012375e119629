"""The HTTP/2 binding (issue 8): flow control over long calls, HTTP/2's versions of the
issue-6 bounds, and a misbehaving raw HTTP/2 peer beside a well-behaved client."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import hyperframe.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_core import CallState, Codec, RippConfig
from ripp_core._errors import (
    H3_EXCESSIVE_LOAD,
    H3_MESSAGE_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
)
from ripp_core._h2 import RippH2Server, h2_reset_code, malformed_reason
from ripp_core.testing import INSECURE_CHECKS, Impairment

from .call_harness import IDENTITY, Trunk

PEER = ("192.0.2.7", 40000)


def _server(config: RippConfig | None = None) -> RippH2Server:
    return RippH2Server(
        instance_id="i1", authority="a.example:443", config=config, **INSECURE_CHECKS
    )


class RawPeer:
    """A hand-driven h2 client connection talking straight to a server endpoint."""

    def __init__(self, server: RippH2Server, peer: tuple[str, int] = PEER) -> None:
        self.server = server
        self.peer = peer
        self.conn = h2.connection.H2Connection(
            # A raw peer sends whatever the test says, malformed or not.
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.closed = False
        self.now = 0.0
        self.pump()

    def pump(self) -> None:
        for _ in range(10):
            data = self.conn.data_to_send()
            if data:
                self.server.receive_data(data, self.peer, self.now)
            moved = False
            for chunk, key in self.server.data_to_send(self.now):
                if key != self.peer:
                    continue
                moved = True
                if not chunk:
                    self.closed = True
                    continue
                self.events.extend(self.conn.receive_data(chunk))
            if not data and not moved:
                return

    def request(self, headers: list[tuple[bytes, bytes]], end: bool = False) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.pump()
        return stream_id

    def of(self, kind: type, stream_id: int) -> list[h2.events.Event]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and getattr(e, "stream_id", 0) == stream_id
        ]

    def status(self, stream_id: int) -> int:
        (response,) = self.of(h2.events.ResponseReceived, stream_id)
        return int(dict(response.headers)[b":status"])


def _create_headers(**overrides: bytes) -> list[tuple[bytes, bytes]]:
    fields = {
        b":method": b"POST",
        b":scheme": b"https",
        b":authority": b"a.example:443",
        b":path": b"/ripp/calls",
        b"authorization": b"Bearer t",
        b"ripp-version": b"1",
        b"to": b"<tel:+12125551234>",
        b"from": b"<tel:+14085551234>;tag=1",
        b"identity": IDENTITY.encode(),
    }
    fields.update({k.replace("_", "-").encode(): v for k, v in overrides.items()})
    return list(fields.items())


# ---------------------------------------------------------------- flow control, measured


def test_long_call_never_waits_for_a_flow_control_window() -> None:
    """Two minutes of 20 ms frames both ways over HTTP/2: no byte ever waits for a window
    and the receive windows stay well open, because data is acknowledged as decoded (h2
    sends WINDOW_UPDATE once half a window is acknowledged, so half is the floor)."""
    trunk = Trunk(binding="h2", impairment=Impairment(delay=0.02))
    handle = trunk.connect()
    frames = 6000  # 120 s of 20 ms frames
    trunk.stream_media(handle, start=trunk.net.now + 0.01, count=frames)
    trunk.stream_media(handle, start=trunk.net.now + 0.01, count=frames, from_server=True)
    lowest = 1.0
    held = 0
    config = trunk.config
    end = trunk.net.now + frames * 0.02 + 1.0
    while trunk.net.now < end:
        trunk.net.run_for(1.0)
        for endpoint in (trunk.rclient, trunk.rserver()):
            for connection in endpoint._connections:
                conn = connection.h2  # type: ignore[attr-defined]
                held += sum(len(p) for p in connection.pending.values())  # type: ignore[attr-defined]
                lowest = min(
                    lowest,
                    conn.inbound_flow_control_window / config.h2_connection_window,
                    *(
                        conn._get_stream_by_id(s).inbound_flow_control_window
                        / config.h2_stream_window
                        for s in list(conn.streams)
                        if not conn.streams[s].closed
                    ),
                )
    assert held == 0
    assert lowest > 0.5, lowest
    assert len(trunk.c2s[handle].received) == frames
    assert len(trunk.s2c[handle].received) == frames


def test_a_peer_that_does_not_read_costs_a_bounded_send_buffer() -> None:
    """A raw client that never acknowledges: our sends stop at its window, and the server
    holds at most h2_max_send_buffer per stream before resetting it."""
    config = RippConfig(jitter_buffer=False, h2_max_send_buffer=4096)
    server = _server(config)
    raw = RawPeer(server)
    stream_id = raw.request(_create_headers(), end=True)
    assert raw.status(stream_id) == 201
    (response,) = raw.of(h2.events.ResponseReceived, stream_id)
    location = dict(response.headers)[b"location"].decode()
    path = location.split("a.example:443", 1)[1]
    signaling = raw.request(
        [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"a.example:443"),
            (b":path", path.encode()),
            (b"authorization", b"Bearer t"),
            (b"content-type", b"application/ripp-signaling"),
        ]
    )
    media = raw.request(
        [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"a.example:443"),
            (b":path", path.encode()),
            (b"authorization", b"Bearer t"),
            (b"content-type", b"application/ripp-media"),
        ]
    )
    assert raw.status(signaling) == 200 and raw.status(media) == 200
    (handle,) = server.calls
    server.answer(handle, 0.1)
    # Never acknowledge: the server may send one window (64 KiB) and must hold the rest.
    for n in range(2000):
        server.send_media(handle, Codec.PCMU, 0.02, bytes(160), 0.2 + n * 0.02)
        raw.now = 0.2 + n * 0.02
        raw.pump()
    (connection,) = server._connections
    assert all(len(p) <= 4096 for p in connection.pending.values())  # type: ignore[attr-defined]


# ---------------------------------------------------------------- bounds and bad peers


def test_malformed_request_is_a_stream_error_and_other_calls_carry_on() -> None:
    trunk = Trunk(binding="h2")
    handle = trunk.connect()
    server = trunk.rserver()
    assert isinstance(server, RippH2Server)
    raw = RawPeer(server)
    # A trailing space, body still open: 400, then the stream is reset.
    bad = raw.request(_create_headers(to=b"<tel:+1212> "), end=False)
    assert raw.status(bad) == 400
    # after a whole response, RST_STREAM(NO_ERROR) only tells the peer to stop sending
    # (RFC 9113 8.1); the request was answered 400 above
    assert raw.of(h2.events.StreamReset, bad)[0].error_code == h2.errors.ErrorCodes.NO_ERROR
    missing = raw.request([(b":method", b"POST"), (b":path", b"/ripp/calls")], end=True)
    assert raw.status(missing) == 400
    assert not raw.closed
    good = raw.request(_create_headers(), end=True)
    assert raw.status(good) == 201
    trunk.stream_media(handle, start=trunk.net.now + 0.01, count=5)
    trunk.net.run_for(0.5)
    assert sorted(trunk.c2s[handle].received) == [0, 1, 2, 3, 4]
    assert trunk.client_state(handle) is CallState.CONNECTED


def test_refused_request_is_answered_then_reset_with_no_error() -> None:
    """HTTP/2's STOP_SENDING: the refusal, then RST_STREAM(NO_ERROR), and no state kept."""
    server = _server()
    raw = RawPeer(server)
    stream_id = raw.request(_create_headers(**{":path": b"/nowhere"}))
    assert raw.status(stream_id) == 404
    (reset,) = raw.of(h2.events.StreamReset, stream_id)
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR
    (connection,) = server._connections
    assert not connection.streams


def test_oversized_header_list_is_refused_on_its_stream() -> None:
    server = _server(RippConfig(max_header_bytes=2048))
    raw = RawPeer(server)
    stream_id = raw.request(_create_headers(x_pad=b"x" * 3000), end=True)
    assert raw.status(stream_id) == 400
    assert not raw.closed


def test_connections_per_address_and_idle_connections_are_bounded() -> None:
    config = RippConfig(max_connections_per_address=2, idle_connection_timeout=30.0)
    server = _server(config)
    assert server.connection_made(("192.0.2.1", 1), 0.0)
    assert server.connection_made(("192.0.2.1", 2), 0.0)
    assert not server.connection_made(("192.0.2.1", 3), 0.0)
    assert server.connection_made(("192.0.2.2", 1), 0.0)
    timer = server.get_timer()
    assert timer == pytest.approx(30.0)
    server.handle_timer(30.0)
    out = server.data_to_send(30.0)
    closed = {key for chunk, key in out if chunk == b""}
    assert closed == {("192.0.2.1", 1), ("192.0.2.1", 2), ("192.0.2.2", 1)}
    assert not server._connections


def test_peer_exceeding_max_concurrent_streams_loses_only_its_connection() -> None:
    config = RippConfig(max_streams_per_connection=4)
    server = _server(config)
    raw = RawPeer(server)
    other = RawPeer(server, ("192.0.2.8", 1))
    for _ in range(4):
        stream_id = raw.conn.get_next_available_stream_id()
        raw.conn.send_headers(stream_id, _create_headers(), end_stream=False)
    raw.pump()
    # A fifth stream beyond the advertised limit: h2 refuses it (RFC 9113 5.1.2).
    # The h2 client honours the limit, so the fifth HEADERS frame is built by hand.
    stream_id = raw.conn.get_next_available_stream_id()
    block = raw.conn.encoder.encode(_create_headers())
    frame = hyperframe.frame.HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"])
    server.receive_data(frame.serialize(), raw.peer, 0.0)
    out = server.data_to_send(0.0)
    assert (b"", raw.peer) in out  # GOAWAY, then that connection is closed
    assert not any(key == other.peer and chunk == b"" for chunk, key in out)
    good = other.request(_create_headers(), end=True)
    assert other.status(good) == 201


# ---------------------------------------------------------------- mapping and validation


def test_reset_codes_map_to_http2() -> None:
    codes = h2.errors.ErrorCodes
    assert h2_reset_code(H3_REQUEST_CANCELLED) is codes.CANCEL
    assert h2_reset_code(H3_REQUEST_REJECTED) is codes.REFUSED_STREAM
    assert h2_reset_code(H3_MESSAGE_ERROR) is codes.PROTOCOL_ERROR
    assert h2_reset_code(H3_EXCESSIVE_LOAD) is codes.ENHANCE_YOUR_CALM
    assert h2_reset_code(0x1F21) is codes.INTERNAL_ERROR


_names = st.binary(min_size=1, max_size=12)
_values = st.binary(max_size=20)


@given(st.lists(st.tuples(_names, _values), max_size=12))
def test_malformed_reason_never_raises(headers: list[tuple[bytes, bytes]]) -> None:
    reason = malformed_reason(headers)
    assert reason is None or isinstance(reason, str)


@given(
    st.lists(
        st.tuples(
            st.from_regex(rb"\A[a-z][a-z0-9-]{0,10}\Z"), st.from_regex(rb"\A[!-~]([ -~]*[!-~])?\Z")
        ),
        max_size=8,
    )
)
def test_well_formed_requests_pass_validation(regular: list[tuple[bytes, bytes]]) -> None:
    pseudo = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"a"),
        (b":path", b"/"),
    ]
    assert malformed_reason(pseudo + regular) is None
    assert malformed_reason(regular + pseudo) is not None or not regular
    assert malformed_reason(pseudo[1:] + regular) is not None  # no :method
    assert malformed_reason(pseudo[:2] + pseudo[3:] + regular) is None  # :authority optional
    assert malformed_reason(pseudo + pseudo[2:3] + regular) is not None  # ... but not twice
