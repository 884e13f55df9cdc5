"""Audio in the formats the OpenAI speech API answers with, streamed; speed changes; decoding uploaded audio.

Encoders are small stateful callables: ``encoder(chunk) -> bytes`` (float32 mono at the engine's rate; may be
b"" while a codec fills a frame), then ``encoder.flush() -> bytes``. Each response streams, so container headers
are written before the length is known: a WAV says "unknown length" (0xFFFFFFFF, as OpenAI's streamed WAV; every
reader we know takes it) and a FLAC's STREAMINFO has no total (allowed by the format; decoders read to the end).

| format | how                                  | rate                      |
|--------|--------------------------------------|---------------------------|
| wav    | 16-bit PCM, written here             | the engine's              |
| pcm    | raw 16-bit little-endian, no header  | 24 kHz, as OpenAI's       |
| mp3    | libmp3lame through PyAV              | the engine's              |
| opus   | libopus in Ogg through PyAV          | 48 kHz (Opus's own)       |
| aac    | FFmpeg's AAC encoder, ADTS, PyAV     | the engine's              |
| flac   | FFmpeg's FLAC encoder through PyAV   | the engine's              |

PyAV (``av``, FFmpeg in a wheel) already comes with faster-whisper. ``available_formats()`` probes the codecs
once; a format whose codec is missing from the installed FFmpeg is answered with a 400 that says so.

``TimeStretch`` changes speed without changing pitch (FFmpeg's ``atempo``, WSOLA), streaming, 0.25-4x.
``decode_audio`` reads any FFmpeg-readable upload into float32 mono at a chosen rate, refusing a duration over
a limit while it decodes (memory stays bounded).
"""

from __future__ import annotations

import functools
import struct
from typing import BinaryIO

import numpy as np

from s2s.audio import StreamResampler

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
"""OpenAI's ``response_format`` values, in their order."""
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
PCM_RATE = 24000
"""Hz of ``pcm``: OpenAI's raw format is 24 kHz 16-bit mono."""
SPEEDS = (0.25, 4.0)
_AV = {"mp3": ("mp3", "libmp3lame", None, 64000), "opus": ("ogg", "libopus", 48000, 32000),
       "aac": ("adts", "aac", None, 64000), "flac": ("flac", "flac", None, None)}
"""format -> (FFmpeg container, encoder, fixed rate or None for the input's, bit rate for speech)."""
_OGG_PAGE_US = "20000"
"""Ogg pages of at most 20 ms: the muxer would otherwise hold a second of Opus before writing a page."""


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] as 16-bit little-endian samples (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


@functools.cache
def available_formats() -> tuple[str, ...]:
    """The ``FORMATS`` this installation can write (wav and pcm always; the others if FFmpeg has the codec)."""
    found = ["wav", "pcm"]
    try:
        import av
    except ImportError:
        return tuple(f for f in FORMATS if f in found)
    for fmt, (_, codec, _, _) in _AV.items():
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            continue
        found.append(fmt)
    return tuple(f for f in FORMATS if f in found)


class PcmEncoder:
    """Raw 16-bit little-endian mono at ``PCM_RATE`` (resampled when the engine speaks at another rate)."""

    def __init__(self, rate: int) -> None:
        self.resampler = StreamResampler(rate, PCM_RATE) if rate != PCM_RATE else None
        self._skip = self.resampler.delay if self.resampler else 0
        """Lead-in samples of the resampler still to drop."""

    def __call__(self, samples: np.ndarray) -> bytes:
        return to_pcm16(self._resampled(samples))

    def _resampled(self, samples: np.ndarray) -> np.ndarray:
        if self.resampler is None:
            return samples
        out = self.resampler(samples)
        dropped, self._skip = min(self._skip, out.size), self._skip - min(self._skip, out.size)
        return out[dropped:]

    def flush(self) -> bytes:
        return to_pcm16(self._resampled(self.resampler.flush())) if self.resampler else b""


class WavEncoder:
    """A 16-bit PCM WAV whose header says "length unknown", then the samples as they come."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._header = True

    def __call__(self, samples: np.ndarray) -> bytes:
        data = to_pcm16(samples)
        if self._header:
            self._header = False
            data = self.header(self.rate) + data
        return data

    @staticmethod
    def header(rate: int) -> bytes:
        unknown = 0xFFFFFFFF
        fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)  # PCM, mono, rate, byte rate, align, bits
        return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", unknown))

    def flush(self) -> bytes:
        return self(np.zeros(0, dtype=np.float32)) if self._header else b""


class _Collect:
    """A write-only, unseekable file for PyAV: what the muxer writes, taken out after each packet."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class AvEncoder:
    """mp3, opus, aac or flac through PyAV, packet by packet into a stream."""

    def __init__(self, fmt: str, rate: int) -> None:
        import av

        container, codec, fixed_rate, bit_rate = _AV[fmt]
        self.rate = rate
        self.sink = _Collect()
        options = {"page_duration": _OGG_PAGE_US} if container == "ogg" else {}
        self.container = av.open(self.sink, "w", format=container, options=options)
        self.stream = self.container.add_stream(codec, rate=fixed_rate or rate, layout="mono")
        if bit_rate:
            self.stream.bit_rate = bit_rate
        self._av = av

    def _encode(self, frame) -> bytes:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        return self.sink.take()

    def __call__(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None, :],
                                                 format="flt", layout="mono")
        frame.sample_rate = self.rate
        return self._encode(frame)

    def flush(self) -> bytes:
        data = self._encode(None)
        self.container.close()
        return data + self.sink.take()


