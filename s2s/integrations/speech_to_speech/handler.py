"""``S2SEdgeTTSHandler``: our TTS engine as a TTS stage of speech-to-speech 1.1.0 (a subclass of its ``BaseHandler``).

Its protocol, as the handler maps it:

- ``TTSInput`` (one text part of a response) -> int16 blocks at 16 kHz (``PipelineBlocks``), yielded as the engine
  streams; their base wraps each in an ``AudioOutput`` tagged with the response's cancel generation. Long text is
  split as our own TTS stage splits it (``tts.max_text_chars``). The response's or session's Realtime voice picks a
  speaker and ``tts_language_code`` the language, where the engine has them; otherwise the configured voice speaks.
- ``EndOfResponse`` -> ``AUDIO_RESPONSE_DONE`` (marked ``cleanup_only`` when the speculative turn was dropped).
- Interruption: their realtime router calls ``CancelScope.cancel()``, which makes the generation an input carries
  stale. Between blocks the handler checks it (and ``stop_event``); then it sets the engine's ``cancel`` event,
  closes the engine's stream and returns to its queue. Inputs that are already stale never reach ``process``: the
  base drops them.
- Speculative turns: ``SpeculativeTurnTracker.wait_for_gate`` before speaking, so a turn the user reopened is not
  spoken.

The module imports speech-to-speech at the top: ``s2s.integrations.speech_to_speech`` imports it only when the
backend is built.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from speech_to_speech.baseHandler import BaseHandler
from speech_to_speech.pipeline.messages import AUDIO_RESPONSE_DONE, EndOfResponse, TTSInput

from s2s.integrations.speech_to_speech.arguments import BLOCKSIZE, tts_config
from s2s.integrations.speech_to_speech.audio_blocks import PIPELINE_RATE, PipelineBlocks, check_blocksize
from s2s.text_split import split_text
from s2s.tts_engine import TTSEngine, VoiceEngine, VoiceRequest, make_engine

log = logging.getLogger(__name__)


class S2SEdgeTTSHandler(BaseHandler):
    """Speaks speech-to-speech's TTS inputs with the engine our [tts] settings name (default: qwen3)."""

    engine: TTSEngine | None = None

    def setup(self, blocksize: int = BLOCKSIZE, cancel_scope: Any = None, speculative_turns: Any = None,
              **tts: Any) -> None:
        """``tts``: [tts] keys of ``s2s.config.TTSConfig``; ``cancel_scope`` and ``speculative_turns`` are the
        pipeline's (their ``HandlerContext``); ``BaseHandler`` reads ``self.cancel_scope`` to drop stale inputs."""
        check_blocksize(blocksize)
        self.cancel_scope = cancel_scope
        self.speculative_turns = speculative_turns
        self.cfg = tts_config(tts)
        self.engine = make_engine(self.cfg)
        self.engine.warmup()
        self.blocks = PipelineBlocks(self.engine.sample_rate, blocksize)
        log.info("s2s-edge TTS for speech-to-speech: %s engine ready (%d Hz, sent as %d-sample blocks at %d Hz)",
                 self.engine.name, self.engine.sample_rate, blocksize, PIPELINE_RATE)

    def process(self, item: Any) -> Iterator[Any]:
        if isinstance(item, EndOfResponse):
            if not self._turn_open(item, commit=False):
                if item.response_key is None:
                    return
                item.cleanup_only = True  # the base tags the done marker with it: the router only cleans up
            yield AUDIO_RESPONSE_DONE
            return
        if not isinstance(item, TTSInput):
            log.warning("s2s-edge TTS: ignoring a %s (it takes TTSInput and EndOfResponse)", type(item).__name__)
            return
        if not self._turn_open(item, commit=True):
            log.debug("s2s-edge TTS: dropping text of the superseded turn %s rev %s", item.turn_id, item.turn_revision)
            return
        generation = item.cancel_generation
        if generation is None and self.cancel_scope is not None:
            generation = self.cancel_scope.generation
        yield from self._speak(item, generation)

    def _turn_open(self, item: Any, commit: bool) -> bool:
        if self.speculative_turns is None:
            return True
        return self.speculative_turns.wait_for_gate(item.turn_id, item.turn_revision, commit=commit)

    def _interrupted(self, generation: int | None) -> bool:
        if self.stop_event.is_set():
            return True
        return generation is not None and self.cancel_scope is not None and self.cancel_scope.is_stale(generation)

    def _speak(self, item: TTSInput, generation: int | None) -> Iterator[np.ndarray]:
        """The blocks of ``item`` until they end or the response is interrupted."""
        cancel = threading.Event()
        blocks = self._blocks(item, cancel)
        start, sent = time.perf_counter(), 0
        try:
            for block in blocks:
                if self._interrupted(generation):
                    cancel.set()
                    log.info("s2s-edge TTS: interrupted after %.2f s of audio", sent * block.size / PIPELINE_RATE)
                    return
                if sent == 0:
                    log.info("s2s-edge TTS: first audio after %.0f ms", 1000 * (time.perf_counter() - start))
                sent += 1
                yield block
        finally:
            blocks.close()  # ends the engine's stream at once (its own finally below)

    def _blocks(self, item: TTSInput, cancel: threading.Event) -> Iterator[np.ndarray]:
        voice = self._voice(item)
        self.blocks.reset()
        for piece in split_text(item.text, self.cfg.max_text_chars):
            stream = self._synthesize(piece, voice, cancel)
            try:
                for chunk in stream:
                    yield from self.blocks(chunk)
            finally:
                close = getattr(stream, "close", None)  # a generator: end the engine's request at once
                if close is not None:
                    close()
        yield from self.blocks.flush()

    def _voice(self, item: TTSInput) -> VoiceRequest | None:
        """The speaker and language this input asks for, where the engine has them; None = the configured voice."""
        if not isinstance(self.engine, VoiceEngine):
            return None
        speaker = _requested_voice(item).strip().lower()
        if speaker and speaker not in self.engine.speakers():
            log.debug("s2s-edge TTS: voice %r is not a speaker of the engine; using the configured one", speaker)
            speaker = ""
        language = item.tts_language_code or ""
        return VoiceRequest(speaker=speaker, language=language) if speaker or language else None

    def _synthesize(self, text: str, voice: VoiceRequest | None, cancel: threading.Event) -> Iterator[np.ndarray]:
        assert self.engine is not None, "setup() loads the engine"
        if voice is None:
            return self.engine.synthesize(text, cancel)
        try:
            return self.engine.synthesize(text, cancel, voice)
        except ValueError as exc:  # e.g. a language the checkpoint does not speak: say it in the configured voice
            log.warning("s2s-edge TTS: speaking in the configured voice instead of %s: %s", voice, exc)
            return self.engine.synthesize(text, cancel)

    def cleanup(self) -> None:
        self.engine = None


def _requested_voice(item: TTSInput) -> str:
    """The Realtime ``audio.output.voice`` of the response, else of the session; "" when neither names one."""
    session = item.runtime_config.session if item.runtime_config is not None else None
    for holder in (item.response, session):
        output = getattr(getattr(holder, "audio", None), "output", None)
        voice = getattr(output, "voice", None)
        if voice:
            return str(voice)
    return ""
