"""Static K/V cache: one tensor [layers, L, 2 Hkv, d] allocated once, written in place at device-side slots.

Slot-major: the k heads and v heads of one slot form one contiguous row [2 Hkv, d], the layout of the k/v part of
a projected qkv row, so a step writes both with one index_copy. Attention reads keys [S, Hkv, d] and values as
strided views (head stride d, slot stride 2 Hkv d). Batch is 1 and implicit. Slots beyond the current length hold
stale values; readers mask them.
"""

from __future__ import annotations

import torch

from s2s.qwen3_tts.layers import LayerShape


class StaticKVCache:
    def __init__(self, n_layers: int, shape: LayerShape, max_len: int, dtype: torch.dtype, device: torch.device):
        self.max_len = max_len
        self.data = torch.zeros(n_layers, max_len, 2 * shape.kv_heads, shape.head_dim, dtype=dtype, device=device)

    def layer(self, i: int) -> torch.Tensor:
        """Layer i's K/V [L, 2 Hkv, d] (a view: writes go to the cache)."""
        return self.data[i]
