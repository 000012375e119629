"""Benchmarks of ripp against bare aioquic HTTP/3, measured side by side in one run.

Run them all with ``python -m benchmarks.run`` (``--quick`` for a smoke run, ``--only`` for
one of them); results are printed and written to ``docs/performance.md``.

* :mod:`benchmarks.hol`: head-of-line blocking under loss, in virtual time (deterministic).
* :mod:`benchmarks.capacity`: concurrent two-way calls between two processes on loopback.
* :mod:`benchmarks.setup`: call set-up and tear-down rate on an open connection.
* :mod:`benchmarks.bare_h3`: the bare aioquic H3 endpoint used by every baseline.

This module holds what they share: percentiles, the test PKI on disk, machine facts, and
the small process plumbing (every child process is bounded in time and reaped).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aioquic.quic.configuration import QuicConfiguration

from ripp_core.testing import make_test_pki

#: A syntactically valid STIR Identity header (the server's default verifier checks syntax).
IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIzNCJdfX0"
    ".c2ln;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
TOKEN = "benchmark-token"
#: Only loopback is ever used.
HOST = "127.0.0.1"
FRAME = 0.02  # 20 ms G.711 frames
FRAME_BYTES = 160  # PCMU, 20 ms at 8 kHz


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in [0, 1])."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of latencies given in seconds, returned in milliseconds."""
    ordered = sorted(latencies)
    return {
        "p50": percentile(ordered, 0.50) * 1000,
        "p90": percentile(ordered, 0.90) * 1000,
        "p99": percentile(ordered, 0.99) * 1000,
        "max": (ordered[-1] * 1000) if ordered else math.nan,
    }


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table cell ('-' when absent)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table whose columns line up in a terminal too."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- PKI shared by processes
def write_pki(directory: Path) -> None:
    """Mint a throwaway CA and server certificate and store them as PEM files."""
    pki = make_test_pki(["localhost"], not_before=datetime.now(UTC) - timedelta(hours=1))
    (directory / "ca.pem").write_bytes(pki.ca_pem)
    (directory / "cert.pem").write_bytes(pki.server_cert_pem)
    (directory / "key.pem").write_bytes(pki.server_key_pem)


def server_configuration(directory: Path) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    configuration.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return configuration


def client_configuration(directory: Path) -> QuicConfiguration:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=["h3"], server_name="localhost"
    )
    configuration.load_verify_locations(cafile=str(directory / "ca.pem"))
    return configuration


# ---------------------------------------------------------------- processes
def spawn(module: str, *args: str, root: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m module args`` with pipes on stdin and stdout.

    ``root``: the source tree to run (default: this one). Another tree (e.g. an earlier
    commit, :mod:`benchmarks.baseline`) runs with the same interpreter and dependencies
    but its own ``ripp_core``/``ripp_trio``/``benchmarks``: it is the working directory
    and first on ``PYTHONPATH``, ahead of this tree's editable install.
    """
    env = None
    if root is not None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), env.get("PYTHONPATH", "")) if p
        )
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(root or Path(__file__).resolve().parent.parent),
        env=env,
    )


def read_line(process: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """Read stdout lines until one starts with ``prefix``; return the rest of it."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), True)
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    raise RuntimeError(f"{process.args!r} did not print {prefix!r} within {timeout} s")


def reap(process: subprocess.Popen[str], timeout: float) -> int:
    """Close the child's stdin (its signal to finish), wait for it, kill it if late."""
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return -9
    except BaseException:  # Ctrl-C in the runner: leave no child behind
        process.kill()
        process.wait(timeout=10)
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()


# ---------------------------------------------------------------- machine facts
def _commit() -> str:
    """The git commit measured, marked '+ local changes' if the code differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ripp_core", "ripp_trio"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + local changes" if dirty else "")


def machine_info() -> dict[str, str]:
    """What the doc says about where the figures were measured."""
    import aioquic
    import trio

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "aioquic": aioquic.__version__,
        "trio": trio.__version__,
    }
