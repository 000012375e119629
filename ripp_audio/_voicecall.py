"""The voice-application API around a live call: PCM in and out, barge-in, recording.

Loop-agnostic like :mod:`ripp_core.aio`: it only uses a :class:`ripp_core.aio.Call` (which
waits through its driver), so it works the same under Trio and asyncio. The decisions are
made by the sans-IO pieces in :mod:`ripp_audio._voice`.
"""

from __future__ import annotations

import os
import wave
from collections.abc import AsyncGenerator
from types import TracebackType

import numpy as np
import numpy.typing as npt

from ripp_core import CallTerminated, Codec, MarkReached
from ripp_core.aio import Call

from ._codec import DEFAULT_OPUS_BITRATE, decoder_for
from ._resample import Resampler
from ._voice import (
    AudioChunk,
    BargeIn,
    EnergyVad,
    MediaDecoder,
    PcmEncoder,
    StereoTimeline,
    VoiceEvent,
)
from ._wav import read_wav

__all__ = ["CallRecorder", "VoiceCall"]

StrPath = str | os.PathLike[str]

#: Recorder channels: the far end's audio on the left, ours on the right.
FAR, NEAR = 0, 1


class CallRecorder:
    """Records both directions of a call to a stereo 16-bit WAV file, aligned to the clock.

    Left channel: what the far end sent (as played out); right channel: what we played.
    Each direction is placed at the time it was heard or sent, with silence for gaps, so
    the two line up as on the wire. Audio is written ``lag`` seconds behind the clock, since
    our own audio is placed when it is queued, ahead of time, and can still be cleared.
    A :class:`VoiceCall` feeds it; :meth:`close` finishes the file.
    """

    def __init__(self, path: StrPath, *, rate: int = 8000, lag: float = 1.0) -> None:
        self.path = os.fspath(path)
        self.rate = rate
        self.lag = lag
        self._wav: wave.Wave_write | None = None
        self._timeline: StereoTimeline | None = None
        self._resamplers: dict[tuple[int, int], Resampler] = {}
        self._closed = False

    def _start(self, now: float) -> StereoTimeline:
        if self._timeline is None:
            self._timeline = StereoTimeline(self.rate, now)
            wav = wave.open(self.path, "wb")  # noqa: SIM115 - closed by close()
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            self._wav = wav
        return self._timeline

    def _convert(
        self, channel: int, pcm: npt.NDArray[np.int16], rate: int
    ) -> npt.NDArray[np.int16]:
        if rate == self.rate:
            return pcm
        key = (channel, rate)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = Resampler(rate, self.rate)
        return resampler.process(pcm)

    def add(self, channel: int, pcm: npt.NDArray[np.int16], rate: int, at: float) -> None:
        """Place ``pcm`` (``rate`` Hz) on ``channel`` (0 far end, 1 near end) at ``at``."""
        if self._closed:
            return
        timeline = self._start(at)
        timeline.place(channel, self._convert(channel, pcm, rate), at)

    def cut(self, channel: int, at: float) -> None:
        """Drop what ``channel`` holds from ``at`` on (our queued audio was cleared)."""
        if self._timeline is not None:
            self._timeline.cut(channel, at)

    def write(self, now: float) -> None:
        """Write out what lies more than ``lag`` seconds in the past."""
        if self._timeline is not None and self._wav is not None and not self._closed:
            frames = self._timeline.take(now - self.lag)
            if frames.size:
                self._wav.writeframes(frames.astype("<i2").tobytes())

    def close(self, now: float) -> None:
        """Write everything up to ``now`` (drop our audio queued beyond it) and close."""
        if self._closed:
            return
        if self._timeline is not None and self._wav is not None:
            self._timeline.cut(NEAR, now)
            self._timeline.cut(FAR, now)
            frames = self._timeline.take(max(now, self._timeline.end))
            self._wav.writeframes(frames.astype("<i2").tobytes())
            self._wav.close()
        self._closed = True

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Without a clock here, finish at the end of what was placed.
        if self._timeline is not None:
            self.close(self._timeline.end)
        else:
            self._closed = True


