"""Speech to text with faster-whisper (CTranslate2): SpeechSegment -> Transcript, or TurnEnd for noise.

The segment already went through the VAD, so faster-whisper's own VAD filter is off. ``device = "auto"`` takes
CUDA when CTranslate2 sees a CUDA device (PyPI's aarch64 wheels are CPU-only; see JETSON_SETUP.md), else the CPU
with int8 weights. ``language = "auto"`` lets Whisper detect the language, which is passed on to the LLM and TTS.
An utterance that gives no words (silence, breathing, "[BLANK_AUDIO]", "(music)") ends the turn with no reply.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from s2s.config import STTConfig
from s2s.handler import Handler
from s2s.messages import SpeechSegment, Transcript, TurnEnd, TurnFailed
from s2s.models import whisper_model
from s2s.turns import Turns

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪[^♪]*♪")


def resolve_device(cfg: STTConfig) -> tuple[str, str]:
    """(device, compute_type) for CTranslate2."""
    import ctranslate2

    device = cfg.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    elif device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise RuntimeError(
            "stt.device = 'cuda' but this CTranslate2 build sees no CUDA device (PyPI's aarch64 wheels are CPU-only); "
            "install a CUDA build of ctranslate2 (see JETSON_SETUP.md) or set stt.device = 'auto'"
        )
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

    def __init__(
        self,
        cfg: STTConfig,
        turns: Turns,
        in_queue: queue.Queue | None,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(in_queue, out_queue, stop_event, poll_s)
        self.cfg = cfg
        self.turns = turns
        self.model: WhisperModel | None = None
        """Loaded by ``setup`` (tests may inject a loaded one)."""

    def setup(self) -> None:
        from faster_whisper import WhisperModel

        model = whisper_model(self.cfg)
        device, compute_type = resolve_device(self.cfg)
        self.model = WhisperModel(model, device=device, compute_type=compute_type)
        log.info("STT: faster-whisper %s on %s (%s)", model, device, compute_type)
        self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))  # warm-up: 1 s of silence

    def transcribe(self, audio: np.ndarray) -> tuple[str, str | None]:
        """(text, language) of 16 kHz mono float32 audio; the text is "" when it holds no words."""
        assert self.model is not None, "STTHandler.setup() was not called"
        language = None if self.cfg.language == "auto" else self.cfg.language
        segments, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.cfg.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        texts = []
        for segment in segments:  # decoding happens while iterating; faster-whisper skips segments it rates
            if self.stop_event.is_set():  # as non-speech (no_speech_threshold with log_prob_threshold)
                break
            texts.append(segment.text.strip())
        text = " ".join(texts).strip()
        return ("" if is_noise(text) else text), info.language

    def process(self, item: object) -> Iterator[object]:
        if isinstance(item, (TurnEnd, TurnFailed)):
            yield item
            return
        if not isinstance(item, SpeechSegment):
            raise TypeError(f"the STT stage takes SpeechSegment items, not {type(item).__name__}")
        if not self.turns.is_open(item.turn_id):
            log.debug("STT: turn %d is closed; segment dropped", item.turn_id)
            return
        text, language = self.transcribe(item.audio)
        self.turns.mark(item.turn_id, "transcript_ready")
        if not text:
            log.info("STT: turn %d: no words in %.1f s of audio; no reply", item.turn_id,
                     item.audio.size / SAMPLE_RATE)
            yield TurnEnd(item.turn_id)
            return
        log.info("STT: turn %d: %r (%s)", item.turn_id, text, language)
        yield Transcript(turn_id=item.turn_id, text=text, language=language)
