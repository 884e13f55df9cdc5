"""Audio helpers: resampling, WAV files, level checks. Mono float32 in [-1, 1] everywhere."""

from __future__ import annotations

import logging
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

log = logging.getLogger(__name__)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of mono float32 audio."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out or samples.size == 0:
        return samples
    g = gcd(int(rate_in), int(rate_out))
    return resample_poly(samples, rate_out // g, rate_in // g).astype(np.float32)


class StreamResampler:
    """Resamples a stream of blocks as if it were one signal (no clicks at block edges).

    Each call resamples the new samples together with ``2 * context`` samples of history and keeps only the
    output whose filter window lies fully inside known input, so the output lags the input by ``context``
    input samples (at most 10 ms at 44.1 kHz). ``flush()`` returns that tail at the end of a stream.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        g = gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        # resample_poly's default filter reaches 10 * max(up, down) taps in the upsampled domain.
        reach = 10 * max(self.up, self.down) // self.up + 1
        self.context = self.down * -(-reach // self.down)
        """Input samples of look-behind and look-ahead; a multiple of ``down`` so output samples stay aligned."""
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros(2 * self.context, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """New mono float32 input -> the output that is now final (may be empty)."""
        if self.up == self.down:
            return np.asarray(samples, dtype=np.float32)
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        n = len(self._pending) // self.down * self.down
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        new, self._pending = self._pending[:n], self._pending[n:]
        window = np.concatenate([self._history, new])  # [2 * context + n]
        out = resample_poly(window, self.up, self.down).astype(np.float32)  # [(2 * context + n) * up / down]
        self._history = window[-2 * self.context:]
        first = self.context * self.up // self.down
        return out[first:first + n * self.up // self.down]

    def flush(self) -> np.ndarray:
        """The output still held back (the last ``context`` input samples and any partial block); then reset."""
        if self.up == self.down:
            return np.zeros(0, dtype=np.float32)
        held = len(self._pending)
        tail = self(np.zeros(self.context + (-held) % self.down, dtype=np.float32))
        keep = -(-(self.context + held) * self.up // self.down)
        self.reset()
        return tail[:keep]


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> [n] (channel mean)."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples float32 [n, channels] or [n], rate) of a WAV/FLAC/OGG file, with a clear error if unreadable."""
    path = check_audio_file(path)
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    return samples, int(rate)


def check_audio_file(path: str | Path) -> Path:
    """The path, if it is an audio file soundfile can read (reads the header only); else the error read_wav gives."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    try:
        sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    return path


def _unreadable(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable audio file ({exc}); give a WAV file")


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono float32 audio as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(rate), subtype="PCM_16")


def rms(samples: np.ndarray) -> float:
    samples = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
