"""Request scheduling: one worker thread per model, a bounded FIFO in front of it, and async streams out of it.

    job = scheduler.submit(SpeechRequest("Hello there."))   # QueueFull (-> 503 + Retry-After) when full
    async for audio in job:                                 # float32 chunks at scheduler.sample_rate
        ...
    job.cancel()                                            # the engine's cancel event: stops at the next chunk

``Worker`` runs jobs one at a time in order of arrival. A job is a function ``work(cancel) -> iterator``; the
worker thread drives the iterator and hands each item to the job's asyncio queue (``call_soon_threadsafe``), so a
slow or vanished client never blocks the engine: its items pile up in its own job (bounded by its request's
length) until it reads or cancels them. At most ``1 + queue_size`` jobs are accepted at a time (the running one
and those waiting); one more raises ``QueueFull`` with a Retry-After estimate from the recent job durations. A
cancelled job that is still waiting is skipped; a running one sees its ``cancel`` event between chunks. An
exception in a job goes to that job's consumer alone; the worker carries on with the next.

``SpeechScheduler`` owns the TTS engine and its worker: ``submit(request) -> Job`` of audio chunks, ``call(fn)``
for other work on the engine's thread (making a clone voice). It serves one request at a time.
``s2s.server.batched.BatchedSpeechScheduler`` (the qwen3 backend with ``server.max_batch`` > 1) has the same
``submit``/``Job``/``cancel``/``call`` interface over continuous batching: its loop admits requests into free rows
between frame steps and feeds each row's chunks to its job, so the routes and the Wyoming handlers stay as they are.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from s2s.text_split import split_text
from s2s.tts_engine import TTSEngine, VoiceEngine, VoiceRequest

log = logging.getLogger(__name__)

T = TypeVar("T")
_ITEM, _END, _ERROR = "item", "end", "error"
RETRY_AFTER_S = (1, 60)
"""Bounds of the Retry-After a full queue answers with (s)."""


class QueueFull(Exception):
    """The worker has ``1 + queue_size`` jobs already; try again after ``retry_after_s``."""

    def __init__(self, worker: str, retry_after_s: int) -> None:
        super().__init__(f"the {worker} queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Job(Generic[T]):
    """One request's output, read with ``async for`` (or ``await job.result()`` for one item).

    Must be created on the event loop that reads it. ``cancel()`` is safe from any thread, at any time.
    """

    def __init__(self, work: Callable[[threading.Event], Iterable[T]], loop: asyncio.AbstractEventLoop) -> None:
        self.work = work
        self.cancel_event = threading.Event()
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        """When the worker began it (monotonic), None while it waits."""
        self._loop = loop
        self._items: asyncio.Queue = asyncio.Queue()
        self._finished = False

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _deliver(self, kind: str, value: object = None) -> None:
        """From the worker thread: hand one item (or the end, or an error) to the reader."""
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody reads any more
            self.cancel()

    def __aiter__(self) -> Job[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        kind, value = await self._items.get()
        if kind == _ITEM:
            return value
        self._finished = True
        if kind == _ERROR:
            raise value
        raise StopAsyncIteration

    async def next(self, timeout: float | None) -> T | None:
        """The next item, None at the end; TimeoutError after ``timeout`` s (None = no limit)."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except StopAsyncIteration:
            return None

    async def result(self, timeout: float | None = None) -> T:
        """The first item of a job that makes one (the end without an item is a RuntimeError)."""
        item = await self.next(timeout)
        if item is None:
            raise RuntimeError("the job ended without a result (cancelled?)")
        return item


@dataclass(frozen=True)
class WorkerHealth:
    """A worker as the health view and systemd's watchdog see it (the fields of ``s2s.pipeline.StageHealth``)."""

    name: str
    alive: bool
    last_progress_age_s: float
    busy_s: float
    hung: bool
    waiting: int
    """Jobs accepted and not started yet."""


