"""Sinks: the last stage, playing reply audio on a speaker or writing it to a WAV file, and ending turns.

A sink marks ``first_audio_out`` when the first reply audio of a turn is handed over (to the device, or the file),
and calls ``turns.end`` for every TurnEnd (after the reply has played out) and TurnFailed it receives, also when
its own writing fails: that is what lets the microphone listen again.

In full duplex the speaker sink also feeds the echo canceller's reference and stops a turn the user interrupts
(see ``SpeakerSink``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from s2s.atomic_file import check_writable, commit, staging_path
from s2s.audio import StreamResampler, output_format
from s2s.audio_devices import AudioDeviceError, find_device, import_sounddevice
from s2s.config import AudioOutConfig
from s2s.far_end import stream_clock
from s2s.handler import Handler, Wiring
from s2s.messages import AudioChunk, TurnEnd, TurnFailed, turn_of
from s2s.played_text import PlayedText

log = logging.getLogger(__name__)

TURN_GAP_S = 0.5
"""Silence written to a reply WAV between two turns' replies."""
SFC_SET_UPDATE_HEADER_AUTO = 0x1061
"""libsndfile command (sndfile.h): rewrite the file's header after every write."""
FADE_S = 0.008
"""Full duplex: a reply the user interrupts fades out over this long (no click)."""
INTERRUPT_POLL_S = 0.01
"""Full duplex: how often an idle speaker sink looks for an interrupted turn to stop (s)."""


class Sink(Handler):
    """Turn bookkeeping shared by the sinks; subclasses write audio at ``self.rate``. The one place where reply
    audio is resampled: a chunk at another rate than ``self.rate`` goes through a per-turn stream resampler."""

    def __init__(self, wiring: Wiring, cfg: AudioOutConfig) -> None:
        super().__init__(wiring, cfg)
        self.rate = cfg.sample_rate
        """Rate (Hz) the sink writes at (0 until known: the WAV sink then takes the first chunk's rate)."""
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
        if not isinstance(item, AudioChunk):
            raise TypeError(f"the sink takes AudioChunk items, not {type(item).__name__}")
        self._play(item)
        yield from ()

    def control(self, item: object):
        if isinstance(item, TurnEnd):
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
        if not self.rate:
            self.rate = chunk.sample_rate
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
    """Writes all reply audio of the run to one file (16-bit mono WAV; FLAC etc. by the extension), the replies of
    successive turns separated by ``TURN_GAP_S`` of silence, at ``audio_out.sample_rate`` or (0) at the rate of
    the first reply audio.

    The output appears whole or not at all (s2s.atomic_file): the audio is written as it arrives to a hidden
    staging file beside the target (``.reply.wav.<pid>.partial``, its header rewritten on every write so it is a
    valid WAV at any moment), renamed over the target by ``cleanup`` when the run ends, also after a stop
    (SIGTERM, Ctrl-C): what was produced is kept. Before that the target is not touched: a run that fails to start
    or is killed (SIGKILL, a crash) leaves the previous file as it was, plus at worst the staging file. A run that
    produced no reply audio writes nothing and leaves any previous file as it was (logged; ``written`` is None).
    A path that can never be written (a folder, /proc/x.wav, no or an unknown extension) is refused when the sink
    is built, before any model loads."""

    name = "wav-out"

    def __init__(self, wiring: Wiring, cfg: AudioOutConfig, path: str | Path) -> None:
        super().__init__(wiring, cfg)
        self.path = Path(path)
        check_writable(self.path, "--output")
        try:
            self.format, self.subtype = output_format(self.path)
        except ValueError as exc:
            raise ValueError(f"--output {exc}") from None
        self.staging = staging_path(self.path)
        self.written: Path | None = None
        """The file the reply audio was committed to, once ``cleanup`` has renamed it into place."""
        self.frames_written = 0
        self.turns_written = 0
        self._file: sf.SoundFile | None = None
        self._last_turn: int | None = None

    def write(self, turn_id: int, samples: np.ndarray) -> None:
        if self._file is None:
            self._file = self._open_staging()
        if turn_id != self._last_turn:
            if self._last_turn is not None:
                self._file.write(np.zeros(int(TURN_GAP_S * self.rate), dtype=np.float32))
                self.frames_written += int(TURN_GAP_S * self.rate)
            self._last_turn = turn_id
            self.turns_written += 1
        self._file.write(np.clip(samples, -1.0, 1.0))
        self.frames_written += len(samples)
        self.handed_out(turn_id)

    def _open_staging(self) -> sf.SoundFile:
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        file = sf.SoundFile(str(self.staging), mode="w", samplerate=self.rate, channels=1, format=self.format,
                            subtype=self.subtype)
        keep_header_current(file)
        return file

    def cleanup(self) -> None:
        if self._file is None:
            if self.written is None:
                log.info("no reply audio was produced; --output %s was not written", self.path)
            return
        self._file.close()
        self._file = None
        try:
            self.written = commit(self.staging, self.path)
        except OSError as exc:
            log.error("could not move the reply audio into %s (%s); it is kept in %s", self.path, exc, self.staging)
            return
        log.info("reply audio: %s (%.1f s, %d turns)", self.path, self.frames_written / self.rate, self.turns_written)


