"""Splitting long text into pieces one TTS request can take.

Text is cut after sentence ends (``. ! ?`` and their CJK forms, or a line break) and the sentences are packed
greedily into pieces of at most ``max_chars`` characters. A single sentence longer than that is cut at its last
space (else comma) before the limit, and only where there is none at all, mid-word at the limit.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])\s*|\s*\n\s*")
"""Where one sentence ends and the next begins (the whitespace between them is consumed)."""


def split_sentences(text: str) -> list[str]:
    """The non-empty sentences of ``text``, stripped, in order."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def hard_split(sentence: str, max_chars: int) -> list[str]:
    """Cut one over-long sentence into pieces of at most ``max_chars``, preferring spaces, then commas."""
    pieces: list[str] = []
    rest = sentence.strip()
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]  # a space right after the limit is a clean cut too
        cut = window.rfind(" ")
        if cut <= 0:
            cut = window[:max_chars].rfind(",") + 1
        if cut <= 0:
            cut = max_chars
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` as pieces of at most ``max_chars`` characters; ``[]`` for blank text, ``[text]`` if it fits."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    text = text.strip()
    if not text:
        return []
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        for part in hard_split(sentence, max_chars):
            if current and len(current) + 1 + len(part) <= max_chars:
                current = f"{current} {part}"
                continue
            if current:
                pieces.append(current)
            current = part
    if current:
        pieces.append(current)
    return pieces
