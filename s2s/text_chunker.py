"""Cut streamed LLM text into speakable chunks, and clean each chunk for speech.

``TextChunker`` is fed text deltas as tokens arrive and returns every chunk that is complete:

* a sentence end (``.`` ``!`` ``?``, possibly followed by closing quotes/brackets) followed by whitespace,
  except after abbreviations ("Dr.", "e.g."), initials ("J.") and inside numbers ("3.5");
* a clause end (``,`` ``;`` ``:``) followed by whitespace, once the chunk is at least ``min_chunk_chars`` long;
* CJK full-width sentence/clause marks, which need no following space;
* a newline (markdown lists and headings have no punctuation);
* for the first chunk of a reply only: the end of its ``first_chunk_words``-th word, if no cut above came first, so
  that speech starts before a long first clause has been generated (0 = off).

A cut needs the character after the mark, so "3." waits for the next delta to know it is not "3.5". No cut is
made inside a markdown link ``[text](url)`` or inline code. ``clean_for_speech`` then removes markdown (emphasis,
headings, bullets, backticks, code fences, links -> their text) and unspeakable symbols (emoji, pictographs).
"""

from __future__ import annotations

import re
import unicodedata

SENTENCE_END = ".!?…"
CLAUSE_END = ",;:"
CJK_SENTENCE_END = "。！？"
CJK_CLAUSE_END = "，；：、"
CLOSERS = "\"')]}»”’"

ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "no", "approx", "fig", "dept",
    "inc", "ltd", "co", "e.g", "i.e", "a.m", "p.m", "u.s", "u.k",
})
"""Words (lower case, without the final dot) after which a dot does not end a sentence."""

_KEEP_SYMBOLS = frozenset("°")
"""Symbols of category So that a TTS can read."""

_FENCE_LINE = re.compile(r"^\s*(```|~~~).*$", re.MULTILINE)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://([^/\s]+)\S*")
_HEADING = re.compile(r"^\s*#{1,6}\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.MULTILINE)
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_RULE = re.compile(r"^\s*([-*_])\s*(?:\1\s*){2,}$", re.MULTILINE)
_EMPHASIS = re.compile(r"\*+|~~|(?<!\w)_+|_+(?!\w)|`+")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:.!?])")


def _speakable(char: str) -> bool:
    if char in _KEEP_SYMBOLS:
        return True
    category = unicodedata.category(char)
    # So: emoji and pictographs; Sk: modifiers (skin tones); Cf: joiners and variation selectors;
    # Co/Cs/Cn: private, surrogate, unassigned. Mn is kept (accents) except the emoji variation selectors.
    if category in ("So", "Sk", "Cf", "Co", "Cs", "Cn"):
        return False
    return not ("\ufe00" <= char <= "\ufe0f")


def clean_for_speech(text: str) -> str:
    """Markdown and unspeakable symbols removed, whitespace collapsed; "" if nothing speakable is left."""
    text = _FENCE_LINE.sub("", text)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _URL.sub(r"\1", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = text.replace("|", " ")
    text = "".join(c for c in text if _speakable(c))
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip()
    return text if any(c.isalnum() for c in text) else ""


def _is_abbreviation(text: str, dot: int) -> bool:
    """True if the "." at ``text[dot]`` ends an abbreviation, an initial or a list number rather than a sentence."""
    start = dot
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "([\"'":
        start -= 1
    word = text[start:dot]
    if not word:
        return False
    if word.lower() in ABBREVIATIONS:
        return True
    if word.isdigit() and not text[:start].rpartition("\n")[2].strip():
        return True  # "1." opening a numbered list item
    return len(word) == 1 and word.isupper()


class TextChunker:
    """Stateful: ``__call__(delta) -> chunks`` as text streams in, ``flush() -> chunks`` at the end of the reply."""

    def __init__(self, min_chunk_chars: int = 12, first_chunk_words: int = 0) -> None:
        self.min_chunk_chars = min_chunk_chars
        self.first_chunk_words = first_chunk_words
        self.reset()

    def reset(self) -> None:
        self._buffer = ""
        self._first = True
        """No chunk of this reply has been returned yet."""

    def __call__(self, delta: str) -> list[str]:
        self._buffer += delta
        chunks = []
        while (cut := self._next_cut()) is not None:
            chunk = clean_for_speech(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            if chunk:
                chunks.append(chunk)
                self._first = False
        return chunks

    def flush(self) -> list[str]:
        """The rest of the text as a last chunk (if anything speakable is left); the chunker is reset."""
        chunk = clean_for_speech(self._buffer)
        self.reset()
        return [chunk] if chunk else []

    def _next_cut(self) -> int | None:
        """Index just after the first complete chunk in the buffer, or None."""
        text = self._buffer
        in_link_text = in_link_url = in_code = False
        words_left = self.first_chunk_words if self._first else 0
        for i, char in enumerate(text):
            if char == "\n":
                in_link_text = in_link_url = in_code = False  # markdown spans do not cross lines
                if text[:i].strip():
                    return i + 1
                continue
            if char == "`":
                in_code = not in_code
            elif char == "[" and not in_code:
                in_link_text = True
            elif char == "]" and in_link_text:
                in_link_text = False
                in_link_url = text[i + 1:i + 2] == "("
            elif char == ")" and in_link_url:
                in_link_url = False
            if in_link_text or in_link_url or in_code:
                continue
            if words_left and char.isspace() and i and not text[i - 1].isspace():
                words_left -= 1  # a word ended here
                if not words_left:
                    return i
            if char in CJK_SENTENCE_END:
                return i + 1
            if char in CJK_CLAUSE_END and self._long_enough(text[:i + 1]):
                return i + 1
            if char in SENTENCE_END or char in CLAUSE_END:
                end = i + 1
                while end < len(text) and (text[end] in CLOSERS or text[end] in SENTENCE_END):
                    end += 1
                if end >= len(text) or not text[end].isspace():
                    continue  # needs the next character: "3.5", "1,000", "e.g." or the end of the stream
                if char in CLAUSE_END and not self._long_enough(text[:end]):
                    continue
                if char == "." and _is_abbreviation(text, i):
                    continue
                return end
        return None

    def _long_enough(self, text: str) -> bool:
        return len(clean_for_speech(text)) >= self.min_chunk_chars
