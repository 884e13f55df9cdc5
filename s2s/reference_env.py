"""Where the official ``qwen_tts`` (qwen-tts 0.1.1, transformers 4.57.3), the parity reference, can run.

On the transformers 4.57.3 stack it is installed in the main venv and imports in-process. On the default
transformers 5.x stack it cannot (qwen-tts 0.1.1 breaks on transformers 5), so ``./setup.sh --dev`` makes a small
second venv for it, ``<venv>/reference`` (CPU torch, transformers 4.57.3, qwen-tts 0.1.1); tools that need the
reference (the synthetic checkpoint builder, the parity tests) run there as a subprocess and exchange files.
``S2S_REFERENCE_PYTHON`` points elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REFERENCE_VENV_NAME = "reference"
"""The reference venv's folder inside the main venv (setup.sh makes it there)."""
REPO = Path(__file__).resolve().parents[1]


def in_process() -> bool:
    """Whether the official ``qwen_tts`` can run in this interpreter: installed, beside a transformers 4.x."""
    if importlib.util.find_spec("qwen_tts") is None:
        return False
    try:
        return metadata.version("transformers").startswith("4.")
    except metadata.PackageNotFoundError:
        return False


def reference_python() -> Path:
    """The reference venv's interpreter, or ValueError saying how to make one."""
    configured = os.environ.get("S2S_REFERENCE_PYTHON")
    python = Path(configured) if configured else Path(sys.prefix) / REFERENCE_VENV_NAME / "bin" / "python"
    if not python.is_file():
        raise ValueError(f"the official qwen-tts 0.1.1 is not importable here (transformers 5 stack) and there is no "
                         f"reference venv at {python}: run ./setup.sh --dev (it makes one), or set "
                         "S2S_REFERENCE_PYTHON to a Python with qwen-tts 0.1.1 and transformers 4.57.3")
    return python


def describe() -> str:
    """One line for ``s2s check``: the transformers stack and where the parity reference runs."""
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "transformers is not installed: run ./setup.sh"
    stack = ("the fallback stack (torch < 2.6 or Python < 3.11, e.g. JetPack 6)" if version.startswith("4.")
             else "the default stack")
    if in_process():
        where = "qwen-tts 0.1.1 in this venv"
    else:
        try:
            where = f"qwen-tts 0.1.1 in the reference venv {reference_python()}"
        except ValueError:
            where = "not installed (./setup.sh --dev makes the reference venv; only the parity tests need it)"
    return f"transformers {version}: {stack}; parity reference: {where}"


def run_reference(args: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in the reference venv with this repository importable (``env`` added to the environment);
    output captured, errors raised with its last lines."""
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    done = subprocess.run([str(reference_python()), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO))
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"the reference venv failed running {' '.join(args)} (exit {done.returncode}):\n{tail}")
    return done
