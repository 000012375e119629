"""RIPP's cost on the wire against RTP: datagrams and bytes per frame and per call-second.

When the draft was presented, the objection was that media over HTTP/3 with per-frame
application acks costs far more than RTP; nobody had measured it. This module does, per
direction, IP and UDP headers included:

* **RTP computed**: G.711 at 20 ms is 160 payload + 12 RTP + 8 UDP + 20 IPv4 = 200 bytes,
  50 datagrams per second, 80 kbit/s per direction (no RTCP counted).
* **RTP measured**: sipp's ``uac_pcap`` (it plays the G.711 A-law pcap that ships with
  ``sip-tester``) against ``sipp -sn uas -rtp_echo`` on loopback, captured with dumpcap.
* **RIPP over HTTP/3** and **bare H3** (the capacity benchmark's processes, 1 call, i.e.
  1 call on its connection, and 8 calls on one connection): captured with dumpcap on
  ``lo`` while the capacity window runs; the client writes its TLS secrets
  (``--keylog``) so tshark decrypts the QUIC packets and tells media from RIPP acks from
  QUIC-only packets (ACK frames and the like).
* **RIPP over HTTP/2** (the same processes on ripp_trio's TCP driver, TLS 1.3): packets
  and bytes counted per direction, not decoded.

The per-frame byte budget splits the bytes of one direction's datagrams by what they are:
the codec payload, RIPP's media frame header, HTTP/3's DATA frame header, RIPP acks of the
other direction's frames, QUIC (packet headers, AEAD tags, STREAM and ACK frame headers,
ACK frames, padding) and the UDP and IPv4 headers. Bytes are counted at the IP layer (the
IPv4 total length); loopback's zeroed Ethernet header is not on any real wire and is left
out, like RTP's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import FRAME, FRAME_BYTES, write_pki

#: RTP/UDP/IPv4 header sizes (RFC 3550 fixed header, no CSRC or extension; RFC 768; RFC 791
#: without options).
RTP_HEADER = 12
UDP_HEADER = 8
IPV4_HEADER = 20
#: RIPP's MEDIA frame around a payload: varint type (1) + varint length (2 for 171) + the
#: 11-byte media header (sequence, timestamp, codec, duration, flags): protocol §10.
RIPP_MEDIA_OVERHEAD = 1 + 2 + 11
#: A QUIC STREAM frame's data at least this long carries a media frame (HTTP/3 DATA
#: header + RIPP MEDIA frame = 177 bytes for 160 bytes of G.711); RIPP acks are ~12 bytes.
MEDIA_STREAM_MIN = 100
#: An RTP datagram at least this long (IP bytes) carries audio, not an RFC 2833 event.
AUDIO_MIN = 100
CAPTURE_START_TIMEOUT = 10.0
SIPP_TIMEOUT = 60.0


def rtp_computed() -> dict[str, float]:
    """Plain RTP/UDP/IPv4 G.711 at 20 ms, per direction, by arithmetic."""
    packet = FRAME_BYTES + RTP_HEADER + UDP_HEADER + IPV4_HEADER
    per_second = 1 / FRAME
    return {
        "datagrams_per_frame": 1.0,
        "bytes_per_frame": float(packet),
        "datagrams_per_s": per_second,
        "kbit_per_s": packet * 8 * per_second / 1000,
    }


# ---------------------------------------------------------------- capture
@contextlib.contextmanager
def capture(path: Path, bpf: str) -> Iterator[None]:
    """Capture loopback traffic matching ``bpf`` into ``path`` (pcap) while in the block.

    dumpcap writes the file's header once it captures, so its appearance means packets
    from then on are caught. Needs the capture rights dumpcap has as root (or with its
    capabilities); raises ``RuntimeError`` when it cannot start.
    """
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None:
        raise RuntimeError("dumpcap not found (Debian package tshark)")
    process = subprocess.Popen(
        [dumpcap, "-q", "-i", "lo", "-f", bpf, "-P", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + CAPTURE_START_TIMEOUT
        while not (path.exists() and path.stat().st_size >= 24):
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                raise RuntimeError(f"dumpcap did not start: {process.stderr.read()!r}")
            time.sleep(0.05)
        time.sleep(0.2)  # the filter is attached before the header is written; margin
        yield
    finally:
        time.sleep(0.2)  # let the last packets reach the file
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # dumpcap flushes and exits on SIGINT
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


@attrs.frozen
class Datagram:
    """One captured UDP (or TCP) IPv4 packet: capture time (epoch s), ports, IP total
    length, IP protocol number."""

    time: float
    src_port: int
    dst_port: int
    ip_bytes: int
    protocol: int = socket.IPPROTO_UDP


_TRANSPORTS = (socket.IPPROTO_UDP, socket.IPPROTO_TCP)
_LINK_HEADER = {1: 14, 101: 0, 113: 16, 276: 20}  # Ethernet, raw IP, Linux SLL, SLL2


def read_pcap(data: bytes) -> Iterator[Datagram]:
    """The UDP and TCP packets over IPv4 of a classic pcap file (micro- or nanosecond,
    either byte order; Ethernet, raw IP or Linux cooked link types). Other packets are
    skipped."""
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    skip = _LINK_HEADER.get(linktype)
    if skip is None:
        raise ValueError(f"unsupported pcap link type {linktype}")
    record = struct.Struct(endian + "IIII")
    offset = 24
    while offset + record.size <= len(data):
        seconds, fraction, captured, _ = record.unpack_from(data, offset)
        offset += record.size
        packet = data[offset : offset + captured]
        offset += captured
        ip = packet[skip:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] not in _TRANSPORTS:
            continue
        header = (ip[0] & 0x0F) * 4
        if len(ip) < header + 8:
            continue
        src, dst = struct.unpack_from("!HH", ip, header)
        total = struct.unpack_from("!H", ip, 2)[0]
        yield Datagram(seconds + fraction * scale, src, dst, total, ip[9])


def direction_totals(
    datagrams: Sequence[Datagram], port: int, t0: float, t1: float
) -> dict[str, dict[str, float]]:
    """Datagrams and IP bytes to (``c2s``) and from (``s2c``) ``port`` within [t0, t1)."""
    out = {"c2s": {"datagrams": 0.0, "bytes": 0.0}, "s2c": {"datagrams": 0.0, "bytes": 0.0}}
    for d in datagrams:
        if not t0 <= d.time < t1:
            continue
        key = "c2s" if d.dst_port == port else "s2c" if d.src_port == port else None
        if key is not None:
            out[key]["datagrams"] += 1
            out[key]["bytes"] += d.ip_bytes
    return out


# ---------------------------------------------------------------- QUIC decoding
def decode_quic(pcap: Path, keylog: Path, port: int) -> list[dict[str, Any]]:
    """Per datagram: time, source port, IP bytes, UDP payload bytes, QUIC frame types and
    STREAM data lengths, decrypted by tshark with the run's TLS secrets."""
    fields = ["frame.time_epoch", "udp.srcport", "ip.len", "udp.length", "quic.frame_type",
              "quic.stream.length"]  # fmt: skip
    command = ["tshark", "-n", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}",
               "-d", f"udp.port=={port},quic", "-T", "fields", "-E", "separator=/t",
               "-E", "occurrence=a", "-E", "aggregator=,"]  # fmt: skip
    for field in fields:
        command += ["-e", field]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    rows = []
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < len(fields) or not parts[1]:
            continue
        rows.append(
            {
                "time": float(parts[0]),
                "src_port": int(parts[1]),
                "ip_bytes": int(parts[2].split(",")[0]),
                "udp_payload": int(parts[3].split(",")[0]) - UDP_HEADER,
                "frame_types": [int(x, 0) for x in parts[4].split(",") if x],
                "stream_lengths": [int(x) for x in parts[5].split(",") if x],
            }
        )
    return rows


