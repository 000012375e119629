"""The SIP <-> RIPP gateway on Trio: sockets, timers and one task group per call.

No protocol logic lives here. :class:`ripp_sip.SipEndpoint` decides everything SIP,
:mod:`ripp_sip._sdp` the offer/answer, :class:`ripp_sip._mapping.MediaBridge` every RTP
<-> frame mapping; the RIPP leg goes through ``ripp_trio``'s public API. This module moves
datagrams between sockets and those objects and waits on their deadlines.

SIP -> RIPP: an INVITE becomes ``Client.place_call`` to the configured calls URI.
RIPP -> SIP: a call arriving at the gateway's RIPP server becomes an INVITE to the trunk.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import trio
from aioquic.quic.configuration import QuicConfiguration

import ripp_trio
from ripp_core import (
    CallEnded,
    CallState,
    Codec,
    MediaFrame,
    RippConfig,
    RippError,
)
from ripp_core.aio import Call, Client, Server, ServerCall

from ._config import SipConfig
from ._digest import Credentials
from ._endpoint import DialogState, SipEndpoint, _uri_address
from ._errors import LocalSipError, NotAcceptable, RtpError, SdpError, SipParseError
from ._events import (
    ByeReceived,
    CallFailed,
    CancelReceived,
    InviteReceived,
    ReinviteReceived,
    ResponseReceived,
    SipEvent,
)
from ._mapping import (
    RTP_MAX_GAP,
    MediaBridge,
    field_value_is_safe,
    reason_header,
    ripp_to_sip_headers,
    sip_final_for_termination,
    sip_to_ripp_headers,
    termination_for_bye,
    termination_for_sip_final,
)
from ._message import Address as SipAddress
from ._message import SipRequest, StreamDecoder, format_address, parse_address
from ._rtp import (
    FrameOut,
    ReportBlock,
    RtpSender,
    SkipOut,
    build_sender_report,
    is_rtcp,
    report_from_stats,
)
from ._sdp import (
    AUDIO_CODECS,
    Negotiated,
    SessionDescription,
    accept_answer,
    answer_offer,
    make_offer,
    parse_sdp,
)

log = logging.getLogger("ripp.gateway")
Addr = tuple[str, int]
_MAX_DATAGRAM = 65536


@attrs.frozen
class GatewayConfig:
    """What the gateway connects, and how (see docs/gateway.md, "Configuration")."""

    sip_host: str = "127.0.0.1"
    """Address the SIP UDP socket binds to."""
    sip_port: int = 5060
    """SIP port (0: any free port)."""
    sip_tcp: bool = True
    """Also listen for SIP over TCP, on the same port number as UDP."""
    rtp_host: str = "127.0.0.1"
    """Address RTP sockets bind to, and the one written into our SDP."""
    calls_uri: str | None = None
    """RIPP calls URI that SIP INVITEs are sent to (None: refuse SIP calls with 403)."""
    ripp_token: str | Callable[[str], str] = "ripp-gateway"
    """OAuth bearer token for the RIPP calls the gateway places."""
    trunk: str | None = None
    """SIP URI that RIPP calls are sent to, e.g. ``sip:127.0.0.1:5080`` (None: refuse)."""
    credentials: Credentials | None = None
    """Digest credentials for the trunk (RFC 8760: SHA-256 or MD5)."""
    ptime: int = 20
    """Packetisation time we offer and send, in ms (10-60)."""
    codecs: tuple[Codec, ...] = AUDIO_CODECS
    """Audio codecs we offer and accept, in preference order."""
    sign_identity: Callable[[str, str], str] | None = None
    """Makes an Identity for an INVITE without one (``(to, from) -> value``); None: 428."""
    answer_timeout: float = 180.0
    """A RIPP -> SIP call not answered in this time is cancelled (408)."""
    rtcp_interval: float = 5.0
    """Seconds between RTCP sender reports toward the SIP side."""
    rtp_max_gap: float = attrs.field(default=RTP_MAX_GAP, validator=attrs.validators.gt(0))
    """Largest RTP timestamp jump (seconds) skipped on the RIPP clock as loss or silence
    suppression (capped at the RIPP leg's ``media_skip_max``); a larger jump or a new
    SSRC is a new timeline, taken when the next packet confirms it, with MARKER and no
    skip (docs/gateway.md, "RTP timing")."""
    """Seconds between RTCP sender reports toward the SIP side."""
    jitter_buffer: bool = True
    """Play RIPP media out through the core's jitter buffer (False: forward on arrival)."""
    max_records: int = 1000
    """Call records kept in ``Gateway.records`` (the most recent; older ones are dropped)."""
    on_call_end: Callable[[CallRecord], None] | None = None
    """Called with each call's record when the call is over (logs, metrics)."""
    sip: SipConfig = attrs.field(factory=SipConfig)
    """Timers and limits of the SIP core."""
    ripp: RippConfig | None = None
    """RIPP settings of both legs (default: RippConfig with ``jitter_buffer``)."""


#: Latency samples a CallRecord keeps per direction (a bounded window, for long calls).
LATENCY_SAMPLES = 3000


@attrs.define
class CallRecord:
    """What one gatewayed call did, for logs, tests and the figures."""

    direction: str
    sip_call: str
    ripp_handle: str | None = None
    identity: str | None = None
    rtp_in: int = 0
    frames_to_ripp: int = 0
    frames_from_ripp: int = 0
    rtp_out: int = 0
    dtmf_to_ripp: int = 0
    dtmf_to_sip: int = 0
    rtcp_sent: int = 0
    transcoded: int = 0
    rtp_late: int = 0
    """RTP packets whose media time had passed on the RIPP clock (reordered, late,
    duplicated): dropped, or placed in a frame still being re-cut (docs/gateway.md)."""
    rtp_rejected: int = 0
    """RTP packets claiming a new SSRC or a jump that the next packet did not confirm."""
    rtp_reanchored: int = 0
    """New RTP timelines taken (confirmed new SSRC or jump, clock-rate change)."""
    rtp_skipped: float = 0.0
    """Media time skipped on the RIPP clock for RTP loss and silence (seconds)."""
    ended: tuple[int, str] | None = None
    sip_final: int | None = None
    reinvites: int = 0
    directions: list[str] = attrs.Factory(list)
    forward_latency: deque[float] = attrs.Factory(lambda: deque(maxlen=LATENCY_SAMPLES))
    """RTP in -> RIPP frame out, per packet (seconds, the gateway's own processing); the
    most recent ``LATENCY_SAMPLES``."""
    backward_latency: deque[float] = attrs.Factory(lambda: deque(maxlen=LATENCY_SAMPLES))
    """RIPP frame arrived -> RTP out, per frame (seconds; includes the jitter buffer)."""


class _Rtp:
    """An RTP socket and its RTCP neighbour (port + 1), non-blocking."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(50):
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtp.bind((host, 0))
            port = rtp.getsockname()[1]
            if port % 2 == 0 and port < 65535:
                rtcp = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    rtcp.bind((host, port + 1))
                except OSError:
                    rtcp.close()
                else:
                    break
            rtp.close()
        else:
            raise OSError("no free even/odd RTP/RTCP port pair")
        rtp.setblocking(False)
        rtcp.setblocking(False)
        self.rtp, self.rtcp, self.port = rtp, rtcp, port

    def send(self, sock: socket.socket, data: bytes, addr: Addr) -> None:
        try:
            sock.sendto(data, addr)
        except OSError as exc:  # UDP: a full buffer or an ICMP error is loss
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED):
                log.warning("RTP sendto %s failed: %s", addr, exc)

    async def receive(self) -> tuple[bytes, Addr]:
        while True:
            try:
                data, addr = self.rtp.recvfrom(_MAX_DATAGRAM)
                return data, (addr[0], addr[1])
            except (BlockingIOError, ConnectionRefusedError):
                await trio.lowlevel.wait_readable(self.rtp)

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class Gateway:
    """A running gateway: its SIP endpoint, RIPP client and server, and call records."""

    def __init__(self, config: GatewayConfig, sip_sock: socket.socket,
                 client: Client | None, server: Server | None) -> None:
        self.config = config
        self._sock = sip_sock
        host, port = sip_sock.getsockname()[:2]
        self.sip = SipEndpoint((host, port), config=config.sip, handle_prefix="u")
        self.sip_tcp: SipEndpoint | None = None
        if config.sip_tcp:
            self.sip_tcp = SipEndpoint((host, port), transport="TCP", config=config.sip,
                                       handle_prefix="t")
        self._tcp_out: dict[Addr, trio.MemorySendChannel[bytes]] = {}
        self.client = client
        self.server = server
        self.records: deque[CallRecord] = deque(maxlen=config.max_records)
        self._inboxes: dict[str, trio.MemorySendChannel[SipEvent]] = {}
        self._timer_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._session = int(time.time())

    @property
    def sip_address(self) -> Addr:
        """Where the gateway listens for SIP."""
        return self.sip.local

    @property
    def ripp_address(self) -> Addr | None:
        """Where the gateway's RIPP server listens (None without a trunk)."""
        return self.server.address if self.server is not None else None

    def _ended(self, record: CallRecord) -> None:
        if record.ended is None and record.sip_final is not None:
            record.ended = (record.sip_final, "refused by the gateway")
        if self.config.on_call_end is not None:
            try:
                self.config.on_call_end(record)
            except Exception:  # a reporting hook must not take the gateway down
                log.exception("on_call_end failed")

    def close(self) -> None:
        """Say goodbye on the SIP side before the sockets go (shutdown, Ctrl-C): BYE to
        answered calls, 503 to unanswered incoming ones, CANCEL to unanswered outgoing."""
        now = trio.current_time()
        for endpoint in self._endpoints():
            for handle, call in list(endpoint.calls.items()):
                try:
                    if call.state is DialogState.CONFIRMED:
                        endpoint.bye(handle, now, reason=reason_header(503, "Gateway closing"))
                    elif call.state is not DialogState.TERMINATED and call.is_uac:
                        endpoint.cancel(handle, now)
                    elif call.state is not DialogState.TERMINATED:
                        endpoint.respond(handle, 503, "Service Unavailable", now)
                except LocalSipError:
                    continue
        with suppress(OSError):
            self._flush()

    # ------------------------------------------------------------------ SIP I/O
    def _flush(self) -> None:
        for data, addr in self.sip.datagrams_to_send():
            try:
                self._sock.sendto(data, addr)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED):
                    log.warning("SIP sendto %s failed: %s", addr, exc)
        if self.sip_tcp is not None:
            for data, addr in self.sip_tcp.datagrams_to_send():
                self._tcp_send(data, addr)
        for endpoint in self._endpoints():
            while (event := endpoint.next_event()) is not None:
                self._dispatch(event)
        self._timer_changed.set()

    def _endpoints(self) -> list[SipEndpoint]:
        return [self.sip] if self.sip_tcp is None else [self.sip, self.sip_tcp]

    def _ep(self, handle: str) -> SipEndpoint:
        """The endpoint (UDP or TCP) that owns a SIP call handle."""
        if self.sip_tcp is not None and handle.startswith(self.sip_tcp.handle_prefix):
            return self.sip_tcp
        return self.sip

    def _command(self, action: Callable[[float], Any]) -> Any:
        result = action(trio.current_time())
        self._flush()
        return result

    def _dispatch(self, event: SipEvent) -> None:
        if isinstance(event, InviteReceived):
            send, receive = trio.open_memory_channel[SipEvent](math.inf)
            self._inboxes[event.call] = send
            assert self._nursery is not None
            self._nursery.start_soon(self._sip_to_ripp, event, receive)
            return
        inbox = self._inboxes.get(event.call)
        if inbox is not None:
            inbox.send_nowait(event)

    async def _sip_receive_loop(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, ConnectionRefusedError):
                await trio.lowlevel.wait_readable(self._sock)
                continue
            self.sip.receive_datagram(data, (addr[0], addr[1]), trio.current_time())
            self._flush()

    async def _sip_timer_loop(self) -> None:
        while True:
            deadlines = [d for e in self._endpoints() if (d := e.get_timer()) is not None]
            deadline = min(deadlines, default=None)
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._timer_changed.wait()
            self._timer_changed = trio.Event()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                for endpoint in self._endpoints():
                    endpoint.handle_timer(now)
                self._flush()

    # ------------------------------------------------------------------ SIP over TCP
    async def _tcp_serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._tcp_connection, listeners)

    async def _tcp_connection(
        self, stream: trio.SocketStream,
        channels: tuple[trio.MemorySendChannel[bytes],
                        trio.MemoryReceiveChannel[bytes]] | None = None,
    ) -> None:
        """One TCP connection (accepted or opened): frame messages by Content-Length
        (RFC 3261 §18.3) into the TCP endpoint; write what is queued for this peer."""
        peer = stream.socket.getpeername()
        addr: Addr = (str(peer[0]), int(peer[1]))
        if channels is None:
            send, receive = trio.open_memory_channel[bytes](math.inf)
            self._tcp_out.setdefault(addr, send)
        else:
            send, receive = channels
        assert self.sip_tcp is not None
        decoder = StreamDecoder(self.config.sip.max_message_size)

        async def writer() -> None:
            async for data in receive:
                await stream.send_all(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while data := await stream.receive_some(65536):
                    try:
                        messages = decoder.feed(data)
                    except SipParseError as exc:
                        log.info("closing SIP/TCP from %s: %s", addr, exc)
                        break
                    for message in messages:
                        self.sip_tcp.receive_message(message, addr, trio.current_time())
                    self._flush()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("SIP/TCP connection %s ended: %s", addr, exc)
        finally:
            for key, value in list(self._tcp_out.items()):
                if value is send:
                    del self._tcp_out[key]
            await stream.aclose()

    def _tcp_send(self, data: bytes, addr: Addr) -> None:
        channel = self._tcp_out.get(addr)
        if channel is None:  # no connection to that address yet: open one
            send, receive = trio.open_memory_channel[bytes](math.inf)
            self._tcp_out[addr] = send
            channel = send
            assert self._nursery is not None
            self._nursery.start_soon(self._tcp_connect, addr, send, receive)
        channel.send_nowait(data)

    async def _tcp_connect(self, addr: Addr, send: trio.MemorySendChannel[bytes],
                           pending: trio.MemoryReceiveChannel[bytes]) -> None:
        try:
            stream = await trio.open_tcp_stream(*addr)
        except OSError as exc:
            log.info("SIP/TCP connect to %s failed: %s", addr, exc)
            del self._tcp_out[addr]  # the transaction times out (timer B/F)
            return
        # What was queued while connecting goes out first, through the same channel.
        await self._tcp_connection(stream, (send, pending))

    async def _ripp_accept_loop(self) -> None:
        assert self.server is not None and self._nursery is not None
        async for call in self.server.calls():
            self._nursery.start_soon(self._ripp_to_sip, call)

    # ------------------------------------------------------------------ media
    async def _rtp_to_ripp(self, rtp: _Rtp, bridge: MediaBridge, call: Call,
                           record: CallRecord) -> None:
        # Where each packet falls on the RIPP clock is the bridge's decision (sans-IO,
        # protocol 21.3); this loop only carries it out: skips, then frames.
        while True:
            data, _ = await rtp.receive()
            arrived = trio.current_time()
            if is_rtcp(data):
                continue
            try:
                items = bridge.frames_from_rtp(data)
            except RtpError:
                continue
            record.rtp_in += 1
            _note_timeline(bridge, record)
            if call.state not in (CallState.PENDING, CallState.RINGING, CallState.CONNECTED):
                continue  # RIPP media may flow once the call is pending (R20)
            for item in items:
                try:
                    if isinstance(item, SkipOut):
                        call.skip_audio(item.seconds)
                        continue
                    call.send_audio(item.codec, item.duration, item.payload,
                                    marker=item.marker)
                except CallEnded:
                    return
                except RippError as exc:
                    log.info("media not sent to RIPP: %s", exc)
                    if isinstance(item, FrameOut):
                        # Its time is on the RTP timeline: let the RIPP clock pass it too,
                        # or every later frame would look that much late.
                        with suppress(RippError):
                            call.skip_audio(item.duration)
                    continue
                record.frames_to_ripp += 1
                if item.codec is Codec.TELEPHONE_EVENT:
                    record.dtmf_to_ripp += 1
                record.forward_latency.append(trio.current_time() - arrived)

    async def _ripp_to_rtp(self, rtp: _Rtp, state: _Leg, call: Call,
                           record: CallRecord, on_first: Callable[[], None] | None) -> None:
        async for item in call.audio():
            if not isinstance(item, MediaFrame):
                continue  # a gap: the SIP side's own jitter buffer conceals it
            record.frames_from_ripp += 1
            if on_first is not None:
                on_first()
                on_first = None
            bridge = state.bridge
            if bridge is None or not bridge.negotiated.sends:
                continue
            now = trio.current_time()
            arrival = call.arrival_time(item.sequence)
            remote = bridge.negotiated.remote
            assert remote is not None
            for packet in bridge.rtp_for_frame(item, now):
                rtp.send(rtp.rtp, packet, remote)
                record.rtp_out += 1
            if item.codec is Codec.TELEPHONE_EVENT:
                record.dtmf_to_sip += 1
            record.transcoded = bridge.transcoded
            if arrival is not None:
                record.backward_latency.append(trio.current_time() - arrival)

    async def _rtcp_loop(self, rtp: _Rtp, state: _Leg, call: Call, record: CallRecord) -> None:
        previous = None
        while True:
            await trio.sleep(self.config.rtcp_interval)
            bridge = state.bridge
            if bridge is None or bridge.negotiated.remote is None:
                continue
            try:
                stats = call.stats()
            except RippError:
                continue
            blocks: tuple[ReportBlock, ...] = ()
            if bridge.remote_ssrc is not None:
                blocks = (report_from_stats(bridge.remote_ssrc, stats.receiver, previous),)
            previous = stats.receiver
            sender = bridge.sender
            report = build_sender_report(sender.ssrc, wallclock=time.time(),
                                         rtp_timestamp=sender.timestamp,
                                         packets=sender.packets, octets=sender.octets,
                                         blocks=blocks)
            host, port = bridge.negotiated.remote
            rtp.send(rtp.rtcp, report, (host, port + 1))
            record.rtcp_sent += 1

    # ------------------------------------------------------------------ SIP -> RIPP
    async def _sip_to_ripp(self, event: InviteReceived,
                           inbox: trio.MemoryReceiveChannel[SipEvent]) -> None:
        handle, request = event.call, event.request
        record = CallRecord("sip-to-ripp", handle)
        self.records.append(record)

        def respond(status: int, reason: str, body: bytes = b"") -> None:
            try:
                self._command(lambda now: self._ep(handle).respond(handle, status, reason, now,
                                                                   body=body))
            except LocalSipError as exc:  # the SIP side ended it first (CANCEL, timeout)
                log.info("[%s] %d not sent: %s", handle, status, exc)
                return
            if status >= 200:
                record.sip_final = status if record.sip_final is None else record.sip_final

        try:
            await self._bridge_sip_call(handle, request, record, inbox, respond)
        finally:
            self._inboxes.pop(handle, None)
            self._ended(record)

    async def _bridge_sip_call(self, handle: str, request: SipRequest, record: CallRecord,
                               inbox: trio.MemoryReceiveChannel[SipEvent],
                               respond: Callable[..., None]) -> None:
        if self.client is None:
            respond(403, "No RIPP route configured")
            return
        try:
            offer = parse_sdp(request.body) if request.body else None
        except SdpError:
            respond(400, "Bad SDP")
            return
        if offer is None:
            respond(488, "Not Acceptable Here")  # late offer is not supported (documented)
            return
        rtp = _Rtp(self.config.rtp_host)
        try:
            leg = _Leg()
            try:
                answer, negotiated = answer_offer(
                    offer, self.config.rtp_host, rtp.port, session_id=self._session,
                    ptime=self.config.ptime, codecs=self.config.codecs)
            except NotAcceptable:
                respond(488, "Not Acceptable Here")
                return
            leg.sdp, leg.version = answer, 1
            leg.bridge = _bridge(negotiated, self.config)
            record.directions.append(negotiated.direction)
            identity = request.header("Identity")
            to, from_ = request.header("To") or "", request.header("From") or ""
            if not all(field_value_is_safe(v) for v in (to, from_, identity or "")):
                # Control characters would make aioquic close the QUIC connection, and
                # with it every call on it: refuse this one call instead.
                respond(400, "Bad Header Value")
                return
            if identity is None and self.config.sign_identity is not None:
                identity = self.config.sign_identity(to, from_)
            if identity is None:
                respond(428, "Use Identity Header")
                return
            record.identity = identity
            try:
                call = await self.client.place_call(
                    to=to, from_=from_, identity=identity,
                    headers=sip_to_ripp_headers(request.headers))
            except RippError as exc:
                respond(exc.sip_code, exc.message[:60])
                return
            record.ripp_handle = call.handle
            await self._run_sip_to_ripp(handle, call, rtp, leg, record, inbox, respond)
        finally:
            rtp.close()

    async def _run_sip_to_ripp(self, handle: str, call: Call, rtp: _Rtp, leg: _Leg,
                               record: CallRecord, inbox: trio.MemoryReceiveChannel[SipEvent],
                               respond: Callable[..., None]) -> None:
        answered = False
        early = False
        sip_done = False

        def early_media() -> None:
            nonlocal early
            if not answered and not early and not sip_done:
                early = True
                respond(183, "Session Progress", leg.sdp_bytes())

        async def follow_states() -> None:
            nonlocal answered
            async for state in call.states():
                if sip_done:
                    return
                if state is CallState.RINGING:
                    respond(180, "Ringing")
                elif state is CallState.CONNECTED:
                    answered = True
                    respond(200, "OK", leg.sdp_bytes())

        async def follow_sip() -> None:
            nonlocal sip_done
            async for event in inbox:
                if isinstance(event, CancelReceived):
                    sip_done = True
                    record.sip_final = 487
                    await call.terminate(487, "Request Terminated")
                elif isinstance(event, ByeReceived):
                    sip_done = True
                    await call.terminate(*termination_for_bye(event.request.header("Reason")))
                elif isinstance(event, CallFailed):
                    sip_done = True
                    await call.terminate(408, event.reason)
                elif isinstance(event, ReinviteReceived):
                    self._answer_reinvite(event, leg, rtp, record)

        async with trio.open_nursery() as nursery:
            assert leg.bridge is not None
            nursery.start_soon(follow_states)
            nursery.start_soon(follow_sip)
            nursery.start_soon(self._rtp_to_ripp, rtp, leg.bridge, call, record)
            nursery.start_soon(self._ripp_to_rtp, rtp, leg, call, record, early_media)
            nursery.start_soon(self._rtcp_loop, rtp, leg, call, record)
            ended = await call.wait_ended()
            record.ended = (ended.code, ended.reason)
            dialog = self._ep(handle).call(handle)
            if not sip_done and dialog.state is DialogState.CONFIRMED:
                reason = reason_header(ended.code, ended.reason)
                self._command(lambda now: self._ep(handle).bye(handle, now, reason=reason))
            elif not sip_done and dialog.state is not DialogState.TERMINATED and not answered:
                respond(*sip_final_for_termination(ended.code, ended.reason))
            nursery.cancel_scope.cancel()

    def _answer_reinvite(self, event: ReinviteReceived, leg: _Leg, rtp: _Rtp,
                         record: CallRecord) -> None:
        """re-INVITE/UPDATE (hold, refresh, codec change): answered here; RIPP has no
        equivalent (§21.2), so the RIPP call is not touched."""
        record.reinvites += 1
        body = b""
        if event.request.body:
            try:
                answer, negotiated = answer_offer(
                    parse_sdp(event.request.body), self.config.rtp_host, rtp.port,
                    session_id=self._session, version=leg.version + 1,
                    ptime=self.config.ptime, codecs=self.config.codecs)
            except (SdpError, NotAcceptable) as exc:
                self._command(lambda now: self._ep(event.call).respond_to(
                    event.transaction, 488, "Not Acceptable Here", now))
                log.info("re-INVITE refused: %s", exc)
                return
            leg.version += 1
            leg.sdp = answer
            record.directions.append(negotiated.direction)
            if leg.bridge is not None:
                leg.bridge.update(negotiated)
            body = leg.sdp_bytes()
        elif event.request.method == "INVITE":
            body = leg.sdp_bytes()  # an offerless re-INVITE: our current SDP is the offer
        self._command(lambda now: self._ep(event.call).respond_to(
            event.transaction, 200, "OK", now, body=body))

    # ------------------------------------------------------------------ RIPP -> SIP
    async def _ripp_to_sip(self, call: ServerCall) -> None:
        incoming = call.incoming
        record = CallRecord("ripp-to-sip", "", call.handle, incoming.identity)
        self.records.append(record)
        if self.config.trunk is None:
            await call.reject(403, "No SIP route configured")
            return
        rtp = _Rtp(self.config.rtp_host)
        try:
            await self._bridge_ripp_call(call, rtp, record)
        finally:
            rtp.close()
            self._ended(record)

    async def _bridge_ripp_call(self, call: ServerCall, rtp: _Rtp, record: CallRecord) -> None:
        incoming = call.incoming
        assert self.config.trunk is not None
        leg = _Leg()
        leg.sdp = make_offer(self.config.rtp_host, rtp.port, session_id=self._session,
                             ptime=self.config.ptime, codecs=self.config.codecs)
        to = _sip_name_addr(incoming.to)
        from_ = _sip_name_addr(incoming.from_, tag=False)
        uri = _request_uri(self.config.trunk, parse_address(to).uri)
        destination = _resolve(_uri_address(uri, ("127.0.0.1", 5060)))
        headers = (("Identity", incoming.identity), *ripp_to_sip_headers(incoming.headers))
        send, inbox = trio.open_memory_channel[SipEvent](math.inf)
        sip = self.sip_tcp if (";transport=tcp" in self.config.trunk.lower()
                               and self.sip_tcp is not None) else self.sip
        handle: str = self._command(lambda now: sip.invite(
            uri, to=to, from_=from_, destination=destination, now=now, headers=headers,
            body=leg.sdp_bytes(), credentials=self.config.credentials))
        # Events of this call that the flush above produced were dropped; none can exist
        # before the first datagram comes back, which needs a checkpoint.
        self._inboxes[handle] = send
        record.sip_call = handle
        answered = rung = False
        sip_done = False

        async def follow_sip() -> None:
            nonlocal answered, rung, sip_done
            async for event in inbox:
                if isinstance(event, ResponseReceived):
                    response = event.response
                    status = response.status
                    if response.body and status < 300:
                        try:
                            negotiated = accept_answer(parse_sdp(response.body),
                                                       ptime=self.config.ptime)
                        except (SdpError, NotAcceptable) as exc:
                            log.info("unusable SDP answer: %s", exc)
                        else:
                            leg.set_negotiated(negotiated, self.config)
                            record.directions.append(negotiated.direction)
                    if status in (180, 181, 182) and not rung:
                        rung = True
                        with suppress(CallEnded):
                            await call.ring()
                    elif 200 <= status < 300 and not answered:
                        answered = True
                        with suppress(CallEnded):
                            await call.answer()
                    elif status >= 300:
                        sip_done = True
                        record.sip_final = status
                        with suppress(CallEnded):
                            await call.reject(*termination_for_sip_final(status,
                                                                         response.reason))
                elif isinstance(event, ByeReceived):
                    sip_done = True
                    await call.terminate(*termination_for_bye(event.request.header("Reason")))
                elif isinstance(event, CallFailed):
                    sip_done = True
                    if answered:
                        await call.terminate(event.status, event.reason)
                    else:
                        with suppress(CallEnded):
                            await call.reject(event.status, event.reason)
                elif isinstance(event, ReinviteReceived):
                    self._answer_reinvite(event, leg, rtp, record)

        async def media_in() -> None:
            # RTP from the trunk flows into RIPP once the SIP side answered with SDP.
            while leg.bridge is None:
                await leg.ready.wait()
            await self._rtp_to_ripp(rtp, leg.bridge, call, record)

        async def answer_timeout() -> None:
            await trio.sleep(self.config.answer_timeout)
            if not answered and not sip_done:
                with suppress(Exception):
                    self._command(lambda now: self._ep(handle).cancel(handle, now))
                with suppress(CallEnded):
                    await call.reject(408, "Request Timeout")

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_sip)
                nursery.start_soon(media_in)
                nursery.start_soon(self._ripp_to_rtp, rtp, leg, call, record, None)
                nursery.start_soon(self._rtcp_loop, rtp, leg, call, record)
                nursery.start_soon(answer_timeout)
                ended = await call.wait_ended()
                record.ended = (ended.code, ended.reason)
                dialog = self._ep(handle).call(handle)
                if not sip_done and dialog.state is DialogState.CONFIRMED:
                    reason = reason_header(ended.code, ended.reason)
                    self._command(lambda now: self._ep(handle).bye(handle, now, reason=reason))
                elif not sip_done and dialog.state is not DialogState.TERMINATED:
                    self._command(lambda now: self._ep(handle).cancel(handle, now))
                    # Wait (bounded) for the 487 so the INVITE transaction completes.
                    with trio.move_on_after(self.config.sip.t1 * 8):
                        while self._ep(handle).call(handle).state is not DialogState.TERMINATED:
                            await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        finally:
            self._inboxes.pop(handle, None)


