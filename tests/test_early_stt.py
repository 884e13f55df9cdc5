"""Early transcription: the VAD's speculative segment at the first ``vad.early_stt_ms`` of silence, the STT's use or
drop of its transcript, and, with the real models, a question with a 300 ms pause transcribed whole while the guess
made at the pause never reaches the LLM or its history."""

from types import SimpleNamespace

import numpy as np
import pytest
from fixtures_models import smollm2_dir, speak  # noqa: F401  (session fixture)
from pipeline_helpers import integration_config, reuse_models, run, words
from stage_harness import wiring
from test_vad import ScriptedModel, feed, numbered_frames

from handlers.stt import STTHandler
from handlers.vad import UtteranceDetector, VADHandler
from s2s.config import STTConfig, VADConfig
from s2s.messages import AudioFrame, SpeculativeSegment, SpeechSegment, Transcript
from s2s.pipeline import Pipeline
from s2s.turns import Turns

CFG = VADConfig(threshold=0.5, min_speech_ms=96, min_silence_ms=320, speech_pad_ms=64, early_stt_ms=96)
"""10 quiet frames end an utterance; the 3rd quiet frame sends the utterance so far."""
SPEECH, QUIET = 0.9, 0.0


def detect(script: list[float], cfg: VADConfig = CFG) -> list[tuple[int, object]]:
    return feed(UtteranceDetector(cfg, ScriptedModel(script)), numbered_frames(len(script)))


# ---- the VAD ---------------------------------------------------------------------------------------------------
def test_the_utterance_so_far_goes_out_at_the_first_pause_frames():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 12
    (at, guess), (end, final) = detect(script)
    assert isinstance(guess, SpeculativeSegment) and isinstance(final, SpeechSegment)
    assert at == 5 + 8 + 3 - 1 and end == 5 + 8 + 10 - 1  # the 3rd and the 10th quiet frame
    assert (guess.start_s, guess.end_s) == (final.start_s, final.end_s)  # no speech since: the guess holds
    assert np.array_equal(guess.audio, final.audio[:guess.audio.size])  # the same frames, less trailing silence


def test_every_pause_sends_a_new_guess_and_the_end_differs_after_more_speech():
    script = [QUIET] * 5 + [SPEECH] * 6 + [QUIET] * 5 + [SPEECH] * 6 + [QUIET] * 12
    found = [item for _, item in detect(script)]
    assert [type(item) for item in found] == [SpeculativeSegment, SpeculativeSegment, SpeechSegment]
    first, second, final = found
    assert first.end_s < final.end_s == second.end_s and first.start_s == final.start_s


@pytest.mark.parametrize("cfg", [VADConfig(**{**vars(CFG), "early_stt_ms": 0}),
                                 VADConfig(**{**vars(CFG), "early_stt_ms": 320}),
                                 VADConfig(**{**vars(CFG), "min_speech_ms": 500})])
def test_no_guess_when_off_not_before_the_end_or_for_too_little_speech(cfg):
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 12
    assert not any(isinstance(item, SpeculativeSegment) for _, item in detect(script, cfg))


def test_the_handler_passes_guesses_on_without_opening_a_turn():
    turns = Turns()
    handler = VADHandler(wiring(turns), CFG)
    handler.model = ScriptedModel([QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 12)
    handler.setup()
    handler.model.calls = 0  # after the warm-up frames
    audio = numbered_frames(25)
    out = []
    for k in range(25):
        if not out or isinstance(out[-1], SpeculativeSegment):
            assert turns.listening  # the guess opened no turn: the microphone is still open
        out += handler.process(AudioFrame(audio[k * 512:(k + 1) * 512], 16000, float(k), k * 512 / 16000))
    assert [type(item) for item in out] == [SpeculativeSegment, SpeechSegment]
    assert out[1].turn_id == 1 and not turns.listening
    turns.end(1)
    assert turns.records[0]["speech_end_decided_ms"] >= 0.0  # decided after the last voiced frame was captured


# ---- the STT ---------------------------------------------------------------------------------------------------
class CountingWhisper:
    """A faster-whisper stand-in: the "transcript" of audio is its length in frames."""

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, audio, **options):
        self.calls += 1
        return iter([SimpleNamespace(text=f"{audio.size // 512} frames")]), SimpleNamespace(language="en")


