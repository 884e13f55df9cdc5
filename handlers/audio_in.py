"""Sources: the first stage, feeding the pipeline from the microphone, WAV files, or a typed prompt.

    MicSource   sounddevice capture at the device's rate, resampled to 16 kHz AudioFrames (runs until stopped);
                in full duplex the echo of the speaker is cancelled from them (s2s.aec)
    FileSource  an audio file, or a folder of them (sorted by name), decoded in blocks into 16 kHz AudioFrames
    TextSource  ``--text``: opens a turn and emits its Transcript directly (no VAD/STT)

Half-duplex: while a turn is open (``not turns.listening``) the file source waits before feeding more audio, so
each utterance in a file is answered before the next is heard; the microphone keeps capturing and the VAD drops
those frames. File and text sources end with EndOfStream; the microphone runs until the stop event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from itertools import chain
from pathlib import Path

import numpy as np
import soundfile as sf

from s2s.audio import SPEECH_RATE, StreamResampler, audio_info, check_audio_file, read_blocks, to_mono
from s2s.aec import EchoCanceller, EchoCancellation, make_canceller
from s2s.audio_devices import AudioDeviceError, find_device, import_sounddevice
from s2s.config import AECConfig, AudioInConfig
from s2s.handler import Handler, Wiring
from s2s.messages import AudioFrame, EndOfStream, Transcript

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = tuple(sorted({f".{fmt.lower()}" for fmt in sf.available_formats() if fmt != "RAW"}
                              | {".aif", ".oga", ".opus", ".snd", ".sph"}))
"""Files of an --input folder taken as audio, by name: every format soundfile reads here (MP3 where libsndfile
has it), by its usual extensions. Other files are listed as skipped; a single --input file may have any name."""
TRAILING_SILENCE_S = 1.0
"""Silence fed after each input file so the VAD closes an utterance that runs to the end of the file."""


class Source(Handler):
    """A handler with no input queue: ``produce()`` emits items until the input ends or a stop is requested."""

    stream_time = 0.0
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
    """Feeds an audio file, or every audio file of a folder in name order, as 16 kHz frames of ``audio_in.block_ms``.

    Every header is checked when the source is built, before any model loads (``checked_inputs``: a damaged rate
    or a file longer than ``audio_in.max_file_s`` is refused; in a folder it is skipped and listed). Files are
    decoded, downmixed and resampled a block at a time as the frames go out, so memory stays bounded whatever
    their length. Frames are handed over as fast as the VAD takes them (one frame ahead at most, so the half-duplex
    gate closes within a frame of the end of an utterance), or at real-time speed with ``audio_in.realtime_file``.
    """

    name = "file-in"

    def __init__(self, wiring: Wiring, cfg: AudioInConfig, path: str | Path) -> None:
        super().__init__(wiring, cfg)
        self.max_file_s = cfg.max_file_s
        self.files = checked_inputs(path, self.max_file_s)  # bad input fails before models load
        self.frame_len = SPEECH_RATE * cfg.block_ms // 1000

    def produce(self) -> None:
        for path in self.files:
            with closing(speech_blocks(path, self.max_file_s)) as blocks:
                if not self.feed(blocks):
                    return

    def feed(self, blocks: Iterable[np.ndarray]) -> bool:
        """Emit 16 kHz mono audio, given in blocks of any length, and the trailing silence frame by frame; False
        if stopped. Blocks are taken as the frames go out, so a long file is never held whole."""
        silence = np.zeros(int(TRAILING_SILENCE_S * SPEECH_RATE), dtype=np.float32)
        t_start = time.monotonic() - self.stream_time
        for frame in frames(chain(blocks, [silence]), self.frame_len):
            if not self.turns.listening:
                if not self.wait_listening():
                    return False
                t_start = time.monotonic() - self.stream_time  # real-time pacing restarts after a reply
            if self.cfg.realtime_file:
                self.stop_event.wait(max(0.0, t_start + self.stream_time + len(frame) / SPEECH_RATE - time.monotonic()))
            elif not self._wait_drained():
                return False
            if not self.put(AudioFrame(frame, SPEECH_RATE, time.monotonic(), self.stream_time)):
                return False
            self.stream_time += len(frame) / SPEECH_RATE
        return True

    def _wait_drained(self) -> bool:
        """Wait until the next stage has taken every frame handed to it; False if stopped."""
        while self.out_queue.qsize() > 0:
            if self.stop_event.wait(0.001):
                return False
        return True


class MicSource(Source):
    """Captures from a sounddevice input stream (mono, at the device's default rate or ``audio_in.sample_rate``)
    and emits 16 kHz AudioFrames of ``audio_in.block_ms``.

    Full duplex (``wiring.far_end`` set, ``aec`` the [aec] section): every block is resampled to 16 kHz first, then
    goes through the echo canceller with the far end that played meanwhile; the frames carry the cleaned audio and
    that reference (``AudioFrame.far_end``). ``setup`` fails (AECUnavailable) when the canceller cannot be loaded."""

    name = "mic"
    cfg: AudioInConfig
    stream = None
    rate = 0
    """The capture rate (Hz), known once ``setup`` opened the device."""
    canceller: EchoCanceller | None = None

    def __init__(self, wiring: Wiring, cfg: AudioInConfig, aec: AECConfig | None = None) -> None:
        super().__init__(wiring, cfg)
        self.aec = aec if wiring.far_end is not None else None
        if wiring.far_end is not None and aec is None:
            raise ValueError("a full-duplex microphone needs the [aec] section")

    def setup(self) -> None:
        if self.aec is not None and self.canceller is None:  # before the device: a missing library says so first
            self.canceller = make_canceller(self.aec)
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
        resampler = StreamResampler(self.rate, SPEECH_RATE)
        block = self.rate * self.cfg.block_ms // 1000
        far_end = self.wiring.far_end
        echo = None if self.canceller is None else \
            EchoCancellation(self.canceller, far_end, float(getattr(self.stream, "latency", 0.0) or 0.0))
        self.stream.start()
        while not self.stop_event.is_set():
            self.busy_since = time.monotonic()
            samples, overflowed = self.stream.read(block)  # [block, 1]
            t_captured = time.monotonic()
            if overflowed:
                log.warning("microphone overflow: audio was lost (the VAD is not keeping up)")
            frame = resampler(samples[:, 0])  # [~block * 16000 / rate]
            reference = None
            if echo is not None:  # stamped as if its last sample were captured now: never early (see s2s.aec)
                frame, reference = echo(frame, far_end.clock() - frame.size / SPEECH_RATE)
            if frame.size and not self.put(AudioFrame(frame, SPEECH_RATE, t_captured, self.stream_time, reference)):
                return
            self.stream_time += frame.size / SPEECH_RATE

    def cleanup(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class TextSource(Source):
    """``--text``: one turn whose transcript is the given text (the VAD and STT stages are skipped)."""

    name = "text-in"

    def __init__(self, wiring: Wiring, cfg: AudioInConfig, text: str) -> None:
        super().__init__(wiring, cfg)
        self.text = text.strip()
        if not self.text:
            raise ValueError('--text is empty; give the words to send to the assistant, e.g. --text "What time is it?"')

    def produce(self) -> None:
        turn_id = self.turns.new_id()
        self.turns.begin(turn_id)
        self.turns.mark(turn_id, "transcript_ready")
        self.put(Transcript(turn_id=turn_id, text=self.text))


def input_files(path: str | Path) -> list[Path]:
    """The audio file itself, or a folder's audio files by name (``AUDIO_SUFFIXES``), sorted; hidden files (macOS
    AppleDouble ``._x.wav`` among them) are ignored. ValueError with the fix otherwise."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in visible_files(path) if p.suffix.lower() in AUDIO_SUFFIXES]
        if not files:
            raise ValueError(f"--input folder {path} holds no audio files (.wav, .flac, .ogg, .mp3, ...); "
                             "give a WAV file or a folder of WAV files")
        return files
    if not path.is_file():
        raise ValueError(f"--input {path} does not exist; give a WAV file or a folder of WAV files")
    return [path]


