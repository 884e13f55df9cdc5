"""Static K/V cache: one tensor [layers, 2 (K, V), Hkv, L, d] allocated once, written in place at device-side slots.

Batch is 1 and implicit. Slots beyond the current length hold stale values; readers mask them (talker step) or
read only the slots written in this frame (code predictor).
"""

from __future__ import annotations

import torch

from s2s.qwen3_tts.layers import LayerShape


class StaticKVCache:
    def __init__(self, n_layers: int, shape: LayerShape, max_len: int, dtype: torch.dtype, device: torch.device):
        self.max_len = max_len
        self.data = torch.zeros(n_layers, 2, shape.kv_heads, max_len, shape.head_dim, dtype=dtype, device=device)

    def layer(self, i: int) -> torch.Tensor:
        """Layer i's K/V [2, Hkv, L, d] (a view: writes go to the cache)."""
        return self.data[i]
