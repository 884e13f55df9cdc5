"""The ``qwen3`` TTS backend (our fast engine, ``s2s.qwen3_tts``) and the voice choice both Qwen3 backends share.

A Qwen3-TTS checkpoint is one of three kinds (``tts_model_type`` in its config.json): ``custom_voice`` (named
speakers), ``voice_design`` (a voice described by ``tts.instruct``) or ``base`` (a voice cloned from
``tts.ref_audio`` / ``tts.voice_prompt``). ``choose_voice`` checks the [tts] settings against the checkpoint's
config.json before any weights load, so a wrong speaker or language fails in milliseconds with the allowed values.

The fast engine streams 24 kHz float32 audio: ``first_chunk_size`` codec frames first, then ``chunk_size``
frames per chunk (1920 samples = 80 ms per frame).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from s2s.config import TTSConfig
from s2s.devices import resolve_device, torch_dtype
from s2s.models import qwen3_checkpoint
from s2s.qwen3_tts.options import KINDS, SAMPLE_RATE, takes_instruct
from s2s.tts_engine import VoiceRequest

log = logging.getLogger(__name__)

WARMUP_TEXT = "Hello, this is a warm-up."
WARMUP_FRAMES = 6
"""Frames a warm-up request generates (the first chunk and at least one more on default chunk sizes)."""
LANGUAGE_CODES = {
    "en": "english", "zh": "chinese", "de": "german", "it": "italian", "pt": "portuguese",
    "es": "spanish", "ja": "japanese", "ko": "korean", "fr": "french", "ru": "russian",
}
"""ISO 639-1 codes accepted for ``tts.language``, as the language names the checkpoints use."""


@dataclass(frozen=True)
class Qwen3Voice:
    """What every request of one engine speaks with, checked against the checkpoint."""

    kind: str
    """custom_voice, voice_design or base."""
    language: str
    """"auto" or a language name of the checkpoint (lower case)."""
    speaker: str = ""
    """custom_voice: the speaker name (lower case)."""
    instruct: str = ""
    """Style (custom_voice 1.7B) or voice description (voice_design)."""
    ref_audio: str = ""
    """base: reference WAV."""
    ref_text: str = ""
    """base: its transcript ("" = x-vector-only cloning)."""
    voice_prompt: str = ""
    """base: a saved voice prompt file (the qwen3 backend only)."""


def read_checkpoint_config(checkpoint: Path) -> dict:
    """The checkpoint's config.json as a dict, with an error that names the file if it is unreadable."""
    path = Path(checkpoint) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable Qwen3-TTS config ({exc}); check tts.model") from None


def choose_voice(cfg: TTSConfig, checkpoint: Path, voice_required: bool = True) -> Qwen3Voice:
    """The voice the [tts] settings ask for, or ValueError / FileNotFoundError saying which setting to change.
    ``voice_required=False``: a Base checkpoint without a reference gets a voice without one (every request must
    then bring its clone voice)."""
    config = read_checkpoint_config(checkpoint)
    kind = config.get("tts_model_type")
    if kind not in KINDS:
        raise ValueError(f"{checkpoint}/config.json has tts_model_type {kind!r}; supported: {', '.join(KINDS)}")
    talker = config.get("talker_config", {})
    languages = ["auto"] + [name for name in talker.get("codec_language_id", {}) if "dialect" not in name]
    language = check_language(cfg.language, languages, f"tts.language = {cfg.language!r}", checkpoint.name)
    if kind == "custom_voice":
        return Qwen3Voice(kind, language, speaker=_choose_speaker(cfg, checkpoint, list(talker.get("spk_id", {}))),
                          instruct=_instruct_for(cfg, config))
    if cfg.speaker:
        log.warning("tts.speaker = %r is ignored: %s is a %s checkpoint without named speakers",
                    cfg.speaker, checkpoint.name, kind)
    if kind == "voice_design":
        if not cfg.instruct.strip():
            raise ValueError(f"{checkpoint.name} is a VoiceDesign checkpoint: set tts.instruct to a description "
                             f"of the voice (e.g. \"a calm, low female voice\")")
        return Qwen3Voice(kind, language, instruct=cfg.instruct.strip())
    return _clone_voice(cfg, checkpoint, language, voice_required)


def check_language(value: str, languages: list[str], what: str, model: str) -> str:
    """``value`` (a language name or ISO 639-1 code) as one of ``languages``, or ValueError naming ``what``."""
    language = value.strip().lower()
    language = LANGUAGE_CODES.get(language, language)
    if language not in languages:
        raise ValueError(f"{what} is not a language of {model}; use one of: {', '.join(languages)} "
                         f"(or a code: {', '.join(LANGUAGE_CODES)})")
    return language


