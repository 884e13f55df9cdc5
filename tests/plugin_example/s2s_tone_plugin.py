"""A TTS backend for s2s-edge that speaks every text as a 440 Hz tone at 16 kHz (0.1 s per word).

The whole contract: a factory registered in the ``s2s_edge.tts`` entry-point group, called with the ``[tts]`` config
section, returning an object with ``name``, ``sample_rate``, ``warmup()`` and ``synthesize(text, cancel)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

TONE_HZ = 440.0
BLOCK_S = 0.1
"""One block of tone per word, yielded as soon as it is made."""


class ToneEngine:
    name = "tone"
    sample_rate = 16000

    def __init__(self, cfg: object) -> None:
        self.cfg = cfg  # the [tts] section; a real backend reads its model path and voice here
        self._t = np.arange(int(self.sample_rate * BLOCK_S)) / self.sample_rate  # [block]

    def warmup(self) -> None:
        """Nothing to load."""

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        for _ in text.split():
            if cancel is not None and cancel.is_set():
                return
            yield (0.5 * np.sin(2 * np.pi * TONE_HZ * self._t)).astype(np.float32)  # [block]
