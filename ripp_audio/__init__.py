"""ripp_audio: real audio at the edges of RIPP: PCMU, PCMA and Opus, WAV files, test tones.

RIPP itself only carries payloads (``ripp_core`` never touches samples). This package turns
samples into payloads and back, for the CLI and for SIP gateways:

* :func:`encoder_for` / :func:`decoder_for`: per-frame encoders and decoders. G.711 (PCMU,
  PCMA) is implemented here in numpy from ITU-T G.711 (8 kHz); Opus uses libopus through
  PyAV (``pip install av``; its wheels bundle FFmpeg with libopus) at 48 kHz.
* :meth:`Decoder.conceal`: audio for a :class:`ripp_core.MediaGap` (pitch repetition that
  fades to silence within 50 ms, for every codec).
* :func:`read_wav`, :func:`write_wav`, :class:`WavWriter`, :func:`frames_from_wav`: 16-bit
  PCM WAV in and out at any rate, mono or stereo (downmixed).
* :func:`resample`, :class:`Resampler`: windowed-sinc polyphase resampling between any two
  integer rates (8 kHz <-> 48 kHz in practice).
* :func:`tone`, :func:`snr_db`: test signals and a delay-aligned SNR for tests and benchmarks.

* :class:`VoiceCall`: a live call as a voice application sees it (decoded PCM at the rate
  it asks for with DTMF and comfort noise as events, PCM or WAV playback, barge-in with
  :class:`EnergyVad`, hang-up after playout, :class:`CallRecorder` for a stereo WAV);
  its sans-IO parts are :class:`MediaDecoder`, :class:`PcmEncoder`, :class:`EnergyVad` and
  :class:`StereoTimeline`.

All samples are mono 1-D ``numpy.int16`` arrays.
"""

from ._codec import (
    DEFAULT_OPUS_BITRATE,
    G711_RATE,
    OPUS_RATE,
    Decoder,
    Encoder,
    G711Decoder,
    G711Encoder,
    OpusDecoder,
    OpusEncoder,
    decoder_for,
    encoder_for,
)
from ._g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from ._resample import Resampler, resample
from ._signal import snr_db, tone
from ._voice import (
    AudioChunk,
    BargeIn,
    ChunkKind,
    ComfortNoise,
    EnergyVad,
    MediaDecoder,
    PcmEncoder,
    StereoTimeline,
    VoiceEvent,
    level_dbfs,
)
from ._voicecall import CallRecorder, VoiceCall
from ._wav import WavWriter, frames_from_wav, read_wav, write_wav

__all__ = [
    "DEFAULT_OPUS_BITRATE",
    "G711_RATE",
    "OPUS_RATE",
    "AudioChunk",
    "BargeIn",
    "CallRecorder",
    "ChunkKind",
    "ComfortNoise",
    "Decoder",
    "Encoder",
    "EnergyVad",
    "G711Decoder",
    "G711Encoder",
    "MediaDecoder",
    "OpusDecoder",
    "OpusEncoder",
    "PcmEncoder",
    "Resampler",
    "StereoTimeline",
    "VoiceCall",
    "VoiceEvent",
    "WavWriter",
    "alaw_decode",
    "alaw_encode",
    "decoder_for",
    "encoder_for",
    "frames_from_wav",
    "level_dbfs",
    "read_wav",
    "resample",
    "snr_db",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
    "write_wav",
]
