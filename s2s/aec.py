"""Acoustic echo cancellation in the capture path (full duplex): the canceller contract and the capture-side driver.

A canceller backend is a factory ``(AECConfig) -> EchoCanceller`` registered in the ``s2s_edge.aec`` entry-point
group (``s2s.registry``); ours are ``webrtc`` (WebRTC AEC3 from the ``livekit`` wheel) and ``none`` (no canceller:
a headset, or a speakerphone that cancels its own echo). ``[aec] backend`` picks one.

``EchoCancellation`` drives one on the microphone's thread: 16 kHz capture blocks of any size go in with the
``FarEnd.clock`` time of their first sample; it cuts them into the canceller's 10 ms frames, pairs each frame with
the far-end audio that played at the same moment (``s2s.far_end``) and returns the echo-cancelled audio together
with that reference (the VAD's echo guard reads it). The reference is read as one continuous stream: capture-time
jitter does not make it skip or repeat; a slow clock drift between the devices is followed one sample at a time, and
only a jump (lost capture audio) re-anchors it. The canceller is told the expected delay between a reference frame
and its echo, ``(t_render - t_analyze) + (t_process - t_capture)``: here the output device's reported latency (the
reference is stamped when the device takes it, it plays up to that much later) plus the input device's (a capture
block is stamped when read, it was recorded that much earlier).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from s2s import registry
from s2s.far_end import RATE, FarEnd

if TYPE_CHECKING:
    from s2s.config import AECConfig

log = logging.getLogger(__name__)

DRIFT_SMOOTHING = 0.005
"""Per-frame weight of the newest reference alignment error (a time constant of 2 s at 10 ms frames)."""
DRIFT_SLIP = 16
"""Samples (1 ms) of smoothed alignment error after which the reference pointer moves by one sample."""
REANCHOR_S = 0.1
"""An alignment error this large (lost capture audio, a stalled thread) moves the reference pointer at once."""


class AECUnavailable(RuntimeError):
    """The configured canceller cannot be loaded; the message says how to install it or to run half duplex."""


class EchoCanceller(Protocol):
    name: str
    """Backend name as written in the config (e.g. "webrtc")."""
    sample_rate: int
    """Hz of the frames it takes; the capture path runs at 16000."""
    frame_samples: int
    """Samples per frame (10 ms)."""

    def set_delay_ms(self, delay_ms: int) -> None:
        """The expected delay between a far-end frame and its echo in the near end (a hint; it may find it itself)."""

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """One frame: ``far`` is what the speaker played, ``near`` what the microphone heard meanwhile (float32
        [frame_samples] each, in [-1, 1]); returns ``near`` with the echo of the far end removed (same shape)."""


def make_canceller(cfg: AECConfig) -> EchoCanceller:
    """The canceller ``aec.backend`` names, ready to use. UnknownBackend (a ValueError) for a name no package
    provides; AECUnavailable when its library cannot be loaded."""
    factory = registry.load("aec", cfg.backend)
    try:
        canceller = factory(cfg)
    except (ImportError, OSError) as exc:
        raise AECUnavailable(f"the {cfg.backend!r} echo canceller cannot be loaded ({type(exc).__name__}: {exc}); "
                             f"install what it needs, or set [pipeline] duplex = \"half\"") from exc
    if canceller.sample_rate != RATE:
        raise AECUnavailable(f"the {cfg.backend!r} echo canceller runs at {canceller.sample_rate} Hz; the capture "
                             f"path needs one that takes {RATE} Hz frames")
    return canceller


def check_canceller(cfg: AECConfig) -> tuple[bool, str]:
    """For ``s2s check``: whether the configured canceller loads and cancels a frame, and a line saying so (or
    why not)."""
    try:
        canceller = make_canceller(cfg)
        frame = np.zeros(canceller.frame_samples, dtype=np.float32)
        canceller.process(frame, frame)
    except (ValueError, AECUnavailable, RuntimeError) as exc:
        return False, f"{cfg.backend}: does not load: {exc}"
    return True, f"{cfg.backend}: loads ({canceller.frame_samples}-sample frames at {canceller.sample_rate} Hz)"


class EchoCancellation:
    """``(samples, t_first) -> (cleaned, reference)`` for 16 kHz capture blocks; 10 ms of audio at most is held
    back until its frame is complete. No thread, no I/O; ``reset()`` forgets the held audio and the alignment."""

    def __init__(self, canceller: EchoCanceller, far_end: FarEnd, input_latency_s: float = 0.0) -> None:
        self.canceller = canceller
        self.far_end = far_end
        self.input_latency_s = max(0.0, float(input_latency_s or 0.0))
        self.delay_ms: int | None = None
        """The delay last given to the canceller."""
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_t = 0.0
        """Clock time of the first held-back sample."""
        self._ref: int | None = None
        """Far-end index of the next reference sample."""
        self._drift = 0.0
        """Smoothed (wanted - actual) reference index, in samples."""

    def __call__(self, samples: np.ndarray, t_first: float) -> tuple[np.ndarray, np.ndarray]:
        n = self.canceller.frame_samples
        self._pending_t = t_first - self._pending.size / RATE
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])  # [m]
        frames = audio.size // n
        cleaned = np.empty(frames * n, dtype=np.float32)  # [frames * n]
        reference = np.empty(frames * n, dtype=np.float32)
        self._update_delay()
        for k in range(frames):
            far = self._reference(self._pending_t + k * n / RATE, n)  # [n]
            cleaned[k * n:(k + 1) * n] = self.canceller.process(audio[k * n:(k + 1) * n], far)
            reference[k * n:(k + 1) * n] = far
        self._pending = audio[frames * n:].copy()
        return cleaned, reference

    def _reference(self, t: float, n: int) -> np.ndarray:
        """The next ``n`` far-end samples, kept continuous while they stay aligned with capture time ``t``."""
        wanted = self.far_end.index(t)
        if self._ref is None or abs(wanted - self._ref) > REANCHOR_S * RATE:
            if self._ref is not None:
                log.info("echo canceller: capture and playback clocks were %.0f ms apart; re-aligned",
                         (wanted - self._ref) * 1000 / RATE)
            self._ref, self._drift = wanted, 0.0
        self._drift += DRIFT_SMOOTHING * ((wanted - self._ref) - self._drift)
        if abs(self._drift) > DRIFT_SLIP:  # a clock drift (~100 ppm): follow it by one sample
            step = 1 if self._drift > 0 else -1
            self._ref += step
            self._drift -= step
        far = self.far_end.read(self._ref, n)
        self._ref += n
        return far

    def _update_delay(self) -> None:
        out = self.far_end.output_latency_s
        delay_ms = round(((out or 0.0) + self.input_latency_s) * 1000)
        if delay_ms != self.delay_ms:
            self.delay_ms = delay_ms
            self.canceller.set_delay_ms(delay_ms)
            log.info("echo canceller: expected echo delay %d ms (output latency %s, input latency %.0f ms)",
                     delay_ms, "not reported" if out is None else f"{out * 1000:.0f} ms", self.input_latency_s * 1000)
