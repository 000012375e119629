"""A local cluster: Redis, an L4 UDP forwarder (nginx ``stream``) and K ``ripp serve``
instances, as ``ripp cluster`` and ``ripp serve --workers N`` start it.

Routing, decided here: the forwarder carries only what goes to the top-level calls URI
(call creation and re-establishment). It hashes each datagram's source address *and
port* (``hash $remote_addr$remote_port consistent``), so every datagram of one QUIC
connection (one client socket) reaches the same instance, and different client sockets
spread over the instances. Each instance also listens on a port of its own and puts it
in the authority of its call URIs (``--authority localhost:PORT``), so a call's
signaling and media requests reach their owner directly whatever the forwarder does, and
a re-establishment through the forwarder reaches a live instance: nginx marks an
instance that stops answering as failed (``max_fails=1``) and the consistent hash moves
its clients to the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from ._redis_server import start_redis

#: Where Debian's libnginx-mod-stream installs the stream module.
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


class ForwarderUnavailable(RuntimeError):
    """nginx or its stream module is not installed (Debian: nginx, libnginx-mod-stream)."""


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 free right now (another process could take it before
    whoever asked binds it; the launcher fails loudly if so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_config(directory: Path, listen_port: int, upstream_ports: Sequence[int]) -> str:
    """The nginx configuration of the forwarder (stream module only, no HTTP)."""
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" for port in upstream_ports
    )
    module = f"load_module {STREAM_MODULE};\n" if STREAM_MODULE.exists() else ""
    return f"""{module}daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
events {{ worker_connections 4096; }}
stream {{
    upstream ripp {{
        # One client socket (one QUIC connection's 4-tuple) -> one instance.
        hash $remote_addr$remote_port consistent;
{servers}
    }}
    server {{
        listen 127.0.0.1:{listen_port} udp;
        proxy_pass ripp;
        # QUIC is long-lived and has its own idle timeout; keep the UDP session as long.
        proxy_timeout 60s;
    }}
}}
"""


@contextlib.contextmanager
def start_forwarder(
    directory: Path, listen_port: int, upstream_ports: Sequence[int]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run nginx as the L4 UDP forwarder for the ``with`` block."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None or not STREAM_MODULE.exists():
        raise ForwarderUnavailable(
            "nginx with the stream module is needed (Debian: nginx libnginx-mod-stream)"
        )
    conf = directory / "nginx.conf"
    conf.write_text(nginx_config(directory, listen_port, upstream_ports))
    process = subprocess.Popen(
        [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)  # nginx binds at once or exits; give it the moment to do either
        if process.poll() is not None:
            log = (directory / "nginx-error.log").read_text(errors="replace")
            raise RuntimeError(f"nginx exited {process.returncode}: {log[-2000:]}")
        yield process
    finally:
        if process.poll() is None:
            # SIGTERM: fast shutdown (SIGQUIT would wait for every UDP session to time out).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@attrs.define
class Instance:
    """One ``ripp serve`` process of a local cluster."""

    name: str
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def calls_uri(self) -> str:
        """The instance's own calls URI (bypassing the forwarder)."""
        return f"https://localhost:{self.port}/ripp/calls"


@attrs.define
class LocalCluster:
    """What :func:`local_cluster` started."""

    directory: Path
    redis_url: str
    port: int
    """The forwarder's UDP port: the cluster's calls URI."""
    instances: list[Instance]
    serve_args: list[str]
    generation: int = 0

    @property
    def calls_uri(self) -> str:
        """The cluster's top-level calls URI (through the forwarder)."""
        return f"https://localhost:{self.port}/ripp/calls"

    def start_instance(self, name: str, port: int) -> Instance:
        """Start one ``ripp serve`` instance (waits until it holds its lease)."""
        log = self.directory / f"{name}.log"
        # Output goes to a file, not a pipe: nobody would read a pipe after start-up, and
        # a full one would stall the instance.
        output = log.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "ripp_cli", "serve", "--port", str(port),
             "--instance-id", name, "--authority", f"localhost:{port}",
             "--store", self.redis_url, *self.serve_args],
            stdout=output, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        output.close()  # the child has its own descriptor
        _wait_for(process, f"instance {name} in store", 30.0, log)
        return Instance(name, port, process, log)

    def replace(self, index: int, grace: float = 30.0) -> Instance:
        """Rolling upgrade of one instance: SIGTERM (it drains its calls to the others and
        exits), then a new instance on the same port under a new id."""
        old = self.instances[index]
        old.process.send_signal(signal.SIGTERM)
        try:
            old.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            old.process.kill()
            old.process.wait()
        self.generation += 1
        new = self.start_instance(f"{old.name.split('.')[0]}.{self.generation}", old.port)
        self.instances[index] = new
        return new


def _wait_for(process: subprocess.Popen[str], marker: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"ripp serve exited {process.returncode}; see {log}")
        time.sleep(0.05)
    raise RuntimeError(f"ripp serve did not report {marker!r} in {timeout} s; see {log}")


@contextlib.contextmanager
def local_cluster(
    directory: Path,
    workers: int,
    *,
    port: int = 0,
    store: str | None = None,
    serve_args: Sequence[str] = (),
) -> Iterator[LocalCluster]:
    """Redis (unless ``store`` names one), K instances and the forwarder on ``port``
    (0: any free one) for the ``with`` block; everything is stopped on the way out."""
    with contextlib.ExitStack() as stack:
        if store is None:
            redis = stack.enter_context(start_redis(directory))
            store = f"redis://127.0.0.1:{redis.port}"
        cluster = LocalCluster(
            directory=directory,
            redis_url=store,
            port=port or free_udp_port(),
            instances=[],
            serve_args=list(serve_args),
        )
        stack.callback(_stop_all, cluster)
        # One after the other: the first creates the local CA the others share.
        for index in range(workers):
            cluster.instances.append(cluster.start_instance(f"w{index + 1}", free_udp_port()))
        stack.enter_context(
            start_forwarder(directory, cluster.port, [i.port for i in cluster.instances])
        )
        yield cluster


def _stop_all(cluster: LocalCluster) -> None:
    for instance in cluster.instances:
        if instance.process.poll() is None:
            instance.process.send_signal(signal.SIGINT)
    for instance in cluster.instances:
        try:
            instance.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            instance.process.kill()
            instance.process.communicate(timeout=10)
