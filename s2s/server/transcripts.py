"""Transcription results and their OpenAI response formats: json, text, verbose_json, srt, vtt.

``Transcription`` is what the STT worker returns (segments with times, in seconds from the start of the audio);
``render(transcription, fmt)`` gives the body and its media type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TIMESTAMP_GRANULARITIES = ("segment", "word")
LANGUAGE_NAMES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
                  "pt": "portuguese", "nl": "dutch", "ru": "russian", "zh": "chinese", "ja": "japanese",
                  "ko": "korean", "pl": "polish", "tr": "turkish", "uk": "ukrainian", "sv": "swedish"}
"""verbose_json names the language in words, as OpenAI does; other codes are given as they are."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    duration: float
    """Seconds of audio."""
    segments: tuple[Segment, ...] = field(default_factory=tuple)


def _clock(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(transcription: Transcription) -> str:
    blocks = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
              for i, s in enumerate(transcription.segments, start=1)]
    return "\n".join(blocks)


def vtt(transcription: Transcription) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in transcription.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def verbose_json(transcription: Transcription, words: bool) -> dict:
    body = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(transcription.language, transcription.language),
        "duration": round(transcription.duration, 3),
        "text": transcription.text,
        "segments": [{"id": s.id, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3),
                      "text": s.text, "tokens": list(s.tokens), "temperature": s.temperature,
                      "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                      "no_speech_prob": s.no_speech_prob} for s in transcription.segments],
    }
    if words:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
                         for s in transcription.segments for w in s.words]
    return body


def render(transcription: Transcription, fmt: str, words: bool = False) -> tuple[str | dict, str]:
    """(body, media type): a dict for the JSON formats, text for the others."""
    if fmt == "json":
        return {"text": transcription.text}, "application/json"
    if fmt == "verbose_json":
        return verbose_json(transcription, words), "application/json"
    if fmt == "srt":
        return srt(transcription), "text/plain; charset=utf-8"
    if fmt == "vtt":
        return vtt(transcription), "text/vtt; charset=utf-8"
    if fmt == "text":
        return transcription.text + "\n", "text/plain; charset=utf-8"
    raise ValueError(f"response_format {fmt!r} is not one of: {', '.join(RESPONSE_FORMATS)}")
