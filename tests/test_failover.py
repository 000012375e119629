"""Fail-over of real server processes sharing call state in a real Redis (issue 9, R10).

Three ``ripp serve --store redis://...`` processes and Debian's ``redis-server``; a client
(the Trio API, in this process) knows the three calls URIs as failover targets. A call is
placed on one instance and carries 20 ms frames both ways (the server echoes); that
instance is killed with SIGKILL mid-call. The client notices (no acks, protocol 15),
re-establishes on another instance, which claims the call in Redis (exactly one claim
wins: the others find the new owner alive), and the echo resumes. The media gap is
measured and bounded by detection + lease TTL + retries; the store holds the call once,
under its new owner, and the dead instance's record is gone.

Needs ``redis-server`` (see tests/test_cluster.py: skipped without it, failed under CI).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from ripp_cli import _certs
from ripp_cli._app import _resolve
from ripp_cli._passport import make_identity
from ripp_core import CallState, Codec, MediaFrame
from ripp_trio import open_client

from .test_cluster import need_redis

REPO = Path(__file__).resolve().parent.parent
# Short leases so the test is quick: a dead instance's calls are claimable 1.5 s after
# its last renewal at the latest.
# Fail-over is under test, not token or PASSporT checks (tests/test_auth*.py): the
# instances take any token (each its own principal, the same on every instance).
INSECURE = ["--insecure-accept-any-token", "--insecure-accept-any-identity"]
LEASE = ["--set", "store_lease_ttl=1.5", "--set", "store_renew_interval=0.4"]
SNAPSHOT = ["--set", "store_snapshot_interval=0.3"]
#: The documented bound on the media gap of a fail-over with these settings: detection
#: (1 s without acks), the lease (1.5 s), a re-establishment attempt every 0.5 s, a new
#: QUIC handshake; with a wide margin for a loaded 2-core machine.
GAP_BOUND = 6.0


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSLKEYLOGFILE", "RIPP_HOME")}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(RIPP_HOME=str(home), PYTHONPATH=path, PYTHONUNBUFFERED="1")
    return env


def _line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from ripp serve"
    line = process.stdout.readline()
    assert line, f"ripp serve exited {process.poll()}"
    return line


@contextlib.contextmanager
def instance(
    home: Path, redis_port: int, name: str
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``ripp serve`` as instance ``name`` of the cluster; yields (process, calls URI, CA)."""
    log = (home / f"{name}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ripp_cli", "serve", "--port", "0", "--instance-id", name,
         "--store", f"redis://127.0.0.1:{redis_port}", *LEASE, *SNAPSHOT, *INSECURE],
        cwd=REPO, env=_env(home), stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    try:
        banner = _line(process, 30)
        uri = next(word for word in banner.split() if word.startswith("https://"))
        ca = banner.split(" CA ")[-1].strip()
        assert "in store" in _line(process, 30)
        yield process, uri, ca
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=10)
        log.close()


async def _stored_owners(redis_port: int, names: tuple[str, ...]) -> dict[str, list[str]]:
    from ripp_cluster import RedisCallStore

    async with RedisCallStore(host="127.0.0.1", port=redis_port) as store:
        return {name: [r.call_id for r in await store.calls_of(name)] for name in names}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigkill_mid_call_resumes_on_another_instance(tmp_path: Path) -> None:
    need_redis()
    from ripp_cluster import start_redis

    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(start_redis(tmp_path))
        # One after the other: the first creates the local CA the others then share.
        servers = [
            stack.enter_context(instance(tmp_path, redis.port, f"inst-{n}")) for n in (1, 2, 3)
        ]
        ca = servers[0][2]
        uris = [uri for _, uri, _ in servers]
        result = trio.run(
            _call_through_a_kill,
            lambda uri: servers[0][0].send_signal(signal.SIGKILL),
            uris,
            ca,
            redis.port,
        )

    gap, before, after, old_uri, new_uri, owners = result
    print(f"fail-over: media gap {gap:.2f} s; echoes {before} before, {after} after")
    old_instance = urlsplit(old_uri).path.split("/")[3]
    new_instance = urlsplit(new_uri).path.split("/")[3]
    assert old_instance == "inst-1" and new_instance in ("inst-2", "inst-3")
    assert before > 20 and after > 20, (before, after)
    assert gap < GAP_BOUND, f"media gap {gap:.2f} s"
    # Exactly one record, under the new owner, for the call's new id; none left for the
    # dead instance (the claim moved it and the new owner forgot the old id).
    new_id = urlsplit(new_uri).path.rsplit("/", 1)[-1]
    assert owners["inst-1"] == []
    assert owners[new_instance] == [new_id]
    other = "inst-3" if new_instance == "inst-2" else "inst-2"
    assert owners[other] == []


