"""Kaldi speech features in pure torch, a stand-in for ``torchaudio.compliance.kaldi`` (same API, same numerics).

Used only where the real torchaudio cannot be imported (see ``patches.torchaudio_shim``). Written from Kaldi's
feature-extraction semantics (feature-window, mel-computations) and torchaudio's documented API; checked bit for
bit against real torchaudio output (``tests/data/kaldi_golden.npz``, made by ``tests/data/make_kaldi_golden.py``).

Pipeline for one waveform of N samples (all shapes for the selected channel):
  frames   (m, L)       L = frame_length in samples; m frames every ``frame_shift`` samples
  -> dither, DC removal, raw log-energy, pre-emphasis, window, zero-pad to P (power of two)
  spectrum (m, P/2+1)   |rfft|, squared when ``use_power``
  fbank    (m, B)       spectrum @ triangular mel banks (optionally VTLN-warped), log when ``use_log_fbank``
  mfcc     (m, C)       log fbank @ DCT-II (orthonormal, Kaldi's C0 scaling), liftered
Options torchaudio refuses (with assertions) raise ``ValueError`` here. One deliberate difference: ``mfcc`` of a
waveform shorter than ``min_duration`` returns an empty tensor, where torchaudio fails in a matrix product.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "fbank",
    "get_mel_banks",
    "inverse_mel_scale",
    "inverse_mel_scale_scalar",
    "mel_scale",
    "mel_scale_scalar",
    "mfcc",
    "spectrogram",
    "vtln_warp_freq",
    "vtln_warp_mel_freq",
]

HAMMING = "hamming"
HANNING = "hanning"
POVEY = "povey"
RECTANGULAR = "rectangular"
BLACKMAN = "blackman"
WINDOWS = [HAMMING, HANNING, POVEY, RECTANGULAR, BLACKMAN]

EPSILON = torch.finfo(torch.float32).eps
"""Floor before every log (float32 epsilon, whatever the waveform dtype)."""
MILLISECONDS_TO_SECONDS = 0.001


# ---------------------------------------------------------------------------------------------------- mel scale


def mel_scale_scalar(freq: float) -> float:
    """Hz -> mel (Kaldi's natural-log form: 1127 ln(1 + f/700))."""
    return 1127.0 * math.log(1.0 + freq / 700.0)


def mel_scale(freq: torch.Tensor) -> torch.Tensor:
    """Hz -> mel, elementwise."""
    return 1127.0 * (1.0 + freq / 700.0).log()


def inverse_mel_scale_scalar(mel_freq: float) -> float:
    """mel -> Hz."""
    return 700.0 * (math.exp(mel_freq / 1127.0) - 1.0)


def inverse_mel_scale(mel_freq: torch.Tensor) -> torch.Tensor:
    """mel -> Hz, elementwise."""
    return 700.0 * ((mel_freq / 1127.0).exp() - 1.0)


def vtln_warp_freq(vtln_low_cutoff: float, vtln_high_cutoff: float, low_freq: float, high_freq: float,
                   vtln_warp_factor: float, freq: torch.Tensor) -> torch.Tensor:
    """Kaldi's piecewise-linear VTLN warp of frequencies in Hz.

    Inside [low_freq, high_freq] the warp is three lines through (low_freq, low_freq), (l, l/alpha),
    (h, h/alpha), (high_freq, high_freq) with l = vtln_low * max(1, alpha), h = vtln_high * min(1, alpha);
    frequencies outside that range are returned unchanged.
    """
    if not vtln_low_cutoff > low_freq:
        raise ValueError(f"vtln_low ({vtln_low_cutoff}) must be above low_freq ({low_freq})")
    if not vtln_high_cutoff < high_freq:
        raise ValueError(f"vtln_high ({vtln_high_cutoff}) must be below high_freq ({high_freq})")
    low_knee = vtln_low_cutoff * max(1.0, vtln_warp_factor)
    high_knee = vtln_high_cutoff * min(1.0, vtln_warp_factor)
    scale = 1.0 / vtln_warp_factor
    if not (low_knee > low_freq and high_knee < high_freq):
        raise ValueError(f"vtln_warp {vtln_warp_factor} moves the VTLN knees outside ({low_freq}, {high_freq}) Hz")
    slope_left = (scale * low_knee - low_freq) / (low_knee - low_freq)
    slope_right = (high_freq - scale * high_knee) / (high_freq - high_knee)

    warped = torch.where(freq < high_knee, scale * freq, high_freq + slope_right * (freq - high_freq))
    warped = torch.where(freq < low_knee, low_freq + slope_left * (freq - low_freq), warped)
    outside = (freq < low_freq) | (freq > high_freq)
    return torch.where(outside, freq, warped)


def vtln_warp_mel_freq(vtln_low_cutoff: float, vtln_high_cutoff: float, low_freq: float, high_freq: float,
                       vtln_warp_factor: float, mel_freq: torch.Tensor) -> torch.Tensor:
    """VTLN warp applied to mel frequencies (mel -> Hz -> warp -> mel)."""
    hz = inverse_mel_scale(mel_freq)
    return mel_scale(vtln_warp_freq(vtln_low_cutoff, vtln_high_cutoff, low_freq, high_freq, vtln_warp_factor, hz))


def get_mel_banks(num_bins: int, window_length_padded: int, sample_freq: float, low_freq: float, high_freq: float,
                  vtln_low: float, vtln_high: float, vtln_warp_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangular mel filters (num_bins, P/2) over FFT bins 0..P/2-1 and their centre frequencies (num_bins, 1) in Hz.

    Bins are equally spaced in mel between low_freq and high_freq (high_freq <= 0 counts down from Nyquist);
    with VTLN the triangle corners are warped, so each side is kept only where it is on its own side of the peak.
    """
    if num_bins <= 3:
        raise ValueError(f"num_mel_bins must be more than 3, got {num_bins}")
    if window_length_padded % 2 != 0:
        raise ValueError(f"the padded window length must be even, got {window_length_padded}")
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); "
                         f"got low_freq={low_freq}, high_freq={high_freq}")
    if vtln_high < 0.0:
        vtln_high += nyquist
    if vtln_warp_factor != 1.0 and not (low_freq < vtln_low < high_freq and 0.0 < vtln_high < high_freq
                                        and vtln_low < vtln_high):
        raise ValueError(f"need low_freq < vtln_low < vtln_high < high_freq; got low_freq={low_freq}, "
                         f"vtln_low={vtln_low}, vtln_high={vtln_high}, high_freq={high_freq}")

    mel_low = mel_scale_scalar(low_freq)
    mel_delta = (mel_scale_scalar(high_freq) - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)  # (B, 1)
    left = mel_low + index * mel_delta  # (B, 1)
    center = mel_low + (index + 1.0) * mel_delta  # (B, 1)
    right = mel_low + (index + 2.0) * mel_delta  # (B, 1)
    if vtln_warp_factor != 1.0:
        left, center, right = (vtln_warp_mel_freq(vtln_low, vtln_high, low_freq, high_freq, vtln_warp_factor, m)
                               for m in (left, center, right))
    center_freqs = inverse_mel_scale(center)  # (B, 1)

    fft_bin_width = sample_freq / window_length_padded
    mel = mel_scale(fft_bin_width * torch.arange(window_length_padded / 2)).unsqueeze(0)  # (1, P/2)
    rising = (mel - left) / (center - left)  # (B, P/2)
    falling = (right - mel) / (right - center)  # (B, P/2)
    if vtln_warp_factor == 1.0:
        banks = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (B, P/2)
    else:
        # Warping can reorder the corners, so take each slope only strictly inside its own half.
        on_rising = (mel > left) & (mel <= center)
        on_falling = (mel > center) & (mel < right)
        zero = torch.zeros_like(rising)
        banks = torch.where(on_rising, rising, torch.where(on_falling, falling, zero))  # (B, P/2)
    return banks, center_freqs


# ---------------------------------------------------------------------------------------------------- framing


def _frame_sizes(sample_frequency: float, frame_length: float, frame_shift: float,
                 round_to_power_of_two: bool) -> tuple[int, int, int]:
    """(shift, length, padded length) in samples; the products are truncated the way torchaudio truncates them."""
    shift = int(sample_frequency * frame_shift * MILLISECONDS_TO_SECONDS)
    length = int(sample_frequency * frame_length * MILLISECONDS_TO_SECONDS)
    padded = 1 << (length - 1).bit_length() if round_to_power_of_two and length > 0 else length
    return shift, length, padded


def _select_channel(waveform: torch.Tensor, channel: int, length: int, shift: int, padded: int,
                    preemphasis_coefficient: float, sample_frequency: float) -> torch.Tensor:
    """The 1-D signal of ``channel`` (-1 means the first), after checking the framing options."""
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be 2-D (channels, samples), got shape {tuple(waveform.shape)}")
    channel = max(channel, 0)
    if channel >= waveform.size(0):
        raise ValueError(f"channel {channel} does not exist in a waveform with {waveform.size(0)} channel(s)")
    signal = waveform[channel]  # (N,)
    if not 2 <= length <= signal.numel():
        raise ValueError(f"the frame length is {length} samples; it must be between 2 and the waveform length "
                         f"({signal.numel()} samples): pass more audio or a shorter frame_length")
    if shift <= 0:
        raise ValueError(f"frame_shift must be at least one sample, got {shift} samples")
    if padded % 2 != 0:
        raise ValueError(f"the FFT size {padded} must be even: use round_to_power_of_two or change frame_length")
    if not 0.0 <= preemphasis_coefficient <= 1.0:
        raise ValueError(f"preemphasis_coefficient must be in [0, 1], got {preemphasis_coefficient}")
    if sample_frequency <= 0:
        raise ValueError(f"sample_frequency must be positive, got {sample_frequency}")
    return signal


def _frames(signal: torch.Tensor, length: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """Overlapping frames (m, L) of a 1-D signal (N,).

    snip_edges: frames lie fully inside the signal, m = 1 + (N - L) // shift.
    Otherwise m = (N + shift/2) // shift frames are centred on i * shift + shift/2, and samples before the start or
    past the end are mirrored with the edge sample repeated (index -1 -> 0, N -> N-1), as Kaldi does.
    """
    n = signal.numel()
    if snip_edges:
        return signal.unfold(0, length, shift)  # (m, L)
    count = (n + shift // 2) // shift
    first = shift // 2 - length // 2  # start of frame 0 relative to sample 0; negative means mirrored samples
    starts = first + shift * torch.arange(count, device=signal.device).unsqueeze(1)  # (m, 1)
    index = starts + torch.arange(length, device=signal.device)  # (m, L)
    index = torch.where(index < 0, -index - 1, index)
    index = torch.where(index >= n, 2 * n - 1 - index, index)
    if int(index.min()) < 0:
        raise ValueError(f"frame_length ({length} samples) reaches past a mirrored copy of the {n}-sample waveform")
    return signal[index]  # (m, L)


def _window(window_type: str, length: int, blackman_coeff: float, device: torch.device,
            dtype: torch.dtype) -> torch.Tensor:
    """The analysis window (L,) (symmetric; 'povey' is a Hann window raised to 0.85)."""
    if window_type == HANNING:
        return torch.hann_window(length, periodic=False, device=device, dtype=dtype)
    if window_type == HAMMING:
        return torch.hamming_window(length, periodic=False, alpha=0.54, beta=0.46, device=device, dtype=dtype)
    if window_type == POVEY:
        return torch.hann_window(length, periodic=False, device=device, dtype=dtype).pow(0.85)
    if window_type == RECTANGULAR:
        return torch.ones(length, device=device, dtype=dtype)
    if window_type == BLACKMAN:
        step = 2 * math.pi / (length - 1)
        n = torch.arange(length, device=device, dtype=dtype)
        return (blackman_coeff - 0.5 * torch.cos(step * n) + (0.5 - blackman_coeff) * torch.cos(2 * step * n)).to(
            device=device, dtype=dtype)
    raise ValueError(f"unknown window_type {window_type!r}; use one of {WINDOWS}")


def _log_energy(frames: torch.Tensor, energy_floor: float) -> torch.Tensor:
    """log of each frame's energy (m,), floored at epsilon and at log(energy_floor) when energy_floor > 0."""
    epsilon = torch.tensor(EPSILON, device=frames.device, dtype=frames.dtype)
    energy = torch.max(frames.pow(2).sum(1), epsilon).log()  # (m,)
    if energy_floor == 0.0:
        return energy
    return torch.max(energy, torch.tensor(math.log(energy_floor), device=frames.device, dtype=frames.dtype))


def _windowed_frames(signal: torch.Tensor, length: int, shift: int, padded: int, snip_edges: bool, *,
                     blackman_coeff: float, dither: float, energy_floor: float, preemphasis_coefficient: float,
                     raw_energy: bool, remove_dc_offset: bool, window_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ready for the FFT (m, P) and their log-energies (m,) (before pre-emphasis and window if raw_energy)."""
    frames = _frames(signal, length, shift, snip_edges)  # (m, L)
    if dither != 0.0:
        # One standard-normal draw per frame sample from the global generator, as torchaudio draws it.
        frames = frames + dither * torch.randn(frames.shape, device=frames.device, dtype=frames.dtype)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)  # (m, L)
    if raw_energy:
        log_energy = _log_energy(frames, energy_floor)  # (m,)
    if preemphasis_coefficient != 0.0:
        previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)  # (m, L): x[t-1], with x[-1] := x[0]
        frames = frames - preemphasis_coefficient * previous
    frames = frames * _window(window_type, length, blackman_coeff, frames.device, frames.dtype).unsqueeze(0)
    if padded != length:
        frames = torch.nn.functional.pad(frames, (0, padded - length))  # (m, P)
    if not raw_energy:
        log_energy = _log_energy(frames, energy_floor)  # (m,)
    return frames, log_energy


def _minus_column_mean(features: torch.Tensor, subtract_mean: bool) -> torch.Tensor:
    return features - features.mean(dim=0, keepdim=True) if subtract_mean else features


# ---------------------------------------------------------------------------------------------------- features


def spectrogram(waveform: torch.Tensor, blackman_coeff: float = 0.42, channel: int = -1, dither: float = 0.0,
                energy_floor: float = 1.0, frame_length: float = 25.0, frame_shift: float = 10.0,
                min_duration: float = 0.0, preemphasis_coefficient: float = 0.97, raw_energy: bool = True,
                remove_dc_offset: bool = True, round_to_power_of_two: bool = True, sample_frequency: float = 16000.0,
                snip_edges: bool = True, subtract_mean: bool = False, window_type: str = POVEY) -> torch.Tensor:
    """Kaldi's compute-spectrogram-feats: log power spectrum (m, P/2+1), column 0 replaced by the log energy.

    waveform: (channels, samples); times in milliseconds. Returns an empty tensor when the waveform is shorter than
    ``min_duration`` seconds.
    """
    shift, length, padded = _frame_sizes(sample_frequency, frame_length, frame_shift, round_to_power_of_two)
    signal = _select_channel(waveform, channel, length, shift, padded, preemphasis_coefficient, sample_frequency)
    if signal.numel() < min_duration * sample_frequency:
        return torch.empty(0)
    frames, log_energy = _windowed_frames(
        signal, length, shift, padded, snip_edges, blackman_coeff=blackman_coeff, dither=dither,
        energy_floor=energy_floor, preemphasis_coefficient=preemphasis_coefficient, raw_energy=raw_energy,
        remove_dc_offset=remove_dc_offset, window_type=window_type)
    epsilon = torch.tensor(EPSILON, device=frames.device, dtype=frames.dtype)
    power = torch.max(torch.fft.rfft(frames).abs().pow(2.0), epsilon).log()  # (m, P/2+1)
    power[:, 0] = log_energy
    return _minus_column_mean(power, subtract_mean)


def fbank(waveform: torch.Tensor, blackman_coeff: float = 0.42, channel: int = -1, dither: float = 0.0,
          energy_floor: float = 1.0, frame_length: float = 25.0, frame_shift: float = 10.0, high_freq: float = 0.0,
          htk_compat: bool = False, low_freq: float = 20.0, min_duration: float = 0.0, num_mel_bins: int = 23,
          preemphasis_coefficient: float = 0.97, raw_energy: bool = True, remove_dc_offset: bool = True,
          round_to_power_of_two: bool = True, sample_frequency: float = 16000.0, snip_edges: bool = True,
          subtract_mean: bool = False, use_energy: bool = False, use_log_fbank: bool = True, use_power: bool = True,
          vtln_high: float = -500.0, vtln_low: float = 100.0, vtln_warp: float = 1.0,
          window_type: str = POVEY) -> torch.Tensor:
    """Kaldi's compute-fbank-feats: mel filterbank energies (m, num_mel_bins), plus a log-energy column when
    ``use_energy`` (first, or last with ``htk_compat``).

    waveform: (channels, samples); times in milliseconds, frequencies in Hz (high_freq <= 0 and vtln_high < 0 count
    down from Nyquist). Returns an empty tensor when the waveform is shorter than ``min_duration`` seconds.
    """
    shift, length, padded = _frame_sizes(sample_frequency, frame_length, frame_shift, round_to_power_of_two)
    signal = _select_channel(waveform, channel, length, shift, padded, preemphasis_coefficient, sample_frequency)
    if signal.numel() < min_duration * sample_frequency:
        return torch.empty(0, device=waveform.device, dtype=waveform.dtype)
    frames, log_energy = _windowed_frames(
        signal, length, shift, padded, snip_edges, blackman_coeff=blackman_coeff, dither=dither,
        energy_floor=energy_floor, preemphasis_coefficient=preemphasis_coefficient, raw_energy=raw_energy,
        remove_dc_offset=remove_dc_offset, window_type=window_type)
    spectrum = torch.fft.rfft(frames).abs()  # (m, P/2+1)
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks, _ = get_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq, vtln_low, vtln_high,
                             vtln_warp)
    banks = torch.nn.functional.pad(banks.to(device=frames.device, dtype=frames.dtype), (0, 1))  # (B, P/2+1)
    mel = torch.mm(spectrum, banks.T)  # (m, B)
    if use_log_fbank:
        mel = torch.max(mel, torch.tensor(EPSILON, device=mel.device, dtype=mel.dtype)).log()
    if use_energy:
        energy = log_energy.unsqueeze(1)  # (m, 1)
        mel = torch.cat((mel, energy) if htk_compat else (energy, mel), dim=1)  # (m, B+1)
    return _minus_column_mean(mel, subtract_mean)


def _dct_matrix(num_ceps: int, num_mel_bins: int) -> torch.Tensor:
    """Kaldi's orthonormal DCT-II as a right-multiplied matrix (B, C): column k = sqrt(2/B) cos(pi k (n + 1/2) / B),
    column 0 = sqrt(1/B)."""
    n = torch.arange(float(num_mel_bins))  # (B,)
    k = torch.arange(float(num_ceps)).unsqueeze(1)  # (C, 1)
    dct = torch.cos(math.pi / float(num_mel_bins) * (n + 0.5) * k) * math.sqrt(2.0 / float(num_mel_bins))  # (C, B)
    dct[0] = math.sqrt(1 / float(num_mel_bins))
    return dct.t()  # (B, C)


def _lifter(num_ceps: int, cepstral_lifter: float) -> torch.Tensor:
    """Cepstral liftering weights (C,): 1 + Q/2 sin(pi i / Q); C0 keeps weight 1."""
    i = torch.arange(num_ceps)
    return 1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * i / cepstral_lifter)


def mfcc(waveform: torch.Tensor, blackman_coeff: float = 0.42, cepstral_lifter: float = 22.0, channel: int = -1,
         dither: float = 0.0, energy_floor: float = 1.0, frame_length: float = 25.0, frame_shift: float = 10.0,
         high_freq: float = 0.0, htk_compat: bool = False, low_freq: float = 20.0, num_ceps: int = 13,
         min_duration: float = 0.0, num_mel_bins: int = 23, preemphasis_coefficient: float = 0.97,
         raw_energy: bool = True, remove_dc_offset: bool = True, round_to_power_of_two: bool = True,
         sample_frequency: float = 16000.0, snip_edges: bool = True, subtract_mean: bool = False,
         use_energy: bool = False, vtln_high: float = -500.0, vtln_low: float = 100.0, vtln_warp: float = 1.0,
         window_type: str = POVEY) -> torch.Tensor:
    """Kaldi's compute-mfcc-feats: (m, num_ceps) cepstra of the log power mel filterbank.

    With ``use_energy`` the log energy replaces C0; with ``htk_compat`` C0 (scaled by sqrt(2) unless it is the
    energy) moves to the last column, as HTK orders it.
    """
    if num_ceps > num_mel_bins:
        raise ValueError(f"num_ceps ({num_ceps}) cannot exceed num_mel_bins ({num_mel_bins})")
    features = fbank(
        waveform, blackman_coeff=blackman_coeff, channel=channel, dither=dither, energy_floor=energy_floor,
        frame_length=frame_length, frame_shift=frame_shift, high_freq=high_freq, htk_compat=htk_compat,
        low_freq=low_freq, min_duration=min_duration, num_mel_bins=num_mel_bins,
        preemphasis_coefficient=preemphasis_coefficient, raw_energy=raw_energy, remove_dc_offset=remove_dc_offset,
        round_to_power_of_two=round_to_power_of_two, sample_frequency=sample_frequency, snip_edges=snip_edges,
        subtract_mean=False, use_energy=use_energy, use_log_fbank=True, use_power=True, vtln_high=vtln_high,
        vtln_low=vtln_low, vtln_warp=vtln_warp, window_type=window_type)  # (m, B [+1])
    if features.numel() == 0:
        return features
    if use_energy:
        energy_column = num_mel_bins if htk_compat else 0
        log_energy = features[:, energy_column]  # (m,)
        first_mel = 0 if htk_compat else 1
        features = features[:, first_mel:first_mel + num_mel_bins]  # (m, B)
    cepstra = features.matmul(_dct_matrix(num_ceps, num_mel_bins).to(dtype=features.dtype,
                                                                      device=features.device))  # (m, C)
    if cepstral_lifter != 0.0:
        cepstra = cepstra * _lifter(num_ceps, cepstral_lifter).unsqueeze(0).to(dtype=cepstra.dtype,
                                                                              device=cepstra.device)
    if use_energy:
        cepstra[:, 0] = log_energy
    if htk_compat:
        c0 = cepstra[:, :1]  # (m, 1)
        if not use_energy:
            c0 = c0 * math.sqrt(2)  # undo the 1/sqrt(2) of the orthonormal DCT's C0, as HTK defines it
        cepstra = torch.cat((cepstra[:, 1:], c0), dim=1)  # (m, C)
    return _minus_column_mean(cepstra, subtract_mean)
