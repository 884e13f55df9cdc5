"""The ``auto`` TTS backend: our fast ``qwen3`` engine when a Qwen3-TTS checkpoint is found, else ``piper``."""

from __future__ import annotations

import logging

from s2s import registry
from s2s.config import TTSConfig
from s2s.models import qwen3_checkpoint
from s2s.tts_engine import TTSEngine

log = logging.getLogger(__name__)


def auto_engine(cfg: TTSConfig, voice_required: bool = True) -> TTSEngine:
    """``qwen3`` with the checkpoint ``tts.model`` names (or setup.sh downloaded), else the embedded Piper voice.
    ``voice_required`` goes to ``qwen3`` (see ``s2s.tts_engine.make_engine``)."""
    if qwen3_checkpoint(cfg.model) is None:
        log.info("tts.backend = auto: no Qwen3-TTS checkpoint, speaking with Piper")
        return registry.load("tts", "piper")(cfg)
    return registry.load("tts", "qwen3")(cfg, voice_required=voice_required)
