"""VAD: the utterance state machine with a scripted probability model, the handler's half-duplex behaviour, and
Silero itself on espeak-ng speech, silence and noise."""

import time

import numpy as np
import pytest
from fixtures_models import speech_16k  # noqa: F401  (session fixture)
from stage_harness import run_stage, start, wiring

from handlers.vad import FRAME_S, FRAME_SAMPLES, UtteranceDetector, VADHandler
from s2s.config import VADConfig
from s2s.messages import AudioFrame, EndOfStream, SpeechSegment, TurnEnd
from s2s.turns import Turns

CFG = VADConfig(threshold=0.5, min_speech_ms=96, min_silence_ms=96, speech_pad_ms=64, max_utterance_s=30.0)
"""3 voiced frames make speech, 3 quiet frames end it, 2 frames of padding on each side."""


class ScriptedModel:
    """Returns the next scripted probability per frame; counts calls and resets."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = list(probabilities)
        self.calls = 0
        self.resets = 0

    def __call__(self, frame: np.ndarray) -> float:
        assert frame.shape == (FRAME_SAMPLES,) and frame.dtype == np.float32
        p = self.probabilities[self.calls] if self.calls < len(self.probabilities) else 0.0
        self.calls += 1
        return p

    def reset(self) -> None:
        self.resets += 1


def numbered_frames(n: int) -> np.ndarray:
    """n frames of audio where every sample of frame k equals k / 1000 (to see which frames a segment holds)."""
    return np.repeat(np.arange(n, dtype=np.float32) / 1000, FRAME_SAMPLES)  # [n * FRAME_SAMPLES]


def frames_in(audio: np.ndarray) -> list[int]:
    return [round(float(v) * 1000) for v in audio.reshape(-1, FRAME_SAMPLES)[:, 0]]


def feed(detector: UtteranceDetector, audio: np.ndarray, block: int = FRAME_SAMPLES, t0: float = 100.0) -> list:
    """Feed ``audio`` in blocks; the capture clock is ``t0`` + stream time. Returns (block index, utterance) pairs."""
    found = []
    for k, first in enumerate(range(0, audio.size, block)):
        samples = audio[first:first + block]
        for utterance in detector(samples, first / 16000, t0 + (first + samples.size) / 16000):
            found.append((k, utterance))
    return found


def test_preroll_and_triggering_frame_are_kept():
    script = [0.0] * 10 + [0.9] * 5 + [0.0] * 10
    model = ScriptedModel(script)
    ((block, utterance),) = feed(UtteranceDetector(CFG, model), numbered_frames(len(script)))
    assert frames_in(utterance.audio) == list(range(8, 17))  # 2 pre-roll, 5 voiced (from 10), 2 padding
    assert utterance.start_s == pytest.approx(8 * FRAME_S)
    assert utterance.end_s == pytest.approx(15 * FRAME_S)  # end of the last voiced frame
    assert utterance.t_speech_end == pytest.approx(100.0 + 15 * FRAME_S)
    assert block == 17  # the third quiet frame (min_silence_ms = 96) ends it
    assert isinstance(utterance, SpeechSegment) and utterance.turn_id == 0  # the handler opens the turn


def test_short_bursts_are_dropped():
    script = [0.0] * 5 + [0.9, 0.9] + [0.0] * 10 + [0.9] + [0.0] * 10
    model = ScriptedModel(script)
    detector = UtteranceDetector(CFG, model)
    assert feed(detector, numbered_frames(len(script))) == []
    assert detector.flush() == []
    assert model.resets >= 3  # construction, and after each burst


def test_silence_shorter_than_min_silence_does_not_end_it():
    script = [0.9] * 4 + [0.0, 0.0] + [0.9] * 4 + [0.0] * 5
    ((_, utterance),) = feed(UtteranceDetector(CFG, ScriptedModel(script)), numbered_frames(len(script)))
    assert frames_in(utterance.audio) == list(range(12))


def test_hysteresis_keeps_speech_going_just_under_the_threshold():
    script = [0.9] * 4 + [0.4] * 6 + [0.1] * 5  # 0.4 >= 0.5 - 0.15 continues the speech
    ((_, utterance),) = feed(UtteranceDetector(CFG, ScriptedModel(script)), numbered_frames(len(script)))
    assert utterance.end_s == pytest.approx(10 * FRAME_S)


def test_max_length_cuts_and_sends():
    cfg = VADConfig(threshold=0.5, min_speech_ms=96, min_silence_ms=96, speech_pad_ms=64, max_utterance_s=1.0)
    script = [0.9] * 80
    found = feed(UtteranceDetector(cfg, ScriptedModel(script)), numbered_frames(len(script)))
    assert len(found) == 2
    max_frames = int(1.0 / FRAME_S)
    assert [frames_in(u.audio) for _, u in found] == [list(range(max_frames)), list(range(max_frames, 2 * max_frames))]


def test_flush_sends_an_open_utterance_if_long_enough():
    detector = UtteranceDetector(CFG, ScriptedModel([0.0] * 3 + [0.9] * 4))
    assert feed(detector, numbered_frames(7)) == []
    (utterance,) = detector.flush()
    assert frames_in(utterance.audio) == [1, 2, 3, 4, 5, 6]
    short = UtteranceDetector(CFG, ScriptedModel([0.0] * 3 + [0.9] * 2))
    feed(short, numbered_frames(5))
    assert short.flush() == []


def test_reset_forgets_the_open_utterance():
    model = ScriptedModel([0.9] * 5 + [0.0] * 5)
    detector = UtteranceDetector(CFG, model)
    feed(detector, numbered_frames(5))
    assert detector.in_speech
    resets = model.resets
    detector.reset()
    assert not detector.in_speech and model.resets == resets + 1
    assert detector.flush() == []


@pytest.mark.parametrize("block", [100, 512, 1000, 4096])
def test_blocks_of_any_size_are_reframed_with_exact_times(block):
    script = [0.0] * 10 + [0.9] * 5 + [0.0] * 10
    ((_, utterance),) = feed(UtteranceDetector(CFG, ScriptedModel(script)), numbered_frames(len(script)), block)
    assert frames_in(utterance.audio) == list(range(8, 17))
    assert utterance.start_s == pytest.approx(8 * FRAME_S)
    assert utterance.t_speech_end == pytest.approx(100.0 + 15 * FRAME_S)


# ---- the handler -------------------------------------------------------------------------------------------------
def audio_frames(audio: np.ndarray, block: int = FRAME_SAMPLES) -> list[AudioFrame]:
    return [AudioFrame(samples=audio[s:s + block], sample_rate=16000, t_captured=(s + block) / 16000,
                       stream_time=s / 16000) for s in range(0, audio.size, block)]


def make_handler(script: list[float], turns: Turns, poll_s: float = 0.02) -> tuple[VADHandler, ScriptedModel]:
    model = ScriptedModel(script)
    handler = VADHandler(wiring(turns, poll_s=poll_s), CFG)
    handler.model = model
    handler.setup()
    model.calls = 0  # forget the warm-up calls: frame k gets script[k]
    return handler, model


def test_handler_opens_a_turn_and_ignores_audio_until_it_ends():
    utterance = [0.0] * 4 + [0.9] * 5 + [0.0] * 4
    turns = Turns(half_duplex=True)
    handler, model = make_handler(utterance + utterance, turns)
    frames = audio_frames(numbered_frames(26))
    out = [o for f in frames[:13] for o in handler.process(f)]
    (segment,) = out
    assert isinstance(segment, SpeechSegment) and turns.is_open(segment.turn_id) and not turns.listening
    assert frames_in(segment.audio) == list(range(2, 11))
    calls = model.calls
    assert [o for f in frames[13:20] for o in handler.process(f)] == []
    assert model.calls == calls  # muted: frames are dropped before the model
    turns.end(segment.turn_id)
    out = [o for f in frames[13:] for o in handler.process(f)]
    (second,) = out
    assert second.turn_id != segment.turn_id


def test_handler_forwards_turn_controls_and_flushes_at_end_of_input():
    turns = Turns(half_duplex=True)
    handler, _ = make_handler([0.0] * 2 + [0.9] * 6, turns)
    out = run_stage(handler, [TurnEnd(7), *audio_frames(numbered_frames(8))])
    segment = out[1]
    assert out == [TurnEnd(7), segment, EndOfStream()]  # the open utterance is sent when the input ends
    assert isinstance(segment, SpeechSegment) and turns.is_open(segment.turn_id)
    assert frames_in(segment.audio) == list(range(8)) and not turns.listening


def test_handler_thread_stops_promptly():
    handler, _ = make_handler([], Turns(), poll_s=0.05)
    thread = start(handler)
    for frame in audio_frames(numbered_frames(20)):
        handler.in_queue.put(frame)
    handler.stop_event.set()
    t0 = time.monotonic()
    thread.join(timeout=30)
    # The stop is seen within one poll (0.05 s) or one frame; the bound leaves room for a loaded CI machine.
    assert not thread.is_alive() and time.monotonic() - t0 < 5.0


def test_handler_thread_forwards_end_of_stream():
    handler, _ = make_handler([0.0] * 3 + [0.9] * 3 + [0.0] * 4, Turns())
    items = run_stage(handler, audio_frames(numbered_frames(10)))
    assert [type(i) for i in items] == [SpeechSegment, EndOfStream]


# ---- real Silero -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("onnx", [False, True], ids=["jit", "onnx"])
def test_silero_finds_one_segment_in_speech_and_none_in_silence_or_noise(speech_16k, onnx):  # noqa: F811
    second = np.zeros(16000, dtype=np.float32)
    padded = np.concatenate([second, speech_16k, second])
    loud = np.nonzero(np.abs(padded) > 0.02)[0]
    speech_start, speech_end = loud[0] / 16000, loud[-1] / 16000
    noise = (0.01 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32)
    cfg = VADConfig(onnx=onnx)

    def segments(audio: np.ndarray) -> list[SpeechSegment]:
        turns = Turns(half_duplex=False)
        handler = VADHandler(wiring(turns), cfg)
        handler.setup()
        out = [o for f in audio_frames(audio, 1600) for o in handler.process(f)]
        return [o for o in out + list(handler.flush()) if isinstance(o, SpeechSegment)]  # not the early guesses

    (segment,) = segments(padded)
    assert segment.start_s <= speech_start
    assert segment.end_s >= speech_end - 0.2
    assert segment.start_s + segment.audio.size / 16000 >= speech_end
    assert segment.audio.size / 16000 < speech_end - speech_start + 1.0
    assert segments(np.zeros(3 * 16000, dtype=np.float32)) == []
    assert segments(noise) == []
