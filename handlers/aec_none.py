"""The ``none`` echo canceller: passes the microphone through unchanged.

For full duplex where nothing must be cancelled here: a headset (the microphone does not hear the speaker), or a
USB speakerphone that cancels its own echo in hardware. The barge-in echo guard still runs on what it passes.
"""

from __future__ import annotations

import numpy as np

from s2s.config import AECConfig


class PassThrough:
    """``EchoCanceller`` that returns the near end as it is."""

    name = "none"
    sample_rate = 16000
    frame_samples = 160

    @classmethod
    def from_config(cls, cfg: AECConfig) -> PassThrough:
        return cls()

    def set_delay_ms(self, delay_ms: int) -> None:
        pass

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return np.asarray(near, dtype=np.float32)
