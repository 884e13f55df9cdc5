"""The ``webrtc`` echo canceller: WebRTC's audio processing module (AEC3, noise suppression, high-pass filter) from
the ``livekit`` wheel (``livekit.rtc.AudioProcessingModule``; manylinux wheels for x86-64 and aarch64, offline).

Frames are 10 ms of 16-bit mono at 16 kHz, as the module wants them: the far-end frame goes through
``process_reverse_stream`` (what the speaker played), then the delay hint (``set_stream_delay_ms``, which the module
wants before every near-end frame when echo cancellation is on), then the near-end frame through ``process_stream``,
which cleans it in place. Two frame buffers are allocated once and reused.
"""

from __future__ import annotations

import numpy as np

from s2s.aec import AECUnavailable
from s2s.config import AECConfig

RATE = 16000
FRAME_SAMPLES = RATE // 100
"""10 ms: the only frame length the module takes."""
INSTALL_HINT = ("install it with `.venv/bin/pip install livekit==1.2.1` (./setup.sh does), or set "
                "[pipeline] duplex = \"half\"")


class WebRTCCanceller:
    """``EchoCanceller`` over ``livekit.rtc.AudioProcessingModule``."""

    name = "webrtc"
    sample_rate = RATE
    frame_samples = FRAME_SAMPLES

    def __init__(self, noise_suppression: bool = True, high_pass_filter: bool = True) -> None:
        try:
            from livekit.rtc import AudioFrame, AudioProcessingModule
        except (ImportError, OSError) as exc:  # OSError: the wheel's liblivekit_ffi.so does not load here
            raise AECUnavailable(f"full duplex needs the WebRTC echo canceller of the livekit package, which does "
                                 f"not load here ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
        self._apm = AudioProcessingModule(echo_cancellation=True, noise_suppression=noise_suppression,
                                          high_pass_filter=high_pass_filter, auto_gain_control=False)
        self._far = AudioFrame(bytearray(2 * FRAME_SAMPLES), RATE, 1, FRAME_SAMPLES)
        self._near = AudioFrame(bytearray(2 * FRAME_SAMPLES), RATE, 1, FRAME_SAMPLES)
        self._far_pcm = np.frombuffer(self._far.data, dtype=np.int16)  # [FRAME_SAMPLES] view of the frame
        self._near_pcm = np.frombuffer(self._near.data, dtype=np.int16)
        self._delay_ms = 0

    @classmethod
    def from_config(cls, cfg: AECConfig) -> WebRTCCanceller:
        return cls(noise_suppression=cfg.noise_suppression, high_pass_filter=cfg.high_pass_filter)

    def set_delay_ms(self, delay_ms: int) -> None:
        self._delay_ms = int(min(max(delay_ms, 0), 500))  # the module's accepted range

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        _to_pcm(far, self._far_pcm)
        self._apm.process_reverse_stream(self._far)
        self._apm.set_stream_delay_ms(self._delay_ms)
        _to_pcm(near, self._near_pcm)
        self._apm.process_stream(self._near)
        return self._near_pcm.astype(np.float32) / 32768.0  # [FRAME_SAMPLES]


def _to_pcm(samples: np.ndarray, out: np.ndarray) -> None:
    """float32 in [-1, 1] -> int16, written into ``out``."""
    np.clip(np.rint(np.asarray(samples, dtype=np.float32) * 32768.0), -32768, 32767, out=out, casting="unsafe")
