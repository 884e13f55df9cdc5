"""Random-weight chat LLMs of real architectures, for the GPU benchmarks (no hub: the GPU machine is offline).

``ARCHS`` holds the published config.json values of each model (shapes, RoPE, norms, tied embeddings); the
weights are random (transformers' own init), which is all a timing needs. ``build_model`` makes one in memory on a
device; ``save_chat_model`` writes a folder the LLM stage loads like a downloaded model (``llm.model = DIR``), with
the exact Qwen vocabulary converted from dashscope's ``qwen.tiktoken`` (``s2s.checkpoint_builder.tokenizer_files``)
and Qwen2.5's ChatML template. ``tiny`` is a 2-layer Qwen2 for CPU smoke runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("bench")

_QWEN = dict(vocab_size=151936, bos_token_id=151643, eos_token_id=151645, rope_theta=1000000.0, rms_norm_eps=1e-6,
             tie_word_embeddings=True, hidden_act="silu", max_position_embeddings=32768)
ARCHS: dict[str, dict] = {
    "qwen2.5-0.5b": dict(_QWEN, model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, use_sliding_window=False),
    "qwen2.5-1.5b": dict(_QWEN, model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, use_sliding_window=False),
    "qwen3-0.6b": dict(_QWEN, model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, bos_token_id=1, eos_token_id=2, hidden_size=576,
                         intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         max_position_embeddings=8192),
    "llama3.2-1b": dict(model_type="llama", vocab_size=128256, bos_token_id=128000, eos_token_id=128009,
                        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=64, rope_theta=500000.0, rms_norm_eps=1e-5,
                        tie_word_embeddings=True, max_position_embeddings=131072,
                        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "tiny": dict(_QWEN, model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
}

QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Qwen2.5-Instruct's ChatML template without its tool-calling branches."""


def config_for(arch: str):
    from transformers import AutoConfig

    values = dict(ARCHS[arch])
    return AutoConfig.for_model(values.pop("model_type"), **values)


def build_model(arch: str, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A random-weight model of ``arch`` made directly on ``device`` (seconds even for 1.5B on a GPU)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config_for(arch), dtype=dtype)
    return model.eval()


def save_chat_model(out: Path, arch: str, dtype: torch.dtype, device: str = "cpu") -> Path:
    """A folder with config, random weights, generation config and the Qwen tokenizer (Qwen architectures only);
    kept when it is there already."""
    if not arch.startswith("qwen") and arch != "tiny":
        raise ValueError(f"{arch}: only the Qwen architectures have an offline tokenizer here")
    if (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file():
        log.info("%s already built", out)
        return out
    from s2s.checkpoint_builder.tokenizer_files import write_tokenizer_files

    staging = out.with_name(out.name + ".partial")
    model = build_model(arch, device, dtype)
    model.generation_config.eos_token_id = [151645, 151643]  # <|im_end|>, <|endoftext|> as Qwen2.5-Instruct
    model.save_pretrained(staging)
    del model
    write_tokenizer_files(staging)
    tokenizer_config = staging / "tokenizer_config.json"
    values = json.loads(tokenizer_config.read_text())
    values["chat_template"] = QWEN_CHAT_TEMPLATE
    tokenizer_config.write_text(json.dumps(values, indent=2))
    staging.replace(out)
    log.info("built %s (%s, random weights)", out, arch)
    return out