class Worker:
    """One thread running ``Job`` s one at a time, in order of arrival; at most ``1 + queue_size`` accepted."""

    def __init__(self, name: str, queue_size: int, hang_timeout_s: float = 30.0) -> None:
        self.name = name
        self.capacity = 1 + queue_size
        self.hang_timeout_s = hang_timeout_s
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._accepted = 0
        """Jobs accepted and not finished (waiting + running)."""
        self._lock = threading.Condition()
        self._closed = False
        self._mean_s = 2.0
        """Moving average of a job's duration (s), for Retry-After."""
        self.last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"s2s-{name}", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[threading.Event], Iterable[T]]) -> Job[T]:
        """Queue ``work`` (called on the worker thread with the job's cancel event); QueueFull if full. Call it on
        the event loop that will read the job."""
        job: Job[T] = Job(work, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise QueueFull(self.name, RETRY_AFTER_S[1])
            if self._accepted >= self.capacity:
                raise QueueFull(self.name, self._retry_after())
            self._accepted += 1
            self._waiting.append(job)
            self._lock.notify()
        return job

    def _retry_after(self) -> int:
        seconds = math.ceil(self._mean_s * self._accepted / self.capacity)
        return min(max(seconds, RETRY_AFTER_S[0]), RETRY_AFTER_S[1])

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed and not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running = job
            try:
                self._serve(job)
            finally:
                with self._lock:
                    self._running = None
                    self._accepted -= 1
                self.last_progress = time.monotonic()

    def _serve(self, job: Job) -> None:
        if job.cancelled:
            job._deliver(_END)
            return
        job.started_at = started = self.last_progress = time.monotonic()
        items: Iterator | None = None
        try:
            items = iter(job.work(job.cancel_event))
            for item in items:
                self.last_progress = time.monotonic()
                if job.cancelled:
                    break
                job._deliver(_ITEM, item)
            job._deliver(_END)
        except Exception as exc:  # the request fails alone; the worker carries on
            log.info("%s: a request failed: %s: %s", self.name, type(exc).__name__, exc)
            job._deliver(_ERROR, exc)
        finally:
            close = getattr(items, "close", None)  # a generator: end the engine's request at once
            if close is not None:
                close()
        self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)

    def health(self) -> WorkerHealth:
        now = time.monotonic()
        with self._lock:
            running, waiting = self._running, len(self._waiting)
        busy = 0.0 if running is None or running.started_at is None else now - running.started_at
        alive = self._thread.is_alive()
        stalled = running is not None and now - self.last_progress > self.hang_timeout_s
        return WorkerHealth(self.name, alive, round(now - self.last_progress, 3), round(busy, 3),
                            (not alive and not self._closed) or stalled, waiting)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every job (waiting and running) and end the thread."""
        with self._lock:
            self._closed = True
            jobs = [*self._waiting, *([self._running] if self._running else [])]
            self._lock.notify_all()
        for job in jobs:
            job.cancel()
        self._thread.join(timeout)


@dataclass(frozen=True)
class SpeechRequest:
    """One text to speak."""

    text: str
    voice: VoiceRequest | None = None
    """For a ``VoiceEngine``: the voice, instructions and language of this request; None = the configured."""


class SpeechScheduler:
    """Owns the TTS engine and the bounded queue in front of it; serves one request at a time (see the module
    docstring for how a batched engine takes its place)."""

    def __init__(self, engine: TTSEngine, queue_size: int, max_text_chars: int, hang_timeout_s: float = 30.0) -> None:
        self.engine = engine
        self.sample_rate = engine.sample_rate
        self.max_text_chars = max_text_chars
        """Longer text is spoken piece by piece (``s2s.text_split``), as the assistant's TTS stage does."""
        self.voices = isinstance(engine, VoiceEngine)
        """Whether requests may choose their voice."""
        self.worker = Worker("tts", queue_size, hang_timeout_s)

    def submit(self, request: SpeechRequest) -> Job[np.ndarray]:
        """A job yielding float32 mono chunks at ``sample_rate`` as the engine makes them; QueueFull if full."""
        if request.voice is not None and not self.voices:
            raise ValueError(f"the {self.engine.name} engine speaks one voice only")
        return self.worker.submit(lambda cancel: self._speak(request, cancel))

    def call(self, fn: Callable[[TTSEngine], T]) -> Job[T]:
        """Run ``fn(engine)`` on the engine's thread, in turn with the speech requests (one item: its result)."""
        return self.worker.submit(lambda cancel: [fn(self.engine)])

    def _speak(self, request: SpeechRequest, cancel: threading.Event) -> Iterator[np.ndarray]:
        for piece in split_text(request.text, self.max_text_chars):
            if request.voice is None:
                stream = self.engine.synthesize(piece, cancel)
            else:
                stream = self.engine.synthesize(piece, cancel, voice=request.voice)
            try:
                for audio in stream:
                    if cancel.is_set():
                        return
                    if audio.size:
                        yield np.asarray(audio, dtype=np.float32)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

    def health(self) -> WorkerHealth:
        return self.worker.health()

    def close(self) -> None:
        self.worker.close()
