"""Typed messages, one per queue edge, plus control messages.

Data flows  source -> VAD -> STT -> LLM -> TTS -> sink:

    AudioFrame     (source -> VAD)   microphone / file audio
    SpeechSegment  (VAD -> STT)      one utterance
    SpeculativeSegment (VAD -> STT)  the utterance so far, at the first pause (early transcription; no turn)
    Transcript     (STT -> LLM)      what the user said
    TextChunk      (LLM -> TTS)      a speakable piece of the reply
    AudioChunk     (TTS -> sink)     synthesized audio

Control messages travel the same queues, in order with the data:

    TurnEnd        the turn is complete at this stage (every stage forwards it once)
    TurnFailed     a stage failed during the turn; later stages drop the turn's data and end it
    EndOfStream    the input is exhausted; each handler forwards it and stops

All times are ``time.monotonic()`` seconds unless a field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioFrame:
    """A block of input audio."""

    samples: np.ndarray
    """float32 mono in [-1, 1], at ``sample_rate``."""
    sample_rate: int
    """Hz."""
    t_captured: float
    """Monotonic time at which the last sample of the block was captured."""
    stream_time: float = 0.0
    """Seconds of input audio before this frame (position in the stream / file)."""
    far_end: np.ndarray | None = None
    """Full duplex: what the speaker played while ``samples`` were captured (float32, same length and rate; the
    echo canceller's reference, already removed from ``samples``); None without an echo canceller."""


@dataclass(frozen=True)
class SpeechSegment:
    """One utterance found by the VAD."""

    audio: np.ndarray
    """float32 mono, 16 kHz: pre-roll, speech, and the padding after the last voiced frame."""
    start_s: float
    """Stream time (s) of the first sample of ``audio``."""
    end_s: float
    """Stream time (s) of the end of speech (last voiced frame)."""
    t_speech_end: float
    """Monotonic time at which the last voiced frame was captured."""
    turn_id: int = 0
    """The turn the VAD opened for it (0 while the detector has not handed it over yet)."""


@dataclass(frozen=True)
class SpeculativeSegment:
    """The utterance so far, sent by the VAD once its trailing silence reaches ``vad.early_stt_ms`` (before the end
    of speech): the STT may transcribe it ahead. It belongs to no turn; the SpeechSegment that ends the utterance
    says whether the guess holds (same ``start_s`` and ``end_s``: no speech since)."""

    audio: np.ndarray
    """float32 mono, 16 kHz: pre-roll, speech, and the silence after the last voiced frame so far."""
    start_s: float
    """Stream time (s) of the first sample of ``audio``."""
    end_s: float
    """Stream time (s) of the last voiced frame's end."""


@dataclass(frozen=True)
class Transcript:
    """What the user said in one turn."""

    turn_id: int
    text: str
    language: str | None = None
    """ISO code detected or fixed by the STT (e.g. "en")."""


@dataclass(frozen=True)
class TextChunk:
    """A speakable piece of the assistant's reply (a clause or sentence, markdown removed)."""

    turn_id: int
    text: str
    language: str | None = None
    index: int = 0
    """0 for the first chunk of the turn, then 1, 2, ..."""


@dataclass(frozen=True)
class AudioChunk:
    """Synthesized reply audio."""

    turn_id: int
    samples: np.ndarray
    """float32 mono in [-1, 1] at ``sample_rate``."""
    sample_rate: int
    """Hz: the engine's own rate (the sink resamples if the speaker needs another)."""
    text: str = ""
    """The text chunk this audio speaks (part of): the sink maps what it played back to words."""
    text_index: int = 0
    """``TextChunk.index`` of that text."""


@dataclass(frozen=True)
class TurnEnd:
    """Control: the turn is complete at the stage that emits it."""

    turn_id: int


@dataclass(frozen=True)
class TurnFailed:
    """Control: a stage failed during a turn. Later stages drop the turn's data and forward this."""

    turn_id: int
    stage: str
    error: str


@dataclass(frozen=True)
class EndOfStream:
    """Control: no more input. Each handler forwards it and then stops."""

    reason: str = "input exhausted"


CONTROL_TYPES = (TurnEnd, TurnFailed, EndOfStream)


def turn_of(item: object) -> int | None:
    """The turn id an item belongs to, or None for items outside a turn (audio frames, end of stream)."""
    return getattr(item, "turn_id", None)
