"""Unit tests of the Qwen3-TTS engine's parts (RoPE, sampling, logits processors) and of its behaviour on tiny
random checkpoints on the CPU: limits and errors, EOS blocking, streaming == one-shot, cancel, warm-up.

Reference parity of the generated tokens lives in test_qwen3_parity.py. This file takes about 40 s on two cores, half
of it the compile-mode test building its C++ kernels.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from s2s.checkpoint_builder.build import build_checkpoint
from s2s.qwen3_tts import Qwen3TTS, SamplingParams, layers
from s2s.qwen3_tts.rope import RopeTables, apply_rope, fold_norm_weights
from s2s.qwen3_tts.sampling import TalkerLogitsProcessor, log_exponential, select_token
from s2s.qwen3_tts.talker import key_buckets

TEXT = "Hello there, how are you today?"


# -- parts ----------------------------------------------------------------------------------------------------
@pytest.mark.reference
def test_talker_mrope_with_equal_streams_is_plain_rope():
    from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb

    torch.manual_seed(0)
    head_dim, theta = 128, 1e6
    positions = torch.tensor([0, 1, 7, 300, 2047])
    q, k = torch.randn(1, 16, 5, head_dim), torch.randn(1, 8, 5, head_dim)
    # the reference's M-RoPE input: three identical position streams -> cos/sin [3, 1, T, D]
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    freqs = positions.float()[:, None] * inv_freq[None]
    emb = torch.cat((freqs, freqs), dim=-1).expand(3, 1, -1, -1)
    ref_q, ref_k = apply_multimodal_rotary_pos_emb(q, k, emb.cos(), emb.sin(), [24, 20, 20], mrope_interleaved=True)
    rotations = RopeTables(head_dim, theta, 2048, torch.float32, torch.device("cpu")).rotations(positions)

    def rope(x):  # [1, H, T, d] <-> the engine's [T, H, d]
        return apply_rope(x[0].transpose(0, 1), rotations).transpose(0, 1).unsqueeze(0)

    # 2.4e-7 here; 1e-5 leaves room for another CPU's cos/sin and FMA rounding (a wrong rotation is off by ~1)
    assert torch.allclose(rope(q), ref_q, atol=1e-5)
    assert torch.allclose(rope(k), ref_k, atol=1e-5)


def test_select_token_greedy_topk_topp():
    logits = torch.tensor([0.5, 3.0, 2.9, -1.0])
    assert select_token(logits, False, 0.9, 50, 1.0).tolist() == [1]
    torch.manual_seed(0)
    assert all(select_token(logits, True, 1.0, 1, 1.0).item() == 1 for _ in range(20))  # top-k 1
    assert all(select_token(logits, True, 1.0, 0, 0.3).item() == 1 for _ in range(20))  # top-p keeps only id 1
    draws = [select_token(logits, True, 1.0, 2, 1.0).item() for _ in range(400)]
    assert set(draws) == {1, 2}  # top-k 2 keeps the two best, both get drawn


def test_rope_with_folded_norm_weights_equals_weight_then_rope():
    torch.manual_seed(0)
    rotations = RopeTables(16, 1e6, 16, torch.float32, torch.device("cpu")).rotations(torch.tensor([3, 9]))
    qk_norm = torch.cat((torch.randn(16).expand(4, -1), torch.randn(16).expand(2, -1)))  # 4 q heads, 2 kv heads
    x = torch.randn(2, 6, 16)  # [T, Hq + Hkv, d]
    folded = fold_norm_weights(rotations, qk_norm, kv_heads=2)  # [T, 3 groups, d, d]
    assert folded.shape == (2, 3, 16, 16)
    assert torch.allclose(apply_rope(x, folded), apply_rope(x * qk_norm, rotations), atol=1e-5)  # 2.4e-7 here


def test_select_token_samples_in_proportion():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.25, 0.75]))
    ones = sum(select_token(logits, True, 1.0, 0, 1.0).item() for _ in range(4000))
    assert 0.70 < ones / 4000 < 0.80


def test_select_token_top_k_and_temperature_keep_the_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    draws = torch.tensor([select_token(logits, True, 1.0, 2, 1.0).item() for _ in range(4000)])
    assert set(draws.tolist()) == {2, 3}
    assert 0.53 < (draws == 3).float().mean() < 0.61  # 0.4 / (0.3 + 0.4) = 0.571
    # temperature 0.5 squares the probabilities: 0.4^2 / (0.3^2 + 0.4^2) = 0.64
    draws = torch.tensor([select_token(logits, True, 0.5, 2, 1.0).item() for _ in range(4000)])
    assert 0.60 < (draws == 3).float().mean() < 0.68


def test_select_token_uses_the_given_noise():
    logits = torch.tensor([0.0, 1.0, 0.5, -3.0])
    noise = torch.zeros(2)
    noise[0] = -100.0  # log E very negative: a huge Gumbel draw for the best candidate of the top 2
    assert select_token(logits, True, 1.0, 2, 1.0, noise).item() in (1, 2)
    assert select_token(logits, True, 1.0, 2, 1.0, torch.tensor([0.0, -100.0])).item() != \
        select_token(logits, True, 1.0, 2, 1.0, torch.tensor([-100.0, 0.0])).item()
    torch.manual_seed(3)
    first = log_exponential((15, 50), torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, log_exponential((15, 50), torch.device("cpu"))) and first.shape == (15, 50)


def test_talker_processor_penalty_eos_and_suppression():
    vocab, eos = 3072, 2150
    proc = TalkerLogitsProcessor(vocab, eos, torch.device("cpu"))
    logits = torch.ones(vocab)
    logits[5] = -2.0
    out = proc(logits, torch.tensor([0]), penalty=2.0)
    assert out[eos] == float("-inf")  # no id generated yet: EOS blocked
    assert torch.isinf(out[2048:eos]).all() and torch.isinf(out[eos + 1 :]).all()  # control ids suppressed
    assert torch.isfinite(out[:2048]).all()
    proc.record(torch.tensor([5]))
    proc.record(torch.tensor([7]))
    out = proc(logits, torch.tensor([2]), penalty=2.0)
    assert out[eos] == 1.0  # two ids generated: EOS allowed
    assert out[5] == -4.0 and out[7] == 0.5 and out[6] == 1.0  # penalty: negative * p, positive / p, others kept
    proc.reset(min_new_tokens=100)
    assert proc(logits, torch.tensor([50]), penalty=2.0)[eos] == float("-inf")
    assert proc(logits, torch.tensor([50]), penalty=2.0)[5] == -2.0


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(subtalker_top_p=1.5)
    greedy = SamplingParams.greedy()
    assert not greedy.do_sample and not greedy.subtalker_do_sample and greedy.repetition_penalty == 1.05


# -- engine on tiny checkpoints ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """``engines(kind, max_seq_len=2048, dtype=float32, compile=False)``: a CPU engine, loaded once per module."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("qwen3-engine")
    cache = {}

    def get(kind, max_seq_len=2048, dtype=torch.float32, compile=False):
        key = (kind, max_seq_len, dtype, compile)
        if key not in cache:
            path = build_checkpoint(root / kind, size="tiny", kind=kind)  # a no-op once built
            cache[key] = Qwen3TTS.from_pretrained(path, device="cpu", dtype=dtype, max_seq_len=max_seq_len,
                                                  compile=compile)
        return cache[key]

    return get


