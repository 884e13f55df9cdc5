"""Speech to text with faster-whisper (CTranslate2): SpeechSegment -> Transcript, or TurnEnd for noise.

The segment already went through the VAD, so faster-whisper's own VAD filter is off. ``device = "auto"`` takes
CUDA when CTranslate2 sees a CUDA device (PyPI's aarch64 wheels are CPU-only; see JETSON_SETUP.md), else the CPU
with int8 weights. ``language = "auto"`` lets Whisper detect the language, which is passed on to the LLM and TTS.
An utterance that gives no words (silence, breathing, "[BLANK_AUDIO]", "(music)") ends the turn with no reply.

Early transcription: a ``SpeculativeSegment`` (the VAD's utterance so far, at the first ``vad.early_stt_ms`` of
silence) is transcribed and kept, unless something newer already waits in the queue. When the utterance's
SpeechSegment comes with the same start and end of speech (the user said nothing more), that transcript is used
as it is; otherwise it is dropped and the segment transcribed. A speculative transcript is never sent on by itself,
so one that is dropped never reaches the LLM or its history. With ``end_of_turn.silence_ms`` set, each speculative
transcript is also rated (``s2s.end_of_turn``): when its words sound finished, the VAD ends the utterance without
waiting for ``vad.min_silence_ms``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from s2s.audio import SPEECH_RATE
from s2s.config import STTConfig
from s2s.devices import resolve_device, usable_cores
from s2s.handler import Handler, Wiring
from s2s.messages import SpeculativeSegment, SpeechSegment, Transcript, TurnEnd
from s2s.models import whisper_model

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪[^♪]*♪")


def ctranslate2_device(cfg: STTConfig) -> tuple[str, str]:
    """(device, compute_type) for CTranslate2 (compute type "default" = float16 on CUDA, int8 on the CPU)."""
    import ctranslate2

    device = resolve_device("stt", cfg.device, ctranslate2.get_cuda_device_count, library="CTranslate2")
    compute_type = cfg.compute_type
    if compute_type == "default":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def is_noise(text: str) -> bool:
    """True if a transcript holds no words: empty, punctuation only, or only annotations like "[BLANK_AUDIO]"."""
    return not any(c.isalnum() for c in _ANNOTATION.sub("", text))


class STTHandler(Handler):
    """SpeechSegment -> Transcript (marks ``transcript_ready``); a noise-only transcript -> TurnEnd."""

    name = "stt"
    cfg: STTConfig
    model: WhisperModel | None = None
    """Loaded by ``setup`` (tests may inject a loaded one)."""
    speculation: tuple[float, float, str, str | None] | None = None
    """(start_s, end_s, text, language) of the last speculative transcript, until a SpeechSegment comes."""
    speculative_counts: dict[str, int]
    """How many speculative transcripts were "used", "dropped" (speech went on) or "skipped" (a newer item
    waited): read by tests and bench/e2e.py."""

    def __init__(self, wiring: Wiring, cfg: STTConfig) -> None:
        super().__init__(wiring, cfg)
        self.speculative_counts = {"used": 0, "dropped": 0, "skipped": 0}
        self.speculative_ms: deque[float] = deque(maxlen=1000)
        """How long each speculative transcription took, the last 1000 (read by bench/e2e.py)."""

    def setup(self) -> None:
        if self.model is None:
            self.model = self.load_model()
        self.transcribe(np.zeros(SPEECH_RATE, dtype=np.float32))  # warm-up: 1 s of silence
        if self.wiring.end_of_turn is not None:
            self.wiring.end_of_turn.setup()

    def load_model(self) -> WhisperModel:
        """faster-whisper's model for ``stt.model`` on the configured device (a subclass may load another engine
        with the same ``transcribe``)."""
        from faster_whisper import WhisperModel

        model = whisper_model(self.cfg)
        device, compute_type = ctranslate2_device(self.cfg)
        threads = self.cfg.cpu_threads or min(4, usable_cores())
        log.info("STT: faster-whisper %s on %s (%s%s)", model, device, compute_type,
                 f", {threads} CPU threads" if device == "cpu" else "")
        return WhisperModel(model, device=device, compute_type=compute_type, cpu_threads=threads)

    def transcribe(self, audio: np.ndarray) -> tuple[str, str | None]:
        """(text, language) of 16 kHz mono float32 audio; the text is "" when it holds no words."""
        segments, info = self.segments(audio)
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return ("" if is_noise(text) else text), info.language

    def segments(self, audio: np.ndarray, language: str | None = None, prompt: str = "",
                 temperature: float | None = None, timestamps: bool = False,
                 words: bool = False) -> tuple[list, object]:
        """faster-whisper's segments of 16 kHz mono float32 audio (decoded now, a list) and its info.
        ``language`` None = the [stt] language; ``prompt`` = text that precedes the audio (names, spelling);
        ``temperature`` None = faster-whisper's fallback schedule; ``timestamps`` = segment times, ``words`` = word
        times too."""
        assert self.model is not None, "STTHandler.setup() was not called"
        if language is None:
            language = None if self.cfg.language == "auto" else self.cfg.language
        options = {} if temperature is None else {"temperature": temperature}
        segments, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.cfg.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=not (timestamps or words),
            word_timestamps=words,
            initial_prompt=prompt or None,
            **options,
        )
        found = []
        for segment in segments:  # decoding happens while iterating; faster-whisper skips segments it rates
            if self.stop_event.is_set():  # as non-speech (no_speech_threshold with log_prob_threshold)
                break
            found.append(segment)
        return found, info

    def process(self, item: object) -> Iterator[object]:
        if isinstance(item, SpeculativeSegment):
            self.speculate(item)
            return
        if not isinstance(item, SpeechSegment):
            raise TypeError(f"the STT stage takes SpeechSegment items, not {type(item).__name__}")
        guess, self.speculation = self.speculation, None
        if guess is not None and guess[:2] == (item.start_s, item.end_s):
            self.speculative_counts["used"] += 1
            text, language = guess[2:]
            log.debug("STT: turn %d: the speculative transcript holds", item.turn_id)
        else:
            if guess is not None:
                self.speculative_counts["dropped"] += 1
            text, language = self.transcribe(item.audio)
        self.turns.mark(item.turn_id, "transcript_ready")
        if not text:
            log.info("STT: turn %d: no words in %.1f s of audio; no reply", item.turn_id,
                     item.audio.size / SPEECH_RATE)
            yield TurnEnd(item.turn_id)
            return
        log.info("STT: turn %d: %r (%s)", item.turn_id, text, language)
        yield Transcript(turn_id=item.turn_id, text=text, language=language)

    def speculate(self, item: SpeculativeSegment) -> None:
        """Transcribe the utterance so far and keep it for its SpeechSegment; skipped when a newer item (a later
        guess, or the segment itself) already waits, since this one could not be used then."""
        if self.speculation is not None:
            self.speculative_counts["dropped"] += 1  # the user spoke on after the earlier pause
        self.speculation = None
        if self.in_queue is not None and not self.in_queue.empty():
            self.speculative_counts["skipped"] += 1
            return
        start = time.monotonic()
        text, language = self.transcribe(item.audio)
        self.speculative_ms.append(round((time.monotonic() - start) * 1000, 1))
        self.speculation = (item.start_s, item.end_s, text, language)
        log.debug("STT: speculative transcript of %.2f-%.2f s: %r", item.start_s, item.end_s, text)
        if self.wiring.end_of_turn is not None and text:
            self.wiring.end_of_turn.judge(item.start_s, item.end_s, text)
