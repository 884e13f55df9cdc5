"""The static-cache LLM decode (s2s.llm_decode): fp32 greedy tokens equal to transformers' ``generate`` on tiny
random Llama, Qwen2 and Qwen3 models and on the real SmolLM2-135M (eager, CPU); prompt slices, stops, sampling,
the fallback to the transformers loop; on CUDA, graph replays equal to the eager steps."""

import pytest
import torch
from fixtures_models import smollm2_dir  # noqa: F401  (session fixture)

from handlers.llm import ChatModel, static_decoder
from s2s.config import LLMConfig
from s2s.llm_decode import StaticDecoder, unsupported

VOCAB = 384
EOS = VOCAB - 1
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=EOS, initializer_range=0.2)
"""Few layers, grouped-query attention, and weights large enough that the greedy path varies (not one token)."""


def tiny_model(family: str, **extra) -> torch.nn.Module:
    import transformers

    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[family]
    torch.manual_seed(0)
    return model_class(config_class(**SHAPE, **extra)).eval()


TINY = {
    "llama-tied": ("llama", dict(tie_word_embeddings=True, rope_theta=10000.0)),
    "llama3-rope": ("llama", dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen2-biases": ("qwen2", {}),
    "qwen3-qk-norm": ("qwen3", dict(head_dim=32)),
}


def reference_ids(model: torch.nn.Module, prompt: torch.Tensor, n: int) -> list[int]:
    """transformers' greedy ``generate``, cut at the end token (which it includes)."""
    out = model.generate(prompt, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(prompt),
                         pad_token_id=0)[0, prompt.shape[1]:].tolist()
    return out[:out.index(EOS)] if EOS in out else out


def static_ids(decoder: StaticDecoder, prompt: torch.Tensor, n: int, slice_at: int | None = None,
               temperature: float = 0.0) -> list[int]:
    decoder.reset()
    if slice_at is not None:
        decoder.extend(prompt[:, :slice_at])
        logits = decoder.extend(prompt[:, slice_at:])
    else:
        logits = decoder.extend(prompt)
    return list(decoder.decode(logits, n, temperature, {EOS}))


def prompt_ids(length: int = 41, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, EOS, (1, length), generator=torch.Generator().manual_seed(seed))  # [1, T]


@pytest.mark.parametrize("name", sorted(TINY))
def test_greedy_tokens_equal_generate_on_tiny_random_models(name):
    model = tiny_model(TINY[name][0], **TINY[name][1])
    assert unsupported(model) is None
    prompt = prompt_ids()
    expected = reference_ids(model, prompt, 48)
    assert len(set(expected)) > 5, expected  # a varied path, not one repeated token
    decoder = StaticDecoder(model, 256)
    assert not decoder.use_graphs
    assert static_ids(decoder, prompt, 48) == expected
    assert static_ids(decoder, prompt, 48, slice_at=17) == expected  # the prompt in two slices, as the stage feeds it
    assert static_ids(decoder, prompt, 48) == expected  # a second sequence on the same buffers


def test_shared_weights_leave_the_model_working_and_hold_no_copy():
    model = tiny_model("qwen2")
    prompt = prompt_ids()
    expected = reference_ids(model, prompt, 32)
    decoder = StaticDecoder(model, 256, share_weights=True)
    layer = model.model.layers[0]
    assert layer.self_attn.k_proj.weight.data_ptr() == decoder.w.layers[0].qkv[SHAPE["hidden_size"]:].data_ptr()
    assert layer.self_attn.q_proj.bias.data_ptr() == decoder.w.layers[0].qkv_bias.data_ptr()
    assert static_ids(decoder, prompt, 32) == expected
    assert reference_ids(model, prompt, 32) == expected  # the transformers path still runs on the shared weights


def test_a_long_conversation_takes_the_transformers_loop(caplog):
    model = tiny_model("llama")
    cfg = LLMConfig(device="cpu", max_seq_len=64)
    chat = ChatModel(model, _ByteTokenizer(), "cpu", static_decoder(model, cfg))
    short, long = prompt_ids(20), prompt_ids(60)
    calls = []
    real_extend = chat.decoder.extend
    chat.decoder.extend = lambda ids: (calls.append(ids.shape[1]), real_extend(ids))[1]
    assert list(chat.generate_ids(short, 40)) == reference_ids(model, short, 40)
    assert calls == [20]
    assert list(chat.generate_ids(long, 40)) == reference_ids(model, long, 40)  # 100 tokens > the 64-token cache
    assert calls == [20]


def test_a_new_turn_prefills_only_what_the_cache_does_not_hold():
    model = tiny_model("qwen2")
    chat = ChatModel(model, _ByteTokenizer(), "cpu", StaticDecoder(model, 512))
    first = prompt_ids(30)
    reply = list(chat.generate_ids(first, 20))
    assert len(reply) == 20  # no end token on this path: the whole reply is in the cache but its last id
    second = torch.cat([first, torch.tensor([reply[:12]]), prompt_ids(15, seed=2)], dim=1)  # history, new words
    sizes = []
    extend = chat.decoder.extend
    chat.decoder.extend = lambda ids: (sizes.append(ids.shape[1]), extend(ids))[1]
    assert list(chat.generate_ids(second, 30)) == reference_ids(model, second, 30)
    assert sizes == [15]  # the 42 ids the cache held already were not fed again
    other = prompt_ids(25, seed=3)
    assert list(chat.generate_ids(other, 30)) == reference_ids(model, other, 30)  # another conversation: anew
    assert sizes == [15, 25]


def test_stop_requests_and_token_limits():
    model = tiny_model("qwen3", head_dim=32)
    decoder = StaticDecoder(model, 128)
    prompt = prompt_ids()
    decoder.reset()
    logits = decoder.extend(prompt)
    produced: list[int] = []
    for token in decoder.decode(logits, 50, 0.0, set(), should_stop=lambda: len(produced) >= 3):
        produced.append(token)  # noqa: PERF402  (should_stop reads the list as it grows)
    assert len(produced) == 3
    assert len(static_ids(decoder, prompt, 7)) <= 7
    assert len(static_ids(decoder, prompt, 500)) <= 128 - prompt.shape[1] + 1  # the cache bounds the reply


def test_temperature_sampling_is_seeded_and_differs_from_greedy():
    model = tiny_model("qwen2")
    decoder = StaticDecoder(model, 256)
    prompt = prompt_ids()
    greedy = static_ids(decoder, prompt, 24)
    samples = []
    for _ in range(2):
        torch.manual_seed(3)
        samples.append(static_ids(decoder, prompt, 24, temperature=1.0))
    assert samples[0] == samples[1] and samples[0] != greedy


def test_models_it_does_not_run_keep_the_transformers_loop(caplog):
    import transformers

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2))
    assert "gpt2" in unsupported(gpt2)
    with caplog.at_level("INFO", logger="handlers.llm"):
        assert static_decoder(gpt2, LLMConfig()) is None
    assert "does not run this model" in caplog.text
    dynamic = tiny_model("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert "RoPE type 'dynamic'" in unsupported(dynamic)
    assert unsupported(tiny_model("qwen2", use_sliding_window=True, sliding_window=16)) == "sliding-window attention"
    assert static_decoder(tiny_model("llama"), LLMConfig(decode="transformers")) is None


@pytest.mark.slow
def test_greedy_tokens_equal_generate_on_the_real_smollm2(smollm2_dir):  # noqa: F811
    chat = ChatModel.load(LLMConfig(model=str(smollm2_dir), device="cpu"))
    assert chat.decoder is not None and not chat.decoder.use_graphs
    prompt = chat.prompt_ids([{"role": "system", "content": "You are a helpful voice assistant."},
                              {"role": "user", "content": "Why is the sky blue? Explain it to a child."}])
    ours = list(chat.generate_ids(prompt, 32))
    reference = chat.model.generate(prompt, max_new_tokens=32, do_sample=False, attention_mask=torch.ones_like(prompt),
                                    pad_token_id=chat.tokenizer.pad_token_id)[0, prompt.shape[1]:].tolist()
    assert ours == [t for t in reference if t not in chat.eos_ids][:len(ours)]
    assert len(ours) == 32 or reference[len(ours)] in chat.eos_ids


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_replays_equal_eager_steps_on_cuda(dtype, monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    for family, extra in TINY.values():
        model = tiny_model(family, **extra).to("cuda", dtype)
        prompt = prompt_ids().cuda()
        graphs, eager = StaticDecoder(model, 512), StaticDecoder(model, 512, enforce_eager=True)
        graphs.capture(0.0)
        assert graphs.use_graphs and not eager.use_graphs
        expected = static_ids(eager, prompt, 300)  # crosses the 64, 128 and 256-key buckets
        assert static_ids(graphs, prompt, 300) == expected
        if dtype == torch.float32:  # and transformers' own generate, where its kernels differ little
            assert expected[:64] == reference_ids(model, prompt, 64)
        graphs.capture(0.8)
        torch.manual_seed(5)
        sampled = static_ids(graphs, prompt, 40, temperature=0.8)
        torch.manual_seed(5)
        assert static_ids(graphs, prompt, 40, temperature=0.8) == sampled


class _ByteTokenizer:
    """What ChatModel needs of a tokenizer when only ids are generated: a chat template and an end token."""

    chat_template = "unused"
    eos_token_id = EOS