def make_encoder(fmt: str, rate: int):
    """The encoder of ``fmt`` for float32 mono audio at ``rate``; ValueError for a format not available here."""
    if fmt not in available_formats():
        raise ValueError(f"response_format {fmt!r} is not supported here; use one of: {', '.join(available_formats())}")
    if fmt == "wav":
        return WavEncoder(rate)
    if fmt == "pcm":
        return PcmEncoder(rate)
    return AvEncoder(fmt, rate)


class TimeStretch:
    """Speed ``speed`` (0.25-4) without a pitch change: FFmpeg's ``atempo`` (two of them below 0.5), streaming."""

    def __init__(self, rate: int, speed: float) -> None:
        import av

        if not SPEEDS[0] <= speed <= SPEEDS[1]:
            raise ValueError(f"speed {speed} is out of range; use {SPEEDS[0]} to {SPEEDS[1]}")
        self.rate = rate
        self._av = av
        self.graph = av.filter.Graph()
        source = self.graph.add_abuffer(format="flt", sample_rate=rate, layout="mono")
        tempos = [0.5, speed / 0.5] if speed < 0.5 else [speed]
        node = source
        for tempo in tempos:
            stage = self.graph.add("atempo", f"{tempo:.6f}")
            node.link_to(stage)
            node = stage
        node.link_to(self.graph.add("abuffersink"))
        self.graph.configure()
        self._pts = 0

    def _pull(self) -> np.ndarray:
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (self._av.BlockingIOError, self._av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None, :],
                                                 format="flt", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += samples.size
        self.graph.push(frame)
        return self._pull()

    def flush(self) -> np.ndarray:
        self.graph.push(None)
        return self._pull()


class BadAudio(ValueError):
    """An upload that is not audio FFmpeg can decode (or holds none)."""


class AudioTooLong(BadAudio):
    """An upload lasts longer than allowed."""


def decode_audio(source: str | BinaryIO, rate: int, max_s: float) -> np.ndarray:
    """float32 mono at ``rate`` of an audio file (any format FFmpeg reads). BadAudio if it holds no audio or
    cannot be decoded; AudioTooLong as soon as more than ``max_s`` seconds are decoded."""
    import av

    limit = int(max_s * rate)
    try:
        container = av.open(source, "r")
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise BadAudio(f"the file is not audio FFmpeg can read ({type(exc).__name__})") from None
    try:
        if not container.streams.audio:
            raise BadAudio("the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts, total = [], 0
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1)
                    total += block.size
                    if total > limit:
                        raise AudioTooLong(f"the audio is longer than the limit of {max_s:g} s")
                    parts.append(block)
        except av.error.FFmpegError as exc:
            if not parts:
                raise BadAudio(f"the audio could not be decoded ({type(exc).__name__})") from None
        if not parts:
            raise BadAudio("the file holds no audio samples")
        return np.concatenate(parts).astype(np.float32)
    finally:
        container.close()
