"""s2s.handler: the run loop on a real thread (poll with a timeout, survive a bad item, forward the end marker)."""

import logging
import queue
import threading
import time

import pytest

from s2s.handler import Handler
from s2s.messages import EndOfStream, TextChunk, Transcript, TurnFailed


class Upper(Handler):
    """Transcript -> TextChunk in upper case; "boom" raises; flush emits one last chunk."""

    name = "upper"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cleaned_up = False

    def process(self, item):
        if item.text == "boom":
            raise RuntimeError("bad item")
        yield TextChunk(item.turn_id, item.text.upper())

    def flush(self):
        yield TextChunk(99, "FLUSHED")

    def cleanup(self):
        self.cleaned_up = True


def drain(q: queue.Queue, timeout: float = 2.0) -> list:
    items, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = q.get(timeout=0.05)
        except queue.Empty:
            continue
        items.append(item)
        if isinstance(item, EndOfStream):
            break
    return items


def start(handler: Handler) -> threading.Thread:
    thread = threading.Thread(target=handler.run, daemon=True)
    thread.start()
    return thread


def test_processes_flushes_forwards_end_of_stream_and_cleans_up():
    q_in, q_out, stop = queue.Queue(), queue.Queue(), threading.Event()
    handler = Upper(q_in, q_out, stop, poll_s=0.01)
    thread = start(handler)
    q_in.put(Transcript(1, "hello"))
    q_in.put(EndOfStream("done"))
    out = drain(q_out)
    assert out == [TextChunk(1, "HELLO"), TextChunk(99, "FLUSHED"), EndOfStream("done")]
    thread.join(2)
    assert not thread.is_alive() and handler.finished.is_set() and handler.cleaned_up


def test_failing_item_is_logged_with_its_turn_and_reported(caplog):
    q_in, q_out, stop = queue.Queue(), queue.Queue(), threading.Event()
    handler = Upper(q_in, q_out, stop, poll_s=0.01)
    thread = start(handler)
    with caplog.at_level(logging.ERROR, logger="s2s.handler"):
        q_in.put(Transcript(7, "boom"))
        q_in.put(Transcript(8, "next"))
        q_in.put(EndOfStream())
        out = drain(q_out)
    thread.join(2)
    assert out[0] == TurnFailed(7, "upper", "RuntimeError: bad item")
    assert out[1] == TextChunk(8, "NEXT")  # the stage carried on
    assert "upper failed on Transcript (turn 7)" in caplog.text
    assert handler.busy_since is None and handler.current_turn is None


def test_idle_handler_stops_within_its_poll_time():
    q_in, stop = queue.Queue(), threading.Event()
    handler = Upper(q_in, None, stop, poll_s=0.05)
    thread = start(handler)
    time.sleep(0.1)
    t0 = time.monotonic()
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 0.5  # generous: one poll is 0.05 s
    assert handler.finished.is_set() and handler.cleaned_up


def test_put_gives_up_on_a_full_queue_when_stopped():
    q_out, stop = queue.Queue(maxsize=1), threading.Event()
    handler = Upper(queue.Queue(), q_out, stop, poll_s=0.01)
    assert handler.put("first") is True
    stop.set()
    assert handler.put("second") is False  # would block forever on the full queue without the stop


def test_progress_and_busy_are_tracked():
    q_in, q_out, stop = queue.Queue(), queue.Queue(), threading.Event()
    handler = Upper(q_in, q_out, stop, poll_s=0.01)
    before = handler.last_progress
    time.sleep(0.01)
    q_in.put(Transcript(1, "a"))
    assert handler.get() == Transcript(1, "a")
    assert handler.last_progress > before
    assert handler.get() is None  # empty: returns after poll_s instead of blocking


def test_process_must_be_overridden():
    with pytest.raises(NotImplementedError):
        Handler(queue.Queue(), None, threading.Event()).process("x")
