"""Fast Qwen3-TTS (12 Hz) decoding: static KV cache, hand-written attention, CUDA graphs, in-graph sampling.

Public API: ``Qwen3TTS`` (engine.py), ``SamplingParams`` (sampling.py), ``VoicePrompt`` (voice.py).
"""

from s2s.qwen3_tts.engine import Qwen3TTS
from s2s.qwen3_tts.sampling import SamplingParams
from s2s.qwen3_tts.voice import VoicePrompt

__all__ = ["Qwen3TTS", "SamplingParams", "VoicePrompt"]
