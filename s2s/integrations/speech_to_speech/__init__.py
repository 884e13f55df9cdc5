"""Our TTS as a TTS backend of huggingface/speech-to-speech 1.1.0, named ``s2s-edge``.

speech-to-speech picks its stages from registries (``speech_to_speech.backend_registry.TTS_BACKENDS``: name ->
``BackendSpec``) that it fills itself, with no plugin hook; ``register()`` adds ours to them before it parses its
arguments. Then ``--tts s2s-edge`` selects it, the ``--s2s_edge_*`` options (every [tts] key, see ``arguments``)
configure it, and its pipeline builds ``handler.S2SEdgeTTSHandler`` exactly like its own TTS stages, from the
pipeline's ``HandlerContext`` (queues, stop event, cancel scope, speculative turns).

``python -m s2s.integrations.speech_to_speech serve --tts s2s-edge ...`` is their command line with ours registered.
Nothing here imports speech-to-speech until ``register()`` runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from importlib import metadata
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

BACKEND = "s2s-edge"
"""Our name among speech-to-speech's TTS backends (``--tts s2s-edge``)."""
REQUIREMENT = "speech-to-speech==1.1.0"
"""The release this integration is written and tested against."""
_MODULE_ARGUMENTS = "speech_to_speech.arguments_classes.module_arguments"


def register() -> None:
    """Add ``s2s-edge`` to speech-to-speech's TTS backends (again = no change). Call it before speech-to-speech
    parses its arguments; ImportError with the pip line when speech-to-speech is missing."""
    backend_registry = _import_registry()
    from s2s.integrations.speech_to_speech.arguments import S2SEdgeTTSArguments, settings

    backends = backend_registry.TTS_BACKENDS
    if BACKEND not in backends:
        backends[BACKEND] = backend_registry.BackendSpec(BACKEND, "tts", S2SEdgeTTSArguments, create_handler,
                                                         normalize_config=settings)
    _offer_in_tts_choices(tuple(backends))


def create_handler(context: Any, config: Mapping[str, Any]) -> Any:
    """speech-to-speech's handler factory signature: (its ``HandlerContext``, our normalized settings)."""
    from s2s.integrations.speech_to_speech.handler import S2SEdgeTTSHandler

    return S2SEdgeTTSHandler(context.stop_event, queue_in=context.queue_in, queue_out=context.queue_out,
                             setup_kwargs={**config, "cancel_scope": context.cancel_scope,
                                           "speculative_turns": context.speculative_turns})


def _import_registry() -> Any:
    try:
        from speech_to_speech import backend_registry
    except ImportError as exc:
        if exc.name == "speech_to_speech":
            raise ImportError(f"speech-to-speech is not installed; install it with: pip install {REQUIREMENT}") from exc
        raise ImportError(f"speech-to-speech is installed but cannot be imported ({exc}); reinstall it with its "
                          f"dependencies: pip install {REQUIREMENT}") from exc
    try:
        installed = metadata.version("speech-to-speech")
    except metadata.PackageNotFoundError:  # a source checkout on sys.path: no version to compare
        return backend_registry
    if f"speech-to-speech=={installed}" != REQUIREMENT:
        log.warning("speech-to-speech %s is installed; the s2s-edge backend is tested with %s", installed, REQUIREMENT)
    return backend_registry


def _offer_in_tts_choices(names: tuple[str, ...]) -> None:
    """``ModuleArguments.tts`` copies the registry's names into its ``--tts`` choices when its module is imported;
    if that happened before ``register()``, give the field the current names."""
    module = sys.modules.get(_MODULE_ARGUMENTS)
    if module is None:
        return
    tts = module.ModuleArguments.__dataclass_fields__["tts"]
    if tuple(tts.metadata.get("choices", ())) != names:
        tts.metadata = MappingProxyType({**tts.metadata, "choices": names})
