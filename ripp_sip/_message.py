"""SIP messages (RFC 3261 §7, §20, §25): parse and serialise, nothing else.

Messages are frozen values; header fields keep their order and their exact values (after
RFC 3261 §7.3.1 unfolding), so a field such as ``Identity`` can be copied to RIPP and back
byte for byte. Only what the transaction and dialog layers need is parsed further (Via,
CSeq, name-addrs); every check raises :class:`SipParseError` (400) or a more specific
subclass carrying the status code RFC 3261 and RFC 4475 ask for.
"""

from __future__ import annotations

import re

import attrs

from ._errors import MissingHeader, SipParseError

SIP_VERSION = "SIP/2.0"

#: RFC 3261 §7.3.3 compact forms, plus RFC 4028 (x), RFC 8224 (y) and RFC 3515 (r).
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
    "r": "Refer-To",
    "o": "Event",
    "u": "Allow-Events",
}

#: Canonical spelling of the fields we read, so lookups and output are uniform.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Allow",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Diversion",
        "Event",
        "Expires",
        "From",
        "History-Info",
        "Identity",
        "Max-Forwards",
        "Min-SE",
        "P-Asserted-Identity",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Require",
        "Route",
        "Session-Expires",
        "Subject",
        "Supported",
        "To",
        "Unsupported",
        "User-Agent",
        "User-to-User",
        "Via",
        "WWW-Authenticate",
    )
}

#: Fields that RFC 3261 allows only once; a repeat is a 400 (RFC 4475 §3.3.8, §3.3.9).
SINGLE_VALUED = frozenset(
    {"Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type"}
)
#: Fields that every request must carry (RFC 3261 §8.1.1); Max-Forwards is tolerated
#: missing, as RFC 2543 peers omit it (RFC 4475 §3.4.1).
REQUIRED = ("To", "From", "CSeq", "Call-ID", "Via")
#: Fields whose values are comma-separated lists (RFC 3261 §7.3.1).
LIST_VALUED = frozenset({"Via", "Route", "Record-Route", "Contact", "Supported", "Require",
                         "Allow", "Proxy-Require", "Unsupported"})

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_REQUEST_LINE = re.compile(rf"^({_TOKEN}) (\S+) (SIP/\d+\.\d+)$")
_STATUS_LINE = re.compile(r"^(SIP/\d+\.\d+) (\d{3}) ([^\r\n]*)$")
_HEADER_NAME = re.compile(rf"^{_TOKEN}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:")
_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: a 32-bit unsigned value less than 2**31


def canonical_name(name: str) -> str:
    """The canonical spelling of a header field name (compact forms expanded)."""
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered) or _CANONICAL.get(lowered, name)


Headers = tuple[tuple[str, str], ...]


def _lookup(headers: Headers, name: str) -> list[str]:
    wanted = canonical_name(name).lower()
    return [value for key, value in headers if key.lower() == wanted]