def keep_header_current(file: sf.SoundFile) -> None:
    """Have libsndfile rewrite the header after every write, so a file cut short (the process killed) still reads
    as the audio written so far. soundfile has no public call for it, hence its private handles; without them
    (another soundfile version) only the header goes stale, the data is still written."""
    lib, ffi, handle = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(file, "_file", None)
    if lib is None or ffi is None or handle is None or not hasattr(lib, "sf_command"):
        log.debug("soundfile %s: cannot ask libsndfile to keep the header current", sf.__version__)
        return
    lib.sf_command(handle, SFC_SET_UPDATE_HEADER_AUTO, ffi.NULL, 1)


class SpeakerSink(Sink):
    """Plays through a sounddevice output stream in blocks of exactly ``audio_out.block_size`` frames (the last
    block of a reply is padded with zeros). The stream opens at ``audio_out.sample_rate`` or, if that is 0 or the
    device refuses it, at the device's default rate (audio is then resampled to it).

    Full duplex (``wiring.far_end`` set): the stream opens with low latency and its clock becomes the far end's;
    every block is reported to the far end, stamped when the device has taken it, as the echo canceller's reference (the
    stream's reported latency is the canceller's delay hint). ``FADE_S`` of audio stays in hand, so that playback can
    stop with a fade within one block (or ``INTERRUPT_POLL_S`` when idle): a turn the VAD pauses
    (``turns.paused``: the user may be interrupting) fades out and its audio is held until it resumes (with a fade-in)
    or is interrupted (``turns.interrupted``); an interrupted turn's audio is dropped and the turn ends with
    ``playback_stopped`` marked (when it faded out) and the words that were played (``PlayedText``) as what the user
    heard."""

    name = "speaker"

    stream = None
    """An open, started output stream with ``write(ndarray [block_size, 1])`` and ``latency`` (s)."""
    _held = np.zeros(0, dtype=np.float32)

    def __init__(self, wiring: Wiring, cfg: AudioOutConfig) -> None:
        super().__init__(wiring, cfg)
        self.far_end = wiring.far_end
        self._played: dict[int, PlayedText] = {}
        """Full duplex: per turn, what was received and played of each text chunk."""
        self._playing: int | None = None
        """The turn whose audio was handed over last (full duplex)."""
        self._stopped: set[int] = set()
        """Interrupted turns this sink ended before their TurnEnd came."""
        self._silent_since: float | None = None
        """Monotonic time the paused turn's playback went quiet (None while it plays)."""
        self._fade_in = False
        """The next block handed over starts with a fade-in (after a pause)."""
        if self.far_end is not None:
            self.poll_s = min(self.poll_s, INTERRUPT_POLL_S)

    def setup(self) -> None:
        sd = import_sounddevice()
        device = find_device(self.cfg.device, "output")
        options = {} if self.far_end is None else {"latency": "low"}  # an interruption waits for what is queued
        for rate in dict.fromkeys(r for r in (self.cfg.sample_rate, int(device["default_samplerate"])) if r):
            try:
                self.stream = sd.OutputStream(device=device["index"], samplerate=rate, channels=1, dtype="float32",
                                              blocksize=self.cfg.block_size, **options)
            except sd.PortAudioError as exc:
                log.info("output device %r refused %d Hz (%s)", device["name"], rate, exc)
                continue
            self.rate = rate
            break
        if self.stream is None:
            raise AudioDeviceError(f"cannot open output device {device['name']!r}; pick another audio_out.device")
        self.stream.start()
        log.info("speaker: %s at %d Hz, %d-frame blocks", device["name"], self.rate, self.cfg.block_size)
        if self.far_end is not None:
            self.far_end.use_clock(stream_clock(self.stream))
            latency = float(self.stream.latency or 0.0)
            self.far_end.output_latency_s = latency if latency > 0 else None
            if latency <= 0:
                log.warning("speaker: %s reports no output latency; the echo canceller will find the delay itself "
                            "(it takes a little longer to converge)", device["name"])

    def process(self, item: object):
        if self.far_end is not None and isinstance(item, AudioChunk):
            played = self._played.setdefault(item.turn_id, PlayedText(self.rate))
            played.received(item.text_index, item.text, round(len(item.samples) * self.rate / item.sample_rate))
        return super().process(item)

    def write(self, turn_id: int, samples: np.ndarray) -> None:
        self._playing = turn_id
        self._held = np.concatenate([self._held, samples])
        keep = 0 if self.far_end is None else round(FADE_S * self.rate)  # what a fade-out would play
        size = self.cfg.block_size
        while len(self._held) - keep >= size and not self.stop_event.is_set():
            if self._follow_turn() or self._silent_since is not None:
                return  # interrupted, or paused: the audio waits in hand
            block, self._held = self._held[:size], self._held[size:]
            self._write_block(turn_id, block)

    def finish_turn(self, turn_id: int) -> None:
        while self.far_end is not None and self.turns.paused(turn_id) and not self.stop_event.is_set():
            self.stop_event.wait(INTERRUPT_POLL_S)  # the rest plays once the VAD resumes the turn
        if self._follow_turn():
            return  # interrupted meanwhile
        size = self.cfg.block_size
        while self._held.size:  # full duplex holds up to one block and a fade more
            block, self._held = self._held[:size], self._held[size:]
            self._write_block(turn_id, np.pad(block, (0, size - len(block))), len(block))
        # The last block has been handed over; it plays out within the stream's latency (plus one block).
        self.stop_event.wait(float(self.stream.latency) + self.cfg.block_size / self.rate)

    def discard_turn(self, turn_id: int) -> None:
        self._held = np.zeros(0, dtype=np.float32)

    def control(self, item: object):
        turn_id = getattr(item, "turn_id", None)
        if turn_id in self._stopped:  # ended when it was interrupted: nothing is left to play
            self._stopped.discard(turn_id)
            return
        if self.far_end is not None and turn_id is not None and self.turns.interrupted(turn_id):
            if not self._follow_turn():  # none of its audio was playing
                self._end_interrupted(turn_id)
            self._stopped.discard(turn_id)
            return
        yield from super().control(item)

    def get(self) -> object | None:
        item = super().get()
        if self.far_end is not None:
            self._follow_turn()
        return item

    def _follow_turn(self) -> bool:
        """Full duplex: do what the VAD decided for the turn being played. Interrupted: fade out (unless paused
        already), drop what is held and end the turn (True). Paused: fade out and hold. Resumed: play on, fading in.
        """
        turn_id = self._playing
        if turn_id is None or self.far_end is None:
            return False
        if self.turns.interrupted(turn_id):
            if self._silent_since is None:
                self._fade_out(turn_id)
            self._held = np.zeros(0, dtype=np.float32)
            self._end_interrupted(turn_id)
            self._stopped.add(turn_id)
            return True
        paused = self.turns.paused(turn_id)
        if paused and self._silent_since is None:
            self._fade_out(turn_id)
        elif not paused and self._silent_since is not None:
            self._silent_since, self._fade_in = None, True
        return False

    def _fade_out(self, turn_id: int) -> None:
        """One last block: the next ``FADE_S`` of held audio fading to silence (none if nothing played yet)."""
        fade = self._held[:round(FADE_S * self.rate)] if turn_id in self._started else self._held[:0]
        self._held = self._held[len(fade):]
        if fade.size:
            fade = fade * np.linspace(1.0, 0.0, len(fade), dtype=np.float32)
            self._write_block(turn_id, np.pad(fade, (0, self.cfg.block_size - len(fade))), len(fade))
        self._silent_since = time.monotonic() + (self.far_end.output_latency_s or 0.0)  # once the device played it

    def _end_interrupted(self, turn_id: int) -> None:
        """End an interrupted turn: ``playback_stopped`` is when it went quiet."""
        quiet = self._silent_since if turn_id == self._playing else None
        self.turns.mark(turn_id, "playback_stopped", quiet or time.monotonic())
        played = self._played.get(turn_id)
        heard = played.heard() if played is not None else ""
        self._forget(turn_id)
        self.turns.end(turn_id, heard=heard)
        log.info("speaker: turn %d stopped; the user heard %r", turn_id, heard)

    def _forget(self, turn_id: int) -> None:
        super()._forget(turn_id)
        self._played.pop(turn_id, None)
        if self._playing == turn_id:
            self._playing, self._silent_since, self._fade_in = None, None, False

    def _write_block(self, turn_id: int, block: np.ndarray, audio: int | None = None) -> None:
        """Hand one block to the device; ``audio``: how many of its samples are reply audio (the rest padding)."""
        if self._fade_in:
            fade = min(round(FADE_S * self.rate), len(block))
            block = block.copy()
            block[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
            self._fade_in = False
        underflowed = self.stream.write(block.reshape(self.cfg.block_size, 1))  # [block_size, channels]
        if underflowed:
            log.debug("speaker underflow")
        if self.far_end is not None:  # stamped once the device holds it (a blocking write waits for room first)
            self.far_end.played(block, self.rate, self.far_end.clock(), underflowed=bool(underflowed))
            played = self._played.get(turn_id)
            if played is not None:
                played.played(len(block) if audio is None else audio)
        self.handed_out(turn_id)

    def cleanup(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
