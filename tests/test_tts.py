"""TTS stage on the CPU: text splitting, the Piper backend, make_engine's errors, and the handler thread.

The handler tests run the real ``Handler.run`` loop on queues (``stage_harness``): with the real Piper voice for
the engine's own rate and the marks, and with a scripted engine where the point is the handler's own policy (long
text, stop, closed turns). Resampling to the speaker's rate is the sink's job (tests/test_audio_out.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from stage_harness import drain, run_stage, start, wiring

from handlers.tts_qwen3 import choose_voice
from s2s import registry
from s2s.audio import rms
from s2s.config import TTSConfig
from s2s.messages import AudioChunk, EndOfStream, TextChunk, TurnEnd, TurnFailed
from s2s.text_split import split_text
from s2s.tts_engine import make_engine
from s2s.tts_stage import TTSHandler
from s2s.turns import Turns

LONG_TEXT = " ".join(
    f"Sentence number {i} talks about the weather, the trains and a small dog called Rex." for i in range(70)
)[:5000]


# ---- text splitting ------------------------------------------------------------------------------------------
def test_split_text_blank_and_short():
    assert split_text("  \n\t ", 100) == []
    assert split_text("  Hello there. How are you?  ", 100) == ["Hello there. How are you?"]


def test_split_text_packs_sentences_within_the_limit():
    pieces = split_text(LONG_TEXT, 300)
    assert len(LONG_TEXT) == 5000 and len(pieces) > 10
    assert all(0 < len(p) <= 300 for p in pieces)
    assert " ".join(pieces).split() == LONG_TEXT.split()
    assert all(p.endswith(".") for p in pieces[:-1])  # cuts fall between sentences


def test_split_text_hard_splits_an_overlong_sentence():
    sentence = "word " * 100 + "x" * 120
    pieces = split_text(sentence, 50)
    assert all(0 < len(p) <= 50 for p in pieces)
    assert "".join(pieces).replace(" ", "") == sentence.replace(" ", "")
    assert pieces[0] == " ".join(["word"] * 10)  # cut at a space, not mid-word


def test_split_text_cjk_sentences():
    assert split_text("你好。今天天气很好！我们走吧？", 8) == ["你好。", "今天天气很好！", "我们走吧？"]


# ---- piper backend -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def piper_engine():
    engine = make_engine(TTSConfig(backend="piper"))
    engine.warmup()
    return engine


def test_piper_speaks_a_sentence(piper_engine):
    audio = np.concatenate(list(piper_engine.synthesize("Hello, how can I help you today?")))
    seconds = audio.size / piper_engine.sample_rate
    assert piper_engine.sample_rate == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 < seconds < 10.0
    assert rms(audio) > 0.02
    assert np.abs(audio).max() <= 1.0


def test_piper_streams_sentence_by_sentence(piper_engine):
    chunks = list(piper_engine.synthesize("The sun is out. Let us go for a walk."))
    assert len(chunks) == 2
    assert all(c.size > 0.3 * piper_engine.sample_rate for c in chunks)


def test_piper_stops_when_cancelled(piper_engine):
    cancel = threading.Event()
    cancel.set()
    assert list(piper_engine.synthesize("One. Two. Three.", cancel)) == []


# ---- make_engine errors --------------------------------------------------------------------------------------
def fake_checkpoint(folder: Path, kind: str = "custom_voice", size: str = "0b6") -> Path:
    """A folder with only the config.json facts make_engine checks before it loads any weights."""
    (folder / "speech_tokenizer").mkdir(parents=True)
    config = {
        "model_type": "qwen3_tts", "tts_model_type": kind, "tts_model_size": size,
        "talker_config": {
            "spk_id": {"ryan": 3061, "vivian": 3065} if kind == "custom_voice" else {},
            "codec_language_id": {"english": 2050, "chinese": 2055, "sichuan_dialect": 2062},
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_make_engine_missing_model_dir_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tts\.model .*setup\.sh"):
        make_engine(TTSConfig(backend="qwen3", model=str(tmp_path / "nope")))


def test_make_engine_missing_piper_voice_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tts\.piper_voice"):
        make_engine(TTSConfig(backend="piper", piper_voice=str(tmp_path / "voice.onnx")))


def test_make_engine_qwen3_without_any_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"tts\.model"):
        make_engine(TTSConfig(backend="qwen3-reference"))


def test_make_engine_unknown_backend_lists_the_installed_ones():
    installed = registry.names("tts")
    assert {"auto", "piper", "qwen3", "qwen3-reference"} <= set(installed)  # ours, registered like a plugin's
    with pytest.raises(ValueError) as error:  # UnknownBackend: a configuration error like any other bad value
        make_engine(TTSConfig(backend="nope"))
    assert isinstance(error.value, registry.UnknownBackend)
    assert "[tts] backend = 'nope' is not installed" in str(error.value)
    assert str(error.value).endswith(f"installed tts backends: {', '.join(installed)}")


def test_auto_falls_back_to_piper_without_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_MODELS_DIR", str(tmp_path))
    assert make_engine(TTSConfig(backend="auto")).name == "piper"


@pytest.mark.parametrize("backend", ["qwen3", "qwen3-reference"])
def test_make_engine_unknown_speaker_lists_the_speakers(tmp_path, backend):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"tts\.speaker = 'nobody'.*ryan, vivian"):
        make_engine(TTSConfig(backend=backend, model=str(ckpt), speaker="nobody"))


@pytest.mark.parametrize("backend", ["qwen3", "qwen3-reference"])
def test_make_engine_unknown_language_lists_the_languages(tmp_path, backend):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"tts\.language = 'klingon'.*auto, english, chinese\b"):
        make_engine(TTSConfig(backend=backend, model=str(ckpt), language="klingon"))


def test_choose_voice_defaults_and_codes(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    voice = choose_voice(TTSConfig(language="EN", instruct="cheerful"), ckpt)
    assert (voice.kind, voice.speaker, voice.language) == ("custom_voice", "ryan", "english")
    assert voice.instruct == ""  # the 0.6B CustomVoice model takes no instruction
    assert choose_voice(TTSConfig(speaker="Vivian"), ckpt).speaker == "vivian"


def test_choose_voice_needs_what_the_checkpoint_kind_needs(tmp_path):
    design = fake_checkpoint(tmp_path / "design", kind="voice_design", size="1b7")
    with pytest.raises(ValueError, match=r"tts\.instruct"):
        choose_voice(TTSConfig(), design)
    assert choose_voice(TTSConfig(instruct="a calm voice"), design).instruct == "a calm voice"
    base = fake_checkpoint(tmp_path / "base", kind="base")
    with pytest.raises(ValueError, match=r"tts\.ref_audio"):
        choose_voice(TTSConfig(), base)
    with pytest.raises(FileNotFoundError, match=r"tts\.ref_audio"):
        choose_voice(TTSConfig(ref_audio=str(tmp_path / "missing.wav")), base)


# ---- the handler thread --------------------------------------------------------------------------------------
class ScriptedEngine:
    """Says every request as ``chunks`` blocks of 0.1 s of a tone (endless if ``chunks`` is None)."""

    name = "scripted"
    sample_rate = 16000

    def __init__(self, chunks: int | None = 3, fail_on: str = "") -> None:
        self.chunks = chunks
        self.fail_on = fail_on
        self.requests: list[str] = []
        self.closed = threading.Event()

    def warmup(self) -> None:
        pass

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        if self.fail_on and self.fail_on in text:
            raise ValueError(f"cannot say {self.fail_on!r}")
        self.requests.append(text)
        block = (0.3 * np.sin(np.arange(1600) * 0.1)).astype(np.float32)  # [1600] = 0.1 s
        n = 0
        try:
            while self.chunks is None or n < self.chunks:
                if cancel is not None and cancel.is_set():
                    return
                time.sleep(0.005)
                n += 1
                yield block
        finally:
            self.closed.set()


def make_handler(turns: Turns, engine=None, **tts) -> TTSHandler:
    """A set-up TTS stage: ``engine`` injected, else the Piper voice ``setup`` loads."""
    handler = TTSHandler(wiring(turns), TTSConfig(backend="piper", **tts))
    handler.engine = engine
    handler.setup()
    return handler


def audio_of(items: list[object], turn_id: int) -> np.ndarray:
    return np.concatenate([i.samples for i in items if isinstance(i, AudioChunk) and i.turn_id == turn_id])


class Counting:
    """Wraps an engine and counts the samples it produced."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.sample_rate = engine, engine.name, engine.sample_rate
        self.samples = 0

    def warmup(self) -> None:
        self.engine.warmup()

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        for audio in self.engine.synthesize(text, cancel):
            self.samples += audio.size
            yield audio


