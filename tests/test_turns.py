"""s2s.turns: half-duplex listening, latency marks and records, expiry."""

import json
import threading
import time

import pytest

from s2s.turns import MARKS, Turns


def test_half_duplex_mutes_until_every_turn_ends():
    turns = Turns(half_duplex=True)
    assert turns.listening
    a, b = turns.new_id(), turns.new_id()
    assert b == a + 1
    turns.begin(a)
    turns.begin(b)
    assert not turns.listening and turns.is_open(a)
    turns.end(a)
    assert not turns.listening  # b is still open
    turns.end(b)
    assert turns.listening and not turns.is_open(b)


def test_full_duplex_keeps_listening():
    turns = Turns(half_duplex=False)
    turns.begin(turns.new_id())
    assert turns.listening


def test_end_is_idempotent_and_writes_one_record(tmp_path):
    log = tmp_path / "lat.jsonl"
    turns = Turns(latency_log=str(log))
    turns.begin(1, t_speech_end=100.0)
    turns.mark(1, "transcript_ready", 100.2)
    turns.mark(1, "first_audio_out", 101.0)
    turns.mark(1, "first_audio_out", 105.0)  # later marks of the same name are ignored
    turns.end(1)
    turns.end(1)
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["turn"] == 1 and record["error"] is None
    assert record["speech_end_ms"] == 0.0
    assert record["transcript_ready_ms"] == pytest.approx(200.0)
    assert record["first_audio_out_ms"] == pytest.approx(1000.0)
    assert record["e2e_s"] == pytest.approx(1.0)
    assert record["llm_first_token_ms"] is None
    assert {f"{name}_ms" for name in MARKS} <= record.keys()
    assert turns.records == [record]


def test_failed_turn_resumes_listening_and_records_the_error():
    turns = Turns()
    turns.begin(3)
    turns.end(3, error="tts: RuntimeError: boom")
    assert turns.listening
    assert turns.records[0]["error"] == "tts: RuntimeError: boom"
    assert turns.records[0]["e2e_s"] is None


def test_unknown_mark_is_a_bug():
    with pytest.raises(AssertionError):
        Turns().mark(1, "made_up")


def test_expire_ends_a_lost_turn():
    turns = Turns(max_turn_s=0.2)
    turns.begin(1)
    assert not turns.listening
    assert turns.wait_listening(timeout=2.0)  # expire() runs while waiting
    assert not turns.is_open(1)
    assert "max_turn_s" in turns.records[0]["error"]


def test_wait_listening_wakes_when_another_thread_ends_the_turn():
    turns = Turns()
    turns.begin(1)
    assert not turns.wait_listening(timeout=0.05)
    threading.Timer(0.1, turns.end, args=(1,)).start()
    t0 = time.monotonic()
    assert turns.wait_listening(timeout=5.0)
    assert time.monotonic() - t0 < 2.0


def test_latency_log_folder_is_created_and_a_write_error_still_ends_the_turn(tmp_path):
    turns = Turns(latency_log=str(tmp_path / "logs" / "lat.jsonl"))
    turns.begin(1)
    turns.end(1)
    assert (tmp_path / "logs" / "lat.jsonl").read_text().count("\n") == 1
    blocked = Turns(latency_log=str(tmp_path))  # a folder: cannot be opened for appending
    blocked.begin(1)
    blocked.end(1)
    assert blocked.listening and len(blocked.records) == 1
