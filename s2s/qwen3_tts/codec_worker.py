"""``CodecWorker``: the rows' audio decoding on its own thread (and CUDA stream), overlapping the frame steps.

A batch's frame step and a codec decoder chunk are both launch-bound CUDA work with few blocks each, so they can
share the GPU: with this worker, ``RowScheduler`` hands each complete chunk (and each row's decoder reset, and each
request's end) over as a task and goes on with the next frame while the chunk is decoded. Tasks run one at a time
in order of submission, so a request's audio comes in order, after its decoder's reset and before its end, and a
row slot's decoder is never used by two requests at once. The arithmetic is the inline decode's (the same decoder
objects and chunk sizes): only the timing changes. A task that raises ends its request with that error; the
request's later tasks are dropped.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

Task = Callable[[], object]
"""Returns an event for the caller (or None); ``request`` identifies whose task it is."""


class CodecWorker:
    """Runs tasks in order on one thread (``threaded=False``: at once, in ``submit``); ``take()`` returns the events
    of those finished since the last call."""

    def __init__(self, device: torch.device, on_error: Callable[[object, Exception], object],
                 threaded: bool = True) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._done: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._pending = 0
        self._failed: set[int] = set()
        self._on_error = on_error
        """(request, exception) -> the event that ends the request with it."""
        self._stream = torch.cuda.Stream(device) if threaded and device.type == "cuda" else None
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="s2s-tts-codec", daemon=True)
            self._thread.start()

    @property
    def pending(self) -> int:
        """Tasks submitted and not finished."""
        with self._changed:
            return self._pending

    def submit(self, request: object, task: Task, last: bool = False, after_default_stream: bool = False) -> None:
        """Queue ``task`` of ``request``; ``last``: its final task (its end); ``after_default_stream``: the task reads
        tensors made on the default CUDA stream (a voice-clone context), so it waits for that stream first."""
        with self._changed:
            self._pending += 1
        if self._thread is None:
            self._process((request, task, last, after_default_stream))
        else:
            self._tasks.put((request, task, last, after_default_stream))

    def take(self, wait: bool = False) -> list:
        """The events of the tasks finished so far (``wait``: at least one, unless nothing is pending)."""
        with self._changed:
            while wait and not self._done and self._pending:
                self._changed.wait()
            events = list(self._done)
            self._done.clear()
            return events

    def close(self) -> None:
        """End the thread (after the tasks already queued)."""
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            item = self._tasks.get()
            if item is None:
                return
            self._process(item)

    def _process(self, item: tuple) -> None:
        request, task, last, after_default_stream = item
        event = None
        if id(request) in self._failed:  # its error ended it; its end is not sent again
            if last:
                self._failed.discard(id(request))
        else:
            try:
                event = self._call(task, after_default_stream)
            except Exception as exc:  # the request fails alone; the other rows' audio carries on
                log.info("codec decoding failed for one request: %s: %s", type(exc).__name__, exc)
                if not last:
                    self._failed.add(id(request))
                event = self._on_error(request, exc)
        with self._changed:
            if event is not None:
                self._done.append(event)
            self._pending -= 1
            self._changed.notify_all()

    def _call(self, task: Task, after_default_stream: bool) -> object:
        if self._stream is None:
            return task()
        if after_default_stream:
            self._stream.wait_stream(torch.cuda.default_stream(self._stream.device))
        with torch.cuda.stream(self._stream):
            return task()
