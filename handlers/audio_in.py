"""Sources: the first stage, feeding the pipeline from the microphone, WAV files, or a typed prompt.

    MicSource   sounddevice capture at the device's rate, resampled to 16 kHz AudioFrames (runs until stopped)
    FileSource  a WAV file, or a folder of WAVs (one turn each, sorted by name), as 16 kHz AudioFrames
    TextSource  ``--text``: opens a turn and emits its Transcript directly (no VAD/STT)

Half-duplex: while a turn is open (``not turns.listening``) the file source waits before feeding more audio, so
each utterance in a file is answered before the next is heard; the microphone keeps capturing and the VAD drops
those frames. File and text sources end with EndOfStream; the microphone runs until the stop event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from handlers.audio_devices import AudioDeviceError, find_device, import_sounddevice
from s2s.audio import StreamResampler, check_audio_file, read_wav, resample, to_mono
from s2s.config import AudioInConfig
from s2s.handler import Handler
from s2s.messages import AudioFrame, EndOfStream, Transcript
from s2s.turns import Turns

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Rate of every AudioFrame (Hz): what Silero VAD and Whisper take."""
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
TRAILING_SILENCE_S = 1.0
"""Silence fed after each input file so the VAD closes an utterance that runs to the end of the file."""


class Source(Handler):
    """A handler with no input queue: ``produce()`` emits items until the input ends or a stop is requested."""

    def __init__(self, turns: Turns, out_queue: queue.Queue, stop_event: threading.Event, poll_s: float) -> None:
        super().__init__(None, out_queue, stop_event, poll_s)
        self.turns = turns
        self.stream_time = 0.0
        """Seconds of audio emitted so far (the next frame's ``stream_time``)."""

    def produce(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.produce()
            if not self.stop_event.is_set():
                self.put(EndOfStream())
        finally:
            self.end_loop()

    def wait_listening(self) -> bool:
        """Block while a turn is open (half-duplex); False if a stop came first."""
        while not self.stop_event.is_set():
            if self.turns.wait_listening(self.poll_s):
                return True
        return False


class FileSource(Source):
    """Feeds a WAV file, or every audio file of a folder in name order, as 16 kHz frames of ``audio_in.block_ms``.

    Frames are handed over as fast as the VAD takes them (one frame ahead at most, so the half-duplex gate closes
    within a frame of the end of an utterance), or at real-time speed with ``audio_in.realtime_file``.
    Stereo is downmixed and other rates are resampled, with an INFO log.
    """

    name = "file-in"

    def __init__(
        self,
        cfg: AudioInConfig,
        turns: Turns,
        in_queue: None,
        out_queue: queue.Queue,
        stop_event: threading.Event,
        poll_s: float = 0.1,
        path: str | Path = "",
    ) -> None:
        super().__init__(turns, out_queue, stop_event, poll_s)
        self.cfg = cfg
        self.files = [check_audio_file(file) for file in input_files(path)]  # bad input fails before models load
        self.frame_len = SAMPLE_RATE * cfg.block_ms // 1000

    def produce(self) -> None:
        for path in self.files:
            if not self.feed(load_input(path)):
                return

    def feed(self, audio: np.ndarray) -> bool:
        """Emit ``audio`` (16 kHz mono) and the trailing silence frame by frame; False if stopped."""
        audio = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), dtype=np.float32)])
        t_start = time.monotonic() - self.stream_time
        for start in range(0, len(audio), self.frame_len):
            frame = audio[start:start + self.frame_len]
            if not self.turns.listening:
                if not self.wait_listening():
                    return False
                t_start = time.monotonic() - self.stream_time  # real-time pacing restarts after a reply
            if self.cfg.realtime_file:
                self.stop_event.wait(max(0.0, t_start + self.stream_time + len(frame) / SAMPLE_RATE - time.monotonic()))
            elif not self._wait_drained():
                return False
            if not self.put(AudioFrame(frame, SAMPLE_RATE, time.monotonic(), self.stream_time)):
                return False
            self.stream_time += len(frame) / SAMPLE_RATE
        return True

    def _wait_drained(self) -> bool:
        """Wait until the next stage has taken every frame handed to it; False if stopped."""
        while self.out_queue.qsize() > 0:
            if self.stop_event.wait(0.001):
                return False
        return True


