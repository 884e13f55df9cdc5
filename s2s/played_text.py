"""What the user heard of an interrupted reply: the played audio position mapped back to the words.

The sink tells a ``PlayedText`` (one per turn) how much audio of each text chunk it received (``received``) and how
much of the turn's audio it handed to the device (``played``); ``heard()`` is the reply up to that position: every
chunk whose audio played in full, and of the chunk cut in the middle its words up to the played fraction. A chunk's
length is the audio received for it once a later chunk (or the end of the turn) shows it is complete; while the TTS
may still be speaking it, its length is at least what came and at least what its words take at ``WORDS_PER_S``.
"""

from __future__ import annotations

from dataclasses import dataclass

WORDS_PER_S = 2.5
"""150 words per minute: how long an unfinished chunk's words are taken to last."""


@dataclass
class _Chunk:
    index: int
    text: str
    samples: int


def words_up_to(text: str, fraction: float) -> str:
    """The words of ``text`` that fit in ``fraction`` (0-1) of it, counted in words (a word cut is not kept)."""
    words = text.split()
    return " ".join(words[:int(len(words) * min(max(fraction, 0.0), 1.0) + 1e-9)])


class PlayedText:
    """Counts received and played samples (at one rate) of one turn's reply, in order."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.played_samples = 0
        self._chunks: list[_Chunk] = []

    def received(self, text_index: int, text: str, samples: int) -> None:
        """``samples`` of audio speaking text chunk ``text_index`` arrived (after the ones received before)."""
        if not self._chunks or self._chunks[-1].index != text_index:
            self._chunks.append(_Chunk(text_index, text, 0))
        self._chunks[-1].samples += samples

    def played(self, samples: int) -> None:
        """``samples`` more of the reply were handed to the device."""
        self.played_samples += samples

    def heard(self, complete: bool = False) -> str:
        """The words played so far; ``complete``: the TTS has sent everything (the last chunk's length is known)."""
        heard, start = [], 0
        for i, chunk in enumerate(self._chunks):
            length = chunk.samples
            if i == len(self._chunks) - 1 and not complete:
                length = max(length, round(len(chunk.text.split()) / WORDS_PER_S * self.rate))
            if self.played_samples >= start + length:
                heard.append(chunk.text)
            else:
                heard.append(words_up_to(chunk.text, (self.played_samples - start) / max(length, 1)))
                break
            start += chunk.samples
        return " ".join(part for part in heard if part)