@attrs.define
class _Leg:
    """The SIP leg's media state, shared by a call's tasks."""

    sdp: SessionDescription | None = None
    version: int = 1
    bridge: MediaBridge | None = None
    ready: trio.Event = attrs.Factory(trio.Event)

    def sdp_bytes(self) -> bytes:
        assert self.sdp is not None
        return self.sdp.to_bytes()

    def set_negotiated(self, negotiated: Negotiated, config: GatewayConfig) -> None:
        if self.bridge is None:
            self.bridge = _bridge(negotiated, config)
            self.ready.set()
        else:
            self.bridge.update(negotiated)


def _bridge(negotiated: Negotiated, config: GatewayConfig) -> MediaBridge:
    import secrets

    sender = RtpSender(secrets.randbits(32), secrets.randbits(16), secrets.randbits(32))
    # A skip the RIPP leg would refuse must never be asked for (BadSkip), whatever RTP says.
    skip_max = (config.ripp or RippConfig()).media_skip_max
    bridge = MediaBridge(negotiated, sender, max_gap=min(config.rtp_max_gap, skip_max))
    ptime = negotiated.ptime or config.ptime
    bridge.assembler.ptime = ptime / 1000
    return bridge


def _note_timeline(bridge: MediaBridge, record: CallRecord) -> None:
    """Copy the bridge's RTP timing counters to the record; log rejected (possibly
    spoofed) packets rate-limited, at counts 1, 2, 4, 8, ... per call."""
    timeline = bridge.timeline
    if timeline is None:
        return
    rejected = timeline.rejected
    if rejected > record.rtp_rejected and rejected & (rejected - 1) == 0:
        log.warning("call %s: %d RTP packets claimed a new SSRC or timestamp jump that the "
                    "next packet did not confirm (dropped)", record.sip_call, rejected)
    record.rtp_late = timeline.late
    record.rtp_rejected = rejected
    record.rtp_reanchored = timeline.reanchored
    record.rtp_skipped = timeline.skipped / bridge.timeline_rate


