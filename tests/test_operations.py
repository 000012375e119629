"""Operations: the E-model MOS, Prometheus metrics, JSON logs and the call ladder."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import ripp_trio
from ripp_cli._eventlog import EventRecorder, JsonFormatter
from ripp_cli._ladder import ladder_from_events, ladder_from_qlog, read_log, render_svg, render_text
from ripp_cli._metrics import CallMetrics
from ripp_cli.local import client_tls, dev_identity, server_tls
from ripp_core import (
    AuthRequest,
    CallEnded,
    CallIncoming,
    CallState,
    CallStateChanged,
    CallStats,
    CallTerminated,
    Codec,
    Forbidden,
    NameAddr,
    ProtocolViolation,
    ReceiverStats,
    SenderStats,
    Termination,
    insecure_accept_any_identity,
    mos_estimate,
    mos_from_r,
    r_factor,
)
from tests.test_cli import REPO, _command, _env

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"


@pytest.fixture(autouse=True)
def _ripp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPP_HOME", str(tmp_path / "pki"))


# ------------------------------------------------------------------ E-model
def test_e_model_reference_values() -> None:
    assert r_factor(0.02, 0.0) == pytest.approx(93.2)
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.005)
    # Idd at 200 ms (X = 1): 25 * (2**(1/6) - 3 * (1 + 1/729)**(1/6) + 2)
    assert r_factor(0.2, 0.0) == pytest.approx(93.2 - 3.045, abs=0.01)
    # 1 % random loss, G.711 with PLC: Ie_eff = 95 * 1 / (1 + 25.1)
    assert r_factor(0.02, 0.01, Codec.PCMA) == pytest.approx(93.2 - 95 / 26.1, abs=1e-6)
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5
    with pytest.raises(ValueError):
        r_factor(0.02, 1.5)


@given(st.floats(0, 1.0), st.floats(0, 1.0), st.floats(0, 0.5), st.floats(0, 0.5))
def test_mos_never_improves_with_more_delay_or_loss(
    d1: float, d2: float, l1: float, l2: float
) -> None:
    lo_d, hi_d = sorted((d1, d2))
    lo_l, hi_l = sorted((l1, l2))
    assert mos_estimate(hi_d, hi_l) <= mos_estimate(lo_d, lo_l) + 1e-9
    assert 1.0 <= mos_estimate(hi_d, hi_l) <= 4.5


# ------------------------------------------------------------------ CallMetrics (sans-IO)
def stats(sent: int, received: int, lost: int = 0, late: int = 0) -> CallStats:
    return CallStats(
        sender=SenderStats(sent, sent, 0, 0, 0, sent * 160, 0.04, 0.04, 0.04, 0.001, 2, 1, 2, 0),
        receiver=ReceiverStats(received, received * 160, 0, lost, late, 0.003, received, 0.06),
    )


def value(metrics: CallMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_metrics_follow_a_call_from_request_to_end() -> None:
    m = CallMetrics()
    nobody = NameAddr("tel:+1")
    m.observe(
        CallIncoming("1", "https://x/ripp/instances/a/calls/1", nobody, nobody, "id", ()), 10.0
    )
    assert value(m, "ripp_calls_active", state="created") == 1
    m.observe(CallStateChanged("1", CallState.PENDING, CallState.CREATED), 10.01)
    m.observe(CallStateChanged("1", CallState.CONNECTED, CallState.PENDING), 10.25)
    assert value(m, "ripp_calls_active", state="connected") == 1
    assert value(m, "ripp_calls_active", state="created") == 0
    assert value(m, "ripp_call_setup_seconds_count") == 1
    assert value(m, "ripp_call_setup_seconds_sum") == pytest.approx(0.25)
    m.sample({"1": stats(50, 48, lost=2)}, connections=1)
    assert value(m, "ripp_media_frames_received_total") == 48
    assert value(m, "ripp_media_frames_lost_total") == 2
    assert value(m, "ripp_connections") == 1
    assert value(m, "ripp_mos_count") == 1
    # 4 % loss (Ie_eff 13.1), 20+60+20 ms one way (no delay impairment): R 80.1, MOS 4.03
    assert value(m, "ripp_mos_bucket", le="4.3") == 1 and value(m, "ripp_mos_bucket", le="4.0") == 0
    assert value(m, "ripp_rtt_seconds_count") == 1
    m.observe(CallTerminated("1", 200, "Normal", Termination.REMOTE, stats(100, 97, 2, 1)), 12)
    assert value(m, "ripp_media_frames_received_total") == 97  # counted once, not twice
    assert value(m, "ripp_media_frames_late_total") == 1
    assert value(m, "ripp_media_frames_sent_total") == 100
    assert value(m, "ripp_calls_active", state="connected") == 0
    assert value(m, "ripp_calls_ended_total", code="200") == 1
    m.observe(ProtocolViolation(None, "Forbidden", "bad token", 403, None), 13)
    assert value(m, "ripp_refusals_total", reason="Forbidden") == 1


def test_metrics_of_a_live_server_with_a_refused_caller_beside_a_good_one() -> None:
    """Real sockets: one caller is refused (403), another completes; both are counted."""
    metrics = CallMetrics()

    def authorize(request: AuthRequest, now: float) -> str:
        if request.token != "good":
            raise Forbidden("unknown token")
        return "good"

    async def main() -> None:
        async with ripp_trio.open_server(
            server_tls(), authorizer=authorize, identity_verifier=insecure_accept_any_identity
        ) as server:
            server.observe(lambda event: metrics.observe(event, trio.current_time()))
            uri = f"https://localhost:{server.address[1]}/ripp/calls"

            async def answer() -> None:
                async for call in server.calls():
                    await call.answer()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                for token in ("bad", "good"):
                    async with ripp_trio.open_client(
                        client_tls(), calls_uris=[uri], token=token
                    ) as client:
                        call = await client.place_call(
                            to=TO, from_=FROM, identity=dev_identity(TO, FROM)
                        )
                        try:
                            await call.wait_state(CallState.CONNECTED)
                        except CallEnded:
                            assert token == "bad"
                            continue
                        for _ in range(10):
                            call.send_audio(Codec.PCMU, 0.02, bytes(160))
                            await trio.sleep(0.02)
                        await call.terminate()
                await trio.sleep(0.1)
                nursery.cancel_scope.cancel()

    async def bounded() -> None:
        with trio.fail_after(20):
            await main()

    trio.run(bounded)
    assert value(metrics, "ripp_refusals_total", reason="Forbidden") == 1
    assert value(metrics, "ripp_calls_ended_total", code="200") == 1
    assert value(metrics, "ripp_call_setup_seconds_count") == 1
    assert value(metrics, "ripp_media_frames_received_total") >= 8


# ------------------------------------------------------------------ JSON logs
def test_json_formatter_carries_the_call_uri_and_event_fields() -> None:
    import logging

    recorder = EventRecorder("server", lambda: 1.5)
    nobody = NameAddr("tel:+1")
    uri = "https://h/ripp/instances/a/calls/7"
    record = recorder.record(CallIncoming("7", uri, nobody, nobody, "id", ()))
    assert record is not None and record["call"] == uri and record["t"] == 1.5
    later = recorder.record(CallStateChanged("7", CallState.RINGING, CallState.PENDING))
    assert later is not None and later["call"] == uri  # remembered from CallIncoming
    log = logging.makeLogRecord({"name": "ripp.events", "msg": "x", **later})
    line = json.loads(JsonFormatter().format(log))
    assert (
        line["call"] == uri and line["event"] == "CallStateChanged" and line["state"] == "ringing"
    )


# ------------------------------------------------------------------ ladder
def test_ladder_of_a_call_that_moved(tmp_path: Path) -> None:
    log = tmp_path / "move.log"
    with log.open("w") as err:
        done = subprocess.run(
            _command("simulate", "--move", "--seconds", "2", "--log-json", "--json"),
            cwd=REPO,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0
    records = read_log(log)
    assert isinstance(records, list)
    ladder = ladder_from_events(records)
    assert ladder.participants == ["client", "server inst-a", "server inst-b"]
    labels = [(s.source, s.target, s.label) for s in ladder.steps]
    assert ("server inst-a", "client", "Ringing") in labels
    assert ("server inst-a", "client", "Move -> server inst-b") in labels
    assert any(
        s == ("client", "server inst-b")
        for s, _t, _l in [((a, b), None, None) for a, b, _ in labels]
    )
    assert labels[-1] == ("client", "server inst-b", "Terminate 200 Normal")
    text = render_text(ladder)
    assert "Move -> server inst-b" in text and "received" in text
    svg = ET.fromstring(render_svg(ladder))
    assert len(svg.findall("{http://www.w3.org/2000/svg}line")) >= 3 + len(ladder.steps) - 1
    # The same through the command, with an SVG file.
    out = tmp_path / "move.svg"
    done = subprocess.run(
        _command("ladder", str(log), "--svg", str(out)),
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Move -> server inst-b" in done.stdout
    assert out.read_text().startswith("<svg")


def test_ladder_from_qlog(tmp_path: Path) -> None:
    qlog = tmp_path / "qlog"
    done = subprocess.run(
        _command("demo", "--seconds", "0.5", "--qlog", str(qlog)),
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    client_file = next(qlog.glob("*.client.qlog"))
    source = read_log(client_file)
    assert isinstance(source, dict)
    ladder = ladder_from_qlog(source)
    labels = [s.label for s in ladder.steps]
    assert any(label.startswith("POST /ripp/calls") for label in labels)
    assert any(label.startswith("201") for label in labels)
    assert any("DATA frames" in note for note in ladder.notes)


def test_ladder_of_a_log_without_calls_is_a_clean_error(tmp_path: Path) -> None:
    log = tmp_path / "empty.log"
    log.write_text('{"logger": "ripp.cli", "message": "hello"}\n')
    done = subprocess.run(
        _command("ladder", str(log)),
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and "Traceback" not in done.stderr


# ------------------------------------------------------------------ /metrics of ripp demo
def test_metrics_endpoint_during_a_demo(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _command("demo", "--seconds", "2.5", "--metrics-port", "0"),
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            match = re.search(r"metrics: (http://\S+/metrics)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None
        time.sleep(1.8)  # well into the call: one-second samples have been taken
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    samples = _parse(body)
    assert samples[("ripp_calls_active", 'state="connected"')] == 1
    assert samples[("ripp_call_setup_seconds_count", "")] == 1
    assert samples[("ripp_media_frames_received_total", "")] > 20
    assert samples[("ripp_mos_count", "")] >= 1
    assert samples[("ripp_connections", "")] == 1
    assert math.isfinite(samples[("ripp_rtt_seconds_sum", "")])


def _parse(body: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in body.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match:
            out[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return out
