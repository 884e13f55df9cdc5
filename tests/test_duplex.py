"""Full duplex end to end: the real stages (Silero, Whisper tiny.en, SmolLM2, Piper) on real threads, with the
simulated room as the sound card (tests/simulated_room.py): echo only in a loud room, a barge-in, a backchannel.

Replies are asked for by typing them into the LLM's queue (as if the STT had heard a question) so that the room
holds nothing but the assistant's voice, except for the speech a test scripts. Onsets and stops are measured in the
room's clock; the bounds asserted here are loose (a loaded 2-core CI machine), bench/duplex.py measures the real
figures.
"""

import logging
import re
import time

import numpy as np
import pytest
from fixtures_models import smollm2_dir, speak  # noqa: F401  (session fixture)
from pipeline_helpers import integration_config, reuse_models, words
from simulated_room import EchoPath, SimulatedRoom
from test_barge_in import hum

from handlers.llm import INTERRUPTED
from s2s.messages import Transcript
from s2s.pipeline import Pipeline

pytestmark = [pytest.mark.slow, pytest.mark.realtime]

WAIT_S = 120.0
"""Bound for one reply on a loaded 2-core CI machine."""
LOUD_ROOM = EchoPath(delay_s=0.08, rt60_s=0.25, gain=1.0, nonlinearity=0.5)
"""The echo is louder than the user would speak (espeak at half scale), with a mildly distorting loudspeaker."""
NORMAL_ROOM = EchoPath(delay_s=0.06, rt60_s=0.2, gain=0.5)
USER_LEVEL = 0.5
"""Scale of espeak-ng's speech for the user's voice."""


class Duplex:
    """A running full-duplex pipeline in ``room``; ``ask`` types a question, the ``wait_*`` helpers poll."""

    def __init__(self, room: SimulatedRoom, config) -> None:
        self.room = room
        self.pipeline = reuse_models(Pipeline.from_config(config))
        assert self.pipeline.duplex == "full"
        self.stages = {stage.name: stage for stage in self.pipeline.stages}
        self.turns = self.pipeline.turns
        self.asked: list[int] = []

    def __enter__(self):
        self.pipeline.start()
        return self

    def __exit__(self, *exc):
        self.room.close()
        assert self.pipeline.stop(timeout=10.0) == []

    def ask(self, text: str) -> int:
        """A turn with this transcript, as if the user had said it."""
        turn_id = self.turns.new_id()
        self.turns.begin(turn_id)
        self.stages["llm"].in_queue.put(Transcript(turn_id, text, "en"))
        self.asked.append(turn_id)
        return turn_id

    def record(self, turn_id: int) -> dict | None:
        return next((r for r in self.turns.records if r["turn"] == turn_id), None)

    def wait_record(self, turn_id: int, timeout: float = WAIT_S) -> dict:
        return wait(lambda: self.record(turn_id), timeout, f"turn {turn_id} to end")

    def wait_playing(self, timeout: float = WAIT_S) -> float:
        """Room time at which the speaker starts to play (after now)."""
        start = len(self.room.recorded("speaker"))

        def sound() -> float | None:
            played = self.room.recorded("speaker")[start:]
            loud = np.nonzero(np.abs(played) > 0.01)[0]
            return (start + loud[0]) / self.room.speaker_rate if loud.size else None

        return wait(sound, timeout, "the speaker to play")


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def duplex_config(smollm2_dir, *extra):  # noqa: F811
    return integration_config(smollm2_dir, "pipeline.duplex=full", "llm.max_history_turns=2", *extra)


def said_in_turn(caplog, logger: str, stage: str, turn_id: int) -> list[str]:
    """The texts a stage logged for a turn ("STT: turn 2: 'text' (en)", "LLM: turn 1: 'text'")."""
    found = []
    for record in caplog.records:
        match = re.match(rf"{stage}: turn {turn_id}: '(.*)'", record.getMessage()) if record.name == logger else None
        if match:
            found.append(match.group(1))
    return found


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def speaker_stop_after(room: SimulatedRoom, t: float, silence_s: float = 1.0) -> float | None:
    """Room time at which the speaker went quiet after ``t`` for at least ``silence_s`` (longer than the pauses
    within a reply, shorter than the wait for the answer to a question), or None."""
    played = np.abs(room.recorded("speaker")) > 0.005
    rate = room.speaker_rate
    window = int(silence_s * rate)
    first = int(t * rate)
    quiet_runs = np.convolve(~played[first:], np.ones(window, dtype=int), "valid")  # quiet samples per window
    full = np.nonzero(quiet_runs == window)[0]
    return None if not full.size else (first + full[0]) / rate


# ---- echo only ---------------------------------------------------------------------------------------------------
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Prague", "Dublin", "Oslo", "Athens", "Cairo",
          "Tokyo", "Lima", "Sydney", "Toronto", "Nairobi", "Seoul", "Warsaw", "Helsinki", "Istanbul"]


