"""RIPP through real L7 load balancers from Debian (issue 8, R17): HAProxy and nginx in
front of two ``ripp serve`` instances over HTTP/2 (h2c on both legs), on loopback.

Creation requests spread over the instances; every later request of a call reaches its
owner by path (per-instance call URIs, protocol 3.3: a misrouted signaling or media
request would get 404 and the call would never connect); media flows both ways; the
per-frame round trip is measured through each balancer and directly.

``scripts/test`` installs haproxy and nginx when run as root; elsewhere a missing program
skips its test, except under CI (env ``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

import ripp_trio
from ripp_core import CallState, Codec, MediaFrame, RippConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"
RIPP = [sys.executable, "-m", "ripp_cli"]


def _need(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if os.path.exists(p)), None
    )
    if path is None:
        message = f"{program} is not installed (Debian package {program})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.args} {process.communicate()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """Two ``ripp serve`` instances, "a" and "b", each serving h2c on a free TCP port."""
    home = tmp_path_factory.mktemp("ripp-home")
    env = {**os.environ, "RIPP_HOME": str(home)}
    processes: list[subprocess.Popen[str]] = []
    ports: dict[str, int] = {}
    try:
        for name in ("a", "b"):
            command = [*RIPP, "serve", "--port", "0", "--instance-id", name]
            command += ["--set", "jitter_buffer=false"]  # echo frames as they arrive
            process = subprocess.Popen(
                [*command, "--http2-port", "0", "--http2-cleartext"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            processes.append(process)
            assert process.stdout is not None
            for line in process.stdout:
                match = re.search(r"HTTP/2 h2c on [\d.]+:(\d+)", line)
                if match:
                    ports[name] = int(match.group(1))
                    break
            else:
                raise AssertionError(f"ripp serve said no HTTP/2 port: {process.communicate()}")
        yield ports
    finally:
        for process in processes:
            _stop(process)


def _haproxy(tmp: Path, front: int, ports: dict[str, int]) -> list[str]:
    config = tmp / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend ripp
    bind 127.0.0.1:{front} proto h2
    use_backend instance_a if {{ path_beg /ripp/instances/a/ }}
    use_backend instance_b if {{ path_beg /ripp/instances/b/ }}
    default_backend pool
backend pool
    balance roundrobin
    server a 127.0.0.1:{ports["a"]} proto h2
    server b 127.0.0.1:{ports["b"]} proto h2
backend instance_a
    server a 127.0.0.1:{ports["a"]} proto h2
backend instance_b
    server b 127.0.0.1:{ports["b"]} proto h2
""",
        encoding="utf-8",
    )
    return [_need("haproxy"), "-db", "-f", str(config)]


def _nginx(tmp: Path, front: int, ports: dict[str, int]) -> list[str]:
    config = tmp / "nginx.conf"
    config.write_text(
        f"""worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 0;
    client_body_timeout 1h;
    grpc_read_timeout 1h;
    grpc_send_timeout 1h;
    # Call URIs carry the authority the client used; grpc_pass would send the upstream's.
    grpc_set_header Host $http_host;
    http2_recv_timeout 1h;
    http2_idle_timeout 1h;
    upstream pool {{ server 127.0.0.1:{ports["a"]}; server 127.0.0.1:{ports["b"]}; }}
    server {{
        listen 127.0.0.1:{front} http2;
        location /ripp/instances/a/ {{ grpc_pass grpc://127.0.0.1:{ports["a"]}; }}
        location /ripp/instances/b/ {{ grpc_pass grpc://127.0.0.1:{ports["b"]}; }}
        location = /ripp/calls {{ grpc_pass grpc://pool; }}
    }}
}}
""",
        encoding="utf-8",
    )
    return [_need("nginx"), "-c", str(config), "-p", str(tmp)]


BALANCERS: dict[str, Callable[[Path, int, dict[str, int]], list[str]]] = {
    "haproxy": _haproxy,
    "nginx": _nginx,
}


async def _calls_through(port: int, calls: int, frames: int) -> tuple[list[str], list[float]]:
    """Place ``calls`` calls via ``127.0.0.1:port`` (h2c); in each, send ``frames`` 20 ms
    frames and time each one's echo. Returns the call URIs and the round trips (s)."""
    uris: list[str] = []
    rtts: list[float] = []
    async with ripp_trio.open_h2_client(
        calls_uris=[f"https://127.0.0.1:{port}/ripp/calls"],
        token="t",
        # Frames as they arrive, not at playout time: the figure is the path's.
        config=RippConfig(jitter_buffer=False),
    ) as client:
        for _ in range(calls):
            call = await client.place_call(to=TO, from_=FROM, identity=_identity())
            with trio.fail_after(10):
                await call.wait_state(CallState.CONNECTED)
            assert call.uri is not None
            uris.append(call.uri)
            sent: dict[bytes, float] = {}
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_collect_echoes, call, sent, rtts, frames, done)
                for n in range(frames):
                    payload = n.to_bytes(2, "big") * 80
                    sent[payload] = trio.current_time()
                    call.send_audio(Codec.PCMU, 0.02, payload)
                    await trio.sleep(0.02)
                with trio.fail_after(10):
                    await done.wait()
                nursery.cancel_scope.cancel()
            await call.terminate()
    return uris, rtts


async def _collect_echoes(
    call: ripp_trio.Call,
    sent: dict[bytes, float],
    rtts: list[float],
    frames: int,
    done: trio.Event,
) -> None:
    echoed = 0
    async for item in call.audio():
        if isinstance(item, MediaFrame) and item.payload in sent:
            rtts.append(trio.current_time() - sent.pop(item.payload))
            echoed += 1
            if echoed == frames:
                done.set()
                return


def _identity() -> str:
    from ripp_cli._passport import make_identity

    return make_identity(TO, FROM)


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
def test_calls_through_a_real_load_balancer(
    balancer: str, instances: dict[str, int], tmp_path: Path
) -> None:
    front = _free_port()
    process = subprocess.Popen(
        BALANCERS[balancer](tmp_path, front, instances),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_port(front, process)
        uris, rtts = trio.run(_calls_through, front, 4, 50)
        _, direct = trio.run(_calls_through, instances["a"], 1, 50)
    finally:
        _stop(process)
    # Creation spread over both instances (round robin), and each call's URI names its
    # owner; the calls connected and echoed media, so every later request reached it.
    owners = {uri.split("/ripp/instances/", 1)[1].split("/", 1)[0] for uri in uris}
    assert owners == {"a", "b"}, uris
    assert all(uri.startswith(f"https://127.0.0.1:{front}/") for uri in uris)
    assert len(rtts) == 4 * 50 and len(direct) == 50
    added = _median_ms(rtts) - _median_ms(direct)
    print(
        f"\n{balancer}: frame round trip p50 {_median_ms(rtts):.2f} ms through it, "
        f"{_median_ms(direct):.2f} ms direct: {added:.2f} ms added per round trip "
        f"(two balancer passes)"
    )
    # Generous: a loaded machine; the balancers measured here add about 1 ms.
    assert added < 50.0
