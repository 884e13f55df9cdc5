"""Rotary position embedding as one matmul per layer with a per-position rotation matrix.

Talker: the checkpoint's interleaved M-RoPE (mrope_section [24, 20, 20], theta 1e6) gets three identical position
streams in TTS (the reference's ``get_rope_index`` is a cumulative sum of the attention mask for all three), so
it equals plain 1-D RoPE with the same theta (tests/test_qwen3_engine.py checks this against the reference
function). Code predictor: plain 1-D RoPE, positions 0..15 every frame.

The rotate-half RoPE ``x * cos + rotate_half(x) * sin`` is linear in x: ``x @ R`` with R [d, d] holding cos on the
diagonal and -sin / +sin where rotate_half takes its partner from (R = diag(cos) + S diag(sin), S the signed
half-swap). Built from two exact products, R's entries are exactly the cos/sin values, so only the summation of the
two non-zero terms is done by the matmul (fp32: within an ulp of the elementwise form). One matmul replaces five
elementwise kernels per layer; R is built once per step and shared by all layers (the code predictor's positions
are fixed, so its matrices are precomputed).

cos/sin are fp32 [max_len, head_dim] computed like the reference (fp32 ``inv_freq`` times position,
``cat(f, f)``), then stored in the model dtype, as the reference casts cos/sin to the activations' dtype.
"""

from __future__ import annotations

import torch


class RopeTables:
    """cos/sin of positions 0..max_len-1 and the rotation matrices built from them."""

    def __init__(self, head_dim: int, theta: float, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float) / head_dim  # [d/2]
        inv_freq = 1.0 / (theta ** exponents)  # [d/2]
        positions = torch.arange(max_len, dtype=torch.float)  # [L]
        freqs = positions[:, None] * inv_freq[None, :]  # [L, d/2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [L, d]
        self._store(angles.cos(), angles.sin(), dtype, device)

    @classmethod
    def from_cos_sin(cls, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype,
                     device: torch.device) -> RopeTables:
        """Tables from cos/sin [max_len, head_dim] computed elsewhere: a transformers model's own rotary embedding,
        which covers its RoPE variants (llama3, yarn, linear scaling, attention scaling) (s2s.llm_decode)."""
        tables = cls.__new__(cls)
        tables._store(cos.float().cpu(), sin.float().cpu(), dtype, device)
        return tables

    def _store(self, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype, device: torch.device) -> None:
        """cos/sin fp32 [L, d] -> ``cos_sin`` [L, 2, 1, d] and the rotation basis, in ``dtype`` on ``device``."""
        head_dim = cos.shape[-1]
        self.cos_sin = torch.stack((cos, sin), dim=1).unsqueeze(2).to(device, dtype)  # [L, 2, 1, d]
        half = head_dim // 2
        swap = torch.zeros(head_dim, head_dim)  # [d, d]; x @ swap == rotate_half(x) = cat(-x2, x1)
        swap[half:, :half] = -torch.eye(half)
        swap[:half, half:] = torch.eye(half)
        self.basis = torch.stack((torch.eye(head_dim), swap)).to(device, dtype)  # [2, d, d]: identity, signed swap

    def rotations(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [T] long (device) -> rotation matrices [T, d, d] (three kernels, no host sync)."""
        cos_sin = self.cos_sin.index_select(0, positions)  # [T, 2, 1, d]: column k scaled by cos_k / sin_k
        return (cos_sin * self.basis).sum(1)  # [T, d, d] = I diag(cos) + S diag(sin); one term is exactly 0


def fold_norm_weights(rotations: torch.Tensor, qk_norm: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Rotations [T, d, d] and stacked q/k norm weights [..., Hq + Hkv, d] (one layer, or [n, ...] for n layers)
    -> [..., T, G, d, d], G = Hq / Hkv + 1 head groups of Hkv heads (the query groups, then the key group):
    diag(weight of the group) @ R.

    This folds the q/k norm's weight multiply into the RoPE matmul: one kernel less per layer (the code predictor
    folds once at load, its positions being fixed; the talker folds all layers at once per step). The product is
    computed in fp32 (free when ``qk_norm`` is fp32) and rounded once to the rotations' dtype (within an ulp of
    multiplying first).
    """
    weights = qk_norm.unflatten(-2, (-1, kv_heads)).select(-2, 0).float()  # [..., G, d]
    folded = weights.unsqueeze(-3).unsqueeze(-1) * rotations.float().unsqueeze(1)  # [..., T, G, d, d]
    return folded.to(rotations.dtype)


def apply_rope(x: torch.Tensor, rotations: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [T, H, d] (heads of one position per row) -> rotated [T, H, d] (written to ``out`` if given).

    ``rotations`` is [T, d, d] (one matrix per position) or [T, G, d, d] from ``fold_norm_weights`` (one per
    position and head group of H / G heads). One batched matmul; for T = 1 it writes straight into a contiguous
    ``out`` (e.g. the q/k part of the projected rows), otherwise ``out`` costs one copy.
    """
    T, d = x.shape[0], x.shape[-1]
    if out is not None and T == 1:
        groups = rotations.shape[1] if rotations.dim() == 4 else 1
        return torch.bmm(x.view(groups, -1, d), rotations.view(groups, d, d), out=out.view(groups, -1, d)).view(out.shape)
    if rotations.dim() == 4:
        rotated = torch.matmul(x.reshape(T, rotations.shape[1], -1, d), rotations).view(x.shape)  # [T, G, H/G, d]
    else:
        rotated = torch.matmul(x, rotations)  # [T, H, d] @ [T, d, d]
    return rotated if out is None else out.copy_(rotated)
