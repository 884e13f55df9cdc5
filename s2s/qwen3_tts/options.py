"""The engine's defaults and rules, in one torch-free module (the config, the handlers and the engine read them here).

- ``SAMPLE_RATE``: every Qwen3-TTS 12 Hz checkpoint speaks 24 kHz audio (1920 samples per 80 ms codec frame).
- ``CHUNK_SIZE`` / ``FIRST_CHUNK_SIZE``: codec frames per streamed chunk; a small first chunk gives early audio.
- ``SamplingParams``: the reference's ``generation_config.json`` defaults and their validation.
- ``takes_instruct``: which checkpoints take a style instruction.
- ``KINDS``: the checkpoint kinds (config.json ``tts_model_type``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

SAMPLE_RATE = 24000
"""Hz, the audio rate of every 12 Hz checkpoint."""
FRAME_SAMPLES = 1920
"""Samples per codec frame (80 ms at 24 kHz)."""
CHUNK_SIZE = 4
"""Codec frames per streamed audio chunk after the first."""
FIRST_CHUNK_SIZE = 2
"""Codec frames in the first streamed chunk (smaller = earlier first audio)."""
KINDS = ("custom_voice", "voice_design", "base")
"""config.json ``tts_model_type`` of the three released kinds: named speakers, described voices, cloned voices."""
NO_INSTRUCT_SIZE = "0b6"
"""config.json ``tts_model_size`` of the CustomVoice model that takes no instruction (the 0.6B)."""


def takes_instruct(model_size: str) -> bool:
    """Whether a CustomVoice checkpoint of ``tts_model_size`` honours ``instruct`` (the reference drops it when the
    size is a substring of "0b6", i.e. for the 0.6B model)."""
    return not model_size or model_size not in NO_INSTRUCT_SIZE


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; field names and defaults follow the reference's ``generation_config.json``."""

    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    seed: int | None = None
    """Reseeds torch's default generators before a generation (reproducible output); None leaves them as they are."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} = {value!r} must be a finite number")
        for name in ("temperature", "subtalker_temperature"):
            if not 0.0 < getattr(self, name) <= 100.0:
                raise ValueError(f"{name} = {getattr(self, name)!r} must be in (0, 100]")
        if not 0.0 < self.repetition_penalty <= 100.0:
            raise ValueError(f"repetition_penalty = {self.repetition_penalty!r} must be in (0, 100]")
        for name in ("top_p", "subtalker_top_p"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} = {getattr(self, name)!r} must be in (0, 1]")
        for name in ("top_k", "subtalker_top_k"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} = {getattr(self, name)!r} must be in [0, 1000000] (0 = off)")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed = {self.seed!r} must be in [0, 2**63) (or None for random)")

    @classmethod
    def greedy(cls) -> SamplingParams:
        """Argmax for both the talker and the code predictor (repetition penalty stays on, as in the reference)."""
        return cls(do_sample=False, subtalker_do_sample=False)

    @classmethod
    def same_for_both(cls, do_sample: bool = True, temperature: float = 0.9, top_k: int = 50, top_p: float = 1.0,
                      repetition_penalty: float = 1.05, seed: int | None = None) -> SamplingParams:
        """One setting for the talker and the code predictor (what the [tts] section configures)."""
        return cls(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                   repetition_penalty=repetition_penalty, subtalker_do_sample=do_sample,
                   subtalker_temperature=temperature, subtalker_top_k=top_k, subtalker_top_p=top_p, seed=seed)

    @property
    def graph_key(self) -> tuple:
        """Everything a captured step depends on (the seed is not: it only sets the generator state)."""
        return (self.do_sample, self.temperature, self.top_k, self.top_p, self.repetition_penalty,
                self.subtalker_do_sample, self.subtalker_temperature, self.subtalker_top_k, self.subtalker_top_p)
