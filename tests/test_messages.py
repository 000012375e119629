"""Signaling messages: JSON encoding, decoding and every way a peer can send a bad one."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ripp_core._errors import MessageError, RemoteProtocolError
from ripp_core._frames import SIGNALING_FRAMES, FrameDecoder, SignalFrame, encode_frame
from ripp_core._messages import (
    Answer,
    Keepalive,
    Message,
    MessageType,
    Move,
    Pending,
    Ringing,
    Streams,
    Terminate,
    decode_message,
    encode_message,
)
from tests.strategies import messages, moves, streams_messages, terminates


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Pending(),
        Ringing(),
        Answer(),
        Keepalive(),
        Terminate(200),
        Terminate(486, "Busy Here"),
        Move(),
        Move("https://b.example/ripp/instances/2/calls/9"),
        Streams(1),
        Streams(7),
    ],
)
def test_every_message_type_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def test_every_message_type_is_covered() -> None:
    examples = (Pending(), Ringing(), Answer(), Keepalive(), Terminate(200), Move(), Streams(1))
    assert {m.type for m in examples} == set(MessageType)


@settings(max_examples=200)
@given(messages())
def test_any_message_round_trips(message: Message) -> None:
    encoded = encode_message(message)
    assert decode_message(encoded) == message
    body = json.loads(encoded.decode("utf-8"))
    assert body["type"] == message.type.value


@given(terminates())
def test_terminate_round_trip(message: Terminate) -> None:
    decoded = decode_message(encode_message(message))
    assert isinstance(decoded, Terminate)
    assert (decoded.code, decoded.reason) == (message.code, message.reason)


@given(moves())
def test_move_round_trip(message: Move) -> None:
    assert decode_message(encode_message(message)) == message


@given(streams_messages())
def test_streams_round_trip(message: Streams) -> None:
    assert decode_message(encode_message(message)) == message


# Byte-exact examples from docs/protocol.md section 7 (SIGNAL frame = 00, length, JSON).
@pytest.mark.parametrize(
    ("message", "frame_hex"),
    [
        (Pending(), "00127b2274797065223a2270656e64696e67227d"),
        (Ringing(), "00127b2274797065223a2272696e67696e67227d"),
        (Answer(), "00117b2274797065223a22616e73776572227d"),
        (
            Terminate(200, "Normal"),
            "00317b2274797065223a227465726d696e617465222c22636f6465223a3230302c"
            "22726561736f6e223a224e6f726d616c227d",
        ),
        (
            Terminate(487, "Request Terminated"),
            "003d7b2274797065223a227465726d696e617465222c22636f6465223a3438372c"
            "22726561736f6e223a2252657175657374205465726d696e61746564227d",
        ),
        (
            Move("https://trunk.example.com/ripp/instances/c3/calls/51"),
            "00404c7b2274797065223a226d6f7665222c22757269223a2268747470733a2f2f"
            "7472756e6b2e6578616d706c652e636f6d2f726970702f696e7374616e6365732f"
            "63332f63616c6c732f3531227d",
        ),
        (Move(), "000f7b2274797065223a226d6f7665227d"),
        (Streams(12), "001d7b2274797065223a2273747265616d73222c22636f756e74223a31327d"),
        (Keepalive(), "00147b2274797065223a226b656570616c697665227d"),
    ],
)
def test_protocol_doc_examples(message: Message, frame_hex: str) -> None:
    frame = bytes.fromhex(frame_hex)
    assert encode_frame(SignalFrame(encode_message(message))) == frame
    decoded = FrameDecoder(SIGNALING_FRAMES, 4096, 65536).feed(frame)
    assert len(decoded) == 1 and isinstance(decoded[0], SignalFrame)
    assert decode_message(decoded[0].payload) == message


def test_encoding_is_compact_utf8_json() -> None:
    assert encode_message(Ringing()) == b'{"type":"ringing"}'
    assert encode_message(Terminate(603, "Décliné ☎")) == (
        '{"type":"terminate","code":603,"reason":"Décliné ☎"}'.encode()
    )
    assert encode_message(Move()) == b'{"type":"move"}'
    assert encode_message(Move("https://x/c")) == b'{"type":"move","uri":"https://x/c"}'
    assert encode_message(Streams(4)) == b'{"type":"streams","count":4}'


def test_terminate_reason_is_optional_on_receipt() -> None:
    assert decode_message(b'{"type":"terminate","code":487}') == Terminate(487, "")


def test_unknown_members_are_ignored() -> None:
    assert decode_message(dumps({"type": "ringing", "future": [1, {"x": None}]})) == Ringing()
    assert decode_message(
        dumps({"type": "terminate", "code": 404, "reason": "Not Found", "cause": 1})
    ) == Terminate(404, "Not Found")
    assert decode_message(dumps({"type": "streams", "count": 3, "extra": "y"})) == Streams(3)
    assert decode_message(dumps({"uri": "https://x/y", "type": "move", "z": 1})) == Move(
        "https://x/y"
    )


@pytest.mark.parametrize("code", [200, 699])
def test_terminate_code_edges_accepted(code: int) -> None:
    assert decode_message(dumps({"type": "terminate", "code": code})) == Terminate(code)


@pytest.mark.parametrize("code", [199, 700, 100, 0, -200])
def test_terminate_constructor_rejects_non_final_codes(code: int) -> None:
    with pytest.raises(MessageError):
        Terminate(code)


# --- decode errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"type":"ringing"', id="truncated-json"),
        pytest.param(b'{"type":"ringing"}\xff', id="not-utf8-trailer"),
        pytest.param('{"type":"terminate","code":486,"reason":"é"}'.encode("latin-1"), id="latin1"),
        pytest.param(b"\xfe\xff", id="not-utf8"),
        pytest.param(b'["ringing"]', id="json-array"),
        pytest.param(b'"ringing"', id="json-string"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b"42", id="json-number"),
        pytest.param(b"{}", id="missing-type"),
        pytest.param(b'{"code":200}', id="missing-type-2"),
        pytest.param(b'{"type":5}', id="type-not-string"),
        pytest.param(b'{"type":null}', id="type-null"),
        pytest.param(b'{"type":"hold"}', id="unknown-type"),
        pytest.param(b'{"type":"RINGING"}', id="type-case"),
        pytest.param(b'{"type":"terminate"}', id="terminate-no-code"),
        pytest.param(b'{"type":"terminate","code":"200"}', id="code-string"),
        pytest.param(b'{"type":"terminate","code":true}', id="code-true"),
        pytest.param(b'{"type":"terminate","code":200.0}', id="code-float"),
        pytest.param(b'{"type":"terminate","code":100}', id="code-100"),
        pytest.param(b'{"type":"terminate","code":700}', id="code-700"),
        pytest.param(b'{"type":"terminate","code":486,"reason":5}', id="reason-number"),
        pytest.param(b'{"type":"move","uri":7}', id="uri-number"),
        pytest.param(b'{"type":"streams"}', id="streams-no-count"),
        pytest.param(b'{"type":"streams","count":0}', id="streams-0"),
        pytest.param(b'{"type":"streams","count":-3}', id="streams-negative"),
        pytest.param(b'{"type":"streams","count":true}', id="streams-true"),
        pytest.param(b'{"type":"streams","count":"2"}', id="streams-string"),
    ],
)
def test_decode_errors(payload: bytes) -> None:
    with pytest.raises(MessageError):
        decode_message(payload)


def test_message_error_is_remote() -> None:
    assert issubclass(MessageError, RemoteProtocolError)


@pytest.mark.parametrize("depth", [2000, 4000])
def test_deeply_nested_json_is_a_message_error(depth: int) -> None:
    # Fits in a SIGNAL frame (default max_signal_size is 4096), so a peer can send it; it
    # must surface as a MessageError, not as a RecursionError from the json module.
    for payload in (
        b"[" * depth,
        b'{"type":"ringing","x":' + b"[" * depth + b"]" * depth + b"}",
    ):
        with pytest.raises(MessageError):
            decode_message(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(
    st.sampled_from([t.value for t in MessageType] + ["x"]),
    st.dictionaries(st.sampled_from(["code", "reason", "uri", "count", "other"]), json_values),
)
def test_fuzzed_objects_decode_or_raise_message_error(
    type_name: str, members: dict[str, Any]
) -> None:
    body = {**members, "type": type_name}
    try:
        message = decode_message(dumps(body))
    except MessageError:
        return
    # Whatever decodes must be a faithful, valid message that re-encodes to itself.
    assert message.type.value == type_name
    assert decode_message(encode_message(message)) == message


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_message_error(payload: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode_message(payload)