def stt_handler() -> tuple[STTHandler, CountingWhisper]:
    handler = STTHandler(wiring(Turns()), STTConfig(device="cpu"))
    handler.model = CountingWhisper()
    return handler, handler.model


def final_segment(handler: STTHandler, frames: int, end_s: float) -> SpeechSegment:
    turn_id = handler.turns.new_id()
    handler.turns.begin(turn_id)
    return SpeechSegment(np.zeros(frames * 512, np.float32), 0.5, end_s, 0.0, turn_id)


def test_a_guess_that_holds_is_the_transcript_without_a_second_pass():
    handler, whisper = stt_handler()
    assert list(handler.process(SpeculativeSegment(np.zeros(7 * 512, np.float32), 0.5, 1.2))) == []
    (transcript,) = handler.process(final_segment(handler, 10, 1.2))
    assert transcript == Transcript(1, "7 frames", "en") and whisper.calls == 1
    assert handler.speculative_counts == {"used": 1, "dropped": 0, "skipped": 0}


def test_a_guess_is_dropped_when_the_user_spoke_on():
    handler, whisper = stt_handler()
    list(handler.process(SpeculativeSegment(np.zeros(7 * 512, np.float32), 0.5, 1.2)))
    list(handler.process(SpeculativeSegment(np.zeros(15 * 512, np.float32), 0.5, 2.0)))
    (transcript,) = handler.process(final_segment(handler, 25, 2.6))
    assert transcript.text == "25 frames" and whisper.calls == 3
    assert handler.speculative_counts == {"used": 0, "dropped": 2, "skipped": 0}


def test_a_guess_with_newer_input_waiting_is_not_transcribed():
    handler, whisper = stt_handler()
    handler.in_queue.put("something newer")
    list(handler.process(SpeculativeSegment(np.zeros(7 * 512, np.float32), 0.5, 1.2)))
    assert whisper.calls == 0 and handler.speculative_counts["skipped"] == 1


# ---- the real models -------------------------------------------------------------------------------------------
PAUSED = ("What is the capital of Italy", "and how many people live there?")


def paused_question(pause_ms: int = 300) -> np.ndarray:
    first, second = (speak(part) for part in PAUSED)
    trim = [np.flatnonzero(np.abs(a) > 0.01 * np.abs(a).max()) for a in (first, second)]
    first, second = first[:trim[0][-1] + 480], second[max(0, trim[1][0] - 480):]  # 30 ms margins: the pause is
    return np.concatenate([first, np.zeros(pause_ms * 16, np.float32), second])  # what it says


@pytest.mark.slow
def test_a_question_with_a_pause_is_heard_whole_and_the_guess_made_there_dropped(smollm2_dir, tmp_path):  # noqa: F811
    import soundfile as sf

    sf.write(tmp_path / "question.wav", paused_question(), 16000)
    config = integration_config(smollm2_dir, "audio_in.realtime_file=true", "vad.early_stt_ms=128",
                                "llm.max_history_turns=2")
    pipeline = reuse_models(Pipeline.from_config(config, input_path=tmp_path / "question.wav",
                                                 output_path=tmp_path / "reply.wav"))
    stages = {stage.name: stage for stage in pipeline.stages}
    prompts = []
    pipeline.setup()
    chat = stages["llm"].chat_model
    prompt_ids = chat.prompt_ids
    chat.prompt_ids = lambda messages: (prompts.append([m["content"] for m in messages]), prompt_ids(messages))[1]
    run(pipeline)
    assert len(pipeline.turns.records) == 1 and pipeline.turns.records[0]["error"] is None
    counts = stages["stt"].speculative_counts
    assert counts["dropped"] >= 1, counts  # the guess made at the pause was transcribed, then dropped
    users = {p[-1] for p in prompts}  # every prompt the LLM built ends with the user's words
    assert len(users) == 1, users
    heard = words(users.pop())
    # Both halves in one transcript. One word of each suffices: whisper tiny.en may mishear a word of espeak-ng's
    # speech, and when its first decode looks unsure, faster-whisper retries at a temperature (sampled, not repeatable)
    assert heard & {"capital", "italy"} and heard & {"many", "people", "live"}, heard
    history = stages["llm"].build_messages("Thanks.")[1:-1]  # confirms the reply: the remembered exchange
    assert [m["role"] for m in history] == ["user", "assistant"] and words(history[0]["content"]) == heard
