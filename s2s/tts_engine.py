"""The one interface every TTS backend implements, and ``make_engine``, which finds the configured one.

Backends are factories ``(TTSConfig) -> TTSEngine`` registered in the ``s2s_edge.tts`` entry-point group (see
``s2s.registry``). Ours: ``auto``, ``piper`` (CPU, embedded voice), ``qwen3`` (our fast engine, ``s2s.qwen3_tts``)
and ``qwen3-reference`` (the official ``qwen-tts`` generate). ``s2s.tts_stage.TTSHandler`` drives the engine.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from s2s import registry

if TYPE_CHECKING:
    from s2s.config import TTSConfig


class TTSEngine(Protocol):
    name: str
    """Backend name as written in the config (e.g. "piper")."""
    sample_rate: int
    """Rate (Hz) of the audio ``synthesize`` yields; the sink resamples it (once) if the speaker needs another."""

    def warmup(self) -> None:
        """Run once at start-up so the first real request is fast (loads, graph capture)."""

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        """Yield float32 mono audio chunks for ``text`` as they are produced; stop early once ``cancel`` is set.

        Raises ``ValueError`` with a message that says what to change for text it cannot speak (e.g. too long
        for the model's context).
        """


@dataclass(frozen=True)
class VoiceRequest:
    """The voice of one request, for engines that speak more than one (``VoiceEngine``); empty = the configured."""

    speaker: str = ""
    """A named speaker of the engine (``VoiceEngine.speakers()``)."""
    instructions: str = ""
    """Style, or the description of the voice, for engines that take one (``takes_instructions``)."""
    language: str = ""
    """A language of the engine (``VoiceEngine.languages()``), or an ISO 639-1 code."""
    clone: object | None = None
    """A clone voice made by ``VoiceEngine.make_clone`` (or read back with ``load_clone``)."""


@runtime_checkable
class VoiceEngine(TTSEngine, Protocol):
    """A TTSEngine whose requests may each choose a voice (the servers' ``voice``; ours: ``qwen3``)."""

    takes_instructions: bool
    """Whether ``VoiceRequest.instructions`` is honoured (otherwise it is ignored)."""
    can_clone: bool
    """Whether ``make_clone`` works (Qwen3-TTS Base checkpoints)."""

    def speakers(self) -> list[str]:
        """Named speakers (lower case); empty when the engine has none."""

    def languages(self) -> list[str]:
        """Languages a request may ask for ("auto" first)."""

    def make_clone(self, samples: np.ndarray, rate: int, transcript: str = "") -> object:
        """A clone voice from reference speech (float32 mono at ``rate``) and its transcript ("" = timbre only)."""

    def save_clone(self, clone: object, path: Path) -> None: ...

    def load_clone(self, path: Path) -> object: ...

    def synthesize(self, text: str, cancel: threading.Event | None = None,
                   voice: VoiceRequest | None = None) -> Iterator[np.ndarray]: ...


def make_engine(cfg: TTSConfig, voice_required: bool = True) -> TTSEngine:
    """The engine ``tts.backend`` names, loaded (not yet warmed up).

    ``voice_required=False`` lets a backend start without a voice of its own where every request brings one (a
    Base checkpoint without ``tts.ref_audio``, serving uploaded clone voices); it is passed only to factories
    that take a ``voice_required`` argument.

    Raises UnknownBackend (a ValueError) for a name no package provides; the backend's own errors otherwise
    (FileNotFoundError for a missing model, ValueError for a setting the model does not have).
    """
    factory = registry.load("tts", cfg.backend)
    if not voice_required and "voice_required" in inspect.signature(factory).parameters:
        return factory(cfg, voice_required=False)
    return factory(cfg)
