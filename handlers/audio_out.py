"""Sinks: the last stage, playing reply audio on a speaker or writing it to a WAV file, and ending turns.

A sink marks ``first_audio_out`` when the first reply audio of a turn is handed over (to the device, or the file),
and calls ``turns.end`` for every TurnEnd (after the reply has played out) and TurnFailed it receives, also when
its own writing fails: that is what lets the microphone listen again.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from handlers.audio_devices import AudioDeviceError, find_device, import_sounddevice
from s2s.audio import StreamResampler
from s2s.config import AudioOutConfig
from s2s.handler import Handler
from s2s.messages import AudioChunk, TurnEnd, TurnFailed, turn_of
from s2s.turns import Turns

log = logging.getLogger(__name__)

TURN_GAP_S = 0.5
"""Silence written to a reply WAV between two turns' replies."""


class Sink(Handler):
    """Turn bookkeeping shared by the sinks; subclasses write audio at ``self.rate``."""

    def __init__(
        self,
        cfg: AudioOutConfig,
        turns: Turns,
        in_queue: queue.Queue,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(in_queue, out_queue, stop_event, poll_s)
        self.cfg = cfg
        self.turns = turns
        self.rate = cfg.sample_rate
        """Rate (Hz) the sink writes at; chunks at another rate are resampled to it."""
        self._resamplers: dict[int, StreamResampler] = {}
        self._started: set[int] = set()
        """Turns whose first audio has gone out."""

    # ---- to override -------------------------------------------------------------------------------
    def write(self, turn_id: int, samples: np.ndarray) -> None:
        """Hand reply audio (mono float32 at ``self.rate``) to the output; call ``handed_out`` once it is there."""
        raise NotImplementedError

    def finish_turn(self, turn_id: int) -> None:
        """The reply is complete: write what is held and wait until it has played."""

    def discard_turn(self, turn_id: int) -> None:
        """The turn failed: drop what is held for it."""

    # ---- the turn protocol ---------------------------------------------------------------------------
    def process(self, item: object):
        if isinstance(item, AudioChunk):
            if self.turns.is_open(item.turn_id):
                self._play(item)
        elif isinstance(item, TurnEnd):
            try:
                self._flush_resampler(item.turn_id)
                self.finish_turn(item.turn_id)
            finally:
                self._forget(item.turn_id)
                self.turns.end(item.turn_id)
        elif isinstance(item, TurnFailed):
            try:
                self.discard_turn(item.turn_id)
            finally:
                self._forget(item.turn_id)
                self.turns.end(item.turn_id, error=f"{item.stage}: {item.error}")
        yield from ()

    def on_error(self, item: object, exc: BaseException):
        turn_id = turn_of(item)
        if turn_id is not None:
            self._forget(turn_id)
            self.turns.end(turn_id, error=f"{self.name}: {type(exc).__name__}: {exc}")
        yield from ()

    def _play(self, chunk: AudioChunk) -> None:
        samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)  # [n]
        if chunk.sample_rate != self.rate:
            if chunk.turn_id not in self._resamplers:
                self._resamplers[chunk.turn_id] = StreamResampler(chunk.sample_rate, self.rate)
            samples = self._resamplers[chunk.turn_id](samples)
        if samples.size:
            self.write(chunk.turn_id, samples)

    def handed_out(self, turn_id: int) -> None:
        """Reply audio of the turn has reached the device (or file): marks ``first_audio_out`` the first time."""
        if turn_id not in self._started:
            self._started.add(turn_id)
            self.turns.mark(turn_id, "first_audio_out")

    def _flush_resampler(self, turn_id: int) -> None:
        resampler = self._resamplers.get(turn_id)
        if resampler is not None and self.turns.is_open(turn_id):
            tail = resampler.flush()
            if tail.size:
                self.write(turn_id, tail)

    def _forget(self, turn_id: int) -> None:
        self._resamplers.pop(turn_id, None)
        self._started.discard(turn_id)