def visible_files(folder: Path) -> list[Path]:
    """A folder's files, sorted by name, without hidden ones (names starting with a dot)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def checked_inputs(path: str | Path, max_s: float | None = None) -> list[Path]:
    """``input_files`` whose headers ``audio_info`` accepts. A single file it refuses is the error; a folder's
    refused and non-audio files are skipped and listed in one INFO line (ValueError if none is left)."""
    files = input_files(path)
    if not Path(path).is_dir():
        return [check_audio_file(files[0], max_s)]
    kept, skipped = [], [f"{p.name}: not an audio file name" for p in visible_files(Path(path)) if p not in files]
    for file in files:
        try:
            kept.append(check_audio_file(file, max_s))
        except (ValueError, FileNotFoundError) as exc:
            skipped.append(str(exc))
    if not kept:
        raise ValueError(f"--input folder {path} holds no usable audio file: {_listed(skipped)}")
    if skipped:
        log.info("--input %s: skipped %d of %d files: %s", path, len(skipped), len(skipped) + len(kept),
                 _listed(skipped))
    return kept


def _listed(items: list[str], limit: int = 10) -> str:
    shown = " | ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} | and {len(items) - limit} more"


def speech_blocks(path: Path, max_s: float | None = None) -> Iterator[np.ndarray]:
    """A file's audio as 16 kHz mono float32 blocks, decoded, downmixed and resampled one block at a time (memory
    stays bounded whatever the length; downmixing and resampling are logged at INFO). The header is checked first
    (``audio_info``: ValueError naming the file); a file that stops decoding part-way ends there, with a warning."""
    info = audio_info(path, max_s)
    if info.channels > 1:
        log.info("%s has %d channels; mixing them down to mono", path, info.channels)
    if info.samplerate != SPEECH_RATE:
        log.info("%s is at %d Hz; resampling to %d Hz", path, info.samplerate, SPEECH_RATE)
    log.info("input %s: %.1f s", path, info.frames / info.samplerate)
    resampler = StreamResampler(info.samplerate, SPEECH_RATE)
    lead_in = resampler.delay  # output samples before the file's first sample: dropped
    try:
        for block in read_blocks(path, info.channels):  # [n, channels]
            speech = resampler(to_mono(block))  # [~n * 16000 / rate]
            speech, lead_in = speech[lead_in:], max(0, lead_in - len(speech))
            if speech.size:
                yield speech
    except ValueError as exc:
        log.warning("decoding stopped part-way: %s; going on with the audio read so far", exc)
    tail = resampler.flush()[lead_in:]
    if tail.size:
        yield tail


def load_input(path: Path, max_s: float | None = None) -> np.ndarray:
    """A whole file as 16 kHz mono float32 (``speech_blocks`` joined: for short files)."""
    return np.concatenate([np.zeros(0, dtype=np.float32), *speech_blocks(path, max_s)])


def frames(blocks: Iterable[np.ndarray], frame_len: int) -> Iterator[np.ndarray]:
    """Blocks of any length -> frames of ``frame_len`` samples (only the last one may be shorter)."""
    held = np.zeros(0, dtype=np.float32)
    for block in blocks:
        held = np.concatenate([held, block])
        whole = len(held) // frame_len * frame_len
        for start in range(0, whole, frame_len):
            yield held[start:start + frame_len]
        held = held[whole:]
    if held.size:
        yield held
