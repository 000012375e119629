"""The sans-IO SIP user agent: transactions, dialogs and the requests a gateway answers.

Follows aioquic's contract, like ripp_core's endpoints::

    endpoint.receive_datagram(data, addr, now)
    for data, addr in endpoint.datagrams_to_send(): ...
    endpoint.get_timer() / endpoint.handle_timer(now)
    while (event := endpoint.next_event()) is not None: ...

What needs no decision by the application is answered here: 100 Trying at once, OPTIONS
(trunk keepalives), CANCEL (200, then 487 for the INVITE), BYE (200), ACKs for 2xx and
non-2xx finals, retransmissions, digest challenges to our INVITEs, session-timer refreshes
(RFC 4028) and 481/405/420/483/400 for what we cannot take.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict, deque

import attrs

from ._config import SipConfig
from ._digest import Credentials, authorization, best_challenge
from ._errors import DigestError, LocalSipError, SipError, SipParseError
from ._events import (
    AckReceived,
    ByeReceived,
    CallFailed,
    CancelReceived,
    InviteReceived,
    ReinviteReceived,
    ResponseReceived,
    SipEvent,
)
from ._message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    format_address,
    parse_address,
    parse_message,
    parse_via,
    split_hostport,
)
from ._transaction import (
    TRANSITIONS,
    Transaction,
    TransactionStateError,
    TxAction,
    TxInput,
    TxKind,
)

Address = tuple[str, int]
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
SUPPORTED = ("timer",)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
DEFAULT_SIP_PORT = 5060


class DialogState(enum.Enum):
    """RFC 3261 §12 dialog states, plus the call before any dialog exists."""

    INITIAL = "initial"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(enum.Enum):
    """What moves a dialog (RFC 3261 §12): responses to the INVITE, and endings."""

    EARLY_RESPONSE = "1xx with a To tag"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    END = "BYE, CANCEL, timeout"


D, DI = DialogState, DialogInput
#: (state, input) -> new state. An input not listed leaves the state as it is: a late
#: 1xx after the 2xx, a 2xx retransmission, anything once terminated (RFC 3261 §12, §13).
DIALOG_TRANSITIONS: dict[tuple[DialogState, DialogInput], DialogState] = {
    (D.INITIAL, DI.EARLY_RESPONSE): D.EARLY,
    (D.INITIAL, DI.SUCCESS): D.CONFIRMED,
    (D.INITIAL, DI.FAILURE): D.TERMINATED,
    (D.INITIAL, DI.END): D.TERMINATED,
    (D.EARLY, DI.SUCCESS): D.CONFIRMED,
    (D.EARLY, DI.FAILURE): D.TERMINATED,
    (D.EARLY, DI.END): D.TERMINATED,
    (D.CONFIRMED, DI.END): D.TERMINATED,
}


@attrs.define
class SipCall:
    """One call's dialog state (RFC 3261 §12): Call-ID, tags, CSeqs, target and routes."""

    handle: str
    is_uac: bool
    call_id: str
    local_tag: str
    local_uri: str  # our From (UAC) / To (UAS) without the tag
    remote_uri: str
    invite: SipRequest
    peer: Address
    remote_tag: str | None = None
    remote_target: str | None = None
    route_set: tuple[str, ...] = ()
    local_cseq: int = 1
    remote_cseq: int = 0
    state: DialogState = DialogState.INITIAL
    invite_tx: tuple[str, ...] | None = None
    ack: SipRequest | None = None
    cancel_wanted: bool = False
    provisional_seen: bool = False
    credentials: Credentials | None = None
    auth_tried: bool = False
    session_interval: int | None = None
    we_refresh: bool = False
    refresh_at: float | None = None
    expires_at: float | None = None


@attrs.define
class _TxRecord:
    tx: Transaction
    request: SipRequest
    peer: Address
    call: str | None
    response: SipResponse | None = None


