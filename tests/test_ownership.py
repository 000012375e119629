"""Who may reach a call, and what a hostile peer can make a server hold (issue 6).

Deterministic, in virtual time over real aioquic: a legitimate call (the bystander) runs
with media both ways while a raw HTTP/3 client with *another* bearer token (another
principal) probes the server. Each test checks the documented wire form of the refusal and
that the bystander's call is intact: every frame arrived once, nothing was injected.
The same classes are attacked against a real ``ripp serve`` process in ``tests/hostile``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from ripp_core import (
    AuthRequest,
    CallIncoming,
    CallState,
    ChecksRequested,
    ProtocolViolation,
    RippConfig,
    RippServer,
    Unauthorized,
)
from ripp_core._errors import H3_MESSAGE_ERROR
from ripp_core._h3 import _random_call_id
from ripp_core._varint import encode_varint
from ripp_core.testing import INSECURE_CHECKS, server_quic_configuration

from .call_harness import _PKI, Trunk
from .test_bad_input import (
    MEDIA,
    RAW_ADDR,
    SIGNALING,
    Bystander,
    RawH3Client,
    assert_refused,
    call_headers,
    creation_headers,
    only_violation,
    pcmu,
)


def bystander_path(bystander: Bystander) -> str:
    uri = bystander.trunk.rserver().calls[bystander.server_handle].uri
    assert uri is not None
    return urlsplit(uri).path


# ====================================================================== call ownership


def test_call_ids_are_128_random_bits() -> None:
    ids = {_random_call_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    server = RippServer(server_quic_configuration(_PKI), instance_id="x", **INSECURE_CHECKS)
    assert server._call_id_source is _random_call_id


@pytest.mark.parametrize("content_type", [SIGNALING, MEDIA])
def test_another_principal_cannot_attach_to_a_call(content_type: str) -> None:
    """Issue 6, class 3: with another token, on another connection, a peer opened media
    requests on a neighbour's call URI, heard its audio and injected frames."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)  # token "raw-token": another principal
    path = bystander_path(bystander)
    stream = raw.request(call_headers(path, content_type), end_stream=False)
    raw.send(stream, pcmu(1000))  # an attempt to inject audio right away
    response = raw.responses[stream]
    raw.settle(lambda: response.status is not None)
    assert_refused(response, 404, 481)
    assert not response.frames()  # heard nothing
    violation = only_violation(bystander)
    assert (violation.error, violation.status, violation.call) == ("UnknownCall", 404, None)
    bystander.assert_intact()  # every frame once both ways: nothing injected


def test_the_same_principal_may_attach_from_another_connection() -> None:
    """Ownership is by principal, not by connection: the owner's client may move."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk, ("127.0.0.1", 50002))
    path = raw.create_call()
    other = RawH3Client(bystander.trunk, ("127.0.0.1", 50003))
    signaling = other.open(path, SIGNALING)
    other.settle(lambda: {"type": "pending"} in other.responses[signaling].messages())
    assert other.responses[signaling].status == 200
    bystander.assert_intact()


def test_a_forged_reestablish_of_another_principals_call_is_404() -> None:
    """Issue 6, class 3: a forged Ripp-Reestablish used to detach (end) a neighbour's
    call."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    uri = bystander.trunk.rserver().calls[bystander.server_handle].uri
    response = raw.create(ripp_reestablish=f"<{uri}>;state=connected")
    assert_refused(response, 404, 481)
    assert "reestablish" not in response.headers.get("location", "")
    bystander.assert_intact()
    assert set(bystander.trunk.rserver().calls) >= {bystander.server_handle}


def test_reestablishing_an_unknown_call_of_this_instance_is_404() -> None:
    """Issue 6, class 1: a marker naming a call this instance does not have, with
    state=connected, raised LocalStateError in the server and ended the process."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    calls_before = set(bystander.trunk.rserver().calls)
    path = "https://a.example:443/ripp/instances/inst-a/calls/AAAAAAAAAAAAAAAAAAAAAA"
    response = raw.create(ripp_reestablish=f"<{path}>;state=connected")
    assert_refused(response, 404, 481)
    assert set(bystander.trunk.rserver().calls) == calls_before
    bystander.assert_intact()


def test_reestablishing_a_call_of_another_instance_creates_it_here() -> None:
    """R10: a call this instance never had, named under another instance, is taken."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path = "https://a.example:443/ripp/instances/inst-gone/calls/AAAAAAAAAAAAAAAAAAAAAA"
    response = raw.create(ripp_reestablish=f"<{path}>;state=connected")
    assert response.status == 201
    incoming = bystander.server.of(CallIncoming)[-1]
    assert incoming.reestablishes == path and incoming.state is CallState.CONNECTED
    assert incoming.principal != bystander.server.of(CallIncoming)[0].principal
    bystander.assert_intact()


