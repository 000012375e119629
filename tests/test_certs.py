"""Tests of ripp_cli._certs: the per-user local CA, the QUIC configurations, debugging hooks.

Handshakes are real aioquic TLS 1.3 handshakes between two raw QuicConnections over
ripp_core.testing.VirtualNetwork, so certificate verification runs exactly as over UDP.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ripp_cli._certs import (
    LocalPki,
    cert_dir,
    client_configuration,
    configure_debugging,
    debugging,
    ensure_local_pki,
    server_configuration,
)
from ripp_core.testing import Address, VirtualNetwork

SERVER: Address = ("127.0.0.1", 4433)
CLIENT: Address = ("127.0.0.1", 50000)
FILES = ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh RIPP_HOME; SSLKEYLOGFILE cleared so the environment cannot leak in."""
    directory = tmp_path / "ripp-home"
    monkeypatch.setenv("RIPP_HOME", str(directory))
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    return directory


def _contents(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in FILES}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- handshake harness --------------------------------------------------------------------


class _Server:
    """Endpoint for VirtualNetwork: a server QuicConnection that is silent until contacted."""

    def __init__(self, quic: QuicConnection) -> None:
        self.quic = quic
        self.contacted = False

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.contacted = True
        self.quic.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.quic.datagrams_to_send(now) if self.contacted else []

    def get_timer(self) -> float | None:
        return self.quic.get_timer() if self.contacted else None

    def handle_timer(self, now: float) -> None:
        self.quic.handle_timer(now)


class _Result:
    def __init__(self) -> None:
        self.client_done = False
        self.server_done = False
        self.client_error: ConnectionTerminated | None = None
        self.server_error: ConnectionTerminated | None = None