def _sip_name_addr(value: Any, *, tag: bool = False) -> str:
    params = tuple((k, v) for k, v in value.params if tag or k.lower() != "tag")
    return format_address(SipAddress(value.uri, value.display_name, params))


def _request_uri(trunk: str, target: str) -> str:
    """The trunk URI, with the called number as user part when the trunk names none."""
    scheme, _, rest = trunk.partition(":")
    if "@" in rest:
        return trunk
    user = target.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
    return f"{scheme}:{user}@{rest}" if user else trunk


def _resolve(address: Addr) -> Addr:
    host, port = address
    info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    return str(info[0][4][0]), int(info[0][4][1])


@asynccontextmanager
async def open_gateway(
    config: GatewayConfig,
    *,
    client_quic_configuration: QuicConfiguration | None = None,
    server_quic_configuration: QuicConfiguration | None = None,
    ripp_host: str = "127.0.0.1",
    ripp_port: int = 0,
    authorizer: Any = None,
    identity_verifier: Any = None,
    resolver: Callable[[str, int], Addr] | None = None,
) -> AsyncIterator[Gateway]:
    """Run a gateway for the ``async with``.

    ``client_quic_configuration`` (with ``config.calls_uri``) enables SIP -> RIPP;
    ``server_quic_configuration`` (with ``config.trunk``) enables RIPP -> SIP, on a RIPP
    server at ``ripp_host:ripp_port`` whose ``authorizer`` and ``identity_verifier`` are
    passed through to ``ripp_trio.open_server`` (required with a server configuration:
    nothing is accepted unverified by default).
    """
    if server_quic_configuration is not None and (authorizer is None or identity_verifier is None):
        raise ValueError("a gateway that takes RIPP calls needs an authorizer and an identity "
                         "verifier (ripp_core.insecure_accept_any_* for tests)")
    family = socket.AF_INET6 if ":" in config.sip_host else socket.AF_INET
    listeners: list[trio.SocketListener] = []
    for _ in range(20):  # port 0: find a number free for both UDP and TCP
        sip_sock = socket.socket(family, socket.SOCK_DGRAM)
        sip_sock.bind((config.sip_host, config.sip_port))
        sip_sock.setblocking(False)
        if not config.sip_tcp:
            break
        try:
            listeners = await trio.open_tcp_listeners(sip_sock.getsockname()[1],
                                                      host=config.sip_host)
            break
        except OSError:
            sip_sock.close()
            if config.sip_port != 0:
                raise
    else:
        raise OSError("no port free for SIP over both UDP and TCP")
    ripp_config = config.ripp or RippConfig(jitter_buffer=config.jitter_buffer)
    try:
        async with _maybe_client(config, client_quic_configuration, ripp_config,
                                 resolver) as client, \
                _maybe_server(server_quic_configuration, ripp_host, ripp_port, ripp_config,
                              authorizer, identity_verifier) as server:
            gateway = Gateway(config, sip_sock, client, server)
            async with trio.open_nursery() as nursery:
                gateway._nursery = nursery
                nursery.start_soon(gateway._sip_receive_loop)
                nursery.start_soon(gateway._sip_timer_loop)
                if listeners:
                    nursery.start_soon(gateway._tcp_serve, listeners)
                if server is not None:
                    nursery.start_soon(gateway._ripp_accept_loop)
                try:
                    yield gateway
                finally:
                    gateway.close()
                    nursery.cancel_scope.cancel()
    finally:
        sip_sock.close()


@asynccontextmanager
async def _maybe_client(config: GatewayConfig, quic: QuicConfiguration | None,
                        ripp_config: RippConfig,
                        resolver: Callable[[str, int], Addr] | None) -> AsyncIterator[
                            Client | None]:
    if quic is None or config.calls_uri is None:
        yield None
        return
    async with ripp_trio.open_client(quic, calls_uris=[config.calls_uri],
                                     token=config.ripp_token, config=ripp_config,
                                     resolver=resolver) as client:
        yield client


@asynccontextmanager
async def _maybe_server(quic: QuicConfiguration | None, host: str, port: int,
                        ripp_config: RippConfig, authorizer: Any,
                        identity_verifier: Any) -> AsyncIterator[Server | None]:
    if quic is None:
        yield None
        return
    async with ripp_trio.open_server(quic, host=host, port=port, config=ripp_config,
                                     authorizer=authorizer,
                                     identity_verifier=identity_verifier) as server:
        yield server
