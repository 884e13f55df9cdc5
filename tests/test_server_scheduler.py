"""The server's scheduler with a scripted fake engine: order of arrival, the bound and its 503, cancellation of
waiting and running jobs, a failing request failing alone, work on the engine's thread, the health view."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from s2s.server.scheduler import QueueFull, SpeechRequest, SpeechScheduler, Worker
from s2s.tts_engine import VoiceRequest

CHUNK_S = 0.02


class FakeEngine:
    """Speaks each text as ``len(text.split())`` chunks of 10 samples (value = chunk index), CHUNK_S apart;
    "boom" raises RuntimeError, "refuse" ValueError (at once, as a real engine refuses text)."""

    name = "fake"
    sample_rate = 1000

    def __init__(self) -> None:
        self.started: list[str] = []
        self.chunks_made = 0
        self.release = threading.Event()
        self.release.set()

    def warmup(self) -> None:
        pass

    def synthesize(self, text, cancel=None):
        if text == "refuse":
            raise ValueError("cannot speak that")
        return self._stream(text, cancel)

    def _stream(self, text, cancel):
        self.started.append(text)
        for i in range(len(text.split())):
            self.release.wait(10)
            if cancel is not None and cancel.is_set():
                return
            if text == "boom":
                raise RuntimeError("engine fault")
            time.sleep(CHUNK_S)
            self.chunks_made += 1
            yield np.full(10, i, dtype=np.float32)


async def collect(job) -> list[np.ndarray]:
    return [chunk async for chunk in job]


def test_requests_are_served_in_order_and_each_gets_its_own_audio():
    engine = FakeEngine()
    scheduler = SpeechScheduler(engine, queue_size=4, max_text_chars=800)

    async def main():
        jobs = [scheduler.submit(SpeechRequest(" ".join(["w"] * n))) for n in (3, 1, 2)]
        return await asyncio.gather(*(collect(job) for job in jobs))

    try:
        results = asyncio.run(main())
    finally:
        scheduler.close()
    assert [len(chunks) for chunks in results] == [3, 1, 2]
    assert [float(c[0]) for c in results[0]] == [0.0, 1.0, 2.0]
    assert engine.started == ["w w w", "w", "w w"]


def test_a_full_queue_is_refused_at_once_with_a_retry_hint():
    engine = FakeEngine()
    engine.release.clear()  # the first job blocks inside the engine
    scheduler = SpeechScheduler(engine, queue_size=2, max_text_chars=800)

    async def main():
        jobs = [scheduler.submit(SpeechRequest("a")) for _ in range(3)]  # one running + two waiting
        with pytest.raises(QueueFull) as refused:
            scheduler.submit(SpeechRequest("b"))
        assert 1 <= refused.value.retry_after_s <= 60
        assert scheduler.health().waiting >= 2
        engine.release.set()
        await asyncio.gather(*(collect(job) for job in jobs))
        await collect(scheduler.submit(SpeechRequest("c")))  # room again

    try:
        asyncio.run(main())
    finally:
        scheduler.close()
    assert engine.started == ["a", "a", "a", "c"]


def test_cancel_stops_a_running_job_at_its_next_chunk_and_skips_a_waiting_one():
    engine = FakeEngine()
    scheduler = SpeechScheduler(engine, queue_size=4, max_text_chars=800)

    async def main():
        running = scheduler.submit(SpeechRequest(" ".join(["long"] * 200)))
        waiting = scheduler.submit(SpeechRequest("never spoken"))
        after = scheduler.submit(SpeechRequest("spoken"))
        await running.next(5)
        waiting.cancel()
        running.cancel()
        assert await collect(waiting) == []
        return await collect(after)

    t0 = time.monotonic()
    try:
        assert len(asyncio.run(main())) == 1
    finally:
        scheduler.close()
    assert time.monotonic() - t0 < 200 * CHUNK_S / 2, "the cancelled job ran on"
    assert engine.chunks_made < 20
    assert "never spoken" not in engine.started


def test_a_failing_request_fails_alone():
    engine = FakeEngine()
    scheduler = SpeechScheduler(engine, queue_size=4, max_text_chars=800)

    async def main():
        boom, refused, fine = (scheduler.submit(SpeechRequest(text)) for text in ("boom", "refuse", "fine words"))
        with pytest.raises(RuntimeError, match="engine fault"):
            await collect(boom)
        with pytest.raises(ValueError, match="cannot speak"):
            await collect(refused)
        return await collect(fine)

    try:
        assert len(asyncio.run(main())) == 2
        assert scheduler.health().alive and not scheduler.health().hung
    finally:
        scheduler.close()


def test_long_text_is_spoken_piece_by_piece():
    engine = FakeEngine()
    scheduler = SpeechScheduler(engine, queue_size=1, max_text_chars=20)
    try:
        asyncio.run(collect_one(scheduler, "One two three. Four five six. Seven eight nine."))
    finally:
        scheduler.close()
    assert engine.started == ["One two three.", "Four five six.", "Seven eight nine."]


async def collect_one(scheduler, text):
    return await collect(scheduler.submit(SpeechRequest(text)))


def test_a_single_voice_engine_refuses_a_voice_request():
    scheduler = SpeechScheduler(FakeEngine(), queue_size=1, max_text_chars=800)

    async def main():
        scheduler.submit(SpeechRequest("hi", VoiceRequest(speaker="vivian")))

    try:
        with pytest.raises(ValueError, match="one voice only"):
            asyncio.run(main())
    finally:
        scheduler.close()


def test_call_runs_on_the_engine_thread_in_turn():
    engine = FakeEngine()
    scheduler = SpeechScheduler(engine, queue_size=2, max_text_chars=800)

    async def main():
        speech = scheduler.submit(SpeechRequest("a b c"))
        call = scheduler.call(lambda e: (e.name, threading.current_thread().name, list(e.started)))
        await collect(speech)
        return await call.result(5)

    try:
        name, thread, started = asyncio.run(main())
    finally:
        scheduler.close()
    assert (name, thread, started) == ("fake", "s2s-tts", ["a b c"])


def test_health_reports_a_job_stuck_without_progress_as_hung():
    worker = Worker("stuck", queue_size=0, hang_timeout_s=0.2)
    gate = threading.Event()

    def work(cancel):
        gate.wait(5)
        return [1]

    async def main():
        job = worker.submit(work)
        await asyncio.sleep(0.5)
        report = worker.health()
        gate.set()
        await job.result(5)
        return report

    try:
        report = asyncio.run(main())
    finally:
        worker.close()
    assert report.hung and report.busy_s >= 0.4
    assert not worker.health().hung


def test_close_cancels_what_is_left():
    engine = FakeEngine()
    engine.release.clear()
    scheduler = SpeechScheduler(engine, queue_size=2, max_text_chars=800)

    async def main():
        jobs = [scheduler.submit(SpeechRequest("x y")) for _ in range(3)]
        await asyncio.sleep(0.05)
        closing = threading.Thread(target=scheduler.close)
        closing.start()
        engine.release.set()
        closing.join(5)
        with pytest.raises(QueueFull):
            scheduler.submit(SpeechRequest("late"))
        return [await collect(job) for job in jobs]

    results = asyncio.run(main())
    assert sum(len(chunks) for chunks in results) <= 2
