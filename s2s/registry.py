"""Stage backends by name, found through Python entry points: the core never imports a backend by module name.

One entry-point group per stage kind. A package (ours included) declares its backends in its pyproject.toml:

    [project.entry-points."s2s_edge.tts"]
    tone = "my_package.tone:ToneEngine"

What the named object must be depends on the kind:

- ``s2s_edge.audio_in``, ``.vad``, ``.stt``, ``.llm``, ``.audio_out``: a ``s2s.handler.Handler`` subclass, built as
  ``cls(wiring, cfg_section)`` (sources and sinks also get ``path=`` or ``text=`` for the run mode);
- ``s2s_edge.tts``: a factory ``(TTSConfig) -> TTSEngine`` (see ``s2s.tts_engine``); the core's TTS stage drives it;
- ``s2s_edge.aec``: a factory ``(AECConfig) -> EchoCanceller`` (see ``s2s.aec``); the microphone runs it in full
  duplex.

The config selects one by name (``[stt] backend = "faster-whisper"``, ``[tts] backend = "piper"``, ...). An unknown
name is a configuration error that lists the installed backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

KINDS = ("audio_in", "vad", "stt", "llm", "tts", "audio_out", "aec")
FACTORY_KINDS = ("tts", "aec")
"""Kinds whose backends are factories; the others name ``Handler`` classes."""
GROUP_PREFIX = "s2s_edge."


class UnknownBackend(ValueError):
    """A config names a backend that no installed package provides."""


@dataclass(frozen=True)
class Backend:
    kind: str
    name: str
    target: str
    """``module:attribute`` as declared."""
    package: str
    """The distribution that declares it ("?" when unknown)."""


def group(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}; kinds: {', '.join(KINDS)}")
    return GROUP_PREFIX + kind


def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for entry in metadata.entry_points(group=group(kind)):
        found.setdefault(entry.name, entry)  # the first distribution on sys.path wins, as for imports
    return found


def names(kind: str) -> list[str]:
    """The installed backends of one kind, sorted."""
    return sorted(_entry_points(kind))


def entry(kind: str, name: str) -> metadata.EntryPoint:
    """The entry point of backend ``name``; UnknownBackend (a ValueError) lists the installed ones."""
    found = _entry_points(kind)
    if name not in found:
        installed = ", ".join(sorted(found)) or "none (is s2s-edge installed? run ./setup.sh)"
        raise UnknownBackend(f"[{kind}] backend = {name!r} is not installed; installed {kind} backends: {installed}")
    return found[name]


def load(kind: str, name: str) -> object:
    """The object backend ``name`` of ``kind`` declares (imported now)."""
    return entry(kind, name).load()


def backends() -> list[Backend]:
    """Every installed backend of every kind, with the package that provides it (for `s2s check`)."""
    rows = []
    for kind in KINDS:
        for name, ep in sorted(_entry_points(kind).items()):
            package = ep.dist.name if ep.dist is not None else "?"
            rows.append(Backend(kind, name, ep.value, package))
    return rows


def check_backends(config: object) -> None:
    """UnknownBackend for a [vad]/[stt]/[llm]/[tts] backend of ``config`` (an ``s2s.config.Config``) that no package
    provides (and [aec] in full duplex): checked for every section in every run mode, before anything loads."""
    for kind in ("vad", "stt", "llm", "tts", *(("aec",) if config.pipeline.duplex == "full" else ())):
        entry(kind, getattr(config, kind).backend)
