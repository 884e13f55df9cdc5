"""``PipelineBlocks``: an engine's float32 audio stream as speech-to-speech's output blocks.

speech-to-speech 1.1.0 moves assistant audio as 16 kHz mono int16 blocks of a fixed size (512 samples, 32 ms),
whatever its TTS speaks; our engines speak at their own rate (Qwen3-TTS: 24 kHz). The stream is resampled as one
signal (``s2s.audio.StreamResampler``: no clicks at chunk edges), converted like every 16-bit output of ours
(``to_pcm16``) and cut into blocks; ``flush()`` pads the last block with silence, as their TTS stages do.
"""

from __future__ import annotations

import numpy as np

from s2s.audio import SPEECH_RATE, StreamResampler
from s2s.server.audio_codecs import to_pcm16

PIPELINE_RATE = SPEECH_RATE
"""Hz of speech-to-speech's pipeline audio, in and out (its PIPELINE_SAMPLE_RATE); the same 16 kHz as ours."""


def check_blocksize(blocksize: int) -> None:
    if blocksize < 1:
        raise ValueError(f"s2s_edge_blocksize = {blocksize} must be >= 1 sample (speech-to-speech sends 512)")


class PipelineBlocks:
    """``blocks(chunk)`` -> the int16 [blocksize] blocks completed by ``chunk`` (float32 mono at ``rate_in``);
    ``flush()`` -> the rest at the end of an utterance, then ready for the next."""

    def __init__(self, rate_in: int, blocksize: int) -> None:
        check_blocksize(blocksize)
        self.blocksize = blocksize
        self.resampler = StreamResampler(rate_in, PIPELINE_RATE)
        self.reset()

    def reset(self) -> None:
        self.resampler.reset()
        self._lead_in = self.resampler.delay
        """Resampler output still to drop: its filter's lead-in before the first input sample."""
        self._pending = np.zeros(0, dtype=np.int16)

    def __call__(self, samples: np.ndarray) -> list[np.ndarray]:
        return self._cut(self.resampler(samples))

    def flush(self) -> list[np.ndarray]:
        blocks = self._cut(self.resampler.flush())
        if self._pending.size:
            blocks.append(np.pad(self._pending, (0, self.blocksize - self._pending.size)))
        self.reset()
        return blocks

    def _cut(self, resampled: np.ndarray) -> list[np.ndarray]:
        dropped = min(self._lead_in, resampled.size)
        self._lead_in -= dropped
        pcm = np.frombuffer(to_pcm16(resampled[dropped:]), dtype="<i2").astype(np.int16)
        self._pending = np.concatenate([self._pending, pcm])
        whole = self._pending.size // self.blocksize * self.blocksize
        blocks = [self._pending[i : i + self.blocksize] for i in range(0, whole, self.blocksize)]
        self._pending = self._pending[whole:]
        return blocks