def test_echo_only_in_a_loud_room_never_interrupts_nor_makes_a_turn(smollm2_dir, monkeypatch):  # noqa: F811
    """20 replies of a few seconds each, back to back, in a loud room at twice real time: no interruption, and
    every turn is one that was asked for (none was made from the assistant's own voice)."""
    room = SimulatedRoom(LOUD_ROOM, speed=2.0).install(monkeypatch)
    config = duplex_config(smollm2_dir, "llm.max_history_turns=0", "llm.max_new_tokens=20")
    with Duplex(room, config) as duplex:
        for city in CITIES:
            duplex.wait_record(duplex.ask(f"Tell me about {city}."))
        vad = duplex.stages["vad"]
        played_s = np.count_nonzero(np.abs(room.recorded("speaker")) > 0.005) / room.speaker_rate
    records = [duplex.record(t) for t in duplex.asked]
    print(f"\n{len(records)} replies, {played_s:.0f} s of the assistant's voice, echo at gain "
          f"{LOUD_ROOM.gain}: {len(vad.interruptions)} interruptions, {len(duplex.turns.records) - len(records)} "
          f"turns from the echo; room underflows {room.underflows}")
    assert all(r["error"] is None and not r["interrupted"] and r["first_audio_out_ms"] is not None for r in records)
    assert played_s >= 2.0 * len(records)  # replies of several seconds
    assert vad.interruptions == []
    assert [r["turn"] for r in duplex.turns.records] == duplex.asked  # no turn from the assistant's own voice


# ---- barge-in ----------------------------------------------------------------------------------------------------
def test_barge_in_stops_the_reply_and_answers_the_new_question(smollm2_dir, monkeypatch, info_logs):  # noqa: F811
    room = SimulatedRoom(NORMAL_ROOM, speed=1.0).install(monkeypatch)
    question = USER_LEVEL * speak("Please tell me the weather in Berlin.")
    with Duplex(room, duplex_config(smollm2_dir, "llm.max_new_tokens=96")) as duplex:
        story = duplex.ask("Tell me a long story about a brave knight and a dragon.")
        start = duplex.wait_playing()
        said = room.say(question, at_s=start + 1.5, label="question")
        interrupted = duplex.wait_record(story)
        answer = wait(lambda: [r for r in duplex.turns.records if r["turn"] > story], WAIT_S, "the answer")[0]
        history = list(duplex.stages["llm"].history)
        vad = duplex.stages["vad"]
    stop = speaker_stop_after(room, said.onset_s)
    onset_to_stop = stop - said.onset_s
    print(f"\nbarge-in: onset to stop {onset_to_stop * 1000:.0f} ms (room clock); latency record: barge-in "
          f"{interrupted['barge_in_detected_ms']} ms, playback stopped {interrupted['playback_stopped_ms']} ms")
    assert interrupted["interrupted"] and interrupted["error"] is None
    assert interrupted["barge_in_detected_ms"] > 0 and interrupted["playback_stopped_ms"] > 0
    assert 0 < onset_to_stop < 0.6  # the target (300 ms) is the benchmark's; this bound leaves room for CI
    (interruption,) = vad.interruptions  # no false one
    assert interruption.turn_ids == (story,)
    assert abs(interruption.barge_in.onset_s - said.onset_s) < 0.15

    (heard_question,) = said_in_turn(info_logs, "handlers.stt", "STT", answer["turn"])
    assert {"weather", "berlin"} <= words(heard_question)
    assert answer["error"] is None and answer["first_audio_out_ms"] is not None and not answer["interrupted"]

    reply = " ".join(said_in_turn(info_logs, "handlers.llm", "LLM", story))
    ((user, assistant),) = history
    assert user.startswith("Tell me a long story") and assistant.endswith(INTERRUPTED)
    heard = assistant[:-len(INTERRUPTED)].split()
    assert 0 < len(heard) and (not reply or len(heard) < len(reply.split()))  # truncated where playback stopped


# ---- a backchannel -----------------------------------------------------------------------------------------------
def test_a_150_ms_mm_does_not_stop_the_reply(smollm2_dir, monkeypatch):  # noqa: F811
    """The microphone at 48 kHz (resampled before the canceller) and a speaker clock 100 ppm fast, on the way."""
    room = SimulatedRoom(NORMAL_ROOM, mic_rate=48000, drift_ppm=100, speed=1.0).install(monkeypatch)
    with Duplex(room, duplex_config(smollm2_dir, "llm.max_new_tokens=48")) as duplex:
        turn_id = duplex.ask("Tell me about the moon.")
        start = duplex.wait_playing()
        room.say(hum(0.15), at_s=start + 1.0, label="mm")
        record = duplex.wait_record(turn_id)
        vad = duplex.stages["vad"]
    assert not record["interrupted"] and record["error"] is None
    assert vad.interruptions == [] and [r["turn"] for r in duplex.turns.records] == [turn_id]