def test_handler_speaks_piper_at_the_engine_rate(piper_engine):
    turns = Turns()
    turns.begin(1)
    counting = Counting(piper_engine)
    handler = make_handler(turns, engine=counting)
    counting.samples = 0  # forget the warm-up
    text = "Hello there. It is a fine day."
    out = run_stage(handler, [TextChunk(1, text), TextChunk(1, "   "), TurnEnd(1)])

    chunks = [i for i in out if isinstance(i, AudioChunk)]
    assert len(chunks) >= 2 and all(c.sample_rate == 22050 and c.samples.dtype == np.float32 for c in chunks)
    audio = audio_of(out, 1)
    assert audio.size == counting.samples  # the engine's audio as it came: nothing resampled, added or lost
    assert rms(audio) > 0.02
    assert out[-2:] == [TurnEnd(1), EndOfStream()]
    turns.end(1)
    assert turns.records[0]["tts_first_audio_ms"] is not None


def test_handler_splits_long_text_with_piper(piper_engine):
    turns = Turns()
    turns.begin(1)
    handler = make_handler(turns, engine=piper_engine, max_text_chars=40)
    text = "I can help with that. First, open the settings. Then choose sound and pick the speaker you like."
    out = run_stage(handler, [TextChunk(1, text), TurnEnd(1)])
    seconds = audio_of(out, 1).size / piper_engine.sample_rate
    assert 3.0 < seconds < 20.0
    assert out[-2:] == [TurnEnd(1), EndOfStream()]


