"""Full duplex end to end: the real stages (Silero, Whisper tiny.en, SmolLM2, Piper) on real threads, with the
simulated room as the sound card (tests/simulated_room.py): echo only in a loud room, a barge-in, a backchannel.

Replies are asked for by typing them into the LLM's queue (as if the STT had heard a question) so that the room
holds nothing but the assistant's voice, except for the speech a test scripts. Onsets and stops are measured in the
room's clock; the bounds asserted here are loose (a loaded 2-core CI machine), bench/duplex.py measures the real
figures.
"""

import logging
import re

import numpy as np
import pytest
from duplex_session import LOUD_ROOM, NORMAL_ROOM, USER_LEVEL, WAIT_S, Duplex, speaker_stop_after, wait
from fixtures_models import smollm2_dir, speak  # noqa: F401  (session fixture)
from pipeline_helpers import integration_config, words
from simulated_room import SimulatedRoom
from test_barge_in import hum

from handlers.llm import INTERRUPTED

pytestmark = [pytest.mark.slow, pytest.mark.realtime]


def duplex_config(smollm2_dir, *extra):  # noqa: F811
    return integration_config(smollm2_dir, "pipeline.duplex=full", "llm.max_history_turns=2", *extra)


def said_in_turn(caplog, logger: str, stage: str, turn_id: int) -> list[str]:
    """The texts a stage logged for a turn ("STT: turn 2: 'text' (en)", "LLM: turn 1: 'text'")."""
    found = []
    for record in caplog.records:
        match = re.match(rf"{stage}: turn {turn_id}: (['\"])(.*)\1", record.getMessage())  # the text as %r writes it
        if match and record.name == logger:
            found.append(match.group(2))
    return found


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


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
          f"{LOUD_ROOM.gain}: {len(vad.interruptions)} interruptions, {len(vad.pauses)} pauses, "
          f"{len(duplex.turns.records) - len(records)} turns from the echo; room underflows {room.underflows}")
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
    # The target (300 ms) is the benchmark's (bench/duplex.py); this bound only catches a barge-in that did not stop
    # playback promptly on a loaded machine.
    assert 0 < onset_to_stop < 1.0
    (interruption,) = vad.interruptions  # no false one
    assert interruption.turn_ids == (story,)
    assert said.onset_s - 0.1 < interruption.barge_in.onset_s < said.end_s  # the question, not the echo

    (heard_question,) = said_in_turn(info_logs, "handlers.stt", "STT", answer["turn"])
    asked = words("Please tell me the weather in Berlin.")
    print(f"the STT heard {heard_question!r}")
    # Its start was spoken over the reply, which the canceller thins: tiny.en mishears some words of it (word recall
    # 0.54 in bench/duplex.py, 0.94 in silence). The question's last word comes after the pause, clean.
    assert "berlin" in words(heard_question) and len(asked & words(heard_question)) >= 2
    assert answer["error"] is None and answer["first_audio_out_ms"] is not None and not answer["interrupted"]

    reply = " ".join(said_in_turn(info_logs, "handlers.llm", "LLM", story))
    ((user, assistant),) = history
    assert user.startswith("Tell me a long story") and assistant.endswith(INTERRUPTED)
    heard = assistant[:-len(INTERRUPTED)].split()
    assert 0 < len(heard) and (not reply or len(heard) < len(reply.split()))  # truncated where playback stopped


# ---- a backchannel -----------------------------------------------------------------------------------------------
def test_a_150_ms_mm_does_not_stop_the_reply(smollm2_dir, monkeypatch):  # noqa: F811
    """The reply may pause for a moment while the "mm" is heard, and plays on: nothing of it is dropped. The
    microphone at 48 kHz (resampled before the canceller) and a speaker clock 100 ppm fast, on the way."""
    room = SimulatedRoom(NORMAL_ROOM, mic_rate=48000, drift_ppm=100, speed=1.0).install(monkeypatch)
    with Duplex(room, duplex_config(smollm2_dir, "llm.max_new_tokens=48")) as duplex:
        turn_id = duplex.ask("Tell me about the moon.")
        start = duplex.wait_playing()
        room.say(hum(0.15), at_s=start + 1.0, label="mm")
        record = duplex.wait_record(turn_id)
        vad = duplex.stages["vad"]
    assert not record["interrupted"] and record["error"] is None
    assert vad.interruptions == [] and [r["turn"] for r in duplex.turns.records] == [turn_id]
