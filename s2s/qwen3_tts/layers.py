"""One Qwen3-style decoder layer (talker and code predictor share it), written for few kernels.

Dimensions: hidden D (1024 or 2048), Hq = 16 query heads, Hkv = 8 key/value heads, head_dim d = 128,
MLP width I. Batch is always 1. Per layer: RMSNorm -> one qkv matmul [D -> (Hq + 2 Hkv) d] -> q/k RMSNorm on the
stacked q and k heads (one norm, per-head weights stacked) -> RoPE as one matmul (rope.py) -> one stacked K/V cache
write at device-side slots -> grouped-query attention without repeating K/V (q viewed as [1, Hkv, n_rep * T, d]
against K/V [1, Hkv, S, d]) -> o_proj + residual (one addmm) -> RMSNorm -> one gate/up matmul -> SiLU * up ->
down + residual (one addmm). 14 kernels per layer for one token (a graphed step is bound by its kernel count:
bench/count_ops.py counts them).

Norms compute their statistics in fp32, as the reference ``Qwen3TTSRMSNorm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.rope import apply_rope


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., n] RMS-normalised over the last dim, times weight [n] (or [..., n], broadcast).

    ``F.rms_norm`` (torch >= 2.4) upcasts to fp32 for the statistics and casts back before the weight, which is
    the reference's ``Qwen3TTSRMSNorm`` arithmetic, in one call instead of five elementwise kernels.
    """
    n = x.shape[-1]
    if weight.dim() == 1:
        return F.rms_norm(x, (n,), weight, eps)
    return F.rms_norm(x, (n,), None, eps) * weight  # stacked per-head weights (q/k norm)


@dataclass
class LayerWeights:
    """Weights of one decoder layer in the engine's layout."""

    input_norm: torch.Tensor  # [D]
    qkv: torch.Tensor  # [(Hq + 2 Hkv) d, D]
    qk_norm: torch.Tensor  # [Hq + Hkv, d]: q_norm repeated Hq times, then k_norm repeated Hkv times
    o_proj: torch.Tensor  # [D, Hq d]
    post_norm: torch.Tensor  # [D]
    gate_up: torch.Tensor  # [2 I, D]
    down: torch.Tensor  # [D, I]


@dataclass(frozen=True)
class LayerShape:
    """Head layout and norm epsilon shared by all layers of one stack."""

    q_heads: int
    kv_heads: int
    head_dim: int
    eps: float

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads


def decoder_layer(
    x: torch.Tensor,
    w: LayerWeights,
    shape: LayerShape,
    rotations: torch.Tensor,
    cache: torch.Tensor,
    slots: torch.Tensor,
    kv_len: int,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """One layer over x [1, T, D] at cache slots [T] (device long), RoPE matrices ``rotations`` [T, d, d].

    ``cache`` [2, Hkv, L, d] is this layer's K/V; attention reads its first ``kv_len`` slots. ``mask`` is bool or
    additive (model dtype), broadcastable to [n_rep * T, kv_len] (rows grouped as the queries), or None when every
    query sees all keys. ``x`` is the residual stream and is updated in place (callers pass a tensor they own):
    in-place ``addmm_`` adds a projection to it in one kernel (out-of-place addmm copies first). 14 kernels for T = 1.
    """
    T, D = x.shape[1], x.shape[2]
    hq, hkv, d = shape.q_heads, shape.kv_heads, shape.head_dim
    h = rms_norm(x, w.input_norm, shape.eps)  # [1, T, D]
    qkv = F.linear(h, w.qkv).view(T, hq + 2 * hkv, d)  # [T, Hq + 2 Hkv, d]
    qk = apply_rope(rms_norm(qkv[:, : hq + hkv], w.qk_norm, shape.eps), rotations)  # [T, Hq + Hkv, d]
    k, v = qk[:, hq:].transpose(0, 1), qkv[:, hq + hkv :].transpose(0, 1)  # [Hkv, T, d] each
    cache.index_copy_(2, slots, torch.stack((k, v)))  # [2, Hkv, T, d] written at slots
    keys = cache[0, :, :kv_len].unsqueeze(0)  # [1, Hkv, S, d]
    values = cache[1, :, :kv_len].unsqueeze(0)  # [1, Hkv, S, d]
    q = qk[:, :hq].transpose(0, 1).reshape(1, hkv, shape.group * T, d)  # head g * n_rep + r -> kv head g (GQA)
    attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=d**-0.5)  # [1, Hkv, n_rep T, d]
    attn = attn.view(hq, T, d).transpose(0, 1).reshape(T, hq * d)  # [T, Hq d]
    x = x.view(T, D).addmm_(attn, w.o_proj.t())  # [T, D]: residual += o_proj(attn), one kernel
    h = rms_norm(x, w.post_norm, shape.eps)  # [T, D]
    gate, up = F.linear(h, w.gate_up).chunk(2, dim=-1)  # [T, I] each
    return x.addmm_(F.silu(gate) * up, w.down.t()).view(1, T, D)  # [1, T, D]: residual += down(SiLU(gate) up)


def causal_mask(T: int, group: int, device: torch.device) -> torch.Tensor:
    """Bool [group * T, T] causal mask for a prefill of T tokens starting at slot 0, rows grouped as the queries."""
    base = torch.ones(T, T, dtype=torch.bool, device=device).tril()  # [T, T]
    return base.repeat(group, 1)  # [group T, T]
