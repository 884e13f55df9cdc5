"""The handler base: one pipeline stage running in its own thread.

A handler reads items from ``in_queue``, turns each into zero or more output items with the generator
``process(item)``, and puts them on ``out_queue``. The loop polls with a timeout so that a stop request is
seen within ``poll_s``, logs a failing item (with its turn id) and carries on, and forwards the end marker.

Policy (half-duplex, what a failed turn means downstream) lives in the handlers and the messages; the base
only reports a failure as a ``TurnFailed`` message for the item's turn (see ``on_error``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

from s2s.messages import EndOfStream, TurnFailed, turn_of

log = logging.getLogger(__name__)


class Handler:
    """Base class of every stage. Subclasses override ``setup``, ``process`` and ``cleanup``."""

    name = "handler"

    def __init__(
        self,
        in_queue: queue.Queue | None,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
    ) -> None:
        self.in_queue = in_queue
        self.out_queue = out_queue
        self.stop_event = stop_event
        self.poll_s = poll_s
        self.last_progress = time.monotonic()
        """Monotonic time of the last item taken or produced (read by the health view)."""
        self.busy_since: float | None = None
        """Monotonic time the current item started, or None while idle (read by the health view)."""
        self.current_turn: int | None = None
        self.finished = threading.Event()
        """Set when the loop has ended (end of stream, stop, or a fatal error)."""

    # ---- to override -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load models and warm up. Called once by the pipeline before the thread starts."""

    def process(self, item: object) -> Iterator[object]:
        """Turn one input item into output items."""
        raise NotImplementedError

    def flush(self) -> Iterator[object]:
        """Items still held when the input ends (e.g. an open utterance). Called before EndOfStream is forwarded."""
        return iter(())

    def cleanup(self) -> None:
        """Release resources. Called once when the loop ends."""

    def on_error(self, item: object, exc: BaseException) -> Iterator[object]:
        """Items to emit after ``process(item)`` raised. Default: a TurnFailed for the item's turn."""
        turn_id = turn_of(item)
        if turn_id is not None:
            yield TurnFailed(turn_id=turn_id, stage=self.name, error=f"{type(exc).__name__}: {exc}")

    # ---- the loop ----------------------------------------------------------------------------------
    def put(self, item: object) -> bool:
        """Put an item on the output queue, waiting while it is full. False if a stop came first."""
        self.last_progress = time.monotonic()
        if self.out_queue is None:
            return True
        while not self.stop_event.is_set():
            try:
                self.out_queue.put(item, timeout=self.poll_s)
                self.last_progress = time.monotonic()
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> object | None:
        """The next input item, or None after ``poll_s`` with nothing to read."""
        assert self.in_queue is not None, f"{self.name} has no input queue; override run()"
        try:
            item = self.in_queue.get(timeout=self.poll_s)
        except queue.Empty:
            return None
        self.last_progress = time.monotonic()
        return item

    def handle(self, item: object) -> None:
        """Run ``process`` on one item (``flush`` for the end marker) and forward its outputs.

        A raising item is logged with its turn id and reported through ``on_error``; the loop carries on.
        """
        self.busy_since = time.monotonic()
        self.current_turn = turn_of(item)
        try:
            outputs = self.flush() if isinstance(item, EndOfStream) else self.process(item)
            for out in outputs:
                if not self.put(out) or self.stop_event.is_set():
                    return
        except Exception as exc:  # one bad item must not kill the stage
            log.exception("%s failed on %s (turn %s): %s", self.name, type(item).__name__, self.current_turn, exc)
            for out in self.on_error(item, exc):
                self.put(out)
        finally:
            self.busy_since = None
            self.current_turn = None
            self.last_progress = time.monotonic()

    def run(self) -> None:
        """Thread body: poll, process, forward the end marker, clean up."""
        try:
            while not self.stop_event.is_set():
                item = self.get()
                if item is None:
                    continue
                if isinstance(item, EndOfStream):
                    self.handle(item)
                    self.put(item)
                    break
                self.handle(item)
        finally:
            self.end_loop()

    def end_loop(self) -> None:
        """The end of every ``run()``: clean up (a failure is logged, not raised) and set ``finished``."""
        self.safe_cleanup()
        self.finished.set()
        log.debug("%s stopped", self.name)

    def safe_cleanup(self) -> None:
        """``cleanup()``, with a failure logged instead of raised."""
        try:
            self.cleanup()
        except Exception:
            log.exception("%s: cleanup failed", self.name)