def classify(rows: Sequence[dict[str, Any]], port: int, t0: float, t1: float,
             frames: Mapping[str, float]) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per direction, per frame of that direction: datagrams and bytes by kind, and the
    byte budget (see the module docstring). ``frames``: per direction (``c2s``,
    ``s2c``), the frames delivered within [t0, t1)."""
    out: dict[str, dict[str, float]] = {}
    for direction in ("c2s", "s2c"):
        d = dict.fromkeys(
            ["datagrams", "bytes", "media_datagrams", "ack_datagrams", "quic_datagrams",
             "media_bytes", "ack_bytes", "quic_bytes", "media_frames", "media_stream_bytes",
             "small_stream_bytes", "udp_payload"],
            0.0,
        )  # fmt: skip
        for row in rows:
            if not t0 <= row["time"] < t1:
                continue
            from_server = row["src_port"] == port
            if from_server != (direction == "s2c"):
                continue
            media = [n for n in row["stream_lengths"] if n >= MEDIA_STREAM_MIN]
            small = [n for n in row["stream_lengths"] if n < MEDIA_STREAM_MIN]
            kind = "media" if media else "ack" if small else "quic"
            d["datagrams"] += 1
            d["bytes"] += row["ip_bytes"]
            d[f"{kind}_datagrams"] += 1
            d[f"{kind}_bytes"] += row["ip_bytes"]
            d["media_frames"] += len(media)
            d["media_stream_bytes"] += sum(media)
            d["small_stream_bytes"] += sum(small)
            d["udp_payload"] += row["udp_payload"]
        n = max(frames[direction], 1.0)
        per_frame = {f"{k}_per_frame": v / n for k, v in d.items()}
        payload = float(FRAME_BYTES) * d["media_frames"] / n
        ripp_header = float(RIPP_MEDIA_OVERHEAD) * d["media_frames"] / n
        per_frame["budget"] = {  # type: ignore[assignment]
            "payload": payload,
            "ripp_media_header": ripp_header,
            "h3_data_header": d["media_stream_bytes"] / n - payload - ripp_header,
            "ripp_acks": d["small_stream_bytes"] / n,
            "quic": (d["udp_payload"] - d["media_stream_bytes"] - d["small_stream_bytes"]) / n,
            "udp_ip": float(UDP_HEADER + IPV4_HEADER) * d["datagrams"] / n,
        }
        per_frame["media_frames_per_media_datagram"] = (
            d["media_frames"] / d["media_datagrams"] if d["media_datagrams"] else 0.0
        )
        per_frame["frames"] = frames[direction]
        out[direction] = per_frame
    return out


# ---------------------------------------------------------------- measurements
def measure_quic(stack: str, calls: int, duration: float, pki: Path) -> dict[str, Any]:
    """One capacity point of ``stack`` under capture; its wire figures per direction.

    ``ripp-h2`` (HTTP/2 over TLS over TCP) is counted, not decoded: its packets are TCP
    segments, pure ACKs included, and their bytes include TCP headers and options and
    the TLS record framing.
    """
    from . import capacity

    tcp = stack == "ripp-h2"
    with tempfile.TemporaryDirectory(prefix="ripp-overhead-") as tmp:
        pcap, keylog = Path(tmp) / "run.pcap", Path(tmp) / "keys.log"
        ports: list[int] = []

        def start(port: int) -> contextlib.AbstractContextManager[None]:
            ports.append(port)
            return capture(pcap, f"{'tcp' if tcp else 'udp'} port {port}")

        point = capacity.run_point(stack, calls, duration, pki, capture=start, keylog=keylog)
        port = ports[0]
        # Capture times are CLOCK_REALTIME, the window CLOCK_MONOTONIC: same machine, so
        # one offset converts (read now; NTP slewing over seconds is negligible).
        offset = time.time() - time.monotonic()
        t0, t1 = point["t0"] + offset, point["t1"] + offset
        datagrams = list(read_pcap(pcap.read_bytes()))
        totals = direction_totals(datagrams, port, t0, t1)
        # Per frame delivered (not due): an overloaded sender skips frames, and bytes per
        # frame due would then flatter it; early re-send copies count as overhead.
        frames = {d: float(point[d]["received"]) for d in ("c2s", "s2c")}
        decoded = (
            None if tcp else classify(decode_quic(pcap, keylog, port), port, t0, t1, frames)
        )
    call_seconds = max(point["connected"], 1) * (t1 - t0)
    result: dict[str, Any] = {
        "stack": stack,
        "calls": calls,
        "kept_up": point["kept_up"],
        "delivered_pct": point["delivered_pct"],
        "seconds": t1 - t0,
    }
    for direction in ("c2s", "s2c"):
        count = totals[direction]
        result[direction] = {
            "frames_delivered": frames[direction],
            "datagrams_per_frame": count["datagrams"] / max(frames[direction], 1.0),
            "bytes_per_frame": count["bytes"] / max(frames[direction], 1.0),
            "datagrams_per_s": count["datagrams"] / call_seconds,
            "kbit_per_s": count["bytes"] * 8 / call_seconds / 1000,
            "decoded": decoded[direction] if decoded else None,
        }
    return result


def _free_udp_port() -> int:
    """A UDP port free right now on loopback (for sipp, which cannot report one it chose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pcap_dir() -> Path | None:
    """Where sip-tester's pcaps are (uac_pcap plays ``pcap/g711a.pcap`` from its cwd)."""
    for candidate in (Path("/usr/share/sip-tester"), Path("/usr/share/sipp")):
        if (candidate / "g711a.pcap").exists():
            return candidate
    return None


def measure_rtp() -> dict[str, Any]:
    """sipp's RTP (uac_pcap against uas -rtp_echo) on loopback, per direction."""
    sipp = shutil.which("sipp")
    pcaps = _pcap_dir()
    if sipp is None or pcaps is None:
        raise RuntimeError("sipp or its pcaps not found (Debian package sip-tester)")
    with tempfile.TemporaryDirectory(prefix="ripp-rtp-") as tmp:
        work = Path(tmp)
        (work / "pcap").symlink_to(pcaps)
        uas_port, uas_media = _free_udp_port(), _free_udp_port()
        uac_port, uac_media = _free_udp_port(), _free_udp_port()
        common = ["-i", "127.0.0.1", "-nostdin", "-timeout", f"{SIPP_TIMEOUT:g}s"]
        pcap = work / "rtp.pcap"
        uas = subprocess.Popen(
            [sipp, "-sn", "uas", "-rtp_echo", "-p", str(uas_port), "-mp", str(uas_media),
             *common],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.5)  # sipp binds before its first event loop turn
            # RTP only, and only ours (other programs may use loopback meanwhile).
            bpf = f"udp and (port {uas_media} or port {uac_media})"
            with capture(pcap, bpf):
                subprocess.run(
                    [sipp, f"127.0.0.1:{uas_port}", "-sn", "uac_pcap", "-m", "1",
                     "-p", str(uac_port), "-mp", str(uac_media), *common],
                    cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    timeout=SIPP_TIMEOUT + 10, check=False,
                )  # fmt: skip
        finally:
            if uas.poll() is None:
                uas.terminate()
            try:
                uas.wait(timeout=10)
            except subprocess.TimeoutExpired:
                uas.kill()
                uas.wait(timeout=10)
        datagrams = list(read_pcap(pcap.read_bytes()))
    return rtp_summary(datagrams, uac_media)


def rtp_summary(datagrams: Sequence[Datagram], caller: int) -> dict[str, Any]:
    """Per direction of an RTP exchange (``c2s``: from the ``caller`` port): datagrams,
    bytes per datagram, rate. Each RTP datagram carries one frame (sipp's pcap: 30 ms of
    G.711 A-law, 240 bytes, then RFC 2833 DTMF events), so the figures of interest are
    the bytes and the rate.
    """
    if not datagrams:
        raise RuntimeError("no RTP captured")
    out: dict[str, Any] = {}
    for direction, mine in (("c2s", True), ("s2c", False)):
        # Audio only: the DTMF event packets (16-byte payloads) are not voice frames.
        these = [
            d for d in datagrams if (d.src_port == caller) == mine and d.ip_bytes >= AUDIO_MIN
        ]
        seconds = these[-1].time - these[0].time if len(these) > 1 else 0.0
        out[direction] = {
            "datagrams": len(these),
            "bytes_per_datagram": sum(d.ip_bytes for d in these) / len(these) if these else 0.0,
            "datagrams_per_s": (len(these) - 1) / seconds if seconds else 0.0,
            "frame_ms": 1000 * seconds / (len(these) - 1) if len(these) > 1 else 0.0,
            "kbit_per_s": 8 * sum(d.ip_bytes for d in these[:-1]) / seconds / 1000
            if seconds
            else 0.0,
        }
    return out


def run(duration: float = 5.0, loads: Sequence[int] = (1, 8),
        stacks: Sequence[str] = ("ripp", "bare", "ripp-h2")) -> dict[str, Any]:  # fmt: skip
    """Every figure of the overhead section (RTP computed and measured, RIPP and bare)."""
    out: dict[str, Any] = {"duration": duration, "rtp_computed": rtp_computed(), "points": []}
    try:
        out["rtp_measured"] = measure_rtp()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        out["rtp_measured"] = {"error": f"{type(exc).__name__}: {exc}"}
    with tempfile.TemporaryDirectory(prefix="ripp-pki-") as tmp:
        write_pki(Path(tmp))
        for calls in loads:
            for stack in stacks:
                try:
                    out["points"].append(measure_quic(stack, calls, duration, Path(tmp)))
                except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                    out["points"].append(
                        {"stack": stack, "calls": calls, "error": f"{type(exc).__name__}: {exc}"}
                    )
    out["loadavg_after"] = os.getloadavg()
    return out
