"""s2s.registry: backends found by name through entry points; the core names none of them; a third-party plugin
package (tests/plugin_example, a TTS that speaks a tone) is found and used like our own backends."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_models import smollm2_dir  # noqa: F401  (session fixture)
from stage_harness import run_stage, wiring

from s2s import cli, registry
from s2s.config import TTSConfig
from s2s.handler import Handler
from s2s.messages import AudioChunk, EndOfStream, TextChunk
from s2s.turns import Turns

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = Path(__file__).resolve().parent / "plugin_example"
PLUGIN_PACKAGE = "s2s-tone-plugin"
TONE_HZ, TONE_RATE = 440.0, 16000
"""What the plugin's engine speaks (tests/plugin_example/s2s_tone_plugin.py)."""
CLI_TIMEOUT_S = 300


def declared_backends() -> dict[tuple[str, str], str]:
    """(kind, name) -> "module:attribute", as our pyproject.toml declares them."""
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    return {(group.removeprefix(registry.GROUP_PREFIX), name): target
            for group, entries in groups.items() if group.startswith(registry.GROUP_PREFIX)
            for name, target in entries.items()}


DECLARED = declared_backends()


def s2s(*args: str, pythonpath: Path | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The ``s2s`` command in a fresh interpreter, ``pythonpath`` first on its sys.path."""
    search = [str(pythonpath)] if pythonpath is not None else []
    search += filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(search), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "s2s.cli", *args], check=False, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=CLI_TIMEOUT_S)


# ---- the core names no backend ---------------------------------------------------------------------------------
IMPORTS_HANDLERS = re.compile(r"^\s*(from\s+handlers\b|import\s+handlers\b)|import_module\(\s*['\"]handlers\b",
                              re.MULTILINE)


def test_the_core_never_imports_handlers_by_module_name():
    offenders = [f"{path.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}"
                 for path in sorted((REPO / "s2s").rglob("*.py"))
                 for text in [path.read_text()]
                 for match in IMPORTS_HANDLERS.finditer(text)]
    assert offenders == [], "s2s/ must find backends through s2s.registry, not import them"


BUILDERS = ["s2s/pipeline.py", "s2s/cli.py", *(["s2s/run.py"] if (REPO / "s2s/run.py").exists() else [])]
"""The files that build stages: the pipeline, the CLI and (where it lives apart) the run command."""


@pytest.mark.parametrize("core_file", BUILDERS)
def test_pipeline_and_cli_name_no_backend_module(core_file):
    text = (REPO / core_file).read_text()
    modules = {target.split(":")[0] for target in DECLARED.values()}
    assert modules, "pyproject.toml declares no backend"
    named = sorted(module for module in modules if re.search(rf"\b{re.escape(module)}\b", text))
    packages = sorted({module.split(".")[0] for module in modules})
    named += [package for package in packages if re.search(rf"\b{package}\.\w", text)]
    assert named == [], f"{core_file} names backend modules: {named}"


# ---- our own backends ------------------------------------------------------------------------------------------
def test_every_stage_kind_has_a_declared_backend():
    assert {kind for kind, _ in DECLARED} == set(registry.KINDS)


@pytest.mark.parametrize(("kind", "name"), sorted(DECLARED), ids=[f"{k}:{n}" for k, n in sorted(DECLARED)])
def test_declared_backend_is_installed_and_loads_as_its_kind(kind, name):
    entry = registry.entry(kind, name)
    assert entry.value == DECLARED[kind, name], "the installed entry points are stale: run pip install -e ."
    assert entry.dist is not None and entry.dist.name == "s2s-edge"
    backend = registry.load(kind, name)
    if kind in registry.FACTORY_KINDS:
        assert callable(backend), f"{entry.value} must be a factory (its config section) -> its engine"
    else:
        assert isinstance(backend, type) and issubclass(backend, Handler), f"{entry.value} is not a Handler class"


def test_unknown_name_lists_the_installed_backends():
    with pytest.raises(registry.UnknownBackend, match=r"\[stt\] backend = 'nope' is not installed; installed stt "
                                                      r"backends: faster-whisper"):
        registry.load("stt", "nope")
    with pytest.raises(ValueError, match="unknown stage kind 'speech'"):
        registry.names("speech")


@pytest.mark.parametrize("kind", ["stt", "tts"])
def test_run_with_an_unknown_backend_exits_2_listing_the_installed_ones_before_any_model_loads(kind, tmp_path):
    out = tmp_path / "x.wav"
    proc = s2s("--set", f"{kind}.backend=nope", "run", "--text", "hi", "--output", str(out))
    assert proc.returncode == 2, proc.stderr[-3000:]
    installed = ", ".join(registry.names(kind))
    assert f"error: [{kind}] backend = 'nope' is not installed; installed {kind} backends: {installed}" in proc.stderr
    assert not re.search(r" (s2s\.pipeline|s2s\.tts_stage|handlers\.\w+): ", proc.stderr), proc.stderr[-3000:]
    assert not out.exists()


def check_backends_section(out: str) -> dict[str, str]:
    """kind -> its line in `s2s check`'s "backends" section."""
    section = out.split("backends (name: package):\n", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: line for line in section.splitlines()}


def test_check_lists_every_backend_and_its_package(capsys):
    cli.main(["check"])  # 1 when a model is missing on this machine; the backends are listed either way
    lines = check_backends_section(capsys.readouterr().out)
    assert sorted(lines) == sorted(registry.KINDS)
    for kind, name in DECLARED:
        assert f"{name}: s2s-edge" in lines[kind], lines[kind]
    for backend in registry.backends():
        assert f"{backend.name}: {backend.package}" in lines[backend.kind]


# ---- a third-party plugin --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tone_plugin(tmp_path_factory) -> Path:
    """tests/plugin_example built and installed (no dependencies, offline) into a folder of its own: put it on
    PYTHONPATH and importlib.metadata finds its entry point."""
    tmp = tmp_path_factory.mktemp("tone-plugin")
    source, target = tmp / "source", tmp / "site"
    shutil.copytree(PLUGIN_SOURCE, source)  # the build writes beside its sources; keep the repo clean
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
                          check=False, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (target / "s2s_tone_plugin.py").is_file()
    return target


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(audio))) * rate / len(audio))


