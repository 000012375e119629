"""One object that holds every limit, timer and size of the RIPP core.

Nothing tunable is a literal in the protocol logic: every module reads its numbers from a
:class:`RippConfig`. Times are in seconds (floats), sizes in bytes.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._codecs import MEDIA_CLOCK_RATE

#: QUIC + HTTP/3 implementations the HTTP/3 binding can run on (``RippConfig.quic_engine``).
QUIC_ENGINES = ("aioquic", "qh3")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


# Half the timestamp space in 48 kHz ticks: a longer skip would wrap into the past.
_SKIP_TICKS_LIMIT = 1 << 31


def _skip_limit(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value * MEDIA_CLOCK_RATE < _SKIP_TICKS_LIMIT:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0 and < 2^31 ticks, got {value!r}")


@attrs.frozen
class RippConfig:
    """Every limit, timer and size used by the RIPP core, with the documented defaults.

    The defaults are the values given in ``docs/protocol.md`` ("Limits and timers").
    """

    # --- resources -------------------------------------------------------------------
    calls_path: str = "/ripp/calls"
    """Path of the top-level calls URI (call creation and re-establishment)."""
    instances_path: str = "/ripp/instances"
    """Prefix of call URIs: ``<instances_path>/<instance-id>/calls/<call-id>``."""

    # --- framing ---------------------------------------------------------------------
    max_frame_size: int = attrs.field(default=1500, validator=_positive)
    """Largest RIPP frame payload accepted or sent (bytes)."""
    max_signal_size: int = attrs.field(default=4096, validator=_positive)
    """Largest SIGNAL frame payload accepted or sent (bytes)."""
    max_header_bytes: int = attrs.field(default=16384, validator=_positive)
    """Largest total size of request header fields accepted (bytes)."""
    max_buffered_bytes_per_stream: int = attrs.field(default=65536, validator=_positive)
    """Largest undecoded backlog kept for one stream before it is reset."""

    # --- calls and streams -----------------------------------------------------------
    max_calls: int = attrs.field(default=10000, validator=_positive)
    """Calls one server endpoint holds at once; more get 503."""
    max_calls_per_connection: int = attrs.field(default=8, validator=_positive)
    """A client opens another QUIC connection when one carries this many calls. Calls on
    one connection share its congestion window: measured in virtual time, 50 calls on one
    connection collapse under 1 % loss (p50 latency > 200 ms) while 5-10 calls per
    connection deliver every frame (docs/protocol.md, "Stream budget")."""
    max_connections: int = attrs.field(default=256, validator=_positive)
    """QUIC connections one endpoint holds at once. A server at the limit closes its
    longest-idle connection without calls to admit a new one."""
    max_connections_per_address: int = attrs.field(default=64, validator=_positive)
    """QUIC connections a server accepts from one IP address at once."""
    idle_connection_timeout: float = attrs.field(default=10.0, validator=_positive)
    """A server closes a connection that has carried no call for this long."""
    retry_threshold: int = attrs.field(default=8, validator=_positive)
    """When handshakes in progress plus Initials that failed to decrypt in the last second
    reach this many, a server answers new Initials with a QUIC Retry (stateless address
    validation) instead of creating connection state."""
    assumed_stream_credit: int = attrs.field(default=100, validator=_positive)
    """Bidirectional streams a client assumes it may open on a connection whose handshake
    has not finished (the peer's real allowance arrives with the handshake)."""
    max_streams_per_connection: int = attrs.field(default=512, validator=_positive)
    """Our advertised initial_max_streams_bidi (aioquic's default is 128): how many
    requests a peer may have open at once on one connection. Enough for
    ``max_calls_per_connection`` calls of ``1 + max_media_streams`` streams each, with
    room for refused and closing ones."""
    quic_engine: str = attrs.field(default="aioquic", validator=attrs.validators.in_(QUIC_ENGINES))
    """The QUIC + HTTP/3 implementation under the HTTP/3 binding: ``aioquic`` (pure
    Python, the default) or ``qh3`` (native QUIC core, ``pip install 'ripp[qh3]'``; it
    allows a peer 100 streams whatever ``max_streams_per_connection`` says and writes no
    qlog). Both speak the same protocol and interoperate (docs/performance.md, "QUIC
    engines")."""
    min_media_streams: int = attrs.field(default=2, validator=_positive)
    """Lower bound of N, the media streams of a call."""
    max_media_streams: int = attrs.field(default=20, validator=_positive)
    """Upper bound of N; a server answers 429 to media requests beyond it."""
    initial_rtt: float = attrs.field(default=0.1, validator=_positive)
    """RTT assumed for the first N before any measurement."""
    assumed_loss: float = attrs.field(default=0.01, validator=_non_negative)
    """Loss rate assumed for the first N before any measurement."""
    stream_target_quantile: float = attrs.field(default=1e-3, validator=_positive)
    """Tolerated probability that all N streams are busy when a frame is due."""
    pto_rtt_factor: float = attrs.field(default=3.0, validator=_positive)
    """PTO used by the N formula is ``pto_rtt_factor * RTT + pto_extra``."""
    pto_extra: float = attrs.field(default=0.025, validator=_non_negative)
    adapt_interval: float = attrs.field(default=1.0, validator=_positive)
    """How often the client re-computes N."""
    shrink_hold: float = attrs.field(default=3.0, validator=_positive)
    """N must have been too high for this long before a stream is closed."""
    repair_rtt_factor: float = attrs.field(default=1.5, validator=_positive)
    """An ack whose RTT sample exceeds ``repair_rtt_factor * min RTT + repair_slack`` counts
    as a frame (or ack) that needed repair: the loss estimate the N formula uses."""
    repair_slack: float = attrs.field(default=0.015, validator=_non_negative)
    loss_estimate_gain: float = attrs.field(default=1 / 64, validator=_positive)
    """Weight of each ack in the moving average of the loss estimate."""
    busy_fraction_signal: float = attrs.field(default=0.75, validator=_positive)
    """Fraction of busy streams treated as a congestion signal (adds a stream)."""

    # --- media -----------------------------------------------------------------------
    send_queue_max_delay: float = attrs.field(default=0.2, validator=_positive)
    """A frame waiting this long for a free stream is dropped (counted)."""
    migration_buffer: float = attrs.field(default=5.0, validator=_positive)
    """Media (in media time) buffered while a call migrates; older is dropped."""
    media_skip_max: float = attrs.field(default=3600.0, validator=_skip_limit)
    """Most media time a sender's clock may skip between two frames (``skip_media``,
    protocol 9.4); one skip beyond it is refused, and skips that add up beyond it are
    capped. Well under the 2^31 ticks (12.4 hours) beyond which a timestamp difference
    is ambiguous modulo 2^32."""
    receive_window: int = attrs.field(default=1024, validator=_positive)
    """Sequence numbers remembered for duplicate detection."""
    max_sequence_jump: int = attrs.field(default=1024, validator=_positive)
    """A frame whose sequence number is more than this ahead of every frame before it
    starts a new sequence space at the receiver and resynchronises the jitter buffer
    (whatever the numbers say, a frame costs O(1))."""
    jitter_min_delay: float = attrs.field(default=0.02, validator=_non_negative)
    """Smallest playout delay of the adaptive jitter buffer."""
    jitter_max_delay: float = attrs.field(default=0.5, validator=_positive)
    """Largest playout delay of the adaptive jitter buffer."""
    jitter_initial_delay: float = attrs.field(default=0.06, validator=_non_negative)
    """Playout delay before any jitter has been measured."""
    jitter_late_margin: float = attrs.field(default=0.02, validator=_non_negative)
    """Headroom added to the playout delay, beyond a late frame's lateness, when a late
    frame raises it: repairs of lost frames arrive spread over a few ms, and rising by the
    lateness alone left the next repair late by a hair."""
    jitter_factor: float = attrs.field(default=4.0, validator=_positive)
    """Playout delay target is ``jitter_factor`` times the RFC 3550 jitter estimate."""
    jitter_max_frames: int = attrs.field(default=500, validator=_positive)
    """Frames the jitter buffer holds at most; beyond it the oldest are dropped."""
    dtmf_duration: float = attrs.field(default=0.1, validator=_positive)
    """How long each DTMF digit sounds when sent with ``send_dtmf``."""
    dtmf_gap: float = attrs.field(default=0.05, validator=_non_negative)
    """Silence between DTMF digits."""
    dtmf_volume: int = attrs.field(default=10, validator=_non_negative)
    """DTMF power level in -dBm0 (RFC 4733 volume field)."""
    dtmf_frame_duration: float = attrs.field(default=0.02, validator=_positive)
    """Duration of each telephone-event frame."""
    jitter_buffer: bool = True
    """Deliver received media through the jitter buffer (MediaPlayout/MediaGap events);
    when False, frames are delivered on arrival (MediaReceived)."""
    early_resend: bool = True
    """Re-send a frame early on another free stream when its ack is overdue (protocol
    §11.7); off, a lost frame waits for QUIC's own loss recovery."""
    early_resend_rttvar_factor: float = attrs.field(default=1.0, validator=_positive)
    """An ack is overdue once it is later than the path RTT by this many times the path's
    RTT variation (or by ``early_resend_min_margin``, whichever is more)."""
    early_resend_min_margin: float = attrs.field(default=0.005, validator=_positive)
    """Smallest margin by which an ack must be overdue before a re-send (timer
    granularity, ack processing)."""
    early_resend_budget: float = attrs.field(default=0.25, validator=_positive)
    """A copy is sent only if it can arrive (now + half the path RTT) within this time of
    the frame's first send: after that it could no longer be played."""
    early_resend_max_copies: int = attrs.field(default=2, validator=_positive)
    """Early re-sends of one frame, at most."""
    early_resend_max_fraction: float = attrs.field(default=0.25, validator=_positive)
    """Early re-sends earn this much credit per new frame sent; each costs 1: the long-run
    bound on re-sent frames per frame sent."""
    early_resend_burst: int = attrs.field(default=4, validator=_positive)
    """Most early re-sends credit can buy at once (and the credit a call starts with)."""
    early_resend_reserve: int = attrs.field(default=1, validator=_non_negative)
    """Free streams an early re-send leaves for the next new frames: a copy never makes new
    audio wait for a stream."""
    lateness_gain: float = attrs.field(default=0.125, validator=_positive)
    """Weight of each sample in the moving averages of this process's timer lateness and
    of the peer's reported hold time (protocol §11.8)."""
    lateness_probe_interval: float = attrs.field(default=0.25, validator=_positive)
    """While media may flow, a call sets a timer at least this often only to measure its
    lateness: without playout or pacing timers (jitter buffer off, unpaced sending) it
    would otherwise sample it only when late, and never see it fall again."""
    lateness_hold: float = attrs.field(default=0.01, validator=_positive)
    """While this process's lateness or the peer's reported hold is at least this, the
    stream count does not grow (local lateness is not path delay, §11.8)."""
    media_ack_delay: float = attrs.field(default=0.02, validator=_non_negative)
    """Longest time a receiver holds a media ACK so that it leaves in the same packet as
    the call's next outgoing frame (protocol §9.2); its own lateness counts against it.
    0 acks every frame at once. A sender assumes its peer holds ACKs this long at most
    when it judges an ACK overdue (§11.7) or the peer late (§11.8). Keep it at most one
    frame time: longer holds keep the peer's streams busy longer (§11.2)."""
    media_ack_max_pending: int = attrs.field(default=2, validator=_positive)
    """Held ACKs of one call that make the receiver send them all at once."""

    # --- failure detection and migration ---------------------------------------------
    ack_timeout: float = attrs.field(default=1.0, validator=_positive)
    """A MEDIA frame unacked for this long means the path or peer has failed."""
    media_timeout: float = attrs.field(default=1.0, validator=_positive)
    """Nothing received on a call (media, ack or signaling) for this long means failure."""
    keepalive_interval: float = attrs.field(default=0.25, validator=_positive)
    """A call that has sent nothing for this long sends a Keepalive message."""
    move_timeout: float = attrs.field(default=5.0, validator=_positive)
    """A moving call not re-attached by then falls back to re-establishment."""
    reattach_timeout: float = attrs.field(default=10.0, validator=_positive)
    """A server holds a detached call this long, waiting for the client."""
    reestablish_timeout: float = attrs.field(default=10.0, validator=_positive)
    """A client gives up re-establishing a call after this long (408)."""
    reestablish_attempt_interval: float = attrs.field(default=0.5, validator=_positive)
    """Pause between re-establishment attempts against the failover URIs."""
    reestablish_attempt_timeout: float = attrs.field(default=2.0, validator=_positive)
    """A re-establishment attempt not answered by then is abandoned (its request reset)
    and the next calls URI tried: one dead URI in the list must not stall the call."""
    full_poll_interval: float = attrs.field(default=0.05, validator=_positive)
    """Endpoints ask only recently touched connections for datagrams, and every
    connection at least this often (a safety net; aioquic's own timers drive the rest)."""
    send_batch_window: float = attrs.field(default=0.002, validator=_non_negative)
    """Longest a media frame is held so that frames of other calls on the same connection,
    predicted from their rhythm to fall due within this window, leave in the same QUIC
    packets (one stream walk, one encryption, one ``sendto`` instead of several). A lone
    call is never held; 0 turns batching off (protocol 11.9)."""
    udp_receive_buffer: int = attrs.field(default=4 * 1024 * 1024, validator=_non_negative)
    """SO_RCVBUF the drivers ask for on their UDP socket (bytes; 0: the OS default). The
    Linux default (208 KiB) overflowed from 50 two-way calls up; the kernel caps the
    request at ``net.core.rmem_max``, and the driver logs once if it did."""
    udp_send_buffer: int = attrs.field(default=1024 * 1024, validator=_non_negative)
    """SO_SNDBUF the drivers ask for on their UDP socket (bytes; 0: the OS default),
    capped by ``net.core.wmem_max``."""
    handshake_timeout: float = attrs.field(default=5.0, validator=_positive)
    """A server drops a QUIC connection whose handshake has not completed by then."""
    close_linger: float = attrs.field(default=2.0, validator=_positive)
    """After a call ends, its streams the peer has not ended by then are reset and the
    call is forgotten."""
    max_connection_buffer: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    """Bytes received on one connection but not yet decoded (QUIC reassembly and HTTP/3
    frames in progress, over all its streams) above which a server closes it
    (H3_EXCESSIVE_LOAD); checked every ``full_poll_interval``."""
    h2_stream_window: int = attrs.field(default=1024 * 1024, validator=_positive)
    """HTTP/2: our SETTINGS_INITIAL_WINDOW_SIZE, the bytes a peer may send on one stream
    before we acknowledge them. Received data is acknowledged as soon as it is decoded,
    so a window only needs to cover one RTT of a stream's traffic; 1 MiB covers a burst
    of catch-up audio after a stall (protocol 20.4)."""
    h2_connection_window: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    """HTTP/2: the connection-level receive window, shared by every stream of a trunk."""
    h2_max_send_buffer: int = attrs.field(default=256 * 1024, validator=_positive)
    """HTTP/2: bytes we hold for one stream while the peer's flow-control window is
    closed; beyond it the stream is reset (ENHANCE_YOUR_CALM): a peer that does not
    read must not grow our memory."""
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    """A call request unanswered for this long fails (408); a server ends a created call
    whose signaling request has not arrived by then."""

    # --- admission and authorization (server) ----------------------------------------
    junk_window: float = attrs.field(default=1.0, validator=_positive)
    """The window in which a server counts Initials that failed to decrypt (for
    ``retry_threshold``)."""
    abandoned_streams_remembered: int = attrs.field(default=256, validator=_positive)
    """Request streams per connection a server remembers as answered-and-abandoned, so
    that what still arrives on them is discarded; older ones are forgotten."""
    max_echo_chars: int = attrs.field(default=64, validator=_positive)
    """Longest piece of peer input quoted in a ``Ripp-Reason`` value or a log line."""
    log_burst: int = attrs.field(default=10, validator=_positive)
    """Log lines of one kind a peer can trigger per ``log_interval``; the rest are
    counted and reported with the next line that passes."""
    log_interval: float = attrs.field(default=10.0, validator=_positive)
    """The window of ``log_burst``."""
    admission_max_lag: float = attrs.field(default=0.1, validator=_positive)
    """Event-loop lag (the moving average, gain 1/8, of how late timers run) above which
    a server refuses new calls with 503 for ``admission_hold``."""
    admission_max_stall: float = attrs.field(default=0.25, validator=_positive)
    """One timer run this late (the whole process stalled: swapped out, stopped, a long
    pause) counts as overload at once."""
    admission_hold: float = attrs.field(default=2.0, validator=_positive)
    """How long a server keeps refusing new calls after it found itself overloaded."""
    retry_after: int = attrs.field(default=1, validator=_positive)
    """Seconds sent in ``Retry-After`` with every 503."""
    max_pending_checks: int = attrs.field(default=256, validator=_positive)
    """Requests one server holds while deferred authorization runs; more get 503."""
    check_timeout: float = attrs.field(default=5.0, validator=_positive)
    """A request whose deferred authorization has not completed by then gets 503."""

    # --- shared call state (many instances as one service, protocol section 24) ----------
    store_lease_ttl: float = attrs.field(default=3.0, validator=_positive)
    """An instance's owner lease lasts this long unless renewed; a dead instance's calls
    become claimable this long after its last renewal at the latest."""
    store_renew_interval: float = attrs.field(default=1.0, validator=_positive)
    """An instance renews its lease this often (well under ``store_lease_ttl``, so one
    slow renewal does not cost it its calls)."""
    store_snapshot_interval: float = attrs.field(default=1.0, validator=_positive)
    """An owner writes each call's resume point (sequence numbers) this often."""
    store_sequence_margin: int = attrs.field(default=1000, validator=_positive)
    """A claimed call's sender skips this many sequence numbers past the last resume
    point, so no frame the dead owner sent after it is re-used (1000 frames of 20 ms
    is 20 s, far beyond ``store_snapshot_interval``)."""
    store_handoff_wait: float = attrs.field(default=1.0, validator=_positive)
    """An instance asked for a call moved to it through the store waits this long for
    the handoff to appear there before it refuses the request."""

    def with_settings(self, settings: list[str]) -> RippConfig:
        """A copy with ``NAME=VALUE`` settings applied (as ``ripp serve --set`` takes them).

        Values are parsed by the field's type (int, float, bool: true/false/1/0, str);
        an unknown name or a bad value raises ValueError naming it.
        """
        fields = {field.name: field for field in attrs.fields(RippConfig)}
        changes: dict[str, Any] = {}
        for setting in settings:
            name, sep, text = setting.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields:
                raise ValueError(f"unknown setting {setting!r} (expected NAME=VALUE)")
            kind = type(getattr(self, name))
            try:
                if kind is bool:
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(text)
                    changes[name] = text.lower() in ("true", "1")
                else:
                    changes[name] = kind(text)
            except ValueError:
                raise ValueError(f"bad value for {name}: {text!r}") from None
        return attrs.evolve(self, **changes)

    def __attrs_post_init__(self) -> None:
        if self.min_media_streams > self.max_media_streams:
            raise ValueError("min_media_streams must not exceed max_media_streams")
        if self.jitter_min_delay > self.jitter_max_delay:
            raise ValueError("jitter_min_delay must not exceed jitter_max_delay")
        if self.early_resend_max_fraction > 1:
            raise ValueError("early_resend_max_fraction must not exceed 1")
        if self.lateness_gain > 1:
            raise ValueError("lateness_gain must not exceed 1")
        if self.dtmf_volume > 63:
            raise ValueError("dtmf_volume is a 6-bit field (0-63, in -dBm0)")
