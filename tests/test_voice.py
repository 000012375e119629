"""The sans-IO core of the voice-application API (ripp_audio._voice), deterministically."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_audio import (
    AudioChunk,
    ChunkKind,
    ComfortNoise,
    EnergyVad,
    MediaDecoder,
    PcmEncoder,
    StereoTimeline,
    decoder_for,
    encoder_for,
    level_dbfs,
    resample,
    snr_db,
    tone,
)
from ripp_core import Codec, DtmfReceived, MediaFrame, MediaGap
from tests.test_sans_io import FORBIDDEN_CALLS, FORBIDDEN_MODULES

VOICE_CORE = Path(__file__).resolve().parent.parent / "ripp_audio" / "_voice.py"


def test_voice_core_does_no_io() -> None:
    """The same guard as ripp_core's: no sockets, loops, threads, clock reads or files."""
    tree = ast.parse(VOICE_CORE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                assert name is None or name.split(".")[0] not in FORBIDDEN_MODULES
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open"


def frame(seq: int, codec: Codec, payload: bytes, ms: float = 20) -> MediaFrame:
    return MediaFrame(seq, seq * 960 % (1 << 32), codec, round(ms * 2), payload)


def pcmu_frames(pcm: np.ndarray, start: int = 0) -> list[MediaFrame]:
    enc = encoder_for(Codec.PCMU, 0.02)
    return [
        frame(start + i, Codec.PCMU, enc.encode(pcm[i * 160 : (i + 1) * 160]))
        for i in range(pcm.size // 160)
    ]


def samples(events: list[object]) -> np.ndarray:
    chunks = [e.samples for e in events if isinstance(e, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


# ------------------------------------------------------------------ MediaDecoder
def test_decoder_gives_pcm_at_the_asked_rate_with_high_fidelity() -> None:
    source = tone(440.0, 1.0, 8000)
    decoder = MediaDecoder(16000)
    events = [e for f in pcmu_frames(source) for e in decoder.feed(f)] + decoder.flush()
    out = samples(events)
    assert out.size == 16000
    assert all(e.rate == 16000 for e in events if isinstance(e, AudioChunk))
    assert snr_db(resample(source, 8000, 16000), out) > 25  # mu-law's own noise is ~ 35 dB


def test_gap_is_concealed_for_its_duration_and_marked_so() -> None:
    decoder = MediaDecoder(8000)
    frames = pcmu_frames(tone(300.0, 0.1, 8000))
    events = [e for f in frames[:3] for e in decoder.feed(f)]
    events += decoder.feed(MediaGap("c", 3, 0.02))
    events += [e for f in frames[4:] for e in decoder.feed(f)]
    kinds = [e.kind for e in events if isinstance(e, AudioChunk)]
    assert kinds == [ChunkKind.DECODED] * 3 + [ChunkKind.CONCEALED] + [ChunkKind.DECODED]
    concealed = next(e for e in events if isinstance(e, AudioChunk) and e.sequence == 3)
    assert concealed.samples.size == 160
    assert level_dbfs(concealed.samples) > -30  # pitch repetition, not silence
    assert samples(events).size == 800


def test_comfort_noise_is_an_event_and_noise_at_its_level() -> None:
    decoder = MediaDecoder(8000)
    events = decoder.feed(frame(0, Codec.CN, bytes([40])))
    assert events[0] == ComfortNoise(0, 0.02, 40)
    chunk = events[1]
    assert isinstance(chunk, AudioChunk) and chunk.kind is ChunkKind.COMFORT_NOISE
    assert chunk.samples.size == 160
    # -40 dBov is about -40 dBFS (0 dBov is a full-scale square wave)
    assert -43 < level_dbfs(chunk.samples) < -37


def test_dtmf_passes_through_and_telephone_events_leave_silence() -> None:
    decoder = MediaDecoder(16000)
    digit = DtmfReceived("c", "5", 0.1, 10)
    assert decoder.feed(digit) == [digit]
    events = decoder.feed(frame(1, Codec.TELEPHONE_EVENT, bytes([5, 10, 0, 160])))
    assert len(events) == 1 and isinstance(events[0], AudioChunk)
    assert events[0].kind is ChunkKind.SILENCE and not events[0].samples.any()
    assert events[0].samples.size == 320


def test_codec_switch_keeps_the_timeline_and_a_corrupt_payload_is_concealed() -> None:
    decoder = MediaDecoder(16000)
    events = [e for f in pcmu_frames(tone(440.0, 0.2, 8000)) for e in decoder.feed(f)]
    opus = encoder_for(Codec.OPUS, 0.02)
    pcm48 = tone(440.0, 0.2, 48000)
    for i in range(10):
        events += decoder.feed(
            frame(10 + i, Codec.OPUS, opus.encode(pcm48[i * 960 : (i + 1) * 960]))
        )
    events += decoder.feed(frame(20, Codec.OPUS, b"\xff" * 3))  # not a valid Opus packet
    events += decoder.flush()
    assert samples(events).size == pytest.approx(0.42 * 16000, abs=2)
    assert events[-1].kind is ChunkKind.CONCEALED or any(
        isinstance(e, AudioChunk) and e.sequence == 20 and e.kind is ChunkKind.CONCEALED
        for e in events
    )


item_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("pcmu"), st.sampled_from([10, 20, 30, 60])),
        st.tuples(st.just("pcma"), st.sampled_from([10, 20, 40])),
        st.tuples(st.just("gap"), st.sampled_from([10, 20, 60])),
        st.tuples(st.just("cn"), st.sampled_from([20, 40])),
        st.tuples(st.just("te"), st.sampled_from([20, 50])),
    ),
    max_size=30,
)


@given(item_strategy, st.sampled_from([8000, 16000, 24000, 48000]))
def test_chunks_tile_the_timeline(items: list[tuple[str, int]], rate: int) -> None:
    """Whatever mix of frames, gaps, comfort noise and DTMF arrives, the PCM is exactly as
    long as the media it stands for (at 8 kHz sources; a resampler rounds up one sample)."""
    decoder = MediaDecoder(rate)
    events: list[object] = []
    total = 0.0
    for seq, (kind, ms) in enumerate(items):
        n = ms * 8
        if kind == "pcmu":
            item: MediaFrame | MediaGap = frame(seq, Codec.PCMU, bytes([0x55]) * n, ms)
        elif kind == "pcma":
            item = frame(seq, Codec.PCMA, bytes([0xD5]) * n, ms)
        elif kind == "gap":
            item = MediaGap("c", seq, ms / 1000)
        elif kind == "cn":
            item = frame(seq, Codec.CN, bytes([60]), ms)
        else:
            item = frame(seq, Codec.TELEPHONE_EVENT, bytes([1, 0x8A]) + n.to_bytes(2, "big"), ms)
        total += ms / 1000
        events += decoder.feed(item)
    events += decoder.flush()
    expected = math.ceil(round(total * 8000) * rate / 8000)
    assert abs(samples(events).size - expected) <= 1


# ------------------------------------------------------------------ PcmEncoder
def test_encoder_resamples_and_frames_any_input() -> None:
    encoder = PcmEncoder(Codec.PCMU, 0.02)
    source = tone(500.0, 0.5, 44100)
    payloads = encoder.encode(source[:10000], 44100) + encoder.encode(source[10000:], 44100)
    payloads += encoder.flush()
    assert len(payloads) == 25 and all(len(p) == 160 for p in payloads)
    decoded = decoder_for(Codec.PCMU).decode(b"".join(payloads))
    reference = tone(500.0, 0.5, 8000)
    assert snr_db(reference, decoded) > 25


def test_encoder_streams_without_padding_until_flushed() -> None:
    encoder = PcmEncoder(Codec.OPUS, 0.02)
    assert encoder.rate == 48000
    assert encoder.encode(tone(300.0, 0.015, 48000), 48000) == []
    assert encoder.pending_seconds == pytest.approx(0.015)
    assert len(encoder.encode(tone(300.0, 0.015, 48000), 48000)) == 1
    assert len(encoder.flush()) == 1
    assert encoder.pending_seconds == 0
    with pytest.raises(TypeError):
        encoder.encode(np.zeros(10, dtype=np.float32), 48000)


@given(st.lists(st.integers(1, 3000), max_size=8), st.sampled_from([8000, 16000, 22050, 48000]))
def test_encoder_frame_count_matches_the_audio(pieces: list[int], rate: int) -> None:
    encoder = PcmEncoder(Codec.PCMA, 0.01)
    payloads = []
    for n in pieces:
        payloads += encoder.encode(np.ones(n, dtype=np.int16), rate)
    payloads += encoder.flush()
    resampled = math.ceil(sum(pieces) * 8000 / rate) if rate != 8000 else sum(pieces)
    assert len(payloads) == math.ceil(resampled / 80)


# ------------------------------------------------------------------ EnergyVad
def test_vad_starts_on_sustained_speech_not_on_a_click_or_noise() -> None:
    vad = EnergyVad()
    assert not vad.feed(np.zeros(8000, dtype=np.int16), 8000)
    noise = np.random.default_rng(1).normal(0, 100, 8000).astype(np.int16)  # about -50 dBFS
    assert not vad.feed(noise, 8000)
    assert not vad.feed(tone(300.0, 0.03, 8000, amplitude=0.5), 8000)  # 30 ms click
    assert not vad.feed(np.zeros(800, dtype=np.int16), 8000)
    speech = tone(300.0, 0.2, 8000, amplitude=0.1)  # about -23 dBFS
    starts = [vad.feed(speech[i : i + 160], 8000) for i in range(0, speech.size, 160)]
    assert starts.index(True) == 2  # 60 ms in: three 20 ms chunks
    assert starts.count(True) == 1 and vad.speaking
    vad.feed(np.zeros(1600, dtype=np.int16), 8000)  # a 0.2 s pause: still talking
    assert vad.speaking
    vad.feed(np.zeros(1600, dtype=np.int16), 8000)
    assert not vad.speaking


# ------------------------------------------------------------------ StereoTimeline
def test_timeline_aligns_channels_to_the_clock() -> None:
    timeline = StereoTimeline(1000, start=10.0)
    one = np.full(100, 7, dtype=np.int16)
    timeline.place(0, one, 10.0)
    timeline.place(0, one, 10.13)  # 30 ms late: within tolerance, appended seamlessly
    timeline.place(0, one, 10.5)  # a real gap: silence between
    timeline.place(1, np.full(300, 9, dtype=np.int16), 10.2)
    timeline.cut(1, 10.4)  # cleared: the last 100 samples were never heard
    out = np.concatenate([timeline.take(10.25), timeline.take(11.0)])
    assert out.shape == (1000, 2)
    assert (out[:200, 0] == 7).all() and not out[200:500, 0].any()
    assert (out[500:600, 0] == 7).all() and not out[600:, 0].any()
    assert not out[:200, 1].any() and (out[200:400, 1] == 9).all() and not out[400:, 1].any()


@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2000), st.integers(1, 300)), max_size=12),
    st.lists(st.integers(0, 2500), max_size=6),
)
def test_taking_in_pieces_equals_taking_at_once(
    placements: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    def build() -> StereoTimeline:
        timeline = StereoTimeline(1000, 0.0, tolerance=0.0)
        for i, (channel, at, n) in enumerate(placements):
            timeline.place(channel, np.full(n, i + 1, dtype=np.int16), at / 1000)
        return timeline

    whole = build().take(2.5)
    pieces = build()
    parts = [pieces.take(c / 1000) for c in sorted(cuts)] + [pieces.take(2.5)]
    assert (np.concatenate(parts) == whole).all()
    assert whole.shape == (2500, 2)
