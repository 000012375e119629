"""The cluster exercise's verdict and figures (``ripp cluster --exercise``, issue 9), as
pure functions; the exercise itself runs in tests/test_failover.py (slow)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ripp_cli._cluster import format_report
from ripp_cluster._upgrade import _verdict, resume_bound
from ripp_core import RippConfig


def good_report() -> dict[str, Any]:
    return {
        "calls": 3,
        "clients": 2,
        "kill": {
            "victim": "w1",
            "bound_ms": 5000,
            "dropped_by_client_sender": 0,
            "calls": [
                {
                    "call": 1,
                    "killed": True,
                    "path": "w1->w2",
                    "gap_ms": 3100,
                    "gap_frames": 12,
                    "resumed": True,
                },
                {
                    "call": 2,
                    "killed": True,
                    "path": "w1->w3",
                    "gap_ms": 3200,
                    "gap_frames": 0,
                    "resumed": True,
                },
                {
                    "call": 3,
                    "killed": False,
                    "path": "w3",
                    "gap_ms": 40,
                    "gap_frames": 0,
                    "resumed": True,
                },
            ],
        },
        "ended": ["200 Normal"] * 3,
        "upgrade": {
            "instances_replaced": 3,
            "moves": 4,
            "frames_sent": 3000,
            "lost_client_to_server": 0,
            "lost_server_to_client": 0,
            "max_gap_ms": 180.0,
            "added_delay_ms": 160.0,
        },
    }


def test_every_call_kept_passes_and_gap_frames_of_killed_calls_are_no_loss() -> None:
    assert _verdict(good_report())


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: r["ended"].__setitem__(1, "408 re-establishment failed"),
        lambda r: r["kill"]["calls"][0].__setitem__("resumed", False),
        lambda r: r["kill"]["calls"][1].__setitem__("gap_ms", 5001),
        lambda r: r["kill"]["calls"][2].__setitem__("gap_frames", 1),  # a bystander's loss
        lambda r: r["upgrade"].__setitem__("lost_client_to_server", 1),
        lambda r: r["upgrade"].__setitem__("lost_server_to_client", 2),
    ],
    ids=["ended-408", "not-resumed", "over-bound", "bystander-loss", "c2s-loss", "s2c-loss"],
)
def test_a_call_not_kept_fails_the_verdict(spoil: Any) -> None:
    report = copy.deepcopy(good_report())
    spoil(report)
    assert not _verdict(report)


def test_the_default_bound_is_the_spec_s_five_seconds() -> None:
    # protocol 24.7: max(media_timeout 1 s, store_lease_ttl 3 s) + 0.5 s + allowance.
    assert resume_bound(RippConfig()) == pytest.approx(5.0)
    assert resume_bound(RippConfig(store_lease_ttl=1.5)) == pytest.approx(3.5)


def test_the_table_names_each_call_and_the_verdict() -> None:
    report = good_report()
    report["ok"] = _verdict(report)
    text = format_report(report)
    assert "SIGKILL w1" in text and "bound 5000 ms" in text
    assert "w1->w3" in text and "3200 ms" in text
    assert "frames lost 0 client->server, 0 server->client" in text
    assert "calls ended: 3 x 200 Normal" in text
    assert text.endswith("verdict: every call kept")
    report["ok"] = False
    assert format_report(report).endswith("verdict: FAILED (a call was not kept)")
