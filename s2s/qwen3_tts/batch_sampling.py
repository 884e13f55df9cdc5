"""Token selection for B rows at once, each row with its own sampling values and its own random stream.

Per row the values of ``SamplingParams`` live in device tensors (``RowSampling``), so rows that differ only in
values share one captured step; what a captured step bakes in is the number of candidates ``k`` (``top_k`` of every
row must be in [1, k]). The order of operations is the single-stream one (sampling.py): repetition penalty ->
EOS blocked before ``min_new_tokens`` -> suppression -> greedy, or temperature -> top-k -> top-p -> Gumbel-max draw.
A greedy row takes the argmax of the processed logits, as ``select_token``.

Randomness: a row's draws are a pure function of its seed and its frame counter (``RowNoise``: a 32-bit integer
hash on the device, counter-based like Philox), not of a shared generator. So a seeded request samples the same
tokens whatever else is in the batch, when it joined, and whether the step is eager or a replayed CUDA graph; and a
graph needs no generator state. The stream differs from the single-stream engine's (which draws from torch's
default generator), so a seeded request speaks alike in each mode, not across them.
"""

from __future__ import annotations

import random

import torch

from s2s.qwen3_tts.options import SamplingParams

MASK32 = 0xFFFFFFFF
_MIX = (0x21F0AAAD, 0x735A2D97)
"""Multipliers of the 32-bit mixer (a two-round xorshift-multiply; both < 2^31, so int64 products never overflow)."""


def mix32(x):
    """A bijective 32-bit hash of values in [0, 2^32): int64 tensors elementwise (exact integer ops, the same on
    any device) or Python ints."""
    x = x ^ (x >> 16)
    x = (x * _MIX[0]) & MASK32
    x = x ^ (x >> 15)
    x = (x * _MIX[1]) & MASK32
    return x ^ (x >> 15)


def seed32(seed: int | None) -> int:
    """A request's 63-bit seed (None: a fresh random one) folded to the 32-bit key of its stream."""
    seed = random.getrandbits(63) if seed is None else seed
    return mix32(mix32(seed >> 32) ^ (seed & MASK32))


