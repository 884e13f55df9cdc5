"""Both Qwen3-TTS backends on tiny random-weight checkpoints (CPU, float32).

Random weights essentially never emit EOS, so every request is capped with ``tts.max_new_tokens``: the
reference then returns N - 1 frames of 1920 samples (24 kHz), and greedy decoding makes it repeatable.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from stage_harness import run_stage, wiring

from s2s.tts_engine import make_engine
from s2s.audio import write_wav
from s2s.config import TTSConfig
from s2s.messages import AudioChunk, EndOfStream, TextChunk, TurnEnd
from s2s.checkpoint_builder.build import build_checkpoint
from s2s.tts_stage import TTSHandler
from s2s.turns import Turns

SAMPLES_PER_FRAME = 1920
MAX_NEW_TOKENS = 12
MAX_FRAMES = MAX_NEW_TOKENS - 1
"""The reference drops the last sampled frame (its residual codes are never generated)."""


@pytest.fixture(scope="session", autouse=True)
def two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """kind -> a tiny random-weight checkpoint folder, built once per session."""
    root = tmp_path_factory.mktemp("qwen3_tts")
    return {kind: build_checkpoint(root / kind, size="tiny", kind=kind, seed=0)
            for kind in ("custom_voice", "voice_design", "base")}


def reference_cfg(checkpoint, **overrides) -> TTSConfig:
    values = dict(backend="qwen3-reference", model=str(checkpoint), device="cpu", dtype="float32",
                  do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    values.update(overrides)
    return TTSConfig(**values)


@pytest.fixture(scope="module")
def custom_voice_reference(checkpoints):
    return make_engine(reference_cfg(checkpoints["custom_voice"], speaker="vivian", language="en"))


def frames_of(audio: np.ndarray) -> int:
    """Whole codec frames in ``audio`` (asserts there is no partial frame)."""
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size % SAMPLES_PER_FRAME == 0, audio.size
    return audio.size // SAMPLES_PER_FRAME


@pytest.mark.reference
def test_reference_custom_voice_greedy_is_whole_frames_and_repeatable(custom_voice_reference):
    engine = custom_voice_reference
    assert (engine.name, engine.sample_rate) == ("qwen3-reference", 24000)
    assert (engine.voice.speaker, engine.voice.language) == ("vivian", "english")
    first = list(engine.synthesize("Hello there, how are you?"))
    assert len(first) == 1  # the reference cannot stream
    assert 1 <= frames_of(first[0]) <= MAX_FRAMES
    assert np.array_equal(first[0], next(engine.synthesize("Hello there, how are you?")))


@pytest.mark.reference
def test_reference_audio_is_one_codec_frame_per_generated_code(custom_voice_reference, monkeypatch):
    """The expected length: 1920 samples for every codec frame the talker generated, within max_new_tokens."""
    model = custom_voice_reference.model.model  # qwen_tts's Qwen3TTSForConditionalGeneration
    generate = model.generate
    generated = []

    def recording_generate(*args, **kwargs):
        codes_list, hidden = generate(*args, **kwargs)
        generated.extend(codes_list)
        return codes_list, hidden

    monkeypatch.setattr(model, "generate", recording_generate)
    (audio,) = custom_voice_reference.synthesize("Hello there, how are you?")
    (codes,) = generated  # [frames, code groups]
    assert 1 <= codes.shape[0] <= MAX_FRAMES
    assert codes.shape[1] == model.config.talker_config.num_code_groups
    assert audio.size == codes.shape[0] * SAMPLES_PER_FRAME


@pytest.mark.reference
def test_reference_respects_cancel(custom_voice_reference):
    cancel = threading.Event()
    cancel.set()
    assert list(custom_voice_reference.synthesize("Never said.", cancel)) == []


@pytest.mark.reference
def test_reference_sampling_with_a_seed_is_repeatable(checkpoints):
    engine = make_engine(reference_cfg(checkpoints["custom_voice"], do_sample=True, seed=3, max_new_tokens=6))
    a, b = (next(engine.synthesize("A seeded sentence.")) for _ in range(2))
    assert 1 <= frames_of(a) <= 5
    assert np.array_equal(a, b)


@pytest.mark.reference
def test_reference_voice_design(checkpoints):
    engine = make_engine(reference_cfg(checkpoints["voice_design"], instruct="A calm, low voice.", max_new_tokens=6))
    assert engine.voice.kind == "voice_design"
    assert 1 <= frames_of(next(engine.synthesize("Designed voice."))) <= 5


@pytest.mark.reference
def test_reference_voice_clone_from_a_wav(checkpoints, tmp_path):
    ref = tmp_path / "ref.wav"
    t = np.arange(24000) / 24000
    write_wav(ref, (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 24000)
    engine = make_engine(reference_cfg(checkpoints["base"], ref_audio=str(ref), max_new_tokens=6))
    assert engine.voice.kind == "base" and engine.clone_prompt is not None
    assert 1 <= frames_of(next(engine.synthesize("Cloned voice."))) <= 5


@pytest.mark.reference
def test_handler_with_the_reference_engine(checkpoints):
    turns = Turns()
    turns.begin(1)
    handler = TTSHandler(wiring(turns), reference_cfg(checkpoints["custom_voice"]))
    handler.setup()
    out = run_stage(handler, [TextChunk(1, "Hello."), TurnEnd(1)])
    audio = np.concatenate([i.samples for i in out if isinstance(i, AudioChunk)])
    assert all(i.sample_rate == 24000 for i in out if isinstance(i, AudioChunk))
    assert 1 <= frames_of(audio) <= MAX_FRAMES  # the engine's 24 kHz as it came: nothing added or lost
    assert out[-2:] == [TurnEnd(1), EndOfStream()]


# ---- the fast engine (s2s.qwen3_tts) through its adapter -------------------------------------------------------
def fast_cfg(checkpoint, **overrides) -> TTSConfig:
    return reference_cfg(checkpoint, **{"backend": "qwen3", "enforce_eager": True, **overrides})


@pytest.fixture(scope="module")
def custom_voice_fast(checkpoints):
    engine = make_engine(fast_cfg(checkpoints["custom_voice"], speaker="vivian", language="en"))
    engine.warmup()
    return engine


def test_auto_picks_the_fast_engine_when_a_checkpoint_is_found(checkpoints):
    engine = make_engine(fast_cfg(checkpoints["custom_voice"], backend="auto"))
    assert (engine.name, engine.sample_rate, engine.voice.speaker) == ("qwen3", 24000, "serena")


def test_fast_engine_streams_chunks_of_whole_frames(custom_voice_fast):
    chunks = list(custom_voice_fast.synthesize("Hello there, how are you?"))
    frames = [frames_of(c) for c in chunks]
    assert len(chunks) >= 2
    assert frames[0] == 2 and all(f == 4 for f in frames[1:-1]) and 1 <= frames[-1] <= 4
    assert sum(frames) <= MAX_FRAMES


@pytest.mark.reference
def test_fast_engine_says_what_the_reference_says(custom_voice_fast, custom_voice_reference):
    """Same [tts] settings, greedy, float32: the adapter builds the same request as the reference backend."""
    text = "Hello there, how are you?"
    fast = np.concatenate(list(custom_voice_fast.synthesize(text)))
    reference = next(custom_voice_reference.synthesize(text))
    assert fast.shape == reference.shape
    np.testing.assert_allclose(fast, reference, atol=1e-3)


def test_fast_engine_stops_when_cancelled(custom_voice_fast):
    cancel = threading.Event()
    cancel.set()
    assert list(custom_voice_fast.synthesize("Never said.", cancel)) == []


def test_fast_engine_clones_from_a_saved_voice_prompt(checkpoints, tmp_path):
    ref = tmp_path / "ref.wav"
    write_wav(ref, (0.3 * np.sin(np.arange(24000) * 0.05)).astype(np.float32), 24000)
    from_wav = make_engine(fast_cfg(checkpoints["base"], ref_audio=str(ref), max_new_tokens=6))
    saved = tmp_path / "voice.pt"
    from_wav.clone_prompt.save(saved)
    from_file = make_engine(fast_cfg(checkpoints["base"], voice_prompt=str(saved), max_new_tokens=6))
    a = np.concatenate(list(from_wav.synthesize("Cloned voice.")))
    b = np.concatenate(list(from_file.synthesize("Cloned voice.")))
    assert 1 <= frames_of(a) <= 5
    np.testing.assert_array_equal(a, b)


def test_handler_streams_the_fast_engine_at_its_own_rate(checkpoints, custom_voice_fast):
    """The stage forwards the engine's 24 kHz chunks as they come (the sink resamples: tests/test_audio_out.py)."""
    turns = Turns()
    turns.begin(1)
    handler = TTSHandler(wiring(turns), fast_cfg(checkpoints["custom_voice"]))
    handler.engine = custom_voice_fast  # already warmed up by the fixture: no setup()
    out = run_stage(handler, [TextChunk(1, "Hello there, how are you?"), TurnEnd(1)])
    chunks = [i for i in out if isinstance(i, AudioChunk)]
    assert len(chunks) >= 3 and all(c.sample_rate == 24000 for c in chunks)
    assert 1 <= sum(frames_of(c.samples) for c in chunks) <= MAX_FRAMES  # whole codec frames: nothing added or lost
    assert out[-2:] == [TurnEnd(1), EndOfStream()]
