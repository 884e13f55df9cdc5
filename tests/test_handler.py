"""s2s.handler: the run loop on a real thread (poll with a timeout, survive a bad item, forward the end marker) and
the control-message prologue the base owns (controls forwarded in order, data of closed turns dropped)."""

import dataclasses
import logging
import queue
import time

import numpy as np
import pytest
from stage_harness import drain, run_stage, start, wiring

from s2s.handler import Handler
from s2s.messages import AudioFrame, EndOfStream, TextChunk, Transcript, TurnEnd, TurnFailed
from s2s.turns import Turns


class Upper(Handler):
    """Transcript -> TextChunk in upper case; "boom" raises; flush emits one last chunk. Records what ``process``
    was given."""

    name = "upper"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cleaned_up = False
        self.processed: list[object] = []

    def process(self, item):
        self.processed.append(item)
        if isinstance(item, AudioFrame):
            yield TextChunk(0, f"{item.samples.size} SAMPLES")
            return
        if item.text == "boom":
            raise RuntimeError("bad item")
        yield TextChunk(item.turn_id, item.text.upper())

    def flush(self):
        yield TextChunk(99, "FLUSHED")

    def cleanup(self):
        self.cleaned_up = True


def open_turns(*turn_ids: int) -> Turns:
    turns = Turns(half_duplex=False)
    for turn_id in turn_ids:
        turns.begin(turn_id)
    return turns


def test_processes_flushes_forwards_end_of_stream_and_cleans_up():
    handler = Upper(wiring(open_turns(1)))
    thread = start(handler)
    handler.in_queue.put(Transcript(1, "hello"))
    handler.in_queue.put(EndOfStream("done"))
    out = drain(handler.out_queue, timeout=30)
    assert out == [TextChunk(1, "HELLO"), TextChunk(99, "FLUSHED"), EndOfStream("done")]
    thread.join(30)
    assert not thread.is_alive() and handler.finished.is_set() and handler.cleaned_up


def test_failing_item_is_logged_with_its_turn_and_reported(caplog):
    handler = Upper(wiring(open_turns(7, 8)))
    with caplog.at_level(logging.ERROR, logger="s2s.handler"):
        out = run_stage(handler, [Transcript(7, "boom"), Transcript(8, "next")], timeout=30)
    assert out[0] == TurnFailed(7, "upper", "RuntimeError: bad item")
    assert out[1] == TextChunk(8, "NEXT")  # the stage carried on
    assert "upper failed on Transcript (turn 7)" in caplog.text
    assert handler.busy_since is None and handler.current_turn is None


def test_idle_handler_stops_within_its_poll_time():
    handler = Upper(wiring(sink=True, poll_s=0.05))
    thread = start(handler)
    time.sleep(0.1)
    t0 = time.monotonic()
    handler.stop_event.set()
    thread.join(30)
    assert not thread.is_alive()
    # One poll is 0.05 s; the bound only has to tell "saw the stop" from "blocked on the queue" on a loaded machine.
    assert time.monotonic() - t0 < 5.0
    assert handler.finished.is_set() and handler.cleaned_up


def test_put_gives_up_on_a_full_queue_when_stopped():
    handler = Upper(dataclasses.replace(wiring(poll_s=0.01), out_queue=queue.Queue(maxsize=1)))
    assert handler.put("first") is True
    handler.stop_event.set()
    assert handler.put("second") is False  # would block forever on the full queue without the stop


def test_progress_and_busy_are_tracked():
    handler = Upper(wiring(poll_s=0.01))
    before = handler.last_progress
    time.sleep(0.01)
    handler.in_queue.put(Transcript(1, "a"))
    assert handler.get() == Transcript(1, "a")
    assert handler.last_progress > before
    assert handler.get() is None  # empty: returns after poll_s instead of blocking


def test_process_must_be_overridden():
    with pytest.raises(NotImplementedError):
        Handler(wiring(sink=True)).process("x")


# ---- the control-message prologue ------------------------------------------------------------------------------
def test_controls_are_forwarded_in_order_without_reaching_process():
    handler = Upper(wiring(open_turns(1, 2)))
    failed = TurnFailed(2, "stt", "boom")
    items = [Transcript(1, "a"), TurnEnd(1), failed, Transcript(1, "b"), TurnEnd(2)]
    out = run_stage(handler, items, timeout=30)
    assert out == [TextChunk(1, "A"), TurnEnd(1), failed, TextChunk(1, "B"), TurnEnd(2), TextChunk(99, "FLUSHED"),
                   EndOfStream()]
    assert handler.processed == [Transcript(1, "a"), Transcript(1, "b")]


def test_controls_of_a_closed_turn_are_still_forwarded():
    turns = open_turns(3)
    turns.end(3, error="tts failed")
    handler = Upper(wiring(turns))
    failed = TurnFailed(3, "tts", "boom")
    assert run_stage(handler, [failed, TurnEnd(3)], timeout=30) == [failed, TurnEnd(3), TextChunk(99, "FLUSHED"),
                                                                     EndOfStream()]
    assert handler.processed == []


def test_data_of_a_closed_turn_is_dropped_before_process():
    turns = open_turns(1, 2)
    turns.end(2, error="llm failed")
    handler = Upper(wiring(turns))
    frame = AudioFrame(samples=np.zeros(160, dtype=np.float32), sample_rate=16000, t_captured=0.0)
    items = [Transcript(2, "boom"), Transcript(5, "never begun"), Transcript(1, "open"), frame]
    out = run_stage(handler, items, timeout=30)
    assert out == [TextChunk(1, "OPEN"), TextChunk(0, "160 SAMPLES"), TextChunk(99, "FLUSHED"), EndOfStream()]
    assert handler.processed == [Transcript(1, "open"), frame]  # items outside a turn always reach process


class EndsTurns(Upper):
    """Overrides ``control``: ends the turn on TurnEnd and forwards nothing; a TurnFailed becomes a chunk."""

    def control(self, item):
        if isinstance(item, TurnEnd):
            self.turns.end(item.turn_id)
            return
        yield TextChunk(item.turn_id, f"FAILED IN {item.stage}")


def test_control_can_be_overridden():
    turns = open_turns(1, 2)
    handler = EndsTurns(wiring(turns))
    items = [TurnEnd(1), Transcript(1, "after the end"), TurnFailed(2, "tts", "boom"), Transcript(2, "still open")]
    out = run_stage(handler, items, timeout=30)
    assert out == [TextChunk(2, "FAILED IN tts"), TextChunk(2, "STILL OPEN"), TextChunk(99, "FLUSHED"), EndOfStream()]
    assert handler.processed == [Transcript(2, "still open")]  # turn 1 was closed by the override
    assert not turns.is_open(1) and turns.is_open(2)
