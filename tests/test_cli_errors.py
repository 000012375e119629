"""The ``ripp`` command's expected failures: one line on stderr, no traceback, the --json
line with an ``error`` field, and the documented exit status (README, "Exit status")."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ripp_core.testing import make_test_pki
from tests.test_cli import REPO, _command, _env

HANGS_UP_FIRST = """
import sys, trio
import ripp_trio
from ripp_cli.local import server_tls
from ripp_core import insecure_accept_any_bearer, insecure_accept_any_identity

async def main():
    async with ripp_trio.open_server(server_tls(), authorizer=insecure_accept_any_bearer,
                                     identity_verifier=insecure_accept_any_identity) as server:
        print(f"https://localhost:{server.address[1]}/ripp/calls", flush=True)
        async for call in server.calls():
            await call.answer()
            await trio.sleep(0.5)
            await call.terminate()
            return

trio.run(main)
"""


def ripp(home: Path, *args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args),
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_clean_failure(done: subprocess.CompletedProcess[str], status: int) -> dict[str, object]:
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["exit"] == status and line["error"]
    return line


def test_no_server_running_fails_fast_and_clearly(tmp_path: Path) -> None:
    began = time.monotonic()
    done = ripp(
        tmp_path, "call", "https://localhost:9/ripp/calls", "--json", "--connect-timeout", "1"
    )
    line = assert_clean_failure(done, 1)
    assert time.monotonic() - began < 10
    assert "no RIPP server answered" in done.stderr
    assert line["ended"] == {
        "code": 408,
        "reason": "timed out waiting for the server",
        "by": "failure",
    }


def test_wrong_ca_is_reported_as_a_tls_failure(tmp_path: Path) -> None:
    stranger = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(days=1))
    ca = tmp_path / "stranger-ca.pem"
    ca.write_bytes(stranger.ca_cert.public_bytes(serialization.Encoding.PEM))
    serve = subprocess.Popen(
        _command("serve", "--port", "0"),
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        uri = next(w for w in serve.stdout.readline().split() if w.endswith("/ripp/calls"))
        done = ripp(tmp_path, "call", uri, "--ca", str(ca), "--json")
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    assert_clean_failure(done, 1)
    assert "TLS handshake failed" in done.stderr


def test_far_end_hanging_up_first_is_not_a_crash(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", HANGS_UP_FIRST],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        uri = server.stdout.readline().strip()
        done = ripp(tmp_path, "call", uri, "--seconds", "3", "--json")
    finally:
        server.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ended"]["code"] == 200
    assert result["media"]["client_to_server"]["sent"] == 150  # queued; far fewer went out


def test_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = ripp(tmp_path, "serve", "--port", str(port), "--json")
    assert_clean_failure(done, 3)
    assert "OSError" in done.stderr or "Address already in use" in done.stderr


def test_demo_takes_a_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = ripp(tmp_path, "demo", "--port", str(port), "--seconds", "0.5")
    assert done.returncode == 0, done.stderr
    assert f"server on udp/{port}" in done.stdout
