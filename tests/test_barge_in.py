"""Barge-in without the room: the detector on synthetic frames and on real Silero (backchannel, cough, door), the
played position mapped back to words, interrupted turns, the speaker's fade-out, the VAD's full-duplex policy and
the LLM's history of an interrupted reply."""

import dataclasses
import time

import numpy as np
import pytest
from fixtures_models import speak
from scipy.signal import butter, lfilter
from simulated_room import onset
from stage_harness import wiring
from test_llm import ask, scripted_handler, tokenizer  # noqa: F401  (fixture)

from handlers.audio_out import FADE_S, SpeakerSink
from handlers.llm import INTERRUPTED
from handlers.vad import FRAME_SAMPLES, SileroSpeechModel, VADHandler
from s2s.barge_in import BargeInDetector
from s2s.config import AudioOutConfig, VADConfig
from s2s.far_end import FarEnd
from s2s.messages import AudioChunk, AudioFrame, SpeechSegment, TextChunk, Transcript, TurnEnd
from s2s.played_text import PlayedText, words_up_to
from s2s.turns import Turns

RATE = 16000
F = FRAME_SAMPLES
rng = np.random.default_rng(0)


def noise(n: int, dbfs: float) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


def feed(detector: BargeInDetector, near: np.ndarray, probabilities: list[float], far: np.ndarray | None = None,
         t0: float = 0.0) -> list:
    """One frame per probability; the BargeIns found."""
    found = []
    for k, p in enumerate(probabilities):
        frame_far = None if far is None else far[k * F:(k + 1) * F]
        b = detector(near[k * F:(k + 1) * F], p, t0 + k * F / RATE, frame_far)
        if b is not None:
            found.append(b)
    return found


def burst(speech_s: float, before: int = 10, after: int = 10, level: float = -25.0) -> np.ndarray:
    """Silence (-75 dBFS), ``speech_s`` of loud noise, silence: ``before``/``after`` frames either side."""
    n = round(speech_s * RATE)
    return np.concatenate([noise(before * F, -75), noise(n, level), noise(after * F + (-n) % F, -75)])


def detector(min_ms: int = 200) -> BargeInDetector:
    return BargeInDetector(min_ms, threshold=0.5, echo_margin_db=10.0)


# ---- the detector on synthetic frames ----------------------------------------------------------------------------
def test_the_minimum_duration_of_speech_interrupts_and_less_does_not():
    for speech_s, expected in ((0.15, 0), (0.3, 1)):
        near = burst(speech_s)
        frames = len(near) // F
        probabilities = [0.9 if 10 <= k < 10 + round(speech_s * RATE / F) + 2 else 0.0 for k in range(frames)]
        found = feed(detector(), near, probabilities)
        assert len(found) == expected, speech_s
    (b,) = found
    assert abs(b.onset_s - 10 * F / RATE) < 0.005  # the first loud sub-block
    assert 0.2 <= b.speech_s and b.decided_s - b.onset_s < 0.2 + 2 * F / RATE


