"""``BatchedSpeechScheduler``: ``SpeechScheduler``'s interface (``s2s.server.scheduler``) over continuous batching
of the qwen3 engine, for ``server.max_batch`` > 1 (``s2s.server.services.speech_scheduler`` picks it)."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from s2s.server.scheduler import _END, _ERROR, _ITEM, RETRY_AFTER_S, Job, QueueFull, SpeechRequest, T, WorkerHealth
from s2s.text_split import split_text
from s2s.tts_engine import TTSEngine, VoiceEngine, VoiceRequest

log = logging.getLogger(__name__)


class BatchedSpeechScheduler:
    """``SpeechScheduler``'s interface over continuous batching: up to ``max_batch`` requests share each frame step
    of the fast Qwen3-TTS engine (``s2s.qwen3_tts.batch_scheduler.RowScheduler``), ``queue_size`` more wait, one
    more raises QueueFull (503).

    One thread owns the rows: between frames it runs ``call`` work, admits waiting requests into free rows (their
    prompts are built there, on the engine's thread) and hands each row's audio chunks to its job. A request's text
    is spoken piece by piece (``max_text_chars``); its next piece takes the row queue's head when one ends. A
    request's ``cancel`` frees its row at the next frame; the other rows carry on unchanged.
    ``engine`` is the qwen3 backend (``handlers.tts_qwen3.Qwen3Engine``: ``engine``, ``prompt``, ``sampling``,
    ``cfg``), warmed up."""

    def __init__(self, engine: VoiceEngine, max_batch: int, queue_size: int, max_text_chars: int,
                 hang_timeout_s: float = 30.0) -> None:
        from s2s.qwen3_tts.batch import BatchDecoder
        from s2s.qwen3_tts.batch_scheduler import RowScheduler

        self.engine = engine
        self.sample_rate = engine.sample_rate
        self.max_text_chars = max_text_chars
        self.voices = isinstance(engine, VoiceEngine)
        self.capacity = max_batch + queue_size
        self.hang_timeout_s = hang_timeout_s
        decoder = BatchDecoder.for_sampling(engine.engine, max_batch, engine.sampling)  # what every request uses
        decoder.capture()
        self.rows = RowScheduler(engine.engine, decoder, overlap_audio=decoder.use_graphs)  # CUDA: decode aside
        self.rows.warmup((engine.cfg.first_chunk_size, engine.cfg.chunk_size))
        self._pieces: dict[Job, list[str]] = {}
        """Text pieces still to speak per accepted job (the running piece excluded)."""
        self._calls: collections.deque[tuple[Job, Callable]] = collections.deque()
        self._lock = threading.Condition()
        self._closed = False
        self.last_progress = self._busy_since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="s2s-tts-batch", daemon=True)
        self._thread.start()

    def submit(self, request: SpeechRequest) -> Job[np.ndarray]:
        """A job yielding float32 mono chunks at ``sample_rate``; QueueFull when ``max_batch + queue_size`` jobs are
        accepted already."""
        if request.voice is not None and not self.voices:
            raise ValueError(f"the {self.engine.name} engine speaks one voice only")
        job: Job[np.ndarray] = Job(lambda cancel: (), asyncio.get_running_loop())
        pieces = list(split_text(request.text, self.max_text_chars))
        with self._lock:
            self._check_capacity()
            if not pieces:  # nothing to speak: an empty stream, as SpeechScheduler gives
                job._deliver(_END)
                return job
            self._pieces[job] = pieces[1:]
            self.rows.submit(self._row(job, request.voice, pieces[0]))
            self._lock.notify()
        return job

    def call(self, fn: Callable[[TTSEngine], T]) -> Job[T]:
        """Run ``fn(engine)`` on the engine's thread between frame steps (one item: its result)."""
        job: Job[T] = Job(lambda cancel: (), asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise QueueFull("tts", RETRY_AFTER_S[1])
            self._calls.append((job, fn))
            self._lock.notify()
        return job

    def _check_capacity(self) -> None:
        if self._closed:
            raise QueueFull("tts", RETRY_AFTER_S[1])
        if len(self._pieces) >= self.capacity:
            raise QueueFull("tts", RETRY_AFTER_S[0])

    def _row(self, job: Job, voice: VoiceRequest | None, text: str):
        from s2s.qwen3_tts.batch_scheduler import RowRequest

        cfg = self.engine.cfg
        return RowRequest(lambda: self.engine.prompt(text, voice), self.engine.sampling,
                          max_new_tokens=cfg.max_new_tokens or None, chunk_size=cfg.chunk_size,
                          first_chunk_size=cfg.first_chunk_size, cancel=job.cancel_event, tag=(job, voice))

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._calls and not self.rows.busy:
                    self._lock.wait()
                if self._closed:
                    break
                calls, self._calls = list(self._calls), collections.deque()
            if not self.rows.running:
                self._busy_since = time.monotonic()
            for job, fn in calls:
                self._call(job, fn)
            for event in self.rows.step():
                self._deliver(event)
            self.last_progress = time.monotonic()
        self.rows.close()
        while self.rows.busy:  # hand every job its end
            for event in self.rows.step():
                self._deliver(event)
        self.rows.stop()

    def _call(self, job: Job, fn: Callable) -> None:
        job.started_at = time.monotonic()
        try:
            job._deliver(_ITEM, fn(self.engine))
            job._deliver(_END)
        except Exception as exc:  # the call fails alone
            job._deliver(_ERROR, exc)

    def _deliver(self, event) -> None:
        job, voice = event.request.tag
        if job.started_at is None:
            job.started_at = time.monotonic()
        if event.audio is not None and event.audio.size and not job.cancelled:
            job._deliver(_ITEM, event.audio)
        if event.error is not None:
            log.info("tts: a request failed: %s: %s", type(event.error).__name__, event.error)
            self._finish(job, _ERROR, event.error)
        elif event.end:
            with self._lock:
                pieces = self._pieces.get(job)
                if pieces and not job.cancelled and not self._closed:
                    self.rows.submit(self._row(job, voice, pieces.pop(0)), first=True)
                    return
            self._finish(job, _END)

    def _finish(self, job: Job, kind: str, value: object = None) -> None:
        with self._lock:
            self._pieces.pop(job, None)
        job._deliver(kind, value)

    def health(self) -> WorkerHealth:
        now = time.monotonic()
        alive = self._thread.is_alive()
        busy = self.rows.running > 0
        stalled = busy and now - self.last_progress > self.hang_timeout_s
        return WorkerHealth("tts", alive, round(now - self.last_progress, 3),
                            round(now - self._busy_since, 3) if busy else 0.0,
                            (not alive and not self._closed) or stalled, self.rows.waiting)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every job (waiting and running) and end the thread."""
        with self._lock:
            self._closed = True
            calls, self._calls = list(self._calls), collections.deque()
            self._lock.notify_all()
        for job, _ in calls:
            job._deliver(_END)
        self._thread.join(timeout)
