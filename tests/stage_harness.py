"""One way for tests to run a stage on its own thread: wire it, feed it items, collect what it emits."""

from __future__ import annotations

import queue
import threading
import time

from s2s.handler import Handler, Wiring
from s2s.messages import EndOfStream
from s2s.turns import Turns

POLL_S = 0.02


def wiring(turns: Turns | None = None, source: bool = False, sink: bool = False, poll_s: float = POLL_S) -> Wiring:
    """Fresh queues (none on the input of a source or the output of a sink), a fresh stop event."""
    return Wiring(
        turns=turns if turns is not None else Turns(),
        in_queue=None if source else queue.Queue(),
        out_queue=None if sink else queue.Queue(),
        stop_event=threading.Event(),
        poll_s=poll_s,
    )


def start(handler: Handler) -> threading.Thread:
    """``handler.run`` on a daemon thread."""
    thread = threading.Thread(target=handler.run, daemon=True)
    thread.start()
    return thread


def drain(q: queue.Queue, timeout: float = 30.0) -> list:
    """Items from ``q`` until EndOfStream (included) or ``timeout`` s."""
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


def collect(source: Handler, timeout: float = 60.0) -> list:
    """Everything a source emits, up to its EndOfStream; the source's thread must then end."""
    thread = start(source)
    items = drain(source.out_queue, timeout)
    assert items and isinstance(items[-1], EndOfStream), f"no EndOfStream within {timeout:.0f} s: {items[-3:]}"
    thread.join(10)
    assert not thread.is_alive()
    return items


def run_stage(handler: Handler, items: list[object], timeout: float = 120.0) -> list[object]:
    """Feed ``items`` then EndOfStream through ``handler.run`` on a thread; everything it emitted, in order
    (EndOfStream included). Fails if the stage does not finish within ``timeout`` s."""
    for item in [*items, EndOfStream()]:
        handler.in_queue.put(item)
    thread = start(handler)
    thread.join(timeout)
    assert not thread.is_alive(), f"{handler.name} did not finish within {timeout:.0f} s"
    out = []
    while handler.out_queue is not None and not handler.out_queue.empty():
        out.append(handler.out_queue.get_nowait())
    return out
