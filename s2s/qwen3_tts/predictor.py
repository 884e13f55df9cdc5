"""The code predictor ("sub-talker"): 15 residual codebooks per frame from the talker's hidden state.

Per frame: input rows [past_hidden, embed(cb0)] [1, 2, D_talker] -> (1.7B: Linear D_talker -> 1024) -> 5 layers
(hidden 1024, 16 q / 8 kv heads, d 128) as a 2-token prefill at positions 0, 1 -> head 0 -> code 1; then 14
single-token steps: embed(code i) with table i-1 at position i+1 -> head i -> code i+1. Positions, cache slots and
key lengths are static per step (the loop is unrolled), so the whole frame is one function without host syncs
that runs eagerly or is captured as one CUDA graph. The 16-slot cache is rewritten every frame; it keeps whole
projected rows (q, k, v) so that the matmuls write the slots directly (``layers.decoder_layer_fixed_slots``).

Everything that depends only on the position or the code is precomputed: the 14 step inputs as tables of rows
already through the 1.7B talker -> predictor projection (``input_tables``: one gather per step instead of a gather
and a matmul), the RoPE matrices of positions 0..15 (per layer, with the q/k norm weights folded in) and the
prefill's additive causal mask (a bool mask would cost three conversion kernels per layer). The random draws of
all 15 sampled codes come from one call. Heads run on the model-dtype logits: greedy argmax and top-k are exact on
them, and sampling promotes to fp32 inside its first arithmetic kernel, so no separate cast kernel is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.layers import causal_mask, decoder_layer_fixed_slots, rms_norm
from s2s.qwen3_tts.rope import RopeTables, fold_norm_weights
from s2s.qwen3_tts.options import SamplingParams
from s2s.qwen3_tts.sampling import candidates, log_exponential, select_token
from s2s.qwen3_tts.weights import PredictorWeights


class CodePredictor:
    def __init__(self, w: PredictorWeights, n_groups: int, dtype: torch.dtype, device: torch.device):
        self.w = w
        self.n_residual = n_groups - 1  # 15
        heads = w.shape.q_heads + 2 * w.shape.kv_heads
        self.rows = torch.zeros(len(w.layers), n_groups, heads, w.shape.head_dim, dtype=dtype, device=device)
        """[layers, 16 slots, Hq + 2 Hkv, d]: each slot's projected q, k (RoPE applied) and v rows."""
        self.slots = torch.arange(n_groups, device=device)  # [16]; slot == position
        rotations = RopeTables(w.shape.head_dim, w.rope_theta, n_groups, dtype, device).rotations(self.slots)
        self.rotations = [fold_norm_weights(rotations, lw.qk_norm, w.shape.kv_heads) for lw in w.layers]
        """Per layer [16, G, d, d]: RoPE matrix of each position with the layer's q/k norm weights folded in."""
        tables = w.codec_embeddings[: self.n_residual - 1]  # [14, 2048, D_talker]: codes 1..14 are step inputs
        if w.proj_w is not None:  # projected once, in full fp32, instead of one row per step
            tables = _fp32_linear(tables.float(), w.proj_w.float(), w.proj_b.float()).to(dtype)  # [14, 2048, Dp]
        self.input_tables = tables
        """[14, 2048, Dp]: the input row of step i for code i + 1 (the embedding, projected on 1.7B)."""
        self.step_layer = decoder_layer_fixed_slots
        """The layer function of the single-token steps (``compiled.compile_steps`` swaps in a compiled one)."""
        prefill_mask = causal_mask(2, w.shape.group, device)  # [2 n_rep, 2] bool
        self.prefill_mask = torch.zeros(prefill_mask.shape, dtype=dtype, device=device).masked_fill_(
            ~prefill_mask, float("-inf"))  # [2 n_rep, 2] additive

    def _forward(self, x: torch.Tensor, first: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x [1, T, Dp] (consumed: the layers update it in place) at positions first..first+T-1 -> final-norm
        hidden [1, T, Dp]."""
        T = x.shape[1]
        layer = self.step_layer if T == 1 else decoder_layer_fixed_slots
        for i, lw in enumerate(self.w.layers):
            rotations = self.rotations[i][first : first + T]  # [T, G, d, d]
            x = layer(x, lw, self.w.shape, rotations, self.rows[i], first, mask)
        return rms_norm(x, self.w.final_norm, self.w.shape.eps)

    def run(self, past_hidden: torch.Tensor, cb0_embed: torch.Tensor, cb0: torch.Tensor, sampling: SamplingParams,
            out: torch.Tensor) -> None:
        """past_hidden, cb0_embed [1, 1, D_talker], codebook-0 id ``cb0`` [1] -> the frame's 16 codes in ``out`` [16]."""
        s = sampling
        noise = None
        if s.subtalker_do_sample:  # the frame's random draws in two kernels instead of two per codebook
            noise = log_exponential((self.n_residual, candidates(self.w.heads.shape[1], s.subtalker_top_k)),
                                    past_hidden.device)  # [15, k]
        x = torch.cat((past_hidden, cb0_embed), dim=1)  # [1, 2, D_talker]
        if self.w.proj_w is not None:
            x = F.linear(x, self.w.proj_w, self.w.proj_b)  # [1, 2, Dp]
        hidden = self._forward(x, 0, self.prefill_mask)  # [1, 2, Dp]
        codes = [cb0]
        for i in range(self.n_residual):
            logits = F.linear(hidden, self.w.heads[i])[0, -1]  # [2048] model dtype
            code = select_token(logits, s.subtalker_do_sample, s.subtalker_temperature, s.subtalker_top_k,
                                s.subtalker_top_p, None if noise is None else noise[i])  # [1]
            codes.append(code)
            if i + 1 < self.n_residual:
                embed = F.embedding(code, self.input_tables[i]).unsqueeze(0)  # [1, 1, Dp]
                hidden = self._forward(embed, i + 2, None)  # [1, 1, Dp]
        torch.cat(codes, out=out)  # [16]


def _fp32_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear`` in full fp32 precision: with TF32 off (the engine turns it on for speed at load), so fp32 rows
    stay the products the reference computes row by row, to rounding."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return F.linear(x, weight, bias)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
