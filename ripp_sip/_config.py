"""Every timer and limit of the SIP core, with RFC 3261's defaults (§17.1.1.1, Table 4)."""

from __future__ import annotations

from typing import Any

import attrs


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class SipConfig:
    """Timers (seconds), sizes (bytes) and the values the gateway puts in its messages."""

    t1: float = attrs.field(default=0.5, validator=_positive)
    """RTT estimate (RFC 3261 T1): first retransmit interval of timers A, E and G."""
    t2: float = attrs.field(default=4.0, validator=_positive)
    """Cap on the retransmit interval of non-INVITE requests and INVITE responses (T2)."""
    t4: float = attrs.field(default=5.0, validator=_positive)
    """Maximum time a message stays in the network (T4): timers I and K over UDP."""
    timer_d: float = attrs.field(default=32.0, validator=_positive)
    """Wait for response retransmissions after a non-2xx final over UDP (>= 32 s)."""
    max_message_size: int = attrs.field(default=65535, validator=_positive)
    """Largest SIP message accepted (a UDP datagram cannot be larger)."""
    max_forwards: int = attrs.field(default=70, validator=_positive)
    """Max-Forwards of the requests we originate (RFC 3261 §8.1.1.6)."""
    session_expires: int = attrs.field(default=1800, validator=_positive)
    """Session interval we ask for on INVITEs we send (RFC 4028 §4)."""
    min_se: int = attrs.field(default=90, validator=_positive)
    """Smallest session interval we accept; below it we answer 422 (RFC 4028 §6)."""
    user_agent: str = "ripp-gateway"
    """User-Agent / Server value."""
    max_transactions: int = attrs.field(default=10000, validator=_positive)
    """Live transactions held at once; new requests beyond it get 503."""
    ended_dialog_memory: int = attrs.field(default=256, validator=_positive)
    """Ended dialogs remembered, so late retransmissions are absorbed, not 481'd."""