def test_plugin_backend_is_found_and_drives_the_core_tts_stage(tone_plugin, monkeypatch):
    from s2s.tts_stage import TTSHandler

    monkeypatch.syspath_prepend(str(tone_plugin))
    try:
        assert "tone" in registry.names("tts")
        (found,) = [b for b in registry.backends() if b.name == "tone"]
        assert (found.kind, found.target, found.package) == ("tts", "s2s_tone_plugin:ToneEngine", PLUGIN_PACKAGE)
        turns = Turns()
        turns.begin(1)
        stage = TTSHandler(wiring(turns), TTSConfig(backend="tone"))
        stage.setup()
        out = run_stage(stage, [TextChunk(1, "Hello there, friend.")])
    finally:
        sys.modules.pop("s2s_tone_plugin", None)
    chunks = [item for item in out if isinstance(item, AudioChunk)]
    assert isinstance(out[-1], EndOfStream) and len(chunks) == 3  # one 0.1 s block per word
    assert all(chunk.sample_rate == TONE_RATE for chunk in chunks)  # the engine's own rate, not resampled
    audio = np.concatenate([chunk.samples for chunk in chunks])
    assert abs(dominant_hz(audio, TONE_RATE) - TONE_HZ) < 5


def test_check_lists_the_plugin_backend_and_its_package(tone_plugin):
    proc = s2s("check", pythonpath=tone_plugin)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a model is missing on this machine
    assert f"tone: {PLUGIN_PACKAGE}" in check_backends_section(proc.stdout)["tts"]


@pytest.mark.slow
def test_run_speaks_with_the_plugin_tts(tone_plugin, smollm2_dir, tmp_path):  # noqa: F811
    out = tmp_path / "out.wav"
    proc = s2s("--set", "tts.backend=tone", "--set", f"llm.model={smollm2_dir}", "--set", "llm.device=cpu",
               "--set", "llm.max_new_tokens=8", "run", "--text", "Hello there", "--output", str(out),
               pythonpath=tone_plugin, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "turn 1: end of speech -> first audio out" in proc.stdout and "error" not in proc.stdout
    audio, rate = sf.read(out, dtype="float32")
    assert rate == TONE_RATE  # audio_out.sample_rate = 0: the WAV is written at the plugin engine's rate
    assert len(audio) >= TONE_RATE // 10
    assert abs(dominant_hz(audio, rate) - TONE_HZ) < 5
