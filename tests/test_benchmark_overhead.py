"""The wire-overhead benchmark's helpers (benchmarks/overhead.py).

Its figures answer "what does RIPP cost on the wire against RTP", so the parts that turn a
capture into numbers are checked: the pcap reader (property: it returns exactly the UDP
datagrams written, whatever the byte order, time resolution and link type, and nothing
else), the per-direction window, the per-frame byte budget (its rows add up to the bytes
captured), and one real sipp RTP exchange captured on loopback (slow; needs sip-tester and
tshark's dumpcap, which scripts/test installs as root; under CI a missing one fails).
"""

from __future__ import annotations

import os
import shutil
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import overhead
from benchmarks.overhead import Datagram, classify, direction_totals, read_pcap, rtp_computed

_PORTS = st.integers(1, 65535)
_DATAGRAMS = st.lists(
    st.tuples(
        st.integers(0, 2_000_000_000),  # seconds
        st.integers(0, 999_999),  # microseconds
        _PORTS,
        _PORTS,
        st.integers(0, 1400),  # UDP payload length
    ),
    max_size=20,
)


def _ipv4_udp(src: int, dst: int, payload: int, protocol: int = 17) -> bytes:
    total = 20 + 8 + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, protocol, 0,
                     b"\x7f\0\0\1", b"\x7f\0\0\1")  # fmt: skip
    return ip + struct.pack("!HHHH", src, dst, 8 + payload, 0) + b"\0" * payload


def _pcap(records: list[tuple[int, int, bytes]], endian: str, nano: bool, link: int) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, link)
    prefix = {1: b"\0" * 14, 101: b"", 113: b"\0" * 16, 276: b"\0" * 20}[link]
    for seconds, fraction, packet in records:
        data = prefix + packet
        out += struct.pack(endian + "IIII", seconds, fraction, len(data), len(data)) + data
    return out


@given(
    datagrams=_DATAGRAMS,
    endian=st.sampled_from(["<", ">"]),
    nano=st.booleans(),
    link=st.sampled_from([1, 101, 113, 276]),
    other_between=st.booleans(),
)
def test_read_pcap_returns_the_udp_datagrams_written(
    datagrams: list[tuple[int, int, int, int, int]],
    endian: str,
    nano: bool,
    link: int,
    other_between: bool,
) -> None:
    records = []
    for seconds, micros, src, dst, size in datagrams:
        fraction = micros * 1000 if nano else micros
        records.append((seconds, fraction, _ipv4_udp(src, dst, size)))
        if other_between:  # ICMP: neither UDP nor TCP, skipped
            records.append((seconds, fraction, _ipv4_udp(src, dst, size, protocol=1)))
    got = list(read_pcap(_pcap(records, endian, nano, link)))
    assert [(d.src_port, d.dst_port, d.ip_bytes, d.protocol) for d in got] == [
        (src, dst, 28 + size, 17) for _, _, src, dst, size in datagrams
    ]
    for d, (seconds, micros, *_) in zip(got, datagrams, strict=True):
        assert d.time == pytest.approx(seconds + micros / 1e6, abs=1e-6)


def test_read_pcap_returns_tcp_segments_too() -> None:
    # RIPP over HTTP/2 is counted from the same capture reader.
    got = list(read_pcap(_pcap([(1, 0, _ipv4_udp(443, 5000, 100, protocol=6))], "<", False, 1)))
    assert [(d.src_port, d.dst_port, d.ip_bytes, d.protocol) for d in got] == [
        (443, 5000, 128, 6)
    ]


def test_read_pcap_refuses_what_is_not_pcap() -> None:
    with pytest.raises(ValueError):
        list(read_pcap(b"\x0a\x0d\x0d\x0a" + b"\0" * 40))  # pcapng
    assert list(read_pcap(b"")) == []


def test_direction_totals_splits_by_server_port_and_window() -> None:
    port = 4433
    datagrams = [
        Datagram(0.5, 5000, port, 100),  # before the window
        Datagram(1.0, 5000, port, 200),
        Datagram(1.5, port, 5000, 300),
        Datagram(1.6, 6000, 7000, 999),  # another conversation
        Datagram(2.0, port, 5000, 400),  # at t1: outside
    ]
    totals = direction_totals(datagrams, port, 1.0, 2.0)
    assert totals == {
        "c2s": {"datagrams": 1.0, "bytes": 200.0},
        "s2c": {"datagrams": 1.0, "bytes": 300.0},
    }


_ROWS = st.lists(
    st.tuples(
        st.booleans(),  # from the server
        st.lists(st.integers(1, 300), max_size=4),  # STREAM data lengths
        st.integers(0, 200),  # other QUIC bytes
    ),
    max_size=30,
)


@given(rows=_ROWS, frames=st.integers(1, 100))
def test_byte_budget_adds_up_to_the_bytes_captured(
    rows: list[tuple[bool, list[int], int]], frames: int
) -> None:
    port = 4433
    decoded: list[dict[str, Any]] = [
        {
            "time": 1.0,
            "src_port": port if from_server else 5000,
            "ip_bytes": 28 + sum(streams) + other,
            "udp_payload": sum(streams) + other,
            "frame_types": [],
            "stream_lengths": streams,
        }
        for from_server, streams, other in rows
    ]
    out = classify(decoded, port, 0.0, 2.0, {"c2s": float(frames), "s2c": float(frames)})
    for direction, mine in (("c2s", False), ("s2c", True)):
        these = [r for r in decoded if (r["src_port"] == port) == mine]
        total = sum(r["ip_bytes"] for r in these)
        budget = out[direction]["budget"]
        assert sum(budget.values()) == pytest.approx(total / frames)  # type: ignore[attr-defined]
        kinds = sum(out[direction][f"{k}_datagrams_per_frame"] for k in ("media", "ack", "quic"))
        assert kinds == pytest.approx(len(these) / frames)
        media = sum(1 for r in these for n in r["stream_lengths"] if n >= 100)
        assert out[direction]["media_frames_per_frame"] == pytest.approx(media / frames)


def test_rtp_computed_is_the_textbook_figure() -> None:
    assert rtp_computed() == {
        "datagrams_per_frame": 1.0,
        "bytes_per_frame": 200.0,
        "datagrams_per_s": 50.0,
        "kbit_per_s": 80.0,
    }


def _need(program: str, package: str) -> None:
    if shutil.which(program) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed (Debian package {package}); "
                        "scripts/test installs it when run as root")  # fmt: skip
        pytest.skip(f"{program} not installed")


@pytest.mark.slow
def test_sipp_rtp_is_one_datagram_per_frame_with_40_bytes_of_headers() -> None:
    """A real RTP exchange (sipp's uac_pcap against uas -rtp_echo) captured on lo."""
    _need("sipp", "sip-tester")
    _need("dumpcap", "tshark")
    try:
        measured = overhead.measure_rtp()
    except RuntimeError as exc:
        if not os.environ.get("CI") and "ermission" in str(exc):
            pytest.skip(f"cannot capture on lo here: {exc}")
        raise
    for direction in ("c2s", "s2c"):
        m = measured[direction]
        # sipp's pcap: 235 frames of 30 ms G.711 A-law, 240 bytes + 12 RTP + 8 UDP + 20 IP.
        assert m["datagrams"] >= 200, measured
        assert m["bytes_per_datagram"] == 280, measured
        assert 25 < m["datagrams_per_s"] < 40, measured  # one datagram per 30 ms frame
