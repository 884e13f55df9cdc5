"""One Qwen3-style decoder layer (talker and code predictor share it), written for few kernels.

Dimensions: hidden D (1024 or 2048), Hq = 16 query heads, Hkv = 8 key/value heads, head_dim d = 128,
MLP width I. Batch is always 1. Per layer: RMSNorm -> one qkv matmul [D -> (Hq + 2 Hkv) d] -> q/k RMSNorm on the
stacked q and k heads (one norm, per-head weights stacked) -> RoPE as one matmul (rope.py) written over the raw
q/k rows -> one K/V cache write of the slot's k and v rows (slot-major cache [L, 2 Hkv, d]) -> grouped-query
attention without repeating K/V (q viewed as [1, Hkv, n_rep * T, d] against strided K/V views [1, Hkv, S, d]) ->
o_proj + residual (one in-place addmm) -> RMSNorm -> one gate/up matmul -> SiLU * up -> down + residual (one
in-place addmm): 12 kernels per talker layer for one token (its steps fold the q/k norm weights into the
rotations of all layers at once). The code predictor's positions are static, so its variant
(``decoder_layer_fixed_slots``) writes the projections straight into the cache slots and has the q/k norm weights
folded into its precomputed RoPE matrices: 11 kernels. A graphed step is bound by its kernel count, not by bytes;
bench/count_ops.py counts them.

Norms compute their statistics in fp32, as the reference ``Qwen3TTSRMSNorm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.rope import apply_rope


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x [..., n] RMS-normalised over the last dim, times weight [n] (or [..., n], broadcast; None: no weight).

    ``F.rms_norm`` (torch >= 2.4) upcasts to fp32 for the statistics and casts back before the weight, which is
    the reference's ``Qwen3TTSRMSNorm`` arithmetic, in one call instead of five elementwise kernels.
    """
    n = x.shape[-1]
    if weight is None or weight.dim() == 1:
        return F.rms_norm(x, (n,), weight, eps)
    return F.rms_norm(x, (n,), None, eps) * weight  # stacked per-head weights (q/k norm)


@dataclass
class LayerWeights:
    """Weights of one decoder layer in the engine's layout."""

    input_norm: torch.Tensor  # [D]
    qkv: torch.Tensor  # [(Hq + 2 Hkv) d, D]
    qk_norm: torch.Tensor | None  # [Hq + Hkv, d]: q_norm repeated Hq times, then k_norm repeated Hkv times
    """None for models without q/k norms (Llama, Qwen2: s2s.llm_decode)."""
    o_proj: torch.Tensor  # [D, Hq d], column-major (its transpose is contiguous: see weights._column_major)
    post_norm: torch.Tensor  # [D]
    gate_up: torch.Tensor  # [2 I, D]
    down: torch.Tensor  # [D, I], column-major
    qkv_bias: torch.Tensor | None = None  # [(Hq + 2 Hkv) d]: Qwen2's q/k/v biases; None for Qwen3 and Llama


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
    """One layer over x [1, T, D] at cache slots [T] (device long) with RoPE matrices ``rotations`` (the talker: its
    positions live on the device): [T, d, d], or [T, G, d, d] with the q/k norm weights folded in
    (rope.fold_norm_weights; the norm then skips its weight multiply).

    ``cache`` [L, 2 Hkv, d] is this layer's K/V (slot-major: a slot's k and v heads are one contiguous row, written
    by one index_copy); attention reads its first ``kv_len`` slots. ``mask`` is bool or additive (model dtype),
    broadcastable to [n_rep * T, kv_len] (rows grouped as the queries), or None when every query sees all keys.
    ``x`` is the residual stream and is updated in place (callers pass a tensor they own): in-place ``addmm_`` adds
    a projection to it in one kernel (out-of-place addmm copies first). 12 kernels for T = 1 with folded rotations.
    """
    T = x.shape[1]
    hq, hkv, d = shape.q_heads, shape.kv_heads, shape.head_dim
    h = rms_norm(x, w.input_norm, shape.eps)  # [1, T, D]
    qkv = F.linear(h, w.qkv, w.qkv_bias).view(T, hq + 2 * hkv, d)  # [T, Hq + 2 Hkv, d]
    if w.qk_norm is None:  # no q/k norm (Llama, Qwen2): RoPE must not write over its own input, hence a copy
        qk = qkv[:, : hq + hkv].clone()  # [T, Hq + Hkv, d]
    else:
        folded = rotations.dim() == 4  # the q/k norm weights are in the rotations
        qk = rms_norm(qkv[:, : hq + hkv], None if folded else w.qk_norm, shape.eps)  # [T, Hq + Hkv, d]
    apply_rope(qk, rotations, out=qkv[:, : hq + hkv])  # rotated q, k replace the raw ones
    cache.index_copy_(0, slots, qkv[:, hq:])  # [T, 2 Hkv, d] (k, v) written at slots
    return _attention_and_mlp(x, w, shape, qkv[:, :hq], cache[:kv_len], mask)


