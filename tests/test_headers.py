"""Header fields in SIP syntax: name-addr, Authorization, Identity, Ripp-Reestablish."""

from __future__ import annotations

import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ripp_core._errors import BadRequest, IdentityRequired, InvalidIdentity, Unauthorized
from ripp_core._headers import (
    NameAddr,
    ReestablishMarker,
    bearer_token,
    check_identity_syntax,
    header_dict,
    parse_name_addr,
    parse_reestablish,
)
from ripp_core._state import CallState

# --- name-addr ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"Alice" <tel:+14085551234>;tag=8f3a',
            NameAddr("tel:+14085551234", "Alice", (("tag", "8f3a"),)),
        ),
        ("<tel:+12125551234>", NameAddr("tel:+12125551234")),
        ('"Bob Smith" <sip:bob@example.com>', NameAddr("sip:bob@example.com", "Bob Smith")),
        ('"" <sip:anon@example.com>', NameAddr("sip:anon@example.com", "")),
        ('"A \\"quoted\\" name" <sip:a@b>', NameAddr("sip:a@b", 'A \\"quoted\\" name')),
        ('"Semi;colon <x>" <sip:a@b>', NameAddr("sip:a@b", "Semi;colon <x>")),
        ("Bob <sip:bob@example.com>", NameAddr("sip:bob@example.com", "Bob")),
        ("Bob  Smith   <sips:bob@example.com>", NameAddr("sips:bob@example.com", "Bob  Smith")),
        ('  "Carol"<sip:c@example.com>  ', NameAddr("sip:c@example.com", "Carol")),
        (
            "<sip:bob@example.com;transport=tcp>;tag=1;lr",
            NameAddr("sip:bob@example.com;transport=tcp", None, (("tag", "1"), ("lr", None))),
        ),
        ("sip:bob@example.com", NameAddr("sip:bob@example.com")),
        ("tel:+14085551234;tag=x", NameAddr("tel:+14085551234", None, (("tag", "x"),))),
        (
            "sips:alice@example.com ; tag = 7 ; foo",
            NameAddr("sips:alice@example.com", None, (("tag", "7"), ("foo", None))),
        ),
        ("<sip:a@b>;empty=", NameAddr("sip:a@b", None, (("empty", ""),))),
        ("< sip:a@b >", NameAddr("sip:a@b")),
        ("<https://x.example/p?q=1>", NameAddr("https://x.example/p?q=1")),
    ],
)
def test_parse_name_addr(value: str, expected: NameAddr) -> None:
    assert parse_name_addr(value) == expected


def test_param_lookup_is_case_insensitive() -> None:
    addr = parse_name_addr("<sip:a@b>;Tag=abc;lr")
    assert addr.param("tag") == "abc"
    assert addr.param("TAG") == "abc"
    assert addr.param("lr") is None  # present without value
    assert addr.param("missing") is None
    assert ("lr", None) in addr.params


