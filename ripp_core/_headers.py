"""Header fields in SIP header-field syntax (R15), carried as HTTP header fields.

RIPP copies the SIP forms that gateways already speak: ``To`` and ``From`` are SIP
name-addr values (``"Alice" <tel:+14085551234>;tag=1928``), ``Identity`` is the RFC 8224
value, and the re-establishment marker uses the same ``<uri>;param=value`` shape.
"""

from __future__ import annotations

import re

import attrs

from ._errors import BadRequest, IdentityRequired, InvalidIdentity, Unauthorized
from ._state import CallState

Headers = list[tuple[bytes, bytes]]

#: HTTP header names RIPP defines (lower case, as HTTP/3 requires).
TO = "to"
FROM = "from"
IDENTITY = "identity"
AUTHORIZATION = "authorization"
CONTENT_TYPE = "content-type"
LOCATION = "location"
RIPP_VERSION = "ripp-version"
RIPP_REESTABLISH = "ripp-reestablish"
RIPP_REASON = "ripp-reason"
RETRY_AFTER = "retry-after"
WWW_AUTHENTICATE = "www-authenticate"

#: The protocol version this implementation speaks.
PROTOCOL_VERSION = "1"
SIGNALING_CONTENT_TYPE = "application/ripp-signaling"
MEDIA_CONTENT_TYPE = "application/ripp-media"

#: Headers the binding handles itself; every other header of a call request is passed
#: through to the application (end-to-end SIP headers such as Call-ID, P-Asserted-Identity).
#: ``host`` and ``te`` are what an intermediary (nginx's grpc_pass) adds over HTTP/2.
HOP_BY_HOP = frozenset(
    {
        ":method",
        ":scheme",
        ":authority",
        ":path",
        AUTHORIZATION,
        CONTENT_TYPE,
        RIPP_VERSION,
        "host",
        "te",
    }
)


#: Fields a call request's extra headers may not name: the binding sets these itself, and
#: a second copy would let an application's header contradict (or smuggle) them.
RESERVED_REQUEST_FIELDS = HOP_BY_HOP | {TO, FROM, IDENTITY, RIPP_REESTABLISH}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
# RFC 9110 5.5: visible characters, spaces and tabs inside, obs-text allowed; no CR, LF,
# NUL or other control characters anywhere, no leading or trailing whitespace.
_VCHAR = "[\\x21-\\x7e\\x80-\\U0010ffff]"
_FIELD_VALUE = re.compile(f"(?:{_VCHAR}(?:[\\t\\x20-\\x7e\\x80-\\U0010ffff]*{_VCHAR})?)?")


def check_extra_fields(headers: tuple[tuple[str, str], ...]) -> None:
    """Refuse extra header fields of a call request that HTTP (RFC 9110 5.1, 5.5) or RIPP
    would not accept: a name that is not a lower-case token, a reserved name
    (:data:`RESERVED_REQUEST_FIELDS`), a value with a control character or with leading or
    trailing whitespace (which aioquic answers by closing the whole connection).

    Raises :class:`BadRequest`; :meth:`HttpClient.place_call` raises it as LocalBadRequest.
    """
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise BadRequest(f"header name {name[:32]!r} is not a lower-case token")
        if name in RESERVED_REQUEST_FIELDS:
            raise BadRequest(f"header {name!r} is set by RIPP itself")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadRequest(
                f"header {name!r} has a control character or leading/trailing whitespace"
            )


@attrs.frozen
class NameAddr:
    """A SIP name-addr or addr-spec: optional display name, URI, header parameters."""

    uri: str
    display_name: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        """Value of parameter ``name`` (case-insensitive), or None."""
        for key, value in self.params:
            if key.lower() == name.lower():
                return value
        return None

    def __str__(self) -> str:
        head = f'"{self.display_name}" ' if self.display_name is not None else ""
        text = f"{head}<{self.uri}>"
        for key, value in self.params:
            text += f";{key}" if value is None else f";{key}={value}"
        return text


# Possessive quantifiers (Python 3.11+): no backtracking, so hostile values parse in linear time.
_NAME_ADDR = re.compile(
    r'^\s*+(?:"(?P<quoted>(?:[^"\\]|\\.)*+)"\s*+|(?P<token>[^<";\\]*+))?<(?P<uri>[^>]++)>(?P<rest>.*)$'
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>]+$")


