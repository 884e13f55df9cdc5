"""The handler base: one pipeline stage running in its own thread.

A stage is built as ``StageClass(wiring, cfg)``: the ``Wiring`` (turn bookkeeping, its input and output queues,
the stop event, the poll interval) is the same for every stage, ``cfg`` is the stage's config section. A stage
subclass overrides ``setup`` (load models, warm up), the generator ``process(item)`` and, where needed, ``flush``
(items held when the input ends) and ``cleanup``. Everything else is here:

- the loop polls its queue with a timeout, so a stop request is seen within ``poll_s``;
- control messages (``TurnEnd``, ``TurnFailed``) are forwarded in order with the data (``control`` may be
  overridden by a stage that must act on them: the sink);
- data items of a turn that is already closed (failed, expired) are dropped before ``process`` sees them;
- an item whose ``process`` raises is logged with its turn id and reported downstream as ``TurnFailed``
  (``on_error``); the loop carries on;
- the end marker ``EndOfStream`` calls ``flush`` and is forwarded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from s2s.end_of_turn import EndOfTurn
from s2s.far_end import FarEnd
from s2s.messages import CONTROL_TYPES, EndOfStream, TurnFailed, turn_of
from s2s.turns import Turns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wiring:
    """What the pipeline hands every stage: the run's turns, the stage's queues, and how to stop."""

    turns: Turns
    in_queue: queue.Queue | None = None
    """None for a source (it produces its own input)."""
    out_queue: queue.Queue | None = None
    """None for the sink."""
    stop_event: threading.Event = field(default_factory=threading.Event)
    poll_s: float = 0.1
    """How often an idle stage looks at the stop event (s)."""
    far_end: FarEnd | None = None
    """Full duplex: what the speaker played (the sink writes it, the microphone's echo canceller reads it); None in
    half duplex."""
    end_of_turn: EndOfTurn | None = None
    """The verdicts on whether the user's words are finished (the STT judges, the VAD reads); None when
    ``end_of_turn.silence_ms`` is 0."""


class Handler:
    """Base class of every stage. Subclasses override ``setup``, ``process`` (and ``flush``/``cleanup``)."""

    name = "handler"

    def __init__(self, wiring: Wiring, cfg: Any = None) -> None:
        self.wiring = wiring
        self.cfg = cfg
        self.turns = wiring.turns
        self.in_queue = wiring.in_queue
        self.out_queue = wiring.out_queue
        self.stop_event = wiring.stop_event
        self.poll_s = wiring.poll_s
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
        """Turn one data item of an open turn into output items."""
        raise NotImplementedError

    def flush(self) -> Iterator[object]:
        """Items still held when the input ends (e.g. an open utterance). Called before EndOfStream is forwarded."""
        return iter(())

    def cleanup(self) -> None:
        """Release resources. Called once when the loop ends."""

    def control(self, item: object) -> Iterator[object]:
        """A TurnEnd or TurnFailed: forwarded in order with the data (the sink overrides this to end turns)."""
        yield item

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

    def outputs(self, item: object) -> Iterator[object]:
        """What the stage makes of one item: ``flush`` for the end marker, ``control`` for turn control,
        nothing for data of a closed turn, else ``process``."""
        if isinstance(item, EndOfStream):
            return self.flush()
        if isinstance(item, CONTROL_TYPES):
            return self.control(item)
        turn_id = turn_of(item)
        if turn_id is not None and not self.turns.is_open(turn_id):
            log.debug("%s: turn %d is closed; %s dropped", self.name, turn_id, type(item).__name__)
            return iter(())
        return self.process(item)

    def handle(self, item: object) -> None:
        """Run one item through the stage and forward its outputs. A raising item is logged with its turn id and
        reported through ``on_error``; the loop carries on."""
        self.busy_since = time.monotonic()
        self.current_turn = turn_of(item)
        try:
            for out in self.outputs(item):
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
                self.handle(item)
                if isinstance(item, EndOfStream):
                    self.put(item)
                    break
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
