"""A differential probe: random HTTP/3 frame sequences on one request stream, against a
server on each QUIC engine; which of them close the connection on which engine, and with
what error code (docs/hostile.md, "The QUIC engine: qh3").

Not a test: both engines may close a connection for frames that RFC 9114 makes a
connection error, and they draw that line in slightly different places. Run it after an
engine upgrade and read the qh3-only closes: each must be something no conforming client
sends (a close for a request-level fault would cost every call on the connection)::

    python -m tests.hostile.framing_probe --examples 150
"""

from __future__ import annotations

import argparse
import collections
import random
from typing import Any

import pylsqpack

from ripp_core import QUIC_ENGINES, RippConfig
from ripp_core._varint import encode_varint
from ripp_core.testing import Impairment

from ..call_harness import Trunk

#: A valid request header block's fields (static-table references and literals).
REQUEST = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/ripp/calls"),
           (b":authority", b"a.example:443")]  # fmt: skip
#: Frame types of HTTP/2 that RFC 9114 7.2.8 reserves (a connection error if received).
HTTP2_TYPES = (0x02, 0x06, 0x08, 0x09)
#: Virtual seconds each example gets to take effect.
SETTLE = 1.5


def frame(frame_type: int, payload: bytes) -> bytes:
    """One HTTP/3 frame."""
    return encode_varint(frame_type) + encode_varint(len(payload)) + payload


def example(rng: random.Random) -> tuple[bytes, bool]:
    """Random request-stream bytes (one to four pieces) and whether the stream then ends."""
    pieces = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["headers", "garbage headers", "empty headers", "data", "unknown",
                           "reserved", "truncated", "raw"])  # fmt: skip
        if kind == "headers":
            pieces.append(frame(0x01, pylsqpack.Encoder().encode(0, REQUEST)[1]))
        elif kind == "garbage headers":
            pieces.append(frame(0x01, rng.randbytes(rng.randint(1, 12))))
        elif kind == "empty headers":
            pieces.append(frame(0x01, b""))
        elif kind == "data":
            pieces.append(frame(0x00, rng.randbytes(rng.randint(0, 20))))
        elif kind == "unknown":  # reserved for greasing (RFC 9114 7.2.8): to be ignored
            pieces.append(frame(0x21 + 0x1F * rng.randint(0, 100), rng.randbytes(3)))
        elif kind == "reserved":
            pieces.append(frame(rng.choice(HTTP2_TYPES), rng.randbytes(rng.randint(0, 6))))
        elif kind == "truncated":
            pieces.append(encode_varint(0x00) + encode_varint(100) + b"x" * 10)
        else:
            pieces.append(rng.randbytes(rng.randint(1, 8)))
    return b"".join(pieces), rng.random() < 0.7


def closes(engine: str, data: bytes, end: bool) -> int | None:
    """On a fresh server of ``engine`` with one call up, write ``data`` on a new request
    stream; the error code the server closed the connection with, or None."""
    trunk = Trunk(
        config=RippConfig(jitter_buffer=False),
        server_config=RippConfig(jitter_buffer=False, quic_engine=engine),
        impairment=Impairment(delay=0.02),
    )
    trunk.connect()
    client = trunk.rclient
    connection: Any = next(iter(client._connections))
    connection.quic.send_stream_data(client._open_stream(connection), data, end)
    client._touch(connection)
    trunk.run_until(lambda: connection.closed, timeout=SETTLE)
    if not connection.closed:
        return None
    # the client is aioquic's: its ConnectionTerminated (not public) has the server's code
    terminated = connection.quic._close_event
    return None if terminated is None else int(terminated.error_code)


def main() -> None:
    """Run the probe and print the examples whose outcome differs between engines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tally: collections.Counter[tuple[bool, ...]] = collections.Counter()
    for index in range(args.seed, args.seed + args.examples):
        data, end = example(random.Random(index))
        codes = {engine: closes(engine, data, end) for engine in QUIC_ENGINES}
        tally[tuple(code is not None for code in codes.values())] += 1
        if len({code is None for code in codes.values()}) > 1:
            shown = ", ".join(
                f"{e}: {'open' if c is None else hex(c)}" for e, c in codes.items()
            )
            print(f"example {index} ({shown}) end={end} {data[:48]!r}")
    for outcome, count in sorted(tally.items()):
        closed = [e for e, c in zip(QUIC_ENGINES, outcome, strict=True) if c] or ["neither"]
        print(f"closed on {' and '.join(closed)}: {count}")


if __name__ == "__main__":
    main()
