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


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> [n] (channel mean)."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples float32 [n, channels] or [n], rate) of a WAV/FLAC/OGG file, with a clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable audio file ({exc}); give a WAV file") from None
    return samples, int(rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono float32 audio as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(rate), subtype="PCM_16")


def rms(samples: np.ndarray) -> float:
    samples = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
