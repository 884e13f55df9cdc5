"""Fast Qwen3-TTS (12 Hz) decoding: static KV cache, hand-written attention, CUDA graphs, in-graph sampling.

Public API: ``Qwen3TTS`` (engine.py), ``SamplingParams`` (options.py), ``VoicePrompt`` (voice.py). They are
imported on first use, so that ``s2s.qwen3_tts.options`` (the engine's defaults) can be read without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"Qwen3TTS": "engine", "SamplingParams": "options", "VoicePrompt": "voice"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
