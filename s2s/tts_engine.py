"""The one interface every TTS backend implements, and ``make_engine``, which finds the configured one.

Backends are factories ``(TTSConfig) -> TTSEngine`` registered in the ``s2s_edge.tts`` entry-point group (see
``s2s.registry``). Ours: ``auto``, ``piper`` (CPU, embedded voice), ``qwen3`` (our fast engine, ``s2s.qwen3_tts``)
and ``qwen3-reference`` (the official ``qwen-tts`` generate). ``s2s.tts_stage.TTSHandler`` drives the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from s2s import registry

if TYPE_CHECKING:
    from s2s.config import TTSConfig


class TTSEngine(Protocol):
    name: str
    """Backend name as written in the config (e.g. "piper")."""
    sample_rate: int
    """Rate (Hz) of the audio ``synthesize`` yields; the sink resamples it (once) if the speaker needs another."""

    def warmup(self) -> None:
        """Run once at start-up so the first real request is fast (loads, graph capture)."""

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        """Yield float32 mono audio chunks for ``text`` as they are produced; stop early once ``cancel`` is set.

        Raises ``ValueError`` with a message that says what to change for text it cannot speak (e.g. too long
        for the model's context).
        """


def make_engine(cfg: TTSConfig) -> TTSEngine:
    """The engine ``tts.backend`` names, loaded (not yet warmed up).

    Raises UnknownBackend (a ValueError) for a name no package provides; the backend's own errors otherwise
    (FileNotFoundError for a missing model, ValueError for a setting the model does not have).
    """
    factory = registry.load("tts", cfg.backend)
    return factory(cfg)