class _HeaderAccess:
    headers: Headers

    def header(self, name: str) -> str | None:
        """The first value of field ``name`` (any spelling or compact form), or None."""
        values = _lookup(self.headers, name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of ``name``, with comma-separated lists split (RFC 3261 §7.3.1)."""
        values = _lookup(self.headers, name)
        if canonical_name(name) in LIST_VALUED:
            return [item for value in values for item in split_list(value)]
        return values

    @property
    def call_id(self) -> str:
        """The Call-ID value."""
        value = self.header("Call-ID")
        if value is None:
            raise MissingHeader("no Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        value = self.header("CSeq")
        if value is None:
            raise MissingHeader("no CSeq")
        return parse_cseq(value)

    @property
    def top_via(self) -> Via:
        """The topmost Via."""
        vias = self.header_values("Via")
        if not vias:
            raise MissingHeader("no Via")
        return parse_via(vias[0])

    @property
    def from_(self) -> Address:
        """The parsed From."""
        return parse_address(self.header("From") or "")

    @property
    def to(self) -> Address:
        """The parsed To."""
        return parse_address(self.header("To") or "")

    def _head_bytes(self, start: str, body: bytes) -> bytes:
        lines = [start]
        lines += [f"{name}: {value}" for name, value in self.headers if name != "Content-Length"]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@attrs.frozen
class SipRequest(_HeaderAccess):
    """A SIP request. ``headers`` are (canonical name, value) pairs in message order."""

    method: str
    uri: str
    headers: Headers = ()
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is always written (required on stream transports)."""
        return self._head_bytes(f"{self.method} {self.uri} {SIP_VERSION}", self.body)


@attrs.frozen
class SipResponse(_HeaderAccess):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = ()
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is always written."""
        return self._head_bytes(f"{SIP_VERSION} {self.status} {self.reason}", self.body)


SipMessage = SipRequest | SipResponse


class VersionNotSupported(SipParseError):
    """The start line names a SIP version other than 2.0 (RFC 4475 §3.1.2.16)."""

    sip_code = 505


class UnsupportedUriScheme(SipParseError):
    """The Request-URI's scheme is not sip, sips or tel (RFC 4475 §3.3.2)."""

    sip_code = 416


@attrs.frozen
class CSeq:
    """A parsed CSeq (RFC 3261 §20.16)."""

    number: int
    method: str


@attrs.frozen
class Via:
    """A parsed Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` ('' when present without a value), or None."""
        for key, value in self.params:
            if key.lower() == name.lower():
                return "" if value is None else value
        return None

    @property
    def branch(self) -> str | None:
        """The branch parameter; RFC 3261 ones start with the magic cookie z9hG4bK."""
        return self.param("branch")


@attrs.frozen
class Address:
    """A parsed name-addr or addr-spec (From, To, Contact, Route...)."""

    uri: str
    display_name: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        """The value of header parameter ``name``, or None."""
        for key, value in self.params:
            if key.lower() == name.lower():
                return "" if value is None else value
        return None

    @property
    def tag(self) -> str | None:
        """The tag parameter (RFC 3261 §19.3)."""
        return self.param("tag")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and <...>."""
    items: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


def _parse_params(text: str, whole: str) -> tuple[tuple[str, str | None], ...]:
    params: list[tuple[str, str | None]] = []
    for part in split_params(text):
        name, eq, val = part.partition("=")
        name = name.strip()
        if not re.fullmatch(_TOKEN, name):
            raise SipParseError(f"bad parameter {part!r} in {whole!r}")
        params.append((name, val.strip() if eq else None))
    return tuple(params)


def split_params(text: str) -> list[str]:
    """Split ``;a=1;b="x;y"`` into its parameters, respecting quoted strings."""
    parts: list[str] = []
    quoted, current = False, list[str]()
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise SipParseError(f"unterminated quoted string in {text!r}")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_QUOTED = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*<([^<>]*)>(.*)$', re.S)
_TOKENS_ADDR = re.compile(rf"^\s*((?:{_TOKEN}[ \t]*)*)<([^<>]*)>(.*)$", re.S)


def parse_address(value: str) -> Address:
    """Parse a name-addr (``"Bob" <sip:bob@b.example>;tag=1``) or addr-spec.

    Rejects what RFC 4475 §3.1.2.6, .13, .14 and .15 reject: an unterminated quote, an
    addr-spec with URI headers or spaces outside ``<>``, and a display name that is
    neither a quoted string nor tokens.
    """
    text = value.strip()
    if not text:
        raise SipParseError("empty address")
    display: str | None
    match = _QUOTED.match(text)
    if match:
        display = re.sub(r"\\(.)", r"\1", match.group(1))
        uri, rest = match.group(2), match.group(3)
    elif "<" in text or ">" in text:
        tokens = _TOKENS_ADDR.match(text)
        if tokens is None:
            raise SipParseError(f"malformed name-addr {value!r}")
        display = " ".join(tokens.group(1).split()) or None
        uri, rest = tokens.group(2), tokens.group(3)
    else:
        if '"' in text:
            raise SipParseError(f"unbalanced quote in {value!r}")
        display = None
        uri, _, params = text.partition(";")
        uri = uri.strip()
        rest = ";" + params if params else ""
        if any(c in uri for c in " \t?,"):
            raise SipParseError(f"addr-spec {uri!r} must be enclosed in <>")
    if not _SCHEME.match(uri) or any(c in uri for c in " \t"):
        raise SipParseError(f"not a URI: {uri!r}")
    rest = rest.strip()
    if rest and not rest.startswith(";"):
        raise SipParseError(f"junk after address in {value!r}")
    return Address(uri=uri, display_name=display, params=_parse_params(rest, value))


def format_address(address: Address) -> str:
    """The name-addr form of ``address`` (always with ``<>``)."""
    text = f"<{address.uri}>"
    if address.display_name is not None:
        escaped = address.display_name.replace("\\", "\\\\").replace('"', '\\"')
        text = f'"{escaped}" {text}'
    for name, val in address.params:
        text += f";{name}" if val is None else f";{name}={val}"
    return text


def parse_cseq(value: str) -> CSeq:
    """Parse ``<number> <method>``; the number must fit RFC 3261's 2**31 limit."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not re.fullmatch(_TOKEN, parts[1]):
        raise SipParseError(f"bad CSeq {value!r}")
    number = int(parts[0])
    if number > _MAX_CSEQ:
        raise SipParseError(f"CSeq number {number} is too large")
    return CSeq(number, parts[1])


_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+)\s*(.*)$", re.S)


def parse_via(value: str) -> Via:
    """Parse one Via value (``SIP/2.0/UDP host:port;branch=...``)."""
    match = _VIA.match(value.strip())
    if match is None:
        raise SipParseError(f"bad Via {value!r}")
    transport, hostport, rest = match.groups()
    host, port = split_hostport(hostport)
    return Via(transport.upper(), host, port, _parse_params(rest, value))


def split_hostport(hostport: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references in brackets)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SipParseError(f"bad port in {hostport!r}")
        return host, int(port_text)
    return host, None


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, rest = data.partition(separator)
        if found:
            return head, rest
    raise SipParseError("no blank line after the header fields")


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for line in re.split(r"\r?\n", head):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip() + " " + line.strip()  # RFC 3261 §7.3.1
        else:
            lines.append(line)
    return lines