def test_the_authorizer_names_the_principal_every_request_is_checked_against() -> None:
    trunk = Trunk()
    seen: list[AuthRequest] = []

    def authorizer(request: AuthRequest, now: float) -> str:
        seen.append(request)
        if request.token == "revoked":
            raise Unauthorized("token revoked", challenge='Bearer error="invalid_token"')
        return "tenant-1" if request.token.startswith("t1") else "tenant-2"

    trunk.rserver()._authorizer = authorizer
    raw = RawH3Client(trunk)
    path = raw.exchange(creation_headers(authorization="Bearer t1-a")).headers["location"]
    path = urlsplit(path).path
    # the same principal with another token reaches the call; another principal does not
    ok = raw.request(
        [
            (k, "Bearer t1-b" if k == "authorization" else v)
            for k, v in call_headers(path, SIGNALING)
        ],
        end_stream=False,
    )
    raw.settle(lambda: raw.responses[ok].status is not None)
    assert raw.responses[ok].status == 200
    refused = raw.exchange(
        [(k, "Bearer t2" if k == "authorization" else v) for k, v in call_headers(path, MEDIA)],
        end_stream=False,
    )
    assert_refused(refused, 404, 481)
    # a refused token gets the challenge its error carries (RFC 6750 3.1)
    revoked = raw.exchange(
        [
            (k, "Bearer revoked" if k == "authorization" else v)
            for k, v in call_headers(path, MEDIA)
        ],
        end_stream=False,
    )
    assert_refused(revoked, 401)
    assert revoked.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert [r.call for r in seen] == [None, path.rsplit("/", 1)[1]] * 1 + [
        path.rsplit("/", 1)[1]
    ] * 2


# ====================================================================== malformed requests


def test_a_header_value_ending_in_a_space_costs_that_request_only() -> None:
    """Issue 6, class 8: aioquic closed the whole connection (and every call on it)."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.create(to="<tel:+12125550000> ")
    assert response.status == 400 or response.reset is not None
    assert raw.terminated is None
    assert raw.create().status == 201  # the same connection carries on
    bystander.assert_intact()


def _qpack_int(value: int, prefix: int, first: int) -> bytes:
    """RFC 7541 5.1 prefix integer, ``first`` holding the bits above the prefix."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _qpack_literal_block(fields: list[tuple[str, str]]) -> bytes:
    """A QPACK field section of literal field lines with literal names (RFC 9204 4.5.6),
    no dynamic table: what a peer sends when its encoder does not refuse long values."""
    block = bytearray(b"\x00\x00")
    for name, value in fields:
        block += _qpack_int(len(name), 3, 0x20) + name.encode()
        block += _qpack_int(len(value), 7, 0x00) + value.encode()
    return bytes(block)


def test_a_64_kb_to_header_is_400_and_the_connection_survives() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    fields = creation_headers(to="<tel:+1" + "2" * 65536 + ">")
    block = _qpack_literal_block(fields)
    stream = raw.quic.get_next_available_stream_id()
    raw.responses[stream] = raw._response(stream)
    raw.quic.send_stream_data(
        stream, encode_varint(1) + encode_varint(len(block)) + block, end_stream=True
    )
    response = raw.responses[stream]
    raw.settle(lambda: response.status is not None or response.reset is not None)
    assert response.status == 400 or response.reset == H3_MESSAGE_ERROR
    assert raw.terminated is None
    assert raw.create().status == 201
    bystander.assert_intact()


