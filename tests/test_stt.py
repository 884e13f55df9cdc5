"""STT: device choice, the noise filter, and faster-whisper (embedded tiny.en) on espeak-ng speech."""

import numpy as np
import pytest
from fixtures_models import speech_16k  # noqa: F401  (session fixture)
from stage_harness import run_stage, wiring

from handlers.stt import STTHandler, ctranslate2_device, is_noise
from s2s.config import STTConfig
from s2s.messages import EndOfStream, SpeechSegment, Transcript, TurnEnd, TurnFailed
from s2s.turns import Turns


@pytest.mark.parametrize("text", ["", "   ", "...", "[BLANK_AUDIO]", "(music playing)", "*coughs*", "♪ ♪",
                                  " [Music] ."])
def test_noise_only_transcripts(text):
    assert is_noise(text)


@pytest.mark.parametrize("text", ["Hi.", "What's the weather?", "3", "(um) Yes"])
def test_transcripts_with_words(text):
    assert not is_noise(text)


def test_device_auto_follows_ctranslate2(monkeypatch):
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    assert ctranslate2_device(STTConfig()) == ("cpu", "int8")
    assert ctranslate2_device(STTConfig(compute_type="float32")) == ("cpu", "float32")
    with pytest.raises(ValueError, match=r"stt\.device = 'cuda'.*CTranslate2"):
        ctranslate2_device(STTConfig(device="cuda"))
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    assert ctranslate2_device(STTConfig()) == ("cuda", "float16")


@pytest.mark.parametrize(("configured", "expected"), [(0, None), (3, 3)])
def test_cpu_threads_default_to_the_usable_cores_at_most_four(monkeypatch, configured, expected):
    import faster_whisper

    from s2s.devices import usable_cores

    made = {}

    class Recorder:
        def __init__(self, model, **options):
            made.update(options)

        def transcribe(self, audio, **options):
            return iter(()), type("Info", (), {"language": "en"})()

    monkeypatch.setattr(faster_whisper, "WhisperModel", Recorder)
    STTHandler(wiring(), STTConfig(device="cpu", cpu_threads=configured)).setup()
    assert made["cpu_threads"] == (expected or min(4, usable_cores())) and made["device"] == "cpu"


@pytest.fixture(scope="module")
def whisper():
    """faster-whisper tiny.en, loaded and warmed up once by a handler's ``setup``."""
    handler = STTHandler(wiring(), STTConfig(device="cpu"))
    handler.setup()
    return handler.model


@pytest.fixture
def stt(whisper) -> STTHandler:
    """A fresh handler (its own turns) with the loaded model injected."""
    handler = STTHandler(wiring(Turns()), STTConfig(device="cpu"))
    handler.model = whisper
    return handler


def segment(turns: Turns, audio: np.ndarray) -> SpeechSegment:
    turn_id = turns.new_id()
    turns.begin(turn_id)
    return SpeechSegment(turn_id=turn_id, audio=audio, start_s=0.0, end_s=audio.size / 16000, t_speech_end=0.0)


@pytest.mark.slow
def test_speech_gives_a_transcript_with_the_keywords(stt, speech_16k):  # noqa: F811
    turns = stt.turns
    item = segment(turns, speech_16k)
    (transcript,) = stt.process(item)
    assert isinstance(transcript, Transcript) and transcript.turn_id == item.turn_id
    words = transcript.text.lower()
    assert "weather" in words and "berlin" in words
    assert transcript.language == "en"
    turns.end(item.turn_id)
    assert turns.records[-1]["transcript_ready_ms"] >= 0


@pytest.mark.slow
def test_silence_ends_the_turn_without_a_transcript(stt):
    item = segment(stt.turns, np.zeros(16000 * 2, dtype=np.float32))
    assert list(stt.process(item)) == [TurnEnd(item.turn_id)]


def test_closed_turns_are_dropped_and_controls_forwarded(speech_16k):  # noqa: F811
    turns = Turns()
    handler = STTHandler(wiring(turns), STTConfig(device="cpu"))  # no model: a closed turn never reaches it
    item = segment(turns, speech_16k)
    turns.end(item.turn_id, error="a later stage failed")
    failed = TurnFailed(item.turn_id, "tts", "boom")
    assert run_stage(handler, [item, failed]) == [failed, EndOfStream()]
