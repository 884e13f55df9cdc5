"""GPU tests of batched decoding (``s2s.qwen3_tts.batch``): CUDA graphs per batch bucket x key bucket (skipped
without CUDA).

* graphs == eager, bit for bit: a replay runs the captured kernels on the same shapes, so each row's codes are the
  eager ones (fp32, TF32 off, tiny checkpoint; bf16 on the full-size 0.6B checkpoint).
* within one bucket, a row's codes do not depend on the other rows (joined late, cancelled, or masked unused rows).
* each row's streamed audio (its own graphed codec decoder) equals the one-shot decode of its codes.

Run on the GPU machine: ``python -m pytest -q -s -m cuda tests/test_qwen3_batch_cuda.py`` (the 0.6B test uses
``$S2S_QWEN3_CKPT_DIR`` as tests/test_qwen3_cuda.py does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from s2s.checkpoint_builder.build import build_checkpoint
from s2s.qwen3_tts import Qwen3TTS, SamplingParams
from s2s.qwen3_tts.batch import BatchDecoder
from s2s.qwen3_tts.batch_scheduler import RowRequest, RowScheduler

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TEXTS = ("Hello there, how are you today?", "Hi.", "A somewhat longer sentence, for the third row to speak.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.backends.cuda.matmul.allow_tf32 = False
    path = build_checkpoint(tmp_path_factory.mktemp("batch-cuda") / "custom_voice", size="tiny", kind="custom_voice")
    eng = Qwen3TTS.from_pretrained(path, device="cuda", dtype=torch.float32, max_seq_len=256)
    torch.backends.cuda.matmul.allow_tf32 = False  # loading turns it on
    return eng


def run(rows, arrivals, cancels=None):
    """{step: [request]} arrivals and cancels -> per request (codes [T, 16], audio chunks)."""
    cancels = cancels or {}
    out, step = {}, 0
    while rows.busy or any(at >= step for at in arrivals):
        for request in arrivals.get(step, []):
            out[request] = ([], [])
            rows.submit(request)
        for request in cancels.get(step, []):
            request.cancel.set()
        for event in rows.step():
            assert event.error is None, event.error
            if event.codes is not None:
                out[event.request][0].append(event.codes)
            if event.audio is not None:
                out[event.request][1].append(event.audio)
        step += 1
    return {r: (torch.cat(c) if c else torch.zeros(0, 16, dtype=torch.long), a) for r, (c, a) in out.items()}


def requests(eng, sampling, n=24):
    speakers = ("ryan", "aiden", "vivian")
    return [RowRequest(eng.prompt_custom_voice(t, s, "english"), sampling, max_new_tokens=n, suppress_eos=True)
            for t, s in zip(TEXTS, speakers)]


def test_graphs_equal_eager_and_rows_are_independent(tiny):
    graphed = BatchDecoder(tiny, 4)
    graphed.capture()
    eager = BatchDecoder(tiny, 4)
    eager.use_graphs = False
    for sampling in (SamplingParams.greedy(), SamplingParams(seed=3)):
        a = requests(tiny, sampling)
        b = requests(tiny, sampling)
        with_graphs = run(RowScheduler(tiny, graphed, audio=False), {0: a[:2], 5: a[2:]})
        without = run(RowScheduler(tiny, eager, audio=False), {0: b[:2], 5: b[2:]})
        for x, y in zip(a, b):
            assert torch.equal(with_graphs[x][0], without[y][0]) and with_graphs[x][0].shape == (23, 16)


def test_a_row_alone_equals_itself_in_a_full_bucket_with_join_and_cancel(tiny):
    decoder = BatchDecoder(tiny, 4, batch_sizes=(4,), key_sizes=(256,))
    decoder.capture()
    sampling = SamplingParams(seed=11)
    alone = requests(tiny, sampling)[0]
    solo = run(RowScheduler(tiny, decoder, audio=False), {0: [alone]})[alone][0]
    first, second, third = requests(tiny, sampling)
    crowd = run(RowScheduler(tiny, decoder, audio=False), {0: [second, third], 3: [first]}, cancels={9: [third]})
    assert torch.equal(crowd[first][0], solo)


def test_streaming_audio_per_row_on_the_gpu(tiny):
    decoder = BatchDecoder(tiny, 2)
    decoder.capture()
    rows = RowScheduler(tiny, decoder)
    rows.warmup((2, 4))
    a, b, _ = requests(tiny, SamplingParams.greedy(), n=12)
    results = run(rows, {0: [a], 2: [b]})
    for request in (a, b):
        codes, chunks = results[request]
        assert [c.size // 1920 for c in chunks] == [2, 4, 4, 1]
        assert np.abs(np.concatenate(chunks) - tiny.decode(codes)).max() < 1e-4


def test_full_size_bf16_graphs_equal_eager():
    root = Path(os.environ.get("S2S_QWEN3_CKPT_DIR", ""))
    if not (root / "0.6b-custom_voice" / "config.json").is_file():
        pytest.skip("set S2S_QWEN3_CKPT_DIR to a folder holding 0.6b-custom_voice (bench/run_all.sh build)")
    eng = Qwen3TTS.from_pretrained(root / "0.6b-custom_voice", device="cuda", dtype=torch.bfloat16, max_seq_len=512)
    graphed = BatchDecoder(eng, 8)
    graphed.capture()
    eager = BatchDecoder(eng, 8)
    eager.use_graphs = False
    sampling = SamplingParams(seed=5)
    a, b = requests(eng, sampling, n=30), requests(eng, sampling, n=30)
    with_graphs = run(RowScheduler(eng, graphed, audio=False), {0: a[:2], 4: a[2:]})
    without = run(RowScheduler(eng, eager, audio=False), {0: b[:2], 4: b[2:]})
    for x, y in zip(a, b):
        assert torch.equal(with_graphs[x][0], without[y][0]) and with_graphs[x][0].shape == (29, 16)
