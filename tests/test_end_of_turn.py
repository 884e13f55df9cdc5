"""End of turn from the words (s2s.end_of_turn): the VAD ends an utterance before ``vad.min_silence_ms`` when the
verdict on its speculative transcript says finished, takes the turn back when the user speaks on, and the real
SmolLM2 rates finished and unfinished words apart."""

import dataclasses
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
from fixtures_models import smollm2_dir, speak  # noqa: F401  (session fixture)
from stage_harness import wiring
from test_vad import ScriptedModel, audio_frames, feed, frames_in, numbered_frames

from handlers.llm import LLMHandler
from handlers.vad import Resumed, UtteranceDetector, VADHandler
from s2s.config import EndOfTurnConfig, LLMConfig, VADConfig
from s2s.end_of_turn import ChatTurnModel, EndOfTurn
from s2s.messages import SpeculativeSegment, SpeechSegment, Transcript
from s2s.turns import Turns

CFG = VADConfig(threshold=0.5, min_speech_ms=96, min_silence_ms=320, speech_pad_ms=64, early_stt_ms=96)
"""The 3rd quiet frame sends the utterance so far; the 10th ends it on silence."""
EOT = EndOfTurnConfig(silence_ms=128, threshold=0.5)
"""With a finished verdict, the 4th quiet frame ends it."""
SPEECH, QUIET = 0.9, 0.0


class Verdicts:
    """A turn model that rates the texts it was told are finished 1.0, anything else 0.0."""

    def __init__(self, finished: set[str]) -> None:
        self.finished = finished

    def __call__(self, text: str) -> float:
        return 1.0 if text in self.finished else 0.0


def judging(detector: UtteranceDetector, verdicts: EndOfTurn, text: str):
    """Run the detector's output through a judge as the STT would (at once: the verdict is there the next frame)."""
    def judge(found):
        for item in found:
            if isinstance(item, SpeculativeSegment):
                verdicts.judge(item.start_s, item.end_s, text)
        return found
    return judge


def run_detector(script: list[float], text: str, finished: set[str], cfg: VADConfig = CFG,
                 eot: EndOfTurnConfig = EOT) -> list[tuple[int, object]]:
    end_of_turn = EndOfTurn(eot, Verdicts(finished))
    detector = UtteranceDetector(cfg, ScriptedModel(script), end_of_turn)
    judge = judging(detector, end_of_turn, text)
    found = []
    audio = numbered_frames(len(script))
    for k in range(len(script)):
        for item in judge(detector(audio[k * 512:(k + 1) * 512], k * 512 / 16000, 100.0 + (k + 1) * 512 / 16000)):
            found.append((k, item))
    return found


# ---- the detector ----------------------------------------------------------------------------------------------
def test_finished_words_end_the_utterance_after_the_shorter_silence():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 14
    (at_guess, guess), (at_end, segment) = run_detector(script, "What time is it?", {"What time is it?"})
    assert isinstance(guess, SpeculativeSegment) and isinstance(segment, SpeechSegment)
    assert at_guess == 5 + 8 + 3 - 1 and at_end == 5 + 8 + 4 - 1  # the 4th quiet frame, not the 10th
    assert (segment.start_s, segment.end_s) == (guess.start_s, guess.end_s)  # the STT's guess holds


def test_unfinished_words_wait_for_the_full_silence():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 14
    (_, guess), (at_end, segment) = run_detector(script, "I was wondering", {"What time is it?"})
    assert isinstance(segment, SpeechSegment) and at_end == 5 + 8 + 10 - 1


def test_speech_after_an_early_end_resumes_the_same_utterance():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 6 + [SPEECH] * 6 + [QUIET] * 14
    found = run_detector(script, "What is the capital of Italy?", {"What is the capital of Italy?"})
    kinds = [type(item) for _, item in found]
    assert kinds == [SpeculativeSegment, SpeechSegment, Resumed, SpeculativeSegment, SpeechSegment], kinds
    early, resumed, final = found[1][1], found[2], found[4][1]
    assert resumed[0] == 5 + 8 + 6  # the first voiced frame after the pause
    assert final.start_s == early.start_s and final.end_s > early.end_s  # one utterance, both parts
    assert frames_in(final.audio)[:len(frames_in(early.audio))] == frames_in(early.audio)


