"""RippConfig: documented defaults and validation."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import pytest

from ripp_core._config import RippConfig

PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

FIELDS = {field.name: field for field in attrs.fields(RippConfig)}
NUMERIC = [
    name
    for name, field in FIELDS.items()
    if field.type in (int, float, "int", "float") and not isinstance(field.default, bool)
]
# Zero is meaningful for these (no extra delay, no assumed loss, no slack, no gap, 0 dBm0);
# every other number must be > 0. A new field that accepts 0 must be added here on purpose.
MAY_BE_ZERO = {
    "assumed_loss",
    "pto_extra",
    "repair_slack",
    "jitter_min_delay",
    "jitter_initial_delay",
    "jitter_late_margin",
    "dtmf_gap",
    "dtmf_volume",
    "early_resend_reserve",
    "media_ack_delay",
    "send_batch_window",
    "udp_receive_buffer",
    "udp_send_buffer",
}
SIZES = [
    "max_frame_size",
    "max_signal_size",
    "max_header_bytes",
    "max_buffered_bytes_per_stream",
    "receive_window",
    "jitter_max_frames",
]
TIMEOUTS = [
    "ack_timeout",
    "media_timeout",
    "keepalive_interval",
    "move_timeout",
    "reattach_timeout",
    "reestablish_timeout",
    "reestablish_attempt_interval",
    "connect_timeout",
    "send_queue_max_delay",
    "adapt_interval",
    "shrink_hold",
]


def _with(name: str, value: float) -> dict[str, Any]:
    return {name: value}


def test_spot_check_defaults() -> None:
    config = RippConfig()
    assert config.calls_path == "/ripp/calls"
    assert config.instances_path == "/ripp/instances"
    assert config.max_frame_size == 1500
    assert config.max_signal_size == 4096
    assert config.max_header_bytes == 16384
    assert config.max_buffered_bytes_per_stream == 65536
    assert config.max_calls == 10000
    assert config.min_media_streams == 2
    assert config.max_media_streams == 20
    assert config.initial_rtt == pytest.approx(0.1)
    assert config.stream_target_quantile == pytest.approx(1e-3)
    assert config.receive_window == 1024
    assert config.ack_timeout == pytest.approx(1.0)
    assert config.media_timeout == pytest.approx(1.0)
    assert config.keepalive_interval == pytest.approx(0.25)
    assert config.move_timeout == pytest.approx(5.0)
    assert config.reattach_timeout == pytest.approx(10.0)
    assert config.connect_timeout == pytest.approx(5.0)
    assert config.jitter_buffer is True


def _doc_table() -> dict[str, str]:
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    section = text.split("## 17. Limits and timers", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(\w+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def _doc_value(text: str) -> object:
    """Turn a 'Default' cell of the table into a Python value."""
    if text.startswith("`") and text.endswith("`"):
        return text.strip("`")
    if text in ("on", "off"):
        return text == "on"
    if text == "10⁻³":
        return 1e-3
    match = re.fullmatch(r"([0-9./]+)\s*(bytes|ms|s|%)?", text)
    assert match, f"unrecognised default {text!r}"
    number = float(Fraction(match.group(1)))
    scale = {None: 1, "bytes": 1, "s": 1, "ms": 1e-3, "%": 1e-2}[match.group(2)]
    return number * scale


def test_protocol_doc_lists_every_field() -> None:
    assert set(_doc_table()) == set(FIELDS)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_default_matches_protocol_doc(name: str) -> None:
    table = _doc_table()
    if name not in table:
        pytest.fail(f"{name} is not in docs/protocol.md section 17")
    documented = _doc_value(table[name])
    actual = getattr(RippConfig(), name)
    if isinstance(documented, float):
        assert actual == pytest.approx(documented), f"{name}: code {actual}, doc {table[name]}"
    else:
        assert actual == documented


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", [-1, -0.001, -math.inf, math.nan])
def test_negative_or_nan_is_rejected(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        RippConfig(**_with(name, value))


@pytest.mark.parametrize("name", NUMERIC)
def test_zero(name: str) -> None:
    if name in MAY_BE_ZERO:
        assert getattr(RippConfig(**_with(name, 0)), name) == 0
    else:
        with pytest.raises(ValueError, match=name):
            RippConfig(**_with(name, 0))


@pytest.mark.parametrize("name", SIZES + TIMEOUTS)
def test_sizes_and_timeouts_must_be_positive(name: str) -> None:
    assert name in FIELDS
    for bad in (0, -1):
        with pytest.raises(ValueError):
            RippConfig(**_with(name, bad))


def test_valid_overrides_are_kept() -> None:
    config = RippConfig(ack_timeout=0.3, max_frame_size=900, assumed_loss=0.0, jitter_buffer=False)
    assert (
        config.ack_timeout,
        config.max_frame_size,
        config.assumed_loss,
        config.jitter_buffer,
    ) == (
        0.3,
        900,
        0.0,
        False,
    )
    assert attrs.evolve(config, move_timeout=2.0).move_timeout == 2.0
    with pytest.raises(ValueError):
        attrs.evolve(config, move_timeout=-2.0)


def test_config_is_frozen() -> None:
    config = RippConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.ack_timeout = 5.0  # type: ignore[misc]
