"""ripp_audio: G.711 against the ITU-T G.711 tables, Opus through PyAV, WAV, resampling."""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ripp_audio import (
    Resampler,
    WavWriter,
    alaw_decode,
    alaw_encode,
    decoder_for,
    encoder_for,
    frames_from_wav,
    read_wav,
    resample,
    snr_db,
    tone,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)
from ripp_core import Codec

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)

# --- G.711 reference tables, built from the Recommendation's segment description ----------
#
# Table 1a (A-law) and Table 2a (mu-law) of ITU-T G.711 list 8 segments per sign, each of 16
# equal intervals; the decoder output is the middle of the interval. Here each table is
# rebuilt from the segment end points and step sizes the Recommendation gives, in its own
# scale (A-law: magnitudes up to 4096; mu-law: up to 8159), independently of the bit
# arithmetic in ripp_audio._g711. 16-bit PCM is that scale times 8 (A-law) or 4 (mu-law).
#
# The transmitted character: A-law puts 1 in the sign bit for positive values and inverts
# the even bits (XOR 0x55); mu-law puts 1 in the sign bit for positive values and inverts
# the other seven bits (smallest positive magnitude 0xFF, largest 0x80).

ALAW_SEGMENT_ENDS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
ALAW_STEPS = (2, 2, 4, 8, 16, 32, 64, 128)
ULAW_SEGMENT_ENDS = (31, 95, 223, 479, 991, 2015, 4063, 8159)
ULAW_STEPS = (2, 4, 8, 16, 32, 64, 128, 256)


def _table(ends: tuple[int, ...], steps: tuple[int, ...]) -> tuple[list[int], list[float]]:
    """(lower decision value, decoder output) of the 128 magnitude intervals, in order."""
    lows: list[int] = []
    outputs: list[float] = []
    for end, step in zip(ends, steps, strict=True):
        for i in range(16):
            low = end - step * (16 - i)
            lows.append(max(low, 0))
            outputs.append(low + step / 2)
    return lows, outputs


def _alaw_char(negative: bool, index: int) -> int:
    return ((0 if negative else 0x80) | index) ^ 0x55


def _ulaw_char(negative: bool, index: int) -> int:
    return (0x00 if negative else 0x80) | (0x7F - index)


def _reference(law: str) -> tuple[dict[int, int], npt.NDArray[np.uint8]]:
    """(decoded 16-bit value of every character, expected character of every int16)."""
    if law == "alaw":
        lows, outputs = _table(ALAW_SEGMENT_ENDS, ALAW_STEPS)
        scale, char = 8, _alaw_char
    else:
        lows, outputs = _table(ULAW_SEGMENT_ENDS, ULAW_STEPS)
        scale, char = 4, _ulaw_char
    decoded: dict[int, int] = {}
    for i, out in enumerate(outputs):
        decoded[char(False, i)] = round(out * scale)
        decoded[char(True, i)] = -round(out * scale)
    x = ALL_INT16.astype(np.int64)
    negative = x < 0
    # A 16-bit sample x < 0 has magnitude -x - 1 (the quantiser is symmetric about -0.5).
    magnitude = np.where(negative, -x - 1, x) // scale
    interval = np.searchsorted(np.array(lows), magnitude, side="right") - 1
    expected = np.array(
        [char(bool(n), int(i)) for n, i in zip(negative.tolist(), interval.tolist(), strict=True)],
        dtype=np.uint8,
    )
    return decoded, expected


ALAW_DECODED, ALAW_EXPECTED = _reference("alaw")
ULAW_DECODED, ULAW_EXPECTED = _reference("ulaw")


def test_g711_reference_points() -> None:
    def ulaw(x: int) -> int:
        return ulaw_encode(np.array([x], dtype=np.int16))[0]

    def alaw(x: int) -> int:
        return alaw_encode(np.array([x], dtype=np.int16))[0]

    assert ulaw(0) == 0xFF
    assert ulaw(-1) == 0x7F  # negative zero
    assert ulaw(32767) == 0x80
    assert ulaw(-32768) == 0x00
    assert list(ulaw_decode(b"\x7f\xff\x80\x00")) == [0, 0, 32124, -32124]  # 8031 * 4
    assert alaw(0) == 0xD5
    assert alaw(-1) == 0x55
    assert alaw(32767) == 0xAA
    assert alaw(-32768) == 0x2A
    assert list(alaw_decode(b"\xd5\x55\xaa\x2a")) == [8, -8, 32256, -32256]  # 4032 * 8


