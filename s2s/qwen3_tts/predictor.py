"""The code predictor ("sub-talker"): 15 residual codebooks per frame from the talker's hidden state.

Per frame: input rows [past_hidden, embed(cb0)] [1, 2, D_talker] -> (1.7B: Linear D_talker -> 1024) -> 5 layers
(hidden 1024, 16 q / 8 kv heads, d 128) as a 2-token prefill at positions 0, 1 -> head 0 -> code 1; then 14
single-token steps: embed(code i) with table i-1 at position i+1 -> head i -> code i+1. Positions, cache slots and
key lengths are static per step (the loop is unrolled), so the whole frame is one function without host syncs
that runs eagerly or is captured as one CUDA graph. The 16-slot K/V cache is rewritten every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.kv_cache import StaticKVCache
from s2s.qwen3_tts.layers import causal_mask, decoder_layer, rms_norm
from s2s.qwen3_tts.rope import RopeTables
from s2s.qwen3_tts.sampling import SamplingParams, select_token
from s2s.qwen3_tts.weights import PredictorWeights


class CodePredictor:
    def __init__(self, w: PredictorWeights, n_groups: int, dtype: torch.dtype, device: torch.device):
        self.w = w
        self.n_residual = n_groups - 1  # 15
        self.cache = StaticKVCache(len(w.layers), w.shape, n_groups, dtype, device)
        self.rope = RopeTables(w.shape.head_dim, w.rope_theta, n_groups, dtype, device)
        self.slots = torch.arange(n_groups, device=device)  # [16]; slot == position
        self.prefill_mask = causal_mask(2, w.shape.group, device)  # [2 n_rep, 2]

    def _forward(self, x: torch.Tensor, first: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x [1, T, D_talker] at positions first..first+T-1 -> final-norm hidden [1, T, Dp]."""
        T = x.shape[1]
        if self.w.proj_w is not None:
            x = F.linear(x, self.w.proj_w, self.w.proj_b)  # [1, T, Dp]
        cos, sin = self.rope.cos[first : first + T], self.rope.sin[first : first + T]  # [T, d]
        slots = self.slots[first : first + T]  # [T]
        for i, lw in enumerate(self.w.layers):
            x = decoder_layer(x, lw, self.w.shape, cos, sin, self.cache.layer(i), slots, first + T, mask)
        return rms_norm(x, self.w.final_norm, self.w.shape.eps)

    def run(self, past_hidden: torch.Tensor, cb0_embed: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
        """past_hidden, cb0_embed [1, 1, D_talker] -> codes of codebooks 1..15, LongTensor [15]."""
        s = sampling
        hidden = self._forward(torch.cat((past_hidden, cb0_embed), dim=1), 0, self.prefill_mask)  # [1, 2, Dp]
        codes = []
        for i in range(self.n_residual):
            logits = F.linear(hidden, self.w.heads[i])[0, -1].float()  # [2048]
            code = select_token(logits, s.subtalker_do_sample, s.subtalker_temperature, s.subtalker_top_k,
                                s.subtalker_top_p)  # [1]
            codes.append(code)
            if i + 1 < self.n_residual:
                embed = F.embedding(code, self.w.codec_embeddings[i]).unsqueeze(0)  # [1, 1, D_talker]
                hidden = self._forward(embed, i + 2, None)  # [1, 1, Dp]
        return torch.cat(codes)  # [15]
