"""WAV files in and out (16-bit PCM, through the stdlib :mod:`wave` module)."""

from __future__ import annotations

import os
import wave
from collections.abc import Iterator
from types import TracebackType

import numpy as np
import numpy.typing as npt

from ripp_core import Codec

from ._codec import DEFAULT_OPUS_BITRATE, Encoder, encoder_for
from ._resample import Resampler, resample

__all__ = ["WavWriter", "frames_from_wav", "read_wav", "write_wav"]

Int16Array = npt.NDArray[np.int16]
StrPath = str | os.PathLike[str]


def read_wav(path: StrPath) -> tuple[Int16Array, int]:
    """Read a 16-bit PCM WAV file; return (mono ``int16`` samples, sample rate).

    Any sample rate and channel count is accepted; channels are averaged to mono. Other
    sample widths (8, 24, 32-bit, float) raise :class:`ValueError`.
    """
    with wave.open(os.fspath(path), "rb") as wav:
        width = wav.getsampwidth()
        if width != 2:
            raise ValueError(f"{path}: {8 * width}-bit WAV; only 16-bit PCM is supported")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if channels > 1:
        frames = samples[: samples.size - samples.size % channels].reshape(-1, channels)
        mixed = np.rint(frames.astype(np.float64).mean(axis=1))
        samples = mixed.astype(np.int16)
    return samples, rate


def write_wav(path: StrPath, pcm: npt.ArrayLike, rate: int) -> None:
    """Write mono ``int16`` samples to a 16-bit PCM WAV file at ``rate`` Hz."""
    with WavWriter(path, rate) as writer:
        writer.write(pcm, rate)


class WavWriter:
    """Writes decoded audio to a mono 16-bit WAV file at ``rate`` Hz, resampling as needed.

    Each :meth:`write` names the rate of its samples (8000 after G.711, 48000 after Opus).
    When that rate differs from the file's, a streaming :class:`Resampler` converts it; when
    the input rate changes mid-stream (the far end switched codec), the old resampler is
    flushed first, so nothing is lost (at most ~2 ms of filter tail overlaps into silence).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: StrPath, rate: int) -> None:
        self.rate = rate
        self._wav = wave.open(os.fspath(path), "wb")  # noqa: SIM115 - closed by close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._resampler: Resampler | None = None
        self._closed = False

    def _put(self, pcm: Int16Array) -> None:
        if pcm.size:
            self._wav.writeframes(pcm.astype("<i2").tobytes())

    def _finish_resampler(self) -> None:
        if self._resampler is not None:
            self._put(self._resampler.flush())
            self._resampler = None

    def write(self, pcm: npt.ArrayLike, rate: int) -> None:
        """Append mono ``int16`` samples taken at ``rate`` Hz."""
        if self._closed:
            raise ValueError("WavWriter is closed")
        arr = np.asarray(pcm)
        if arr.dtype != np.int16 or arr.ndim != 1:
            raise TypeError(f"expected a 1-D int16 array, got {arr.dtype} shape {arr.shape}")
        if rate == self.rate:
            self._finish_resampler()
            self._put(arr)
            return
        if self._resampler is None or self._resampler.from_rate != rate:
            self._finish_resampler()
            self._resampler = Resampler(rate, self.rate)
        self._put(self._resampler.process(arr))

    def close(self) -> None:
        """Flush any resampler tail and close the file. Idempotent."""
        if self._closed:
            return
        self._finish_resampler()
        self._wav.close()
        self._closed = True

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def frames_from_wav(
    path: StrPath,
    codec: Codec,
    frame_duration: float,
    *,
    bitrate: int = DEFAULT_OPUS_BITRATE,
) -> Iterator[bytes]:
    """Yield the payloads of ``codec`` frames of ``frame_duration`` s encoding a WAV file.

    The file (16-bit PCM, any rate, mono or stereo) is downmixed, resampled to the codec's
    input rate (8 kHz for G.711, 48 kHz for Opus), cut into frames and encoded; the last
    frame is padded with silence. ``bitrate`` applies to Opus only. Invalid codec or
    duration raises :class:`ValueError` at the call, before the file is read.
    """
    encoder = encoder_for(codec, frame_duration, bitrate=bitrate)
    return _frames(path, encoder)


def _frames(path: StrPath, encoder: Encoder) -> Iterator[bytes]:
    samples, rate = read_wav(path)
    pcm = resample(samples, rate, encoder.input_rate)
    size = encoder.samples_per_frame
    remainder = pcm.size % size
    if remainder:
        pcm = np.concatenate([pcm, np.zeros(size - remainder, dtype=np.int16)])
    for start in range(0, pcm.size, size):
        yield encoder.encode(pcm[start : start + size])
