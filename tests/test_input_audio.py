"""Input audio under careless and hostile input: damaged headers, overlong files, block decoding, folder contents."""

import logging
import queue
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
from stage_harness import collect, start, wiring

from handlers.audio_in import TRAILING_SILENCE_S, FileSource, load_input, speech_blocks
from s2s import audio
from s2s.audio import SPEECH_RATE, read_wav, resample, to_mono, write_wav
from s2s.config import AudioInConfig
from s2s.messages import AudioFrame, EndOfStream

FORMATS = [ext for ext in ("wav", "flac", "ogg", "mp3", "aiff", "au", "caf", "w64") if ext.upper() in
           sf.available_formats()]
"""Formats libsndfile reads here, each of which must work alone and in a folder."""


@dataclass
class InConfig(AudioInConfig):
    """AudioInConfig with audio_in.max_file_s (until s2s.config has the key: then this is AudioInConfig itself)."""

    max_file_s: float = 3600.0


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def with_declared_rate(path, rate: int) -> None:
    """Overwrite a WAV header's sample rate (bytes 24-27), as a damaged or hostile file would have it."""
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")
    path.write_bytes(bytes(data))


# ---- refused from the header, before anything is decoded ----------------------------------------------------
@pytest.mark.parametrize("rate", [1, 3999, 500_000])
def test_a_header_with_an_insane_rate_is_refused_at_once(tmp_path, rate):
    """The 1 Hz WAV of issue 9 was read as 12 hours of audio and resampled (6.9 GB, minutes); now it is refused
    when the source is built, naming the file and the rate."""
    path = tmp_path / "damaged.wav"
    write_wav(path, tone(SPEECH_RATE, 3.0), SPEECH_RATE)  # 96 KB
    with_declared_rate(path, rate)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=f"damaged.wav says its sample rate is {rate} Hz, outside 4000-384000 Hz"):
        FileSource(wiring(source=True), InConfig(), path=path)
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        read_wav(path)
    assert time.monotonic() - t0 < 5.0


def test_a_file_longer_than_max_file_s_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "long.wav"
    write_wav(path, tone(8000, 3.0), 8000)
    with pytest.raises(ValueError, match=r"long.wav lasts 3 s, longer than audio_in.max_file_s = 2 s.*--set"):
        FileSource(wiring(source=True), InConfig(max_file_s=2.0), path=path)
    FileSource(wiring(source=True), InConfig(max_file_s=3.0), path=path)  # the limit itself is fine


def test_max_file_s_defaults_to_an_hour(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, tone(SPEECH_RATE, 0.1), SPEECH_RATE)
    assert FileSource(wiring(source=True), AudioInConfig(), path=path).max_file_s == 3600.0


# ---- decoded and resampled in blocks ------------------------------------------------------------------------
def test_block_decoding_equals_decoding_the_whole_file(tmp_path, monkeypatch):
    """Many small blocks (44.1 kHz stereo -> 16 kHz mono) give exactly what one whole-file resample gives."""
    path = tmp_path / "stereo44k.wav"
    sf.write(path, tone(44100, 2.0, channels=2), 44100, subtype="FLOAT")
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 10_000)
    blocks = list(speech_blocks(path))
    assert len(blocks) > 10
    samples, rate = read_wav(path)
    np.testing.assert_allclose(np.concatenate(blocks), resample(to_mono(samples), rate, SPEECH_RATE), atol=1e-6)


PEAK_BYTES = 16_000_000
"""Bound on what decoding any file may hold at once (about 7 MB is used: a block and its resampling)."""