class WavSink(Sink):
    """Writes all reply audio of the run to one WAV (16-bit, mono, ``audio_out.sample_rate``), the replies of
    successive turns separated by ``TURN_GAP_S`` of silence. The file is written as the audio arrives."""

    name = "wav-out"

    def __init__(
        self,
        cfg: AudioOutConfig,
        turns: Turns,
        in_queue: queue.Queue,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
        path: str | Path = "reply.wav",
    ) -> None:
        super().__init__(cfg, turns, in_queue, out_queue, stop_event, poll_s)
        self.path = Path(path)
        self.frames_written = 0
        self.turns_written = 0
        self._file: sf.SoundFile | None = None
        self._last_turn: int | None = None

    def setup(self) -> None:
        if self.path.is_dir():
            raise ValueError(f"--output {self.path} is a folder; give a .wav file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = sf.SoundFile(str(self.path), mode="w", samplerate=self.rate, channels=1, subtype="PCM_16")

    def write(self, turn_id: int, samples: np.ndarray) -> None:
        assert self._file is not None, "setup() opens the file"
        if turn_id != self._last_turn:
            if self._last_turn is not None:
                self._file.write(np.zeros(int(TURN_GAP_S * self.rate), dtype=np.float32))
                self.frames_written += int(TURN_GAP_S * self.rate)
            self._last_turn = turn_id
            self.turns_written += 1
        self._file.write(np.clip(samples, -1.0, 1.0))
        self._file.flush()
        self.frames_written += len(samples)
        self.handed_out(turn_id)

    def cleanup(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            log.info("reply audio: %s (%.1f s, %d turns)", self.path, self.frames_written / self.rate,
                     self.turns_written)


class SpeakerSink(Sink):
    """Plays through a sounddevice output stream in blocks of exactly ``audio_out.block_size`` frames (the last
    block of a reply is padded with zeros). The stream opens at ``audio_out.sample_rate`` or, if the device
    refuses it, at the device's default rate (audio is then resampled to it)."""

    name = "speaker"

    def __init__(
        self,
        cfg: AudioOutConfig,
        turns: Turns,
        in_queue: queue.Queue,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(cfg, turns, in_queue, out_queue, stop_event, poll_s)
        self.block_size = cfg.block_size
        self.stream = None
        """An open, started output stream with ``write(ndarray [block_size, 1])`` and ``latency`` (s)."""
        self._held = np.zeros(0, dtype=np.float32)

    def setup(self) -> None:
        sd = import_sounddevice()
        device = find_device(self.cfg.device, "output")
        for rate in dict.fromkeys((self.cfg.sample_rate, int(device["default_samplerate"]))):
            try:
                self.stream = sd.OutputStream(device=device["index"], samplerate=rate, channels=1, dtype="float32",
                                              blocksize=self.block_size)
            except sd.PortAudioError as exc:
                log.info("output device %r refused %d Hz (%s)", device["name"], rate, exc)
                continue
            self.rate = rate
            break
        if self.stream is None:
            raise AudioDeviceError(f"cannot open output device {device['name']!r}; pick another audio_out.device")
        self.stream.start()
        log.info("speaker: %s at %d Hz, %d-frame blocks", device["name"], self.rate, self.block_size)

    def write(self, turn_id: int, samples: np.ndarray) -> None:
        self._held = np.concatenate([self._held, samples])
        whole = len(self._held) // self.block_size * self.block_size
        for start in range(0, whole, self.block_size):
            if self.stop_event.is_set():
                break
            self._write_block(turn_id, self._held[start:start + self.block_size])
        self._held = self._held[whole:]

    def finish_turn(self, turn_id: int) -> None:
        if self._held.size:
            self._write_block(turn_id, np.pad(self._held, (0, self.block_size - len(self._held))))
            self._held = np.zeros(0, dtype=np.float32)
        # The last block has been handed over; it plays out within the stream's latency (plus one block).
        self.stop_event.wait(float(self.stream.latency) + self.block_size / self.rate)

    def discard_turn(self, turn_id: int) -> None:
        self._held = np.zeros(0, dtype=np.float32)

    def _write_block(self, turn_id: int, block: np.ndarray) -> None:
        underflowed = self.stream.write(block.reshape(self.block_size, 1))  # [block_size, channels]
        if underflowed:
            log.debug("speaker underflow")
        self.handed_out(turn_id)

    def cleanup(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
