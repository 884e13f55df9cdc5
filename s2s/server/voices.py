"""What a request's ``voice`` may name, and the clone voices uploaded to the server, kept on disk.

``VoiceCatalog.resolve(name)`` takes, in this order: ``default`` (or the engine's name) for the configured voice; a
named speaker of the engine (CustomVoice); a saved clone voice (Base checkpoints); an OpenAI voice name mapped by
``[server] voice_map``; any other OpenAI voice name, which speaks with the configured voice (clients send "alloy"
by default). Anything else is a 400 that lists the voices.

``VoiceStore`` keeps each clone voice as two files in ``voices_dir``: ``NAME.pt`` (the engine's clone prompt,
made once from the upload) and ``NAME.json`` (transcript, language, checkpoint, time). Both are written whole
(``s2s.atomic_file``); the JSON goes last and is what lists a voice. Names are validated (``NAME_PATTERN``), so no
request can reach another path. Loaded prompts are cached.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from s2s.atomic_file import commit, discard, staging_path
from s2s.tts_engine import TTSEngine, VoiceEngine, VoiceRequest

log = logging.getLogger(__name__)

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")
"""The built-in voice names OpenAI clients send."""
DEFAULT_VOICE = "default"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""Clone voice names: lower-case letters, digits, '-' and '_', at most 64 characters."""
MAX_REFERENCE_S = 30.0
"""Longest reference clip accepted for a clone voice (s): its codes become part of every prompt."""
MIN_REFERENCE_S = 1.0
VOICES_ENV = "S2S_VOICES_DIR"


