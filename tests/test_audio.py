"""s2s.audio: resampling (one-shot and streamed), mono downmix, WAV round trip, level."""

import numpy as np
import pytest

from s2s.audio import StreamResampler, read_wav, resample, rms, to_mono, write_wav


def tone(rate: int, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("rate_in,rate_out", [(48000, 16000), (8000, 16000), (44100, 16000), (16000, 24000)])
def test_resample_keeps_length_and_pitch(rate_in, rate_out):
    out = resample(tone(rate_in, 1.0), rate_in, rate_out)
    assert out.dtype == np.float32
    assert len(out) == rate_out
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * rate_out / len(out) - 440.0) < 2.0


def test_resample_same_rate_is_identity():
    x = tone(16000)
    assert resample(x, 16000, 16000) is x or np.array_equal(resample(x, 16000, 16000), x)


@pytest.mark.parametrize("rate_in,rate_out", [(48000, 16000), (44100, 16000), (16000, 24000), (22050, 48000)])
def test_stream_resampler_matches_one_shot(rate_in, rate_out):
    """Blocks of random sizes give the one-shot result, delayed by ``context`` input samples."""
    x = tone(rate_in, 0.5)
    resampler = StreamResampler(rate_in, rate_out)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 1500))
        parts.append(resampler(x[i:i + n]))
        i += n
    parts.append(resampler.flush())
    streamed = np.concatenate(parts)
    delay = resampler.context * rate_out // rate_in
    reference = resample(x, rate_in, rate_out)
    assert len(streamed) == len(reference) + delay
    np.testing.assert_allclose(streamed[delay:], reference, atol=1e-4)
    assert np.abs(streamed[:delay]).max() < 0.01  # only the filter's ringing ahead of the signal's start


def test_stream_resampler_reset_forgets_history():
    resampler = StreamResampler(48000, 16000)
    resampler(np.ones(4800, dtype=np.float32))
    resampler.reset()
    assert np.abs(resampler(np.zeros(4800, dtype=np.float32))).max() == 0.0


def test_to_mono_averages_channels():
    stereo = np.stack([np.full(10, 0.2), np.full(10, 0.6)], axis=1)
    np.testing.assert_allclose(to_mono(stereo), np.full(10, 0.4), rtol=1e-6)
    assert to_mono(np.zeros(5)).shape == (5,)


def test_wav_round_trip_and_clipping(tmp_path):
    x = tone(24000, 0.2) * 2.5  # beyond [-1, 1]: written clipped
    path = tmp_path / "sub" / "a.wav"
    write_wav(path, x, 24000)
    y, rate = read_wav(path)
    assert rate == 24000 and len(y) == len(x)
    assert np.abs(y).max() <= 1.0
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1e-3)


def test_read_wav_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_wav(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="bad.wav"):
        read_wav(bad)


def test_rms():
    assert rms(np.zeros(0)) == 0.0
    assert rms(np.full(100, 0.5)) == pytest.approx(0.5)
