"""The sans-IO core of the voice-application API: samples in and out, no I/O, no clock.

Everything here is decided from its inputs alone (received media items, PCM, times the
caller passes in), so it is tested deterministically; :mod:`ripp_audio._voicecall` wraps it
around a live call.

* :class:`MediaDecoder`: received media items (frames, gaps, DTMF) -> :class:`AudioChunk`
  of 16-bit PCM at the rate the application asks for, gaps concealed, comfort noise and
  telephone events kept apart as events while the PCM timeline stays continuous.
* :class:`PcmEncoder`: PCM at any rate -> payloads of one codec and frame duration.
* :class:`EnergyVad`: a frame-energy voice-activity detector for barge-in.
* :class:`StereoTimeline`: two channels of PCM placed at wall-clock times, read out in
  order with silence where nothing was placed (the core of the call recorder).
"""

from __future__ import annotations

import enum
import math

import attrs
import numpy as np
import numpy.typing as npt

from ripp_core import Codec, DtmfReceived, MediaFrame, MediaGap

from ._codec import DEFAULT_OPUS_BITRATE, Decoder, Encoder, decoder_for, encoder_for
from ._resample import Resampler

__all__ = [
    "AudioChunk",
    "BargeIn",
    "ChunkKind",
    "ComfortNoise",
    "EnergyVad",
    "MediaDecoder",
    "PcmEncoder",
    "StereoTimeline",
    "VoiceEvent",
    "level_dbfs",
]

Int16Array = npt.NDArray[np.int16]

_AUDIO_CODECS = (Codec.PCMU, Codec.PCMA, Codec.OPUS)


class ChunkKind(enum.Enum):
    """Where the samples of an :class:`AudioChunk` came from."""

    DECODED = "decoded"
    """Decoded from a received audio frame."""
    CONCEALED = "concealed"
    """Synthesised for a frame that never came (or could not be decoded)."""
    COMFORT_NOISE = "comfort-noise"
    """Noise generated at the level a comfort-noise frame (RFC 3389) asked for."""
    SILENCE = "silence"
    """Silence in place of telephone-event frames (the digit itself is a separate event)."""


