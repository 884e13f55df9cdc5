"""``StaticDecoder``: a transformers chat model's token loop on static buffers, one CUDA graph per decode step.

Dimensions: layers N, hidden D, Hq query / Hkv key-value heads of d, vocabulary V, L = ``max_seq_len`` (prompt and
reply). Everything a step touches is allocated once:
  cache [N, L, 2 Hkv, d]      K/V, slot-major (s2s.qwen3_tts.kv_cache)
  counters [2]                position (RoPE) and cache_slot (K/V row), advanced together by one kernel
  mask [1, L]                 additive attention mask of the written slots (0 / -inf), shared by all layers
  token [1]                   the last token: the step's input, overwritten by the step's sampled output

``extend`` runs prompt ids through the layers eagerly (the same layer code, a causal pass over a slice) and returns
the last logits. ``reuse_prefix`` keeps the slots of the last conversation that the next prompt starts with (a
slot's K/V depend only on the tokens up to it), so a new turn prefills only what is new: the last reply and the
new question, not the system prompt and the whole history again.

``step`` is the one-token forward plus sampling on the device (greedy argmax, or the exponential-noise draw of
``s2s.qwen3_tts.sampling.select_token`` at a temperature): it reads and writes only the buffers above, so on CUDA
it is captured once per key bucket (attention reads keys [0, kv_len), kv_len a power of two from 64, then L: the
key bytes grow with the conversation, not with L) and replayed; on a CPU, or with ``enforce_eager``, the same
function runs eagerly. No ``torch.compile`` (it must run on a Jetson).

``decode`` streams the ids: on CUDA it queues step k + 1 on the device before it waits for token k (copied to pinned
host memory behind an event), so the host's text work for one token overlaps the GPU's next step. On CUDA all of it runs
on the decoder's own stream, apart from the TTS stage's work on the default stream.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from s2s.llm_decode.weights import ChatWeights, rope_tables, take_weights
from s2s.qwen3_tts.graphs import GraphPool
from s2s.qwen3_tts.kv_cache import StaticKVCache
from s2s.qwen3_tts.layers import causal_mask, decoder_layer, rms_norm
from s2s.qwen3_tts.sampling import select_token
from s2s.qwen3_tts.talker import key_buckets

log = logging.getLogger(__name__)


class StaticDecoder:
    """The decode state of one model. Not thread-safe: one sequence at a time (the LLM stage's)."""

    def __init__(self, model: torch.nn.Module, max_seq_len: int, enforce_eager: bool = False,
                 share_weights: bool = False) -> None:
        embed = model.model.embed_tokens.weight
        self.device, self.dtype = embed.device, embed.dtype
        self.max_seq_len = L = max_seq_len
        self.w: ChatWeights = take_weights(model, share=share_weights)
        self.key_buckets = key_buckets(L)
        self.cache = StaticKVCache(len(self.w.layers), self.w.shape, L, self.dtype, self.device)
        self.rope = rope_tables(model, L, self.dtype, self.device)
        long = dict(dtype=torch.long, device=self.device)
        self.counters = torch.zeros(2, **long)
        self.position = self.counters[0:1]
        self.cache_slot = self.counters[1:2]
        self.mask = torch.full((1, L), float("-inf"), dtype=self.dtype, device=self.device)  # [1, L] additive
        self.token = torch.zeros(1, **long)
        self.length = 0
        """Slots written so far (the host knows it: it picks the key bucket of the next step)."""
        self._ids: list[int] = []
        """The token ids at slots 0..len-1 known on the host; the slots after them hold decoded tokens."""
        self._decode_start = 0
        """The slot of the first decoded token (token k of ``host_tokens`` went into slot _decode_start + k)."""
        self.use_graphs = self.device.type == "cuda" and not enforce_eager
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.host_tokens = torch.zeros(L, dtype=torch.long, pin_memory=self.use_graphs)  # [L] host copies
        self._graphs: dict[tuple[int, float], torch.cuda.CUDAGraph] = {}
        self._pool: GraphPool | None = None

    # -- the forward ---------------------------------------------------------------------------------------------
    def _layers(self, x: torch.Tensor, rotations: torch.Tensor, slots: torch.Tensor, kv_len: int,
                mask: torch.Tensor) -> torch.Tensor:
        """x [1, T, D] (updated in place) -> final-norm hidden of the last row [1, D]."""
        for i, lw in enumerate(self.w.layers):
            x = decoder_layer(x, lw, self.w.shape, rotations, self.cache.layer(i), slots, kv_len, mask)
        return rms_norm(x[:, -1], self.w.final_norm, self.w.shape.eps)  # [1, D]

    def reset(self) -> None:
        """Forget the sequence: the next ``extend`` starts at slot 0."""
        self._truncate(0)

    def _truncate(self, length: int) -> None:
        self.length = length
        self._ids = self._ids[:length]
        self._decode_start = length
        with self._on_stream(after_caller=True):  # after any step still queued from the last reply
            self.mask[:, length:] = float("-inf")
            self.counters.fill_(length)

    def cached_ids(self) -> list[int]:
        """The token ids whose K/V the cache holds, slot by slot."""
        if len(self._ids) < self.length:  # tokens fed by decode steps: their host copies, once the device is done
            if self.stream is not None:
                self.stream.synchronize()
            start = len(self._ids) - self._decode_start
            self._ids += self.host_tokens[start:self.length - self._decode_start].tolist()
        return self._ids

    def reuse_prefix(self, ids: torch.Tensor) -> int:
        """Keep the cached slots whose tokens begin ``ids`` [1, T], forget the others; returns how many are kept
        (at most T - 1: the last id is fed again, for the logits). ``extend`` then takes ``ids[:, kept:]``."""
        cached, new = self.cached_ids(), ids[0].tolist()
        kept, limit = 0, min(len(cached), len(new) - 1)
        while kept < limit and cached[kept] == new[kept]:
            kept += 1
        self._truncate(kept)
        return kept

    @torch.inference_mode()
    def extend(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids [1, T] at slots length..length+T-1 (a prompt, or a slice of one): fp32 logits of the last one [V].
        Eager: T varies."""
        start, T = self.length, ids.shape[1]
        if start + T > self.max_seq_len:
            raise ValueError(f"{start + T} tokens do not fit the static cache of {self.max_seq_len} (llm.max_seq_len)")
        self._ids = self.cached_ids() + ids[0].tolist()
        self._decode_start = start + T
        with self._on_stream(after_caller=True):
            positions = torch.arange(start, start + T, device=self.device)  # [T]: RoPE positions = cache slots
            x = F.embedding(ids.to(self.device), self.w.embed)  # [1, T, D]
            mask = causal_mask(T, self.w.shape.group, self.device, start)  # [G T, start + T] bool
            hidden = self._layers(x, self.rope.rotations(positions), positions, start + T, mask)  # [1, D]
            self.mask[:, start:start + T] = 0.0
            self.counters.fill_(start + T)
            self.length = start + T
            return F.linear(hidden, self.w.lm_head)[0].float()  # [V]

    def step(self, kv_len: int, temperature: float) -> None:
        """One token: ``token`` at ``position`` -> its K/V at ``cache_slot`` -> the next ``token``; counters + 1.
        Reads and writes only static buffers: eager calls and graph replays are the same code."""
        x = F.embedding(self.token, self.w.embed).unsqueeze(0)  # [1, 1, D]
        self.mask.index_fill_(1, self.cache_slot, 0.0)  # the slot written now becomes visible to all layers
        rotations = self.rope.rotations(self.position)  # [1, d, d]
        hidden = self._layers(x, rotations, self.cache_slot, kv_len, self.mask[:, :kv_len])  # [1, D]
        logits = F.linear(hidden, self.w.lm_head)[0].float()  # [V]
        self.token.copy_(select_token(logits, temperature > 0, temperature, 0, 1.0))  # [1]
        self.counters.add_(1)

    # -- graphs --------------------------------------------------------------------------------------------------
    def capture(self, temperature: float) -> None:
        """Capture the step of every key bucket at ``temperature`` (no-op when eager or done). Costs a few steps
        each, and forgets the cached conversation (the warm-up steps write the first slots): call it between
        conversations, e.g. at start-up."""
        missing = [n for n in self.key_buckets if (n, temperature) not in self._graphs] if self.use_graphs else []
        if not missing:
            return
        if self._pool is None:
            self._pool = GraphPool()
        with torch.inference_mode():
            for kv_len in missing:
                self.reset()  # the warm-up calls advance the counters and write slot 0..: harmless, then reset
                self.stream.synchronize()  # the reset is on the decoder's stream; the capture starts from here
                self._graphs[kv_len, temperature] = self._pool.capture(lambda n=kv_len: self.step(n, temperature))
        self.reset()
        log.info("LLM: captured %d decode graphs (%.2f s)", len(self._graphs), self._pool.capture_seconds)

    def _run_step(self, temperature: float) -> None:
        kv_len = next(size for size in self.key_buckets if size > self.length)
        graph = self._graphs.get((kv_len, temperature))  # None when eager, or not captured at this temperature
        if graph is not None:
            graph.replay()
        else:
            self.step(kv_len, temperature)
        self.length += 1

    # -- the loop ------------------------------------------------------------------------------------------------
    def _on_stream(self, after_caller: bool = False):
        """The decoder's CUDA stream as a context (nothing on a CPU). ``after_caller``: first wait for the work queued
        on the caller's stream (inputs made there); decode steps do not, so they never wait behind the TTS stage's
        work on the default stream."""
        if self.stream is None:
            return contextlib.nullcontext()
        if after_caller:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self.stream)

    def _queue_read(self, index: int) -> torch.cuda.Event | None:
        """Copy ``token`` to host slot ``index`` behind the queued work; an event to wait for (None on a CPU)."""
        self.host_tokens[index].copy_(self.token[0], non_blocking=self.use_graphs)
        if self.stream is None:
            return None
        done = torch.cuda.Event()
        done.record(self.stream)
        return done

    @torch.inference_mode()
    def decode(self, logits: torch.Tensor, max_new_tokens: int, temperature: float, eos_ids: set[int],
               should_stop: Callable[[], bool] = lambda: False) -> Iterator[int]:
        """Token ids after ``extend`` (whose logits [V] give the first one), without the end token: at most
        ``max_new_tokens`` ids (the end token counted), fewer if the cache fills or ``should_stop()`` says so
        (asked after each id)."""
        if max_new_tokens < 1:
            return
        ahead = 0 if self.stream is None else 1  # steps queued before a token is looked at (none on a CPU: a step
        with self._on_stream():  # there is not asynchronous, it would only delay the token)
            self.token.copy_(select_token(logits, temperature > 0, temperature, 0, 1.0))  # [1]
            pending = deque([(0, self._queue_read(0))])
            made = 1
        while True:
            while made < max_new_tokens and self.length < self.max_seq_len and len(pending) <= ahead:
                with self._on_stream():
                    self._run_step(temperature)
                    pending.append((made, self._queue_read(made)))
                made += 1
            if not pending:
                return
            index, done = pending.popleft()
            if done is not None:
                done.synchronize()
            token = int(self.host_tokens[index])
            if token in eos_ids:
                return
            yield token
            if should_stop():
                return