@pytest.mark.parametrize(
    ("decode", "table"), [(ulaw_decode, ULAW_DECODED), (alaw_decode, ALAW_DECODED)]
)
def test_g711_decoder_matches_table(
    decode: Callable[[bytes], npt.NDArray[np.int16]], table: dict[int, int]
) -> None:
    decoded = decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert {code: int(decoded[code]) for code in range(256)} == table


@pytest.mark.parametrize(
    ("encode", "expected"), [(ulaw_encode, ULAW_EXPECTED), (alaw_encode, ALAW_EXPECTED)]
)
def test_g711_encoder_matches_table_for_every_int16(
    encode: Callable[[npt.ArrayLike], bytes], expected: npt.NDArray[np.uint8]
) -> None:
    got = np.frombuffer(encode(ALL_INT16), dtype=np.uint8)
    mismatches = np.nonzero(got != expected)[0]
    assert mismatches.size == 0, [(int(ALL_INT16[i]), got[i], expected[i]) for i in mismatches[:5]]


def test_g711_every_code_round_trips() -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        decoded = decode(ALL_CODES)
        assert np.array_equal(decode(encode(decoded)), decoded)
    # encode(decode(b)) == b for all 256 A-law codes, and for mu-law all but negative zero.
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    assert [b for b in range(256) if again[b] != b] == [0x7F]
    assert again[0x7F] == 0xFF


@given(arrays(np.int16, st.integers(1, 400)))
def test_g711_quantiser_properties(pcm: npt.NDArray[np.int16]) -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        once = decode(encode(pcm))
        assert np.array_equal(decode(encode(once)), once)  # idempotent
        order = np.argsort(pcm, kind="stable")
        assert np.all(np.diff(once[order].astype(np.int32)) >= 0)  # monotone
        assert np.all((once.astype(np.int32) * pcm.astype(np.int32)) >= 0)  # keeps the sign


@pytest.mark.parametrize("codec", [Codec.PCMU, Codec.PCMA], ids=["PCMU", "PCMA"])
def test_g711_tone_snr(codec: Codec) -> None:
    encoder, decoder = encoder_for(codec, 0.02), decoder_for(codec)
    assert (encoder.input_rate, encoder.samples_per_frame, decoder.output_rate) == (8000, 160, 8000)
    for frequency, floor in ((1000, 30.0), (1004, 33.0)):  # 1004 Hz avoids the 8-sample cycle
        pcm = tone(frequency, 0.5, 8000)
        payloads = [encoder.encode(pcm[i : i + 160]) for i in range(0, pcm.size, 160)]
        assert all(len(p) == 160 for p in payloads)
        out = np.concatenate([decoder.decode(p) for p in payloads])
        assert snr_db(pcm, out) > floor  # measured: PCMU 46.6 / 36.9 dB, PCMA 36.9 / 35.9 dB


def test_opus_tone_snr() -> None:
    encoder, decoder = encoder_for(Codec.OPUS, 0.02, bitrate=24000), decoder_for(Codec.OPUS)
    assert (encoder.input_rate, encoder.samples_per_frame, decoder.output_rate) == (
        48000,
        960,
        48000,
    )
    pcm = tone(440, 1.0, 48000)
    payloads = [encoder.encode(pcm[i : i + 960]) for i in range(0, pcm.size, 960)]
    assert all(0 < len(p) < 200 for p in payloads)
    out = np.concatenate([decoder.decode(p) for p in payloads])
    assert out.size == pcm.size
    # Measured 23.3 dB with PyAV 18.1 / its bundled libopus; codec delay (312 samples) aligned.
    assert snr_db(pcm, out) > 15.0


@pytest.mark.parametrize("duration", [0.0025, 0.005, 0.01, 0.04, 0.06])
def test_opus_other_durations(duration: float) -> None:
    encoder, decoder = encoder_for(Codec.OPUS, duration), decoder_for(Codec.OPUS)
    pcm = tone(440, 0.3, 48000)[: encoder.samples_per_frame * 4]
    n = encoder.samples_per_frame
    out = [decoder.decode(encoder.encode(pcm[i : i + n])) for i in range(0, pcm.size, n)]
    assert [o.size for o in out] == [n] * 4


