"""Response encoders (each format decodes back to the same duration, streamed in pieces), speed without a pitch
change, and decoding uploads with a duration limit."""

from __future__ import annotations

import io

import numpy as np
import pytest

from s2s.server.audio_codecs import (
    PCM_RATE,
    AudioTooLong,
    TimeStretch,
    WavEncoder,
    available_formats,
    decode_audio,
    make_encoder,
)

RATE = 22050


def tone(seconds: float, rate: int = RATE, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode(fmt: str, audio: np.ndarray, rate: int = RATE, pieces: int = 7) -> tuple[bytes, list[bytes]]:
    encoder = make_encoder(fmt, rate)
    parts = [encoder(block) for block in np.array_split(audio, pieces)] + [encoder.flush()]
    return b"".join(parts), parts


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_each_format_streams_and_decodes_to_the_same_duration(fmt):
    assert fmt in available_formats()
    data, parts = encode(fmt, tone(2.0))
    assert sum(1 for part in parts[:-1] if part) >= 3, "nothing was sent before the end"
    if fmt == "pcm":
        seconds = len(data) / 2 / PCM_RATE  # OpenAI's pcm: 24 kHz 16-bit, whatever the engine's rate
    else:
        seconds = decode_audio(io.BytesIO(data), 16000, 10.0).size / 16000
    assert seconds == pytest.approx(2.0, abs=0.1)


def test_wav_header_says_unknown_length_and_soundfile_reads_it():
    import soundfile as sf

    data, _ = encode("wav", tone(1.0))
    assert data[:4] == b"RIFF" and data[40:44] == b"\xff\xff\xff\xff"
    samples, rate = sf.read(io.BytesIO(data))
    assert rate == RATE and samples.size == RATE
    assert WavEncoder(RATE).flush() == WavEncoder.header(RATE)  # no audio: still a valid, empty file


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="not supported here; use one of: mp3"):
        make_encoder("wma", RATE)


@pytest.mark.parametrize("speed", [0.25, 0.5, 1.5, 4.0])
def test_time_stretch_changes_duration_and_keeps_pitch(speed):
    stretch = TimeStretch(RATE, speed)
    out = np.concatenate([stretch(block) for block in np.array_split(tone(2.0), 9)] + [stretch.flush()])
    assert out.size / RATE == pytest.approx(2.0 / speed, rel=0.05)
    spectrum = np.abs(np.fft.rfft(out[: RATE // 2]))
    assert np.fft.rfftfreq(RATE // 2, 1 / RATE)[spectrum.argmax()] == pytest.approx(220, abs=12)  # not 220 * speed
    with pytest.raises(ValueError, match="out of range"):
        TimeStretch(RATE, 5.0)


def test_decode_refuses_long_audio_and_non_audio():
    data, _ = encode("flac", tone(3.0))
    assert decode_audio(io.BytesIO(data), 16000, 5.0).size == pytest.approx(48000, abs=100)
    with pytest.raises(AudioTooLong, match="longer than the limit of 2 s"):
        decode_audio(io.BytesIO(data), 16000, 2.0)
    for junk in (b"", b"plain words, not audio", b"RIFF\x00\x00"):
        with pytest.raises(ValueError):
            decode_audio(io.BytesIO(junk), 16000, 5.0)
