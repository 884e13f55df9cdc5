"""Helpers for tests that run the real pipeline with the small CPU models.

Each real model is loaded once per test session, however many pipelines the tests build: ``reuse_models`` hands
the first pipeline's loaded models (Silero, Whisper tiny.en, SmolLM2, Piper) to every later one. The stages still
run their own ``process`` code on their own threads; only the loading is shared.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from s2s.audio import SPEECH_RATE, resample
from s2s.config import Config, load_config
from s2s.pipeline import Pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUN_TIMEOUT_S = 240.0
"""Generous bound for one run on a loaded 2-core CI machine; a hang fails the test instead of blocking it."""

_models: dict[str, object] = {}
_MODEL_ATTR = {"vad": "model", "stt": "model", "llm": "chat_model", "tts": "engine"}


def integration_overrides(smollm2_dir: Path) -> list[str]:
    """CPU settings: Piper, the embedded tiny.en, SmolLM2 (converted once by fixtures_models), short replies."""
    return ["tts.backend=piper", f"llm.model={smollm2_dir}", "llm.max_new_tokens=32", "stt.device=cpu",
            "llm.device=cpu", "pipeline.max_turn_s=200"]


def integration_config(smollm2_dir: Path, *extra: str) -> Config:
    return load_config([], [*integration_overrides(smollm2_dir), *extra])


def reuse_models(pipeline: Pipeline) -> Pipeline:
    """Give the stages the models loaded by an earlier pipeline; the first pipeline keeps what it loads."""
    for stage in pipeline.stages:
        attr = _MODEL_ATTR.get(stage.name)
        if attr is None:
            continue
        if stage.name in _models:
            setattr(stage, attr, _models[stage.name])
            if stage.name in ("stt", "tts"):  # their setup() would load a fresh model
                stage.setup = lambda: None
        else:
            stage.setup = _keeping(stage, attr, stage.setup)
    return pipeline


def _keeping(stage, attr: str, setup):
    def setup_and_keep() -> None:
        setup()
        _models[stage.name] = getattr(stage, attr)

    return setup_and_keep


def run(pipeline: Pipeline, timeout: float = RUN_TIMEOUT_S) -> Pipeline:
    """Run to the end of the input; fail (after stopping the threads) if it does not end in time."""
    pipeline.start()
    try:
        assert pipeline.wait(timeout), f"the pipeline did not finish within {timeout:.0f} s: {pipeline.health()}"
    finally:
        assert pipeline.stop() == []
    return pipeline


def transcribe(audio: np.ndarray, rate: int) -> str:
    """Whisper's transcript of mono audio (the session's STT model; a pipeline must have loaded it)."""
    model = _models["stt"]
    segments, _ = model.transcribe(resample(audio, rate, SPEECH_RATE), beam_size=1, vad_filter=False,
                                   condition_on_previous_text=False, without_timestamps=True)
    return " ".join(segment.text.strip() for segment in segments)


def logged(caplog, logger: str, prefix: str) -> dict[int, str]:
    """turn id -> text, from the stages' INFO lines ("STT: turn %d: %r", "LLM: turn %d: %r")."""
    found = {}
    for record in caplog.records:
        if (record.name == logger and record.msg.startswith(prefix) and record.levelno == logging.INFO
                and len(record.args) >= 2):
            found[record.args[0]] = record.args[1]
    return found


def words(text: str) -> set[str]:
    """Lower-case words of three letters or more (what a transcription comparison can rely on)."""
    return {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 3}