def _handshake(
    server_config: QuicConfiguration, client_config: QuicConfiguration, *, close: bool = False
) -> _Result:
    """Run a handshake in virtual time; optionally close the client and let both drain."""
    client = QuicConnection(configuration=client_config)
    server = QuicConnection(
        configuration=server_config,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    net = VirtualNetwork(seed=1)
    net.add(SERVER, _Server(server))
    net.add(CLIENT, client)
    client.connect(SERVER, now=net.now)
    result = _Result()

    def poll() -> bool:
        while (event := client.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                result.client_done = True
            elif isinstance(event, ConnectionTerminated):
                result.client_error = event
        while (event := server.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                result.server_done = True
            elif isinstance(event, ConnectionTerminated):
                result.server_error = event
        finished = result.client_done and result.server_done
        return finished or result.client_error is not None or result.server_error is not None

    assert net.run_until(poll, timeout=10.0)
    if close and result.client_done:
        client.close()

        def both_terminated() -> bool:
            poll()
            return all(c._state == QuicConnectionState.TERMINATED for c in (client, server))

        assert net.run_until(both_terminated, timeout=30.0)
    return result


# -- cert_dir -----------------------------------------------------------------------------


def test_cert_dir_prefers_ripp_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RIPP_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert cert_dir() == tmp_path / "a"
    monkeypatch.delenv("RIPP_HOME")
    assert cert_dir() == tmp_path / "xdg" / "ripp"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cert_dir() == tmp_path / "home" / ".local" / "share" / "ripp"


# -- creation and reuse -------------------------------------------------------------------


def test_first_use_creates_files_with_private_keys_0600(home: Path) -> None:
    pki = ensure_local_pki()
    assert pki.directory == home
    for name in FILES:
        assert (home / name).is_file()
    assert _mode(pki.ca_key_path) == 0o600
    assert _mode(pki.server_key_path) == 0o600
    assert _mode(pki.ca_cert_path) == 0o644
    assert _mode(home) == 0o700
    assert "localhost" in pki.hostnames
    assert "127.0.0.1" in pki.hostnames and "::1" in pki.hostnames
    # No temporary files are left behind.
    assert sorted(p.name for p in home.iterdir()) == sorted([*FILES, ".lock"])
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert_path.read_bytes())
    server.verify_directly_issued_by(ca)
    ca_years = (ca.not_valid_after_utc - ca.not_valid_before_utc).days / 365
    assert 9.9 < ca_years < 10.1
    assert 364 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= 366


def test_second_call_reuses_the_same_bytes(home: Path) -> None:
    first = ensure_local_pki()
    before = _contents(home)
    second = ensure_local_pki()
    assert _contents(home) == before
    assert second == first


def test_new_hostname_regenerates_only_the_server_certificate(home: Path) -> None:
    ensure_local_pki()
    before = _contents(home)
    pki = ensure_local_pki(hostnames=["ripp.test"])
    after = _contents(home)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["ca-key.pem"] == before["ca-key.pem"]
    assert after["server.pem"] != before["server.pem"]
    assert after["server-key.pem"] != before["server-key.pem"]
    # The old name is kept, so "localhost" users are not thrown out by the new one.
    assert {"localhost", "ripp.test", "127.0.0.1", "::1"} <= set(pki.hostnames)
    # Asking again for either name reuses the new certificate.
    ensure_local_pki(hostnames=["localhost"])
    assert _contents(home) == after


def test_expiring_server_certificate_is_renewed(home: Path) -> None:
    # Made (in effect) 360 days ago: 5 days left, inside the 7-day renewal window.
    ensure_local_pki(now=datetime.now(UTC) - timedelta(days=360))
    before = _contents(home)
    ensure_local_pki()
    after = _contents(home)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["server.pem"] != before["server.pem"]


def test_mismatched_key_is_replaced(home: Path) -> None:
    ensure_local_pki()
    other = home.parent / "other"
    ensure_local_pki(other)
    (home / "server-key.pem").write_bytes((other / "server-key.pem").read_bytes())
    before = _contents(home)
    pki = ensure_local_pki()
    assert _contents(home)["server.pem"] != before["server.pem"]
    assert _contents(home)["ca.pem"] == before["ca.pem"]
    assert _handshake(server_configuration(pki), client_configuration(pki)).client_done


def test_hostname_validation_and_naive_now(home: Path) -> None:
    with pytest.raises(ValueError):
        ensure_local_pki(hostnames=[""])
    with pytest.raises(ValueError):
        ensure_local_pki(now=datetime.now())


def test_writes_are_atomic_temp_files_removed_on_failure(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.mkdir(mode=0o700)

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("ripp_cli._certs.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ensure_local_pki()
    assert [p.name for p in home.iterdir()] == [".lock"]


# -- handshakes ---------------------------------------------------------------------------


def test_handshake_between_server_and_client_configuration(home: Path) -> None:
    pki = ensure_local_pki()
    result = _handshake(server_configuration(pki), client_configuration(pki, "localhost"))
    assert result.client_done and result.server_done
    assert result.client_error is None


@pytest.mark.parametrize("server_name", ["127.0.0.1", "::1"])
def test_handshake_to_an_ip_literal(home: Path, server_name: str) -> None:
    pki = ensure_local_pki()
    result = _handshake(server_configuration(pki), client_configuration(pki, server_name))
    assert result.client_done and result.server_done


def _assert_certificate_rejected(result: _Result, reason: str) -> None:
    assert not result.client_done
    assert result.client_error is not None
    # CRYPTO_ERROR carrying TLS alert 42, bad_certificate: 0x100 + 42.
    assert result.client_error.error_code == 0x100 + 42
    assert reason in result.client_error.reason_phrase


def test_client_rejects_a_server_of_another_ca(home: Path, tmp_path: Path) -> None:
    pki = ensure_local_pki()
    stranger = ensure_local_pki(tmp_path / "stranger")
    assert stranger.ca_sha256 != pki.ca_sha256
    result = _handshake(server_configuration(stranger), client_configuration(pki))
    _assert_certificate_rejected(result, "unable to get local issuer certificate")


def test_client_rejects_a_name_not_in_the_certificate(home: Path) -> None:
    pki = ensure_local_pki()
    result = _handshake(server_configuration(pki), client_configuration(pki, "ripp.example"))
    _assert_certificate_rejected(result, "doesn't match")


def test_verification_cannot_be_switched_off(home: Path) -> None:
    import ssl

    pki = ensure_local_pki()
    with pytest.raises(ValueError):
        client_configuration(pki, verify_mode=ssl.CERT_NONE)
    assert client_configuration(pki, verify_mode=ssl.CERT_REQUIRED).verify_mode == (
        ssl.CERT_REQUIRED
    )
    configuration = client_configuration(pki)
    assert configuration.verify_mode is None  # aioquic's client default: CERT_REQUIRED
    assert configuration.cafile == str(pki.ca_cert_path)
    assert configuration.alpn_protocols == ["h3"]


def test_quic_kwargs_pass_through(home: Path) -> None:
    pki = ensure_local_pki()
    configuration = server_configuration(pki, idle_timeout=5.0)
    assert configuration.idle_timeout == 5.0
    assert configuration.is_client is False
    assert configuration.alpn_protocols == ["h3"]


# -- debugging hooks (R22) ----------------------------------------------------------------


def test_keylog_and_qlog_after_a_handshake(home: Path, tmp_path: Path) -> None:
    pki = ensure_local_pki()
    keylog = tmp_path / "keys.log"
    qlog_dir = tmp_path / "qlog"
    client_config = client_configuration(pki)
    with debugging(client_config, qlog_dir=qlog_dir, keylog_file=keylog) as configured:
        assert configured is client_config
        result = _handshake(server_configuration(pki), client_config, close=True)
        assert result.client_done
    assert client_config.secrets_log_file is None
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_HANDSHAKE_TRAFFIC_SECRET ") for line in lines)
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines)
    assert _mode(keylog) == 0o600
    qlogs = list(qlog_dir.glob("*.qlog"))
    assert len(qlogs) == 1
    assert qlogs[0].stat().st_size > 0


def test_sslkeylogfile_environment_variable(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = ensure_local_pki()
    keylog = tmp_path / "env-keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    client_config = client_configuration(pki)
    log = configure_debugging(client_config, qlog_dir=None, keylog_file=None)
    assert log is not None
    try:
        assert _handshake(server_configuration(pki), client_config).client_done
    finally:
        log.close()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET " in keylog.read_text()


def test_no_debugging_requested_opens_nothing(home: Path) -> None:
    pki = ensure_local_pki()
    client_config = client_configuration(pki)
    assert configure_debugging(client_config) is None
    assert client_config.secrets_log_file is None
    assert client_config.quic_logger is None


def test_local_pki_paths(home: Path) -> None:
    pki = ensure_local_pki()
    assert isinstance(pki, LocalPki)
    assert pki.ca_cert_path == home / "ca.pem"
    assert pki.server_key_path == home / "server-key.pem"
    assert os.path.basename(pki.ca_key_path) == "ca-key.pem"
    assert len(pki.ca_sha256.split(":")) == 32


def test_concurrent_first_use_agrees_on_one_ca(home: Path) -> None:
    # flock locks belong to open file descriptions, so threads exclude each other as
    # processes would.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: ensure_local_pki(), range(8)))
    assert len({pki.ca_sha256 for pki in results}) == 1
    ca = x509.load_pem_x509_certificate((home / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((home / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.fingerprint(hashes.SHA256()).hex(":").upper() == results[0].ca_sha256


def test_expiring_ca_is_replaced_with_its_server_certificate(home: Path) -> None:
    ensure_local_pki(now=datetime.now(UTC) - timedelta(days=3647))  # CA has 3 days left
    before = _contents(home)
    pki = ensure_local_pki()
    after = _contents(home)
    assert all(after[name] != before[name] for name in FILES)
    assert pki.ca_not_after > datetime.now(UTC) + timedelta(days=3000)
    assert _handshake(server_configuration(pki), client_configuration(pki)).client_done