def _choose_speaker(cfg: TTSConfig, checkpoint: Path, speakers: list[str]) -> str:
    if not speakers:
        raise ValueError(f"{checkpoint}/config.json lists no speakers (talker_config.spk_id) for a CustomVoice model")
    if not cfg.speaker:
        return speakers[0]
    if cfg.speaker.strip().lower() not in speakers:
        raise ValueError(f"tts.speaker = {cfg.speaker!r} is not a speaker of {checkpoint.name}; "
                         f"use one of: {', '.join(speakers)}")
    return cfg.speaker.strip().lower()


def _instruct_for(cfg: TTSConfig, config: dict) -> str:
    if cfg.instruct.strip() and not takes_instruct(config.get("tts_model_size", "")):
        log.warning("tts.instruct is ignored: the 0.6B CustomVoice model does not take style instructions")
        return ""
    return cfg.instruct.strip()


def _clone_voice(cfg: TTSConfig, checkpoint: Path, language: str, voice_required: bool) -> Qwen3Voice:
    for key in ("voice_prompt", "ref_audio"):
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_file():
            raise FileNotFoundError(f"tts.{key} = {value!r} does not exist; give an existing file")
    if not cfg.voice_prompt and not cfg.ref_audio and not voice_required:
        return Qwen3Voice("base", language)
    if not cfg.voice_prompt and not cfg.ref_audio:
        raise ValueError(f"{checkpoint.name} is a Base (voice clone) checkpoint: set tts.ref_audio to a reference "
                         f"WAV (and tts.ref_text to its transcript) or tts.voice_prompt to a saved voice prompt")
    return Qwen3Voice("base", language, ref_audio=cfg.ref_audio, ref_text=cfg.ref_text.strip(),
                      voice_prompt=cfg.voice_prompt)


def find_checkpoint(cfg: TTSConfig) -> Path:
    """The checkpoint ``tts.model`` names (or setup.sh downloaded); FileNotFoundError saying what to do if none."""
    checkpoint = qwen3_checkpoint(cfg.model)
    if checkpoint is None:
        raise FileNotFoundError(
            f"tts.backend = {cfg.backend!r} needs a Qwen3-TTS checkpoint and none was found; run ./setup.sh with a "
            f"network connection to download it, set tts.model to a checkpoint directory, or use tts.backend = piper"
        )
    return checkpoint


def engine_device(cfg: TTSConfig) -> tuple[str, object]:
    """(device, torch dtype) for ``tts.device`` / ``tts.dtype``."""
    device = resolve_device("tts", cfg.device)
    return device, torch_dtype(cfg.dtype, device)