def test_a_headers_frame_announcing_2_62_bytes_is_refused_at_once() -> None:
    """Issue 6, class 7: the server buffered such a frame until it completed (23 MB on
    4 streams, the bystander's RTT p99 from 3 to 182 ms)."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    stream = raw.quic.get_next_available_stream_id()
    raw.responses[stream] = raw._response(stream)
    raw.quic.send_stream_data(stream, encode_varint(1) + encode_varint(2**62 - 1) + b"x" * 1000)
    raw.settle(
        lambda: raw.responses[stream].status is not None or raw.responses[stream].reset is not None
    )
    if raw.responses[stream].reset is None and raw.responses[stream].stop_sending is None:
        for _ in range(20):  # the rest of the "frame" is discarded as it arrives
            raw.quic.send_stream_data(stream, b"y" * 1000)
    bystander.trunk.net.run_for(0.1)
    response = raw.responses[stream]
    assert response.status == 400 or response.reset == H3_MESSAGE_ERROR
    assert raw.terminated is None
    server_connection = next(
        c for c in bystander.trunk.rserver()._connections if c.peer == RAW_ADDR
    )
    assert server_connection.h3.buffered() < 2000
    assert raw.create().status == 201
    bystander.assert_intact()


def test_refused_requests_hold_no_state() -> None:
    """Issue 6, class 6: refused requests leaked (about 47 MB per 2500), each logging and
    echoing the whole path in Ripp-Reason."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    long_path = "/nowhere/" + "z" * 15000
    for index in range(300):
        stream = raw.request(call_headers(long_path, MEDIA), end_stream=False)
        raw.send(stream, pcmu(index))  # bodies left open
        if index % 50 == 49:
            bystander.trunk.net.run_for(0.02)
    bystander.trunk.net.run_for(0.2)
    answered = [r for r in raw.responses.values() if r.status == 404]
    assert len(answered) == 300
    assert all(len(r.headers["ripp-reason"]) <= 80 for r in answered)
    server = bystander.trunk.rserver()
    connection = next(c for c in server._connections if c.peer == RAW_ADDR)
    assert len(connection.streams) < 10
    assert len(connection.h3._stream) < 20
    assert len(bystander.server.of(ProtocolViolation)) >= 300  # every refusal is reported
    bystander.assert_intact()


# ====================================================================== deferred checks


def _deferred_trunk(**settings: object) -> Trunk:
    config = RippConfig(jitter_buffer=False).with_settings(
        [f"{k}={v}" for k, v in settings.items()]
    )
    trunk = Trunk(config=config, server_config=config)
    server = trunk.rserver()
    server._deferred = True
    return trunk


def test_deferred_checks_park_requests_until_completed() -> None:
    trunk = _deferred_trunk()
    raw = RawH3Client(trunk)
    stream = raw.request(creation_headers())
    trunk.net.run_for(0.05)
    assert raw.responses[stream].status is None  # parked
    requested = trunk.servers["a"].of(ChecksRequested)
    assert len(requested) == 1 and requested[0].identity is not None
    ticket = requested[0].ticket
    trunk.rserver().complete_checks(ticket, trunk.net.now, principal="p")
    trunk.run_until(lambda: raw.responses[stream].status is not None, 0.5)
    assert raw.responses[stream].status == 201
    path = urlsplit(raw.responses[stream].headers["location"]).path
    # a signaling request is parked too, and its early body waits with it
    signaling = raw.open(path, SIGNALING)
    trunk.net.run_for(0.05)
    second = trunk.servers["a"].of(ChecksRequested)[-1]
    assert second.request.call == path.rsplit("/", 1)[1]
    trunk.rserver().fail_checks(second.ticket, Unauthorized("expired"), trunk.net.now)
    trunk.run_until(lambda: raw.responses[signaling].status is not None, 0.5)
    assert_refused(raw.responses[signaling], 401)


def test_deferred_checks_time_out_and_are_bounded() -> None:
    trunk = _deferred_trunk(check_timeout=0.2, max_pending_checks=3)
    raw = RawH3Client(trunk)
    streams = [raw.request(creation_headers()) for _ in range(5)]
    trunk.net.run_for(0.05)
    statuses = [raw.responses[s].status for s in streams]
    assert statuses.count(503) == 2 and statuses.count(None) == 3
    trunk.net.run_for(0.3)
    assert [raw.responses[s].status for s in streams] == [503] * 5
    assert all(raw.responses[s].headers.get("retry-after") == "1" for s in streams)


