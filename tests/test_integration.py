"""The whole pipeline with the real small models on real threads (CPU): VAD -> STT -> LLM -> TTS (Piper) -> WAV.

Models: Silero VAD, Whisper tiny.en, SmolLM2-135M, Piper joe, each loaded once per session (pipeline_helpers).
"""

import logging

import numpy as np
import pytest
import soundfile as sf
from fixtures_models import smollm2_dir, speak  # noqa: F401  (session fixture)
from pipeline_helpers import EXAMPLES, integration_config, logged, reuse_models, run, transcribe, words

from s2s.audio import write_wav
from s2s.pipeline import Pipeline

pytestmark = pytest.mark.slow


def build(config, **mode) -> Pipeline:
    return reuse_models(Pipeline.from_config(config, **mode))


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def test_spoken_question_gets_a_spoken_reply_closed_loop(smollm2_dir, tmp_path, info_logs):  # noqa: F811
    out = tmp_path / "reply.wav"
    pipeline = run(build(integration_config(smollm2_dir), input_path=EXAMPLES / "question.wav", output_path=out))

    (record,) = pipeline.turns.records
    assert record["error"] is None
    for mark in ("transcript_ready_ms", "llm_first_token_ms", "first_text_chunk_ms", "tts_first_audio_ms",
                 "first_audio_out_ms"):
        assert record[mark] is not None and record[mark] >= 0, mark
    transcript = logged(info_logs, "handlers.stt", "STT: turn")[1]
    assert {"capital", "france"} <= words(transcript)

    reply_text = logged(info_logs, "handlers.llm", "LLM: turn")[1]
    audio, rate = sf.read(out, dtype="float32")
    tts = next(stage for stage in pipeline.stages if stage.name == "tts")
    assert rate == tts.engine.sample_rate and len(audio) > rate // 2  # audio_out.sample_rate = 0: the TTS's rate
    heard = words(transcribe(audio, rate))
    said = words(reply_text)
    assert said, f"the LLM said nothing speakable: {reply_text!r}"
    assert len(said & heard) >= len(said) / 2, f"LLM said {reply_text!r}; the reply audio says {heard}"
    assert pipeline.turns.listening


def test_two_questions_give_two_turns_in_order_with_history(smollm2_dir, tmp_path, info_logs):  # noqa: F811
    out = tmp_path / "reply.wav"
    pipeline = run(build(integration_config(smollm2_dir, "llm.max_history_turns=4"),
                         input_path=EXAMPLES / "two_questions.wav", output_path=out))

    assert [r["turn"] for r in pipeline.turns.records] == [1, 2]
    assert all(r["error"] is None for r in pipeline.turns.records)
    transcripts = logged(info_logs, "handlers.stt", "STT: turn")
    assert "france" in words(transcripts[1]) and "germany" in words(transcripts[2])
    llm = next(stage for stage in pipeline.stages if stage.name == "llm")
    assert [user for user, _ in llm.history] == [transcripts[1]]  # turn 2 was answered with turn 1 in the history
    assert pipeline.sink.turns_written == 2


class FailsFirstRequest:
    """The session's real TTS engine, except that its first request speaks one chunk and then raises."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.name, self.sample_rate = engine.name, engine.sample_rate
        self.failed = False

    def synthesize(self, text, cancel=None):
        for audio in self.engine.synthesize(text, cancel):
            yield audio
            if not self.failed:
                self.failed = True
                raise RuntimeError("synthesis exploded")


def test_a_stage_raising_mid_turn_ends_that_turn_and_the_next_is_answered(smollm2_dir, tmp_path,  # noqa: F811
                                                                           info_logs):
    pipeline = build(integration_config(smollm2_dir, "llm.max_history_turns=4"),
                     input_path=EXAMPLES / "two_questions.wav", output_path=tmp_path / "reply.wav")
    pipeline.setup()
    tts = next(stage for stage in pipeline.stages if stage.name == "tts")
    tts.engine = FailsFirstRequest(tts.engine)
    run(pipeline)

    first, second = pipeline.turns.records
    assert first["turn"] == 1 and first["error"] == "tts: RuntimeError: synthesis exploded"
    assert "tts failed on TextChunk (turn 1): synthesis exploded" in info_logs.text
    assert second["turn"] == 2 and second["error"] is None and second["first_audio_out_ms"] is not None
    assert "germany" in words(logged(info_logs, "handlers.stt", "STT: turn")[2])
    llm = next(stage for stage in pipeline.stages if stage.name == "llm")
    assert list(llm.history) == []  # turn 2 was answered without the failed turn 1 in its prompt
    assert pipeline.turns.listening and pipeline.healthy()


def test_noise_and_silence_alone_give_no_turn(smollm2_dir, tmp_path, info_logs):  # noqa: F811
    rng = np.random.default_rng(0)
    quiet_noise = (0.003 * rng.standard_normal(16000 * 2)).astype(np.float32)
    write_wav(tmp_path / "in" / "a_noise.wav", quiet_noise, 16000)
    write_wav(tmp_path / "in" / "b_silence.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)
    out = tmp_path / "reply.wav"
    pipeline = run(build(integration_config(smollm2_dir), input_path=tmp_path / "in", output_path=out))
    assert pipeline.turns.records == []
    assert not out.exists()  # no reply, no file
    assert pipeline.turns.listening


def test_8k_stereo_question_is_understood(smollm2_dir, tmp_path, info_logs):  # noqa: F811
    from s2s.audio import resample

    speech = resample(speak("What is the capital of Spain?"), 16000, 8000)
    pad = np.zeros(8000 // 2, dtype=np.float32)
    mono = np.concatenate([pad, speech, pad])
    sf.write(tmp_path / "q8k.wav", np.stack([mono, mono], axis=1), 8000)
    pipeline = run(build(integration_config(smollm2_dir, "llm.max_new_tokens=8"), input_path=tmp_path / "q8k.wav",
                         output_path=tmp_path / "reply.wav"))
    assert len(pipeline.turns.records) == 1
    assert "spain" in words(logged(info_logs, "handlers.stt", "STT: turn")[1])
    assert "8000 Hz; resampling" in info_logs.text and "mixing them down" in info_logs.text


def test_typed_prompt_skips_vad_and_stt_and_the_wav_has_the_configured_rate(smollm2_dir, tmp_path,  # noqa: F811
                                                                            info_logs):
    pipeline = run(build(integration_config(smollm2_dir, "llm.max_new_tokens=16", "audio_out.sample_rate=16000"),
                         text="Say hello.", output_path=tmp_path / "reply.wav"))
    assert [stage.name for stage in pipeline.stages] == ["text-in", "llm", "tts", "wav-out"]
    (record,) = pipeline.turns.records
    assert record["error"] is None and record["first_audio_out_ms"] is not None
    info = sf.info(tmp_path / "reply.wav")
    assert info.frames > 0 and info.samplerate == 16000  # a configured rate: the sink resampled the TTS audio


def test_5000_character_prompt_is_handled(smollm2_dir, tmp_path, info_logs):  # noqa: F811
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    text = (sentence * (5000 // len(sentence) + 1))[:5000]
    pipeline = run(build(integration_config(smollm2_dir, "llm.max_new_tokens=8"), text=text,
                         output_path=tmp_path / "reply.wav"))
    (record,) = pipeline.turns.records
    assert record["error"] is None
    assert sf.info(tmp_path / "reply.wav").frames > 0