async def _call_through_a_kill(
    kill: Callable[[str], None],
    uris: list[str],
    ca: str,
    redis_port: int,
    names: tuple[str, ...] = ("inst-1", "inst-2", "inst-3"),
) -> tuple[float, int, int, str, str, dict[str, list[str]]]:
    """Place a call, stream 9 s of 20 ms frames, ``kill`` the call's owner (given its call
    URI) 1.5 s in; return the largest gap between echoed frames, the echoes before and
    after the kill, the old and new call URIs and the store's records per instance."""
    config = _certs.client_configuration_from_ca(Path(ca), "localhost")
    arrivals: list[float] = []
    killed_at: list[float] = []
    to, from_ = "<tel:+12125551234>", "<tel:+14085551234>"
    async with open_client(config, calls_uris=uris, token="alice", resolver=_resolve) as client:
        call = await client.place_call(to=to, from_=from_, identity=make_identity(to, from_))
        with trio.fail_after(10):
            await call.wait_state(CallState.CONNECTED)
        old_uri = call.uri
        assert old_uri is not None

        async def collect() -> None:
            async for item in call.audio():
                if isinstance(item, MediaFrame):
                    arrivals.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            start = trio.current_time()
            tick = 0
            while trio.current_time() - start < 9.0:
                call.send_audio(Codec.PCMU, 0.02, bytes([0xFF]) * 160)
                tick += 1
                if tick == 75 and not killed_at:  # 1.5 s into the call
                    kill(old_uri)
                    killed_at.append(trio.current_time())
                await trio.sleep_until(start + tick * 0.02)
            assert call.state is CallState.CONNECTED
            new_uri = call.uri
            assert new_uri is not None
            # Give the new owner a snapshot period to settle its records, then read them.
            await trio.sleep(0.5)
            owners = await _stored_owners(redis_port, names)
            await call.terminate()
            nursery.cancel_scope.cancel()
    kill = killed_at[0]
    before = sum(1 for t in arrivals if t < kill)
    after = sum(1 for t in arrivals if t >= kill)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return max(gaps), before, after, old_uri, new_uri, owners


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("driver", ["trio", "asyncio"])
def test_sigkill_behind_the_forwarder(tmp_path: Path, driver: str) -> None:
    """The same through ``ripp cluster``'s parts: three instances (on either driver: the
    agent and the Redis client run on AnyIO) behind nginx ``stream``; the client knows
    only the cluster's calls URI, so its re-establishment goes through the forwarder,
    which must bring it to a live instance."""
    need_redis()
    need_forwarder()
    from ripp_cluster._local import local_cluster

    os.environ["RIPP_HOME"] = str(tmp_path)  # the instances' local CA, read back below
    try:
        serve_args = [*LEASE, *SNAPSHOT, *INSECURE, "--driver", driver]
        with local_cluster(tmp_path, 3, serve_args=serve_args) as cluster:
            by_name = {i.name: i for i in cluster.instances}

            def kill(uri: str) -> None:
                by_name[urlsplit(uri).path.split("/")[3]].process.send_signal(signal.SIGKILL)

            ca = str(tmp_path / "ca.pem") if (tmp_path / "ca.pem").exists() else _ca(tmp_path)
            port = int(cluster.redis_url.rsplit(":", 1)[1])
            result = trio.run(
                _call_through_a_kill, kill, [cluster.calls_uri], ca, port, tuple(by_name)
            )
    finally:
        del os.environ["RIPP_HOME"]
    gap, before, after, old_uri, new_uri, owners = result
    print(f"fail-over behind nginx: media gap {gap:.2f} s; echoes {before} / {after}")
    old, new = (urlsplit(u).path.split("/")[3] for u in (old_uri, new_uri))
    assert old != new
    assert before > 20 and after > 20, (before, after)
    assert gap < GAP_BOUND, f"media gap {gap:.2f} s"
    assert owners[old] == []
    assert owners[new] == [urlsplit(new_uri).path.rsplit("/", 1)[-1]]
    assert sum(len(ids) for ids in owners.values()) == 1


