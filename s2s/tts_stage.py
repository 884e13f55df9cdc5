"""The TTS stage: TextChunk -> AudioChunk, streamed as the engine produces audio, at the engine's own rate.

The stage is the same for every backend: ``setup()`` makes the configured engine (``s2s.tts_engine.make_engine``)
and warms it up; each text chunk is synthesized (long text piece by piece, see ``s2s.text_split``) and every audio
block is forwarded as soon as it comes, marking ``tts_first_audio``, with the text it speaks (the sink maps what it
played back to words when the user interrupts). The engine's ``cancel`` is the turn's (``Turns.cancel_event``): it
is set as soon as the turn fails, expires or is interrupted; between blocks the stage also checks the stop event
and whether the turn is still open, so a closed turn stops speaking. The sink resamples if it must.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from s2s.handler import Handler
from s2s.messages import AudioChunk, TextChunk
from s2s.text_split import split_text
from s2s.tts_engine import TTSEngine, make_engine

log = logging.getLogger(__name__)


class TTSHandler(Handler):
    """Speaks the LLM's text chunks with ``self.engine`` (made by ``setup()`` unless a test injected one)."""

    name = "tts"
    engine: TTSEngine | None = None

    def setup(self) -> None:
        if self.engine is None:
            self.engine = make_engine(self.cfg)
        self.engine.warmup()
        log.info("tts: %s engine ready (%d Hz)", self.engine.name, self.engine.sample_rate)

    def process(self, item: object) -> Iterator[object]:
        if not isinstance(item, TextChunk):
            raise TypeError(f"the TTS stage takes TextChunk items, not {type(item).__name__}")
        turn_id = item.turn_id
        pieces = split_text(item.text, self.cfg.max_text_chars)
        if not pieces:
            log.debug("tts: turn %d chunk %d has no text to speak", turn_id, item.index)
            return
        if len(pieces) > 1:
            log.info("tts: turn %d: %d characters split into %d pieces", turn_id, len(item.text), len(pieces))
        assert self.engine is not None, "TTSHandler.setup() was not called"
        cancel = self.turns.cancel_event(turn_id)
        for piece in pieces:
            audio_stream = self.engine.synthesize(piece, cancel=cancel)
            try:
                for audio in audio_stream:
                    if self.stop_event.is_set() or not self.turns.is_open(turn_id):
                        log.debug("tts: turn %d stopped or closed; not speaking the rest", turn_id)
                        return
                    if audio.size:
                        self.turns.mark(turn_id, "tts_first_audio")  # only the first mark of a turn counts
                        yield AudioChunk(turn_id=turn_id, samples=audio, sample_rate=self.engine.sample_rate,
                                         text=item.text, text_index=item.index)
            finally:
                close = getattr(audio_stream, "close", None)  # a generator: end the engine's request at once
                if close is not None:
                    close()
