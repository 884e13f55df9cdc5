"""The speech-to-speech options of our TTS backend: every [tts] key of ``s2s.config.TTSConfig`` as
``--s2s_edge_KEY`` with the same default (except ``backend``: qwen3, our fast engine), plus ``--s2s_edge_blocksize``.

The dataclass is built from ``TTSConfig``, so a [tts] key added there is an option here without an edit, each
default keeps its one home, and each help is the key's docstring. speech-to-speech parses it with transformers'
``HfArgumentParser`` (command line) or reads it from its YAML/JSON configs, like the argument dataclasses of its
own backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, fields, make_dataclass
from typing import Any, get_type_hints

from s2s.config import TTSConfig
from s2s.default_toml import field_docs

PREFIX = "s2s_edge_"
"""Option prefix; speech-to-speech strips it (``config_prefix``) before the settings reach the handler."""
BLOCKSIZE = 512
"""int16 samples per audio block: speech-to-speech's realtime service sends 512-sample blocks (CHUNK_SAMPLES)."""
DEFAULT_BACKEND = "qwen3"
"""Our fast Qwen3-TTS engine; [tts]'s own default ("auto") would fall back to Piper without a checkpoint."""


def _option_fields() -> list[tuple[str, type, Any]]:
    hints = get_type_hints(TTSConfig)
    defaults = TTSConfig(backend=DEFAULT_BACKEND)
    docs = field_docs()
    options = [(PREFIX + f.name, hints[f.name],
                field(default=getattr(defaults, f.name),
                      metadata={"help": f"s2s-edge [tts] {f.name}. {docs.get(('TTSConfig', f.name), '')}".strip()}))
               for f in fields(TTSConfig)]
    options.append((PREFIX + "blocksize", int,
                    field(default=BLOCKSIZE, metadata={"help": "int16 samples per audio block sent on (16 kHz)"})))
    return options


S2SEdgeTTSArguments = make_dataclass("S2SEdgeTTSArguments", _option_fields())
"""One field per option: ``s2s_edge_model``, ``s2s_edge_speaker``, ..., ``s2s_edge_blocksize``."""
S2SEdgeTTSArguments.__module__ = __name__  # where pickle and help texts find it (make_dataclass guesses on 3.11)


def settings(arguments: Any) -> dict[str, Any]:
    """Parsed ``S2SEdgeTTSArguments`` -> the handler's setup keywords (the option names without the prefix)."""
    return {f.name.removeprefix(PREFIX): getattr(arguments, f.name) for f in fields(arguments)}


def tts_config(tts: Mapping[str, Any]) -> TTSConfig:
    """[tts] settings -> a validated ``TTSConfig``; ValueError names an unknown key or a bad value."""
    known = {f.name for f in fields(TTSConfig)}
    unknown = sorted(set(tts) - known)
    if unknown:
        raise ValueError(f"unknown s2s-edge TTS setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = TTSConfig(**{"backend": DEFAULT_BACKEND, **tts})
    cfg.validate()
    return cfg
