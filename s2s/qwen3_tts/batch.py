"""``BatchDecoder``: the frame step of up to R utterances at once, one per row slot, on the engine's weights.

Each row slot owns its decode state, allocated once for R = ``max_batch`` rows at the engine's max_seq_len L:
  cache [layers, R, L, 2 Hkv, d]     talker K/V of every row (slot-major per row, as kv_cache.py)
  counters [R, 4]                    frame, position, cache_slot, n_generated per row (talker.py)
  active [R, 1]                      1 while a request holds the row: the counters advance by it, so a row outside
                                     a request stays where it is (its slot never runs past L)
  mask [R, L]                        additive attention mask of each row's written slots
  token [R], past_hidden [R, D], frame_codes [R, 16], history [R, L, 16], trailing [R, L + 1, D]
  predictor rows [layers_p, 16, R, Hq + 2 Hkv, d]     the code predictor's per-frame cache, slot-major over rows
  predictor rotated [layers_p, 16, R, Hq + Hkv, d]    its normed and rotated q/k (batch_layers.py)
  sampling values, processor masks, noise [R, 16, k]  batch_sampling.py

A frame runs rows 0..B-1, B the batch bucket (1, 2, 4, 8, 16 up to R) that holds the highest row in use: the host
gives rows out lowest first, so the rows in use are packed near 0 and no state is gathered or moved. A row in the
bucket but not in use is computed and ignored (no host work). ``prefill(row, ...)`` runs one prompt eagerly into
its row (the single-stream talker's own prefill pass, so its logits are the same bits) while the other rows wait
between frames; the row joins at the next frame. ``codes_step(B)`` and ``talker_step(B, kv_len)`` are the two
graph-captured functions (one CUDA graph per batch bucket, and per batch bucket x key bucket), captured at
``capture()``; the same functions run eagerly on the CPU.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.batch_layers import row_fixed_slots_layer, row_step_layer
from s2s.qwen3_tts.batch_sampling import RowLogitsProcessor, RowNoise, RowSampling
from s2s.qwen3_tts.graphs import GraphPool
from s2s.qwen3_tts.layers import rms_norm
from s2s.qwen3_tts.options import SamplingParams
from s2s.qwen3_tts.prompt import TalkerPrompt
from s2s.qwen3_tts.rope import fold_norm_weights
from s2s.qwen3_tts.talker import key_buckets
from s2s.qwen3_tts.weights import embed_codes

log = logging.getLogger(__name__)

MAX_TOP_K = 50
"""Candidates a batched step samples among (``top_k`` of every request must be in [1, MAX_TOP_K]); the reference's
default top-k, for the talker and the code predictor."""


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes a frame step is captured for: powers of two below ``max_batch``, then ``max_batch``."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch)


def smallest_holding(buckets: tuple[int, ...], needed: int) -> int:
    """The smallest bucket >= ``needed``."""
    return next(size for size in buckets if size >= needed)


class BatchDecoder:
    """Row slots on the device and the batched frame step over ``engine``'s talker and code predictor.

    ``batch_sizes`` / ``key_sizes`` override the buckets (a single bucket each makes every row's arithmetic
    independent of the others', bit for bit; tests use that). ``top_p`` / ``greedy`` (talker, code predictor): whether
    requests may sample with top-p < 1 / decode greedily (``RowSampling``; ``for_sampling`` derives both from the
    one setting a server uses). ``use_graphs`` follows the engine."""

    def __init__(self, engine, max_batch: int, batch_sizes: tuple[int, ...] | None = None,
                 key_sizes: tuple[int, ...] | None = None, max_top_k: int = MAX_TOP_K,
                 top_p: tuple[bool, bool] = (True, True), greedy: tuple[bool, bool] = (True, True)) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch = {max_batch} must be at least 1")
        talker, predictor = engine.talker, engine.predictor
        self.talker, self.predictor = talker, predictor
        self.w, self.pw = talker.w, predictor.w
        self.device, self.dtype = engine.device, engine.dtype
        self.eos_id = engine.eos_id
        self.max_batch = R = max_batch
        self.max_seq_len = L = engine.max_seq_len
        self.batch_sizes = batch_sizes or batch_buckets(R)
        self.key_sizes = key_sizes or key_buckets(L)
        if self.batch_sizes[-1] < R or self.key_sizes[-1] < L:
            raise ValueError(f"the largest buckets must hold max_batch={R} rows and max_seq_len={L} keys")
        self.use_graphs = engine.use_graphs
        shape, dev = self.w.shape, self.device
        hidden, n_codes = self.w.codec_embedding.shape[1], predictor.n_residual + 1
        long = dict(dtype=torch.long, device=dev)
        self.cache = torch.zeros(len(self.w.layers), R, L, 2 * shape.kv_heads, shape.head_dim, dtype=self.dtype,
                                 device=dev)  # [layers, R, L, 2 Hkv, d]
        self.counters = torch.zeros(R, 4, **long)  # frame, position, cache_slot, n_generated
        self.active = torch.zeros(R, 1, **long)
        self.mask = torch.zeros(R, L, dtype=self.dtype, device=dev)
        self.token = torch.zeros(R, **long)
        self.past_hidden = torch.zeros(R, hidden, dtype=self.dtype, device=dev)
        self.frame_codes = torch.zeros(R, n_codes, **long)
        self.history = torch.zeros(R, L, n_codes, **long)
        self.trailing = torch.zeros(R, L + 1, hidden, dtype=self.dtype, device=dev)
        self.slot_base = torch.arange(R, **long) * L  # [R] first flat slot of each row (cache, mask, history)
        self.trailing_base = torch.arange(R, **long) * (L + 1)
        pshape = self.pw.shape
        self.predictor_rows = torch.zeros(len(self.pw.layers), n_codes, R, pshape.q_heads + 2 * pshape.kv_heads,
                                          pshape.head_dim, dtype=self.dtype, device=dev)  # [layers, 16, R, H, d]
        self.predictor_rotated = torch.zeros(len(self.pw.layers), n_codes, R, pshape.q_heads + pshape.kv_heads,
                                             pshape.head_dim, dtype=self.dtype, device=dev)  # normed, rotated q/k
        self.sampling = RowSampling(R, max_top_k, n_codes, dev, top_p, greedy)
        self.processor = RowLogitsProcessor(R, self.w.codec_embedding.shape[0], self.eos_id, dev)
        self.draw = RowNoise(n_codes, max_top_k, dev)
        self.noise = torch.zeros(R, n_codes, max_top_k, device=dev)  # [R, 16, k] T log E: 15 codes, the talker's id
        self._codes_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._talk_graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}

    @classmethod
    def for_sampling(cls, engine, max_batch: int, sampling: SamplingParams) -> BatchDecoder:
        """A decoder whose captured steps hold only the sampling stages ``sampling`` uses (requests with other
        values of top-p / greedy are then refused; temperature, top-k, penalty and seed may differ)."""
        s = sampling
        top_p = (s.do_sample and s.top_p < 1.0, s.subtalker_do_sample and s.subtalker_top_p < 1.0)
        return cls(engine, max_batch, top_p=top_p, greedy=(not s.do_sample, not s.subtalker_do_sample))

    @property
    def kv_bytes_per_row(self) -> int:
        """Device bytes of one row slot's talker K/V (the dominant per-row memory)."""
        return self.cache[:, 0].numel() * self.cache.element_size()

    # -- a request enters a row ---------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, row: int, prompt: TalkerPrompt, sampling: SamplingParams, min_new_tokens: int) -> None:
        """Run ``prompt`` into row slot ``row`` (eager; other rows keep their state) and sample its first id; the
        row joins the next frame step."""
        self.sampling.set_row(row, sampling)
        self.processor.reset_row(row, min_new_tokens)
        T = prompt.length
        self.trailing[row] = prompt.tts_pad.to(self.dtype).view(1, -1)
        n_rows = min(prompt.trailing.shape[1], self.trailing.shape[1])
        self.trailing[row, :n_rows] = prompt.trailing[0, :n_rows].to(self.dtype)
        hidden, logits = self.talker.prefill_pass(prompt.embeds.to(self.dtype), lambda i: self.cache[i, row])
        rows = slice(row, row + 1)
        self.counters[row] = 0
        logits = self.processor(logits[0, -1:].float(), self.counters[rows, 3:4], self.sampling.penalty[rows], row)
        noise = self.draw(self.sampling.keys[rows], self.counters[rows, 0])  # counter 0: the prefill's draw
        token = self.sampling.select(logits, 0, noise[:, -1] * self.sampling.noise_scale[rows, -1], row)  # [1]
        self.processor.record(token, row)
        self.token[row] = token[0]
        self.past_hidden[row] = hidden[0, -1]
        self.mask[row] = float("-inf")
        self.mask[row, :T] = 0.0
        self.counters[row] = torch.tensor([0, T, T, 1])  # frame, position, cache slot, ids generated
        self.active[row] = 1

    def release(self, row: int) -> None:
        """The row leaves the batch: its counters stop (its state stays until the next prefill overwrites it)."""
        self.active[row] = 0

    # -- the frame step -----------------------------------------------------------------------------------------
    def _predict(self, x: torch.Tensor, first: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, T, Dp] (consumed) at predictor positions first..first+T-1 -> final-norm hidden [B, T, Dp]."""
        T = x.shape[1]
        for i, lw in enumerate(self.pw.layers):
            rotations = self.predictor.rotations[i][first : first + T]  # [T, G, d, d]
            x = row_fixed_slots_layer(x, lw, self.pw.shape, rotations, self.predictor_rows[i],
                                      self.predictor_rotated[i], first, mask)
        return rms_norm(x, self.pw.final_norm, self.pw.shape.eps)

    def codes_step(self, B: int) -> None:
        """Code predictor for rows 0..B-1: each row's frame codes [16] into ``frame_codes`` and its history."""
        counters = self.counters[:B]
        log_e = self.draw(self.sampling.keys[:B], counters[:, 0] + 1)  # [B, 16, k]: counter frame + 1
        torch.mul(log_e, self.sampling.noise_scale[:B], out=self.noise[:B])  # scaled by each draw's temperature
        cb0 = self.token[:B]  # [B]
        x = torch.stack((self.past_hidden[:B], F.embedding(cb0, self.w.codec_embedding)), dim=1)  # [B, 2, D]
        if self.pw.proj_w is not None:
            x = F.linear(x, self.pw.proj_w, self.pw.proj_b)  # [B, 2, Dp]
        hidden = self._predict(x, 0, self.predictor.prefill_mask)  # [B, 2, Dp]
        codes = [cb0]
        n_residual = self.predictor.n_residual
        for i in range(n_residual):
            logits = F.linear(hidden[:, -1], self.pw.heads[i])  # [B, 2048] model dtype
            code = self.sampling.select(logits, 1, self.noise[:B, i])  # [B]
            codes.append(code)
            if i + 1 < n_residual:
                embed = F.embedding(code, self.predictor.input_tables[i]).unsqueeze(1)  # [B, 1, Dp]
                hidden = self._predict(embed, i + 2, None)  # [B, 1, Dp]
        torch.stack(codes, dim=1, out=self.frame_codes[:B])  # [B, 16]
        flat = self.slot_base[:B] + counters[:, 0]  # [B] history row of each row's frame
        self.history.view(-1, n_residual + 1).index_copy_(0, flat, self.frame_codes[:B])

    def talker_step(self, B: int, kv_len: int) -> None:
        """Talker on each row's summed frame codes: next codebook-0 ids; advances the counters of rows in use.
        Attention reads keys [0, kv_len) of each row (a key bucket above every used row's slot)."""
        w, counters = self.w, self.counters[:B]
        hidden_size = self.past_hidden.shape[1]
        trailing = self.trailing.view(-1, hidden_size).index_select(0, self.trailing_base[:B] + counters[:, 0])
        x = (embed_codes(self.frame_codes[:B], w) + trailing).unsqueeze(0)  # [1, B, D]
        flat_slots = self.slot_base[:B] + counters[:, 2]  # [B]
        self.mask.view(-1).index_fill_(0, flat_slots, 0.0)  # each row's slot written now becomes visible
        rotations = self.talker.rope.rotations(counters[:, 1])  # [B, d, d]
        per_layer = fold_norm_weights(rotations, self.talker.qk_norms, w.shape.kv_heads)  # [layers, B, G, d, d]
        mask = self.mask[:B, :kv_len].view(B, 1, 1, kv_len)
        for i, lw in enumerate(w.layers):
            x = row_step_layer(x, lw, w.shape, per_layer[i], self.cache[i], flat_slots, kv_len, mask)
        hidden = rms_norm(x, w.final_norm, w.shape.eps)  # [1, B, D]
        logits = F.linear(hidden, w.codec_head)[0].float()  # [B, V]
        logits = self.processor(logits, counters[:, 3:4], self.sampling.penalty[:B])
        token = self.sampling.select(logits, 0, self.noise[:B, -1])  # [B]
        self.processor.record(token)
        self.token[:B] = token
        self.past_hidden[:B] = hidden[0]
        counters.add_(self.active[:B])

    def frame(self, B: int, kv_len: int) -> None:
        """One frame of rows 0..B-1 (B a batch bucket, kv_len a key bucket): two graph replays, or eager."""
        if self.use_graphs and B in self._codes_graphs:
            self._codes_graphs[B].replay()
            self._talk_graphs[(B, kv_len)].replay()
            return
        with torch.no_grad():
            self.codes_step(B)
            self.talker_step(B, kv_len)

    def bucket(self, rows_needed: int) -> int:
        return smallest_holding(self.batch_sizes, rows_needed)

    def key_bucket(self, slot: int) -> int:
        """The smallest key bucket that holds cache slot ``slot``."""
        return smallest_holding(self.key_sizes, slot + 1)

    @torch.no_grad()
    def capture(self, pool: GraphPool | None = None) -> float:
        """Capture every batch bucket x key bucket (CUDA; call before any request: warm-up calls touch the rows'
        state, which a prefill resets). Returns the seconds it took."""
        if not self.use_graphs:
            return 0.0
        pool = pool or GraphPool()
        start = pool.capture_seconds
        self.active.zero_()
        for B in reversed(self.batch_sizes):  # the largest first: the pool's blocks then fit the smaller ones
            self.counters.zero_()
            self._codes_graphs[B] = pool.capture(lambda B=B: self.codes_step(B))
            for kv_len in self.key_sizes:
                self.counters.zero_()
                self._talk_graphs[(B, kv_len)] = pool.capture(lambda B=B, kv_len=kv_len: self.talker_step(B, kv_len))
        seconds = pool.capture_seconds - start
        log.info("captured the batched frame graphs (%d batch x %d key buckets) in %.2f s", len(self.batch_sizes),
                 len(self.key_sizes), seconds)
        return seconds