@attrs.frozen(eq=False)
class AudioChunk:
    """Mono 16-bit PCM at ``rate`` Hz, in playout order; chunks tile the call's timeline."""

    samples: Int16Array
    rate: int
    kind: ChunkKind
    sequence: int | None = None
    """The media frame (or gap) this chunk stands for; None for a resampler's tail (the
    last ~2 ms of the frames before a codec switch, or before the end), whose ``kind`` is
    that of the frame before it."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.size / self.rate


@attrs.frozen
class ComfortNoise:
    """The far end sent comfort noise (RFC 3389) instead of speech for ``duration`` s."""

    sequence: int
    duration: float
    level_dbov: int
    """Noise level, in -dBov (0 is loudest, 127 quietest)."""


@attrs.frozen
class BargeIn:
    """The far end started talking while our audio played: ``dropped`` queued frames were
    cleared (emitted by :class:`ripp_audio.VoiceCall` when it has a VAD)."""

    dropped: int


#: What a voice application's event iterator yields.
VoiceEvent = AudioChunk | ComfortNoise | DtmfReceived | BargeIn


class MediaDecoder:
    """Turns received media items into PCM at ``rate`` and events.

    Feed it every item of a call's media stream in order (:meth:`feed`): ``MediaFrame``
    (any codec, switching at will), ``MediaGap`` and ``DtmfReceived``. Audio frames are
    decoded with one decoder per codec and resampled to ``rate``; a gap or an undecodable
    payload is concealed by the last decoder used; a comfort-noise frame yields a
    :class:`ComfortNoise` event and noise at its level; a telephone-event frame yields
    silence (the digit arrives as ``DtmfReceived``, passed through). So the PCM chunks
    always cover the whole timeline, one per frame or gap, and the events ride alongside.
    ``seed`` makes the comfort noise reproducible.
    """

    def __init__(self, rate: int, *, seed: int = 0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._decoders: dict[Codec, Decoder] = {}
        self._last: Decoder | None = None
        self._resampler: Resampler | None = None
        self._source_rate = rate
        self._noise = np.random.default_rng(seed)
        self._tail_kind = ChunkKind.DECODED  # what the resampler's held samples came from

    def _through(self, pcm: Int16Array, source_rate: int) -> tuple[Int16Array, Int16Array]:
        """Resample ``pcm`` to ``self.rate``; returns (tail of the previous rate, output)."""
        tail = np.zeros(0, dtype=np.int16)
        if source_rate != self._source_rate:
            # The far end switched codec (and so clock rate): finish the old filter first,
            # so no sample is lost across the switch.
            if self._resampler is not None:
                tail = self._resampler.flush()
            self._resampler = None
            self._source_rate = source_rate
        if source_rate == self.rate:
            return tail, pcm
        if self._resampler is None:
            self._resampler = Resampler(source_rate, self.rate)
        return tail, self._resampler.process(pcm)

    def _chunks(
        self, pcm: Int16Array, source_rate: int, kind: ChunkKind, sequence: int
    ) -> list[AudioChunk]:
        tail, out = self._through(pcm, source_rate)
        chunks = []
        if tail.size:  # the filter's last samples, of whatever went through it last
            chunks.append(AudioChunk(tail, self.rate, self._tail_kind))
        chunks.append(AudioChunk(out, self.rate, kind, sequence))
        self._tail_kind = kind
        return chunks

    def _silence(self, duration: float) -> Int16Array:
        return np.zeros(round(duration * self._source_rate), dtype=np.int16)

    def _conceal(self, duration: float, sequence: int) -> list[AudioChunk]:
        if self._last is None:  # nothing decoded yet: nothing to repeat
            return self._chunks(
                self._silence(duration), self._source_rate, ChunkKind.CONCEALED, sequence
            )
        pcm = self._last.conceal(duration)
        return self._chunks(pcm, self._last.output_rate, ChunkKind.CONCEALED, sequence)

    def feed(self, item: MediaFrame | MediaGap | DtmfReceived) -> list[VoiceEvent]:
        """Decode one item; return the chunks and events it makes, in order."""
        if isinstance(item, DtmfReceived):
            return [item]
        if isinstance(item, MediaGap):
            return list(self._conceal(item.duration, item.sequence))
        codec = item.codec
        if codec in _AUDIO_CODECS:
            decoder = self._decoders.get(codec)
            if decoder is None:
                decoder = self._decoders[codec] = decoder_for(codec)
            try:
                pcm = decoder.decode(item.payload)
            except ValueError:
                # A corrupt payload is treated as lost rather than ending the stream.
                self._last = decoder
                return list(self._conceal(item.duration, item.sequence))
            self._last = decoder
            return list(self._chunks(pcm, decoder.output_rate, ChunkKind.DECODED, item.sequence))
        if codec is Codec.CN:
            level = item.payload[0] & 0x7F if item.payload else 127
            noise = self._comfort_noise(level, item.duration)
            events: list[VoiceEvent] = [ComfortNoise(item.sequence, item.duration, level)]
            events.extend(
                self._chunks(noise, self._source_rate, ChunkKind.COMFORT_NOISE, item.sequence)
            )
            return events
        # Telephone events: silence keeps the timeline; the digit is reported separately.
        return list(
            self._chunks(
                self._silence(item.duration), self._source_rate, ChunkKind.SILENCE, item.sequence
            )
        )

    def _comfort_noise(self, level_dbov: int, duration: float) -> Int16Array:
        # RFC 3389: level in -dBov, 0 dBov being the power of a full-scale square wave
        # (so an RMS of 32767 for 16-bit samples).
        rms = 32767.0 * 10.0 ** (-level_dbov / 20.0)
        noise = self._noise.normal(0.0, rms, round(duration * self._source_rate))
        return np.clip(np.rint(noise), -32768, 32767).astype(np.int16)

    def flush(self) -> list[AudioChunk]:
        """The resampler's last samples, once the stream has ended."""
        if self._resampler is None:
            return []
        tail = self._resampler.flush()
        self._resampler = None
        return [AudioChunk(tail, self.rate, self._tail_kind)] if tail.size else []


