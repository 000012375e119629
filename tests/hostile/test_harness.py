"""The harness's own wire helpers, checked against aioquic and pylsqpack: the attacks
send what they claim to send."""

from __future__ import annotations

import secrets
from pathlib import Path

import pylsqpack
import pytest
from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoError, CryptoPair
from aioquic.quic.packet import QuicPacketType, encode_quic_retry, pull_quic_header
from hypothesis import given
from hypothesis import strategies as st

from .harness import ENGINES, RawConnection, is_retry, junk_initial, pump, qpack_literal, serve

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-:", min_size=1, max_size=20)
values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


# lsqpack decodes values up to 65 535 bytes (the 64 KB `To` of class 8 is past that: a
# server must refuse it by its size before decoding it, or its QPACK decoder fails).
@given(st.lists(st.tuples(names, values), max_size=8), st.integers(0, 65_535))
def test_qpack_literal_decodes_to_the_same_fields(
    headers: list[tuple[str, str]], long_value: int
) -> None:
    headers = [*headers, ("to", "2" * long_value)]  # sizes past every prefix boundary
    decoder = pylsqpack.Decoder(4096, 16)
    _, decoded = decoder.feed_header(0, qpack_literal(headers))
    assert decoded == [(k.encode(), v.encode()) for k, v in headers]


def test_junk_initial_is_a_full_size_v1_initial_nothing_decrypts() -> None:
    datagram = junk_initial()
    assert len(datagram) == 1200
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    assert header.packet_type == QuicPacketType.INITIAL
    assert header.version == 1 and not header.token
    crypto = CryptoPair()
    crypto.setup_initial(header.destination_cid, is_client=False, version=header.version)
    with pytest.raises(CryptoError):
        crypto.decrypt_packet(datagram, buf.tell(), 0)
    assert junk_initial() != datagram  # fresh connection ids each time


def test_is_retry() -> None:
    retry = encode_quic_retry(
        version=1,
        source_cid=secrets.token_bytes(8),
        destination_cid=secrets.token_bytes(8),
        original_destination_cid=secrets.token_bytes(8),
        retry_token=b"token",
    )
    assert is_retry(retry)
    assert not is_retry(junk_initial())
    assert not is_retry(b"\x00garbage")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_the_server_runs_on_the_engine_asked_for(engine: str, tmp_path: Path) -> None:
    # A qh3 server validates every new client's address with a QUIC Retry first (the
    # engine's retry_always); an aioquic one only past retry_threshold open handshakes.
    # So the raw client sees which engine it reached, and a call gets made on it.
    with serve(tmp_path, "trio", engine=engine) as server:
        raw = RawConnection(server, source="127.0.0.2")
        assert pump([raw], until=lambda: raw.connected, timeout=5), raw.terminated
        assert raw.retries_seen == (1 if engine == "qh3" else 0)
        assert raw.create().status == 201
        raw.close()
        server.assert_alive()


def test_framing_probe_tells_which_engine_closes() -> None:
    # The differential probe (docs/hostile.md) in miniature: a valid request closes
    # nothing; a frame of an HTTP/2 type is a connection error on aioquic (RFC 9114
    # 7.2.8), which qh3 tolerates; the examples are reproducible from their index.
    import random

    from .framing_probe import REQUEST, closes, example, frame

    request = frame(0x01, pylsqpack.Encoder().encode(0, REQUEST)[1])
    assert closes("aioquic", request, True) is None
    assert closes("qh3", request, True) is None
    ping = request + frame(0x06, b"12345678")
    assert closes("aioquic", ping, True) == 0x105  # H3_FRAME_UNEXPECTED
    assert closes("qh3", ping, True) is None
    assert example(random.Random(7)) == example(random.Random(7))