def _parse_params(text: str, original: str) -> tuple[tuple[str, str | None], ...]:
    params: list[tuple[str, str | None]] = []
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise BadRequest(f"unexpected text after URI in {original!r}")
    for part in text[1:].split(";"):
        part = part.strip()
        if not part:
            raise BadRequest(f"empty parameter in {original!r}")
        key, sep, value = part.partition("=")
        if not key.strip():
            raise BadRequest(f"parameter without a name in {original!r}")
        params.append((key.strip(), value.strip() if sep else None))
    return tuple(params)


def parse_name_addr(value: str) -> NameAddr:
    """Parse a SIP name-addr (``"Bob" <sip:bob@example.com>;tag=x``) or addr-spec."""
    match = _NAME_ADDR.match(value)
    if match:
        uri = match.group("uri").strip()
        display = match.group("quoted")
        if display is None:
            token = (match.group("token") or "").strip()
            display = token or None
        params = _parse_params(match.group("rest"), value)
    else:
        # addr-spec form: the URI runs to the first ';' (parameters belong to the header)
        uri, _, rest = value.strip().partition(";")
        uri = uri.strip()
        display = None
        params = _parse_params(";" + rest if rest else "", value)
    if not _SCHEME.match(uri):
        raise BadRequest(f"not a URI: {uri!r}")
    return NameAddr(uri=uri, display_name=display, params=params)


def bearer_token(value: str | None) -> str:
    """Extract the token of an ``Authorization: Bearer <token>`` value (RFC 6750)."""
    if value is None:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization is not a Bearer token")
    return token.strip()


_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def check_identity_syntax(value: str | None) -> str:
    """Check an RFC 8224 Identity value: a compact JWS (PASSporT) with optional params.

    Returns the PASSporT. Cryptographic verification is the job of the server's identity
    verifier hook; this only rejects what cannot be a PASSporT at all.
    """
    if value is None or not value.strip():
        raise IdentityRequired("call request carries no Identity header")
    token = value.strip().split(";", 1)[0].strip()
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[i] and _B64URL.match(parts[i]) for i in (0, 2)):
        raise InvalidIdentity("Identity is not a compact JWS PASSporT")
    if not _B64URL.match(parts[1]):
        raise InvalidIdentity("Identity payload is not base64url")
    return token


@attrs.frozen
class ReestablishMarker:
    """Value of ``Ripp-Reestablish``: the earlier call URI and the state it had reached."""

    call_uri: str
    state: CallState

    def __str__(self) -> str:
        return f"<{self.call_uri}>;state={self.state.value}"


_REESTABLISH_STATES = frozenset({CallState.PENDING, CallState.RINGING, CallState.CONNECTED})


def parse_reestablish(value: str) -> ReestablishMarker:
    """Parse a ``Ripp-Reestablish`` value."""
    addr = parse_name_addr(value)
    state_name = addr.param("state")
    try:
        state = CallState(state_name)
    except ValueError:
        raise BadRequest(f"ripp-reestablish has no valid state: {value!r}") from None
    if state not in _REESTABLISH_STATES:
        raise BadRequest(f"a call in state {state.value!r} cannot be re-established")
    return ReestablishMarker(call_uri=addr.uri, state=state)


#: Fields a request carries at most once. Two copies are ambiguous (an intermediary may
#: check one and the server use the other), so a request repeating one is malformed.
SINGLE_REQUEST_FIELDS = frozenset(
    name.encode()
    for name in (
        ":method", ":scheme", ":authority", ":path", "host", AUTHORIZATION, CONTENT_TYPE,
        RIPP_VERSION, TO, FROM, IDENTITY, RIPP_REESTABLISH,
    )
)  # fmt: skip


def check_single_fields(headers: Headers) -> None:
    """Refuse a request that repeats a field of :data:`SINGLE_REQUEST_FIELDS` (BadRequest)."""
    seen: set[bytes] = set()
    for name, _ in headers:
        key = name.lower()
        if key in SINGLE_REQUEST_FIELDS:
            if key in seen:
                raise BadRequest(f"header field {key.decode()!r} repeated")
            seen.add(key)


def header_dict(headers: Headers) -> dict[str, str]:
    """Decode HTTP header pairs into a dict (later duplicates win; names lower-cased)."""
    result: dict[str, str] = {}
    for name, value in headers:
        try:
            result[name.decode("ascii").lower()] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("header field is not valid UTF-8") from None
    return result
