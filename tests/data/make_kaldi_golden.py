"""Write tests/data/kaldi_golden.npz: real ``torchaudio.compliance.kaldi`` outputs for fixed inputs.

The project's torch has no matching torchaudio, so run this in a throwaway venv outside the repo:

    python3 -m venv /tmp/ta && /tmp/ta/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy
    /tmp/ta/bin/python tests/data/make_kaldi_golden.py

Inputs are not stored: ``make_waveform`` rebuilds each from its case (length, channels, seed, scale, dtype) with
numpy's legacy ``RandomState``, whose stream never changes. The file holds, per case, the output array (or the
error torchaudio raised) and a JSON list of the cases, so the test needs nothing but this module's
``make_waveform``.

Float32 cannot resolve every output: after pre-emphasis the lowest mel bins hold ~1e-6 of a frame's energy, and
FFT libraries (MKL on Intel vs AMD, pocketfft on ARM, cuFFT) round them differently by up to ~4e-4 in log. So each
float32 case without dither also stores ``<name>/float32_rounding``: per output column, the largest
|float32 - float64| of torchaudio's own result on this input. The test widens its tolerance by that, column by
column; everywhere float32 is well conditioned it stays atol 1e-4 / rtol 1e-5.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("kaldi_golden.npz")
SAMPLE_RATE = 16000
LENGTHS = [0, 100, 399, 400, 401, 16000, 48037]
"""Around one 400-sample frame (25 ms at 16 kHz), one second, three seconds plus an odd tail."""


def cpu_model() -> str:
    """This CPU's vendor and model name ("AuthenticAMD AMD EPYC"), from /proc/cpuinfo (else ``platform``): MKL picks
    its FFT kernels by CPU, so torch's float32 fbank is bit-reproducible only on the same CPU model."""
    info = Path("/proc/cpuinfo")
    fields = {}
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    if "vendor_id" in fields:
        return f"{fields['vendor_id']} {fields.get('model name', '')}".strip()
    return f"{platform.machine()} {platform.processor()}".strip()


def make_waveform(length: int, channels: int = 1, seed: int = 0, scale: float = 1.0,
                  dtype: str = "float32") -> np.ndarray:
    """(channels, length): a 220/330/.. Hz sine plus noise, with exact digital silence in samples 8000..8999."""
    rng = np.random.RandomState(seed)
    t = np.arange(length) / SAMPLE_RATE  # (N,)
    rows = [0.5 * np.sin(2 * np.pi * 110.0 * (c + 2) * t) + 0.1 * rng.standard_normal(length)
            for c in range(channels)]
    wave = scale * np.stack(rows)  # (C, N)
    wave[:, 8000:9000] = 0.0
    return wave.astype(dtype)


def _case(name: str, function: str = "fbank", lengths: list[int] | None = None, **spec) -> list[dict]:
    kwargs = spec.pop("kwargs", {})
    return [dict(name=f"{function}/{name}/{n}", function=function, length=n, kwargs=kwargs, **spec)
            for n in (lengths or [16000])]


QWEN_TTS_CALL = dict(num_mel_bins=80, dither=0, sample_frequency=16000)
"""qwen-tts 0.1.1's only call (speech_vq.XVectorExtractor)."""

