"""The ``piper`` TTS backend: a Piper ONNX voice on the CPU (the embedded en_US joe voice by default).

Piper phonemizes the whole text first and then synthesizes one sentence at a time; each sentence is yielded as
soon as it is ready, so a two-sentence text streams as two chunks. Audio is float32 mono at the voice's rate
(22.05 kHz for joe-medium), peak-normalized per sentence by Piper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from s2s.config import TTSConfig
from s2s.models import piper_voice

log = logging.getLogger(__name__)

WARMUP_TEXT = "Hello."


class PiperEngine:
    """``TTSEngine`` over ``piper.PiperVoice`` (onnxruntime, CPU)."""

    name = "piper"

    def __init__(self, voice_path: str | Path) -> None:
        from piper import PiperVoice

        self.voice_path = Path(voice_path)
        self.voice = PiperVoice.load(str(self.voice_path))
        self.sample_rate: int = int(self.voice.config.sample_rate)
        log.info("piper voice %s loaded (%d Hz)", self.voice_path.name, self.sample_rate)

    @classmethod
    def from_config(cls, cfg: TTSConfig) -> PiperEngine:
        for key, value in (("device", cfg.device), ("dtype", cfg.dtype)):
            if value not in ("auto", "cpu", "float32"):
                log.warning("tts.%s = %r is ignored: the piper backend runs in float32 on the CPU (onnxruntime)",
                            key, value)
        return cls(piper_voice(cfg.piper_voice))

    def warmup(self) -> None:
        for _ in self.synthesize(WARMUP_TEXT):
            pass

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        for chunk in self.voice.synthesize(text):
            if cancel is not None and cancel.is_set():
                return
            yield chunk.audio_float_array  # [samples] float32
