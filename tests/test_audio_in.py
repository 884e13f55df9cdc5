"""handlers.audio_in and s2s.audio_devices: file/text sources on real threads, device choice."""

import logging
import queue
import threading
import time

import numpy as np
import pytest
from stage_harness import collect, start, wiring

from handlers.audio_in import TRAILING_SILENCE_S, FileSource, MicSource, TextSource, input_files, load_input
from s2s.audio import SPEECH_RATE, write_wav
from s2s.audio_devices import AudioDeviceError, find_device
from s2s.config import AudioInConfig
from s2s.messages import AudioFrame, EndOfStream, Transcript
from s2s.turns import Turns


def tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_file_source_emits_16k_frames_then_end_of_stream(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, tone(SPEECH_RATE, 1.0), SPEECH_RATE)
    items = collect(FileSource(wiring(source=True), AudioInConfig(), path=path))
    frames = items[:-1]
    assert all(isinstance(f, AudioFrame) and f.sample_rate == SPEECH_RATE for f in frames)
    assert all(len(f.samples) == 512 for f in frames[:-1])
    total = sum(len(f.samples) for f in frames)
    assert total == SPEECH_RATE + int(TRAILING_SILENCE_S * SPEECH_RATE)
    assert frames[1].stream_time == pytest.approx(512 / SPEECH_RATE)


def test_8k_stereo_file_is_resampled_and_downmixed_with_a_log(tmp_path, caplog):
    import soundfile as sf

    path = tmp_path / "stereo8k.wav"
    sf.write(path, np.stack([tone(8000, 1.0), tone(8000, 1.0)], axis=1), 8000)
    with caplog.at_level(logging.INFO, logger="handlers.audio_in"):
        audio = load_input(path)
    assert audio.ndim == 1 and len(audio) == SPEECH_RATE
    assert "2 channels; mixing them down" in caplog.text and "8000 Hz; resampling" in caplog.text


def test_folder_input_is_sorted_and_checked(tmp_path):
    for name in ("b.wav", "a.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"")  # input_files only looks at names; FileSource also reads headers
    assert [p.name for p in input_files(tmp_path)] == ["a.wav", "b.wav"]
    with pytest.raises(ValueError, match="does not exist"):
        input_files(tmp_path / "missing.wav")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no"):
        input_files(empty)


def test_file_source_waits_while_a_turn_is_open(tmp_path):
    """Half-duplex: no frame is fed while a reply is pending; feeding resumes when the turn ends."""
    path = tmp_path / "a.wav"
    write_wav(path, tone(SPEECH_RATE, 0.5), SPEECH_RATE)
    turns = Turns()
    turns.begin(1)
    source = FileSource(wiring(turns, source=True), AudioInConfig(), path=path)
    thread = start(source)
    with pytest.raises(queue.Empty):
        source.out_queue.get(timeout=0.3)
    turns.end(1)
    assert isinstance(source.out_queue.get(timeout=10), AudioFrame)
    source.stop_event.set()
    thread.join(10)
    assert not thread.is_alive()


def test_text_source_opens_a_turn():
    turns = Turns()
    items = collect(TextSource(wiring(turns, source=True), AudioInConfig(), text="  Hi there "))
    assert items[0] == Transcript(1, "Hi there")
    assert turns.is_open(1) and not turns.listening


def test_empty_text_is_a_clear_error():
    with pytest.raises(ValueError, match="--text is empty"):
        TextSource(wiring(source=True), AudioInConfig(), text="   ")


DEVICES = [
    {"index": 0, "name": "HDA NVidia: HDMI 0", "max_input_channels": 0, "max_output_channels": 8},
    {"index": 1, "name": "USB PnP Sound Device: Audio", "max_input_channels": 1, "max_output_channels": 2},
    {"index": 2, "name": "Jabra SPEAK 510 USB", "max_input_channels": 1, "max_output_channels": 2},
]


def test_find_device_by_name_substring_or_index():
    assert find_device("jabra", "input", DEVICES)["index"] == 2
    assert find_device("usb", "output", DEVICES)["index"] == 1  # first match
    assert find_device("0", "output", DEVICES)["name"].startswith("HDA")
    assert find_device("", "input", DEVICES)["max_input_channels"] > 0


def test_find_device_errors_say_what_exists_and_how_to_run_headless():
    with pytest.raises(AudioDeviceError, match=r"no input device matches audio_in.device='hdmi'.*1: USB PnP"):
        find_device("hdmi", "input", DEVICES)
    with pytest.raises(AudioDeviceError, match=r"no audio output device found.*--input.*--output"):
        find_device("", "output", [])


def test_unreadable_input_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF but not really")
    with pytest.raises(ValueError, match="broken.wav is not a readable audio file"):
        FileSource(wiring(source=True), AudioInConfig(), path=bad)


class FakeInputStream:
    """A 48 kHz capture stream: a 440 Hz tone, delivered at (about) real-time speed."""

    def __init__(self, rate: int = 48000):
        self.rate, self.position, self.started, self.closed = rate, 0, False, False

    def start(self):
        self.started = True

    def read(self, frames: int):
        t = (self.position + np.arange(frames)) / self.rate
        self.position += frames
        threading.Event().wait(frames / self.rate / 4)  # faster than real time keeps the test short
        return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None], False  # [frames, 1]

    def close(self):
        self.closed = True


def test_mic_source_resamples_to_16k_and_stops_within_2_s():
    mic = MicSource(wiring(source=True), AudioInConfig(block_ms=32))
    mic.stream, mic.rate = FakeInputStream(), 48000  # what setup() opens on a machine with a microphone
    q, stop = mic.out_queue, mic.stop_event
    thread = start(mic)
    frames = [q.get(timeout=10) for _ in range(20)]
    assert all(isinstance(f, AudioFrame) and f.sample_rate == SPEECH_RATE for f in frames)
    assert all(len(f.samples) == 512 for f in frames[1:])  # 1536 samples at 48 kHz -> 512 at 16 kHz
    audio = np.concatenate([f.samples for f in frames])
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio[1000:]))) * SPEECH_RATE / len(audio[1000:])
    assert abs(peak_hz - 440) < 5
    t0 = time.monotonic()
    stop.set()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - t0 < 2.0
    assert mic.stream is None  # closed by cleanup
    assert not any(isinstance(item, EndOfStream) for item in list(q.queue))  # a stop is not the end of input


def test_realtime_file_is_fed_at_the_speed_of_speech(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, tone(SPEECH_RATE, 0.5), SPEECH_RATE)
    source = FileSource(wiring(source=True), AudioInConfig(realtime_file=True), path=path)
    t0 = time.monotonic()
    collect(source)
    assert time.monotonic() - t0 >= 0.9 * (0.5 + TRAILING_SILENCE_S)  # not faster than the audio lasts