def test_public_attributes(engines):
    eng = engines("custom_voice")
    assert eng.kind == "custom_voice" and eng.sample_rate == 24000
    assert "ryan" in eng.speakers and "auto" in eng.languages and "beijing_dialect" not in eng.languages
    assert not eng.use_graphs  # CPU: eager


def test_narrow_projections_are_stored_column_major(engines):
    """o_proj and down keep their [N, K] shape but are stored so that the transpose the layers multiply by is
    contiguous: the layout in which cuBLAS runs these one-row products about twice as fast (weights._column_major)."""
    eng = engines("custom_voice")
    for lw in [*eng.talker.w.layers, *eng.predictor.w.layers]:
        for weight in (lw.o_proj, lw.down):
            assert weight.t().is_contiguous() and not weight.is_contiguous()


def test_wrong_kind_unknown_speaker_and_language_are_value_errors(engines):
    eng = engines("custom_voice")
    with pytest.raises(ValueError, match="voice_design checkpoint"):
        eng.prompt_voice_design(TEXT, "calm")
    with pytest.raises(ValueError, match="speaker 'nobody'"):
        eng.prompt_custom_voice(TEXT, "nobody")
    with pytest.raises(ValueError, match="language 'klingon'"):
        eng.prompt_custom_voice(TEXT, "ryan", "klingon")
    with pytest.raises(ValueError, match="text is empty"):
        eng.prompt_custom_voice("", "ryan")


def test_instruct_is_dropped_for_0b6_custom_voice(engines, monkeypatch):
    eng = engines("custom_voice")
    with_instruct = eng.prompt_custom_voice(TEXT, "ryan", instruct="Whisper.")
    monkeypatch.setattr(eng, "model_size", "0b6")
    dropped = eng.prompt_custom_voice(TEXT, "ryan", instruct="Whisper.")
    plain = eng.prompt_custom_voice(TEXT, "ryan")
    assert torch.equal(dropped.embeds, plain.embeds)
    assert with_instruct.length > plain.length


