"""The far end: what the speaker played, on one clock with the microphone, for the echo canceller (full duplex).

The speaker sink calls ``played(block, rate, t)`` with every block the sound device has taken (a blocking write
returns once it is in the device's buffer), ``t`` being that moment on ``clock``; the microphone's canceller reads
the same timeline back with ``read(index, n)``, the index of a capture time coming from ``index(t)``. The timeline
holds ``RATE`` (16 kHz) samples: sample ``i`` plays at ``clock`` time ``origin + i / RATE``, and silence where
nothing played.

Placement: a block goes right after the previous one (a device plays its buffer back to back, so jitter in the
hand-over times and a buffer filled ahead of time do not move it), unless the device ran dry: a block handed more
than ``GAP_S`` after the end of the previous one, or later than that end after the device reported an underflow,
starts a new stretch at its hand-over time. A block never plays before the device took it, so the timeline is never
late with respect to the real playback (only early, by at most the device's buffer): the echo in the microphone
always comes after its reference, and the canceller's delay estimator finds the output latency plus the acoustic
delay. Audio at another rate is resampled here, on the way in (the sink writes the device's rate).

Thread-safe: one writer (the sink) and one reader (the microphone), each in its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from s2s.audio import SPEECH_RATE, StreamResampler

RATE = SPEECH_RATE
"""Hz of the timeline: the rate the capture path (and the canceller) runs at."""
GAP_S = 0.05
"""A block handed this much later than the end of the previous one starts a new stretch (the device ran dry)."""
HISTORY_S = 4.0
"""Seconds of played audio kept; older samples read as silence."""


class FarEnd:
    """A ring of the last ``HISTORY_S`` of played audio at ``RATE``, indexed by absolute sample number."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        """The time base of ``played`` and ``index`` (the capture side stamps its frames with it too)."""
        self.origin = clock()
        self.output_latency_s: float | None = None
        """The output device's reported latency (s), set by the sink; None while unknown or not reported."""
        self._lock = threading.Lock()
        self._ring = np.zeros(int(HISTORY_S * RATE), dtype=np.float32)  # [capacity]
        self._end = 0
        """Index just after the last sample written (0: nothing yet)."""
        self._resampler: StreamResampler | None = None
        self._resampler_rate = 0

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Take ``clock`` as the time base (the sink gives the output device's, before anything is played)."""
        with self._lock:
            assert self._end == 0, "the clock of a far end that has played audio cannot change"
            self.clock, self.origin = clock, clock()

    def index(self, t: float) -> int:
        """The timeline index of ``clock`` time ``t``."""
        return round((t - self.origin) * RATE)

    def played(self, samples: np.ndarray, rate: int, t: float | None = None, underflowed: bool = False) -> None:
        """``samples`` (mono float32 at ``rate``) were handed to the device at ``clock`` time ``t`` (default: now);
        ``underflowed``: the device reported that it ran dry before them (they start a new stretch)."""
        t = self.clock() if t is None else t
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)  # [n]
        with self._lock:
            handed = self.index(t)
            late = handed > self._end + (0 if underflowed else round(GAP_S * RATE))
            contiguous = self._end > 0 and not late
            if not contiguous or rate != self._resampler_rate:
                self._restart(handed, rate)
            self._write(self._resampler(samples))

    def read(self, start: int, n: int) -> np.ndarray:
        """``n`` samples from index ``start``: what played then, zeros where nothing did (or it is forgotten)."""
        out = np.zeros(n, dtype=np.float32)  # [n]
        with self._lock:
            lo, hi = max(start, self._end - len(self._ring), 0), min(start + n, self._end)
            if lo < hi:
                positions = np.arange(lo, hi) % len(self._ring)
                out[lo - start:hi - start] = self._ring[positions]
        return out

    def _restart(self, handed: int, rate: int) -> None:
        """A new stretch at index ``handed``: the previous one's resampler tail first, silence in between."""
        if self._resampler is not None:
            self._write(self._resampler.flush())
        self._resampler, self._resampler_rate = StreamResampler(rate, RATE), rate
        self._silence(handed - self._resampler.delay - self._end)  # its lead-in belongs before the first sample

    def _silence(self, n: int) -> None:
        if n <= 0:
            return
        n_written = min(n, len(self._ring))
        positions = np.arange(self._end + n - n_written, self._end + n) % len(self._ring)
        self._ring[positions] = 0.0
        self._end += n

    def _write(self, samples: np.ndarray) -> None:
        kept = samples[-len(self._ring):]
        positions = np.arange(self._end + len(samples) - len(kept), self._end + len(samples)) % len(self._ring)
        self._ring[positions] = kept
        self._end += len(samples)


def stream_clock(stream: object) -> Callable[[], float]:
    """The clock of a sound device stream: its ``time`` (PortAudio's stream time, which both directions of a host
    API share; a simulated device's own clock), or ``time.monotonic`` where the stream has none."""
    try:
        if float(stream.time) > 0:
            return lambda: float(stream.time)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        pass
    return time.monotonic
