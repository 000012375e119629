"""Start a throw-away ``redis-server`` (Debian's package) for tests and local clusters."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs


class RedisUnavailable(RuntimeError):
    """``redis-server`` is not installed (Debian package ``redis-server``)."""


@attrs.frozen
class RedisProcess:
    """A running ``redis-server``: its port on 127.0.0.1 and its process."""

    port: int
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    # Redis takes a port number, not a socket: ask the kernel for a free one. Another
    # process could take it before Redis binds; start_redis retries if so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def start_redis(
    directory: Path, *, startup_timeout: float = 10.0, attempts: int = 5
) -> Iterator[RedisProcess]:
    """Run ``redis-server`` on a free loopback port with its files in ``directory`` (no
    persistence) for the ``with`` block, then stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not installed (Debian package redis-server)")
    for _ in range(attempts):
        port = _free_port()
        log = directory / f"redis-{port}.log"
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + startup_timeout
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                ready = True
                break
            time.sleep(0.02)
        if ready:
            break
        process.kill()
        process.wait()
    else:
        raise RuntimeError(f"redis-server did not start; see {directory}")
    try:
        yield RedisProcess(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