def default_voices_dir() -> Path:
    """``$S2S_VOICES_DIR``, else ``$XDG_DATA_HOME/s2s-edge/voices`` (``~/.local/share/s2s-edge/voices``)."""
    if os.environ.get(VOICES_ENV):
        return Path(os.environ[VOICES_ENV]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "s2s-edge" / "voices"


def check_name(name: str) -> str:
    """``name`` lower-cased if it is a valid clone voice name; ValueError saying what is allowed otherwise."""
    lowered = name.strip().lower()
    if not NAME_PATTERN.match(lowered):
        raise ValueError(f"voice name {name[:80]!r} is not allowed: use 1-64 letters, digits, '-' or '_', starting "
                         "with a letter or digit")
    return lowered


@dataclass(frozen=True)
class SavedVoice:
    name: str
    created_at: int
    """Unix time (s)."""
    transcript: str
    language: str
    checkpoint: str
    """Folder name of the checkpoint that made it."""


class VoiceStore:
    """Clone voices on disk (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, object] = {}
        self._lock = threading.Lock()

    def _paths(self, name: str) -> tuple[Path, Path]:
        name = check_name(name)
        return self.folder / f"{name}.pt", self.folder / f"{name}.json"

    def list(self) -> list[SavedVoice]:
        voices = []
        for meta_path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            name = meta_path.stem
            if not NAME_PATTERN.match(name) or not (self.folder / f"{name}.pt").is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                voices.append(SavedVoice(name, int(meta["created_at"]), str(meta.get("transcript", "")),
                                         str(meta.get("language", "")), str(meta.get("checkpoint", ""))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("voice store: skipping %s: %s", meta_path, exc)
        return voices

    def get(self, name: str) -> SavedVoice | None:
        name = check_name(name)
        return next((voice for voice in self.list() if voice.name == name), None)

    def save(self, name: str, engine: VoiceEngine, clone: object, transcript: str, language: str,
             checkpoint: str) -> SavedVoice:
        """Write the clone voice ``name`` (replacing one of that name), whole or not at all."""
        prompt_path, meta_path = self._paths(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        voice = SavedVoice(check_name(name), int(time.time()), transcript, language, checkpoint)
        meta = {"created_at": voice.created_at, "transcript": transcript, "language": language,
                "checkpoint": checkpoint}
        staged = [staging_path(prompt_path), staging_path(meta_path)]
        try:
            engine.save_clone(clone, staged[0])
            staged[1].write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
            with self._lock:
                commit(staged[0], prompt_path)
                commit(staged[1], meta_path)
                self._cache[voice.name] = clone
        finally:
            for path in staged:
                discard(path)
        return voice

    def load(self, name: str, engine: VoiceEngine) -> object:
        """The clone prompt of ``name`` (cached); KeyError if there is none."""
        prompt_path, meta_path = self._paths(name)
        key = check_name(name)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        if not (prompt_path.is_file() and meta_path.is_file()):
            raise KeyError(key)
        clone = engine.load_clone(prompt_path)
        with self._lock:
            self._cache[key] = clone
        return clone

    def delete(self, name: str) -> bool:
        prompt_path, meta_path = self._paths(name)
        with self._lock:
            self._cache.pop(check_name(name), None)
            found = meta_path.is_file()
            meta_path.unlink(missing_ok=True)  # the listing key first
            prompt_path.unlink(missing_ok=True)
        return found


class VoiceCatalog:
    """Resolves request voices for one engine (see the module docstring)."""

    def __init__(self, engine: TTSEngine, store: VoiceStore, voice_map: dict[str, str]) -> None:
        self.engine = engine
        self.store = store
        self.voice_map = voice_map
        self.multi = isinstance(engine, VoiceEngine)

    @property
    def can_clone(self) -> bool:
        return self.multi and self.engine.can_clone

    def speakers(self) -> list[str]:
        return self.engine.speakers() if self.multi else []

    def languages(self) -> list[str]:
        return self.engine.languages() if self.multi else []

    def names(self) -> list[str]:
        """Every name ``resolve`` takes besides the OpenAI ones."""
        saved = [voice.name for voice in self.store.list()] if self.can_clone else []
        return [DEFAULT_VOICE, *self.speakers(), *saved]

    def reserved(self, name: str) -> bool:
        """Whether ``name`` is taken by something other than a clone voice."""
        name = name.strip().lower()
        return name in (DEFAULT_VOICE, self.engine.name, *self.speakers(), *OPENAI_VOICES, *self.voice_map)

    def resolve(self, name: str, instructions: str = "", language: str = "") -> VoiceRequest | None:
        """The ``VoiceRequest`` for a request (None = the configured voice, nothing changed); ValueError with the
        voices to choose from when ``name`` is none of them."""
        key = name.strip().lower()
        target = self.voice_map.get(key, key)
        if target in (DEFAULT_VOICE, self.engine.name) or (target in OPENAI_VOICES and key == target):
            request = VoiceRequest()
        elif target in self.speakers():
            request = VoiceRequest(speaker=target)
        elif self.can_clone and NAME_PATTERN.match(target) and self.store.get(target) is not None:
            request = VoiceRequest(clone=self.store.load(target, self.engine))
        else:
            raise ValueError(f"voice {name[:80]!r} is not available; use one of: {', '.join(self.names())} "
                             f"(or an OpenAI voice name: {', '.join(OPENAI_VOICES[:4])}, ...)")
        if not self.multi:
            return None
        request = VoiceRequest(request.speaker, instructions, language, request.clone)
        return None if request == VoiceRequest() else request

    def listing(self) -> list[dict]:
        """GET /v1/audio/voices rows: the configured voice, the speakers, the saved voices."""
        rows = [{"id": DEFAULT_VOICE, "object": "audio.voice", "name": DEFAULT_VOICE, "type": "configured",
                 "created_at": 0}]
        rows += [{"id": s, "object": "audio.voice", "name": s, "type": "speaker", "created_at": 0}
                 for s in self.speakers()]
        if self.can_clone:
            rows += [{"id": v.name, "object": "audio.voice", "name": v.name, "type": "audio_sample",
                      "created_at": v.created_at, "transcript": v.transcript, "language": v.language,
                      "checkpoint": v.checkpoint} for v in self.store.list()]
        return rows
