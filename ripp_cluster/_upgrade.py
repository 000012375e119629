"""The cluster exercise (issue 9): calls run through a local cluster while one instance is
killed with SIGKILL (its calls must resume on the others, protocol 15.3 and 24.4), and
then every instance is replaced in turn (SIGTERM: it drains its calls to the others
through the store, exits, and a new instance takes its port; protocol 24.6).

Every frame the exercise sends carries its own number (the first four payload bytes) and
the instances echo each frame as it arrives, so the exercise knows which frames made the
round trip. Per phase it reports:

* the **kill** (``kill`` in the report): for each call, the media gap (the longest
  interval without an echo) and the frames sent from the kill until the victim's restart
  that never came back. For the calls of the killed instance they are *the gap*, not
  loss (the client has nowhere to send until the call resumes, and buffers up to
  ``migration_buffer``); calls of the other instances ("bystanders") must lose none;
* the **rolling upgrade** (``upgrade``): frames lost server -> client (holes in the
  sequence numbers the client received) and client -> server (frames no instance ever
  acknowledged, less those the client's sender gave up during the kill); both must be 0,
  since a hand-over carries every unacknowledged frame (protocol 14.2); the number of
  moves and the largest added delay (the longest interval between two arrivals, minus
  the frame interval). Client -> server is counted from acknowledgements, not echoes:
  the frames a client sent before it saw ``move`` go to the old instance's application
  (protocol 14.2), which can no longer echo them.

The calls are spread over ``clients`` client endpoints (each its own UDP socket, so the
forwarder's hash can place them on different instances); the victim is the instance
holding the most calls.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import trio

from ripp_cli import _certs
from ripp_cli._app import _resolve
from ripp_cli.local import local_caller
from ripp_core import CallState, Codec, MediaFrame, RippConfig
from ripp_core.aio import Call
from ripp_trio import open_client

from ._local import LocalCluster

#: The frame interval of the exercise's audio.
FRAME = 0.02
#: The exercise measures loss apart from lateness, at both ends: frames as they arrive
#: (a jitter buffer would skip late ones), and no frame given up as too late to send (a
#: real-time sender drops a frame queued for ``send_queue_max_delay``, 0.2 s, which a
#: stall of a loaded machine's process causes). So a missing frame means one the
#: cluster lost, and lateness shows as added delay. What the instances run with:
INSTANCE_ARGS = ("--set=jitter_buffer=false", "--set=send_queue_max_delay=5.0")
#: ... and the exercise's clients.
CLIENT_CONFIG = RippConfig(jitter_buffer=False, send_queue_max_delay=5.0)


#: What :func:`resume_bound` allows beyond the timers: the client's new handshakes
#: (through the forwarder, which may first send one to the dead instance: protocol
#: 24.7), the claim in the store and the requests that re-attach the call, on a loaded
#: machine.
HANDSHAKE_ALLOWANCE = 1.5


def resume_bound(config: RippConfig) -> float:
    """The bound on the media gap of a killed instance's calls (protocol 24.7): the
    owner's lease outlives it by at most ``store_lease_ttl``; the client has noticed
    the failure by then (``media_timeout`` is shorter) and retries every
    ``reestablish_attempt_interval`` while refused, so its first attempt after the lease
    lapsed comes at most one interval later; then :data:`HANDSHAKE_ALLOWANCE`."""
    detection_or_lease = max(config.media_timeout, config.store_lease_ttl)
    return detection_or_lease + config.reestablish_attempt_interval + HANDSHAKE_ALLOWANCE


@attrs.define
class _Track:
    """What the exercise records of one call."""

    call: Call
    sent_at: list[float] = attrs.Factory(list)
    """Send time of each frame, by frame number."""
    echoes: list[tuple[float, int, int]] = attrs.Factory(list)
    """(arrival time, server's sequence number, frame number) of each echo."""
    instances: list[tuple[float, str]] = attrs.Factory(list)
    """(since when, instance) for each instance the call was on, in order."""

    def instance(self) -> str:
        """The instance the call is on now."""
        return _instance_of(self.call.uri or "")

    def note_instance(self, now: float) -> None:
        """Record a change of instance."""
        name = self.instance()
        if name and (not self.instances or self.instances[-1][1] != name):
            self.instances.append((now, name))

    def path(self) -> str:
        """The instances the call was on, as ``w1->w2->...``."""
        return "->".join(name for _, name in self.instances)


def _instance_of(uri: str) -> str:
    parts = uri.split("/")
    return parts[-3] if len(parts) >= 3 and parts[-2] == "calls" else ""


async def cluster_exercise(
    cluster: LocalCluster,
    ca: Path,
    *,
    calls: int = 4,
    clients: int = 2,
    kill: bool = True,
    upgrade: bool = True,
    settle: float = 1.0,
    token: str | None = None,
    bound: float | None = None,
) -> dict[str, Any]:
    """Run ``calls`` echoed calls from ``clients`` clients through the cluster; SIGKILL
    the instance holding the most calls (``kill``), wait for its calls to resume and
    restart it; then replace every instance in turn (``upgrade``); end the calls and
    return the figures and a verdict (``ok``). ``bound``: the longest media gap a killed
    call may have (default :func:`resume_bound` of the default settings). ``token``:
    the bearer token (default: one of the local issuer, whose STI certificate also signs
    the PASSporTs, so that an authenticating cluster takes the calls)."""
    if calls < 1 or clients < 1:
        raise ValueError("calls and clients must be at least 1")
    limit = resume_bound(RippConfig()) if bound is None else bound
    with local_caller() as caller:
        return await _exercise(
            cluster, ca, calls, min(clients, calls), kill, upgrade, settle,
            token or caller.token, caller.identity, limit,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def _clients(
    cluster: LocalCluster, ca: Path, count: int, token: str
) -> AsyncIterator[list[Any]]:
    config = _certs.client_configuration_from_ca(ca, "localhost")
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(
                open_client(
                    config,
                    calls_uris=[cluster.calls_uri],
                    token=token,
                    resolver=_resolve,
                    config=CLIENT_CONFIG,
                )
            )
            for _ in range(count)
        ]
        yield opened


async def _exercise(
    cluster: LocalCluster,
    ca: Path,
    calls: int,
    clients: int,
    kill: bool,
    upgrade: bool,
    settle: float,
    token: str,
    identity: Any,
    bound: float,
) -> dict[str, Any]:
    to, from_ = "<tel:+12125551234>", "<tel:+14085551234>"
    marks: dict[str, float] = {}
    report: dict[str, Any] = {"calls": calls, "clients": clients}
    async with _clients(cluster, ca, clients, token) as endpoints:
        tracks = [
            _Track(
                await endpoints[index % clients].place_call(
                    to=to, from_=from_, identity=identity(to, from_)
                )
            )
            for index in range(calls)
        ]
        with trio.fail_after(15):
            for track in tracks:
                await track.call.wait_state(CallState.CONNECTED)
                track.note_instance(trio.current_time())

        async def collect(track: _Track) -> None:
            async for item in track.call.audio():
                if isinstance(item, MediaFrame):
                    number = int.from_bytes(item.payload[:4], "big")
                    now = trio.current_time()
                    track.echoes.append((now, item.sequence, number))
                    track.note_instance(now)

        async def stream(done: trio.Event) -> None:
            start = trio.current_time()
            for tick in itertools.count(1):
                for track in tracks:
                    if track.call.ended is None:
                        frame = len(track.sent_at)
                        track.call.send_audio(
                            Codec.PCMU, FRAME, frame.to_bytes(4, "big") + bytes(156)
                        )
                        track.sent_at.append(trio.current_time())
                if done.is_set():
                    return
                await trio.sleep_until(start + tick * FRAME)

        finished = trio.Event()
        async with trio.open_nursery() as nursery:
            for track in tracks:
                nursery.start_soon(collect, track)
            nursery.start_soon(stream, finished)
            await trio.sleep(settle)
            if kill:
                report["kill"] = await _kill_phase(cluster, tracks, marks, settle, bound)
            marks["upgrade"] = trio.current_time()
            # Frames our sender gave up while a killed call had nowhere to send them
            # (beyond the migration buffer): the gap, not loss.
            gap_dropped = sum(t.call.stats().sender.frames_dropped for t in tracks)
            if upgrade:
                for index in range(len(cluster.instances)):
                    # Blocking process management: run it beside the event loop.
                    await trio.to_thread.run_sync(cluster.replace, index)
                    await trio.sleep(settle)
            marks["stop"] = trio.current_time()
            finished.set()
            await trio.sleep(settle)  # let the last echoes and acknowledgements come in
            # Every frame acknowledged by some instance reached a server application
            # (protocol 14.2: the old instance's for frames sent before the client saw
            # move, though its echo can no longer be sent); the rest are lost.
            unacked = sum(len(t.sent_at) - t.call.stats().sender.frames_acked for t in tracks)
            ended = []
            for track in tracks:
                outcome = await track.call.terminate()
                ended.append(f"{outcome.code} {outcome.reason}")
            nursery.cancel_scope.cancel()
    report["ended"] = ended
    if kill:
        report["kill"]["dropped_by_client_sender"] = gap_dropped
    report["upgrade"] = _upgrade_figures(cluster, tracks, marks) if upgrade else None
    if upgrade:
        report["upgrade"]["lost_client_to_server"] = unacked - gap_dropped
    report["ok"] = _verdict(report)
    return report


async def _kill_phase(
    cluster: LocalCluster,
    tracks: list[_Track],
    marks: dict[str, float],
    settle: float,
    bound: float,
) -> dict[str, Any]:
    """SIGKILL the instance holding the most calls, wait (bounded) until each of its calls
    has echoes again from another instance, restart it on its port; the figures."""
    holding = [track.instance() for track in tracks]
    victim_name = max(dict.fromkeys(holding), key=holding.count)
    victim = next(i for i in cluster.instances if i.name == victim_name)
    killed = [t for t in tracks if t.instance() == victim_name]
    victim.process.send_signal(signal.SIGKILL)
    marks["kill"] = trio.current_time()
    await trio.to_thread.run_sync(victim.process.wait)

    def resumed(track: _Track) -> bool:
        if track.call.ended is not None:
            return True  # it will not resume: the figures say so
        last = track.echoes[-1][0] if track.echoes else 0.0
        return last > marks["kill"] and track.instances[-1][1] != victim_name

    # Wait past the bound (so that a late resumption shows as a figure over it, not as a
    # timeout) and up to the client's own give-up time.
    with trio.move_on_after(RippConfig().reestablish_timeout + 2 * settle):
        while not all(resumed(t) for t in killed):
            await trio.sleep(0.05)
    marks["resumed"] = trio.current_time()
    await trio.sleep(settle)
    # The orchestrator's part: the dead instance comes back (a new id, the same port).
    await trio.to_thread.run_sync(lambda: cluster.replace(cluster.instances.index(victim)))
    await trio.sleep(settle)
    window = (marks["kill"], trio.current_time())
    rows = []
    for index, track in enumerate(tracks):
        gap, missing = _gap(track, marks["kill"], window[1])
        rows.append(
            {
                "call": index + 1,
                "killed": track in killed,
                "path": track.path(),
                "gap_ms": round(gap * 1000),
                "gap_frames": missing,
                "resumed": track.call.ended is None and track.instance() != victim_name,
            }
        )
    return {"victim": victim_name, "bound_ms": round(bound * 1000), "calls": rows}


def _gap(track: _Track, since: float, until: float) -> tuple[float, int]:
    """The longest interval without an echo around ``since``..``until`` and the frames
    sent in that window that never came back."""
    before = [t for t, _, _ in track.echoes if t <= since][-1:]
    times = before + [t for t, _, _ in track.echoes if since < t <= until]
    if len(times) < 2:
        gap = until - (times[0] if times else since)
    else:
        gap = max(b - a for a, b in itertools.pairwise(times))
    echoed = {number for _, _, number in track.echoes}
    sent = [n for n, t in enumerate(track.sent_at) if since <= t < until - 2 * FRAME]
    return gap, sum(1 for n in sent if n not in echoed)


def _upgrade_figures(
    cluster: LocalCluster, tracks: list[_Track], marks: dict[str, float]
) -> dict[str, Any]:
    """Frames lost either way, moves and the largest added delay of the upgrade phase."""
    start, stop = marks["upgrade"], marks["stop"]
    s2c_holes = moves = 0
    max_gap = 0.0
    for track in tracks:
        rows = [(t, seq, n) for t, seq, n in track.echoes if t >= start]
        sequences = sorted({seq for _, seq, _ in rows})
        holes = sequences[-1] - sequences[0] + 1 - len(sequences) if sequences else 0
        s2c_holes += holes
        times = [t for t, _, _ in rows]
        max_gap = max([max_gap, *(b - a for a, b in itertools.pairwise(times))])
        moves += sum(1 for since, _ in track.instances[1:] if since >= start)
    return {
        "instances_replaced": len(cluster.instances),
        "moves": moves,
        "frames_sent": sum(1 for t in tracks for s in t.sent_at if start <= s <= stop),
        "lost_client_to_server": 0,  # set by the caller, from the acknowledgements
        "lost_server_to_client": s2c_holes,
        "max_gap_ms": round(max_gap * 1000, 1),
        "added_delay_ms": round(max(0.0, max_gap - FRAME) * 1000, 1),
    }


def _verdict(report: dict[str, Any]) -> bool:
    """Every call kept: all ended 200 by our hang-up, every killed call resumed within
    the bound, no bystander frame missing, no frame lost in the upgrade."""
    if any(not line.startswith("200 ") for line in report["ended"]):
        return False
    kill = report.get("kill")
    if kill is not None:
        for row in kill["calls"]:
            if row["killed"] and not (row["resumed"] and row["gap_ms"] <= kill["bound_ms"]):
                return False
            if not row["killed"] and row["gap_frames"]:
                return False
    upgrade = report.get("upgrade")
    return upgrade is None or not (
        upgrade["lost_client_to_server"] or upgrade["lost_server_to_client"]
    )