class RowNoise:
    """log E, E ~ Exp(1), for ``draws`` x ``k`` candidates per row and counter: [B, draws, k] fp32.

    Each (row key, counter) gives a stream key; each candidate's bits are the hash of stream key + its index, so the
    draws of a row depend on nothing else. About 25 kernels for all draws of a frame."""

    def __init__(self, draws: int, k: int, device: torch.device) -> None:
        self.index = torch.arange(draws * k, dtype=torch.long, device=device).view(1, draws, k)  # [1, draws, k]

    def __call__(self, keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
        """keys [B] (seed32), counters [B] long -> log E [B, draws, k]."""
        stream = mix32(keys ^ (counters & MASK32))  # [B]
        bits = mix32((stream.view(-1, 1, 1) + self.index) & MASK32)  # [B, draws, k] uniform 32-bit
        uniform = ((bits >> 8).float() + 0.5) * 2.0**-24  # [B, draws, k] in (0, 1): 24 bits, exact in fp32
        return uniform.log_().neg_().log_()  # log(-log U) = log E


class RowSampling:
    """The sampling values of ``rows`` row slots, as device tensors written when a request takes a row.

    Per row and part (0 = talker, 1 = code predictor): ``do_sample``, ``temperature``, ``top_k`` as an additive
    mask over the k ranked candidates (0 / -inf), ``top_p``; per draw of a frame ``noise_scale`` (the temperature of
    the part that draw is for), so the Gumbel noise is scaled once per frame. ``top_p`` and ``greedy`` (talker,
    predictor) say whether rows may use top-p < 1, and greedy decoding, at all: they cost 5 and 2 kernels per token,
    so they are left out of the captured steps where no request may ask for them."""

    def __init__(self, rows: int, k: int, draws: int, device: torch.device,
                 top_p: tuple[bool, bool] = (True, True), greedy: tuple[bool, bool] = (True, True)) -> None:
        self.k = k
        self.top_p_on = top_p
        self.greedy_on = greedy
        f32 = dict(dtype=torch.float32, device=device)
        self.do_sample = torch.zeros(rows, 2, dtype=torch.bool, device=device)  # [R, talker / predictor]
        self.temperature = torch.ones(rows, 2, 1, **f32)  # [R, 2, 1]
        self.top_k_mask = torch.zeros(rows, 2, k, **f32)  # [R, 2, k] 0 = kept rank, -inf = cut
        self.top_p = torch.full((rows, 2, 1), 2.0, **f32)  # [R, 2, 1]; 2 = off (no cumulative mass reaches it)
        self.noise_scale = torch.ones(rows, draws, 1, **f32)  # [R, draws, 1]: predictor draws, then the talker's
        self.penalty = torch.ones(rows, 1, **f32)  # [R, 1] talker repetition penalty
        self.keys = torch.zeros(rows, dtype=torch.long, device=device)  # [R] seed32 of each row's stream

    def check(self, s: SamplingParams) -> None:
        """ValueError for values a captured step cannot take: sampling with top-k off or above ``k``, top-p < 1 or
        greedy where they are off."""
        parts = (("top_k", "top_p", s.do_sample), ("subtalker_top_k", "subtalker_top_p", s.subtalker_do_sample))
        for (top_k, top_p, sampled), top_p_on, greedy_on in zip(parts, self.top_p_on, self.greedy_on):
            if not sampled and not greedy_on:
                name = "do_sample" if top_k == "top_k" else "subtalker_do_sample"
                raise ValueError(f"{name} = False is not served by this batch, which was built for sampling only")
            value = getattr(s, top_k)
            if sampled and not 1 <= value <= self.k:
                raise ValueError(f"{top_k} = {value} is not served in a batch: batched decoding samples among at most "
                                 f"k = {self.k} ids per token, so use 1 <= {top_k} <= {self.k}")
            if sampled and getattr(s, top_p) < 1.0 and not top_p_on:
                raise ValueError(f"{top_p} = {getattr(s, top_p)} is not served by this batch, which was built without "
                                 f"top-p: use {top_p} = 1.0, or build it with top-p on")

    def set_row(self, row: int, s: SamplingParams) -> None:
        """Write row ``row``'s values (host -> device, between steps)."""
        self.check(s)
        temperatures = (s.temperature, s.subtalker_temperature)
        self.do_sample[row] = torch.tensor([s.do_sample, s.subtalker_do_sample])
        self.temperature[row] = torch.tensor(temperatures).view(2, 1)
        ranks = torch.arange(self.k)
        for part, top_k in enumerate((s.top_k, s.subtalker_top_k)):
            self.top_k_mask[row, part] = torch.zeros(self.k).masked_fill(ranks >= (top_k or self.k), float("-inf"))
        self.top_p[row] = torch.tensor([p if p < 1.0 else 2.0 for p in (s.top_p, s.subtalker_top_p)]).view(2, 1)
        self.noise_scale[row, :-1] = s.subtalker_temperature
        self.noise_scale[row, -1] = s.temperature
        self.penalty[row] = s.repetition_penalty
        self.keys[row] = seed32(s.seed)

    def select(self, logits: torch.Tensor, which: int, scaled_noise: torch.Tensor, first: int = 0) -> torch.Tensor:
        """logits [B, V] (any float dtype) of rows first..first+B-1 -> ids [B]; ``which`` 0 = talker, 1 = code
        predictor values; ``scaled_noise`` [B, k] fp32 = temperature x log E (``RowNoise`` times ``noise_scale``).

        Gumbel-max as ``sampling.select_token``: argmax(l - T log E) over the top-k logits, which is distributed as
        softmax(l / T). 5 kernels per token, 7 with greedy rows (the first maximum of all logits), 5 more with
        top-p."""
        B = logits.shape[0]
        rows = slice(first, first + B)
        values, ids = torch.topk(logits, self.k, sorted=True)  # [B, k] descending (ranks for top-k and top-p)
        values = values + self.top_k_mask[rows, which]  # [B, k] fp32: per-row top-k
        if self.top_p_on[which]:
            probs = (values / self.temperature[rows, which]).softmax(-1)  # [B, k]
            ranked_above = probs.cumsum(-1) - probs  # [B, k] mass of the more likely ids
            values = values.masked_fill(ranked_above >= self.top_p[rows, which], float("-inf"))
        winner = (values - scaled_noise).argmax(-1, keepdim=True)  # [B, 1]
        sampled = ids.gather(1, winner).view(B)  # [B]
        if not self.greedy_on[which]:
            return sampled
        greedy = logits.argmax(-1)  # [B]; first maximum, as the single-stream greedy
        return torch.where(self.do_sample[rows, which], sampled, greedy)


class RowLogitsProcessor:
    """The talker's logits processors (``sampling.TalkerLogitsProcessor``) for row slots: per-row generated-id
    masks [R, V], ``min_new_tokens`` [R] and repetition penalty."""

    def __init__(self, rows: int, vocab_size: int, eos_id: int, device: torch.device) -> None:
        self.generated = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)  # [R, V]
        self.min_new_tokens = torch.zeros(rows, 1, dtype=torch.long, device=device)  # [R, 1]
        ids = torch.arange(vocab_size, device=device)
        suppressed = (ids >= vocab_size - 1024) & (ids != eos_id)  # [V]
        self.bias = torch.zeros(2, vocab_size, device=device)  # [2, V] fp32: EOS allowed / blocked
        self.bias.masked_fill_(torch.stack((suppressed, suppressed | (ids == eos_id))), float("-inf"))

    def reset_row(self, row: int, min_new_tokens: int) -> None:
        self.generated[row] = False
        self.min_new_tokens[row] = min_new_tokens

    def __call__(self, logits: torch.Tensor, n_generated: torch.Tensor, penalty: torch.Tensor,
                 first: int = 0) -> torch.Tensor:
        """fp32 logits [B, V] of rows first..first+B-1, ``n_generated`` [B, 1], ``penalty`` [B, 1] -> [B, V].

        A penalty of 1 multiplies and divides by 1, which is exact: such a row's logits stay the same bits."""
        rows = slice(first, first + logits.shape[0])
        penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # [B, V]
        logits = torch.where(self.generated[rows], penalised, logits)
        blocked = n_generated < self.min_new_tokens[rows]  # [B, 1]
        return logits + torch.where(blocked, self.bias[1], self.bias[0])  # [B, V]

    def record(self, tokens: torch.Tensor, first: int = 0) -> None:
        """Mark ids ``tokens`` [B] of rows first..first+B-1 as generated (in place: safe inside a graph)."""
        self.generated[first : first + tokens.shape[0]].scatter_(1, tokens.view(-1, 1), True)