def decoder_layer_fixed_slots(
    x: torch.Tensor,
    w: LayerWeights,
    shape: LayerShape,
    rotations: torch.Tensor,
    rows: torch.Tensor,
    first: int,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """The same layer for positions known when the step is written (the code predictor): x [1, T, D] at slots
    first..first+T-1, reading keys [0, first + T).

    ``rows`` [S, Hq + 2 Hkv, d] is this layer's cache of whole projected rows (q too: a few hundred KB for 16
    slots), so the qkv matmul writes the new slots' q, k, v in place and the RoPE matmul overwrites their q, k:
    no K/V copy at all. ``rotations`` [T, G, d, d] carry the q/k norm weights (rope.fold_norm_weights).
    ``x`` is updated in place, as in ``decoder_layer``. 11 kernels for T = 1.
    """
    T, D = x.shape[1], x.shape[2]
    hq, hkv = shape.q_heads, shape.kv_heads
    new = rows[first : first + T]  # [T, Hq + 2 Hkv, d], contiguous
    h = rms_norm(x, w.input_norm, shape.eps).view(T, D)  # [T, D]
    torch.mm(h, w.qkv.t(), out=new.view(T, -1))  # [T, (Hq + 2 Hkv) d] raw q, k, v into the slots
    qk = rms_norm(new[:, : hq + hkv], None, shape.eps)  # [T, Hq + Hkv, d]; the weights are in the rotations
    apply_rope(qk, rotations, out=new[:, : hq + hkv])
    return _attention_and_mlp(x, w, shape, new[:, :hq], rows[: first + T, hq:], mask)


def _attention_and_mlp(x: torch.Tensor, w: LayerWeights, shape: LayerShape, q: torch.Tensor, kv: torch.Tensor,
                       mask: torch.Tensor | None) -> torch.Tensor:
    """The layer from attention on: q [T, Hq, d] against kv [S, 2 Hkv, d] (k heads, then v heads) -> o_proj -> MLP,
    both added to the residual stream x [1, T, D] in place -> [1, T, D]."""
    T = x.shape[1]
    hq, hkv, d = shape.q_heads, shape.kv_heads, shape.head_dim
    q = q.transpose(0, 1).reshape(1, hkv, shape.group * T, d)  # head g * n_rep + r -> kv head g (GQA, no repeat)
    keys = kv[:, :hkv].transpose(0, 1).unsqueeze(0)  # [1, Hkv, S, d] (strided view of the cache)
    values = kv[:, hkv:].transpose(0, 1).unsqueeze(0)  # [1, Hkv, S, d]
    attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=d**-0.5)  # [1, Hkv, n_rep T, d]
    attn = attn.reshape(hq, T, d).transpose(0, 1).reshape(T, hq * d)  # [T, Hq d]; a view unless SDPA gave strides
    return output_and_mlp(x, w, shape, attn)


def output_and_mlp(x: torch.Tensor, w: LayerWeights, shape: LayerShape, attn: torch.Tensor) -> torch.Tensor:
    """The layer after attention: attention output rows ``attn`` [T, Hq d] -> o_proj -> MLP, both added to the
    residual stream x [1, T, D] in place -> [1, T, D]. The rows are independent (batched decode passes one row per
    utterance as T)."""
    T, D = x.shape[1], x.shape[2]
    x = x.view(T, D).addmm_(attn, w.o_proj.t())  # [T, D]: residual += o_proj(attn), one kernel
    h = rms_norm(x, w.post_norm, shape.eps)  # [T, D]
    gate, up = F.linear(h, w.gate_up).chunk(2, dim=-1)  # [T, I] each
    return x.addmm_(F.silu(gate) * up, w.down.t()).view(1, T, D)  # [1, T, D]: residual += down(SiLU(gate) up)


def causal_mask(T: int, group: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """Bool [group * T, start + T] causal mask for a prefill of T tokens at slots start..start+T-1 (keys from slot
    0 on), rows grouped as the queries."""
    base = torch.ones(T, start + T, dtype=torch.bool, device=device).tril(start)  # [T, start + T]
    return base.repeat(group, 1)  # [group T, start + T]
