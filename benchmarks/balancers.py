"""RIPP over HTTP/2 through real load balancers, against the same calls made directly.

    python -m benchmarks.balancers            # every installed balancer, markdown table
    python -m benchmarks.balancers --frames 100

Two ``ripp serve`` instances ("a", "b") serve h2c on free loopback ports; each balancer
(HAProxy, nginx, Caddy: whichever is installed) is started in front of them with the
configuration of docs/deployment.md (h2c on both legs), and a Trio HTTP/2 client places
calls through it. Each call sends 20 ms PCMU frames; the server echoes each one. A
frame's round trip is its echo's arrival minus its sending; the balancer's CPU is its
process's user+system time (/proc) over the calls, per frame relayed (each echoed frame
crosses it twice). The tests in tests/test_balancers.py use the same helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import trio

import ripp_trio
from ripp_core import CallState, Codec, MediaFrame, RippConfig

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"
RIPP = [sys.executable, "-m", "ripp_cli"]
Ports = dict[str, int]


def find_program(name: str) -> str | None:
    """The path of a balancer's executable (Debian puts them in /usr/sbin), or None."""
    found = shutil.which(name)
    if found is not None:
        return found
    return next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """Wait until something accepts on ``port``; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited early: {process.args} {process.communicate()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(process: subprocess.Popen[str]) -> None:
    """Terminate (then kill) one child process and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def ripp_instances(home: Path) -> Iterator[Ports]:
    """Two ``ripp serve`` instances "a" and "b" serving h2c; yields their TCP ports."""
    env = {**os.environ, "RIPP_HOME": str(home)}
    processes: list[subprocess.Popen[str]] = []
    ports: Ports = {}
    try:
        for name in ("a", "b"):
            command = [*RIPP, "serve", "--port", "0", "--instance-id", name]
            command += ["--set", "jitter_buffer=false"]  # echo frames as they arrive
            # Routing through the balancer is under test here, not token or PASSporT
            # checks (tests/test_auth*.py): any token, any well-formed Identity.
            command += ["--insecure-accept-any-token", "--insecure-accept-any-identity"]
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
                if "HTTP/2 h2c on " in line:
                    ports[name] = int(line.rsplit(":", 1)[1])
                    break
            else:
                raise RuntimeError(f"ripp serve said no HTTP/2 port: {process.communicate()}")
        yield ports
    finally:
        for process in processes:
            stop(process)


# ---------------------------------------------------------------- configurations
def haproxy(program: str, tmp: Path, front: int, ports: Ports) -> list[str]:
    """HAProxy: h2c front, h2c to the backends (``proto h2``), routing by path."""
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
    return [program, "-db", "-f", str(config)]


def nginx(program: str, tmp: Path, front: int, ports: Ports) -> list[str]:
    """nginx: h2c front, ``grpc_pass`` (HTTP/2, unbuffered) to the backends."""
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
    http2_recv_timeout 1h;
    http2_idle_timeout 1h;
    # Call URIs carry the authority the client used; grpc_pass would send the upstream's.
    grpc_set_header Host $http_host;
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
    return [program, "-c", str(config), "-p", str(tmp)]


def caddy(program: str, tmp: Path, front: int, ports: Ports) -> list[str]:
    """Caddy: h2c front, ``reverse_proxy h2c://`` with immediate flushing."""
    a, b = f"h2c://127.0.0.1:{ports['a']}", f"h2c://127.0.0.1:{ports['b']}"
    config = tmp / "Caddyfile"
    config.write_text(
        f"""{{
    admin off
    auto_https off
    servers {{
        protocols h1 h2c
    }}
}}
http://127.0.0.1:{front} {{
    handle /ripp/instances/a/* {{
        reverse_proxy {a} {{
            flush_interval -1
        }}
    }}
    handle /ripp/instances/b/* {{
        reverse_proxy {b} {{
            flush_interval -1
        }}
    }}
    handle /ripp/calls {{
        reverse_proxy {a} {b} {{
            lb_policy round_robin
            flush_interval -1
        }}
    }}
}}
""",
        encoding="utf-8",
    )
    # Caddy keeps state under XDG directories: keep them in the scratch directory.
    state = [f"XDG_DATA_HOME={tmp}", f"XDG_CONFIG_HOME={tmp}"]
    return ["env", *state, program, "run", "--config", str(config), "--adapter", "caddyfile"]


BALANCERS: dict[str, Callable[[str, Path, int, Ports], list[str]]] = {
    "caddy": caddy,
    "haproxy": haproxy,
    "nginx": nginx,
}


# ---------------------------------------------------------------- measurement
async def calls_through(port: int, calls: int, frames: int) -> tuple[list[str], list[float]]:
    """Place ``calls`` calls via ``127.0.0.1:port`` (h2c), one after another; in each,
    send ``frames`` 20 ms frames and time each one's echo. Returns the call URIs and the
    round trips (seconds)."""
    from ripp_cli._passport import make_identity

    uris: list[str] = []
    rtts: list[float] = []
    async with ripp_trio.open_h2_client(
        calls_uris=[f"https://127.0.0.1:{port}/ripp/calls"],
        token="t",
        # Frames as they arrive, not at playout time: the figure is the path's.
        config=RippConfig(jitter_buffer=False),
    ) as client:
        for _ in range(calls):
            call = await client.place_call(to=TO, from_=FROM, identity=make_identity(TO, FROM))
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


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process so far (Linux /proc), else NaN."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` (ms)."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(name: str, program: str, ports: Ports, calls: int, frames: int) -> dict[str, float]:
    """Round trips and the balancer's CPU per relayed frame, through ``name``."""
    with tempfile.TemporaryDirectory(prefix=f"ripp-{name}-") as tmp:
        front = free_port()
        process = subprocess.Popen(
            BALANCERS[name](program, Path(tmp), front, ports),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            wait_port(front, process)
            cpu = process_cpu_seconds(process.pid)
            _, rtts = trio.run(calls_through, front, calls, frames)
            cpu = process_cpu_seconds(process.pid) - cpu
        finally:
            stop(process)
    return {
        "p50": statistics.median(rtts) * 1000,
        "p90": percentile(rtts, 0.9),
        "p99": percentile(rtts, 0.99),
        "cpu_us_per_frame": 1e6 * cpu / (2 * len(rtts)),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every installed balancer against direct calls; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--frames", type=int, default=250)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    began = datetime.now(UTC)
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as home, ripp_instances(Path(home)) as ports:
        _, direct = trio.run(calls_through, ports["a"], args.calls, args.frames)
        base = {
            "p50": statistics.median(direct) * 1000,
            "p90": percentile(direct, 0.9),
            "p99": percentile(direct, 0.99),
            "cpu_us_per_frame": 0.0,
        }
        rows.append(("direct (h2c)", base))
        for name in sorted(BALANCERS):
            program = find_program(name)
            if program is None:
                print(f"{name}: not installed, skipped", file=sys.stderr)
                continue
            rows.append((name, measure(name, program, ports, args.calls, args.frames)))
    print(
        f"{args.calls} calls x {args.frames} frames, {began:%Y-%m-%d %H:%M} UTC, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print("| path | RTT p50 ms | p90 ms | p99 ms | added p50 ms | balancer CPU µs/frame |")
    print("|---|---|---|---|---|---|")
    for name, row in rows:
        print(
            f"| {name} | {row['p50']:.2f} | {row['p90']:.2f} | {row['p99']:.2f} | "
            f"{row['p50'] - base['p50']:.2f} | {row['cpu_us_per_frame']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