def parse_message(data: bytes, *, max_size: int = 65535, stream: bool = False) -> SipMessage:
    """Parse one SIP message.

    ``stream``: the message came over TCP, where Content-Length is mandatory (RFC 3261
    §18.3). Over UDP, octets beyond Content-Length are discarded (RFC 4475 §3.1.1.8).
    """
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}")
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before the start line are ignored
    raw_head, rest = _split_head(data)
    try:
        head = raw_head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not UTF-8: {exc}") from None
    lines = _unfold(head)
    start, header_lines = lines[0], lines[1:]
    headers: list[tuple[str, str]] = []
    for line in header_lines:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME.match(name):
            raise SipParseError(f"malformed header line {line!r}")
        headers.append((canonical_name(name), value.strip()))
    frozen = tuple(headers)
    for single in SINGLE_VALUED:
        values = _lookup(frozen, single)
        if len(values) > 1 or (values and single != "Content-Length" and "," in values[0]
                                and single in ("Call-ID", "CSeq", "Max-Forwards")):
            raise SipParseError(f"{single} appears more than once")
    body = _body(frozen, rest, stream)
    message: SipMessage
    request = _REQUEST_LINE.match(start)
    if request:
        method, uri, version = request.groups()
        _check_version(version)
        message = SipRequest(method, uri, frozen, body)
        _check_request(message)
        return message
    status = _STATUS_LINE.match(start)
    if status:
        version, code, reason = status.groups()
        _check_version(version)
        if not 100 <= int(code) <= 699:
            raise SipParseError(f"status code {code} out of range")
        message = SipResponse(int(code), reason, frozen, body)
        _check_common(message)
        return message
    raise SipParseError(f"malformed start line {start!r}")


def _check_version(version: str) -> None:
    if version != SIP_VERSION:
        raise VersionNotSupported(f"unsupported version {version}")


def _body(headers: Headers, rest: bytes, stream: bool) -> bytes:
    values = _lookup(headers, "Content-Length")
    if not values:
        if stream:
            raise SipParseError("no Content-Length on a stream transport")
        return rest
    text = values[0].strip()
    if not text.isdigit():
        raise SipParseError(f"bad Content-Length {text!r}")
    length = int(text)
    if length > len(rest):
        raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} octets present")
    return rest[:length]


def _check_common(message: SipMessage) -> None:
    for name in ("CSeq", "Call-ID", "From", "To", "Via"):
        if message.header(name) is None:
            raise MissingHeader(f"missing {name}")
    message.cseq  # noqa: B018 - parse to validate
    message.from_  # noqa: B018
    message.to  # noqa: B018
    for via in message.header_values("Via"):
        parse_via(via)


def _check_request(request: SipRequest) -> None:
    _check_common(request)
    if request.cseq.method != request.method:
        raise SipParseError(f"CSeq method {request.cseq.method} != {request.method}")
    if not _SCHEME.match(request.uri) or "<" in request.uri:
        raise SipParseError(f"malformed Request-URI {request.uri!r}")
    scheme = request.uri.split(":", 1)[0].lower()
    if scheme not in ("sip", "sips", "tel"):
        raise UnsupportedUriScheme(f"unsupported URI scheme {scheme!r}")
    forwards = request.header("Max-Forwards")
    if forwards is not None and (not forwards.isdigit() or int(forwards) > 255):
        raise SipParseError(f"bad Max-Forwards {forwards!r}")
    for contact in request.header_values("Contact"):
        if contact != "*":
            parse_address(contact)


class StreamDecoder:
    """Frames SIP messages on a stream transport (TCP) by Content-Length (RFC 3261 §18.3).

    Feed bytes as they arrive; :meth:`messages` yields every complete message. A framing
    error is fatal for the connection (the stream cannot be resynchronised).
    """

    def __init__(self, max_size: int = 65535) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[SipMessage]:
        """Add received bytes; return the messages now complete."""
        self._buffer += data
        out: list[SipMessage] = []
        while True:
            stripped = self._buffer.lstrip(b"\r\n")  # keepalive CRLFs (RFC 5626 §4.4.1)
            if len(stripped) != len(self._buffer):
                del self._buffer[: len(self._buffer) - len(stripped)]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max_size:
                    raise SipParseError("header section too large")
                return out
            head = bytes(self._buffer[:end]).decode("utf-8", "replace")
            length = 0
            for line in _unfold(head)[1:]:
                name, _, value = line.partition(":")
                if canonical_name(name.strip()) == "Content-Length":
                    if not value.strip().isdigit():
                        raise SipParseError(f"bad Content-Length {value.strip()!r}")
                    length = int(value.strip())
            total = end + 4 + length
            if total > self._max_size:
                raise SipParseError(f"message of {total} bytes exceeds {self._max_size}")
            if len(self._buffer) < total:
                return out
            chunk = bytes(self._buffer[:total])
            del self._buffer[:total]
            out.append(parse_message(chunk, max_size=self._max_size, stream=True))