CASES: list[dict] = [
    *_case("qwen-tts", lengths=LENGTHS, kwargs=QWEN_TTS_CALL),
    *_case("defaults", lengths=LENGTHS),
    *_case("no-snip-edges", lengths=LENGTHS, kwargs=dict(snip_edges=False)),
    *_case("shift-over-length-no-snip", lengths=[400, 1234], kwargs=dict(snip_edges=False, frame_length=10.0,
                                                                         frame_shift=30.0)),
    *_case("hamming-energy-htk", lengths=[401, 16000],
           kwargs=dict(window_type="hamming", use_energy=True, htk_compat=True)),
    *_case("hanning-energy-floor0", kwargs=dict(window_type="hanning", use_energy=True, energy_floor=0.0)),
    *_case("windowed-energy", kwargs=dict(raw_energy=False, use_energy=True, energy_floor=2.0)),
    *_case("rectangular-plain", kwargs=dict(window_type="rectangular", remove_dc_offset=False,
                                            preemphasis_coefficient=0.0, round_to_power_of_two=False)),
    *_case("magnitude-linear", kwargs=dict(use_power=False, use_log_fbank=False, num_mel_bins=40)),
    *_case("blackman-vtln-0.9", lengths=[401, 16000], kwargs=dict(window_type="blackman", blackman_coeff=0.4,
                                                                   vtln_warp=0.9)),
    *_case("vtln-1.1-band", kwargs=dict(vtln_warp=1.1, low_freq=60.0, high_freq=7200.0, vtln_low=300.0,
                                        vtln_high=6000.0)),
    *_case("subtract-mean-negative-high-freq", kwargs=dict(subtract_mean=True, high_freq=-400.0)),
    *_case("8khz-20ms-12.5ms", kwargs=dict(sample_frequency=8000.0, frame_length=20.0, frame_shift=12.5,
                                           num_mel_bins=15)),
    *_case("22050hz-odd-frame", kwargs=dict(sample_frequency=22050.0, frame_length=25.0, frame_shift=11.0)),
    *_case("stereo-channel-1", channels=2, kwargs=dict(channel=1)),
    *_case("stereo-channel-default", channels=2),
    *_case("channel-out-of-range", channels=2, kwargs=dict(channel=2)),
    *_case("min-duration", lengths=[401, 16000], kwargs=dict(min_duration=0.5)),
    *_case("dither", lengths=[401, 16000], rng_seed=1234, kwargs=dict(dither=1.0)),
    *_case("int16-scale", scale=32768.0, kwargs=QWEN_TTS_CALL),
    *_case("float64", dtype="float64", kwargs=dict(use_energy=True)),
    *_case("bad-window", kwargs=dict(window_type="kaiser")),
    *_case("three-bins", kwargs=dict(num_mel_bins=3)),
    *_case("defaults", "spectrogram", lengths=[400, 4000]),
    *_case("no-snip-raw-energy-off", "spectrogram", lengths=[4000],
           kwargs=dict(snip_edges=False, raw_energy=False, subtract_mean=True)),
    *_case("defaults", "mfcc", lengths=[400, 16000]),
    *_case("htk", "mfcc", kwargs=dict(htk_compat=True)),
    *_case("energy", "mfcc", kwargs=dict(use_energy=True)),
    *_case("energy-htk", "mfcc", kwargs=dict(use_energy=True, htk_compat=True, num_ceps=23)),
    *_case("no-lifter-vtln", "mfcc", kwargs=dict(cepstral_lifter=0.0, vtln_warp=0.95, num_mel_bins=30)),
    *_case("min-duration", "mfcc", lengths=[401], kwargs=dict(min_duration=0.5)),
]

MEL_BANK_CASES: dict[str, list] = {
    "get_mel_banks/23-512": [23, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0],
    "get_mel_banks/80-512-vtln-0.85": [80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 0.85],
    "get_mel_banks/40-1024-vtln-1.2": [40, 1024, 22050.0, 0.0, -1000.0, 250.0, 8000.0, 1.2],
}


def main() -> None:
    import torch
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi

    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for case in CASES:
        wave = torch.from_numpy(make_waveform(case["length"], case.get("channels", 1), case.get("seed", 0),
                                              case.get("scale", 1.0), case.get("dtype", "float32")))
        if "rng_seed" in case:
            torch.manual_seed(case["rng_seed"])
        function = getattr(kaldi, case["function"])
        try:
            arrays[case["name"]] = function(wave, **case["kwargs"]).numpy()
        except Exception as exc:  # noqa: BLE001  (any refusal is recorded; the test expects ours to refuse too)
            case = dict(case, error=f"{type(exc).__name__}: {exc}")
        else:
            if wave.dtype == torch.float32 and "rng_seed" not in case and arrays[case["name"]].ndim == 2:
                exact = function(wave.double(), **case["kwargs"]).numpy()  # (m, columns)
                rounding = np.abs(arrays[case["name"]] - exact).max(axis=0, initial=0.0)  # (columns,)
                arrays[case["name"] + "/float32_rounding"] = rounding.astype(np.float32)
        cases.append(case)
    for name, args in MEL_BANK_CASES.items():
        banks, centers = kaldi.get_mel_banks(*args)
        arrays[name + "/banks"], arrays[name + "/centers"] = banks.numpy(), centers.numpy()
    meta = dict(torch=torch.__version__, torchaudio=torchaudio.__version__, numpy=np.__version__, cpu=cpu_model())
    np.savez_compressed(GOLDEN, cases=json.dumps(cases), mel_bank_cases=json.dumps(MEL_BANK_CASES),
                        meta=json.dumps(meta), **arrays)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size // 1024} KiB, {len(cases)} cases, "
          f"{sum('error' in c for c in cases)} refusals) with {meta}")


if __name__ == "__main__":
    main()
