"""Helpers for gateway system tests: sipp, `ripp serve`, free ports, the gateway in-process.

sipp comes from Debian's ``sip-tester`` package (``scripts/test`` installs it when run as
root). Without it the tests skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SIPP_DATA = Path("/usr/share/sip-tester")
SCENARIOS = Path(__file__).resolve().parent / "sipp"


def sipp_binary() -> str:
    """The sipp executable; a missing one skips (fails under CI)."""
    found = shutil.which("sipp")
    if found is None:
        message = "sipp (Debian package sip-tester) is not installed"
        if os.environ.get("CI"):
            pytest.fail(message + "; scripts/test installs it when run as root")
        pytest.skip(message)
    return found


def free_udp_port(host: str = "127.0.0.1", even: bool = False) -> int:
    """A UDP port free right now (for programs that cannot report the port they got)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if not even or (port % 2 == 0 and port + 2 < 65536):
            return port
    raise OSError("no free port")


def env(home: Path) -> dict[str, str]:
    """Environment for ripp subprocesses: a private RIPP_HOME, the repo on the path."""
    out = {k: v for k, v in os.environ.items() if k not in ("SSLKEYLOGFILE", "RIPP_HOME")}
    path = os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH", "")) if p)
    out.update(RIPP_HOME=str(home), PYTHONPATH=path, PYTHONUNBUFFERED="1")
    return out


def ripp_command(*args: str) -> list[str]:
    """``python -m ripp_cli ARGS``."""
    return [sys.executable, "-m", "ripp_cli", *args]


def start_ripp_serve(
    home: Path, *, authenticated: bool = False, options: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str]:
    """Start ``ripp serve --port 0`` (echo); return the process and its calls URI.

    Unless ``authenticated``, the server takes any token and any well-formed Identity
    (the SIP mapping is under test, with the gateway's test-only signer); the
    ``ripp gateway`` command test runs against a default, authenticating server."""
    insecure = [] if authenticated else [
        "--insecure-accept-any-token", "--insecure-accept-any-identity"
    ]
    process = subprocess.Popen(ripp_command("serve", "--port", "0", *insecure, *options),
                               cwd=REPO,
                               env=env(home),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "https://" in line, f"ripp serve said {line!r}; stderr: {process.stderr.read()}"
    uri = next(word for word in line.split() if word.startswith("https://"))
    return process, uri


def stop(process: subprocess.Popen[str]) -> None:
    """Stop a subprocess we started (SIGINT, then kill)."""
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def sipp_workdir(tmp_path: Path) -> Path:
    """A directory where sipp's built-in uac_pcap finds ``pcap/g711a.pcap``."""
    work = tmp_path / "sipp"
    work.mkdir(exist_ok=True)
    link = work / "pcap"
    if not link.exists():
        link.symlink_to(SIPP_DATA)
    return work


def sipp_args(target: tuple[str, int], *scenario: str, calls: int = 1,
              timeout: int = 40) -> list[str]:
    """Common sipp arguments: one call, loopback, free SIP and media ports."""
    return [sipp_binary(), f"{target[0]}:{target[1]}", *scenario, "-i", "127.0.0.1",
            "-p", str(free_udp_port()), "-mp", str(free_udp_port(even=True)),
            "-m", str(calls), "-l", str(calls), "-timeout", f"{timeout}s", "-timeout_error",
            "-nostdin", "-trace_err", "-trace_msg"]