class PcmEncoder:
    """Turns PCM at any rate into payloads of ``codec`` frames of ``frame_duration`` s.

    :meth:`encode` resamples to the codec's rate and returns the whole frames it can make,
    keeping the remainder for the next call; :meth:`flush` pads the remainder with silence
    to a last frame. One encoder per call and direction (Opus keeps state between frames).
    """

    def __init__(
        self, codec: Codec, frame_duration: float, *, bitrate: int = DEFAULT_OPUS_BITRATE
    ) -> None:
        self._encoder: Encoder = encoder_for(codec, frame_duration, bitrate=bitrate)
        self.codec = codec
        self.frame_duration = frame_duration
        self._pending: Int16Array = np.zeros(0, dtype=np.int16)
        self._resampler: Resampler | None = None

    @property
    def rate(self) -> int:
        """The codec's own sample rate (8000 for G.711, 48000 for Opus)."""
        return self._encoder.input_rate

    @property
    def pending_seconds(self) -> float:
        """Audio held back until a whole frame is there."""
        return self._pending.size / self.rate

    def _frames(self, pcm: Int16Array) -> list[bytes]:
        self._pending = np.concatenate([self._pending, pcm])
        step = self._encoder.samples_per_frame
        whole = self._pending.size // step
        payloads = [
            self._encoder.encode(self._pending[i * step : (i + 1) * step]) for i in range(whole)
        ]
        self._pending = self._pending[whole * step :]
        return payloads

    def encode(self, pcm: npt.ArrayLike, rate: int) -> list[bytes]:
        """Append mono ``int16`` samples at ``rate`` Hz; return the frames now complete."""
        arr = np.asarray(pcm)
        if arr.dtype != np.int16 or arr.ndim != 1:
            raise TypeError(f"expected a 1-D int16 array, got {arr.dtype} shape {arr.shape}")
        if rate <= 0:
            raise ValueError("rate must be positive")
        out: list[bytes] = []
        if self._resampler is not None and self._resampler.from_rate != rate:
            out += self._frames(self._resampler.flush())
            self._resampler = None
        if rate == self.rate:
            return out + self._frames(arr)
        if self._resampler is None:
            self._resampler = Resampler(rate, self.rate)
        return out + self._frames(self._resampler.process(arr))

    def flush(self) -> list[bytes]:
        """Encode what is held back, padded with silence to a whole frame."""
        out: list[bytes] = []
        if self._resampler is not None:
            out += self._frames(self._resampler.flush())
            self._resampler = None
        if self._pending.size:
            step = self._encoder.samples_per_frame
            pad = np.zeros(step - self._pending.size, dtype=np.int16)
            out += self._frames(pad)
        return out


def level_dbfs(pcm: npt.ArrayLike) -> float:
    """RMS level of ``pcm`` in dB relative to full scale (32768); -inf for silence."""
    arr = np.asarray(pcm, dtype=np.float64)
    if arr.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(arr * arr)))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


class EnergyVad:
    """Voice-activity detection by frame energy, for barge-in.

    Audio is measured in ``window`` second blocks. Speech starts after ``min_speech``
    seconds of consecutive blocks louder than ``threshold_dbfs`` (so a click does not stop
    a prompt) and ends after ``hangover`` seconds of quieter blocks (so the pauses between
    words do not end it). :meth:`feed` returns True on the block where speech starts.
    Comfort noise and line noise sit far below the default threshold (-35 dBFS, about the
    level of quiet speech on a telephone line).
    """

    def __init__(
        self,
        *,
        threshold_dbfs: float = -35.0,
        min_speech: float = 0.06,
        hangover: float = 0.4,
        window: float = 0.01,
    ) -> None:
        if window <= 0 or min_speech < 0 or hangover < 0:
            raise ValueError("window must be positive, min_speech and hangover not negative")
        self.threshold_dbfs = threshold_dbfs
        self.min_speech = min_speech
        self.hangover = hangover
        self.window = window
        self.speaking = False
        self._loud = 0.0  # seconds of consecutive loud blocks
        self._quiet = 0.0  # seconds of consecutive quiet blocks while speaking
        self._rest: Int16Array = np.zeros(0, dtype=np.int16)
        self._rate: int | None = None

    def feed(self, pcm: npt.ArrayLike, rate: int) -> bool:
        """Add samples at ``rate`` Hz; return True if speech started within them."""
        arr = np.asarray(pcm, dtype=np.int16)
        if rate != self._rate:
            self._rest, self._rate = np.zeros(0, dtype=np.int16), rate
        data = np.concatenate([self._rest, arr])
        step = max(1, round(self.window * rate))
        blocks = data.size // step
        self._rest = data[blocks * step :]
        started = False
        for i in range(blocks):
            loud = level_dbfs(data[i * step : (i + 1) * step]) > self.threshold_dbfs
            seconds = step / rate
            if loud:
                self._loud += seconds
                self._quiet = 0.0
                if not self.speaking and self._loud >= self.min_speech - 1e-9:
                    self.speaking = True
                    started = True
            else:
                self._loud = 0.0
                if self.speaking:
                    self._quiet += seconds
                    if self._quiet >= self.hangover - 1e-9:
                        self.speaking = False
                        self._quiet = 0.0
        return started


