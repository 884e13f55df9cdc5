"""The models a server serves, loaded once: the TTS engine behind its ``SpeechScheduler``, the STT behind its
``Transcriber``, and the voice catalog. ``s2s serve`` and ``s2s wyoming`` both run on one ``Services``.

The TTS engine is the configured backend (``s2s.tts_engine.make_engine``), warmed up; a Base checkpoint may start
without a voice of its own (requests name uploaded clone voices). With ``server.max_batch`` > 1 the qwen3 engine
serves that many requests at once (``BatchedSpeechScheduler``). The STT is the configured ``[stt]`` backend's
handler, set up as the pipeline sets it up; its ``segments`` method (ours: ``handlers.stt``) gives times for srt,
vtt and verbose_json, and a backend with only ``transcribe`` answers with one segment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2s import registry
from s2s.audio import SPEECH_RATE
from s2s.config import Config
from s2s.handler import Handler, Wiring
from s2s.server.audio_codecs import decode_audio
from s2s.server.batched import BatchedSpeechScheduler
from s2s.server.scheduler import Job, SpeechScheduler, Worker, WorkerHealth
from s2s.server.transcripts import Segment, Transcription, Word
from s2s.server.voices import VoiceCatalog, VoiceStore, default_voices_dir
from s2s.tts_engine import make_engine
from s2s.turns import Turns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TranscribeRequest:
    """One transcription: ``audio`` is a file object or path (decoded on the STT thread) or 16 kHz float32."""

    audio: object
    language: str | None = None
    """None = the [stt] language."""
    prompt: str = ""
    temperature: float | None = None
    timestamps: bool = False
    words: bool = False


class Transcriber:
    """The STT handler behind its own worker (one transcription at a time, bounded queue)."""

    def __init__(self, stt: Handler, queue_size: int, max_audio_s: float, hang_timeout_s: float = 30.0) -> None:
        self.stt = stt
        self.max_audio_s = max_audio_s
        self.name = str(getattr(stt.cfg, "backend", stt.name))
        self.worker = Worker("stt", queue_size, hang_timeout_s)

    def submit(self, request: TranscribeRequest) -> Job[Transcription]:
        return self.worker.submit(lambda cancel: self._run(request, cancel))

    def _run(self, request: TranscribeRequest, cancel: threading.Event) -> Iterator[Transcription]:
        audio = request.audio
        if not isinstance(audio, np.ndarray):
            audio = decode_audio(audio, SPEECH_RATE, self.max_audio_s)
        if cancel.is_set():
            return
        yield self.transcribe(audio, request)

    def transcribe(self, audio: np.ndarray, request: TranscribeRequest) -> Transcription:
        duration = audio.size / SPEECH_RATE
        segments_of = getattr(self.stt, "segments", None)
        if segments_of is None:  # a backend with transcribe() only
            text, language = self.stt.transcribe(audio)
            return Transcription(text, language or "", duration, (Segment(0, 0.0, duration, text),) if text else ())
        found, info = segments_of(audio, language=request.language, prompt=request.prompt,
                                  temperature=request.temperature, timestamps=request.timestamps,
                                  words=request.words)
        segments = tuple(
            Segment(i, float(s.start), float(s.end), s.text.strip(), int(getattr(s, "seek", 0)),
                    tuple(getattr(s, "tokens", ()) or ()), float(getattr(s, "temperature", 0.0) or 0.0),
                    float(getattr(s, "avg_logprob", 0.0)), float(getattr(s, "compression_ratio", 0.0)),
                    float(getattr(s, "no_speech_prob", 0.0)),
                    tuple(Word(w.word, float(w.start), float(w.end)) for w in (getattr(s, "words", None) or ())))
            for i, s in enumerate(found))
        text = " ".join(s.text for s in segments).strip()
        return Transcription(text, info.language or "", duration, segments)

    def health(self) -> WorkerHealth:
        return self.worker.health()

    def close(self) -> None:
        self.worker.close()


def speech_scheduler(engine, max_batch: int, queue_size: int, max_text_chars: int,
                     hang_timeout_s: float) -> SpeechScheduler | BatchedSpeechScheduler:
    """The batched scheduler for the qwen3 engine with ``max_batch`` > 1, else one request at a time (other backends
    have no batched decode: they log it and serve one at a time)."""
    if max_batch > 1 and engine.name == "qwen3":
        log.info("tts: up to %d requests share each frame step (server.max_batch)", max_batch)
        return BatchedSpeechScheduler(engine, max_batch, queue_size, max_text_chars, hang_timeout_s)
    if max_batch > 1:
        log.warning("tts: server.max_batch = %d needs the qwen3 backend; %s serves one request at a time",
                    max_batch, engine.name)
    return SpeechScheduler(engine, queue_size, max_text_chars, hang_timeout_s)


class Services:
    """What a server needs, loaded; ``speech`` and ``stt`` are None when the server was started without them."""

    def __init__(self, config: Config, speech: SpeechScheduler | None, stt: Transcriber | None,
                 voices: VoiceCatalog | None, checkpoint: str = "") -> None:
        self.config = config
        self.speech = speech
        self.stt = stt
        self.voices = voices
        self.checkpoint = checkpoint
        """Folder name of the TTS checkpoint ("" for engines without one), recorded with clone voices."""
        self.started_at = time.time()

    @classmethod
    def load(cls, config: Config, tts: bool = True, stt: bool = True) -> Services:
        """Load and warm up the configured TTS and STT (minutes on a GPU: graph capture). Raises what the backends
        raise: FileNotFoundError for a missing model, ValueError for a setting, ImportError, RuntimeError."""
        server = config.server
        hang = config.pipeline.hang_timeout_s
        speech = voices = transcriber = None
        checkpoint = ""
        if tts:
            t0 = time.monotonic()
            engine = make_engine(config.tts, voice_required=False)
            engine.warmup()
            checkpoint = getattr(getattr(engine, "checkpoint", None), "name", "")
            log.info("tts: %s engine ready (%d Hz) in %.1f s", engine.name, engine.sample_rate, time.monotonic() - t0)
            speech = speech_scheduler(engine, server.max_batch, server.queue_size, config.tts.max_text_chars, hang)
            folder = Path(server.voices_dir).expanduser() if server.voices_dir else default_voices_dir()
            voices = VoiceCatalog(engine, VoiceStore(folder), server.voices())
        if stt:
            t0 = time.monotonic()
            handler = registry.load("stt", config.stt.backend)(Wiring(Turns()), config.stt)
            handler.setup()
            log.info("stt: %s ready in %.1f s", config.stt.backend, time.monotonic() - t0)
            transcriber = Transcriber(handler, server.queue_size, server.max_audio_s, hang)
        return cls(config, speech, transcriber, voices, checkpoint)

    def health(self) -> list[WorkerHealth]:
        return [part.health() for part in (self.speech, self.stt) if part is not None]

    def healthy(self) -> bool:
        return not any(report.hung for report in self.health())

    def close(self) -> None:
        for part in (self.speech, self.stt):
            if part is not None:
                part.close()