def _ca(home: Path) -> str:
    return str(_certs.ensure_local_pki().ca_cert_path)


def need_forwarder() -> None:
    """Skip without nginx's stream module, except under CI, where that is a failure."""
    from ripp_cluster._local import STREAM_MODULE

    if shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin") is None or (
        not STREAM_MODULE.exists()
    ):
        if os.environ.get("CI"):
            pytest.fail(
                "nginx with the stream module is not installed (Debian: nginx "
                "libnginx-mod-stream; scripts/test installs them when run as root)"
            )
        pytest.skip("nginx stream module not installed")


#: The exercise's bound on a killed call's media gap in this test: protocol 24.7's 5 s
#: for the default settings, doubled for a loaded 2-core machine.
EXERCISE_GAP_BOUND = 10.0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_cluster_exercise_survives_a_sigkill_and_a_rolling_upgrade(tmp_path: Path) -> None:
    """Issue 9's "done means", as its one command: ``ripp cluster --exercise`` (a real
    process) starts Redis, nginx ``stream`` and three authenticating instances, places
    four calls from two clients, SIGKILLs the instance holding the most calls, restarts
    it, replaces every instance in turn, and exits 0 only if every call was kept. The
    figures it prints are checked here too: the killed calls resumed elsewhere within the
    bound, the other calls lost nothing, the upgrade lost no frame either way and moved
    every call, and every call ended 200 by the caller's hang-up."""
    need_redis()
    need_forwarder()
    result = subprocess.run(
        [sys.executable, "-m", "ripp_cli", "cluster", "--workers", "3", "--calls", "4",
         "--clients", "2", "--exercise", "--resume-bound", str(EXERCISE_GAP_BOUND),
         "--json", "--dir", str(tmp_path / "cluster")],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=140,
    )  # fmt: skip
    print(result.stdout)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[-1])
    assert result.returncode == 0 and report["ok"], (report, result.stderr[-3000:])
    assert report["ended"] == ["200 Normal"] * 4
    kill = report["kill"]
    killed = [row for row in kill["calls"] if row["killed"]]
    assert killed, kill  # the victim held calls
    for row in killed:
        assert row["resumed"], row
        before, after = row["path"].split("->")[:2]
        assert before == kill["victim"] and after != kill["victim"], row
        assert row["gap_ms"] < EXERCISE_GAP_BOUND * 1000, row
    for row in kill["calls"]:
        if not row["killed"]:
            assert row["gap_frames"] == 0, row  # a bystander loses nothing
    upgrade = report["upgrade"]
    assert upgrade["instances_replaced"] == 3
    assert upgrade["moves"] >= 4, upgrade  # every call moved at least once
    assert upgrade["lost_client_to_server"] == 0, upgrade
    assert upgrade["lost_server_to_client"] == 0, upgrade
    assert upgrade["added_delay_ms"] < 2000, upgrade