def test_over_long_input_and_budget(engines):
    eng = engines("custom_voice", max_seq_len=64)
    with pytest.raises(ValueError, match="shorten the text .* by at least"):
        eng.generate_codes(eng.prompt_custom_voice("word " * 80, "ryan"))
    with pytest.raises(ValueError, match=r"too long to speak within max_seq_len=64: shorten it by at least \d+ tokens"):
        eng.generate_codes(eng.prompt_custom_voice("one two three four five six seven", "ryan"))
    prompt = eng.prompt_custom_voice("Hi.", "ryan")
    with pytest.raises(ValueError, match="max_new_tokens=200 does not fit"):
        eng.generate_codes(prompt, max_new_tokens=200)
    # default budget: 8 frames per text token + 50, capped by the free positions of max_seq_len
    assert eng._frame_budget(prompt, None) == 64 - prompt.length
    assert engines("custom_voice")._frame_budget(prompt, None) == 8 * prompt.text_tokens + 50
    assert eng._frame_budget(prompt, 5) == 4  # N new tokens -> N - 1 frames


def test_suppress_eos_runs_the_whole_budget(engines):
    eng = engines("custom_voice")
    head = eng.talker.w.codec_head
    saved = head[eng.eos_id].clone()
    prompt = eng.prompt_custom_voice(TEXT, "ryan", "english")
    try:
        head[eng.eos_id] = 50 * head.abs().max()
        assert eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=12).shape == (2, 16)
        blocked = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=12, suppress_eos=True)
    finally:
        head[eng.eos_id] = saved
    assert blocked.shape == (11, 16) and (blocked[:, 0] != eng.eos_id).all()


@pytest.mark.parametrize("kind", ["custom_voice", "base"])
def test_stream_equals_one_shot_decode(engines, kind):
    eng = engines(kind)
    if kind == "base":
        rng = np.random.default_rng(1)
        voice = eng.create_voice_prompt((0.1 * rng.standard_normal(30000).astype(np.float32), 24000), "Reference.")
        prompt = eng.prompt_voice_clone(TEXT, voice, "english")
        assert prompt.context_codes is not None
    else:
        prompt = eng.prompt_custom_voice(TEXT, "ryan", "english")
    codes = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=12)  # 11 frames
    chunks = list(eng.stream(prompt, SamplingParams.greedy(), chunk_size=4, first_chunk_size=2, max_new_tokens=12))
    assert [len(c) for c in chunks] == [2 * 1920, 4 * 1920, 4 * 1920, 1 * 1920]
    assert all(c.dtype == np.float32 for c in chunks)
    one_shot = eng.decode(codes, context_codes=prompt.context_codes)
    # float32: chunked and one-shot convolutions round differently (qwen3-tts.md section 0); exact in float64
    assert np.abs(np.concatenate(chunks) - one_shot).max() < 1e-4


def test_stream_stops_on_cancel(engines):
    eng = engines("custom_voice")
    cancel = threading.Event()
    chunks = []
    for chunk in eng.stream(eng.prompt_custom_voice(TEXT, "ryan"), SamplingParams.greedy(), max_new_tokens=20,
                            cancel=cancel):
        chunks.append(chunk)
        cancel.set()
    assert len(chunks) == 1


def test_key_buckets_leave_the_tokens_unchanged(engines, monkeypatch):
    assert key_buckets(2048) == (64, 128, 256, 512, 1024, 2048) and key_buckets(300) == (64, 128, 256, 300)
    # float64: a read of 64 vs 160 key slots may sum in another order; no such rounding may flip a near-tie
    eng = engines("custom_voice", max_seq_len=160, dtype=torch.float64)
    prompt = eng.prompt_custom_voice("Hi.", "ryan", "english")
    frames = 130 - prompt.length  # the talker steps cross the 64 and 128 buckets
    bucketed = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=frames + 1, suppress_eos=True)
    monkeypatch.setattr(eng.talker, "key_buckets", (160,))  # every step reads the whole cache
    whole = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=frames + 1, suppress_eos=True)
    assert prompt.length < 64 and bucketed.shape == (frames, 16)
    assert torch.equal(bucketed, whole)


def test_warmup_leaves_generation_unchanged(engines):
    eng = engines("custom_voice")
    prompt = eng.prompt_custom_voice(TEXT, "aiden", "english")
    before = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=6)
    eng.warmup()
    assert torch.equal(eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=6), before)


