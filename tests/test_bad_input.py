"""Bad input at a RIPP server: each offence gets its documented wire reaction, and an
unrelated call that is already up (media flowing both ways) never notices.

The offender is a raw HTTP/3 client (aioquic QuicConnection + H3Connection, no RIPP core)
on its own address and QUIC connection, so it can send requests no RippClient would.
Everything runs on the Trunk's virtual network, in virtual time.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs
import pytest
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.connection import QuicConnection

from ripp_core import (
    AuthRequest,
    CallState,
    CallTerminated,
    Codec,
    Forbidden,
    MediaReceived,
    ProtocolViolation,
    RippConfig,
    Termination,
)
from ripp_core._errors import H3_MESSAGE_ERROR
from ripp_core._frames import (
    AckFrame,
    Frame,
    FrameDecoder,
    FrameType,
    MediaFrame,
    SignalFrame,
    encode_media,
    encode_signal,
)
from ripp_core._varint import encode_varint
from ripp_core.testing import client_quic_configuration

from .call_harness import _PKI, IDENTITY, AppEndpoint, Trunk

RAW_ADDR = ("127.0.0.1", 50001)
JUNK_ADDR = ("127.0.0.1", 50002)
AUTHORITY = "a.example:443"
CALLS_PATH = "/ripp/calls"
SIGNALING = "application/ripp-signaling"
MEDIA = "application/ripp-media"
LEGIT_FRAMES = 40  # 0.8 s of 20 ms frames each way


# ====================================================================== raw HTTP/3 client


@attrs.define
class RawResponse:
    """Everything the raw client saw on one request stream."""

    headers: dict[str, str] = attrs.Factory(dict)
    data: bytearray = attrs.Factory(bytearray)
    ended: bool = False
    reset: int | None = None  # RESET_STREAM error code from the server
    stop_sending: int | None = None  # STOP_SENDING error code from the server

    @property
    def status(self) -> int | None:
        value = self.headers.get(":status")
        return int(value) if value is not None else None

    def frames(self) -> list[Frame]:
        decoder = FrameDecoder(frozenset(FrameType), 1 << 20, 1 << 20)
        return decoder.feed(bytes(self.data))

    def messages(self) -> list[dict[str, object]]:
        return [json.loads(f.payload) for f in self.frames() if isinstance(f, SignalFrame)]

    def acks(self) -> list[int]:
        return [f.sequence for f in self.frames() if isinstance(f, AckFrame)]


class RawH3Client:
    """A bare HTTP/3 client on the virtual network (implements the Endpoint protocol)."""

    def __init__(
        self, trunk: Trunk, addr: tuple[str, int] = RAW_ADDR, *, wait: bool = True
    ) -> None:
        self.trunk = trunk
        self.quic = QuicConnection(
            configuration=client_quic_configuration(_PKI, server_name="a.example")
        )
        self.h3 = H3Connection(self.quic)
        self.responses: dict[int, RawResponse] = {}
        self.connected = False
        self.terminated: quic_events.ConnectionTerminated | None = None
        trunk.net.add(addr, self)
        self.quic.connect(trunk.server_addrs["a"], trunk.net.now)
        if wait:
            assert trunk.run_until(lambda: self.connected, 1.0)

    # ---------------------------------------------------------------- Endpoint protocol
    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.quic.receive_datagram(data, addr, now)
        self._process()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return self.quic.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.quic.get_timer()

    def handle_timer(self, now: float) -> None:
        self.quic.handle_timer(now)
        self._process()

    def _process(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, quic_events.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, quic_events.ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, quic_events.StreamReset):
                self._response(event.stream_id).reset = event.error_code
            elif isinstance(event, quic_events.StopSendingReceived):
                self._response(event.stream_id).stop_sending = event.error_code
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived):
                    response = self._response(h3_event.stream_id)
                    for name, value in h3_event.headers:
                        response.headers[name.decode()] = value.decode()
                    response.ended |= h3_event.stream_ended
                elif isinstance(h3_event, DataReceived):
                    response = self._response(h3_event.stream_id)
                    response.data += h3_event.data
                    response.ended |= h3_event.stream_ended

    def _response(self, stream_id: int) -> RawResponse:
        return self.responses.setdefault(stream_id, RawResponse())

    # ---------------------------------------------------------------- requests
    def request(
        self, headers: Iterable[tuple[str, str]], body: bytes = b"", end_stream: bool = True
    ) -> int:
        """Send one request; returns its stream id (the response lands in ``responses``)."""
        stream_id = self.quic.get_next_available_stream_id()
        self.responses[stream_id] = RawResponse()
        fields = [(k.encode(), v.encode()) for k, v in headers]
        self.h3.send_headers(stream_id, fields, end_stream=end_stream and not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=end_stream)
        return stream_id

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.h3.send_data(stream_id, data, end_stream=end_stream)

    def exchange(
        self, headers: Iterable[tuple[str, str]], body: bytes = b"", end_stream: bool = True
    ) -> RawResponse:
        """Send a request and run the network until its response is complete (or reset)."""
        stream_id = self.request(headers, body, end_stream)
        response = self.responses[stream_id]
        self.settle(lambda: response.ended or response.reset is not None)
        return response

    def settle(self, predicate: Callable[[], bool], timeout: float = 0.5) -> None:
        assert self.trunk.run_until(predicate, timeout)

    # ---------------------------------------------------------------- RIPP-shaped requests
    def create(self, **overrides: str | None) -> RawResponse:
        """A call-creation request; ``overrides`` replace (or, with None, drop) headers."""
        return self.exchange(creation_headers(**overrides))

    def create_call(self) -> str:
        """Create a call; returns its call URI path."""
        response = self.create()
        assert response.status == 201, response
        return urlsplit(response.headers["location"]).path

    def open(self, path: str, content_type: str) -> int:
        """Open a signaling or media request on a call URI (body left open)."""
        return self.request(call_headers(path, content_type), end_stream=False)

    def open_call(self, media: int = 2) -> tuple[str, int, list[int]]:
        """Create a call, attach signaling (-> Pending) and ``media`` media requests."""
        path = self.create_call()
        signaling = self.open(path, SIGNALING)
        sig = self.responses[signaling]
        self.settle(lambda: {"type": "pending"} in sig.messages())
        assert sig.status == 200
        streams = [self.open(path, MEDIA) for _ in range(media)]
        self.settle(lambda: all(self.responses[s].status == 200 for s in streams))
        return path, signaling, streams


def creation_headers(**overrides: str | None) -> list[tuple[str, str]]:
    fields: dict[str, str | None] = {
        ":method": "POST",
        ":scheme": "https",
        ":authority": AUTHORITY,
        ":path": CALLS_PATH,
        "authorization": "Bearer raw-token",
        "ripp-version": "1",
        "to": "<tel:+12125550000>",
        "from": '"Mallory" <tel:+14085550000>;tag=9',
        "identity": IDENTITY,
    }
    for name, value in overrides.items():
        fields[name.replace("_", "-")] = value
    return [(k, v) for k, v in fields.items() if v is not None]


def call_headers(path: str, content_type: str, method: str = "POST") -> list[tuple[str, str]]:
    return [
        (":method", method),
        (":scheme", "https"),
        (":authority", AUTHORITY),
        (":path", path),
        ("authorization", "Bearer raw-token"),
        ("content-type", content_type),
    ]


def pcmu(sequence: int) -> bytes:
    frame = MediaFrame(
        sequence=sequence,
        timestamp=sequence * 960,
        codec=Codec.PCMU,
        duration_units=40,
        payload=bytes([sequence & 0xFF]) * 160,
    )
    return encode_media(frame)


def media_header(length: int) -> bytes:
    return encode_varint(FrameType.MEDIA) + encode_varint(length)


# ====================================================================== the legitimate call


class Bystander:
    """A trunk with a connected call whose media flows both ways during the test."""

    def __init__(self, trunk: Trunk | None = None) -> None:
        self.trunk = trunk or Trunk()
        self.handle = self.trunk.connect()
        self.server_name, self.server_handle = self.trunk.server_calls[self.handle]
        start = self.trunk.net.now + 0.01
        self.trunk.stream_media(self.handle, start=start, count=LEGIT_FRAMES)
        self.trunk.stream_media(self.handle, start=start, count=LEGIT_FRAMES, from_server=True)
        # let the media get going before the offender shows up
        self.trunk.net.run_for(0.1)
        assert self.trunk.c2s[self.handle].received and self.trunk.s2c[self.handle].received
        # calls of the raw client stay where the raw client left them: no auto ring/answer
        self.trunk.auto = "hold"
        self._violations = len(self.server.of(ProtocolViolation))

    @property
    def server(self) -> AppEndpoint:
        return self.trunk.servers[self.server_name]

    def new_violations(self) -> list[ProtocolViolation]:
        return self.server.of(ProtocolViolation)[self._violations :]

    def assert_intact(self, *, new_call: bool = True) -> None:
        """The legitimate call is up at both ends and all its media arrived both ways."""
        trunk, handle = self.trunk, self.handle
        c2s, s2c = trunk.c2s[handle], trunk.s2c[handle]
        everything = list(range(LEGIT_FRAMES))
        trunk.run_until(
            lambda: sorted(c2s.received) == everything and sorted(s2c.received) == everything,
            timeout=2.0,
        )
        assert sorted(c2s.received) == everything
        assert sorted(s2c.received) == everything
        assert c2s.duplicates == s2c.duplicates == 0
        assert trunk.client_state(handle) is CallState.CONNECTED
        server_call = trunk.rserver(self.server_name).calls[self.server_handle]
        assert server_call.state is CallState.CONNECTED
        assert not [v for v in self.new_violations() if v.call == self.server_handle]
        assert not [e for e in trunk.client.of(CallTerminated) if e.call == handle]
        if new_call:
            trunk.auto = "answer"
            another = trunk.connect()
            assert trunk.client_state(another) is CallState.CONNECTED


def only_violation(bystander: Bystander) -> ProtocolViolation:
    violations = bystander.new_violations()
    assert len(violations) == 1, violations
    return violations[0]


def assert_refused(response: RawResponse, status: int, sip: int | None = None) -> None:
    """A non-2xx answer: the status, a ``ripp-reason``, and END_STREAM (no reset)."""
    assert response.status == status, response
    assert response.ended
    assert response.reset is None
    reason = response.headers.get("ripp-reason", "")
    code, _, text = reason.partition(" ")
    assert code == str(sip if sip is not None else status) and text, reason


# ====================================================================== request routing


@pytest.mark.parametrize(
    "path",
    [
        "/ripp/instances/inst-a/calls/999",  # unknown call on this instance
        "/ripp/instances/inst-zz/calls/zz9",  # a call URI of another instance
        "/nope",  # no such resource at all
        "/ripp/instances/inst-a/calls/1/extra",
    ],
)
def test_unknown_uri_is_404(path: str) -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.exchange(call_headers(path, SIGNALING), end_stream=False)
    assert_refused(response, 404, 481)
    violation = only_violation(bystander)
    assert (violation.error, violation.status) == ("UnknownCall", 404)
    assert violation.stream_error is None  # answered, not reset
    bystander.assert_intact()


def test_unknown_call_violation_names_no_local_call() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    # the bystander's handle, but on an instance that is not this one
    path = f"/ripp/instances/inst-zz/calls/{bystander.server_handle}"
    response = raw.exchange(call_headers(path, SIGNALING), end_stream=False)
    assert_refused(response, 404, 481)
    violation = only_violation(bystander)
    assert violation.call is None  # "None when the offence could not be tied to a call"


def test_get_is_405() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.exchange(creation_headers(**{":method": "GET"}))
    assert_refused(response, 405)
    violation = only_violation(bystander)
    assert (violation.error, violation.status) == ("MethodNotAllowed", 405)
    bystander.assert_intact()


@pytest.mark.parametrize("authorization", [None, "Basic x", "Bearer", "bearer-x"])
def test_missing_or_non_bearer_authorization_is_401(authorization: str | None) -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.create(authorization=authorization)
    assert_refused(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    violation = only_violation(bystander)
    assert (violation.error, violation.status, violation.call) == ("Unauthorized", 401, None)
    assert set(bystander.trunk.rserver().calls) == {bystander.server_handle}
    bystander.assert_intact()


def test_authorizer_forbidden_is_403() -> None:
    bystander = Bystander()
    seen: list[AuthRequest] = []

    def authorizer(request: AuthRequest, now: float) -> str:
        seen.append(request)
        if request.token == "readonly":
            raise Forbidden("token readonly may not place calls")
        return f"principal-of-{request.token}"

    bystander.trunk.rserver()._authorizer = authorizer
    raw = RawH3Client(bystander.trunk)
    response = raw.create(authorization="Bearer readonly")
    assert_refused(response, 403)
    assert "www-authenticate" not in response.headers
    assert response.headers["ripp-reason"] == "403 token readonly may not place calls"
    # the hook sees the whole request: method, path, authority, every field, the token
    last = seen[-1]
    assert (last.method, last.path, last.authority, last.token, last.call) == (
        "POST",
        CALLS_PATH,
        AUTHORITY,
        "readonly",
        None,
    )
    assert last.creates_call and last.reestablish is None
    assert last.header("authorization") == "Bearer readonly"
    assert last.header("ripp-version") == "1" and last.header("to") is not None
    violation = only_violation(bystander)
    assert (violation.error, violation.status) == ("Forbidden", 403)
    # the same hook lets a good token through: a raw call here, and the legitimate
    # client's new call in assert_intact
    assert raw.create().status == 201
    bystander.assert_intact()


def test_missing_identity_is_428() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.create(identity=None)
    assert_refused(response, 428)
    violation = only_violation(bystander)
    assert (violation.error, violation.status) == ("IdentityRequired", 428)
    bystander.assert_intact()


def test_invalid_identity_is_403_with_sip_438() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.create(identity="not-a-jws")
    assert_refused(response, 403, 438)
    assert response.headers["ripp-reason"].startswith("438")
    violation = only_violation(bystander)
    assert (violation.error, violation.status) == ("InvalidIdentity", 403)
    bystander.assert_intact()


@pytest.mark.parametrize(
    "overrides",
    [
        {"to": None},
        {"from": None},
        {"to": "not a uri"},
        {"to": "<tel:+1212>;;"},
        {"ripp_version": "2"},
        {"ripp_version": None},
        {"x_padding": "p" * 17_000},  # over max_header_bytes (16384)
    ],
    ids=["no-to", "no-from", "to-not-uri", "to-empty-param", "version-2", "no-version", "huge"],
)
def test_malformed_creation_is_400(overrides: dict[str, str | None]) -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    response = raw.create(**overrides)
    assert_refused(response, 400)
    violation = only_violation(bystander)
    assert (violation.error, violation.status, violation.call) == ("BadRequest", 400, None)
    # nothing was created
    assert set(bystander.trunk.rserver().calls) == {bystander.server_handle}
    bystander.assert_intact()


@pytest.mark.parametrize("name", ["to", "from", "identity", "authorization", "ripp-version"])
def test_repeated_single_field_is_400(name: str) -> None:
    """Two copies of a field a request carries once are ambiguous (an intermediary may
    check one while the server uses the other): malformed, whichever copy is valid."""
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    headers = list(creation_headers())
    first = next(value for key, value in headers if key == name)
    response = raw.exchange([*headers, (name, first)])
    assert_refused(response, 400)
    violation = only_violation(bystander)
    assert (violation.error, violation.status) == ("BadRequest", 400)
    assert "repeated" in violation.message
    assert set(bystander.trunk.rserver().calls) == {bystander.server_handle}
    bystander.assert_intact()


def test_wrong_content_type_is_415() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path = raw.create_call()
    handle = path.rsplit("/", 1)[1]
    response = raw.exchange(call_headers(path, "text/plain"), b"hello")
    assert_refused(response, 415)
    no_type = [(k, v) for k, v in call_headers(path, SIGNALING) if k != "content-type"]
    assert_refused(raw.exchange(no_type, end_stream=False), 415)
    violations = bystander.new_violations()
    # 415 is decided before authorization, so the offence is tied to no call (3.4)
    assert [(v.error, v.status, v.call) for v in violations] == [
        ("UnsupportedMediaType", 415, None)
    ] * 2
    assert handle in bystander.trunk.rserver().calls
    # the call itself is untouched: its signaling request still attaches
    signaling = raw.open(path, SIGNALING)
    raw.settle(lambda: {"type": "pending"} in raw.responses[signaling].messages())
    bystander.assert_intact()


# ====================================================================== refused channels


def test_media_before_pending_is_reset() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path = raw.create_call()
    handle = path.rsplit("/", 1)[1]
    assert bystander.trunk.rserver().calls[handle].state is CallState.CREATED
    stream = raw.open(path, MEDIA)
    response = raw.responses[stream]
    raw.settle(lambda: response.status is not None)
    # protocol.md 3.4/5: the call is asked before any 200 goes out, so "media before
    # pending" is a 409 response with its ripp-reason, and the request ends there.
    assert_refused(response, 409, 409)
    violation = only_violation(bystander)
    assert (violation.error, violation.call) == ("RemoteStateError", handle)
    assert (violation.status, violation.stream_error) == (409, None)
    assert not violation.fatal_to_call
    # the call survives and can still be attached properly
    call = bystander.trunk.rserver().calls[handle]
    assert call.state is CallState.CREATED and not call.media_channels
    signaling = raw.open(path, SIGNALING)
    raw.settle(lambda: {"type": "pending"} in raw.responses[signaling].messages())
    again = raw.open(path, MEDIA)
    raw.settle(lambda: raw.responses[again].status == 200)
    bystander.assert_intact()


def test_second_signaling_request_is_reset_first_keeps_working() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path, signaling, _ = raw.open_call(media=1)
    handle = path.rsplit("/", 1)[1]
    second = raw.open(path, SIGNALING)
    response = raw.responses[second]
    raw.settle(lambda: response.status is not None)
    assert_refused(response, 409, 409)
    violation = only_violation(bystander)
    assert (violation.error, violation.call) == ("RemoteStateError", handle)
    assert (violation.status, violation.fatal_to_call) == (409, False)
    # the first signaling channel still carries messages both ways
    server = bystander.trunk.rserver()
    server.ring(handle, bystander.trunk.net.now)
    first = raw.responses[signaling]
    raw.settle(lambda: {"type": "ringing"} in first.messages())
    assert not first.ended and first.reset is None
    raw.send(signaling, encode_signal(b'{"type":"keepalive"}'))
    bystander.trunk.net.run_for(0.05)
    assert server.calls[handle].state is CallState.RINGING
    assert len(bystander.new_violations()) == 1
    bystander.assert_intact()


def test_media_stream_over_the_limit_is_reset_with_excessive_load() -> None:
    config = RippConfig(jitter_buffer=False, max_media_streams=3)
    bystander = Bystander(Trunk(config=config, server_config=config))
    raw = RawH3Client(bystander.trunk)
    path, _, streams = raw.open_call(media=3)
    handle = path.rsplit("/", 1)[1]
    extra = raw.open(path, MEDIA)
    response = raw.responses[extra]
    raw.settle(lambda: response.status is not None)
    # 429 in protocol.md section 5, a response like every refusal by the call
    assert_refused(response, 429, 503)
    violation = only_violation(bystander)
    assert (violation.error, violation.call) == ("TooManyStreams", handle)
    assert (violation.status, violation.fatal_to_call) == (429, False)
    # the three admitted streams still carry media (acked), nothing else was reset
    for index, stream in enumerate(streams):
        raw.send(stream, pcmu(index))
    raw.settle(lambda: all(raw.responses[s].acks() == [i] for i, s in enumerate(streams)))
    assert all(raw.responses[s].reset is None for s in streams)
    bystander.assert_intact()


# ====================================================================== bad media bodies


def _unknown_codec_frame() -> bytes:
    body = struct.pack("!IIBBB", 7, 7 * 960, 0x42, 40, 0) + bytes(160)
    return media_header(len(body)) + body


def _bad_duration_frame() -> bytes:
    body = struct.pack("!IIBBB", 7, 7 * 960, Codec.PCMU, 40, 0) + bytes(100)  # 20 ms needs 160
    return media_header(len(body)) + body


TRUNCATED = media_header(200) + bytes(20)  # then END_STREAM: 180 bytes short


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (TRUNCATED, None),
        (media_header(1501) + bytes(1501), "FrameTooLarge"),  # over max_frame_size
        (_unknown_codec_frame(), "UnknownCodec"),
        (_bad_duration_frame(), "BadDuration"),
        (media_header(5) + bytes(5), "FrameError"),  # MEDIA shorter than its 11-byte header
        (encode_signal(b'{"type":"keepalive"}'), "FrameError"),  # SIGNAL on a media stream
    ],
    ids=["truncated", "too-large", "unknown-codec", "bad-duration", "short", "signal-on-media"],
)
def test_bad_media_body_resets_only_that_stream(body: bytes, error: str | None) -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path, signaling, (good, bad) = raw.open_call(media=2)
    handle = path.rsplit("/", 1)[1]
    raw.send(bad, body, end_stream=body is TRUNCATED)
    response = raw.responses[bad]
    raw.settle(lambda: response.reset is not None)
    assert response.reset == H3_MESSAGE_ERROR
    violation = only_violation(bystander)
    assert violation.call == handle
    assert error is None or violation.error == error
    assert (violation.status, violation.stream_error) == (None, H3_MESSAGE_ERROR)
    assert not violation.fatal_to_call
    # the call carries on: signaling open, the other media stream still delivers and acks
    server = bystander.trunk.rserver()
    call = server.calls[handle]
    assert call.state is CallState.PENDING
    sig = raw.responses[signaling]
    assert not sig.ended and sig.reset is None
    assert sig.messages() == [{"type": "pending"}]
    raw.send(good, pcmu(0))
    raw.settle(lambda: raw.responses[good].acks() == [0])
    received = [e.frame.sequence for e in bystander.server.of(MediaReceived) if e.call == handle]
    assert received == [0]
    assert len(call.media_channels) == 1
    # a fresh media request on the same call is admitted
    fresh = raw.open(path, MEDIA)
    raw.settle(lambda: raw.responses[fresh].status == 200)
    raw.send(fresh, pcmu(1))
    raw.settle(lambda: raw.responses[fresh].acks() == [1])
    bystander.assert_intact()


def test_truncated_body_is_reported_as_frame_error() -> None:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    _, _, (bad,) = raw.open_call(media=1)
    raw.send(bad, TRUNCATED, end_stream=True)
    raw.settle(lambda: raw.responses[bad].reset is not None)
    assert only_violation(bystander).error == "FrameError"


# ====================================================================== bad signaling


def _raw_call_ended_by_server(
    payload: bytes,
) -> tuple[Bystander, RawH3Client, str, RawResponse, list[RawResponse]]:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path, signaling, media = raw.open_call(media=2)
    handle = path.rsplit("/", 1)[1]
    raw.send(signaling, encode_signal(payload))
    sig = raw.responses[signaling]
    raw.settle(lambda: sig.ended)
    return bystander, raw, handle, sig, [raw.responses[s] for s in media]


def _assert_terminated_by_server(
    bystander: Bystander,
    handle: str,
    sig: RawResponse,
    media: list[RawResponse],
    code: int,
    error: str,
) -> CallTerminated:
    # the raw client is told why on the signaling response, which then ends cleanly
    messages = sig.messages()
    assert messages[0] == {"type": "pending"}
    assert messages[-1]["type"] == "terminate" and messages[-1]["code"] == code
    assert str(messages[-1]["reason"]).startswith("protocol error:")
    assert sig.ended and sig.reset is None
    # the call's media responses are ended too (R8), not reset
    assert bystander.trunk.run_until(lambda: all(m.ended for m in media), 0.5)
    assert all(m.reset is None for m in media)
    violation = only_violation(bystander)
    assert (violation.call, violation.error, violation.fatal_to_call) == (handle, error, True)
    ended: list[CallTerminated] = [
        e for e in bystander.server.of(CallTerminated) if e.call == handle
    ]
    assert len(ended) == 1 and ended[0].code == code
    server = bystander.trunk.rserver()
    assert handle not in server.calls or server.calls[handle].state is CallState.TERMINATED
    return ended[0]


def test_answer_from_client_terminates_that_call_409() -> None:
    bystander, _, handle, sig, media = _raw_call_ended_by_server(b'{"type":"answer"}')
    _assert_terminated_by_server(bystander, handle, sig, media, 409, "RemoteStateError")
    bystander.assert_intact()


@pytest.mark.parametrize(
    "payload",
    [b"this is not json", b"\xff\xfe", b"[1, 2]", b'{"type": "dance"}', b'{"code": 200}'],
    ids=["text", "not-utf8", "array", "unknown-type", "no-type"],
)
def test_undecodable_signal_terminates_that_call_400(payload: bytes) -> None:
    bystander, _, handle, sig, media = _raw_call_ended_by_server(payload)
    _assert_terminated_by_server(bystander, handle, sig, media, 400, "MessageError")
    bystander.assert_intact()


SIGNALING_FRAME_ERRORS = pytest.mark.parametrize(
    ("body", "error", "code"),
    [
        (pcmu(0), "FrameError", 400),  # MEDIA frame on the signaling body
        (encode_varint(FrameType.SIGNAL) + encode_varint(4097) + bytes(4097), "FrameTooLarge", 513),
    ],
    ids=["media-on-signaling", "signal-over-max-signal-size"],
)


def _frame_error_on_signaling(body: bytes) -> tuple[Bystander, str, RawResponse, list[RawResponse]]:
    bystander = Bystander()
    raw = RawH3Client(bystander.trunk)
    path, signaling, media = raw.open_call(media=2)
    raw.send(signaling, body)
    sig = raw.responses[signaling]
    raw.settle(lambda: sig.ended or sig.reset is not None)
    return bystander, path.rsplit("/", 1)[1], sig, [raw.responses[m] for m in media]


@SIGNALING_FRAME_ERRORS
def test_frame_error_on_signaling_ends_the_call(body: bytes, error: str, code: int) -> None:
    bystander, handle, _, media = _frame_error_on_signaling(body)
    violation = only_violation(bystander)
    assert (violation.call, violation.error, violation.fatal_to_call) == (handle, error, True)
    assert violation.stream_error == H3_MESSAGE_ERROR
    ended = [e for e in bystander.server.of(CallTerminated) if e.call == handle]
    assert [(e.code, e.by) for e in ended] == [(code, Termination.FAILURE)]
    # the call's media bodies are ended (R8), not reset
    assert bystander.trunk.run_until(lambda: all(m.ended for m in media), 0.5)
    assert all(m.reset is None for m in media)
    bystander.assert_intact()


@SIGNALING_FRAME_ERRORS
def test_frame_error_on_signaling_is_told_with_terminate(
    body: bytes, error: str, code: int
) -> None:
    _, _, sig, _ = _frame_error_on_signaling(body)
    assert sig.reset is None and sig.ended
    assert sig.stop_sending == H3_MESSAGE_ERROR  # stops reading the broken body
    last = sig.messages()[-1]
    assert last["type"] == "terminate" and last["code"] == code


def test_protocol_violation_termination_is_reported_as_failure() -> None:
    bystander, _, handle, sig, media = _raw_call_ended_by_server(b'{"type":"answer"}')
    ended = _assert_terminated_by_server(bystander, handle, sig, media, 409, "RemoteStateError")
    assert ended.by is Termination.FAILURE


# ====================================================================== garbage datagrams


def garbage_initial(rng: random.Random) -> bytes:
    """A 1200-byte QUIC v1 Initial with random CIDs whose payload never decrypts."""
    head = bytes([0xC0, 0, 0, 0, 1, 8]) + rng.randbytes(8) + b"\x08" + rng.randbytes(8) + b"\x00"
    size = 1200 - len(head) - 2
    return head + encode_varint(size) + rng.randbytes(size)


def long_header(version: bytes, size: int, fill: bytes = b"\x00") -> bytes:
    """A long-header datagram of ``size`` bytes: ``version``, two 8-byte zero CIDs, then fill."""
    head = bytes([0xC0]) + version + b"\x08" + bytes(8) + b"\x08" + bytes(8)
    return head + (fill * size)[: size - len(head)]


class JunkSender:
    """Sends whatever it is given from its own address; records what comes back."""

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, tuple[str, int]]] = []
        self.received: list[bytes] = []

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.received.append(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def test_garbage_datagrams_are_ignored() -> None:
    bystander = Bystander()
    trunk = bystander.trunk
    server = trunk.rserver()
    junk = JunkSender()
    trunk.net.add(JUNK_ADDR, junk)
    rng = random.Random(42)
    live_cid = next(iter(server._by_cid))
    garbage = [
        b"",
        b"\x00",
        rng.randbytes(37),
        rng.randbytes(200),
        rng.randbytes(1200),
        # 1200 bytes of plain text: not QUIC at all (short-header form, unknown CID)
        (b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").ljust(1200, b"x"),
        # short header naming a live connection's CID, garbage protected payload
        bytes([0x40]) + live_cid + rng.randbytes(100),
        # long header, QUIC v1 Initial, random CIDs and garbage payload (fails decryption)
        garbage_initial(rng),
    ]
    garbage += [rng.randbytes(rng.randrange(1, 1500)) for _ in range(50)]
    connections = len(server._connections)
    for data in garbage:
        junk.outbox.append((data, trunk.server_addrs["a"]))
        trunk.net.run_for(0.005)
    # garbage never becomes a call, a violation, or a closed connection
    assert set(server.calls) == {bystander.server_handle}
    assert not bystander.new_violations()
    assert not [e for e in bystander.server.events if "Closed" in type(e).__name__]
    # the live connection is the same object; at most the garbage Initial left a
    # handshake-less connection behind
    assert len(server._connections) <= connections + 1
    bystander.assert_intact()
    # and the raw HTTP/3 client can still connect and create a call afterwards
    raw = RawH3Client(trunk)
    assert raw.create().status == 201


def test_full_size_unknown_version_gets_version_negotiation() -> None:
    bystander = Bystander()
    junk = JunkSender()
    bystander.trunk.net.add(JUNK_ADDR, junk)
    junk.outbox.append((long_header(b"\x1a\x2a\x3a\x4a", 1200), bystander.trunk.server_addrs["a"]))
    bystander.trunk.net.run_for(0.01)
    # RFC 9000, 6.1: a datagram big enough for an Initial with an unknown version is
    # answered with Version Negotiation (version 0) listing QUIC v1
    assert len(junk.received) == 1
    reply = junk.received[0]
    assert reply[0] & 0x80 and reply[1:5] == bytes(4)
    assert b"\x00\x00\x00\x01" in reply[1 + 4 + 1 + 8 + 1 + 8 :]
    assert not bystander.new_violations()
    bystander.assert_intact(new_call=False)


@pytest.mark.parametrize(
    "datagram",
    [
        # RFC 9000, 5.2.2: "Servers MUST drop smaller packets that specify unsupported
        # versions" (smaller than the 1200 bytes a client's first datagram must have)
        long_header(b"\x1a\x2a\x3a\x4a", 60),
        # RFC 9000, 6.1: "An endpoint MUST NOT send a Version Negotiation packet in
        # response to receiving a Version Negotiation packet"
        long_header(bytes(4), 19 + 4 * 300, b"\x00\x00\x00\x01"),
    ],
    ids=["small-unknown-version", "version-negotiation"],
)
def test_no_version_negotiation_reply(datagram: bytes) -> None:
    bystander = Bystander()
    junk = JunkSender()
    bystander.trunk.net.add(JUNK_ADDR, junk)
    junk.outbox.append((datagram, bystander.trunk.server_addrs["a"]))
    bystander.trunk.net.run_for(0.01)
    assert junk.received == []


def test_garbage_initials_do_not_lock_out_new_clients() -> None:
    config = RippConfig(jitter_buffer=False, max_connections=4)
    bystander = Bystander(Trunk(config=config, server_config=config))
    trunk = bystander.trunk
    junk = JunkSender()
    trunk.net.add(JUNK_ADDR, junk)
    rng = random.Random(7)
    for _ in range(config.max_connections):
        junk.outbox.append((garbage_initial(rng), trunk.server_addrs["a"]))
        trunk.net.run_for(0.001)
    raw = RawH3Client(trunk, wait=False)
    assert trunk.run_until(lambda: raw.connected, 2.0)
