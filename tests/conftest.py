"""Shared test set-up: offline hubs, the Jetson patches applied (qwen_tts needs the torchaudio shim on CPU CI)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import patches  # noqa: E402

patches.apply()