def test_compile_mode_matches_eager(engines):
    """compile=True runs the same step functions through torch.compile (inductor's CPU backend here). Inductor fuses
    the elementwise ops (norms, SiLU * up) and rounds them its own way, so its layers equal eager to rounding, not bit
    for bit. The engines run in float64, where that rounding cannot flip a greedy token on any CPU (in float32 a
    near-tie of two candidates would). Checked: greedy tokens are equal across several talker key buckets and all
    predictor steps; each compiled layer equals eager; the compiled sampler draws the same ids as eager from the same
    logits and seed; a seeded sampled run repeats exactly. A whole sampled run is not compared: the sampler draws from
    float32 logits, where the first near-tie flips it.

    Six graphs are compiled (each layer static, then with symbolic sizes; the sampler greedy, then sampled), 17 C++
    kernels, each a gcc run of about 2.5 s. The direct calls below run under no_grad, as the engine does: in grad mode
    every function would be traced and compiled again."""
    eager = engines("custom_voice", max_seq_len=160, dtype=torch.float64)
    compiled = engines("custom_voice", max_seq_len=160, dtype=torch.float64, compile=True)
    assert compiled.talker.step_layer is not eager.talker.step_layer
    prompt = eager.prompt_custom_voice("Hi.", "ryan", "english")
    frames = 130 - prompt.length  # crosses the 64 and 128 key buckets

    def codes(engine, sampling):
        return engine.generate_codes(prompt, sampling, max_new_tokens=frames + 1, suppress_eos=True)

    assert torch.equal(codes(compiled, SamplingParams.greedy()), codes(eager, SamplingParams.greedy()))
    seeded = SamplingParams(seed=5)
    assert torch.equal(codes(compiled, seeded), codes(compiled, seeded))

    torch.manual_seed(0)
    talker, predictor = compiled.talker, compiled.predictor
    shape, dtype = talker.w.shape, compiled.dtype
    with torch.no_grad():
        for kv_len in (64, 128, 160):
            slot = torch.tensor([kv_len - 1])
            rotations = fold_norm_weights(talker.rope.rotations(slot), talker.qk_norms, shape.kv_heads)[0]
            x = torch.randn(1, 1, talker.w.codec_embedding.shape[1], dtype=dtype)
            cache = torch.randn_like(talker.cache.layer(0))
            mask = torch.zeros(1, kv_len, dtype=dtype)
            args = (talker.w.layers[0], shape, rotations)
            want = layers.decoder_layer(x.clone(), *args, cache.clone(), slot, kv_len, mask)
            torch.testing.assert_close(talker.step_layer(x.clone(), *args, cache.clone(), slot, kv_len, mask), want)
        for first in (2, 9, 15):
            x = torch.randn(1, 1, predictor.w.final_norm.shape[0], dtype=dtype)
            rows = torch.randn_like(predictor.rows[0])
            args = (predictor.w.layers[0], predictor.w.shape, predictor.rotations[0][first : first + 1])
            want = layers.decoder_layer_fixed_slots(x.clone(), *args, rows.clone(), first, None)
            torch.testing.assert_close(predictor.step_layer(x.clone(), *args, rows.clone(), first, None), want)

        vocab = talker.w.codec_embedding.shape[0]
        for engine in (eager, compiled):
            engine.talker.processor.reset(2)
        for i in range(10):
            logits = 3.0 * torch.randn(vocab)  # float32, as the talker hands them to the sampler
            n_generated = torch.tensor([i + 1])
            torch.manual_seed(i)
            want = eager.talker.sample(logits, n_generated, seeded)
            torch.manual_seed(i)
            assert torch.equal(compiled.talker.sample(logits, n_generated, seeded), want)


def test_a_chunk_size_without_a_captured_graph_is_said_once(engines, caplog, monkeypatch):
    """With graphs, streaming at a chunk size warm-up did not capture warns once per size (it still decodes)."""
    eng = engines("custom_voice")
    monkeypatch.setattr(eng, "use_graphs", True)
    monkeypatch.setattr(eng, "captured_chunk_sizes", {2, 4})
    monkeypatch.setattr(eng, "_warned_chunk_sizes", set())
    with caplog.at_level("WARNING", logger="s2s.qwen3_tts.engine"):
        eng._warn_uncaptured((2, 4))
        assert not caplog.records
        eng._warn_uncaptured((2, 8))
        eng._warn_uncaptured((8, 4))
    (record,) = caplog.records
    assert "chunk size 8 was not captured" in record.getMessage() and "[2, 4]" in record.getMessage()


def test_warmup_records_no_captured_sizes_without_graphs(engines):
    assert engines("custom_voice").captured_chunk_sizes == set()
