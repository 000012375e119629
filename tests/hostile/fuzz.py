"""The fuzz target: random bytes and random frame/message sequences into a RIPP server's
signaling and media bodies, in process, over the virtual network (issue 6).

One :class:`FuzzWorld` holds a ``Trunk`` (the sans-IO RIPP server and client over
``VirtualNetwork``, real aioquic and TLS, virtual time) with a *bystander* call whose
media flows both ways the whole time, and a raw HTTP/3 client (``tests/test_bad_input``)
that, for each example, creates a call of its own, attaches its signaling request and a
media request, and writes the example's bytes into one of the two bodies.

The properties: no exception escapes any endpoint (the virtual network would raise it
into the test), the server holds a bounded number of calls, and the bystander call stays
connected with every frame delivered both ways exactly once. ``tests/hostile/test_fuzz.py``
runs a modest number of examples; ``python -m benchmarks.fuzz`` runs many.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from ripp_core import CallState, CallTerminated, RippConfig
from ripp_core._frames import FrameType, SignalFrame, encode_frame, encode_signal
from ripp_core._messages import encode_message
from ripp_core._varint import encode_varint

from ..call_harness import Trunk
from ..strategies import (
    ack_frames,
    chunkings,
    media_frames,
    messages,
    signal_frames,
    unknown_frame_bytes,
)
from ..test_bad_input import MEDIA, SIGNALING, RawH3Client

#: Bystander frames sent each way per example (20 ms apart, in virtual time).
FRAMES_PER_EXAMPLE = 10
#: Virtual seconds each example's bytes get to take effect.
SETTLE = 0.3
#: A fresh raw client every this many examples (its connection's streams add up).
EXAMPLES_PER_CONNECTION = 40
#: Virtual seconds after the last example by which every ended call must be gone: an
#: ended call is freed after a bounded linger even if the peer leaves its requests open.
FORGET_WITHIN = 30.0

# ---------------------------------------------------------------- strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)


@st.composite
def random_messages(draw: st.DrawFn) -> bytes:
    """A SIGNAL frame whose JSON is any object with RIPP-ish member names: right and
    wrong types, unknown message types, missing members."""
    body = draw(
        st.dictionaries(
            st.sampled_from(["type", "code", "reason", "uri", "count", "x"]),
            st.one_of(
                st.sampled_from(
                    ["pending", "ringing", "answer", "terminate", "move", "streams",
                     "keepalive", "invite"]
                ),
                json_values,
            ),
            max_size=4,
        )
    )
    return encode_signal(json.dumps(body).encode())


@st.composite
def oversized_headers(draw: st.DrawFn) -> bytes:
    """A frame header announcing a payload past every limit (the payload never comes)."""
    frame_type = draw(st.sampled_from([int(t) for t in FrameType]))
    length = draw(st.integers(min_value=4097, max_value=(1 << 62) - 1))
    return encode_varint(frame_type) + encode_varint(length)


def items() -> st.SearchStrategy[bytes]:
    """One piece of a body: a valid frame of any type, a random message, unknown frames,
    an oversized header, or raw bytes."""
    return st.one_of(
        messages().map(lambda m: encode_signal(encode_message(m))),
        random_messages(),
        signal_frames().map(lambda f: encode_frame(SignalFrame(f.payload))),
        media_frames().map(encode_frame),
        ack_frames().map(encode_frame),
        unknown_frame_bytes(),
        oversized_headers(),
        st.binary(max_size=64),
    )


@st.composite
def attacks(draw: st.DrawFn) -> dict[str, Any]:
    """One example: which body, the bytes (a sequence of items, split at random points),
    whether the body then ends, and whether the server answers the call first."""
    body = b"".join(draw(st.lists(items(), min_size=1, max_size=12)))
    return {
        "target": draw(st.sampled_from(["signaling", "media"])),
        "chunks": draw(chunkings(body)),
        "end_stream": draw(st.booleans()),
        "answered": draw(st.booleans()),
    }


# ---------------------------------------------------------------- the world
class FuzzWorld:
    """A trunk with a bystander call, and a raw client that attacks a call of its own."""

    def __init__(self, seed: int = 1, engine: str = "aioquic") -> None:
        # ``engine``: the server's QUIC engine (the bystander's client and the raw
        # attacker stay on aioquic)
        self.trunk = Trunk(
            seed=seed,
            config=RippConfig(jitter_buffer=False),
            server_config=RippConfig(jitter_buffer=False, quic_engine=engine),
        )
        self.handle = self.trunk.connect()
        self.examples = 0
        self._raw: RawH3Client | None = None
        self._port = 51000

    @property
    def server(self) -> Any:
        """The sans-IO RippServer under attack."""
        return self.trunk.rserver("a")

    def _raw_client(self) -> RawH3Client:
        if (
            self._raw is None
            or self._raw.terminated is not None
            or self.examples % EXAMPLES_PER_CONNECTION == 0
        ):
            self._port += 1
            self._raw = RawH3Client(self.trunk, ("127.0.0.1", self._port))
        return self._raw

    def attack(self, example: dict[str, Any]) -> None:
        """Run one example beside the bystander's media."""
        trunk = self.trunk
        start = trunk.net.now + 0.001
        trunk.stream_media(self.handle, start=start, count=FRAMES_PER_EXAMPLE)
        trunk.stream_media(self.handle, start=start, count=FRAMES_PER_EXAMPLE, from_server=True)
        trunk.auto = "answer" if example["answered"] else "hold"
        raw = self._raw_client()
        self.examples += 1
        path = raw.create_call()
        signaling = raw.open(path, SIGNALING)
        sig = raw.responses[signaling]
        raw.settle(lambda: {"type": "pending"} in sig.messages())
        media = raw.open(path, MEDIA)
        raw.settle(lambda: raw.responses[media].status is not None or raw.terminated is not None)
        stream = signaling if example["target"] == "signaling" else media
        chunks: list[bytes] = example["chunks"]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            response = raw.responses[stream]
            if response.reset is not None or response.stop_sending is not None:
                break  # the server already refused this body: nothing more to write
            raw.send(stream, chunk, end_stream=last and example["end_stream"])
        trunk.net.run_for(SETTLE)

    def assert_intact(self) -> None:
        """The bystander call is connected and every frame arrived once, both ways."""
        trunk, handle = self.trunk, self.handle
        c2s, s2c = trunk.c2s[handle], trunk.s2c[handle]
        trunk.run_until(
            lambda: set(c2s.sent) <= set(c2s.received) and set(s2c.sent) <= set(s2c.received),
            timeout=2.0,
        )
        assert set(c2s.sent) <= set(c2s.received), sorted(set(c2s.sent) - set(c2s.received))
        assert set(s2c.sent) <= set(s2c.received), sorted(set(s2c.sent) - set(s2c.received))
        assert c2s.duplicates == s2c.duplicates == 0
        assert trunk.client_state(handle) is CallState.CONNECTED
        name, server_handle = trunk.server_calls[handle]
        assert trunk.rserver(name).calls[server_handle].state is CallState.CONNECTED
        assert not [e for e in trunk.client.of(CallTerminated) if e.call == handle]

    def ended_calls_held(self) -> int:
        """Run FORGET_WITHIN virtual seconds; how many ended calls the server still holds."""
        self.trunk.net.run_for(FORGET_WITHIN)
        return sum(1 for call in self.server.calls.values() if call.state is CallState.TERMINATED)

    def assert_forgotten(self) -> None:
        """Some time later, the server holds no ended call (only the bystander and calls
        whose silent client has not been declared lost: see docs/hostile.md)."""
        held = self.ended_calls_held()
        assert not held, f"{held} ended calls still held after {FORGET_WITHIN} s"
        assert self.trunk.client_state(self.handle) is CallState.CONNECTED