class VoiceCall:
    """A call as a voice application sees it: PCM at ``rate`` in both directions.

    * :meth:`events` yields :class:`AudioChunk` (decoded, concealed, comfort noise or
      silence: together a continuous timeline at ``rate``), and apart from them
      :class:`ComfortNoise`, :class:`ripp_core.DtmfReceived` and :class:`BargeIn` events.
    * :meth:`play` / :meth:`play_wav` encode PCM (any rate) as ``codec`` frames of
      ``frame_duration`` s and queue them on the call's pacer, which sends at real-time
      pace however fast the audio is handed over; :meth:`played` waits until the far end
      has acknowledged all of it, :meth:`clear` drops what has not left.
    * :meth:`hang_up` ends the call after what was queued has been played (or at once).
    * ``vad``: when given, speech from the far end while our audio is queued clears it
      (barge-in) and yields :class:`BargeIn`.
    * ``recorder``: when given, both directions are recorded (see :class:`CallRecorder`).
    """

    def __init__(
        self,
        call: Call,
        *,
        rate: int = 16000,
        codec: Codec = Codec.PCMU,
        frame_duration: float = 0.02,
        bitrate: int = DEFAULT_OPUS_BITRATE,
        vad: EnergyVad | None = None,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.call = call
        self.rate = rate
        self.vad = vad
        self.recorder = recorder
        self._decoder = MediaDecoder(rate)
        self._encoder = PcmEncoder(codec, frame_duration, bitrate=bitrate)
        self._echo = decoder_for(codec)  # our own frames, decoded for the recording
        self._queued_until = -1.0  # driver time at which our queued audio runs out

    @property
    def codec(self) -> Codec:
        """The codec our audio is sent in."""
        return self._encoder.codec

    @property
    def playing(self) -> bool:
        """True while audio we queued has not all left (by the pacer's real-time clock)."""
        return self.call.time() < self._queued_until

    async def events(self) -> AsyncGenerator[VoiceEvent, None]:
        """Decoded audio and events from the far end, in playout order; ends with the call."""
        async for item in self.call.media():
            for event in self._decoder.feed(item):
                barge = self._observe(event)
                yield event
                if barge is not None:
                    yield barge
        for chunk in self._decoder.flush():
            yield chunk
        if self.recorder is not None:
            self.recorder.close(self.call.time())

    def _observe(self, event: VoiceEvent) -> BargeIn | None:
        if not isinstance(event, AudioChunk):
            return None
        now = self.call.time()
        if self.recorder is not None:
            self.recorder.add(FAR, event.samples, event.rate, now)
            self.recorder.write(now)
        if self.vad is not None and self.vad.feed(event.samples, event.rate) and self.playing:
            dropped = self.clear()
            if dropped:
                return BargeIn(dropped)
        return None

    def play(self, pcm: npt.ArrayLike, rate: int, *, flush: bool = True) -> int:
        """Queue mono ``int16`` PCM at ``rate`` Hz; returns the number of frames queued.

        ``flush=False`` keeps a part frame back for the next call (streamed synthesis);
        the default pads the end with silence to a whole frame.
        """
        arr = np.asarray(pcm)
        payloads = self._encoder.encode(arr, rate)
        if flush:
            payloads += self._encoder.flush()
        self._queue(payloads)
        return len(payloads)

    def play_wav(self, path: StrPath) -> int:
        """Queue a 16-bit WAV file (any rate; stereo is downmixed); returns frames queued."""
        samples, rate = read_wav(path)
        return self.play(samples, rate)

    def _queue(self, payloads: list[bytes]) -> None:
        if not payloads:
            return
        duration = self._encoder.frame_duration
        now = self.call.time()
        start = max(now, self._queued_until)
        for payload in payloads:
            self.call.play(self.codec, duration, payload)
        self._queued_until = start + len(payloads) * duration
        if self.recorder is not None:
            # Decode what we send, so the recording has exactly what the far end hears.
            pcm = np.concatenate([self._echo.decode(payload) for payload in payloads])
            self.recorder.add(NEAR, pcm, self._echo.output_rate, start)

    async def played(self, name: str = "played") -> MarkReached:
        """Wait until the far end has acknowledged every frame queued so far."""
        return await self.call.mark(name)

    def clear(self) -> int:
        """Drop our audio that has not left yet (barge-in); returns frames dropped."""
        dropped = self.call.clear()
        now = self.call.time()
        self._queued_until = min(self._queued_until, now)
        if self.recorder is not None:
            self.recorder.cut(NEAR, now)
        return dropped

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits after the audio already queued."""
        self.call.send_dtmf(digits)

    async def hang_up(
        self, code: int = 200, reason: str = "Normal", *, after_playout: bool = True
    ) -> CallTerminated:
        """End the call, by default once what was queued has been heard (acknowledged)."""
        ended = await self.call.terminate(code, reason, after_playout=after_playout)
        if self.recorder is not None:
            self.recorder.close(self.call.time())
        return ended
