"""Failure detection: ack timeout and media timeout (R10)."""

from __future__ import annotations

import pytest

from ripp_core._config import RippConfig
from ripp_core._liveness import FailureReason, LivenessMonitor

CONFIG = RippConfig()  # ack_timeout 1 s, media_timeout 1 s


def test_nothing_to_watch() -> None:
    monitor = LivenessMonitor(CONFIG)
    assert monitor.check(100.0, oldest_unacked_sent_at=None) is None
    assert monitor.next_deadline(None) is None


def test_ack_timeout() -> None:
    monitor = LivenessMonitor(CONFIG)
    assert monitor.check(10.99, oldest_unacked_sent_at=10.0) is None
    assert monitor.check(11.0, oldest_unacked_sent_at=10.0) is FailureReason.ACK_TIMEOUT
    assert monitor.next_deadline(10.0) == pytest.approx(11.0)


def test_media_timeout_only_after_media_flowed() -> None:
    monitor = LivenessMonitor(CONFIG)
    assert monitor.check(50.0, oldest_unacked_sent_at=None) is None
    monitor.on_media(5.0)
    monitor.on_media(5.5)
    assert monitor.last_media == 5.5
    assert monitor.next_deadline(None) == pytest.approx(6.5)
    assert monitor.check(6.49, oldest_unacked_sent_at=None) is None
    assert monitor.check(6.5, oldest_unacked_sent_at=None) is FailureReason.MEDIA_TIMEOUT


def test_ack_timeout_reported_first_and_earliest_deadline() -> None:
    monitor = LivenessMonitor(RippConfig(ack_timeout=2.0, media_timeout=0.5))
    monitor.on_media(0.0)
    assert monitor.next_deadline(0.0) == pytest.approx(0.5)
    assert monitor.check(0.5, oldest_unacked_sent_at=0.0) is FailureReason.MEDIA_TIMEOUT
    assert monitor.check(2.0, oldest_unacked_sent_at=0.0) is FailureReason.ACK_TIMEOUT


def test_reset_forgets_media_flow() -> None:
    monitor = LivenessMonitor(CONFIG)
    monitor.on_media(0.0)
    monitor.reset(3.0)
    assert monitor.last_media is None
    assert monitor.check(10.0, oldest_unacked_sent_at=None) is None
    assert monitor.next_deadline(None) is None
    monitor.on_media(10.0)
    assert monitor.check(11.0, oldest_unacked_sent_at=None) is FailureReason.MEDIA_TIMEOUT
    monitor.arm(11.0)
    assert monitor.check(20.0, oldest_unacked_sent_at=None) is None
