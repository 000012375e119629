"""End-to-end tests of the ``ripp`` command line: ``demo``, ``serve`` and ``call``.

Each test runs ``python -m ripp_cli`` as a subprocess (real UDP on loopback, real QUIC and
TLS, real codecs), with ``RIPP_HOME`` pointing into the test's tmp_path so the local CA is
made fresh there and never touches the user's. Runs are kept short (``--seconds`` of 0.5 to
2), so the whole file takes about half a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ripp_audio import tone, write_wav

REPO = Path(__file__).resolve().parent.parent
STATES = ["pending", "ringing", "connected", "terminated"]
LATENCY_KEYS = {"p50", "p90", "p99", "max"}


# ------------------------------------------------------------------ helpers
def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSLKEYLOGFILE", "RIPP_HOME")}
    # PYTHONPATH: the subprocess finds the packages even without an editable install.
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(RIPP_HOME=str(home), PYTHONPATH=path, PYTHONUNBUFFERED="1", **extra)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ripp_cli", *args]


def ripp(
    home: Path, *args: str, timeout: float = 40, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``ripp ARGS`` to completion; fail the test (showing stderr) if it fails."""
    done = subprocess.run(
        _command(*args),
        cwd=REPO,
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"ripp {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done


def last_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object on the last line of stdout (the --json contract)."""
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr}"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def read_wav(path: Path) -> tuple[np.ndarray[Any, Any], Any]:
    """Samples and header of a WAV file, read with the stdlib (not ripp_audio)."""
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        raw = wav.readframes(params.nframes)
    return np.frombuffer(raw, dtype="<i2"), params


def peak_hz(samples: np.ndarray[Any, Any], rate: int) -> float:
    """Frequency of the strongest FFT bin (DC excluded), leading and trailing quiet cut."""
    (loud_at,) = np.nonzero(np.abs(samples) > 100)
    assert loud_at.size > rate // 10, "the recording is (nearly) silent"
    loud = samples[loud_at[0] : loud_at[-1] + 1].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(loud * np.hanning(loud.size)))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * rate / loud.size


def check_media_direction(row: dict[str, Any]) -> None:
    """One direction of the media report has every required key with the right type."""
    for key in ("sent", "received", "lost", "duplicates"):
        assert isinstance(row[key], int) and not isinstance(row[key], bool), (key, row)
        assert row[key] >= 0
    latency = row["latency_ms"]
    assert set(latency) >= LATENCY_KEYS
    for key in LATENCY_KEYS:
        assert isinstance(latency[key], float | int), (key, latency)
    assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def check_report(result: dict[str, Any], codec: str) -> None:
    """The --json report of a demo: states, codec, media per direction, rtt, streams."""
    assert result["states"] == STATES
    assert result["codec"] == codec
    assert set(result["media"]) >= {"client_to_server", "server_to_client"}
    for row in result["media"].values():
        check_media_direction(row)
    rtt = result["rtt_ms"]
    assert isinstance(rtt["p50"], float | int) and isinstance(rtt["p99"], float | int)
    assert 0 < rtt["p50"] <= rtt["p99"]
    assert set(result["streams"]) == {"client_to_server", "server_to_client"}
    assert all(isinstance(v, int) for v in result["streams"].values())
    assert result["ended"]["code"] == 200


def all_delivered(result: dict[str, Any]) -> None:
    for name, row in result["media"].items():
        assert row["sent"] > 0, name
        assert row["received"] == row["sent"], (name, row)
        assert row["lost"] == 0, (name, row)
        assert row["duplicates"] == 0, (name, row)


@contextlib.contextmanager
def running(home: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A background ``ripp`` process, killed on the way out if it still runs."""
    process = subprocess.Popen(
        _command(*args),
        cwd=REPO,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``process`` (fails after ``timeout`` seconds)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from ripp serve"
    line = process.stdout.readline()
    assert line, f"ripp serve exited {process.poll()}"
    return line


@contextlib.contextmanager
def serving(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``ripp serve --port 0 ARGS``; yields the process and the calls URI it prints."""
    with running(home, "serve", "--port", "0", *args) as process:
        banner = read_line(process, 20)
        # "ripp serve (trio): https://localhost:PORT/ripp/calls  CA ..."
        uri = next(word for word in banner.split() if word.startswith("https://"))
        yield process, uri


def interrupt(process: subprocess.Popen[str]) -> None:
    """Ctrl-C: the server must shut down in order, within 5 s, with status 0 or 130."""
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("ripp serve did not exit within 5 s of SIGINT")
    assert process.returncode in (0, 130), f"exit {process.returncode}:\n{stderr}"
    assert "Traceback" not in stderr, stderr


# ------------------------------------------------------------------ ripp demo --json
@pytest.mark.timeout(60)
@pytest.mark.parametrize("driver", ["trio", "asyncio"])
def test_demo_json_report(tmp_path: Path, driver: str) -> None:
    done = ripp(tmp_path, "demo", "--json", "--driver", driver, "--seconds", "1")
    result = last_json(done)
    check_report(result, "pcmu")
    all_delivered(result)
    assert result["media"]["client_to_server"]["sent"] == 50  # 1 s of 20 ms frames
    for row in result["media"].values():
        assert row["latency_ms"]["p50"] < 50  # loopback, no relay
    # one 20 ms frame in flight per RTT on loopback: at least one stream busy each way
    assert result["streams"]["client_to_server"] >= 1
    assert result["streams"]["server_to_client"] >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("codec", "frame_ms"), [("opus", "20"), ("pcma", "30")])
def test_demo_codecs(tmp_path: Path, codec: str, frame_ms: str) -> None:
    args = ("--codec", codec, "--frame-ms", frame_ms, "--seconds", "1")
    result = last_json(ripp(tmp_path, "demo", "--json", *args))
    check_report(result, codec)
    all_delivered(result)
    expected = int(1000 // float(frame_ms))
    assert result["media"]["client_to_server"]["sent"] == expected


@pytest.mark.timeout(60)
def test_demo_through_impairing_relay(tmp_path: Path) -> None:
    args = ("--delay-ms", "40", "--loss", "0.02", "--seconds", "2")
    result = last_json(ripp(tmp_path, "demo", "--json", *args))
    check_report(result, "pcmu")
    for name, row in result["media"].items():
        # One-way latency from each frame's send time: the relay's 40 ms plus a little.
        assert 40 <= row["latency_ms"]["p50"] <= 80, (name, row)
        # QUIC retransmits what the relay drops: what never arrives was late (dropped by the
        # jitter buffer after its playout time), not lost.
        assert row["lost"] == 0, (name, row)
        assert row["received"] + row["late"] == row["sent"], (name, row)
    assert 80 <= result["rtt_ms"]["p50"] <= 160


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_echo_plays_as_well_as_it_hears_under_loss(tmp_path: Path) -> None:
    """Issue 12: the echo sends each frame as its jitter buffer plays it, and its media
    clock follows that playout (protocol 9.4), so the caller's jitter buffer finds the
    echoed frames about as timely as the server found the originals. Before the fix the
    echo's timestamps ran contiguous while its playout stretched (gaps, rising delay):
    server->client dropped 9-19 frames as late where client->server dropped 2-4."""
    args = ("--delay-ms", "50", "--loss", "0.05", "--seconds", "10", "--seed", "2")
    result = last_json(ripp(tmp_path, "demo", "--json", *args, timeout=100))
    c2s = result["media"]["client_to_server"]
    s2c = result["media"]["server_to_client"]
    for name, row in (("c2s", c2s), ("s2c", s2c)):
        assert row["lost"] == 0, (name, row)
        assert row["received"] + row["late"] == row["sent"], (name, row)
    assert c2s["sent"] == 500
    assert s2c["sent"] >= 480, s2c  # the echo sends what it played (the rest was late)
    # Generous: the machine may be loaded, which makes both directions late more often.
    assert s2c["late"] <= max(2 * c2s["late"], 8), (c2s, s2c)


# ------------------------------------------------------------------ recordings
@pytest.mark.timeout(60)
def test_demo_records_the_echo(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    ripp(tmp_path, "demo", "--seconds", "1.5", "--record", str(out))
    samples, params = read_wav(out)
    assert (params.framerate, params.nchannels, params.sampwidth) == (8000, 1, 2)
    assert abs(params.nframes / params.framerate - 1.5) <= 0.5
    # The 440 Hz tone went out as PCMU, came back as PCMU and was decoded: still 440 Hz.
    assert abs(peak_hz(samples, params.framerate) - 440) < 10


@pytest.mark.timeout(60)
def test_serve_echo_and_call(tmp_path: Path) -> None:
    recordings = tmp_path / "server-recordings"
    back = tmp_path / "back.wav"
    with serving(tmp_path, "--record", str(recordings)) as (server, uri):
        assert uri.endswith("/ripp/calls")
        done = ripp(tmp_path, "call", uri, "--seconds", "1", "--record", str(back), "--json")
        result = last_json(done)
        assert result["states"][-1] == "terminated"
        assert result["states"] == STATES
        assert result["ended"]["code"] == 200
        assert result["http"] == "h3"
        assert result["media"]["client_to_server"]["sent"] == 50
        assert result["media"]["server_to_client"]["received"] == 50
        samples, params = read_wav(back)
        assert (params.framerate, params.nchannels, params.sampwidth) == (8000, 1, 2)
        assert abs(peak_hz(samples, params.framerate) - 440) < 10
        # The server records each call when it ends; give it a moment after the hangup.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not list(recordings.glob("*.wav")):
            time.sleep(0.05)
        time.sleep(0.3)
        interrupt(server)
    wavs = list(recordings.glob("*.wav"))
    assert len(wavs) == 1, wavs
    samples, params = read_wav(wavs[0])
    assert params.framerate == 8000
    assert abs(peak_hz(samples, params.framerate) - 440) < 10


@pytest.mark.timeout(60)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("driver", ["trio", "asyncio"])
@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_call_over_http2(tmp_path: Path, driver: str, tls: bool) -> None:
    """``ripp call --http2`` reaches ``ripp serve --http2-port``, authenticated as over
    HTTP/3 (the local issuer's token and an STI-signed PASSporT), media both ways."""
    serve_tls = () if tls else ("--http2-cleartext",)
    call_tls = ("--http2",) if tls else ("--http2", "--http2-cleartext")
    with serving(tmp_path, "--driver", driver, "--http2-port", "0", *serve_tls) as (server, _):
        # "ripp serve (trio): HTTP/2 h2 on 127.0.0.1:PORT ..."
        line = read_line(server, 20)
        assert "HTTP/2" in line, line
        port = line.split(" on ", 1)[1].split()[0].rsplit(":", 1)[1]
        uri = f"https://localhost:{port}/ripp/calls"
        done = ripp(
            tmp_path, "call", uri, "--driver", driver, *call_tls, "--seconds", "1", "--json"
        )
        result = last_json(done)
        assert result["states"] == STATES
        assert result["ended"]["code"] == 200
        assert result["media"]["client_to_server"]["sent"] == 50
        assert result["media"]["server_to_client"]["received"] >= 49
        assert result["http"] == ("h2" if tls else "h2c")
        interrupt(server)


def test_call_http2_cleartext_alone_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        _command("call", "https://localhost:1/ripp/calls", "--http2-cleartext"),
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "--http2-cleartext needs --http2" in done.stderr


def test_serve_plays_a_wav(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.wav"
    write_wav(prompt, tone(1000.0, 1.0, 8000), 8000)
    back = tmp_path / "back.wav"
    with serving(tmp_path, "--play", str(prompt)) as (server, uri):
        done = ripp(tmp_path, "call", uri, "--seconds", "1", "--record", str(back), "--json")
        result = last_json(done)
        assert result["states"] == STATES
        assert result["ended"]["code"] == 200
        assert result["media"]["server_to_client"]["received"] > 0
        samples, params = read_wav(back)
        assert abs(peak_hz(samples, params.framerate) - 1000) < 15
        time.sleep(0.2)
        interrupt(server)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("driver", ["trio", "asyncio"])
def test_serve_exits_cleanly_on_ctrl_c(tmp_path: Path, driver: str) -> None:
    # Right after startup, too: the asyncio driver once crashed when Ctrl-C came before
    # its receive task had first run, and trio's nursery wrapped KeyboardInterrupt in an
    # exception group that escaped as a traceback with status 1.
    with serving(tmp_path, "--driver", driver) as (server, _):
        interrupt(server)


# ------------------------------------------------------------------ R22: qlog, keylog, logs
def _qlog_documents(path: Path) -> list[Any]:
    """A qlog file as JSON (aioquic writes one JSON document) or JSON-SEQ records."""
    text = path.read_text()
    if text.startswith("\x1e"):
        return [json.loads(record) for record in text.split("\x1e") if record.strip()]
    return [json.loads(text)]


@pytest.mark.timeout(60)
def test_qlog_and_keylog(tmp_path: Path) -> None:
    qlog, keys = tmp_path / "qlog", tmp_path / "keys.log"
    ripp(tmp_path, "demo", "--seconds", "0.5", "--qlog", str(qlog), "--keylog", str(keys))
    files = sorted(qlog.glob("*.qlog"))
    # One per connection end: the demo's client and its server both log to DIR.
    assert len(files) == 2, files
    sides = set()
    for path in files:
        assert path.stat().st_size > 0
        (document,) = _qlog_documents(path)
        (trace,) = document["traces"]
        assert trace["events"], path
        sides.add(trace["vantage_point"]["type"])
    assert sides == {"client", "server"}
    lines = keys.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines)
    assert any(line.startswith("SERVER_HANDSHAKE_TRAFFIC_SECRET ") for line in lines)


@pytest.mark.timeout(60)
def test_sslkeylogfile_variable(tmp_path: Path) -> None:
    keys = tmp_path / "env-keys.log"
    ripp(tmp_path, "demo", "--seconds", "0.5", SSLKEYLOGFILE=str(keys))
    assert "CLIENT_TRAFFIC_SECRET_0 " in keys.read_text()


@pytest.mark.timeout(60)
def test_verbose_call_logs_name_the_call(tmp_path: Path) -> None:
    done = ripp(tmp_path, "demo", "-v", "--seconds", "0.5")
    lines = done.stderr.splitlines()
    call_lines = [line for line in lines if line.startswith(("ripp.call ", "ripp.cli "))]
    assert len(call_lines) >= 8, done.stderr  # two sides x four state changes at least
    for line in call_lines:
        assert "https://localhost:" in line and "/calls/" in line, line
    # Connection-level lines (ripp.h3 "new connection", aioquic's "quic [ODCID]") carry no
    # call: a connection may hold many calls. They are not checked here.
