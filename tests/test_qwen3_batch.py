"""Batched decoding (``s2s.qwen3_tts.batch``, ``batch_scheduler``) on tiny random checkpoints, on the CPU (eager).

Exactness is tested two ways, both robust to another CPU's rounding:
* against the single-stream engine in float64: the two paths multiply in other shapes (a batch of rows vs one row),
  which may round differently, and no float64 rounding can flip a greedy token;
* between batched runs in float32 with one batch bucket and one key bucket: every kernel then has the same shape
  whatever the other rows hold, and a row's arithmetic reads only that row (batch_layers.py), so its tokens are
  the same bits alone, next to others, joining late or next to a cancelled row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2s.checkpoint_builder.build import build_checkpoint
from s2s.qwen3_tts import Qwen3TTS, SamplingParams
from s2s.qwen3_tts.batch import BatchDecoder, batch_buckets
from s2s.qwen3_tts.batch_sampling import RowNoise, RowSampling, mix32, seed32
from s2s.qwen3_tts.batch_scheduler import RowRequest, RowScheduler

MAX_SEQ_LEN = 160
TEXTS = ("Hello there, how are you today?", "Hi.", "A somewhat longer sentence, for the third row to speak.")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """``engines(dtype)``: the tiny CustomVoice engine on the CPU, loaded once per dtype."""
    path = build_checkpoint(tmp_path_factory.mktemp("qwen3-batch") / "custom_voice", size="tiny",
                            kind="custom_voice")
    cache = {}

    def get(dtype=torch.float32):
        if dtype not in cache:
            cache[dtype] = Qwen3TTS.from_pretrained(path, device="cpu", dtype=dtype, max_seq_len=MAX_SEQ_LEN)
        return cache[dtype]

    return get


def prompts(eng):
    """Three prompts of different lengths and speakers, one with an instruction."""
    return [eng.prompt_custom_voice(TEXTS[0], "ryan", "english"),
            eng.prompt_custom_voice(TEXTS[1], "aiden", "english", instruct="Speak slowly."),
            eng.prompt_custom_voice(TEXTS[2], "vivian", "auto")]


def fixed_buckets(eng, max_batch=4, audio=False):
    """A scheduler whose every frame has the same shape (one batch bucket, one key bucket)."""
    decoder = BatchDecoder(eng, max_batch, batch_sizes=(max_batch,), key_sizes=(eng.max_seq_len,))
    return RowScheduler(eng, decoder, audio=audio)


def run(rows, arrivals, cancels=None):
    """Drive ``rows`` step by step: ``arrivals`` {step: [request]}, ``cancels`` {step: [request]} -> per request
    (codes [T, 16], audio chunks, error), in submission order."""
    cancels = cancels or {}
    out = {}
    step = 0
    while rows.busy or any(at >= step for at in arrivals):
        for request in arrivals.get(step, []):
            out[request] = ([], [], None)
            rows.submit(request)
        for request in cancels.get(step, []):
            request.cancel.set()
        for event in rows.step():
            codes, audio, _ = out[event.request]
            if event.codes is not None:
                codes.append(event.codes)
            if event.audio is not None:
                audio.append(event.audio)
            if event.error is not None:
                out[event.request] = (codes, audio, event.error)
        step += 1
    return {r: (torch.cat(c) if c else torch.zeros(0, 16, dtype=torch.long), a, e) for r, (c, a, e) in out.items()}


# -- parts ------------------------------------------------------------------------------------------------------
def test_buckets_and_seed_folding():
    assert batch_buckets(16) == (1, 2, 4, 8, 16) and batch_buckets(6) == (1, 2, 4, 6) and batch_buckets(1) == (1,)
    values = torch.arange(1000, dtype=torch.long)
    assert len(set(mix32(values).tolist())) == 1000  # a bijection on 32 bits
    assert mix32(7) == int(mix32(torch.tensor([7]))[0])  # the same hash on ints and tensors
    assert seed32(123) == seed32(123) != seed32(124) and 0 <= seed32(None) < 2**32


def test_row_noise_depends_only_on_the_row_key_and_counter():
    draw = RowNoise(16, 50, torch.device("cpu"))
    keys, counters = torch.tensor([5, 9, 5]), torch.tensor([3, 3, 4])
    noise = draw(keys, counters)  # [3, 16, 50]
    assert noise.shape == (3, 16, 50) and torch.isfinite(noise).all()
    assert torch.equal(noise[0], draw(keys[:1], counters[:1])[0])  # alone or with other rows: the same draws
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[0], noise[2])
    exponential = noise.exp()  # E ~ Exp(1): mean 1, P(E > 1) = 1/e
    assert 0.95 < exponential.mean() < 1.05 and 0.34 < (exponential > 1).float().mean() < 0.40


def test_row_sampling_values_per_row():
    cpu = torch.device("cpu")
    sampling = RowSampling(4, 4, 1, cpu)
    sampling.set_row(0, SamplingParams.greedy())
    sampling.set_row(1, SamplingParams(top_k=1, subtalker_top_k=1))
    sampling.set_row(2, SamplingParams(top_k=2, subtalker_top_k=2))
    sampling.set_row(3, SamplingParams(top_k=4, subtalker_top_k=4, top_p=0.3))
    logits = torch.tensor([[0.5, 3.0, 2.9, -1.0]]).repeat(4, 1)
    draw = RowNoise(1, 4, cpu)
    keys = torch.tensor([1, 2, 3, 4])
    draws = torch.stack([sampling.select(logits, 0, draw(keys, torch.full((4,), i))[:, 0]) for i in range(200)])
    assert (draws[:, 0] == 1).all() and (draws[:, 1] == 1).all()  # greedy; top-k 1
    assert set(draws[:, 2].tolist()) == {1, 2}  # top-k 2 draws both
    assert (draws[:, 3] == 1).all()  # top-p 0.3 keeps only the most likely id
    with pytest.raises(ValueError, match="top_k = 0 is not served in a batch"):
        sampling.set_row(0, SamplingParams(top_k=0))
    without_top_p = RowSampling(1, 4, 1, cpu, top_p=(False, False))
    without_top_p.set_row(0, SamplingParams(top_k=4, subtalker_top_k=4))
    with pytest.raises(ValueError, match="top_p = 0.8 is not served by this batch"):
        without_top_p.set_row(0, SamplingParams(top_k=4, subtalker_top_k=4, top_p=0.8))
    sampled_only = RowSampling(1, 4, 1, cpu, greedy=(False, False))
    with pytest.raises(ValueError, match="do_sample = False is not served by this batch"):
        sampled_only.set_row(0, SamplingParams.greedy())


# -- rows against the single-stream engine ----------------------------------------------------------------------
def test_greedy_rows_equal_the_single_stream_engine(engines):
    """Rows of different prompt lengths, speakers, an instruction and different ends (budget, EOS), with the
    default buckets (the batch bucket changes as rows join and leave): each row's codes are the engine's."""
    eng = engines(torch.float64)
    greedy = SamplingParams.greedy()
    budgets = (14, 9, 22)
    requests = [RowRequest(p, greedy, max_new_tokens=n) for p, n in zip(prompts(eng), budgets)]
    results = run(RowScheduler(eng, BatchDecoder(eng, 4), audio=False),
                  {0: requests[:2], 3: requests[2:]})  # the third joins a running batch
    for request in requests:
        codes, _, error = results[request]
        assert error is None
        alone = eng.generate_codes(request.prompt, greedy, max_new_tokens=request.max_new_tokens)
        assert codes.shape == alone.shape == (request.max_new_tokens - 1, 16)
        assert torch.equal(codes, alone)


def test_eos_ends_one_row_and_not_the_others(engines):
    eng = engines(torch.float64)
    head = eng.talker.w.codec_head
    saved = head[eng.eos_id].clone()
    first, second, _ = prompts(eng)
    greedy = SamplingParams.greedy()
    ends = RowRequest(first, greedy, max_new_tokens=12)
    runs = RowRequest(second, greedy, max_new_tokens=12, suppress_eos=True)
    try:
        head[eng.eos_id] = 50 * head.abs().max()  # EOS as soon as it is allowed
        results = run(RowScheduler(eng, BatchDecoder(eng, 2), audio=False), {0: [ends, runs]})
        alone = eng.generate_codes(second, greedy, max_new_tokens=12, suppress_eos=True)
        ended = eng.generate_codes(first, greedy, max_new_tokens=12)
    finally:
        head[eng.eos_id] = saved
    assert torch.equal(results[ends][0], ended) and ended.shape == (2, 16)  # EOS once allowed (2 ids), cut
    assert torch.equal(results[runs][0], alone) and alone.shape == (11, 16)


# -- rows against rows (float32, fixed shapes) ------------------------------------------------------------------
def test_join_and_cancel_leave_the_other_rows_bit_for_bit(engines):
    eng = engines()
    greedy = SamplingParams.greedy()
    p0, p1, p2 = prompts(eng)

    def request(prompt, n=20):
        return RowRequest(prompt, greedy, max_new_tokens=n)

    solo = {}
    for prompt in (p0, p1):
        r = request(prompt)
        solo[prompt.length] = run(fixed_buckets(eng), {0: [r]})[r][0]
    a, b, cancelled = request(p0), request(p1), request(p2, 40)
    results = run(fixed_buckets(eng), {0: [a, cancelled], 5: [b]}, cancels={8: [cancelled]})
    assert torch.equal(results[a][0], solo[p0.length]) and solo[p0.length].shape == (19, 16)
    assert torch.equal(results[b][0], solo[p1.length])  # joined at step 5
    assert 0 < len(results[cancelled][0]) < 8  # cancelled mid-way: ended without its remaining frames


def test_seeded_sampling_is_reproducible_whatever_else_runs(engines):
    eng = engines()
    p0, p1, p2 = prompts(eng)
    seeded = SamplingParams(seed=7)

    def alone():
        r = RowRequest(p0, seeded, max_new_tokens=16, suppress_eos=True)
        return run(fixed_buckets(eng), {0: [r]})[r][0]

    first, again = alone(), alone()
    r = RowRequest(p0, seeded, max_new_tokens=16, suppress_eos=True)
    others = [RowRequest(p1, SamplingParams(), max_new_tokens=16), RowRequest(p2, SamplingParams(seed=8),
                                                                              max_new_tokens=30)]
    crowded = run(fixed_buckets(eng), {0: others, 2: [r]})[r][0]
    other_seed = RowRequest(p0, SamplingParams(seed=8), max_new_tokens=16, suppress_eos=True)
    different = run(fixed_buckets(eng), {0: [other_seed]})[other_seed][0]
    assert first.shape == (15, 16)
    assert torch.equal(first, again) and torch.equal(first, crowded)
    assert not torch.equal(first, different)


# -- streaming, errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [False, True], ids=["inline", "codec-thread"])
def test_streaming_audio_per_row_equals_its_one_shot_decode(engines, overlap):
    eng = engines()
    greedy = SamplingParams.greedy()
    p0, p1, _ = prompts(eng)
    a = RowRequest(p0, greedy, max_new_tokens=12)
    b = RowRequest(p1, greedy, max_new_tokens=8, chunk_size=3, first_chunk_size=1)
    rows = RowScheduler(eng, BatchDecoder(eng, 2), overlap_audio=overlap)
    results = run(rows, {0: [a], 1: [b]})
    rows.stop()
    for request, sizes in ((a, [2, 4, 4, 1]), (b, [1, 3, 3])):
        codes, chunks, error = results[request]
        assert error is None and [len(c) // 1920 for c in chunks] == sizes
        assert all(c.dtype == np.float32 for c in chunks)
        # float32: chunked and one-shot convolutions round differently (test_qwen3_engine.py, the same tolerance)
        assert np.abs(np.concatenate(chunks) - eng.decode(codes)).max() < 1e-4


def test_row_decoders_share_one_copy_of_the_codebook_tables(engines):
    from s2s.qwen3_tts.codec_stream import StreamingCodecDecoder

    eng = engines()
    first, second = (StreamingCodecDecoder(eng.speech_tokenizer) for _ in range(2))
    assert first._quantizer is second._quantizer and first._transformer is not second._transformer


def test_a_failing_codec_decoder_ends_its_request_alone(engines):
    eng = engines()
    greedy = SamplingParams.greedy()
    p0, p1, _ = prompts(eng)

    class Broken:
        def reset(self, context_codes=None):
            pass

        def decode(self, codes):
            raise RuntimeError("codec fault")

    rows = RowScheduler(eng, BatchDecoder(eng, 2), overlap_audio=True)
    rows.warmup((2, 4))
    rows._codecs[1] = Broken()  # row slot 1's decoder fails
    a, b = RowRequest(p0, greedy, max_new_tokens=12), RowRequest(p1, greedy, max_new_tokens=12)
    results = run(rows, {0: [a, b]})
    rows.stop()
    assert results[a][2] is None and sum(len(c) for c in results[a][1]) == 11 * 1920
    assert isinstance(results[b][2], RuntimeError) and results[b][1] == []


def test_a_request_that_cannot_be_spoken_fails_alone(engines):
    eng = engines()
    p0 = prompts(eng)[0]
    too_long = RowRequest(p0, SamplingParams.greedy(), max_new_tokens=MAX_SEQ_LEN)
    no_top_k = RowRequest(p0, SamplingParams(top_k=0), max_new_tokens=5)
    fine = RowRequest(p0, SamplingParams.greedy(), max_new_tokens=5)
    empty = RowRequest(p0, SamplingParams.greedy(), max_new_tokens=1)  # N new tokens -> N - 1 frames
    results = run(RowScheduler(eng, BatchDecoder(eng, 2), audio=False), {0: [too_long, no_top_k, empty, fine]})
    assert results[empty][2] is None and len(results[empty][0]) == 0
    assert isinstance(results[too_long][2], ValueError) and "does not fit" in str(results[too_long][2])
    assert isinstance(results[no_top_k][2], ValueError)
    assert results[fine][2] is None and results[fine][0].shape == (4, 16)


def test_more_requests_than_rows_wait_their_turn(engines):
    eng = engines()
    greedy = SamplingParams.greedy()
    requests = [RowRequest(p, greedy, max_new_tokens=6) for p in prompts(eng)]
    rows = RowScheduler(eng, BatchDecoder(eng, 2), audio=False)
    results = run(rows, {0: requests})
    assert all(results[r][0].shape == (5, 16) for r in requests)
    assert rows.frames == 10  # two rows for 5 frames, then the third alone


def test_row_slot_memory_is_what_the_decoder_allocates(engines):
    from s2s.checkpoint_builder.build import main_config
    from s2s.qwen3_tts.batch_memory import row_slot_bytes

    decoder = BatchDecoder(engines(), 2)
    per_row = sum(t.numel() * t.element_size() for t in (
        decoder.cache, decoder.trailing, decoder.mask, decoder.history, decoder.predictor_rows,
        decoder.predictor_rotated,
        decoder.processor.generated, decoder.noise)) // 2
    talker = main_config("tiny", "custom_voice")["talker_config"]
    assert row_slot_bytes(talker, talker["code_predictor_config"], MAX_SEQ_LEN, dtype_bytes=4) == per_row


def test_check_shows_the_row_memory_of_the_released_sizes():
    from s2s.cli import _batch_memory

    lines = _batch_memory(2048)
    assert lines[0].startswith("0.6b: 229 MiB per row slot at max_seq_len 2048") and "B=16: 3.58 GiB" in lines[0]
    assert lines[1].startswith("1.7b: 233 MiB per row slot")
