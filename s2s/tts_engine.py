"""The one interface every TTS backend implements (``handlers/tts.py`` drives it).

Backends: ``piper`` (CPU, embedded voice), ``qwen3-reference`` (the reference ``qwen-tts`` generate) and
``qwen3`` (our fast engine, ``s2s.qwen3_tts``). ``make_engine(TTSConfig)`` in ``handlers/tts.py`` picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

import numpy as np


class TTSEngine(Protocol):
    name: str
    """Backend name as written in the config (e.g. "piper")."""
    sample_rate: int
    """Rate (Hz) of the audio ``synthesize`` yields."""

    def warmup(self) -> None:
        """Run once at start-up so the first real request is fast (loads, graph capture)."""

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        """Yield float32 mono audio chunks for ``text`` as they are produced; stop early once ``cancel`` is set.

        Raises ``ValueError`` with a message that says what to change for text it cannot speak (e.g. too long
        for the model's context).
        """