def long_file(tmp_path, seconds: float = 300.0, rate: int = 44100):
    """A long 16-bit mono WAV, written in pieces; decoded whole it would take 4 bytes per sample."""
    path = tmp_path / "long.wav"
    piece = tone(rate, 10.0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as file:
        for _ in range(int(seconds / 10)):
            file.write(piece)
    return path, int(seconds * rate) * 4


def test_a_long_file_is_decoded_in_bounded_memory(tmp_path):
    path, whole_bytes = long_file(tmp_path)  # 5 min at 44.1 kHz: 53 MB as float32
    tracemalloc.start()
    try:
        total = sum(len(block) for block in speech_blocks(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 300 * SPEECH_RATE
    assert peak < PEAK_BYTES, f"peak {peak / 1e6:.1f} MB while decoding a {whole_bytes / 1e6:.0f} MB file"


def test_the_file_source_feeds_frames_before_the_whole_file_is_decoded(tmp_path):
    path, whole_bytes = long_file(tmp_path)
    source = FileSource(wiring(source=True), InConfig(), path=path)
    tracemalloc.start()
    try:
        thread = start(source)
        frames = [source.out_queue.get(timeout=30) for _ in range(50)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        source.stop_event.set()
    thread.join(10)
    assert not thread.is_alive()
    assert all(isinstance(f, AudioFrame) and len(f.samples) == 512 for f in frames)
    assert peak < PEAK_BYTES, f"peak {peak / 1e6:.1f} MB before the first 50 frames of a {whole_bytes / 1e6:.0f} MB file"


def test_a_file_that_stops_decoding_part_way_is_used_up_to_there(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 4000)  # the block that fails is lost; those before it are kept
    path = tmp_path / "cut.flac"
    sf.write(path, tone(SPEECH_RATE, 4.0), SPEECH_RATE)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + b"\0" * 100 + data[len(data) // 2 + 100:])  # damaged mid-stream
    with caplog.at_level(logging.WARNING, logger="handlers.audio_in"):
        speech = load_input(path)
    assert 0 < len(speech) < 4 * SPEECH_RATE
    assert "cut.flac" in caplog.text and "decoding stopped part-way" in caplog.text


# ---- folders ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_that_works_alone_works_in_a_folder(tmp_path, ext):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / f"a.{ext}"
    sf.write(path, tone(SPEECH_RATE, 0.5), SPEECH_RATE)
    alone = collect(FileSource(wiring(source=True), InConfig(), path=path))
    in_folder = FileSource(wiring(source=True), InConfig(), path=folder)
    assert in_folder.files == [path]
    assert sum(len(f.samples) for f in alone[:-1]) >= int((0.5 + TRAILING_SILENCE_S) * SPEECH_RATE) - 600


def test_folder_skips_what_it_cannot_use_in_one_info_line(tmp_path, caplog):
    """Hidden and AppleDouble files are ignored; non-audio names, unreadable files and refused headers are
    skipped, all listed in one INFO line, and the rest of the batch runs."""
    for name in ("b.wav", "a.flac"):
        write_wav(tmp_path / name, tone(SPEECH_RATE, 0.3), SPEECH_RATE)
    (tmp_path / "._a.wav").write_bytes(b"\0\5\26\7 AppleDouble resource fork")  # what macOS copies leave
    write_wav(tmp_path / ".hidden.wav", tone(SPEECH_RATE, 0.3), SPEECH_RATE)
    (tmp_path / "notes.txt").write_text("transcripts")
    (tmp_path / "broken.wav").write_bytes(b"RIFF but not really")
    write_wav(tmp_path / "one_hz.wav", tone(SPEECH_RATE, 0.3), SPEECH_RATE)
    with_declared_rate(tmp_path / "one_hz.wav", 1)
    with caplog.at_level(logging.INFO, logger="handlers.audio_in"):
        source = FileSource(wiring(source=True), InConfig(), path=tmp_path)
    assert [p.name for p in source.files] == ["a.flac", "b.wav"]
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"--input {tmp_path}: skipped 3 of 5 files")
    for name in ("notes.txt", "broken.wav", "one_hz.wav"):
        assert name in lines[0]
    assert "._a.wav" not in lines[0] and ".hidden.wav" not in lines[0]
    items = collect(source)
    assert sum(len(f.samples) for f in items[:-1]) == 2 * int((0.3 + TRAILING_SILENCE_S) * SPEECH_RATE)


def test_folder_of_only_unusable_files_is_refused_naming_them(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    (tmp_path / "._x.wav").write_bytes(b"AppleDouble")
    with pytest.raises(ValueError, match=r"holds no usable audio file: .*broken.wav is not a readable audio file"):
        FileSource(wiring(source=True), InConfig(), path=tmp_path)


def test_too_long_files_in_a_folder_are_skipped_not_the_batch(tmp_path, caplog):
    write_wav(tmp_path / "short.wav", tone(SPEECH_RATE, 0.5), SPEECH_RATE)
    write_wav(tmp_path / "long.wav", tone(SPEECH_RATE, 3.0), SPEECH_RATE)
    with caplog.at_level(logging.INFO, logger="handlers.audio_in"):
        source = FileSource(wiring(source=True), InConfig(max_file_s=2.0), path=tmp_path)
    assert [p.name for p in source.files] == ["short.wav"]
    assert "long.wav lasts 3 s, longer than audio_in.max_file_s" in caplog.text


def test_stop_while_feeding_a_long_file_ends_within_2_s(tmp_path):
    path, _ = long_file(tmp_path, seconds=60.0)
    source = FileSource(wiring(source=True), InConfig(), path=path)
    thread = start(source)
    source.out_queue.get(timeout=30)
    t0 = time.monotonic()
    source.stop_event.set()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - t0 < 2.0
    with pytest.raises(queue.Empty):
        while True:
            assert not isinstance(source.out_queue.get_nowait(), EndOfStream)  # a stop is not the end of input