class Qwen3Engine:
    """``VoiceEngine`` over the fast engine ``s2s.qwen3_tts.Qwen3TTS`` (static KV cache, CUDA graphs on a GPU).

    Every request speaks ``self.voice`` (from [tts]) unless it brings a ``VoiceRequest``: a speaker (CustomVoice),
    instructions (VoiceDesign, CustomVoice 1.7B), a language, or a clone voice (Base).
    """

    name = "qwen3"
    sample_rate = SAMPLE_RATE

    def __init__(self, cfg: TTSConfig, checkpoint: Path, voice_required: bool = True) -> None:
        self.cfg = cfg
        self.checkpoint = checkpoint
        self.voice = choose_voice(cfg, checkpoint, voice_required)
        from s2s.qwen3_tts import Qwen3TTS

        device, dtype = engine_device(cfg)
        self.engine = Qwen3TTS.from_pretrained(
            str(checkpoint), device=device, dtype=dtype, max_seq_len=cfg.max_seq_len,
            enforce_eager=cfg.enforce_eager, compile=cfg.compile,
        )
        self.sampling = cfg.sampling()
        has_reference = bool(self.voice.voice_prompt or self.voice.ref_audio)
        self.clone_prompt = self._load_clone_prompt() if has_reference else None
        log.info("qwen3 engine: %s (%s) on %s, voice %s", checkpoint.name, self.voice.kind, device,
                 self.voice.speaker or self.voice.kind)

    @classmethod
    def from_config(cls, cfg: TTSConfig, voice_required: bool = True) -> Qwen3Engine:
        return cls(cfg, find_checkpoint(cfg), voice_required)

    # -- per-request voices (s2s.tts_engine.VoiceEngine) ----------------------------------------------------
    @property
    def takes_instructions(self) -> bool:
        return self.voice.kind == "voice_design" or (self.voice.kind == "custom_voice"
                                                     and takes_instruct(self.engine.model_size))

    @property
    def can_clone(self) -> bool:
        return self.voice.kind == "base"

    def speakers(self) -> list[str]:
        return self.engine.speakers if self.voice.kind == "custom_voice" else []

    def languages(self) -> list[str]:
        return self.engine.languages

    def make_clone(self, samples: np.ndarray, rate: int, transcript: str = ""):
        """A ``VoicePrompt`` (in-context with a transcript, x-vector only without)."""
        transcript = transcript.strip()
        return self.engine.create_voice_prompt((np.asarray(samples, dtype=np.float32), int(rate)),
                                               ref_text=transcript or None, xvec_only=not transcript)

    def save_clone(self, clone, path: Path) -> None:
        clone.save(path)

    def load_clone(self, path: Path):
        from s2s.qwen3_tts import VoicePrompt

        clone = VoicePrompt.load(path)
        width = self.engine.talker.w.codec_embedding.shape[1]
        if clone.speaker_embedding.shape[-1] != width:
            raise ValueError(f"{path.name} was made with another checkpoint (speaker embedding of "
                             f"{clone.speaker_embedding.shape[-1]}, this one has {width}): upload the voice again")
        return clone

    def _request_voice(self, request: VoiceRequest | None) -> tuple[Qwen3Voice, object]:
        """(voice, clone prompt) for one request: the configured voice with what ``request`` changes."""
        v, clone = self.voice, self.clone_prompt
        if request is not None:
            changes = {}
            if request.language:
                changes["language"] = check_language(request.language, self.languages(),
                                                     f"language {request.language!r}", self.checkpoint.name)
            if request.speaker:
                speaker = request.speaker.strip().lower()
                if speaker not in self.speakers():
                    raise ValueError(f"{request.speaker!r} is not a speaker of {self.checkpoint.name}; use one of: "
                                     f"{', '.join(self.speakers()) or 'none (it has no named speakers)'}")
                changes["speaker"] = speaker
            if request.instructions.strip() and self.takes_instructions:
                changes["instruct"] = request.instructions.strip()
            v = replace(v, **changes)
            if request.clone is not None:
                if not self.can_clone:
                    raise ValueError(f"clone voices need a Base checkpoint; {self.checkpoint.name} is {v.kind}")
                clone = request.clone
        if v.kind == "base" and clone is None:
            raise ValueError(f"{self.checkpoint.name} is a Base (voice clone) checkpoint without a voice of its own: "
                             "name a saved clone voice, or set tts.ref_audio (and tts.ref_text)")
        return v, clone

    def _load_clone_prompt(self):
        if self.voice.voice_prompt:
            from s2s.qwen3_tts import VoicePrompt

            return VoicePrompt.load(self.voice.voice_prompt)
        return self.engine.create_voice_prompt(self.voice.ref_audio, ref_text=self.voice.ref_text or None,
                                               xvec_only=not self.voice.ref_text)

    def prompt(self, text: str, voice: VoiceRequest | None = None):
        """The engine prompt for one request, built as the checkpoint kind requires."""
        v, clone = self._request_voice(voice)
        if v.kind == "custom_voice":
            return self.engine.prompt_custom_voice(text, v.speaker, language=v.language, instruct=v.instruct)
        if v.kind == "voice_design":
            return self.engine.prompt_voice_design(text, v.instruct, language=v.language)
        return self.engine.prompt_voice_clone(text, clone, language=v.language)

    def warmup(self) -> None:
        """Capture the graphs (CUDA: talker, predictor, codec decoder per chunk size), then one short request
        through every stage: prompt, prefill, decode loop, streaming decoder (not for a Base checkpoint without
        a voice of its own)."""
        self.engine.warmup(self.sampling, chunk_sizes=(self.cfg.first_chunk_size, self.cfg.chunk_size))
        if self.voice.kind == "base" and self.clone_prompt is None:
            return
        for _ in self._stream(WARMUP_TEXT, WARMUP_FRAMES + 1, None, None):
            pass

    def synthesize(self, text: str, cancel: threading.Event | None = None,
                   voice: VoiceRequest | None = None) -> Iterator[np.ndarray]:
        """The configured voice, or the one ``voice`` asks for (ValueError, at once, for one it cannot speak)."""
        return self._stream(text, self.cfg.max_new_tokens or None, cancel, voice)

    def _stream(self, text: str, max_new_tokens: int | None, cancel: threading.Event | None,
                voice: VoiceRequest | None) -> Iterator[np.ndarray]:
        return self.engine.stream(self.prompt(text, voice), self.sampling, chunk_size=self.cfg.chunk_size,
                                  first_chunk_size=self.cfg.first_chunk_size, max_new_tokens=max_new_tokens,
                                  cancel=cancel)
