"""Both drivers size their UDP socket buffers from RippConfig and say once when capped."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import ModuleType

import pytest

import ripp_asyncio._driver as asyncio_driver
import ripp_trio._driver as trio_driver
from ripp_core import RippConfig

DRIVERS = [pytest.param(trio_driver, id="trio"), pytest.param(asyncio_driver, id="asyncio")]


def _sysctl(name: str) -> int:
    return int(Path("/proc/sys/net/core", name).read_text())


@pytest.mark.parametrize("driver", DRIVERS)
def test_buffers_are_sized_from_the_config(driver: ModuleType) -> None:
    wanted = min(1024 * 1024, _sysctl("rmem_max")), min(512 * 1024, _sysctl("wmem_max"))
    config = RippConfig(udp_receive_buffer=wanted[0], udp_send_buffer=wanted[1])
    sock = driver.open_udp_socket("127.0.0.1", 0, config)
    try:
        # Linux reports twice what was asked (its bookkeeping), never less when not capped.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= wanted[0]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= wanted[1]
        assert sock.getsockname()[1] != 0
    finally:
        sock.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_zero_leaves_the_os_default(driver: ModuleType) -> None:
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    plain.close()
    sock = driver.open_udp_socket("127.0.0.1", 0, RippConfig(udp_receive_buffer=0))
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == default
    finally:
        sock.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_capped_buffer_is_logged_once(
    driver: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(driver, "_capped_logged", set())
    # Far above any rmem_max a test machine has: the kernel caps it.
    too_big = 4 * _sysctl("rmem_max") + 4096
    config = RippConfig(udp_receive_buffer=too_big, udp_send_buffer=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            sock = driver.open_udp_socket("127.0.0.1", 0, config)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            sock.close()
            assert 0 < granted < too_big
    lines = [r.getMessage() for r in caplog.records if "receive buffer" in r.getMessage()]
    assert len(lines) == 1, lines
    assert str(too_big) in lines[0] and "net.core.rmem_max" in lines[0]
