"""The TTS stage: TextChunk -> AudioChunk, streamed as the engine produces audio.

``make_engine`` picks the backend named by ``tts.backend`` (``auto`` = the fast ``qwen3`` engine when a Qwen3-TTS
checkpoint is found, else ``piper``). The handler synthesizes each text chunk (long text piece by piece, see
``s2s.text_split``), resamples the engine's audio to ``[audio_out].sample_rate`` with one streaming resampler
per turn (so chunk edges do not click), marks ``tts_first_audio``, and forwards TurnEnd / TurnFailed in order.
Between chunks it checks the stop event and whether the turn is still open, so a failed turn stops speaking.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

from s2s.audio import StreamResampler
from s2s.config import AudioOutConfig, TTSConfig
from s2s.handler import Handler
from s2s.messages import AudioChunk, TextChunk, TurnEnd, TurnFailed
from s2s.models import qwen3_checkpoint
from s2s.text_split import split_text
from s2s.tts_engine import TTSEngine
from s2s.turns import Turns

log = logging.getLogger(__name__)


def make_engine(cfg: TTSConfig) -> TTSEngine:
    """The engine ``tts.backend`` asks for (loaded, not yet warmed up).

    Raises FileNotFoundError when ``tts.model`` / ``tts.piper_voice`` name a missing path (or a Qwen3 backend has
    no checkpoint) and ValueError for a speaker, language or voice setting the checkpoint does not have.
    """
    if cfg.backend == "piper":
        return _piper(cfg)
    checkpoint = qwen3_checkpoint(cfg.model)
    if checkpoint is None:
        if cfg.backend == "auto":
            log.info("tts.backend = auto: no Qwen3-TTS checkpoint, speaking with Piper")
            return _piper(cfg)
        raise FileNotFoundError(
            f"tts.backend = {cfg.backend!r} needs a Qwen3-TTS checkpoint and none was found; run ./setup.sh with a "
            f"network connection to download it, set tts.model to a checkpoint directory, or use tts.backend = piper"
        )
    if cfg.backend == "qwen3-reference":
        from handlers.tts_qwen3_reference import ReferenceQwen3Engine

        return ReferenceQwen3Engine(cfg, checkpoint)
    from handlers.tts_qwen3 import Qwen3Engine

    return Qwen3Engine(cfg, checkpoint)


def _piper(cfg: TTSConfig) -> TTSEngine:
    from handlers.tts_piper import PiperEngine

    return PiperEngine.from_config(cfg)


class TTSHandler(Handler):
    """Speaks the LLM's text chunks. ``setup()`` loads and warms up the engine (``self.engine``)."""

    name = "tts"

    def __init__(
        self,
        tts_cfg: TTSConfig,
        audio_out_cfg: AudioOutConfig,
        turns: Turns,
        in_queue: queue.Queue | None,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(in_queue, out_queue, stop_event, poll_s)
        self.cfg = tts_cfg
        self.out_rate = audio_out_cfg.sample_rate
        self.turns = turns
        self.engine: TTSEngine | None = None
        self._turn: int | None = None
        """The turn whose audio the resampler holds (None before the first chunk and after a turn ends)."""
        self._resampler: StreamResampler | None = None

    def setup(self) -> None:
        self.engine = make_engine(self.cfg)
        self.engine.warmup()
        log.info("tts: %s engine ready (%d Hz -> %d Hz)", self.engine.name, self.engine.sample_rate, self.out_rate)

    def process(self, item: object) -> Iterator[object]:
        if isinstance(item, TurnEnd):
            yield from self._end_turn(item.turn_id, flush=True)
            yield item
        elif isinstance(item, TurnFailed):
            yield from self._end_turn(item.turn_id, flush=False)
            yield item
        elif isinstance(item, TextChunk):
            yield from self._speak(item)
        else:
            log.warning("tts: ignoring an unexpected %s", type(item).__name__)

    def on_error(self, item: object, exc: BaseException) -> Iterator[object]:
        self._turn = self._resampler = None  # the failed turn's held-back audio is not spoken
        yield from super().on_error(item, exc)

    def _speak(self, chunk: TextChunk) -> Iterator[AudioChunk]:
        turn_id = chunk.turn_id
        if not self.turns.is_open(turn_id):
            log.debug("tts: dropping text of closed turn %d", turn_id)
            return
        pieces = split_text(chunk.text, self.cfg.max_text_chars)
        if not pieces:
            log.debug("tts: turn %d chunk %d has no text to speak", turn_id, chunk.index)
            return
        if len(pieces) > 1:
            log.info("tts: turn %d: %d characters split into %d pieces", turn_id, len(chunk.text), len(pieces))
        assert self.engine is not None, "TTSHandler.setup() was not called"
        resample = self._resampler_for(turn_id)
        for piece in pieces:
            audio_stream = self.engine.synthesize(piece, cancel=self.stop_event)
            try:
                for audio in audio_stream:
                    if self.stop_event.is_set() or not self.turns.is_open(turn_id):
                        log.debug("tts: turn %d stopped or closed; not speaking the rest", turn_id)
                        return
                    samples = resample(audio)  # [n * out_rate / engine rate] float32
                    if samples.size:
                        self.turns.mark(turn_id, "tts_first_audio")  # only the first mark of a turn counts
                        yield AudioChunk(turn_id=turn_id, samples=samples, sample_rate=self.out_rate)
            finally:
                close = getattr(audio_stream, "close", None)  # a generator: end the engine's request at once
                if close is not None:
                    close()

    def _resampler_for(self, turn_id: int) -> StreamResampler:
        if self._turn != turn_id or self._resampler is None:
            if self._turn is not None:
                log.debug("tts: turn %d began before turn %d ended; its held-back audio is dropped", turn_id,
                          self._turn)
            self._turn = turn_id
            self._resampler = StreamResampler(self.engine.sample_rate, self.out_rate)
        return self._resampler

    def _end_turn(self, turn_id: int, flush: bool) -> Iterator[AudioChunk]:
        """The audio the resampler still holds for ``turn_id`` (if ``flush`` and the turn is open); then forget it."""
        if self._turn != turn_id or self._resampler is None:
            return
        resampler, self._turn, self._resampler = self._resampler, None, None
        if flush and self.turns.is_open(turn_id):
            tail = resampler.flush()
            if tail.size:
                yield AudioChunk(turn_id=turn_id, samples=tail, sample_rate=self.out_rate)
