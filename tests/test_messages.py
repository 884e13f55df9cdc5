"""s2s.messages: the typed messages are frozen, carry their turn, and control messages are told apart."""

import dataclasses

import numpy as np
import pytest

from s2s.messages import (
    CONTROL_TYPES,
    AudioChunk,
    AudioFrame,
    EndOfStream,
    SpeechSegment,
    TextChunk,
    Transcript,
    TurnEnd,
    TurnFailed,
    turn_of,
)


def test_turn_of_every_message():
    audio = np.zeros(4, dtype=np.float32)
    assert turn_of(AudioFrame(audio, 16000, 0.0)) is None
    assert turn_of(SpeechSegment(audio, 0.0, 0.1, 5.0, turn_id=3)) == 3
    assert turn_of(Transcript(4, "hi")) == 4
    assert turn_of(TextChunk(5, "Hello.")) == 5
    assert turn_of(AudioChunk(6, audio, 24000)) == 6
    assert turn_of(TurnEnd(7)) == 7
    assert turn_of(TurnFailed(8, "tts", "boom")) == 8
    assert turn_of(EndOfStream()) is None
    assert turn_of("not a message") is None


def test_messages_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Transcript(1, "hi").text = "changed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        TurnEnd(1).turn_id = 2


def test_control_types_are_only_the_control_messages():
    assert set(CONTROL_TYPES) == {TurnEnd, TurnFailed, EndOfStream}
    data = [AudioFrame, SpeechSegment, Transcript, TextChunk, AudioChunk]
    assert not set(data) & set(CONTROL_TYPES)


def test_defaults():
    assert TextChunk(1, "a").index == 0
    assert Transcript(1, "a").language is None
    assert EndOfStream().reason == "input exhausted"
