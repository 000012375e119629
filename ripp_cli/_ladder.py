"""``ripp ladder``: a call's signaling and a media summary as a sequence diagram.

Input is a recorded call log: the JSON lines that ``--log-json`` writes (the
``ripp.events`` records of either side or both, in any order), or a qlog file of aioquic's
(its HTTP/3 HEADERS frames become the arrows, DATA frames the media summary). Output is a
text diagram for the terminal and, with ``--svg``, an SVG drawing of the same.

Reading and laying out (:func:`ladder_from_events`, :func:`ladder_from_qlog`) are pure;
the drawing functions return strings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Ladder", "Step", "add_arguments", "ladder_from_events", "ladder_from_qlog", "run"]


@attrs.frozen
class Step:
    """One row: an arrow from ``source`` to ``target`` (the same: a note) at time ``t``."""

    t: float
    source: str
    target: str
    label: str


@attrs.define
class Ladder:
    """Participants left to right, the rows in time order, and closing notes."""

    participants: list[str]
    steps: list[Step]
    notes: list[str] = attrs.Factory(list)
    title: str = ""


# ------------------------------------------------------------------ from call events
def _instance(uri: str | None) -> str:
    """The server instance a call URI names (``.../instances/<id>/calls/...``)."""
    if uri and "/instances/" in uri:
        return "server " + uri.split("/instances/", 1)[1].split("/", 1)[0]
    return "server"


def _group(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split records into calls: one side's handle, and every URI it had, are one call."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    keys = []
    for record in records:
        key = f"h:{record['side']}:{record.get('handle')}"
        for field in ("call", "uri", "previous_uri"):
            if record.get(field) and (field == "call" or record["event"] == "CallAttached"):
                union(key, f"u:{record[field]}")
        if record["event"] == "CallMigrating" and record.get("uri"):
            union(key, f"u:{record['uri']}")
        keys.append(key)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, record in zip(keys, records, strict=True):
        groups[find(key)].append(record)
    return sorted(groups.values(), key=lambda g: min(r["t"] for r in g))


def ladder_from_events(records: Iterable[dict[str, Any]], call: str | None = None) -> Ladder:
    """Lay out one call from ``ripp.events`` records: the call whose URI is ``call`` (or
    that once had it), else the first call in the log."""
    events = [r for r in records if r.get("logger", "ripp.events") == "ripp.events"]
    events = [r for r in events if r.get("handle") is not None and "t" in r]
    if not events:
        raise ValueError("no call events in the log (was it written with --log-json?)")
    groups = _group(sorted(events, key=lambda r: r["t"]))
    chosen = groups[0]
    if call is not None:
        matching = [g for g in groups if any(call in (r.get("call"), r.get("uri")) for r in g)]
        if not matching:
            raise ValueError(f"no call {call} in the log")
        chosen = matching[0]
    return _layout(chosen)


def _layout(records: list[dict[str, Any]]) -> Ladder:
    participants = ["client"]
    steps: list[Step] = []
    notes: list[str] = []
    seen: set[tuple[str, ...]] = set()
    server = "server"
    uri = None

    def at(name: str) -> str:
        if name not in participants:
            participants.append(name)
        return name

    def once(key: tuple[str, ...]) -> bool:
        if key in seen:
            return False
        seen.add(key)
        return True

    def where(record: dict[str, Any]) -> str:
        return "client" if record["side"] == "client" else at(_instance(record.get("call")))

    for r in records:
        kind, t, side = r["event"], r["t"], r["side"]
        here = where(r)
        if r.get("call"):
            uri = uri or r["call"]
            if side != "client":
                server = here
        if kind == "CallIncoming" and once(("create", r["call"])):
            label = "POST calls URI (To, From, Identity)"
            if r.get("reestablishes"):
                label = "POST calls URI, re-establishing the call"
            steps.append(Step(t, "client", at(_instance(r["call"])), label))
            steps.append(Step(t, at(_instance(r["call"])), "client", "201 Created"))
        elif kind == "CallCreated" and once(("create", r["call"])):
            steps.append(Step(t, "client", at(_instance(r["call"])), "POST calls URI"))
            steps.append(Step(t, at(_instance(r["call"])), "client", "201 Created"))
        elif kind == "CallStateChanged":
            state = r["state"]
            target = at(_instance(r.get("call"))) if side == "client" else here
            if state == "pending" and once(("pending", target)):
                steps.append(Step(t, "client", target, "signaling request (long-lived)"))
            elif state in ("ringing", "connected") and once((state,)):
                word = {"ringing": "Ringing", "connected": "Answer"}[state]
                steps.append(Step(t, target, "client", word))
        elif kind == "CallMigrating":
            moving = r["phase"] in ("moving", "moved-away") and r.get("uri")
            if moving and once(("move",)):
                # Sent by the server (its record), or seen arriving at the client.
                mover = here if side != "client" else at(_instance(r.get("call")))
                steps.append(Step(t, mover, "client", f"Move -> {_instance(r['uri'])}"))
            elif r["phase"] in ("reestablishing", "detached") and once((r["phase"], side)):
                steps.append(Step(t, here, here, f"{r['phase']}: {r['reason']}"))
        elif kind == "CallAttached" and r.get("migrated") and side == "client":
            target = at(_instance(r["uri"]))
            if once(("attach", r["uri"])):
                steps.append(Step(t, "client", target, "signaling + media to the new call URI"))
                server = target
        elif kind == "DtmfReceived":
            other = server if side == "client" else "client"
            steps.append(Step(t, other, here, f"DTMF {r['digit']}"))
        elif kind == "CallTerminated":
            code = f"{r['code']} {r['reason']}"
            if r["by"] == "local" and once(("end",)):
                peer = server if side == "client" else "client"
                steps.append(Step(t, here, peer, f"Terminate {code}"))
            elif r["by"] == "failure":
                steps.append(Step(t, here, here, f"failed: {code}"))
            media = r.get("media")
            if media:
                notes.append(
                    f"{here} received {media['received']} frames (lost {media['lost']}, late "
                    f"{media['late']}, jitter {media['jitter_ms']} ms); sent {media['sent']}, "
                    f"acked {media['acked']}, resent {media['resent']}, rtt {media['rtt_ms']} ms, "
                    f"streams {media['streams_max']}"
                )
        elif kind == "ProtocolViolation":
            steps.append(Step(t, here, here, f"violation: {r['error']}"))
    # Put the client first, then the servers in order of appearance (already so).
    return Ladder(participants, steps, notes, title=f"call {uri or '?'}")


# ------------------------------------------------------------------ from qlog
def ladder_from_qlog(document: dict[str, Any]) -> Ladder:
    """Lay out the HTTP/3 requests of one qlog file: HEADERS as arrows, DATA per stream
    summed into notes. The file's vantage point is one side; the other is the peer."""
    trace = (document.get("traces") or [document])[0]
    vantage = (trace.get("vantage_point") or {}).get("type", "client")
    here, peer = ("client", "server") if vantage == "client" else ("server", "client")
    steps: list[Step] = []
    data: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for event in trace.get("events", []):
        name = event.get("name", "")
        frame = (event.get("data") or {}).get("frame") or {}
        stream = (event.get("data") or {}).get("stream_id")
        if not name.startswith("http:frame_") or stream is None:
            continue
        sent = name == "http:frame_created"
        src, dst = (here, peer) if sent else (peer, here)
        t = float(event.get("time", 0)) / 1000  # qlog time is in ms
        if frame.get("frame_type") == "headers":
            fields = {h.get("name"): h.get("value") for h in frame.get("headers", [])}
            if ":method" in fields:
                label = f"{fields[':method']} {fields.get(':path', '')} (stream {stream})"
            else:
                label = f"{fields.get(':status', 'headers')} (stream {stream})"
            steps.append(Step(t, src, dst, label))
        elif frame.get("frame_type") == "data":
            totals = data[(stream, src)]
            totals[0] += 1
            totals[1] += int((event.get("data") or {}).get("length") or frame.get("length") or 0)
    notes = [
        f"stream {stream}: {src} sent {count} DATA frames, {size} bytes"
        for (stream, src), (count, size) in sorted(data.items())
    ]
    return Ladder(["client", "server"], sorted(steps, key=lambda s: s.t), notes, title="qlog")


