"""Run test code in a fresh interpreter (for what must happen before or at import time: patches, broken packages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, *path: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` with ``path``, the repo, then any inherited PYTHONPATH (where qwen_tts may live, as on the GPU
    machine) on sys.path, offline and on one thread; it must exit 0. Returns its last stdout line parsed as JSON."""
    inherited = {k: v for k, v in os.environ.items() if k != "S2S_TORCHAUDIO_SHIM"}
    search = [*map(str, path), str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    full_env = {**inherited, "PYTHONPATH": os.pathsep.join(search), "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=path[0] if path else REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
