"""The server's batched scheduler (``BatchedSpeechScheduler``) on the qwen3 backend with a tiny random checkpoint
(CPU): concurrent requests share frame steps and each gets the audio it gets alone; a cancelled one leaves the
other unchanged; beyond ``max_batch + queue_size`` jobs, QueueFull (503).

The engine decodes in float64 here: a batch multiplies in other shapes than one request alone, which may round
differently, and no float64 rounding can flip a greedy token; the streamed audio is then the same bits.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from s2s.checkpoint_builder.build import build_checkpoint
from s2s.config import load_config
from s2s.qwen3_tts import Qwen3TTS
from s2s.server.batched import BatchedSpeechScheduler
from s2s.server.scheduler import QueueFull, SpeechRequest, SpeechScheduler
from s2s.server.services import speech_scheduler
from s2s.tts_engine import VoiceRequest, make_engine

MAX_NEW_TOKENS = 10
TEXT = "Hello there, how are you today?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The qwen3 backend over the tiny CustomVoice checkpoint, its decode engine reloaded in float64."""
    checkpoint = build_checkpoint(tmp_path_factory.mktemp("batch") / "custom_voice", size="tiny",
                                  kind="custom_voice", seed=0)
    config = load_config([], ["tts.backend=qwen3", f"tts.model={checkpoint}", "tts.device=cpu", "tts.dtype=float32",
                              "tts.do_sample=false", f"tts.max_new_tokens={MAX_NEW_TOKENS}", "tts.max_seq_len=256"])
    qwen3 = make_engine(config.tts, voice_required=False)
    qwen3.engine = Qwen3TTS.from_pretrained(checkpoint, device="cpu", dtype=torch.float64, max_seq_len=256)
    return qwen3


def alone(engine, text, voice=None) -> np.ndarray:
    return np.concatenate(list(engine.synthesize(text, voice=voice)))


async def collect(job) -> np.ndarray:
    chunks = [chunk async for chunk in job]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def test_concurrent_requests_share_frames_and_each_gets_its_own_audio(engine):
    scheduler = speech_scheduler(engine, max_batch=2, queue_size=2, max_text_chars=800, hang_timeout_s=30.0)
    assert isinstance(scheduler, BatchedSpeechScheduler)
    requests = [SpeechRequest(TEXT, VoiceRequest(speaker="vivian")), SpeechRequest("Hi.", VoiceRequest(speaker="ryan"))]

    async def main():
        return await asyncio.gather(*(collect(scheduler.submit(r)) for r in requests))

    try:
        results = asyncio.run(main())
    finally:
        scheduler.close()
    for request, audio in zip(requests, results):
        assert np.array_equal(audio, alone(engine, request.text, request.voice))
    assert results[0].size == results[1].size == (MAX_NEW_TOKENS - 1) * 1920
    assert scheduler.rows.frames == MAX_NEW_TOKENS - 1  # both requests' frames in the same steps


def test_cancelling_one_request_leaves_the_other_unchanged(engine):
    scheduler = speech_scheduler(engine, max_batch=2, queue_size=0, max_text_chars=800, hang_timeout_s=30.0)

    async def main():
        kept = scheduler.submit(SpeechRequest(TEXT))
        cancelled = scheduler.submit(SpeechRequest("Another sentence, cancelled after its first chunk."))
        first = await cancelled.next(60)
        cancelled.cancel()
        rest = await collect(cancelled)
        return await collect(kept), first, rest

    try:
        kept, first, rest = asyncio.run(main())
    finally:
        scheduler.close()
    assert np.array_equal(kept, alone(engine, TEXT))
    assert first.size == 2 * 1920 and rest.size <= 4 * 1920  # at most the chunk already made when cancelled


def test_beyond_max_batch_plus_queue_size_is_refused(engine):
    scheduler = speech_scheduler(engine, max_batch=2, queue_size=1, max_text_chars=800, hang_timeout_s=30.0)
    hold = threading.Event()

    async def main():
        held = scheduler.call(lambda _: hold.wait(60))  # the engine's thread waits: nothing finishes meanwhile
        jobs = [scheduler.submit(SpeechRequest("Hi.")) for _ in range(3)]  # two rows and one waiting
        with pytest.raises(QueueFull) as refused:
            scheduler.submit(SpeechRequest("Hi."))
        assert 1 <= refused.value.retry_after_s <= 60
        hold.set()
        assert await held.result(60) is True
        done = await asyncio.gather(*(collect(job) for job in jobs))
        await collect(scheduler.submit(SpeechRequest("Hi.")))  # room again
        return done

    try:
        done = asyncio.run(main())
    finally:
        scheduler.close()
    assert all(np.array_equal(audio, done[0]) for audio in done) and done[0].size > 0


def test_other_backends_serve_one_at_a_time():
    class Piper:
        name, sample_rate = "piper", 22050

    scheduler = speech_scheduler(Piper(), max_batch=4, queue_size=1, max_text_chars=800, hang_timeout_s=30.0)
    try:
        assert isinstance(scheduler, SpeechScheduler)
    finally:
        scheduler.close()
