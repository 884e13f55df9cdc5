"""The talker (28 layers, hidden D 1024/2048, 16 q / 8 kv heads, d 128, codec vocab V 3072) and its decode state.

Everything a frame needs lives in static device buffers, allocated once:
  cache [28, L, 2 * 8, 128]          K/V (slot-major), L = max_seq_len (prompt + generated frames)
  counters [4]                       frame, position, cache_slot, n_generated (views, advanced by one kernel):
    frame                            frames produced so far (row of the code history, trailing-text row)
    position / cache_slot            RoPE position and K/V slot of the next talker input (equal here, kept apart)
    n_generated                      codebook-0 ids sampled so far (min-new-tokens rule)
  mask [1, L]                        additive attention mask of the written slots, shared by all 28 layers
  token [1]                          last sampled codebook-0 id;  past_hidden [1, 1, D] its final-norm hidden
  frame_codes [16], history [L, 16]  codes of the current frame and of all frames
  trailing [L + 1, D]                per-frame text rows, tts_pad after the text

``prefill`` runs the prompt through the same layer code as one batched causal pass (eager) and samples the first
codebook-0 id. ``codes_step`` (code predictor) and ``talker_step`` are the two graph-captured functions of a
frame: they only read and write these buffers (counters advance in place), so eager and replay are the same code.
A talker step reads only the keys of its bucket [0, kv_len) (powers of two from 64, then L; one graph each, chosen
by the host, which knows the slot): attention bytes grow with the text, not with max_seq_len (this matters on
memory-bound devices such as Jetson Orin).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.kv_cache import StaticKVCache
from s2s.qwen3_tts.layers import causal_mask, decoder_layer, rms_norm
from s2s.qwen3_tts.predictor import CodePredictor
from s2s.qwen3_tts.rope import RopeTables, fold_norm_weights
from s2s.qwen3_tts.options import SamplingParams
from s2s.qwen3_tts.sampling import TalkerLogitsProcessor, select_token
from s2s.qwen3_tts.weights import TalkerWeights, embed_codes


SMALLEST_KEY_BUCKET = 64


def key_buckets(max_seq_len: int) -> tuple[int, ...]:
    """Key lengths a talker step reads: powers of two from 64 below ``max_seq_len``, then ``max_seq_len``."""
    buckets = []
    size = SMALLEST_KEY_BUCKET
    while size < max_seq_len:
        buckets.append(size)
        size *= 2
    return (*buckets, max_seq_len)


class Talker:
    def __init__(self, w: TalkerWeights, predictor: CodePredictor, eos_id: int, max_seq_len: int,
                 dtype: torch.dtype, device: torch.device):
        self.w = w
        self.predictor = predictor
        self.eos_id = eos_id
        self.max_seq_len = L = max_seq_len
        self.key_buckets = key_buckets(L)
        hidden = w.codec_embedding.shape[1]
        self.cache = StaticKVCache(len(w.layers), w.shape, L, dtype, device)
        self.rope = RopeTables(w.shape.head_dim, w.rope_theta, L, dtype, device)
        self.qk_norms = torch.stack([lw.qk_norm for lw in w.layers]).float()  # [layers, Hq + Hkv, d] fp32
        self.processor = TalkerLogitsProcessor(w.codec_embedding.shape[0], eos_id, device)
        long = dict(dtype=torch.long, device=device)
        self.counters = torch.zeros(4, **long)  # advanced together by one kernel per frame
        self.frame = self.counters[0:1]
        self.position = self.counters[1:2]
        self.cache_slot = self.counters[2:3]
        self.n_generated = self.counters[3:4]
        self.mask = torch.zeros(1, L, dtype=dtype, device=device)  # [1, L] additive: 0 = written slot, -inf = not yet
        self.token = torch.zeros(1, **long)
        self.past_hidden = torch.zeros(1, 1, hidden, dtype=dtype, device=device)
        self.frame_codes = torch.zeros(predictor.n_residual + 1, **long)
        self.history = torch.zeros(L, predictor.n_residual + 1, **long)
        self.trailing = torch.zeros(L + 1, hidden, dtype=dtype, device=device)
        self.step_layer = decoder_layer
        """The layer function of single-token steps (``compiled.compile_steps`` swaps in a compiled one)."""

    def _layers(self, x, positions, slots, kv_len, mask,
                cache: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
        """x [1, T, D] (consumed: updated in place by the layers) -> final-norm hidden [1, T, D]; ``cache(i)`` is
        layer i's K/V [L, 2 Hkv, d] (default: this talker's cache)."""
        cache = cache or self.cache.layer
        rotations = self.rope.rotations(positions)  # [T, d, d]
        if x.shape[1] == 1:  # a step: every layer's q/k norm weights folded into its own copy, in one product
            layer = self.step_layer
            per_layer = fold_norm_weights(rotations, self.qk_norms, self.w.shape.kv_heads)  # [layers, 1, G, d, d]
        else:  # prefill: T rotations per layer would be large; all layers share them, the norms apply the weights
            layer = decoder_layer
            per_layer = [rotations] * len(self.w.layers)
        for i, lw in enumerate(self.w.layers):
            x = layer(x, lw, self.w.shape, per_layer[i], cache(i), slots, kv_len, mask)
        return rms_norm(x, self.w.final_norm, self.w.shape.eps)  # [1, T, D]

    def sample(self, logits: torch.Tensor, n_generated: torch.Tensor, s: SamplingParams) -> torch.Tensor:
        """fp32 logits [V] -> the next codebook-0 id [1], recorded for the repetition penalty."""
        logits = self.processor(logits, n_generated, s.repetition_penalty)  # [V]
        token = select_token(logits, s.do_sample, s.temperature, s.top_k, s.top_p)  # [1]
        self.processor.record(token)
        return token

    def prefill(self, embeds: torch.Tensor, trailing: torch.Tensor, tts_pad: torch.Tensor,
                sampling: SamplingParams, min_new_tokens: int) -> None:
        """Prompt rows [1, T, D] -> cache slots 0..T-1, first codebook-0 id in ``token``; resets all state."""
        T = embeds.shape[1]
        self.processor.reset(min_new_tokens)
        self.trailing[:] = tts_pad.view(1, -1)
        n_rows = min(trailing.shape[1], self.trailing.shape[0])
        self.trailing[:n_rows] = trailing[0, :n_rows]
        hidden, logits = self.prefill_pass(embeds)
        logits = logits[0, -1].float()  # [V]
        self.counters.zero_()
        self.token.copy_(self.sample(logits, self.n_generated, sampling))
        self.past_hidden.copy_(hidden[:, -1:])
        self.mask.fill_(float("-inf"))
        self.mask[:, :T] = 0.0
        self.counters.copy_(torch.tensor([0, T, T, 1]))  # frame, position, cache slot, ids generated

    def prefill_pass(self, embeds: torch.Tensor, cache: Callable[[int], torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt rows [1, T, D] -> K/V of slots 0..T-1 in ``cache`` (default: this talker's), final-norm hidden
        [1, T, D] and codec-head logits [1, T, V] (model dtype; the head runs over all rows, as the reference)."""
        T = embeds.shape[1]
        positions = torch.arange(T, device=embeds.device)  # [T]
        mask = causal_mask(T, self.w.shape.group, embeds.device)
        hidden = self._layers(embeds.clone(), positions, positions, T, mask, cache)
        return hidden, F.linear(hidden, self.w.codec_head)

    def rewind(self) -> None:
        """Counters back to 0 (before graph capture, whose warm-up calls advance them)."""
        self.counters.zero_()

    def codes_step(self, sampling: SamplingParams) -> None:
        """Code predictor for the current codebook-0 id: fills ``frame_codes`` and history row ``frame``."""
        cb0_embed = F.embedding(self.token, self.w.codec_embedding).unsqueeze(0)  # [1, 1, D]
        self.predictor.run(self.past_hidden, cb0_embed, self.token, sampling, out=self.frame_codes)  # [16]
        self.history.index_copy_(0, self.frame, self.frame_codes.unsqueeze(0))

    def key_bucket(self, slot: int) -> int:
        """The smallest key bucket that holds cache slot ``slot`` (the host knows which slot a frame writes)."""
        return next(size for size in self.key_buckets if size > slot)

    def talker_step(self, sampling: SamplingParams, kv_len: int | None = None) -> None:
        """Talker on the summed codes of the current frame: next codebook-0 id; advances all counters.

        Attention reads keys [0, kv_len) (default: the whole cache); ``kv_len`` must exceed the slot written now
        (``key_bucket``). Steps with different ``kv_len`` are different graphs; they share all buffers."""
        kv_len = kv_len or self.max_seq_len
        summed = embed_codes(self.frame_codes.unsqueeze(0), self.w)  # [1, D]
        x = summed + self.trailing.index_select(0, self.frame)  # [1, D]
        self.mask.index_fill_(1, self.cache_slot, 0.0)  # the slot written now becomes visible to all layers
        hidden = self._layers(x.unsqueeze(0), self.position, self.cache_slot, kv_len, self.mask[:, :kv_len])  # [1, 1, D]
        logits = F.linear(hidden, self.w.codec_head)[0, 0].float()  # [V]
        self.token.copy_(self.sample(logits, self.n_generated, sampling))
        self.past_hidden.copy_(hidden)
        self.counters.add_(1)