class StereoTimeline:
    """Two channels of PCM at ``rate`` placed on a wall-clock timeline starting at ``start``.

    :meth:`place` puts samples at a time on one channel. Audio that continues where the
    channel's last placement ended is appended seamlessly even if the times jitter by up to
    ``tolerance`` seconds (chunks of a stream are read at slightly irregular moments);
    beyond that the audio goes where its time says, leaving silence (or overwriting, if the
    clock went backwards). :meth:`cut` drops what was placed at or after a time (audio that
    was queued but then cleared). :meth:`take` returns the interleaved frames up to a time,
    silence where nothing was placed, and forgets them.
    """

    def __init__(self, rate: int, start: float, *, tolerance: float = 0.08) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.start = start
        self.tolerance = tolerance
        self._segments: list[list[tuple[int, Int16Array]]] = [[], []]
        self._cursor = [0, 0]  # per channel: sample index where the last placement ended
        self._taken = 0  # sample index up to which frames were returned

    def _index(self, at: float) -> int:
        return round((at - self.start) * self.rate)

    def cursor(self, channel: int) -> float:
        """The time at which the channel's last placement ends."""
        return self.start + self._cursor[channel] / self.rate

    def place(self, channel: int, pcm: npt.ArrayLike, at: float) -> None:
        """Put mono ``int16`` samples (at the timeline's rate) on ``channel`` (0 or 1) at ``at``."""
        arr = np.asarray(pcm, dtype=np.int16)
        target = self._index(at)
        cursor = self._cursor[channel]
        index = cursor if abs(target - cursor) <= self.tolerance * self.rate else target
        if index < self._taken:  # already written out: keep only what is still to come
            arr = arr[self._taken - index :]
            index = self._taken
        if arr.size:
            self._segments[channel].append((index, arr.copy()))
        self._cursor[channel] = max(index + arr.size, self._taken)

    def cut(self, channel: int, at: float) -> None:
        """Forget what ``channel`` holds at or after ``at``."""
        index = max(self._index(at), self._taken)
        kept = []
        for start, arr in self._segments[channel]:
            if start < index:
                kept.append((start, arr[: index - start]))
        self._segments[channel] = kept
        self._cursor[channel] = min(self._cursor[channel], index)

    @property
    def end(self) -> float:
        """The time up to which anything was placed."""
        return self.start + max(self._cursor) / self.rate

    def take(self, until: float) -> npt.NDArray[np.int16]:
        """Return frames from the last :meth:`take` up to ``until``, shape (n, 2)."""
        stop = self._index(until)
        n = max(0, stop - self._taken)
        out = np.zeros((n, 2), dtype=np.int16)
        for channel in (0, 1):
            rest = []
            for start, arr in self._segments[channel]:
                lo, hi = max(start, self._taken), min(start + arr.size, self._taken + n)
                if hi > lo:
                    later = start + arr.size > self._taken + n
                    out[lo - self._taken : hi - self._taken, channel] = arr[lo - start : hi - start]
                    if later:
                        rest.append((hi, arr[hi - start :]))
                elif start + arr.size > self._taken + n:
                    rest.append((start, arr))
            self._segments[channel] = rest
        self._taken += n
        return out
