"""The decoder layer (layers.py) for B rows at once, each row one utterance with its own cache.

Rows are independent: every kernel either works row by row (norms, RoPE, attention over the row's own keys) or is a
matmul whose output row i reads only input row i. For a fixed shape (batch bucket B and key length) a row's result
therefore does not depend on what the other rows hold; across shapes the matmuls may round differently.

Talker step (one token per row, ``row_step_layer``): x [1, B, D] -> qkv [B, Hq + 2 Hkv, d] -> q/k norm and RoPE
(per-row rotation matrices, the norm weights folded in) -> K/V of row b written at flat slot b * L + slot_b of the
layer's cache [R * L, 2 Hkv, d] -> attention of row b's query heads over keys [0, kv_len) of its own cache
[R, L, 2 Hkv, d], masked by its own mask row -> o_proj and MLP over the B rows (``layers.output_and_mlp``).

Code predictor (``row_fixed_slots_layer``): its 16-slot caches are slot-major over rows, raw projections
[16, R, Hq + 2 Hkv, d] and rotated q/k [16, R, Hq + Hkv, d], so the single-token steps (T = 1) write the B rows'
projections and rotations into slot ``first`` in place, as the single-stream ``decoder_layer_fixed_slots`` does for
one row; its 2-token prefill writes through copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.layers import LayerShape, LayerWeights, output_and_mlp, rms_norm


def row_step_layer(x: torch.Tensor, w: LayerWeights, shape: LayerShape, rotations: torch.Tensor, cache: torch.Tensor,
                   flat_slots: torch.Tensor, kv_len: int, mask: torch.Tensor) -> torch.Tensor:
    """One talker layer for x [1, B, D] (row b at its own position; updated in place) -> [1, B, D].

    ``rotations`` [B, G, d, d] (folded q/k norm weights), ``cache`` [R, L, 2 Hkv, d] this layer's K/V of all row
    slots, ``flat_slots`` [B] long = row * L + slot written now, ``mask`` [B, 1, 1, kv_len] additive per row."""
    B = x.shape[1]
    hq, hkv, d = shape.q_heads, shape.kv_heads, shape.head_dim
    h = rms_norm(x, w.input_norm, shape.eps)  # [1, B, D]
    qkv = F.linear(h, w.qkv, w.qkv_bias).view(B, hq + 2 * hkv, d)  # [B, Hq + 2 Hkv, d]
    qk = rms_norm(qkv[:, : hq + hkv], None, shape.eps)  # [B, Hq + Hkv, d]; the weights are in the rotations
    groups = rotations.shape[1]
    rotated = qkv[:, : hq + hkv].view(B, groups, -1, d)  # [B, G, (Hq + Hkv) / G, d]: rotated q, k replace raw ones
    if B == 1:  # contiguous: the matmul writes it in place
        torch.matmul(qk.view(B, groups, -1, d), rotations, out=rotated)
    else:
        rotated.copy_(torch.matmul(qk.view(B, groups, -1, d), rotations))
    cache.view(-1, 2 * hkv, d).index_copy_(0, flat_slots, qkv[:, hq:])  # [B, 2 Hkv, d] (k, v) of each row
    kv = cache[:B, :kv_len]  # [B, S, 2 Hkv, d] (view)
    keys = kv[:, :, :hkv].transpose(1, 2)  # [B, Hkv, S, d]
    values = kv[:, :, hkv:].transpose(1, 2)  # [B, Hkv, S, d]
    q = qkv[:, :hq].view(B, hkv, shape.group, d)  # head g * n_rep + r -> kv head g (GQA, no repeat)
    attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=d**-0.5)  # [B, Hkv, n_rep, d]
    return output_and_mlp(x, w, shape, attn.reshape(B, hq * d))


def row_fixed_slots_layer(x: torch.Tensor, w: LayerWeights, shape: LayerShape, rotations: torch.Tensor,
                          rows: torch.Tensor, rotated_rows: torch.Tensor, first: int,
                          mask: torch.Tensor | None) -> torch.Tensor:
    """One code-predictor layer for x [B, T, D] (updated in place) at positions first..first+T-1 -> [B, T, D].

    ``rows`` [16, R, Hq + 2 Hkv, d] is this layer's slot-major cache of whole projected rows of all row slots (rows
    0..B-1 are used; attention reads its values), ``rotated_rows`` [16, R, Hq + Hkv, d] the normed and rotated q and
    k (attention reads its keys), ``rotations`` [T, G, d, d] (folded q/k norm weights, shared by the rows: the
    positions are). For T = 1 both matmuls write their slot in place: no copy, as the single-stream layer."""
    B, T, D = x.shape
    hq, hkv, d = shape.q_heads, shape.kv_heads, shape.head_dim
    heads = hq + 2 * hkv
    new = rows[first : first + T, :B]  # [T, B, H, d]
    rotated = rotated_rows[first : first + T, :B]  # [T, B, Hq + Hkv, d]
    h = rms_norm(x, w.input_norm, shape.eps)  # [B, T, D]
    groups = rotations.shape[1]
    if T == 1:
        torch.mm(h.view(B, D), w.qkv.t(), out=new.view(B, heads * d))  # raw q, k, v straight into the slot
        qk = rms_norm(new[0, :, : hq + hkv], None, shape.eps)  # [B, Hq + Hkv, d]
        torch.matmul(qk.view(B, groups, -1, d), rotations[0], out=rotated.view(B, groups, -1, d))
    else:
        new.copy_(F.linear(h, w.qkv).view(B, T, heads, d).transpose(0, 1))
        qk = rms_norm(new[:, :, : hq + hkv], None, shape.eps)  # [T, B, Hq + Hkv, d]
        product = torch.matmul(qk.view(T, B, groups, -1, d), rotations.unsqueeze(1))  # [T, B, G, Hkv, d]
        rotated.copy_(product.view(T, B, hq + hkv, d))
    q = rotated[:, :, :hq].permute(1, 2, 0, 3).reshape(B, hkv, shape.group * T, d)  # [B, Hkv, n_rep T, d]
    keys = rotated_rows[: first + T, :B, hq:].permute(1, 2, 0, 3)  # [B, Hkv, S, d]
    values = rows[: first + T, :B, hq + hkv :].permute(1, 2, 0, 3)  # [B, Hkv, S, d]
    attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=d**-0.5)  # [B, Hkv, n_rep T, d]
    attn = attn.reshape(B, hq, T, d).transpose(1, 2).reshape(B * T, hq * d)  # [B T, Hq d]
    return output_and_mlp(x.view(1, B * T, D), w, shape, attn).view(B, T, D)
