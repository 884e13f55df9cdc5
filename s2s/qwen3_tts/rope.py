"""Rotary position embedding from precomputed tables.

Talker: the checkpoint's interleaved M-RoPE (mrope_section [24, 20, 20], theta 1e6) gets three identical position
streams in TTS (the reference's ``get_rope_index`` is a cumulative sum of the attention mask for all three), so
it equals plain 1-D RoPE with the same theta (tests/test_qwen3_engine.py checks this against the reference
function). Code predictor: plain 1-D RoPE, positions 0..15 every frame.

Tables are fp32 [max_len, head_dim] computed like the reference (fp32 ``inv_freq`` times position, ``cat(f, f)``),
then stored in the model dtype, as the reference casts cos/sin to the activations' dtype.
"""

from __future__ import annotations

import torch


class RopeTables:
    """cos/sin tables [max_len, head_dim] for positions 0..max_len-1."""

    def __init__(self, head_dim: int, theta: float, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float) / head_dim  # [D/2]
        inv_freq = 1.0 / (theta ** exponents)  # [D/2]
        positions = torch.arange(max_len, dtype=torch.float)  # [L]
        freqs = positions[:, None] * inv_freq[None, :]  # [L, D/2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [L, D]
        self.cos = angles.cos().to(device=device, dtype=dtype)  # [L, D]
        self.sin = angles.sin().to(device=device, dtype=dtype)  # [L, D]

    def lookup(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] long (device) -> (cos, sin), each [T, D]."""
        return self.cos.index_select(0, positions), self.sin.index_select(0, positions)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [1, H, T, D] rotated by cos/sin [T, D] (rotate-half convention, as the reference)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # [1, H, T, D]
    return x * cos + rotated * sin