class MicSource(Source):
    """Captures from a sounddevice input stream (mono, at the device's default rate or ``audio_in.sample_rate``)
    and emits 16 kHz AudioFrames of ``audio_in.block_ms``."""

    name = "mic"

    def __init__(
        self,
        cfg: AudioInConfig,
        turns: Turns,
        in_queue: None,
        out_queue: queue.Queue,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(turns, out_queue, stop_event, poll_s)
        self.cfg = cfg
        self.stream = None
        self.rate = 0

    def setup(self) -> None:
        sd = import_sounddevice()
        device = find_device(self.cfg.device, "input")
        self.rate = self.cfg.sample_rate or int(device["default_samplerate"])
        try:
            self.stream = sd.InputStream(
                device=device["index"],
                samplerate=self.rate,
                channels=1,
                dtype="float32",
                blocksize=self.rate * self.cfg.block_ms // 1000,
            )
        except sd.PortAudioError as exc:
            raise AudioDeviceError(
                f"cannot open input device {device['name']!r} at {self.rate} Hz ({exc}); "
                "set audio_in.sample_rate=0 to use its default rate, or pick another audio_in.device"
            ) from None
        log.info("microphone: %s at %d Hz", device["name"], self.rate)

    def produce(self) -> None:
        resampler = StreamResampler(self.rate, SAMPLE_RATE)
        block = self.rate * self.cfg.block_ms // 1000
        self.stream.start()
        while not self.stop_event.is_set():
            self.busy_since = time.monotonic()
            samples, overflowed = self.stream.read(block)  # [block, 1]
            t_captured = time.monotonic()
            if overflowed:
                log.warning("microphone overflow: audio was lost (the VAD is not keeping up)")
            frame = resampler(samples[:, 0])  # [~block * 16000 / rate]
            if frame.size and not self.put(AudioFrame(frame, SAMPLE_RATE, t_captured, self.stream_time)):
                return
            self.stream_time += frame.size / SAMPLE_RATE

    def cleanup(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class TextSource(Source):
    """``--text``: one turn whose transcript is the given text (the VAD and STT stages are skipped)."""

    name = "text-in"

    def __init__(
        self,
        text: str,
        turns: Turns,
        in_queue: None,
        out_queue: queue.Queue,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(turns, out_queue, stop_event, poll_s)
        self.text = text.strip()
        if not self.text:
            raise ValueError('--text is empty; give the words to send to the assistant, e.g. --text "What time is it?"')

    def produce(self) -> None:
        turn_id = self.turns.new_id()
        self.turns.begin(turn_id)
        self.turns.mark(turn_id, "transcript_ready")
        self.put(Transcript(turn_id=turn_id, text=self.text))


def input_files(path: str | Path) -> list[Path]:
    """The audio file itself, or a folder's audio files sorted by name; ValueError with the fix otherwise."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"--input folder {path} holds no {'/'.join(AUDIO_SUFFIXES)} files")
        return files
    if not path.is_file():
        raise ValueError(f"--input {path} does not exist; give a WAV file or a folder of WAV files")
    return [path]


def load_input(path: Path) -> np.ndarray:
    """A file's audio as 16 kHz mono float32 (downmixed / resampled with an INFO log)."""
    samples, rate = read_wav(path)
    if samples.ndim == 2 and samples.shape[1] > 1:
        log.info("%s has %d channels; mixing them down to mono", path, samples.shape[1])
    samples = to_mono(samples)  # [n]
    if rate != SAMPLE_RATE:
        log.info("%s is at %d Hz; resampling to %d Hz", path, rate, SAMPLE_RATE)
        samples = resample(samples, rate, SAMPLE_RATE)
    log.info("input %s: %.1f s", path, len(samples) / SAMPLE_RATE)
    return samples