class SipEndpoint:
    """A SIP user agent (UAC and UAS) bound to one local address and transport."""

    def __init__(self, local: Address, *, transport: str = "UDP",
                 config: SipConfig | None = None, seed: int | None = None,
                 user: str = "ripp", handle_prefix: str = "s") -> None:
        self.local = local
        self.handle_prefix = handle_prefix
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP"
        self.config = config or SipConfig()
        self.user = user
        self._random = random.Random(seed)
        self.calls: dict[str, SipCall] = {}
        self._dialogs: dict[tuple[str, str], str] = {}  # (Call-ID, local tag) -> handle
        self._txs: dict[tuple[str, ...], _TxRecord] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[SipEvent] = deque()
        self._count = 0

    # ------------------------------------------------------------------ contract
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Every message to put on the wire now, with its destination."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> SipEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction or session timer, or None."""
        deadlines = [d for r in self._txs.values() if (d := r.tx.next_deadline()) is not None]
        for call in self.calls.values():
            deadlines += [d for d in (call.refresh_at, call.expires_at) if d is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline has passed."""
        for key, record in list(self._txs.items()):
            for timer in record.tx.due(now):
                self._drive(key, record, timer, now)
            if record.tx.terminated:
                self._txs.pop(key, None)
        for call in list(self.calls.values()):
            if call.state is DialogState.TERMINATED:
                continue
            if call.refresh_at is not None and now >= call.refresh_at:
                call.refresh_at = None
                self._refresh(call, now)
            if call.expires_at is not None and now >= call.expires_at:
                call.expires_at = None
                self._send_bye(call, now, reason='SIP;cause=408;text="Session expired"')
                self._fail(call, 408, "Session expired")

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one received message (a UDP datagram, or a message framed from TCP)."""
        try:
            message = parse_message(data, max_size=self.config.max_message_size,
                                    stream=False)
        except SipParseError as exc:
            self._reject_unparsable(data, addr, exc)
            return
        self.receive_message(message, addr, now)

    def receive_message(self, message: SipMessage, addr: Address, now: float) -> None:
        """Handle one parsed message."""
        if isinstance(message, SipResponse):
            self._on_response(message, now)
        else:
            self._on_request(self._stamp_received(message, addr), addr, now)

    # ------------------------------------------------------------------ UAS commands
    def respond(self, handle: str, status: int, reason: str, now: float, *,
                headers: Headers = (), body: bytes = b"",
                content_type: str = "application/sdp") -> None:
        """Answer the call's INVITE: 18x, 2xx or a final failure."""
        call = self._call(handle)
        if call.is_uac or call.invite_tx is None:
            raise LocalSipError("respond() is for calls we received")
        self.respond_to("|".join(call.invite_tx), status, reason, now, headers=headers,
                        body=body, content_type=content_type)

    def respond_to(self, transaction: str, status: int, reason: str, now: float, *,
                   headers: Headers = (), body: bytes = b"",
                   content_type: str = "application/sdp") -> None:
        """Answer a server transaction (the INVITE, or a re-INVITE/UPDATE)."""
        key = tuple(transaction.split("|"))
        record = self._txs.get(key)
        if record is None:
            raise LocalSipError(f"no server transaction {transaction!r}")
        if (record.tx.kind, record.tx.state, _input_for(status)) not in TRANSITIONS:
            # E.g. a 200 racing a CANCEL that already drew the 487: refused before any
            # dialog state changes, so our user learns it and nothing is half-done.
            raise LocalSipError(f"the transaction is {record.tx.state.value}: "
                                f"cannot send {status}")
        call = self.calls.get(record.call) if record.call else None
        extra = list(headers)
        if body:
            extra.append(("Content-Type", content_type))
        response = self._response(record.request, status, reason, call, tuple(extra), body)
        if call is not None and 200 <= status < 300:
            response = self._with_session_timer(call, record.request, response, now)
        record.response = response
        if call is not None and record.request.method == "INVITE" and call.invite_tx == key:
            if 100 < status < 200:
                _advance(call, DialogInput.EARLY_RESPONSE)
            elif 200 <= status < 300:
                _advance(call, DialogInput.SUCCESS)
            elif status >= 300:
                self._end(call)
        self._drive(key, record, _input_for(status), now)

    # ------------------------------------------------------------------ UAC commands
    def invite(self, uri: str, *, to: str, from_: str, destination: Address, now: float,
               headers: Headers = (), body: bytes = b"",
               credentials: Credentials | None = None) -> str:
        """Send an INVITE (new dialog); returns the call handle."""
        handle = self._new_handle()
        tag = self._token()
        local_uri = _without_tag(from_)
        call = SipCall(handle, True, f"{self._token()}@{self.local[0]}", tag, local_uri,
                       _without_tag(to), SipRequest("INVITE", uri), destination,
                       credentials=credentials)
        self.calls[handle] = call
        self._dialogs[(call.call_id, tag)] = handle
        extra = [*headers, ("Supported", ", ".join(SUPPORTED)),
                 ("Session-Expires", str(self.config.session_expires)),
                 ("Min-SE", str(self.config.min_se))]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        call.invite = self._request(call, "INVITE", uri, tuple(extra), body,
                                    cseq=call.local_cseq, to_tag=False)
        self._start_client(call, call.invite, now)
        return handle

    def cancel(self, handle: str, now: float) -> None:
        """Cancel our INVITE (RFC 3261 §9.1); sent once a provisional response arrived."""
        call = self._call(handle)
        if not call.is_uac or call.state in (DialogState.CONFIRMED, DialogState.TERMINATED):
            raise LocalSipError(f"cannot cancel a call in state {call.state.value}")
        call.cancel_wanted = True
        if call.provisional_seen:
            self._send_cancel(call, now)

    def bye(self, handle: str, now: float, *, reason: str | None = None) -> None:
        """Hang up a confirmed call (RFC 3261 §15); ``reason`` fills a Reason header."""
        call = self._call(handle)
        if call.state is not DialogState.CONFIRMED:
            raise LocalSipError(f"cannot send BYE in state {call.state.value}")
        self._send_bye(call, now, reason=reason)
        self._end(call)

    def call(self, handle: str) -> SipCall:
        """The call's dialog state."""
        return self._call(handle)

    # ------------------------------------------------------------------ building
    def _new_handle(self) -> str:
        self._count += 1
        return f"{self.handle_prefix}{self._count}"

    def _token(self) -> str:
        return f"{self._random.getrandbits(64):016x}"

    def _via(self, branch: str) -> str:
        host, port = self.local
        host = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{self.transport} {host}:{port};branch={branch};rport"

    def _contact(self) -> str:
        host, port = self.local
        host = f"[{host}]" if ":" in host else host
        suffix = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        return f"<sip:{self.user}@{host}:{port}{suffix}>"

    def _request(self, call: SipCall, method: str, uri: str, headers: Headers, body: bytes,
                 *, cseq: int, to_tag: bool = True, branch: str | None = None) -> SipRequest:
        to = call.remote_uri + (f";tag={call.remote_tag}" if to_tag and call.remote_tag else "")
        fields: list[tuple[str, str]] = [
            ("Via", self._via(branch or MAGIC_COOKIE + self._token())),
            ("Max-Forwards", str(self.config.max_forwards)),
            *[("Route", route) for route in call.route_set],
            ("From", f"{call.local_uri};tag={call.local_tag}"),
            ("To", to),
            ("Call-ID", call.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in ("INVITE", "UPDATE"):
            fields.append(("Contact", self._contact()))
        fields.append(("User-Agent", self.config.user_agent))
        fields.extend(headers)
        return SipRequest(method, uri, tuple(fields), body)

    def _response(self, request: SipRequest, status: int, reason: str, call: SipCall | None,
                  headers: Headers = (), body: bytes = b"") -> SipResponse:
        fields: list[tuple[str, str]] = [("Via", v) for v in request.header_values("Via")]
        to = request.header("To") or ""
        if call is not None and status > 100 and parse_address(to).tag is None:
            to += f";tag={call.local_tag}"
        fields += [("From", request.header("From") or ""), ("To", to),
                   ("Call-ID", request.call_id), ("CSeq", request.header("CSeq") or "")]
        if request.method in ("INVITE", "UPDATE") and 100 < status < 300:
            fields += [("Record-Route", r) for r in request.header_values("Record-Route")]
            fields.append(("Contact", self._contact()))
        fields.append(("Server", self.config.user_agent))
        if status in (405, 200) and request.method in ("OPTIONS", "INVITE"):
            fields.append(("Allow", ALLOW))
        fields.append(("Supported", ", ".join(SUPPORTED)))
        fields.extend(headers)
        return SipResponse(status, reason, tuple(fields), body)

    def _stamp_received(self, request: SipRequest, addr: Address) -> SipRequest:
        """RFC 3261 §18.2.1 and RFC 3581: note where the request really came from in the
        top Via, so responses go back to the source address."""
        headers = list(request.headers)
        for index, (name, value) in enumerate(headers):
            if name != "Via":
                continue
            first, sep, rest = value.partition(",")
            via = parse_via(first)
            text = first.strip()
            if via.host != addr[0]:
                text += f";received={addr[0]}"
            if via.param("rport") == "":
                text = text.replace(";rport", f";rport={addr[1]}", 1)
            headers[index] = (name, text + (sep + rest if sep else ""))
            break
        return attrs.evolve(request, headers=tuple(headers))

    # ------------------------------------------------------------------ transactions
    def _start_client(self, call: SipCall, request: SipRequest, now: float) -> None:
        kind = TxKind.INVITE_CLIENT if request.method == "INVITE" else TxKind.NON_INVITE_CLIENT
        tx = Transaction(kind, self.config, self.reliable)
        key = _client_key(request)
        record = _TxRecord(tx, request, call.peer, call.handle)
        self._txs[key] = record
        if request.method == "INVITE":
            call.invite_tx = key
        tx.start(now)
        self._out.append((request.to_bytes(), call.peer))

    def _drive(self, key: tuple[str, ...], record: _TxRecord, event: TxInput, now: float,
               message: SipResponse | None = None) -> None:
        try:
            actions = record.tx.handle(event, now)
        except TransactionStateError:
            return  # a stray message for this state: absorbed (RFC 3261 §17)
        for action in actions:
            if action is TxAction.SEND:
                if record.tx.kind in (TxKind.INVITE_CLIENT, TxKind.NON_INVITE_CLIENT):
                    self._out.append((record.request.to_bytes(), record.peer))
                elif record.response is not None:
                    self._out.append((record.response.to_bytes(), record.peer))
            elif action is TxAction.SEND_ACK and message is not None:
                self._out.append((_ack_for_failure(record.request, message).to_bytes(),
                                  record.peer))
            elif action is TxAction.TO_TU:
                self._to_tu(record, message, now)
            elif action is TxAction.TIMEOUT:
                self._timeout(record, now)
        if record.tx.terminated:
            self._txs.pop(key, None)

    def _timeout(self, record: _TxRecord, now: float) -> None:
        call = self.calls.get(record.call) if record.call else None
        if call is None or call.state is DialogState.TERMINATED:
            return
        method = record.request.method
        if record.tx.kind is TxKind.INVITE_CLIENT and call.invite_tx == _client_key(
                record.request):
            self._fail(call, 408, "Request Timeout")
        elif record.tx.kind is TxKind.INVITE_SERVER and call.invite_tx is not None and (
                record.response is not None and 200 <= record.response.status < 300):
            # No ACK for our 2xx (RFC 3261 §13.3.1.4): end the dialog.
            self._send_bye(call, now)
            self._fail(call, 408, "No ACK")
        elif method in ("BYE", "UPDATE") and call.state is DialogState.CONFIRMED:
            self._fail(call, 408, f"{method} timed out")

    def _fail(self, call: SipCall, status: int, reason: str) -> None:
        self._end(call)
        self._events.append(CallFailed(call.handle, status, reason))

    def _end(self, call: SipCall) -> None:
        _advance(call, DialogInput.END)
        call.refresh_at = call.expires_at = None
        self._ended[call.handle] = None
        while len(self._ended) > self.config.ended_dialog_memory:
            old, _ = self._ended.popitem(last=False)
            gone = self.calls.pop(old, None)
            if gone is not None:
                self._dialogs.pop((gone.call_id, gone.local_tag), None)

    # ------------------------------------------------------------------ requests
    def _on_request(self, request: SipRequest, addr: Address, now: float) -> None:
        key = _server_key(request)
        if request.method == "ACK":
            self._on_ack(request, key, now)
            return
        record = self._txs.get(key)
        if record is not None:  # a retransmission
            self._drive(key, record, TxInput.REQUEST, now)
            return
        if len(self._txs) >= self.config.max_transactions:
            self._stateless(request, addr, 503, "Service Unavailable")
            return
        if request.method == "CANCEL":
            self._on_cancel(request, key, addr, now)
            return
        if request.to.tag is not None:
            self._in_dialog(request, key, addr, now)
            return
        self._out_of_dialog(request, key, addr, now)

    def _server_tx(self, request: SipRequest, key: tuple[str, ...], addr: Address,
                   call: str | None) -> _TxRecord:
        kind = TxKind.INVITE_SERVER if request.method == "INVITE" else TxKind.NON_INVITE_SERVER
        record = _TxRecord(Transaction(kind, self.config, self.reliable), request, addr, call)
        self._txs[key] = record
        return record

    def _answer(self, key: tuple[str, ...], record: _TxRecord, status: int, reason: str,
                now: float, headers: Headers = ()) -> None:
        call = self.calls.get(record.call) if record.call else None
        record.response = self._response(record.request, status, reason, call, headers)
        self._drive(key, record, _input_for(status), now)

    def _stateless(self, request: SipRequest, addr: Address, status: int, reason: str,
                   headers: Headers = ()) -> None:
        response = self._response(request, status, reason, None, headers)
        self._out.append((response.to_bytes(), addr))

    def _out_of_dialog(self, request: SipRequest, key: tuple[str, ...], addr: Address,
                       now: float) -> None:
        record = self._server_tx(request, key, addr, None)
        unsupported = [tag for tag in request.header_values("Require") if tag not in SUPPORTED]
        if unsupported:
            self._answer(key, record, 420, "Bad Extension", now,
                         (("Unsupported", ", ".join(unsupported)),))
            return
        if request.method == "OPTIONS":
            self._answer(key, record, 200, "OK", now, (("Accept", "application/sdp"),))
            return
        if request.method != "INVITE":
            self._answer(key, record, 405, "Method Not Allowed", now)
            return
        forwards = request.header("Max-Forwards")
        if forwards is not None and int(forwards) == 0:
            self._answer(key, record, 483, "Too Many Hops", now)
            return
        content_type = (request.header("Content-Type") or "application/sdp").split(";")[0]
        if request.body and content_type.strip().lower() != "application/sdp":
            self._answer(key, record, 415, "Unsupported Media Type", now,
                         (("Accept", "application/sdp"),))
            return
        interval = request.header("Session-Expires")
        if interval is not None:
            seconds = interval.split(";")[0].strip()
            if seconds.isdigit() and int(seconds) < self.config.min_se:
                self._answer(key, record, 422, "Session Interval Too Small", now,
                             (("Min-SE", str(self.config.min_se)),))
                return
        handle = self._new_handle()
        from_ = request.from_
        call = SipCall(handle, False, request.call_id, self._token(),
                       _without_tag(request.header("To") or ""),
                       _without_tag(request.header("From") or ""), request, addr,
                       remote_tag=from_.tag, remote_cseq=request.cseq.number)
        contacts = request.header_values("Contact")
        call.remote_target = parse_address(contacts[0]).uri if contacts else None
        call.route_set = tuple(request.header_values("Record-Route"))
        call.invite_tx = key
        self.calls[handle] = call
        self._dialogs[(call.call_id, call.local_tag)] = handle
        record.call = handle
        record.response = self._response(request, 100, "Trying", call)
        self._drive(key, record, TxInput.PROVISIONAL, now)
        self._events.append(InviteReceived(handle, request, addr))

    def _in_dialog(self, request: SipRequest, key: tuple[str, ...], addr: Address,
                   now: float) -> None:
        handle = self._dialogs.get((request.call_id, request.to.tag or ""))
        call = self.calls.get(handle) if handle else None
        record = self._server_tx(request, key, addr, handle)
        if call is None or call.state is DialogState.TERMINATED:
            status = 200 if request.method == "BYE" and call is not None else 481
            self._answer(key, record, status,
                         "OK" if status == 200 else "Call/Transaction Does Not Exist", now)
            return
        cseq = request.cseq.number
        if cseq <= call.remote_cseq and call.remote_cseq:
            self._answer(key, record, 500, "Server Internal Error", now,
                         (("Retry-After", "1"),))  # RFC 3261 §12.2.2: out of order
            return
        call.remote_cseq = cseq
        if request.method == "BYE":
            self._answer(key, record, 200, "OK", now)
            self._end(call)
            self._events.append(ByeReceived(handle or "", request))
        elif request.method == "UPDATE" and not request.body:
            # A session refresh without an offer (RFC 4028 §7.4): nothing to decide.
            self.respond_to("|".join(key), 200, "OK", now)
        elif request.method in ("INVITE", "UPDATE"):
            if request.method == "INVITE":
                contacts = request.header_values("Contact")
                if contacts:  # a target refresh (RFC 3261 §12.2.2)
                    call.remote_target = parse_address(contacts[0]).uri
            self._events.append(ReinviteReceived(handle or "", "|".join(key), request))
        else:  # INFO, OPTIONS, anything else in a dialog: acknowledged, nothing to do
            self._answer(key, record, 200, "OK", now)

    def _on_ack(self, request: SipRequest, key: tuple[str, ...], now: float) -> None:
        record = self._txs.get(key)  # the ACK of a non-2xx final has the INVITE's branch
        if record is not None:
            self._drive(key, record, TxInput.ACK, now)
            return
        handle = self._dialogs.get((request.call_id, request.to.tag or ""))
        call = self.calls.get(handle) if handle else None
        if call is None or call.invite_tx is None:
            return  # RFC 3261 §17.2.3: a stray ACK is dropped
        record = self._txs.get(call.invite_tx)
        if record is not None and record.request.cseq.number == request.cseq.number:
            self._drive(call.invite_tx, record, TxInput.ACK, now)

    def _on_cancel(self, request: SipRequest, key: tuple[str, ...], addr: Address,
                   now: float) -> None:
        invite_key = (*key[:-1], "INVITE")
        invite = self._txs.get(invite_key)
        record = self._server_tx(request, key, addr, invite.call if invite else None)
        if invite is None or invite.call is None:
            self._answer(key, record, 481, "Call/Transaction Does Not Exist", now)
            return
        self._answer(key, record, 200, "OK", now)
        call = self.calls[invite.call]
        if invite.response is None or invite.response.status < 200:
            self.respond(call.handle, 487, "Request Terminated", now)
            self._events.append(CancelReceived(call.handle))

    def _reject_unparsable(self, data: bytes, addr: Address, exc: SipParseError) -> None:
        """Answer a request we could not parse, if it carries enough to answer (§8.2)."""
        text = data.decode("utf-8", "replace").replace("\r\n", "\n")
        head = text.split("\n\n", 1)[0].split("\n")
        if not head or head[0].startswith("SIP/"):
            return  # a bad response is dropped (RFC 3261 §18.1.2)
        wanted = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
        fields = []
        for line in head[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() in wanted:
                fields.append((name.strip(), value.strip()))
        names = {n.lower() for n, _ in fields}
        if not {"cseq"} <= names or not names & {"via", "v"}:
            return
        lines = [f"SIP/2.0 {exc.sip_code} {_REASONS.get(exc.sip_code, 'Bad Request')}"]
        lines += [f"{n}: {v}" for n, v in fields]
        # The Warning text is a quoted-string: no quotes or backslashes from the offence.
        text = exc.message[:100].replace('"', "'").replace("\\", "/")
        lines += [f'Warning: 399 ripp "{text}"', "Content-Length: 0"]
        self._out.append((("\r\n".join(lines) + "\r\n\r\n").encode(), addr))

    # ------------------------------------------------------------------ responses
    def _on_response(self, response: SipResponse, now: float) -> None:
        try:
            key = (response.top_via.branch or "", response.cseq.method)
        except SipError:
            return
        record = self._txs.get(key)
        if record is None:
            self._stray_response(response, now)
            return
        self._drive(key, record, _input_for(response.status), now, response)

    def _stray_response(self, response: SipResponse, now: float) -> None:
        # A 2xx retransmitted after our INVITE transaction ended: ACK it again (§13.2.2.4).
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        handle = self._dialogs.get((response.call_id, response.from_.tag or ""))
        call = self.calls.get(handle) if handle else None
        if call is not None and call.ack is not None:
            self._out.append((call.ack.to_bytes(), self._target_address(call)))

    def _to_tu(self, record: _TxRecord, message: SipResponse | None, now: float) -> None:
        call = self.calls.get(record.call) if record.call else None
        if call is None:
            return
        if record.tx.kind is TxKind.INVITE_SERVER:
            # An ACK for our 2xx (RFC 6026 Accepted state).
            if record.request.method == "INVITE" and call.invite_tx is not None:
                self._events.append(AckReceived(call.handle))
            return
        if message is None:
            return
        method = record.request.method
        if method == "INVITE" and call.invite_tx == _client_key(record.request):
            self._invite_response(call, record, message, now)
        elif method == "UPDATE" and 200 <= message.status < 300:
            self._session_timer_from(call, message, now, uac=True)

    def _invite_response(self, call: SipCall, record: _TxRecord, response: SipResponse,
                         now: float) -> None:
        status = response.status
        if (status in (401, 407) and call.credentials is not None and not call.auth_tried
                and self._retry_with_auth(call, record, response, now)):
            return
        tag = response.to.tag
        if status < 200:
            call.provisional_seen = True
            if tag and call.state is DialogState.INITIAL and status > 100:
                call.remote_tag = tag
                _advance(call, DialogInput.EARLY_RESPONSE)
            if call.cancel_wanted:
                self._send_cancel(call, now)
            if status > 100:
                self._events.append(ResponseReceived(call.handle, response))
            return
        if status < 300:
            first = call.state is not DialogState.CONFIRMED
            if first:
                call.remote_tag = tag
                _advance(call, DialogInput.SUCCESS)
                contacts = response.header_values("Contact")
                call.remote_target = parse_address(contacts[0]).uri if contacts else None
                call.route_set = tuple(reversed(response.header_values("Record-Route")))
                call.ack = self._request(call, "ACK", call.remote_target or record.request.uri,
                                         (), b"", cseq=record.request.cseq.number)
                self._session_timer_from(call, response, now, uac=True)
            if call.ack is not None:
                self._out.append((call.ack.to_bytes(), self._target_address(call)))
            if first:
                self._events.append(ResponseReceived(call.handle, response))
                if call.cancel_wanted:  # CANCEL crossed the 2xx: hang up (RFC 3261 §9.1)
                    self._send_bye(call, now)
                    self._end(call)
            return
        self._end(call)
        self._events.append(ResponseReceived(call.handle, response))

    def _retry_with_auth(self, call: SipCall, record: _TxRecord, response: SipResponse,
                         now: float) -> bool:
        field = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        assert call.credentials is not None
        try:
            challenge = best_challenge(response.header_values(field) or
                                       [v for n, v in response.headers if n == field])
            value = authorization(challenge, call.credentials, method="INVITE",
                                  uri=record.request.uri, cnonce=self._token())
        except DigestError:
            return False
        call.auth_tried = True
        call.local_cseq += 1
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        headers = tuple((n, v) for n, v in record.request.headers
                        if n not in ("Via", "CSeq", answer))
        fields = (("Via", self._via(MAGIC_COOKIE + self._token())),
                  *[(n, v) for n, v in headers if n != "Max-Forwards"],
                  ("Max-Forwards", str(self.config.max_forwards)),
                  ("CSeq", f"{call.local_cseq} INVITE"), (answer, value))
        call.invite = attrs.evolve(record.request, headers=fields)
        self._start_client(call, call.invite, now)
        return True

    # ------------------------------------------------------------------ in-dialog sends
    def _target_address(self, call: SipCall) -> Address:
        if self.reliable and not call.is_uac:
            # Connection reuse: requests of a dialog that came in over TCP go back over the
            # connection it came on (the peer may accept no new connection from us).
            return call.peer
        target = call.route_set[0] if call.route_set else call.remote_target
        if target is None:
            return call.peer
        uri = parse_address(target).uri if "<" in target else target
        return _uri_address(uri, call.peer)

    def _send_in_dialog(self, call: SipCall, method: str, now: float,
                        headers: Headers = ()) -> None:
        call.local_cseq += 1
        request = self._request(call, method, call.remote_target or call.invite.uri, headers,
                                b"", cseq=call.local_cseq)
        peer = self._target_address(call)
        record = _TxRecord(Transaction(TxKind.NON_INVITE_CLIENT, self.config, self.reliable),
                           request, peer, call.handle)
        self._txs[_client_key(request)] = record
        record.tx.start(now)
        self._out.append((request.to_bytes(), peer))

    def _send_bye(self, call: SipCall, now: float, reason: str | None = None) -> None:
        self._send_in_dialog(call, "BYE", now, (("Reason", reason),) if reason else ())

    def _send_cancel(self, call: SipCall, now: float) -> None:
        """RFC 3261 §9.1: same Request-URI, Call-ID, From, To, Route and top Via (so the
        same branch) as the INVITE; CSeq number too, with method CANCEL."""
        call.cancel_wanted = False
        invite = call.invite
        fields = [("Via", invite.header_values("Via")[0])]
        fields += [(n, v) for n, v in invite.headers
                   if n in ("Route", "From", "To", "Call-ID", "Max-Forwards")]
        fields.append(("CSeq", f"{invite.cseq.number} CANCEL"))
        cancel = SipRequest("CANCEL", invite.uri, tuple(fields))
        record = _TxRecord(Transaction(TxKind.NON_INVITE_CLIENT, self.config, self.reliable),
                           cancel, call.peer, call.handle)
        self._txs[_client_key(cancel)] = record
        record.tx.start(now)
        self._out.append((cancel.to_bytes(), call.peer))

    # ------------------------------------------------------------------ session timers
    def _with_session_timer(self, call: SipCall, request: SipRequest, response: SipResponse,
                            now: float) -> SipResponse:
        """RFC 4028 §9: accept the UAC's interval; the UAC refreshes if it supports timers."""
        value = request.header("Session-Expires")
        if value is None or request.method not in ("INVITE", "UPDATE"):
            return response
        seconds = value.split(";")[0].strip()
        if not seconds.isdigit():
            return response
        interval = max(int(seconds), self.config.min_se)
        supports = "timer" in request.header_values("Supported")
        refresher = "uac" if supports else "uas"
        if "refresher=uas" in value.replace(" ", ""):
            refresher = "uas"
        call.session_interval = interval
        # The UAC of the session-refresh request is whoever sent it; we are the UAS here.
        call.we_refresh = refresher == "uas"
        self._arm_session_timer(call, now)
        headers = (*response.headers, ("Session-Expires", f"{interval};refresher={refresher}"))
        if supports:
            headers += (("Require", "timer"),)
        return attrs.evolve(response, headers=headers)

    def _session_timer_from(self, call: SipCall, response: SipResponse, now: float, *,
                            uac: bool) -> None:
        value = response.header("Session-Expires")
        if value is None:
            return
        seconds = value.split(";")[0].strip()
        if not seconds.isdigit():
            return
        call.session_interval = int(seconds)
        refresher = "uac" if "refresher=uac" in value.replace(" ", "") else "uas"
        call.we_refresh = (refresher == "uac") == uac
        self._arm_session_timer(call, now)

    def _arm_session_timer(self, call: SipCall, now: float) -> None:
        if call.session_interval is None:
            return
        if call.we_refresh:
            call.refresh_at = now + call.session_interval / 2  # RFC 4028 §10
            call.expires_at = None
        else:
            call.refresh_at = None
            # RFC 4028 §10: without a refresh, end the session before it expires.
            call.expires_at = now + call.session_interval - min(
                32, call.session_interval / 3)

    def _refresh(self, call: SipCall, now: float) -> None:
        if call.state is not DialogState.CONFIRMED or call.session_interval is None:
            return
        self._send_in_dialog(call, "UPDATE", now, (
            ("Session-Expires", f"{call.session_interval};refresher=uac"),
            ("Supported", "timer")))

    def note_refresh(self, handle: str, now: float) -> None:
        """Restart the session timer: a re-INVITE/UPDATE from the peer was answered 2xx."""
        call = self._call(handle)
        self._arm_session_timer(call, now)

    def _call(self, handle: str) -> SipCall:
        call = self.calls.get(handle)
        if call is None:
            raise LocalSipError(f"no call {handle!r}")
        return call


_REASONS = {400: "Bad Request", 416: "Unsupported URI Scheme", 505: "Version Not Supported",
            420: "Bad Extension", 483: "Too Many Hops"}


def _advance(call: SipCall, event: DialogInput) -> None:
    """Move the dialog by :data:`DIALOG_TRANSITIONS` (unlisted inputs change nothing)."""
    call.state = DIALOG_TRANSITIONS.get((call.state, event), call.state)


def _input_for(status: int) -> TxInput:
    if status < 200:
        return TxInput.PROVISIONAL
    return TxInput.SUCCESS if status < 300 else TxInput.FAILURE


def _without_tag(value: str) -> str:
    address = parse_address(value)
    params = [(n, v) for n, v in address.params if n.lower() != "tag"]
    return format_address(attrs.evolve(address, params=tuple(params)))


def _client_key(request: SipRequest) -> tuple[str, ...]:
    return (request.top_via.branch or "", request.cseq.method)


def _server_key(request: SipRequest) -> tuple[str, ...]:
    """RFC 3261 §17.2.3: branch + sent-by + method (ACK matches its INVITE); RFC 2543
    requests without the magic cookie are matched on their dialog and CSeq instead."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    sent_by = f"{via.host}:{via.port or DEFAULT_SIP_PORT}"
    if branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by, method)
    return ("2543", request.call_id, request.from_.tag or "", str(request.cseq.number),
            sent_by, method)


def _ack_for_failure(invite: SipRequest, response: SipResponse) -> SipRequest:
    """RFC 3261 §17.1.1.3: the ACK of a non-2xx final, inside the INVITE transaction."""
    fields = [("Via", invite.header_values("Via")[0])]
    fields += [(n, v) for n, v in invite.headers
               if n in ("Route", "From", "Call-ID", "Max-Forwards")]
    fields.append(("To", response.header("To") or ""))
    fields.append(("CSeq", f"{invite.cseq.number} ACK"))
    return SipRequest("ACK", invite.uri, tuple(fields))


def _uri_address(uri: str, default: Address) -> Address:
    """Host and port of a sip: URI (no DNS here: names are the driver's business)."""
    if ":" not in uri:
        return default
    rest = uri.split(":", 1)[1]
    hostport = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    try:
        host, port = split_hostport(hostport)
    except SipParseError:
        return default
    return host, port or DEFAULT_SIP_PORT
