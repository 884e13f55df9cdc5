"""What the CPU benchmarks of the assistant (history.py, soak.py) share: the spoken-style questions of
``questions.txt``, their speech (espeak-ng + sox: 16 kHz mono 16-bit WAVs, as a question reaches the STT), and the
line that describes the machine."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import torch

QUESTIONS = (Path(__file__).parent / "questions.txt").read_text().splitlines()
"""30 short questions as people say them, one a line."""


def speak(text: str, wav: Path) -> Path:
    """``text`` spoken by espeak-ng (en-us, 150 words/min) into ``wav`` at 16 kHz mono."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; run: apt-get install -y espeak-ng sox")
    raw = wav.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-V1", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    raw.unlink()
    return wav


def machine() -> str:
    """CPU model (from /proc/cpuinfo), torch threads and versions, for a results file."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return (f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}")