# ------------------------------------------------------------------ drawing
_GAP = 46  # characters between two participants' lifelines


def render_text(ladder: Ladder) -> str:
    """The ladder as text: one column per participant, one row per step."""
    columns = {name: 10 + i * _GAP for i, name in enumerate(ladder.participants)}
    width = max(columns.values()) + 12
    lines = [ladder.title]
    header = [" "] * width
    for name, col in columns.items():
        left = max(0, col - len(name) // 2)
        header[left : left + len(name)] = name
    lines.append("".join(header).rstrip())
    start = ladder.steps[0].t if ladder.steps else 0.0

    def lifelines() -> list[str]:
        row = [" "] * width
        for col in columns.values():
            row[col] = "|"
        return row

    for step in ladder.steps:
        row = lifelines()
        a, b = columns[step.source], columns[step.target]
        if a == b:
            text = f"[{step.label}]"
            row[a + 2 : a + 2 + len(text)] = text
            row.extend(" " * max(0, a + 2 + len(text) - len(row)))
        else:
            lo, hi = min(a, b), max(a, b)
            for i in range(lo + 1, hi):
                row[i] = "-"
            row[hi - 1 if b > a else lo + 1] = ">" if b > a else "<"
            label = step.label[: hi - lo - 5]
            middle = lo + 2 + (hi - lo - 3 - len(label)) // 2
            row[middle : middle + len(label)] = label
        lines.append(f"{step.t - start:7.3f}s" + "".join(row)[8:].rstrip())
    lines.extend(f"  * {note}" for note in ladder.notes)
    return "\n".join(lines) + "\n"


def render_svg(ladder: Ladder) -> str:
    """The ladder as a standalone SVG drawing."""
    gap, top, row = 260, 60, 28
    x = {name: 120 + i * gap for i, name in enumerate(ladder.participants)}
    height = top + row * (len(ladder.steps) + 1) + 20 * len(ladder.notes) + 40
    # Monospace at 12 px is about 7.3 px a character: leave room for the longest note.
    width = max([max(x.values()) + 220, *(20 + round(7.5 * len(note)) for note in ladder.notes)])
    start = ladder.steps[0].t if ladder.steps else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="monospace" font-size="12">',
        '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-weight="bold">{escape(ladder.title)}</text>',
    ]
    bottom = top + row * (len(ladder.steps) + 1)
    for name, cx in x.items():
        out.append(
            f'<text x="{cx}" y="{top - 12}" text-anchor="middle" font-weight="bold">'
            f"{escape(name)}</text>"
        )
        out.append(f'<line x1="{cx}" y1="{top}" x2="{cx}" y2="{bottom}" stroke="#888"/>')
    for i, step in enumerate(ladder.steps):
        y = top + row * (i + 1)
        out.append(f'<text x="10" y="{y + 4}" fill="#555">{step.t - start:.3f}s</text>')
        a, b = x[step.source], x[step.target]
        if a == b:
            out.append(f'<text x="{a + 8}" y="{y + 4}" fill="#a00">{escape(step.label)}</text>')
            continue
        out.append(
            f'<line x1="{a}" y1="{y}" x2="{b}" y2="{y}" stroke="black" marker-end="url(#a)"/>'
        )
        out.append(
            f'<text x="{(a + b) / 2}" y="{y - 5}" text-anchor="middle">{escape(step.label)}</text>'
        )
    for j, note in enumerate(ladder.notes):
        out.append(f'<text x="10" y="{bottom + 24 + 20 * j}">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ command
def read_log(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    """A JSON-lines log (a list of records) or a qlog document (a dict)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and '"traces"' in stripped[:2000]:
        document = json.loads(text)
        if isinstance(document, dict):
            return document
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line of some other output
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ripp ladder``."""
    parser.add_argument("log", type=Path, help="a --log-json log, or a qlog file")
    parser.add_argument("--call", help="the call URI to draw (default: the first call)")
    parser.add_argument("--svg", type=Path, metavar="FILE", help="also write an SVG drawing")


def run(args: argparse.Namespace) -> int:
    """Draw the ladder; 3 if the log cannot be read or holds no call."""
    try:
        source = read_log(args.log)
        if isinstance(source, dict):
            ladder = ladder_from_qlog(source)
        else:
            ladder = ladder_from_events(source, args.call)
    except (OSError, ValueError) as exc:
        print(f"ripp ladder: {exc}", file=sys.stderr)
        return 3
    sys.stdout.write(render_text(ladder))
    if args.svg is not None:
        args.svg.write_text(render_svg(ladder), encoding="utf-8")
    return 0
