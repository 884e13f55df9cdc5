"""patches.kaldi against real torchaudio (the golden file, and live where a real torchaudio imports), and
patches.torchaudio_shim in clean interpreters with a fake torchaudio first on sys.path."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fresh_python import run_python

from patches import kaldi
from patches.torchaudio_shim import shim_reason

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).with_name("data")
_spec = importlib.util.spec_from_file_location("make_kaldi_golden", DATA / "make_kaldi_golden.py")
golden_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden_script)

GOLDEN = np.load(golden_script.GOLDEN)
CASES: list[dict] = json.loads(str(GOLDEN["cases"]))
TORCHAUDIO_CRASHES = {
    "mfcc/min-duration/401": "torchaudio's mfcc multiplies fbank's empty result by the DCT matrix and fails",
}
RESULT_CASES = [c for c in CASES if "error" not in c]
REFUSED_CASES = [c for c in CASES if "error" in c and c["name"] not in TORCHAUDIO_CRASHES]
BROKEN_IMPORT = "libc10_cuda.so: cannot open shared object file: No such file or directory"


def _ids(cases: list[dict]) -> list[str]:
    return [c["name"] for c in cases]


def compute(kaldi_module, case: dict, device: str = "cpu") -> torch.Tensor:
    """Run one golden case: rebuild its input, seed the global RNG where it dithers, call the function."""
    wave = torch.from_numpy(golden_script.make_waveform(
        case["length"], case.get("channels", 1), case.get("seed", 0), case.get("scale", 1.0),
        case.get("dtype", "float32"))).to(device)  # (channels, samples)
    if "rng_seed" in case:
        torch.manual_seed(case["rng_seed"])
    return getattr(kaldi_module, case["function"])(wave, **case["kwargs"])


# ---------------------------------------------------------------------------------------------------- numerics


def assert_matches_golden(got: torch.Tensor, case: dict) -> None:
    """atol 1e-4 / rtol 1e-5, widened per output column by 3x the float32 rounding torchaudio itself showed there
    (``<name>/float32_rounding``, see make_kaldi_golden.py): another FFT library rounds ill-conditioned bins
    differently, by about as much again."""
    expected = GOLDEN[case["name"]]
    assert got.dtype == torch.from_numpy(expected).dtype
    assert tuple(got.shape) == expected.shape
    rounding_key = case["name"] + "/float32_rounding"
    rounding = GOLDEN[rounding_key] if rounding_key in GOLDEN.files else 0.0  # (columns,)
    tolerance = 1e-4 + 1e-5 * np.abs(expected) + 3.0 * rounding  # (m, columns)
    error = np.abs(got.cpu().numpy().astype(np.float64) - expected)  # (m, columns)
    worst = np.unravel_index(np.argmax(error - tolerance), error.shape) if error.size else ()
    assert (error <= tolerance).all(), (f"{case['name']}: |ours - torchaudio| = {error[worst]:.3g} at {worst} "
                                        f"(tolerance {tolerance[worst]:.3g}; torchaudio {expected[worst]:.6g})")


@pytest.mark.parametrize("case", RESULT_CASES, ids=_ids(RESULT_CASES))
def test_matches_torchaudio_golden(case: dict) -> None:
    assert_matches_golden(compute(kaldi, case), case)


CUDA_CASES = [c for c in RESULT_CASES if "rng_seed" not in c]  # the CUDA generator draws other dither noise


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", CUDA_CASES, ids=_ids(CUDA_CASES))
def test_matches_torchaudio_golden_on_cuda(case: dict) -> None:
    got = compute(kaldi, case, device="cuda")
    assert got.device.type == "cuda" or got.numel() == 0
    assert_matches_golden(got, case)


@pytest.mark.parametrize("case", REFUSED_CASES, ids=_ids(REFUSED_CASES))
def test_refuses_what_torchaudio_refuses(case: dict) -> None:
    with pytest.raises(ValueError):
        compute(kaldi, case)


def test_mfcc_shorter_than_min_duration_is_empty() -> None:
    """torchaudio crashes here (``TORCHAUDIO_CRASHES``); Kaldi's answer, no frames, is what we return."""
    (case,) = [c for c in CASES if c["name"] in TORCHAUDIO_CRASHES]
    assert "RuntimeError" in case["error"]
    assert compute(kaldi, case).numel() == 0