def test_probability_lingering_after_a_sound_adds_no_duration():
    """Silero keeps a high probability for a few frames after a 150 ms sound (192 ms of frames): only the sound
    counts."""
    near = burst(0.15)
    probabilities = [0.9 if 10 <= k < 10 + 10 else 0.0 for k in range(len(near) // F)]  # 320 ms of "speech"
    assert feed(detector(), near, probabilities) == []


def test_silero_late_by_two_frames_still_counts_from_the_onset():
    near = burst(0.25)
    probabilities = [0.9 if 12 <= k < 20 else 0.0 for k in range(len(near) // F)]  # rises 2 frames late
    (b,) = feed(detector(), near, probabilities)
    assert abs(b.onset_s - 10 * F / RATE) < 0.005


def test_a_pause_longer_than_the_gap_starts_the_count_again():
    quiet = noise(8 * F, -75)
    short = np.concatenate([noise(10 * F, -75), noise(4 * F, -25), quiet, noise(4 * F, -25), noise(10 * F, -75)])
    probabilities = [0.9 if (10 <= k < 14 or 22 <= k < 26) else 0.0 for k in range(len(short) // F)]
    assert feed(detector(), short, probabilities) == []  # 128 + 128 ms, 256 ms apart: two sounds
    close = np.concatenate([noise(10 * F, -75), noise(4 * F, -25), noise(2 * F, -75), noise(4 * F, -25),
                            noise(10 * F, -75)])
    probabilities = [0.9 if (10 <= k < 14 or 16 <= k < 20) else 0.0 for k in range(len(close) // F)]
    assert len(feed(detector(), close, probabilities)) == 1  # 64 ms apart: one utterance


def test_residual_echo_that_silero_calls_speech_does_not_interrupt_but_the_user_does():
    """The far end plays at -12 dBFS; the canceller leaves a residual 30 dB under it. Silero calls the residual
    speech for a whole second: the echo guard (the coupling learnt while Silero said no) holds it off. The user,
    10 dB under the far end, interrupts."""
    d = detector()
    seconds = 4
    far = noise(seconds * RATE, -12)
    residual = (far * 10 ** (-30 / 20)).astype(np.float32)  # [n]
    learn = [0.05] * (2 * RATE // F)  # 2 s: Silero says no, the coupling learns the residual
    fooled = [0.9] * (RATE // F)  # 1 s: Silero says speech
    assert feed(d, residual[:3 * RATE], learn + fooled, far[:3 * RATE]) == []
    assert -35 < d.coupling_db < -25  # learnt from the residual, and held while Silero said speech
    user = residual[3 * RATE:] + noise(RATE, -22)
    (b,) = feed(d, user, [0.9] * (RATE // F), far[3 * RATE:], t0=3.0)
    assert b.onset_s < 3.05


def test_the_users_first_frames_do_not_teach_the_coupling():
    d = detector()
    far = noise(3 * RATE, -12)
    near = np.concatenate([noise(2 * RATE, -75), noise(RATE, -30)])  # the user: 18 dB under the far end
    probabilities = [0.02] * (2 * RATE // F) + [0.05, 0.1] + [0.9] * (RATE // F - 2)  # Silero 2 frames late
    (b,) = feed(d, near, probabilities, far)
    assert d.coupling_db < -40  # decayed from its start (-30 dB): the user's -18 dB was not learnt
    assert b.onset_s == pytest.approx(2.0, abs=0.01)


# ---- the detector on real Silero ---------------------------------------------------------------------------------
def hum(seconds: float, f0: float = 120.0) -> np.ndarray:
    """A voiced nasal "mm": harmonics of ``f0``, strong below 400 Hz, with 20/30 ms fades."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k**1.5 * (2.0 if k * f0 < 400 else 0.5) for k in range(1, 25))
    envelope = np.clip(np.minimum(t / 0.02, (seconds - t) / 0.03), 0, 1)
    return (0.3 * x * envelope / np.max(np.abs(x))).astype(np.float32)


def cough() -> np.ndarray:
    """Two bursts of band-limited noise (300-3500 Hz), 10 ms attack, 60 ms decay."""
    b, a = butter(2, [300 / 8000, 3500 / 8000], "band")
    parts = []
    for seconds in (0.25, 0.18):
        t = np.arange(int(seconds * RATE)) / RATE
        x = lfilter(b, a, rng.standard_normal(len(t))) * np.minimum(t / 0.01, 1) * np.exp(-t / 0.06)
        parts += [0.5 * x / np.max(np.abs(x)), np.zeros(int(0.12 * RATE))]
    return np.concatenate(parts).astype(np.float32)


def door() -> np.ndarray:
    """A slam: decaying 70/140/310 Hz resonances and a sharp click."""
    t = np.arange(int(0.5 * RATE)) / RATE
    x = sum(a * np.sin(2 * np.pi * f * t) * np.exp(-t / tau) for a, f, tau in ((1, 70, .12), (.6, 140, .08),
                                                                               (.3, 310, .05)))
    x = x + 0.5 * rng.standard_normal(len(t)) * np.exp(-t / 0.008)
    return (0.8 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def silero() -> SileroSpeechModel:
    return SileroSpeechModel()


def silero_barge_ins(model: SileroSpeechModel, sound: np.ndarray) -> tuple[list, float]:
    """(BargeIns, the highest speech probability) for ``sound`` between 0.5 s of quiet room noise."""
    audio = np.concatenate([noise(RATE // 2, -70), sound, noise(RATE // 2 + F, -70)])
    audio = audio[:len(audio) // F * F]
    model.reset()
    probabilities = [model(audio[k * F:(k + 1) * F]) for k in range(len(audio) // F)]
    return feed(detector(), audio, probabilities), max(probabilities)


@pytest.mark.parametrize("name", ["mm 150 ms", "espeak mm cut to 150 ms", "cough", "door"])
def test_a_backchannel_a_cough_or_a_door_does_not_interrupt(silero, name):
    if name == "espeak mm cut to 150 ms":
        mm = speak("mm")
        start = int(onset(mm, RATE) * RATE) + 800
        sound = mm[start:start + int(0.15 * RATE)] * np.clip(np.minimum(np.arange(2400) / 160,
                                                                          (2400 - np.arange(2400)) / 240), 0, 1)
    else:
        sound = {"mm 150 ms": hum(0.15), "cough": cough(), "door": door()}[name]
    found, top = silero_barge_ins(silero, sound.astype(np.float32))
    print(f"\n{name}: Silero's highest speech probability {top:.2f}")
    assert found == []


def test_a_spoken_question_interrupts_within_a_quarter_second_of_its_onset(silero):
    speech = 0.5 * speak("Wait, what is the capital of Italy?")
    (b, *_), _ = silero_barge_ins(silero, speech)
    start = 0.5 + onset(speech, RATE)
    assert b.onset_s == pytest.approx(start, abs=0.04)
    assert b.decided_s - start < 0.25 + 2 * F / RATE


# ---- what was heard ----------------------------------------------------------------------------------------------
def test_words_up_to_a_fraction():
    assert words_up_to("one two three four", 0.5) == "one two"
    assert words_up_to("one two three four", 0.74) == "one two"
    assert words_up_to("one two three four", 1.0) == "one two three four"
    assert words_up_to("one two", 0.0) == ""


def test_played_position_maps_back_to_the_text():
    played = PlayedText(rate=1000)
    played.received(0, "The capital of France", 2000)
    played.received(1, "is Paris, a large city.", 1000)
    played.received(1, "is Paris, a large city.", 1000)  # a second block of the same chunk
    played.played(2000 + 1000)  # the first chunk, and half of the second
    assert played.heard(complete=True) == "The capital of France is Paris,"
    played.played(1000)
    assert played.heard(complete=True) == "The capital of France is Paris, a large city."


def test_an_unfinished_chunk_is_at_least_as_long_as_its_words():
    played = PlayedText(rate=1000)
    played.received(0, "one two three four five", 1000)  # 1 s so far; 5 words take 2 s at 2.5 words/s
    played.played(1000)
    assert played.heard() == "one two"
    assert played.heard(complete=True) == "one two three four five"


# ---- interrupted turns ---------------------------------------------------------------------------------------------
def test_an_interrupted_turn_is_closed_at_once_and_recorded_when_the_sink_ends_it():
    turns = Turns(half_duplex=False)
    turns.begin(1, t_speech_end=100.0)
    cancel = turns.cancel_event(1)
    assert turns.open_turns() == [1] and not cancel.is_set()
    assert turns.interrupt(1, t_onset=105.0, t_detected=105.25)
    assert not turns.interrupt(1, t_onset=106.0)  # once
    assert cancel.is_set() and not turns.is_open(1) and turns.interrupted(1) and turns.open_turns() == []
    assert turns.records == []  # not ended yet: the sink ends it when playback stops
    turns.mark(1, "playback_stopped", 105.3)
    turns.end(1, heard="The capital")
    (record,) = turns.records
    assert record["interrupted"] and record["error"] is None
    assert record["barge_in_detected_ms"] == pytest.approx(250.0) and record["playback_stopped_ms"] == pytest.approx(
        300.0)
    assert turns.heard(1) == "The capital" and not turns.interrupted(1)
    turns.begin(2)
    turns.end(2)
    assert turns.records[1]["interrupted"] is False and turns.records[1]["barge_in_detected_ms"] is None
    assert turns.heard(2) is None and turns.cancel_event(2).is_set()


class FakeStream:
    latency = 0.02

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, block) -> bool:
        self.blocks.append(block[:, 0].copy())
        return False


def full_duplex_speaker(turns: Turns) -> SpeakerSink:
    """A speaker sink with a far end, 256-frame blocks at 16 kHz, on a fake stream (what setup() opens)."""
    sink = SpeakerSink(dataclasses.replace(wiring(turns, sink=True), far_end=FarEnd()),
                       AudioOutConfig(sample_rate=RATE, block_size=256))
    sink.stream, sink.rate = FakeStream(), RATE
    return sink


def test_speaker_fades_out_an_interrupted_reply_and_plays_nothing_of_it_afterwards():
    turns = Turns(half_duplex=False)
    sink = full_duplex_speaker(turns)
    turns.begin(1)
    text = "one two three four five six seven eight"
    sink.handle(AudioChunk(1, np.full(RATE, 0.5, dtype=np.float32), RATE, text=text, text_index=0))
    fade = round(FADE_S * RATE)
    handed = len(sink.stream.blocks) * 256
    assert handed == (RATE - fade) // 256 * 256  # the fade's samples stay in hand
    turns.interrupt(1, t_onset=time.monotonic())
    t0 = time.monotonic()
    assert sink.get() is None  # idle: the poll finds the interrupted turn
    assert time.monotonic() - t0 < 1.0
    last = sink.stream.blocks[-1]
    assert last[0] == pytest.approx(0.5) and np.all(np.diff(last[:fade]) < 0) and not last[fade:].any()
    (record,) = turns.records
    assert record["interrupted"] and record["playback_stopped_ms"] is not None
    heard = turns.heard(1)
    assert text.startswith(heard) and 0 < len(heard.split()) < 8  # about what 1 s of audio of 3.2 s of words holds
    count = len(sink.stream.blocks)
    sink.handle(AudioChunk(1, np.full(RATE, 0.5, dtype=np.float32), RATE, text=text, text_index=0))
    sink.handle(TurnEnd(1))
    assert len(sink.stream.blocks) == count  # nothing of the old turn reaches the speaker afterwards
    assert np.count_nonzero(sink.far_end.read(0, 2 * RATE)) >= handed  # the echo canceller's reference got it all


def test_speaker_pauses_a_turn_and_plays_it_on_with_nothing_lost():
    turns = Turns(half_duplex=False)
    sink = full_duplex_speaker(turns)
    turns.begin(1)
    ramp = np.linspace(0.1, 0.9, RATE, dtype=np.float32)  # every sample tells where it was in the reply
    sink.handle(AudioChunk(1, ramp[:RATE // 2], RATE, text="one two", text_index=0))
    turns.pause(1)
    sink.get()
    before = len(sink.stream.blocks)
    faded = sink.stream.blocks[-1]
    fade = round(FADE_S * RATE)
    assert np.all(np.diff(faded[:fade]) < 0) and not faded[fade:].any()
    sink.handle(AudioChunk(1, ramp[RATE // 2:], RATE, text="one two", text_index=0))  # held while paused
    assert len(sink.stream.blocks) == before
    turns.resume(1)
    sink.handle(TurnEnd(1))
    played = np.concatenate(sink.stream.blocks)
    audio = played[np.nonzero(played)[0]]
    assert audio[-1] == pytest.approx(0.9, abs=1e-3)  # played on to the end
    resumed = sink.stream.blocks[before]
    assert resumed[0] < 0.01 and resumed[fade] > 0.45  # faded in, where the reply had paused (mid-ramp)
    (record,) = turns.records
    assert not record["interrupted"] and record["error"] is None


def test_an_interruption_while_paused_drops_the_held_audio():
    turns = Turns(half_duplex=False)
    sink = full_duplex_speaker(turns)
    turns.begin(1)
    sink.handle(AudioChunk(1, np.full(RATE, 0.5, dtype=np.float32), RATE, text="a b c d", text_index=0))
    turns.pause(1)
    sink.get()
    count = len(sink.stream.blocks)
    turns.interrupt(1, t_onset=time.monotonic())
    sink.get()
    assert len(sink.stream.blocks) == count  # already quiet: no second fade
    (record,) = turns.records
    assert record["interrupted"] and record["playback_stopped_ms"] is not None


# ---- the VAD in full duplex --------------------------------------------------------------------------------------
class Scripted:
    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities, self.calls = list(probabilities), 0

    def __call__(self, frame) -> float:
        p = self.probabilities[self.calls] if self.calls < len(self.probabilities) else 0.0
        self.calls += 1
        return p

    def reset(self) -> None:
        pass


def full_duplex_vad(probabilities: list[float], turns: Turns) -> VADHandler:
    handler = VADHandler(wiring(turns), VADConfig(min_speech_ms=96, min_silence_ms=96, speech_pad_ms=64))
    handler.model = Scripted([])
    handler.setup()
    handler.model.probabilities, handler.model.calls = probabilities, 0
    return handler


def frames_of(near: np.ndarray, far: np.ndarray | None = None) -> list[AudioFrame]:
    return [AudioFrame(near[k:k + F], RATE, 100.0 + (k + F) / RATE, k / RATE,
                       None if far is None else far[k:k + F]) for k in range(0, len(near), F)]


def test_full_duplex_vad_drops_short_sounds_while_a_turn_is_open_and_barges_in_on_speech():
    turns = Turns(half_duplex=False)
    turns.begin(turns.new_id())  # turn 1: the assistant is replying
    short = [0.0] * 10 + [0.9] * 5 + [0.0] * 10  # 160 ms: an utterance for the VAD, too short to interrupt
    long = [0.0] * 5 + [0.9] * 15 + [0.0] * 10
    near = np.concatenate([burst(5 * F / RATE, 10, 10), burst(15 * F / RATE, 5, 10)])
    handler = full_duplex_vad(short + long, turns)
    out = [o for frame in frames_of(near) for o in handler.process(frame)]
    (segment,) = out  # only the long one became a turn
    assert isinstance(segment, SpeechSegment) and segment.turn_id == 2
    assert turns.interrupted(1) and turns.is_open(2)
    (interruption,) = handler.interruptions
    assert interruption.turn_ids == (1,)
    assert segment.start_s <= interruption.barge_in.onset_s  # the utterance holds the speech before the decision


def test_full_duplex_vad_pauses_on_a_short_sound_and_lets_the_reply_play_on():
    turns = Turns(half_duplex=False)
    turns.begin(turns.new_id())
    short = [0.0] * 10 + [0.9] * 5 + [0.0] * 10  # 160 ms: past the pause point (50 ms), short of 200 ms
    handler = full_duplex_vad(short, turns)
    frames = frames_of(burst(5 * F / RATE, 10, 10))
    paused = []
    for frame in frames:
        list(handler.process(frame))
        paused.append(turns.paused(1))
    assert any(paused) and not paused[-1]  # paused while the sound went on, then resumed
    assert turns.is_open(1) and handler.interruptions == []


def test_full_duplex_vad_takes_utterances_when_the_assistant_is_quiet():
    turns = Turns(half_duplex=False)
    handler = full_duplex_vad([0.0] * 10 + [0.9] * 5 + [0.0] * 10, turns)
    (segment,) = [o for frame in frames_of(burst(5 * F / RATE)) for o in handler.process(frame)]
    assert segment.turn_id == 1 and handler.interruptions == []


# ---- the history of an interrupted reply -------------------------------------------------------------------------
def test_history_keeps_only_what_was_played_marked_as_interrupted(tokenizer):  # noqa: F811
    turns = Turns(half_duplex=False)
    reply = "Paris is the capital of France. It has many museums and parks."
    handler, _ = scripted_handler(tokenizer, reply, turns, max_history_turns=4, min_chunk_chars=4)
    turn_id, outputs = ask(handler, "Tell me about Paris.")
    assert outputs[-1] == TurnEnd(turn_id)
    turns.interrupt(turn_id, t_onset=time.monotonic())
    turns.end(turn_id, heard="Paris is the capital")
    messages = handler.build_messages("And Rome?")
    assert list(handler.history) == [("Tell me about Paris.", f"Paris is the capital {INTERRUPTED}")]
    assert messages[-2:] == [{"role": "assistant", "content": f"Paris is the capital {INTERRUPTED}"},
                             {"role": "user", "content": "And Rome?"}]


def test_an_interruption_stops_the_generation_and_history_notes_it(tokenizer):  # noqa: F811
    turns = Turns(half_duplex=False)
    reply = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten."
    handler, model = scripted_handler(tokenizer, reply, turns, max_history_turns=4, min_chunk_chars=1)
    turn_id = turns.new_id()
    turns.begin(turn_id)
    outputs = []
    for item in handler.process(Transcript(turn_id, "Count to ten.", "en")):
        outputs.append(item)
        if isinstance(item, TextChunk) and item.index == 1:
            turns.interrupt(turn_id, t_onset=time.monotonic())
    chunks = [o for o in outputs if isinstance(o, TextChunk)]
    assert outputs[-1] == TurnEnd(turn_id) and len(chunks) == 2  # the LLM stopped at its next step
    assert model.steps < len(model.script)
    turns.end(turn_id, heard="One.")
    ask(handler, "Go on.")
    assert list(handler.history) == [("Count to ten.", f"One. {INTERRUPTED}")]