# ====================================================================== admission control


def test_an_overloaded_server_refuses_new_calls_with_503_and_keeps_its_calls() -> None:
    """Issue 6, class 10: past capacity every call degraded together."""
    bystander = Bystander()
    server = bystander.trunk.rserver()
    now = bystander.trunk.net.now
    for _ in range(30):
        server.report_load(0.5, now)  # the event loop is half a second late
    assert server.overloaded(now)
    raw = RawH3Client(bystander.trunk)
    response = raw.create()
    assert_refused(response, 503)
    assert response.headers["retry-after"] == "1"
    # the calls already up are untouched; once the load is gone, new calls come in again
    bystander.assert_intact(new_call=False)
    for _ in range(60):
        server.report_load(0.0, bystander.trunk.net.now)
    bystander.trunk.net.run_for(server.config.admission_hold)
    assert raw.create().status == 201


def test_max_calls_is_503_with_retry_after() -> None:
    config = RippConfig(jitter_buffer=False, max_calls=1)
    bystander = Bystander(Trunk(config=config, server_config=config))
    raw = RawH3Client(bystander.trunk)
    response = raw.create()
    assert_refused(response, 503)
    assert response.headers["retry-after"] == "1"
    bystander.assert_intact(new_call=False)


# ====================================================================== connections


def test_a_connection_that_carries_no_call_is_closed_when_idle() -> None:
    """Issue 6, class 5: handshaken connections that never sent a request were kept for
    ever."""
    config = RippConfig(jitter_buffer=False, idle_connection_timeout=0.5)
    bystander = Bystander(Trunk(config=config, server_config=config))
    raw = RawH3Client(bystander.trunk)
    bystander.trunk.net.run_for(0.3)
    assert raw.terminated is None
    bystander.trunk.net.run_for(0.4)
    assert raw.terminated is not None
    bystander.assert_intact()


def test_idle_connections_never_lock_new_callers_out() -> None:
    """Issue 6, class 5: 64 idle connections used to fill max_connections (408 for the
    next caller)."""
    config = RippConfig(jitter_buffer=False, max_connections=4)
    bystander = Bystander(Trunk(config=config, server_config=config))
    idle = [RawH3Client(bystander.trunk, ("127.0.0.1", 51000 + i)) for i in range(3)]
    bystander.trunk.net.run_for(0.05)
    fresh = RawH3Client(bystander.trunk, ("127.0.0.1", 52000))
    assert fresh.create().status == 201
    bystander.trunk.net.run_for(0.5)  # the closed peer drains (3 PTO) before it reports
    assert sum(1 for c in idle if c.terminated is not None) == 1  # the longest idle
    bystander.assert_intact(new_call=False)


def test_many_handshakes_in_progress_are_answered_with_retry() -> None:
    """Issue 6, class 4: with retry_threshold handshakes open, Initials get a stateless
    Retry; a real client follows it and connects."""
    config = RippConfig(jitter_buffer=False, retry_threshold=1)
    trunk = Trunk(config=config, server_config=config)
    first = RawH3Client(trunk, ("127.0.0.1", 53000), wait=False)
    second = RawH3Client(trunk, ("127.0.0.1", 53001), wait=False)
    assert trunk.run_until(lambda: first.connected and second.connected, 1.0)
    assert first.quic._retry_count + second.quic._retry_count >= 1
    assert second.create().status == 201


def test_a_call_whose_peer_never_ends_its_streams_is_forgotten() -> None:
    """Issue 6, class 9: calls hung up without END_STREAM on their streams were held for
    ever."""
    trunk = Trunk(auto="hold")
    raw = RawH3Client(trunk)
    path, _signaling, media = raw.open_call(media=2)
    handle = path.rsplit("/", 1)[1]
    server = trunk.rserver()
    server.terminate(handle, trunk.net.now, 200, "Normal")
    trunk.net.run_for(0.1)
    assert handle in server.calls  # its streams are still open at the peer
    trunk.net.run_for(server.config.close_linger)
    assert handle not in server.calls
    assert all(raw.responses[s].reset is not None or raw.responses[s].ended for s in media)