@pytest.mark.parametrize("name", list(json.loads(str(GOLDEN["mel_bank_cases"]))))
def test_mel_banks_match_torchaudio_golden(name: str) -> None:
    args = json.loads(str(GOLDEN["mel_bank_cases"]))[name]
    banks, centers = kaldi.get_mel_banks(*args)
    # Weights in [0, 1] from float32 log/exp: another CPU's vectorised maths moves them by up to ~3e-5 (VTLN).
    np.testing.assert_allclose(banks.numpy(), GOLDEN[name + "/banks"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(centers.numpy(), GOLDEN[name + "/centers"], rtol=1e-5, atol=1e-3)


def test_golden_file_covers_the_required_cases() -> None:
    """The file stays small, was made by a real torchaudio, and holds qwen-tts's call at every edge length."""
    assert golden_script.GOLDEN.stat().st_size < 1_000_000
    assert json.loads(str(GOLDEN["meta"]))["torchaudio"]
    qwen_lengths = {c["length"] for c in CASES if c["kwargs"] == golden_script.QWEN_TTS_CALL and c.get("scale", 1.0)
                    == 1.0}
    assert qwen_lengths == set(golden_script.LENGTHS)
    assert "fbank/qwen-tts/48037/float32_rounding" in GOLDEN.files
    windows = {c["kwargs"].get("window_type", kaldi.POVEY) for c in RESULT_CASES}
    assert set(kaldi.WINDOWS) <= windows
    assert {c["function"] for c in RESULT_CASES} == {"fbank", "spectrogram", "mfcc"}


def test_dither_draws_from_the_global_generator() -> None:
    wave = torch.from_numpy(golden_script.make_waveform(4000))  # (1, 4000)
    torch.manual_seed(7)
    first = kaldi.fbank(wave, dither=1.0)
    torch.manual_seed(7)
    again = kaldi.fbank(wave, dither=1.0)
    assert torch.equal(first, again)
    assert not torch.equal(first, kaldi.fbank(wave, dither=1.0))


def test_live_against_real_torchaudio() -> None:
    real = pytest.importorskip("torchaudio.compliance.kaldi")
    reason = shim_reason(sys.modules["torchaudio"])
    if reason is not None:
        pytest.skip(f"no real torchaudio here ({reason})")
    for case in CASES:
        try:
            expected = compute(real, case)
        except Exception:  # noqa: BLE001  (torchaudio asserts or crashes; ours must not return numbers)
            if case["name"] in TORCHAUDIO_CRASHES:
                assert compute(kaldi, case).numel() == 0
            else:
                with pytest.raises(ValueError):
                    compute(kaldi, case)
            continue
        got = compute(kaldi, case)
        assert got.shape == expected.shape, case["name"]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=case["name"])


# ---------------------------------------------------------------------------------------------------- the shim


def fake_torchaudio(root: Path, init_body: str) -> Path:
    """A ``torchaudio`` package under ``root``: ``__init__`` runs ``init_body`` after importing a pure-Python
    submodule; ``compliance.kaldi.fbank`` returns the string "real"."""
    package = root / "torchaudio"
    (package / "compliance").mkdir(parents=True)
    (package / "_internal.py").write_text("LOADED = True\n")
    (package / "__init__.py").write_text(f"from torchaudio import _internal\n{init_body}\n")
    (package / "compliance" / "__init__.py").write_text("")
    (package / "compliance" / "kaldi.py").write_text("def fbank(*args, **kwargs):\n    return 'real'\n")
    return root


@pytest.mark.reference  # it ends by importing qwen_tts through the shim
def test_shim_replaces_a_torchaudio_that_fails_to_load(tmp_path: Path) -> None:
    """Jetson: the PyPI torchaudio raises OSError on import. Reproduce it, patch, then import qwen_tts and check
    fbank's numbers; a second apply changes nothing."""
    fake = fake_torchaudio(tmp_path / "site", f"raise OSError({BROKEN_IMPORT!r})")
    out = tmp_path / "fbank.npy"
    result = run_python(f"""
        import importlib.util, json, sys
        import numpy as np, torch
        result = {{}}
        try:
            import torchaudio.compliance.kaldi
        except OSError as exc:
            result["reproduced"] = str(exc)
        result["half_imported"] = "torchaudio._internal" in sys.modules
        from patches import kaldi, torchaudio_shim
        status = torchaudio_shim.apply()
        result["applied"], result["detail"] = status.applied, status.detail
        result["stale"] = sorted(m for m in sys.modules if m.startswith("torchaudio.") and
                                 torchaudio_shim.shim_reason(sys.modules[m]) is None)
        result["spec"] = importlib.util.find_spec("torchaudio").name
        import torchaudio.compliance.kaldi as ta_kaldi
        result["same_fbank"] = ta_kaldi.fbank is kaldi.fbank
        result["all"] = ta_kaldi.__all__
        sys.path.insert(0, {str(DATA)!r})
        from make_kaldi_golden import make_waveform
        wave = torch.from_numpy(make_waveform(16000))
        np.save({str(out)!r}, ta_kaldi.fbank(wave, num_mel_bins=80, dither=0, sample_frequency=16000).numpy())
        module = sys.modules["torchaudio"]
        again = torchaudio_shim.apply()
        result["again"] = [again.applied, again.detail, sys.modules["torchaudio"] is module]
        import qwen_tts
        result["qwen_tts"] = qwen_tts.__name__
        print(json.dumps(result))
    """, fake)
    assert result["reproduced"] == BROKEN_IMPORT
    assert result["applied"] and BROKEN_IMPORT in result["detail"]
    assert result["half_imported"] and result["stale"] == []
    assert result["spec"] == "torchaudio"
    assert result["same_fbank"] and "fbank" in result["all"] and "mfcc" in result["all"]
    np.testing.assert_allclose(np.load(out), GOLDEN["fbank/qwen-tts/16000"], rtol=1e-5, atol=1e-4)
    assert result["again"] == [True, f"already applied (the real torchaudio does not import: OSError: "
                                     f"{BROKEN_IMPORT})", True]
    assert result["qwen_tts"] == "qwen_tts"


def test_shim_is_a_no_op_where_torchaudio_works(tmp_path: Path) -> None:
    fake = fake_torchaudio(tmp_path / "site", "")
    result = run_python("""
        import json, sys
        from patches import torchaudio_shim
        status = torchaudio_shim.apply()
        import torchaudio.compliance.kaldi as ta_kaldi
        print(json.dumps([status.applied, status.detail, ta_kaldi.fbank(), sys.modules["torchaudio"].__file__]))
    """, fake)
    assert result[:3] == [False, "the real torchaudio.compliance.kaldi imports", "real"]
    assert result[3] == str(fake / "torchaudio" / "__init__.py")


def test_shim_can_be_forced_over_a_working_torchaudio(tmp_path: Path) -> None:
    fake = fake_torchaudio(tmp_path / "site", "")
    result = run_python("""
        import json, sys
        import torchaudio.compliance.kaldi
        from patches import kaldi, torchaudio_shim
        status = torchaudio_shim.apply()
        import torchaudio.compliance.kaldi as ta_kaldi
        print(json.dumps([status.applied, status.detail, ta_kaldi.fbank is kaldi.fbank,
                          "torchaudio._internal" in sys.modules]))
    """, fake, env={"S2S_TORCHAUDIO_SHIM": "force"})
    assert result == [True, "forced by S2S_TORCHAUDIO_SHIM=force; using the pure-torch patches.kaldi", True, False]


def test_shim_says_what_it_lacks() -> None:
    import torchaudio

    if shim_reason(torchaudio) is None:
        pytest.skip("a real torchaudio is in use here")
    with pytest.raises(AttributeError, match="stand-in that provides only torchaudio.compliance.kaldi"):
        torchaudio.load  # noqa: B018
    assert not hasattr(torchaudio.compliance.kaldi, "resample_waveform")