def test_handler_says_5000_chars_piece_by_piece():
    turns = Turns()
    turns.begin(7)
    engine = ScriptedEngine(chunks=2)
    handler = make_handler(turns, engine=engine, max_text_chars=2000)
    out = run_stage(handler, [TextChunk(7, LONG_TEXT), TurnEnd(7)])

    assert len(engine.requests) >= 3 and all(len(r) <= 2000 for r in engine.requests)
    assert " ".join(engine.requests).split() == LONG_TEXT.split()
    assert audio_of(out, 7).size == len(engine.requests) * 2 * 1600
    assert out[-2:] == [TurnEnd(7), EndOfStream()]


def test_handler_empty_text_says_nothing_and_forwards_the_turn_end():
    turns = Turns()
    turns.begin(2)
    engine = ScriptedEngine()
    out = run_stage(make_handler(turns, engine=engine), [TextChunk(2, ""), TextChunk(2, " \n "), TurnEnd(2)])
    assert out == [TurnEnd(2), EndOfStream()]
    assert engine.requests == []


def test_handler_drops_text_of_closed_turns_and_forwards_failures():
    turns = Turns()
    turns.begin(3)
    turns.end(3, error="stt failed")
    engine = ScriptedEngine()
    failed = TurnFailed(3, stage="llm", error="boom")
    out = run_stage(make_handler(turns, engine=engine), [TextChunk(3, "Too late."), failed])
    assert out == [failed, EndOfStream()]
    assert engine.requests == []


def test_handler_reports_an_engine_error_as_turn_failed():
    turns = Turns()
    turns.begin(4)
    engine = ScriptedEngine(fail_on="bad")
    out = run_stage(make_handler(turns, engine=engine), [TextChunk(4, "bad text"), TextChunk(4, "good"), TurnEnd(4)])
    failures = [i for i in out if isinstance(i, TurnFailed)]
    assert len(failures) == 1 and failures[0].stage == "tts" and "cannot say" in failures[0].error
    assert engine.requests == ["good"]
    assert out[-2:] == [TurnEnd(4), EndOfStream()]


def start_speaking(handler: TTSHandler, chunk: TextChunk) -> threading.Thread:
    """Run ``handler`` in a thread on ``chunk`` and return once its first audio came out."""
    handler.in_queue.put(chunk)
    thread = start(handler)
    assert isinstance(handler.out_queue.get(timeout=30), AudioChunk)
    return thread


def test_handler_stops_speaking_when_the_turn_closes():
    turns = Turns()
    turns.begin(5)
    engine = ScriptedEngine(chunks=None)
    handler = make_handler(turns, engine=engine)
    thread = start_speaking(handler, TextChunk(5, "This goes on and on."))
    turns.end(5, error="the speaker failed")
    assert engine.closed.wait(30), "the engine request was not closed"
    handler.in_queue.put(TurnFailed(5, stage="audio_out", error="x"))
    handler.in_queue.put(EndOfStream())
    rest = drain(handler.out_queue, timeout=30)
    thread.join(30)
    assert not thread.is_alive()
    assert rest[-2:] == [TurnFailed(5, stage="audio_out", error="x"), EndOfStream()]


def test_handler_stop_completes_promptly():
    turns = Turns()
    turns.begin(6)
    engine = ScriptedEngine(chunks=None)
    handler = make_handler(turns, engine=engine)
    thread = start_speaking(handler, TextChunk(6, "Endless."))
    handler.stop_event.set()
    t0 = time.monotonic()
    thread.join(30)
    assert not thread.is_alive()
    # The stop is seen between two audio blocks (5 ms apart); the bound leaves room for a loaded machine.
    assert time.monotonic() - t0 < 5.0
    assert handler.finished.is_set()
