"""Per-frame encoders and decoders for the RIPP audio codecs: PCMU, PCMA and Opus."""

from __future__ import annotations

import abc
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

from ripp_core import ALLOWED_DURATION_UNITS, Codec

from ._conceal import Concealer
from ._g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = [
    "DEFAULT_OPUS_BITRATE",
    "G711_RATE",
    "OPUS_RATE",
    "Decoder",
    "Encoder",
    "G711Decoder",
    "G711Encoder",
    "OpusDecoder",
    "OpusEncoder",
    "decoder_for",
    "encoder_for",
]

Int16Array = npt.NDArray[np.int16]

#: Sample rate of G.711 audio.
G711_RATE = 8000
#: Sample rate at which Opus is encoded and decoded here (the RIPP media clock rate).
OPUS_RATE = 48000
#: Opus bit rate used when :func:`encoder_for` is not given one (wideband speech).
DEFAULT_OPUS_BITRATE = 24000
#: Frame durations libopus encodes in one frame, in wire units of 0.5 ms.
_LIBOPUS_UNITS = frozenset({5, 10, 20, 40, 80, 120})

_AUDIO_CODECS = (Codec.PCMU, Codec.PCMA, Codec.OPUS)


def _duration_units(codec: Codec, frame_duration: float) -> int:
    if codec not in _AUDIO_CODECS:
        raise ValueError(f"{codec.name} is not an audio codec (use PCMU, PCMA or OPUS)")
    units = round(frame_duration / 0.0005)
    if abs(units * 0.0005 - frame_duration) > 1e-9 or units not in ALLOWED_DURATION_UNITS[codec]:
        allowed = ", ".join(f"{u / 2:g}" for u in sorted(ALLOWED_DURATION_UNITS[codec]))
        raise ValueError(
            f"{codec.name} does not allow {frame_duration * 1000:g} ms frames "
            f"(allowed: {allowed} ms)"
        )
    return units


class Encoder(abc.ABC):
    """Encodes fixed-size frames of mono ``int16`` PCM at :attr:`input_rate` into payloads.

    Each call of :meth:`encode` takes exactly :attr:`samples_per_frame` samples and returns
    the payload of one RIPP MEDIA frame of :attr:`frame_duration` seconds.
    """

    codec: Codec
    frame_duration: float
    input_rate: int

    @property
    def samples_per_frame(self) -> int:
        """Samples that :meth:`encode` takes per call."""
        return round(self.frame_duration * self.input_rate)

    def _check(self, pcm: npt.ArrayLike) -> Int16Array:
        arr = np.asarray(pcm)
        if arr.dtype != np.int16 or arr.ndim != 1:
            raise TypeError(f"expected a 1-D int16 array, got {arr.dtype} shape {arr.shape}")
        if arr.size != self.samples_per_frame:
            raise ValueError(
                f"{self.codec.name} {self.frame_duration * 1000:g} ms frames take "
                f"{self.samples_per_frame} samples at {self.input_rate} Hz, got {arr.size}"
            )
        return arr

    @abc.abstractmethod
    def encode(self, pcm: npt.ArrayLike) -> bytes:
        """Encode one frame of ``samples_per_frame`` ``int16`` samples; return the payload."""


class Decoder(abc.ABC):
    """Decodes payloads of one codec to mono ``int16`` PCM at :attr:`output_rate`.

    :meth:`conceal` fills a :class:`ripp_core.MediaGap`: it repeats the last pitch period of
    the decoded audio, fading to silence within 50 ms of consecutive loss.
    """

    codec: Codec
    output_rate: int

    def __init__(self) -> None:
        self._concealer = Concealer(self.output_rate)

    @abc.abstractmethod
    def _decode(self, payload: bytes) -> Int16Array: ...

    def decode(self, payload: bytes) -> Int16Array:
        """Decode one frame's payload. Raises :class:`ValueError` for a corrupt payload."""
        pcm = self._decode(payload)
        self._concealer.good(pcm)
        return pcm

    def conceal(self, duration: float) -> Int16Array:
        """Return ``duration`` seconds of audio to play in place of a lost frame."""
        if duration < 0:
            raise ValueError("duration must not be negative")
        return self._concealer.conceal(round(duration * self.output_rate))


class G711Encoder(Encoder):
    """PCMU or PCMA encoder: 8 kHz input, one byte per sample."""

    input_rate = G711_RATE

    def __init__(self, codec: Codec, frame_duration: float) -> None:
        if codec not in (Codec.PCMU, Codec.PCMA):
            raise ValueError(f"{codec.name} is not G.711")
        _duration_units(codec, frame_duration)
        self.codec = codec
        self.frame_duration = frame_duration
        self._encode = ulaw_encode if codec is Codec.PCMU else alaw_encode

    def encode(self, pcm: npt.ArrayLike) -> bytes:
        """Encode one frame (``samples_per_frame`` samples at 8 kHz)."""
        return self._encode(self._check(pcm))


