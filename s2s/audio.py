"""Audio helpers: resampling, audio files (checked headers, block decoding, whole-or-nothing writes), level checks.
Mono float32 in [-1, 1] everywhere."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

from s2s.atomic_file import commit, discard, staging_path

log = logging.getLogger(__name__)

SPEECH_RATE = 16000
"""Hz: the rate of the speech the VAD and the STT take (sources resample to it)."""
FILE_RATES = (4000, 384000)
"""Hz: the sample rates an input file may declare; outside them its header is damaged (or it is not speech)."""
BLOCK_SAMPLES = 1 << 18
"""Samples (all channels together) decoded at a time from a file: 1 MiB of float32."""


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
        self.delay = 0 if self.up == self.down else self.context * self.up // self.down
        """Output samples the stream starts with before the first input sample (the filter's lead-in): drop them
        to get exactly ``resample`` of the whole signal."""
        max_rate = max(self.up, self.down)
        # resample_poly's own default filter, designed once (for an odd ratio like 44099 Hz it has ~900k taps)
        self._filter = None if self.up == self.down else firwin(
            20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
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
        out = resample_poly(window, self.up, self.down, window=self._filter)  # [(2 * context + n) * up / down]
        out = out.astype(np.float32, copy=False)
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


def read_wav(path: str | Path, max_s: float | None = None) -> tuple[np.ndarray, int]:
    """(samples float32 [n, channels] or [n], rate) of a whole WAV/FLAC/OGG/MP3 file, checked by ``audio_info``
    first; for long files use ``read_blocks``."""
    path = check_audio_file(path, max_s)
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    return samples, int(rate)


def read_blocks(path: str | Path, channels: int) -> Iterator[np.ndarray]:
    """A file's audio as float32 blocks [n, channels] of at most ``BLOCK_SAMPLES`` samples, decoded one block at
    a time (memory stays bounded whatever the length). ValueError naming the file if decoding fails part-way."""
    path = Path(path)
    frames = max(1, BLOCK_SAMPLES // max(1, channels))
    try:
        yield from sf.blocks(str(path), blocksize=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None


def audio_info(path: str | Path, max_s: float | None = None) -> sf._SoundFileInfo:
    """The header of an audio file soundfile can read (nothing is decoded), refused with a ValueError naming the
    file and the value when its rate is outside ``FILE_RATES`` (a damaged header: 1 Hz would mean hours of audio)
    or it lasts longer than ``max_s`` seconds; FileNotFoundError if it does not exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    lo, hi = FILE_RATES
    if not lo <= info.samplerate <= hi:
        raise ValueError(f"{path} says its sample rate is {info.samplerate} Hz, outside {lo}-{hi} Hz: the header is "
                         f"damaged or this is not speech audio; re-encode it (e.g. sox {path} -r 16000 fixed.wav)")
    if max_s is not None and info.frames / info.samplerate > max_s:
        raise ValueError(f"{path} lasts {info.frames / info.samplerate:.0f} s, longer than audio_in.max_file_s = "
                         f"{max_s:g} s; cut it into shorter files or raise the limit (--set audio_in.max_file_s=...)")
    return info


def check_audio_file(path: str | Path, max_s: float | None = None) -> Path:
    """The path, if ``audio_info`` accepts its header; else the error it gives."""
    audio_info(path, max_s)
    return Path(path)


def _unreadable(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable audio file ({exc}); give a WAV file")


def output_format(path: str | Path) -> tuple[str, str]:
    """(format, subtype) soundfile writes ``path`` in, by its extension: 16-bit PCM where the format has it (WAV,
    FLAC, AIFF...), else the format's own default (OGG: Vorbis, MP3). ValueError with the fix otherwise."""
    path = Path(path)
    if not path.suffix:
        raise ValueError(f"{path} has no file extension, so the audio format is unknown; name it {path}.wav")
    fmt = path.suffix[1:].upper()
    if fmt not in sf.available_formats() or fmt == "RAW":  # RAW has no header: nothing could read it back
        raise ValueError(f"{path}: {path.suffix} is not an audio format that can be written; use .wav (or .flac)")
    return fmt, "PCM_16" if sf.check_format(fmt, "PCM_16") else sf.default_subtype(fmt)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono float32 audio as 16-bit PCM (WAV, or the format of the extension), whole or not at all: to a
    staging file renamed over ``path`` when complete (s2s.atomic_file)."""
    path = Path(path)
    fmt, subtype = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(path)
    try:
        sf.write(str(staging), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(rate),
                 subtype=subtype, format=fmt)
        commit(staging, path)
    finally:
        discard(staging)  # gone already after the commit; a failed write leaves no staging file


def rms(samples: np.ndarray) -> float:
    samples = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