def test_after_the_full_silence_new_speech_is_a_new_utterance():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 12 + [SPEECH] * 6 + [QUIET] * 14
    found = run_detector(script, "Tell me a joke.", {"Tell me a joke."})
    kinds = [type(item) for _, item in found]
    assert Resumed not in kinds and kinds.count(SpeechSegment) == 2
    first, second = [item for _, item in found if isinstance(item, SpeechSegment)]
    assert second.start_s > first.end_s


def test_a_verdict_on_an_older_guess_is_ignored():
    end_of_turn = EndOfTurn(EOT, Verdicts({"old"}))
    detector = UtteranceDetector(CFG, ScriptedModel([QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 14), end_of_turn)
    end_of_turn.judge(0.0, 0.1, "old")  # another utterance's verdict
    found = feed(detector, numbered_frames(27))
    assert [k for k, item in found if isinstance(item, SpeechSegment)] == [5 + 8 + 10 - 1]


def test_off_when_silence_ms_is_zero():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 14
    found = run_detector(script, "x", {"x"}, eot=dataclasses.replace(EOT, silence_ms=0))
    assert [k for k, item in found if isinstance(item, SpeechSegment)] == [5 + 8 + 10 - 1]


def test_flush_does_not_send_an_early_utterance_twice():
    end_of_turn = EndOfTurn(EOT, Verdicts({"x"}))
    detector = UtteranceDetector(CFG, ScriptedModel([QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 5), end_of_turn)
    judge = judging(detector, end_of_turn, "x")
    audio = numbered_frames(18)
    sent = [item for k in range(18) for item in judge(detector(audio[k * 512:(k + 1) * 512], k * 512 / 16000,
                                                               100.0 + k * 0.032))]
    assert [type(item) for item in sent] == [SpeculativeSegment, SpeechSegment] and detector.sent_early
    assert detector.flush() == []


# ---- the VAD stage: taking a turn back -------------------------------------------------------------------------
def vad_stage(script: list[float], turns: Turns, finished: bool) -> tuple[VADHandler, EndOfTurn]:
    end_of_turn = EndOfTurn(EOT, Verdicts({"words"} if finished else set()))
    handler = VADHandler(dataclasses.replace(wiring(turns), end_of_turn=end_of_turn), CFG)
    handler.model = ScriptedModel(script)
    handler.setup()
    handler.model.calls = 0
    return handler, end_of_turn


def stage_run(handler: VADHandler, end_of_turn: EndOfTurn, frames, after=None) -> list:
    out = []
    for k, frame in enumerate(frames):
        for item in handler.process(frame):
            if isinstance(item, SpeculativeSegment):
                end_of_turn.judge(item.start_s, item.end_s, "words")
            out.append(item)
        if after is not None:
            after(k, out)
    return out


def test_half_duplex_the_microphone_stays_open_until_the_full_silence_and_speech_takes_the_turn_back():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 6 + [SPEECH] * 6 + [QUIET] * 14
    turns = Turns(half_duplex=True)
    handler, end_of_turn = vad_stage(script, turns, finished=True)
    out = stage_run(handler, end_of_turn, audio_frames(numbered_frames(len(script))))
    segments = [item for item in out if isinstance(item, SpeechSegment)]
    assert [s.turn_id for s in segments] == [1, 2]
    first, second = turns.records[0], segments[1]
    assert first["turn"] == 1 and first["retracted"] and first["error"] is None
    assert second.start_s == segments[0].start_s and second.end_s > segments[0].end_s
    assert turns.is_open(2) and not turns.listening  # the whole utterance is the turn now


def speaking_on_while_the_reply_plays(half_duplex: bool) -> tuple[Turns, VADHandler, list]:
    """The user pauses after finished words, the early turn's reply starts to play, then the user speaks on."""
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 6 + [SPEECH] * 6 + [QUIET] * 14
    turns = Turns(half_duplex=half_duplex)
    handler, end_of_turn = vad_stage(script, turns, finished=True)

    def reply_plays(k, out):
        if any(isinstance(item, SpeechSegment) for item in out):
            turns.mark(1, "first_audio_out")

    out = stage_run(handler, end_of_turn, audio_frames(numbered_frames(len(script))), reply_plays)
    return turns, handler, [item.turn_id for item in out if isinstance(item, SpeechSegment)]


def test_half_duplex_once_the_reply_is_heard_the_turn_stands():
    turns, handler, opened = speaking_on_while_the_reply_plays(half_duplex=True)
    assert opened == [1]
    assert turns.is_open(1) and not handler.detector.sent_early  # muted while it plays, as without end_of_turn


def test_full_duplex_speech_over_an_early_turn_takes_it_back_and_the_utterance_is_wanted():
    turns, handler, opened = speaking_on_while_the_reply_plays(half_duplex=False)
    assert opened == [1, 2] and turns.records[0]["retracted"]


def test_unfinished_words_open_no_turn_at_the_pause():
    script = [QUIET] * 5 + [SPEECH] * 8 + [QUIET] * 6 + [SPEECH] * 6 + [QUIET] * 14
    turns = Turns(half_duplex=True)
    handler, end_of_turn = vad_stage(script, turns, finished=False)
    out = stage_run(handler, end_of_turn, audio_frames(numbered_frames(len(script))))
    assert [item.turn_id for item in out if isinstance(item, SpeechSegment)] == [1]
    assert turns.records == [] and end_of_turn.counts == {"finished": 0, "unfinished": 2}


def test_the_llm_leaves_a_taken_back_exchange_out_of_its_history():
    turns = Turns()
    handler = LLMHandler(wiring(turns), LLMConfig(max_history_turns=4))
    handler.history = deque(maxlen=4)
    turns.begin(1)
    handler._unconfirmed = (1, "What is the capital of Italy?", "Rome.")
    turns.retract(1)
    handler.chat_model = SimpleNamespace(prompt_ids=lambda messages: np.zeros((1, 8)), context_tokens=None)
    handler.cfg = dataclasses.replace(handler.cfg, system_prompt="")
    messages = handler.build_messages("What is the capital of Italy and how many people live there?")
    assert [m["role"] for m in messages] == ["user"] and not handler.history


# ---- the real model --------------------------------------------------------------------------------------------
FINISHED = ["What time is it?", "Tell me a joke.", "What is the capital of Italy?",
            "Can you explain how a rainbow forms after the rain?", "Turn off the lights in the kitchen, please."]
UNFINISHED = ["I was wondering", "Can you explain how", "What is the", "Well, I am not sure, but",
              "What is the capital of Italy,", "Remind me to call my"]


@pytest.mark.slow
def test_smollm2_rates_finished_words_above_the_default_threshold_and_unfinished_ones_below(smollm2_dir):  # noqa: F811
    cfg = EndOfTurnConfig(model=str(smollm2_dir), device="cpu")
    model = ChatTurnModel.load(cfg)
    assert model.end_id == model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    finished = {text: model(text) for text in FINISHED}
    unfinished = {text: model(text) for text in UNFINISHED}
    # margins of an order of magnitude or more either side of the default 0.01 (measured: finished >= 0.3,
    # unfinished <= 0.001), so CPU rounding cannot flip one
    assert min(finished.values()) >= 10 * cfg.threshold, finished
    assert max(unfinished.values()) <= cfg.threshold / 5, unfinished
    assert model("") == 0.0
    for text in FINISHED[:2] + UNFINISHED[:2]:  # the reused K/V of the template's head changes nothing
        assert model(text) == pytest.approx(model(text, reuse_head=False), rel=1e-4, abs=1e-7), text


@pytest.mark.slow
def test_the_stt_judges_its_speculative_transcript_with_the_real_models(smollm2_dir):  # noqa: F811
    from handlers.stt import STTHandler
    from s2s.config import STTConfig

    end_of_turn = EndOfTurn(EndOfTurnConfig(silence_ms=128, model=str(smollm2_dir), device="cpu"))
    stt = STTHandler(dataclasses.replace(wiring(Turns()), end_of_turn=end_of_turn), STTConfig(device="cpu"))
    stt.setup()
    done = speak("What time is it?")
    list(stt.process(SpeculativeSegment(done, 0.0, done.size / 16000)))
    assert end_of_turn.finished(0.0, done.size / 16000), stt.speculation
    begun = speak("I was wondering")
    list(stt.process(SpeculativeSegment(begun, 5.0, 5.0 + begun.size / 16000)))
    assert not end_of_turn.finished(5.0, 5.0 + begun.size / 16000), stt.speculation
    assert end_of_turn.counts == {"finished": 1, "unfinished": 1}
    transcript = list(stt.process(SpeechSegment(begun, 5.0, 5.0 + begun.size / 16000, 0.0, 1)))
    assert isinstance(transcript[0], Transcript) and stt.speculative_counts["used"] == 1