def test_str_forms() -> None:
    assert str(NameAddr("tel:+1", "Alice", (("tag", "x"), ("lr", None)))) == (
        '"Alice" <tel:+1>;tag=x;lr'
    )
    assert str(NameAddr("sip:a@b")) == "<sip:a@b>"
    assert str(parse_name_addr("Bob <sip:bob@b>")) == '"Bob" <sip:bob@b>'
    assert str(parse_name_addr("sip:bob@b;tag=1")) == "<sip:bob@b>;tag=1"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("alice", id="no-scheme"),
        pytest.param("<alice@example.com>", id="no-scheme-bracketed"),
        pytest.param('"Alice" <alice>', id="no-scheme-with-display"),
        pytest.param("<>", id="empty-brackets"),
        pytest.param('"Alice" <>', id="empty-brackets-display"),
        pytest.param("<sip:a@b> junk", id="junk-after-bracket"),
        pytest.param("<sip:a@b>junk", id="junk-no-space"),
        pytest.param("<sip:a@b>;", id="trailing-semicolon"),
        pytest.param("<sip:a@b>;;tag=1", id="empty-param"),
        pytest.param("<sip:a@b>;=x", id="param-without-name"),
        pytest.param("<sip:a b@c>", id="space-in-uri"),
        pytest.param("sip:a>b", id="addr-spec-with-raquot"),
        pytest.param("<sip:a<b>", id="laquot-in-uri"),
        pytest.param("Bob\\ <sip:b@c>", id="backslash-in-unquoted-name"),
        pytest.param("<sip:>", id="scheme-only"),
        pytest.param("<1sip:a@b>", id="scheme-starts-with-digit"),
        pytest.param('"unterminated <sip:a@b>', id="unterminated-quote"),
        pytest.param("<sip:a@b", id="unterminated-bracket"),
        pytest.param('"Al"ice <sip:a@b>', id="text-after-quoted-name"),
    ],
)
def test_malformed_name_addr(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_name_addr(value)


# Generated well-formed values: every part the parser understands.
_uri_rest = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-_.@:;=%?&/",
    min_size=1,
    max_size=24,
)
uris = st.builds(
    lambda scheme, rest: f"{scheme}:{rest}",
    st.sampled_from(["tel", "sip", "sips", "https", "urn"]),
    _uri_rest,
)
_display_char = st.one_of(
    st.characters(blacklist_characters='"\\', blacklist_categories=("Cs", "Cc")),
    st.sampled_from(['\\"', "\\\\"]),  # escaped pairs stay escaped
)
display_names = st.one_of(st.none(), st.lists(_display_char, max_size=12).map("".join))
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!%*+`'~", min_size=1, max_size=8)
params = st.lists(st.tuples(_token, st.one_of(st.none(), _token, st.just(""))), max_size=4).map(
    tuple
)
name_addrs = st.builds(NameAddr, uri=uris, display_name=display_names, params=params)


@settings(max_examples=200)
@given(name_addrs)
def test_generated_name_addr_round_trips(addr: NameAddr) -> None:
    assert parse_name_addr(str(addr)) == addr


@settings(max_examples=300)
@given(st.text(alphabet=' "<>;=\\:abs@+1\t', max_size=24))
def test_whatever_parses_round_trips(value: str) -> None:
    """str() of any successfully parsed value must parse back to the same NameAddr."""
    try:
        addr = parse_name_addr(value)
    except BadRequest:
        return
    assert parse_name_addr(str(addr)) == addr


@pytest.mark.parametrize(
    "value",
    [
        " " * 1000 + "a",
        "a" + " " * 1000 + "b",
        "\t" * 1000 + "<",
        '"' + " " * 1000,
        "x" + " " * 1000 + '"',
        " " * 1000 + "<sip:a@b> x",
    ],
)
def test_parsing_hostile_header_is_fast(value: str) -> None:
    # A peer controls these values (up to max_header_bytes); the parser must not backtrack
    # catastrophically. Linear parsing of 1000 characters takes microseconds.
    start = time.perf_counter()
    with pytest.raises(BadRequest):
        parse_name_addr(value)
    assert time.perf_counter() - start < 0.5


def test_max_size_header_is_fast() -> None:
    start = time.perf_counter()
    for value in (" " * 16000 + "a", "a" + " " * 16000 + "b", '"' + "x " * 8000):
        with pytest.raises(BadRequest):
            parse_name_addr(value)
    assert time.perf_counter() - start < 1.0


# --- Authorization ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def-ghi_123~+/=", "abc.def-ghi_123~+/="),
        ("Bearer   tok", "tok"),
        ("bearer tok", "tok"),
        ("BEARER tok", "tok"),
        ("  Bearer tok  ", "tok"),
    ],
)
def test_bearer_token(value: str, token: str) -> None:
    assert bearer_token(value) == token


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        "Basic x",
        "tok",
        "Bearertok",
    ],
)
def test_bearer_token_refused(value: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        bearer_token(value)
    assert info.value.http_status == 401


# --- Identity ---------------------------------------------------------------------------

# docs/protocol.md section 4.5, joined into one line.
DOC_IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1Ijoi"
    "aHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6"
    "eyJ0biI6WyIxMjEyNTU1MTIzNCJdfSwiaWF0IjoxNzAwMDAwMDAwLCJvcmlnIjp7InRuIjoiMTQwODU1"
    "NTEyMzQifSwib3JpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0.AAEC"
    "AwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-"
    "Pw;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
HEADER = "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0In0"
PAYLOAD = "eyJvcmlnIjp7InRuIjoiMTIxMjU1NTEyMzQifX0"
SIG = "MEUCIQDx_-9"


@pytest.mark.parametrize(
    ("value", "passport"),
    [
        (
            f"{HEADER}.{PAYLOAD}.{SIG};info=<https://cert.example/c.pem>;alg=ES256;ppt=shaken",
            f"{HEADER}.{PAYLOAD}.{SIG}",
        ),
        (f"{HEADER}.{PAYLOAD}.{SIG}", f"{HEADER}.{PAYLOAD}.{SIG}"),
        (f"  {HEADER}..{SIG} ;info=<https://c.example/x>", f"{HEADER}..{SIG}"),  # RFC 8225 §7
        (DOC_IDENTITY, DOC_IDENTITY.split(";")[0]),
    ],
)
def test_identity_syntax_ok(value: str, passport: str) -> None:
    assert check_identity_syntax(value) == passport


@pytest.mark.parametrize("value", [None, "", "   "])
def test_identity_missing(value: str | None) -> None:
    with pytest.raises(IdentityRequired) as info:
        check_identity_syntax(value)
    assert (info.value.http_status, info.value.sip_code) == (428, 428)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        f".{PAYLOAD}.{SIG}",  # empty header
        f"{HEADER}.{PAYLOAD}.",  # empty signature
        f"{HEADER}.{PAYLOAD}.si=g",  # base64url has no '='
        f"{HEADER}.pay+load.{SIG}",  # nor '+'
        f"{HEADER}.{PAYLOAD}.sig/x",
        f"{HEADER} .{PAYLOAD}.{SIG}",
        ";info=<https://cert.example/c.pem>",
    ],
)
def test_identity_invalid(value: str) -> None:
    with pytest.raises(InvalidIdentity) as info:
        check_identity_syntax(value)
    assert (info.value.http_status, info.value.sip_code) == (403, 438)


# --- Ripp-Reestablish -----------------------------------------------------------------------


@pytest.mark.parametrize("state", [CallState.PENDING, CallState.RINGING, CallState.CONNECTED])
def test_reestablish_ok(state: CallState) -> None:
    uri = "https://trunk.example.com/ripp/instances/b7/calls/2a"
    marker = parse_reestablish(f"<{uri}>;state={state.value}")
    assert marker == ReestablishMarker(call_uri=uri, state=state)
    assert parse_reestablish(str(marker)) == marker
    # Other parameters are ignored.
    assert parse_reestablish(f"<{uri}>;x=1;state={state.value};y") == marker


@pytest.mark.parametrize(
    "value",
    [
        "<https://t.example/c/1>;state=created",
        "<https://t.example/c/1>;state=terminated",
        "<https://t.example/c/1>",
        "<https://t.example/c/1>;state",
        "<https://t.example/c/1>;state=",
        "<https://t.example/c/1>;state=Connected",
        "<https://t.example/c/1>;state=on-hold",
        "<>;state=connected",
        "state=connected",
        "<https://t.example/c/1> state=connected",
    ],
)
def test_reestablish_refused(value: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_reestablish(value)
    assert info.value.http_status == 400


# --- header_dict ------------------------------------------------------------------------


def test_header_dict() -> None:
    headers = [
        (b"To", b"<tel:+1>"),
        (b"x-a", b"1"),
        (b"X-A", b"2"),
        (b"from", '"Zoë" <tel:+2>'.encode()),
    ]
    assert header_dict(headers) == {"to": "<tel:+1>", "x-a": "2", "from": '"Zoë" <tel:+2>'}
    with pytest.raises(BadRequest):
        header_dict([(b"to", b"\xff<tel:+1>")])
    with pytest.raises(BadRequest):
        header_dict([(b"t\xffo", b"<tel:+1>")])


@given(st.text(max_size=40))
def test_parse_name_addr_only_raises_bad_request(value: str) -> None:
    try:
        addr = parse_name_addr(value)
    except BadRequest:
        return
    assume(addr.uri)
    assert ":" in addr.uri
