"""SIP message parsing: the RFC 4475 torture cases, round trips and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_sip import (
    SipEndpoint,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamDecoder,
    parse_address,
    parse_message,
    parse_via,
)
from tests.data.sip_torture import INVALID, REFUSED, VALID


def same(a: SipRequest | SipResponse, b: SipRequest | SipResponse) -> bool:
    """Equal but for where Content-Length stands: serialising always writes it last."""
    return a.to_bytes() == b.to_bytes()


@pytest.mark.parametrize("name", sorted(VALID))
def test_rfc4475_valid_messages_parse(name: str) -> None:
    message = parse_message(VALID[name])
    assert message.call_id
    # Serialising and parsing again gives the same message (values unfolded once).
    assert same(parse_message(message.to_bytes()), message)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid_messages_are_refused_with_their_code(name: str) -> None:
    data, code = INVALID[name]
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.sip_code == code


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_rfc4475_semantic_cases_are_refused_by_the_endpoint(name: str) -> None:
    data, code = REFUSED[name]
    endpoint = SipEndpoint(("192.0.2.9", 5060), seed=1)
    try:
        parse_message(data)
    except SipParseError as exc:  # the scheme case fails in the parser already
        assert exc.sip_code == code
    endpoint.receive_datagram(data, ("192.0.2.1", 5060), 0.0)
    (response, _), = endpoint.datagrams_to_send()
    assert response.startswith(f"SIP/2.0 {code} ".encode())
    if code == 420:
        assert b"Unsupported: nothingSupportsThis, nothingSupportsThisEither" in response
    assert endpoint.next_event() is None, "no call was started"


def test_broadcast_via_response_is_dropped() -> None:
    endpoint = SipEndpoint(("192.0.2.9", 5060), seed=1)
    endpoint.receive_datagram(VALID["3.3.10-bcast"], ("192.0.2.1", 5060), 0.0)
    assert endpoint.datagrams_to_send() == [] and endpoint.next_event() is None


def test_esc02_method_with_percent_and_compact_contact() -> None:
    message = parse_message(VALID["3.1.1.5-esc02"])
    assert isinstance(message, SipRequest) and message.method == "RE%47IST%45R"
    assert len(message.header_values("Contact")) == 2  # "C%6Fntact" is another field
    assert message.header("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_wsinv_details_survive_folding_and_compact_forms() -> None:
    message = parse_message(VALID["3.1.1.1-wsinv"])
    assert isinstance(message, SipRequest)
    assert message.cseq.number == 9 and message.cseq.method == "INVITE"
    assert message.header("Max-Forwards") == "0068"
    assert message.to.tag == "1918181833n"
    assert message.from_.display_name == 'J Rosenberg \\"'
    vias = [parse_via(v) for v in message.header_values("Via")]
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[1].branch == "z9hG4bK9ikj8"
    assert message.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.header("Subject") == ""
    assert len(message.body) == 150


def test_dblreq_keeps_only_content_length_octets() -> None:
    message = parse_message(VALID["3.1.1.8-dblreq"])
    assert message.body == b""


def test_inv2543_is_matched_without_a_magic_cookie() -> None:
    endpoint = SipEndpoint(("192.0.2.9", 5060), seed=1)
    endpoint.receive_datagram(VALID["3.4.1-inv2543"], ("192.0.2.1", 5060), 0.0)
    first = [parse_message(d) for d, _ in endpoint.datagrams_to_send()]
    assert [m.status for m in first if isinstance(m, SipResponse)] == [100]
    # A retransmission (same dialog and CSeq, no branch) is absorbed: 100 again, no new call.
    endpoint.receive_datagram(VALID["3.4.1-inv2543"], ("192.0.2.1", 5060), 0.1)
    assert len(endpoint.calls) == 1


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_requests_get_an_error_response_when_answerable(name: str) -> None:
    data, code = INVALID[name]
    endpoint = SipEndpoint(("192.0.2.9", 5060), seed=1)
    endpoint.receive_datagram(data, ("192.0.2.1", 5060), 0.0)
    out = endpoint.datagrams_to_send()
    if data.startswith(b"SIP/2.0"):
        assert out == [], "a bad response is dropped, never answered"
    elif name != "3.3.1-insuf":  # without From/To/Call-ID there is nothing to answer with
        (response, _), = out
        assert response.startswith(f"SIP/2.0 {code} ".encode())
    assert endpoint.next_event() is None


def test_stream_decoder_frames_by_content_length_at_every_split() -> None:
    data = VALID["3.1.1.3-esc01"] + b"\r\n\r\n" + VALID["3.1.1.6-lwsdisp"]
    for split in range(0, len(data), 7):
        decoder = StreamDecoder()
        messages = decoder.feed(data[:split]) + decoder.feed(data[split:])
        assert [m.call_id for m in messages] == [
            "esc01.239409asdfakjkn23onasd0-3234", "lwsdisp.1234abcd@funky.example.com"]


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1,
                 max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                        blacklist_characters=","), max_size=30)


@given(method=_token.map(str.upper), user=_token, tag=_token, call_id=_token,
       cseq=st.integers(0, 2**31 - 1), extra=st.lists(st.tuples(_token, _value), max_size=5),
       body=st.binary(max_size=200))
def test_requests_round_trip(method: str, user: str, tag: str, call_id: str, cseq: int,
                             extra: list[tuple[str, str]], body: bytes) -> None:
    headers = (("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"),
               ("From", f"<sip:{user}@example.com>;tag={tag}"), ("To", "<sip:b@example.com>"),
               ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
               *[(f"X-{name}", value) for name, value in extra])
    request = SipRequest(method, f"sip:{user}@example.com", headers, body)
    assert same(parse_message(request.to_bytes()), request)


@given(st.binary(max_size=600))
def test_parser_never_fails_with_anything_but_sip_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


@given(st.binary(max_size=400))
def test_endpoint_survives_garbage(data: bytes) -> None:
    endpoint = SipEndpoint(("192.0.2.9", 5060), seed=1)
    endpoint.receive_datagram(b"INVITE sip:a@b SIP/2.0\r\n" + data, ("192.0.2.1", 5060), 0.0)
    endpoint.datagrams_to_send()


def test_name_addr_forms() -> None:
    assert parse_address('"A \\"B\\"" <sip:a@b>;tag=1').display_name == 'A "B"'
    assert parse_address("Alice Smith <sip:a@b>").display_name == "Alice Smith"
    assert parse_address("sip:a@b;tag=7").tag == "7"
    assert parse_address("<tel:+1212>").uri == "tel:+1212"
