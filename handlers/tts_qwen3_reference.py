"""The ``qwen3-reference`` TTS backend: the official ``qwen_tts.Qwen3TTSModel`` generate, for parity and debugging.

The reference cannot stream: each request yields its whole audio (24 kHz float32) once generation ends, and a
cancel is only seen before and after a request. ``do_sample = false`` makes both the talker and the code
predictor greedy; ``seed >= 0`` seeds torch before every request, so a request's audio is reproducible.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from handlers.tts_qwen3 import WARMUP_FRAMES, WARMUP_TEXT, choose_voice, engine_device, find_checkpoint
from s2s import reference_env
from s2s.config import TTSConfig
from s2s.qwen3_tts.options import SAMPLE_RATE

log = logging.getLogger(__name__)


class ReferenceQwen3Engine:
    """``TTSEngine`` over ``qwen_tts.Qwen3TTSModel``: ``generate_custom_voice``, ``_voice_design`` or ``_voice_clone``."""

    name = "qwen3-reference"
    sample_rate = SAMPLE_RATE

    def __init__(self, cfg: TTSConfig, checkpoint: Path) -> None:
        self.cfg = cfg
        self.voice = choose_voice(cfg, checkpoint)
        if self.voice.kind == "base" and not self.voice.ref_audio:
            raise ValueError("tts.backend = 'qwen3-reference' clones from tts.ref_audio (and tts.ref_text); "
                             "tts.voice_prompt files are read by the 'qwen3' backend only")
        if not reference_env.in_process():
            raise ValueError("tts.backend = 'qwen3-reference' needs the official qwen-tts 0.1.1, which runs on the "
                             "transformers 4.57.3 stack only: use tts.backend = 'qwen3' (same tokens and audio), or "
                             "make this venv with S2S_TRANSFORMERS=4.57.3 ./setup.sh")
        from qwen_tts import Qwen3TTSModel  # needs patches.apply() first on a Jetson (the CLI applies them at entry)

        device, dtype = engine_device(cfg)
        self.model = Qwen3TTSModel.from_pretrained(str(checkpoint), device_map=device, dtype=dtype)
        self.generate_kwargs = dict(
            do_sample=cfg.do_sample, top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
            repetition_penalty=cfg.repetition_penalty, subtalker_dosample=cfg.do_sample, subtalker_top_k=cfg.top_k,
            subtalker_top_p=cfg.top_p, subtalker_temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens or cfg.max_seq_len,
        )
        self.clone_prompt = None
        if self.voice.kind == "base":
            self.clone_prompt = self.model.create_voice_clone_prompt(
                self.voice.ref_audio, ref_text=self.voice.ref_text or None, x_vector_only_mode=not self.voice.ref_text
            )
        log.info("qwen3-reference: %s (%s) on %s", checkpoint.name, self.voice.kind, device)

    @classmethod
    def from_config(cls, cfg: TTSConfig) -> ReferenceQwen3Engine:
        return cls(cfg, find_checkpoint(cfg))

    def generate(self, text: str, max_new_tokens: int | None = None) -> np.ndarray:
        """The whole audio for ``text`` (float32 [samples] at 24 kHz); ``max_new_tokens`` overrides the config's."""
        import torch

        kwargs = dict(self.generate_kwargs)
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = max_new_tokens

        if self.cfg.seed >= 0:
            torch.manual_seed(self.cfg.seed)
        v = self.voice
        if v.kind == "custom_voice":
            wavs, rate = self.model.generate_custom_voice(text, v.speaker, language=v.language,
                                                          instruct=v.instruct or None, **kwargs)
        elif v.kind == "voice_design":
            wavs, rate = self.model.generate_voice_design(text, v.instruct, language=v.language,
                                                          **kwargs)
        else:
            wavs, rate = self.model.generate_voice_clone(text, language=v.language,
                                                         voice_clone_prompt=self.clone_prompt, **kwargs)
        assert rate == SAMPLE_RATE, rate
        return np.asarray(wavs[0], dtype=np.float32)

    def warmup(self) -> None:
        self.generate(WARMUP_TEXT, max_new_tokens=WARMUP_FRAMES + 1)  # loads kernels; a real reply is not needed

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        if cancel is not None and cancel.is_set():
            return
        audio = self.generate(text)
        if cancel is not None and cancel.is_set():
            return
        yield audio
