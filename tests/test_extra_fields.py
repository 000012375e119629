"""Extra header fields of a call request: what place_call lets through (RFC 9110 5.1, 5.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_core import BadRequest
from ripp_core._headers import RESERVED_REQUEST_FIELDS, check_extra_fields


def test_ordinary_end_to_end_fields_pass() -> None:
    check_extra_fields(
        (
            ("p-asserted-identity", '"Alice" <sip:+14085551234@example.com>;user=phone'),
            ("call-id", "a84b4c76e66710@pc33.example.com"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("x-empty", ""),
            ("x-inner", "tab\tand space inside"),
            ("x-utf8", "Zoë"),
        )
    )


@pytest.mark.parametrize("name", sorted(RESERVED_REQUEST_FIELDS))
def test_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequest):
        check_extra_fields(((name, "v"),))


@given(st.text(max_size=8), st.sampled_from(" \t"), st.booleans())
def test_leading_or_trailing_whitespace_is_refused(text: str, space: str, lead: bool) -> None:
    with pytest.raises(BadRequest):
        check_extra_fields((("x-v", space + text if lead else text + space),))


@given(st.text(max_size=8), st.sampled_from("\r\n\x00\x01\x1f\x7f"), st.text(max_size=8))
def test_control_characters_are_refused_anywhere(head: str, ctl: str, tail: str) -> None:
    with pytest.raises(BadRequest):
        check_extra_fields((("x-v", head + ctl + tail),))


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_visible_ascii_values_pass(value: str) -> None:
    check_extra_fields((("x-v", value),))


@pytest.mark.parametrize("name", ["", "two words", "colon:", "Upper", "x\x00"])
def test_names_that_are_not_lower_case_tokens_are_refused(name: str) -> None:
    with pytest.raises(BadRequest):
        check_extra_fields(((name, "v"),))
