"""s2s-edge: an offline voice assistant for edge GPUs (VAD -> STT -> LLM -> TTS)."""

__version__ = "0.1.0"