def test_unsupported_settings_raise() -> None:
    for duration in (0.03, 0.05):  # legal in RIPP, but libopus frames are 2.5..60 ms singles
        with pytest.raises(ValueError, match="multi-frame"):
            encoder_for(Codec.OPUS, duration)
    with pytest.raises(ValueError, match="does not allow"):
        encoder_for(Codec.PCMU, 0.025)
    with pytest.raises(ValueError, match="not an audio codec"):
        encoder_for(Codec.CN, 0.02)
    with pytest.raises(ValueError, match="not an audio codec"):
        decoder_for(Codec.TELEPHONE_EVENT)
    with pytest.raises(ValueError, match="take 160 samples"):
        encoder_for(Codec.PCMA, 0.02).encode(np.zeros(159, dtype=np.int16))
    with pytest.raises(ValueError, match="empty"):
        decoder_for(Codec.OPUS).decode(b"")


@pytest.mark.parametrize("codec", [Codec.PCMU, Codec.OPUS], ids=["PCMU", "OPUS"])
def test_conceal(codec: Codec) -> None:
    decoder = decoder_for(codec)
    rate = decoder.output_rate
    assert np.array_equal(decoder.conceal(0.02), np.zeros(round(0.02 * rate), dtype=np.int16))
    encoder = encoder_for(codec, 0.02)
    n = encoder.samples_per_frame
    pcm = tone(440, 0.2, rate)
    for i in range(5):
        decoder.decode(encoder.encode(pcm[i * n : (i + 1) * n]))
    first = decoder.conceal(0.02)
    assert first.size == n
    assert np.abs(first[: n // 4]).max() > 0.5 * np.abs(pcm).max()  # continues the tone...
    rest = decoder.conceal(0.04)
    assert rest[: n // 2].any()
    assert not rest[-n // 2 :].any()  # ...and is silent from 50 ms of loss on


def test_wav_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    pcm = tone(440, 0.25, 16000)
    write_wav(path, pcm, 16000)
    back, rate = read_wav(path)
    assert rate == 16000
    assert np.array_equal(back, pcm)


def _write_stereo(path: Path, left: npt.NDArray[np.int16], rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.stack([left, left], axis=1).astype("<i2").tobytes())


def test_frames_from_wav(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    _write_stereo(path, tone(440, 1.01, 44100), 44100)  # stereo, 44.1 kHz, 50.5 frames
    mono, rate = read_wav(path)
    assert (rate, mono.size) == (44100, round(1.01 * 44100))
    pcmu = list(frames_from_wav(path, Codec.PCMU, 0.02))
    assert [len(p) for p in pcmu] == [160] * 51  # last frame padded with silence
    opus = list(frames_from_wav(path, Codec.OPUS, 0.02))
    assert len(opus) == 51 and all(opus)
    decoder = decoder_for(Codec.PCMU)
    out = np.concatenate([decoder.decode(p) for p in pcmu])
    assert snr_db(tone(440, 1.01, 8000), out[:8080]) > 30.0
    with pytest.raises(ValueError):
        frames_from_wav(path, Codec.OPUS, 0.03)


def test_wav_writer_resamples_decoded_audio(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    encoder, decoder = encoder_for(Codec.PCMA, 0.02), decoder_for(Codec.PCMA)
    pcm = tone(440, 0.5, 8000)
    with WavWriter(path, 48000) as writer:
        for i in range(0, pcm.size, 160):
            writer.write(decoder.decode(encoder.encode(pcm[i : i + 160])), 8000)
    out, rate = read_wav(path)
    assert (rate, out.size) == (48000, 24000)
    assert snr_db(tone(440, 0.5, 48000), out) > 30.0


def test_resampler_preserves_tone() -> None:
    for low, high in ((8000, 48000), (16000, 48000), (44100, 48000)):
        up = resample(tone(440, 0.5, low), low, high)
        assert up.size == round(0.5 * high)
        assert snr_db(tone(440, 0.5, high), up) > 30.0  # measured about 64 dB
        down = resample(tone(440, 0.5, high), high, low)
        assert snr_db(tone(440, 0.5, low), down) > 30.0


@given(
    st.lists(st.integers(0, 700), min_size=1, max_size=8),
    st.sampled_from([(8000, 48000), (48000, 8000), (44100, 48000)]),
)
def test_streaming_resampler_matches_one_shot(chunks: list[int], rates: tuple[int, int]) -> None:
    pcm = tone(300, sum(chunks) / rates[0], rates[0])
    r = Resampler(*rates)
    parts: list[npt.NDArray[np.int16]] = []
    start = 0
    for size in chunks:
        parts.append(r.process(pcm[start : start + size]))
        start += size
    parts.append(r.flush())
    assert np.array_equal(np.concatenate(parts), resample(pcm, *rates))
