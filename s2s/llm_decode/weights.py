"""Take a transformers chat model's weights into the decode layout of ``s2s.qwen3_tts.layers`` (one layer code for
the TTS talker and the chat LLM).

Supported: the decoder-only families whose layer is RMSNorm -> q/k/v (Qwen2: with biases) -> optional per-head q/k
RMSNorm (Qwen3) -> rotate-half RoPE -> grouped-query attention -> o_proj -> RMSNorm -> SiLU-gated MLP: ``llama``
(Llama 2/3, SmolLM/SmolLM2), ``mistral`` (without a sliding window), ``qwen2`` (Qwen2, Qwen2.5) and ``qwen3``.
``unsupported(model)`` says in words why another model is not (the caller then keeps the transformers loop).

Layout per layer: one qkv matrix [(Hq + 2 Hkv) d, D] (+ its bias), one gate/up matrix [2 I, D], q/k norm weights
stacked [Hq + Hkv, d], o_proj and down as the model has them. RoPE cos/sin come from the model's own rotary
embedding (``rope_tables``), so every position-static RoPE variant (default, linear, llama3, yarn) is exactly the
model's. ``share=True`` makes the model's q/k/v and gate/up parameters views of the concatenated matrices, so the
weights are held once; the model still runs (the fallback path) but can no longer be saved with safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s2s.qwen3_tts.layers import LayerShape, LayerWeights
from s2s.qwen3_tts.rope import RopeTables

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
"""``config.model_type`` values whose layers this decoder runs."""
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
"""RoPE types whose cos/sin depend on the position only (``dynamic`` rescales with the sequence length)."""


@dataclass
class ChatWeights:
    layers: list[LayerWeights]
    shape: LayerShape
    embed: torch.Tensor  # [V, D]
    final_norm: torch.Tensor  # [D]
    lm_head: torch.Tensor  # [V, D] (the embedding itself when tied)


def _config(model: torch.nn.Module):
    return getattr(model, "config", None)


def unsupported(model: torch.nn.Module) -> str | None:
    """Why this decoder cannot run ``model`` (words for a log line), or None if it can."""
    cfg = _config(model)
    family = getattr(cfg, "model_type", None)
    if family not in FAMILIES:
        return f"model type {family!r} is not one of {', '.join(FAMILIES)}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r} (only silu)"
    if getattr(cfg, "mlp_bias", False):
        return "MLP biases"
    rope = getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in STATIC_ROPE_TYPES:
        return f"RoPE type {rope_type!r}"
    if getattr(cfg, "use_sliding_window", False) or (family == "mistral" and getattr(cfg, "sliding_window", None)):
        return "sliding-window attention"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return "layers that are not full attention"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "no decoder stack at model.model.layers"
    if inner.layers[0].self_attn.o_proj.bias is not None:
        return "an o_proj bias"
    return None


def _concat(parts: list[torch.Tensor], share: bool) -> torch.Tensor:
    """Rows of ``parts`` in one new tensor; with ``share`` each part's parameter becomes a view of it."""
    whole = torch.cat([p.detach() for p in parts])  # [sum rows, ...]
    if share:
        start = 0
        for part in parts:
            part.data = whole[start:start + part.shape[0]]
            start += part.shape[0]
    return whole


def take_weights(model: torch.nn.Module, share: bool = False) -> ChatWeights:
    """The decode layout of a supported model (check ``unsupported`` first)."""
    cfg = _config(model)
    inner = model.model
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
    layers = []
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        projections = [attn.q_proj, attn.k_proj, attn.v_proj]
        biases = [p.bias for p in projections]
        qk_norm = None
        if hasattr(attn, "q_norm"):  # Qwen3: one weight [d] per stack, repeated for each head
            qk_norm = torch.cat([attn.q_norm.weight.detach().expand(hq, -1),
                                 attn.k_norm.weight.detach().expand(hkv, -1)])  # [Hq + Hkv, d]
        layers.append(LayerWeights(
            input_norm=layer.input_layernorm.weight.detach(),
            qkv=_concat([p.weight for p in projections], share),  # [(Hq + 2 Hkv) d, D]
            qkv_bias=None if biases[0] is None else _concat(biases, share),  # [(Hq + 2 Hkv) d]
            qk_norm=qk_norm,
            o_proj=attn.o_proj.weight.detach(),  # [D, Hq d]
            post_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up=_concat([mlp.gate_proj.weight, mlp.up_proj.weight], share),  # [2 I, D]
            down=mlp.down_proj.weight.detach(),  # [D, I]
        ))
    return ChatWeights(
        layers=layers,
        shape=LayerShape(q_heads=hq, kv_heads=hkv, head_dim=head_dim, eps=cfg.rms_norm_eps),
        embed=inner.embed_tokens.weight.detach(),
        final_norm=inner.norm.weight.detach(),
        lm_head=model.lm_head.weight.detach(),
    )


def rope_tables(model: torch.nn.Module, max_len: int, dtype: torch.dtype, device: torch.device) -> RopeTables:
    """RoPE tables of positions 0..max_len-1 from the model's own rotary embedding (fp32, then cast to ``dtype`` as
    the model casts them to its activations)."""
    rotary = model.model.rotary_emb
    positions = torch.arange(max_len, device=device).unsqueeze(0)  # [1, L]
    probe = torch.zeros(1, dtype=torch.float32, device=device)
    with torch.no_grad():
        cos, sin = rotary(probe, positions)  # [1, L, d] each, fp32
    return RopeTables.from_cos_sin(cos[0], sin[0], dtype, device)