class G711Decoder(Decoder):
    """PCMU or PCMA decoder: any payload length, one 8 kHz sample per byte."""

    output_rate = G711_RATE

    def __init__(self, codec: Codec) -> None:
        if codec not in (Codec.PCMU, Codec.PCMA):
            raise ValueError(f"{codec.name} is not G.711")
        self.codec = codec
        self._decode_law = ulaw_decode if codec is Codec.PCMU else alaw_decode
        super().__init__()

    def _decode(self, payload: bytes) -> Int16Array:
        return self._decode_law(payload)


class OpusEncoder(Encoder):
    """Opus encoder (libopus through PyAV): 48 kHz mono input, VBR at ``bitrate`` b/s.

    Frame durations are those libopus codes as one frame: 2.5, 5, 10, 20, 40 and 60 ms.
    RIPP also allows 30 and 50 ms, which Opus can only carry as multi-frame packets; FFmpeg's
    libopus wrapper cannot produce those, so they raise :class:`ValueError` here (decoding
    such packets from a peer works).
    """

    input_rate = OPUS_RATE

    def __init__(
        self,
        frame_duration: float,
        *,
        bitrate: int = DEFAULT_OPUS_BITRATE,
        application: str = "voip",
    ) -> None:
        units = _duration_units(Codec.OPUS, frame_duration)
        if units not in _LIBOPUS_UNITS:
            raise ValueError(
                f"Opus {frame_duration * 1000:g} ms frames are legal in RIPP but need multi-frame "
                "Opus packets, which this encoder (libopus via FFmpeg) cannot produce; "
                "use 2.5, 5, 10, 20, 40 or 60 ms"
            )
        self.codec = Codec.OPUS
        self.frame_duration = frame_duration
        self.bitrate = bitrate
        ctx = av.CodecContext.create("libopus", "w")
        assert isinstance(ctx, AudioCodecContext)
        ctx.sample_rate = OPUS_RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = bitrate
        ctx.time_base = Fraction(1, OPUS_RATE)
        ctx.options = {"frame_duration": f"{units / 2:g}", "application": application}
        ctx.open()
        self._ctx = ctx
        self._pts = 0

    def encode(self, pcm: npt.ArrayLike) -> bytes:
        """Encode one frame (``samples_per_frame`` samples at 48 kHz) to one Opus packet."""
        arr = self._check(pcm)
        frame = av.AudioFrame.from_ndarray(arr.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        frame.pts = self._pts
        self._pts += arr.size
        packets = self._ctx.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(f"libopus returned {len(packets)} packets for one frame")
        return bytes(packets[0])


class OpusDecoder(Decoder):
    """Opus decoder (libopus through PyAV): any legal Opus packet, 48 kHz mono output.

    Stereo packets are downmixed by libopus. Loss concealment is :meth:`Decoder.conceal`
    (PyAV cannot ask libopus for its own PLC).
    """

    codec = Codec.OPUS
    output_rate = OPUS_RATE

    def __init__(self) -> None:
        ctx = av.CodecContext.create("libopus", "r")
        assert isinstance(ctx, AudioCodecContext)
        ctx.sample_rate = OPUS_RATE
        ctx.layout = "mono"
        self._ctx = ctx
        super().__init__()

    def _decode(self, payload: bytes) -> Int16Array:
        if not payload:
            raise ValueError("empty Opus payload")
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except av.FFmpegError as exc:
            raise ValueError(f"corrupt Opus payload: {exc}") from exc
        parts: list[Int16Array] = []
        for frame in frames:
            data = frame.to_ndarray()
            if data.dtype != np.int16:  # float planar/packed output from other builds
                data = np.clip(np.rint(data * 32768.0), -32768, 32767)
            parts.append(np.asarray(data, dtype=np.int16).reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def encoder_for(
    codec: Codec, frame_duration: float, *, bitrate: int = DEFAULT_OPUS_BITRATE
) -> Encoder:
    """Return a new encoder for ``codec`` at ``frame_duration`` seconds per frame.

    ``bitrate`` (bits per second) applies to Opus only. Raises :class:`ValueError` for a
    codec that is not audio, a duration RIPP does not allow for the codec, or Opus 30/50 ms.
    """
    if codec in (Codec.PCMU, Codec.PCMA):
        return G711Encoder(codec, frame_duration)
    if codec is Codec.OPUS:
        return OpusEncoder(frame_duration, bitrate=bitrate)
    raise ValueError(f"{codec.name} is not an audio codec (use PCMU, PCMA or OPUS)")


def decoder_for(codec: Codec) -> Decoder:
    """Return a new decoder for ``codec`` (PCMU, PCMA or OPUS); one per call and direction."""
    if codec in (Codec.PCMU, Codec.PCMA):
        return G711Decoder(codec)
    if codec is Codec.OPUS:
        return OpusDecoder()
    raise ValueError(f"{codec.name} is not an audio codec (use PCMU, PCMA or OPUS)")
