"""Token selection on the device, written so that it can run inside a CUDA graph.

Talker (codebook 0, vocab V = 3072) follows the order of the reference's Hugging Face generate, on fp32 logits:
repetition penalty over the codebook-0 ids generated so far (also when greedy) -> EOS masked until
``min_new_tokens`` ids exist -> suppress [V-1024, V) except EOS -> temperature -> top-k -> top-p -> sample.
The code predictor (15 residual codebooks, vocab 2048) uses only temperature / top-k / top-p (``subtalker_*``).

Strategy: sampling parameters are Python constants baked into the captured step (a change of parameters means
another capture, cached by ``SamplingParams.graph_key``); everything that changes per step (generated-id mask,
number of generated ids) is a device tensor. Sampling draws ``argmax(p / E)`` with ``E ~ Exp(1)`` (the same
distribution as ``torch.multinomial``), which needs no host sync and uses the default generator, the one RNG
that CUDA graph capture handles on torch 2.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TALKER_MIN_NEW_TOKENS = 2
"""The reference always passes ``min_new_tokens=2`` to the talker's generate."""


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; field names and defaults follow the reference's ``generation_config.json``."""

    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    seed: int | None = None
    """Reseeds torch's default generators before a generation (reproducible output); None leaves them as they are."""

    def __post_init__(self) -> None:
        for name in ("temperature", "subtalker_temperature", "repetition_penalty"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SamplingParams.{name} must be > 0, got {getattr(self, name)}")
        for name in ("top_p", "subtalker_top_p"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"SamplingParams.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("top_k", "subtalker_top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"SamplingParams.{name} must be >= 0 (0 = off), got {getattr(self, name)}")

    @classmethod
    def greedy(cls) -> "SamplingParams":
        """Argmax for both the talker and the code predictor (repetition penalty stays on, as in the reference)."""
        return cls(do_sample=False, subtalker_do_sample=False)

    @property
    def graph_key(self) -> tuple:
        """Everything a captured step depends on (the seed is not: it only sets the generator state)."""
        return (self.do_sample, self.temperature, self.top_k, self.top_p, self.repetition_penalty,
                self.subtalker_do_sample, self.subtalker_temperature, self.subtalker_top_k, self.subtalker_top_p)


def select_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Greedy or sampled id from fp32 ``logits`` [V] -> LongTensor [1] (HF warper semantics, no host sync)."""
    if not do_sample:
        return logits.argmax(-1, keepdim=True)  # [1]; first maximum, as HF greedy
    if temperature != 1.0:
        logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[-1:]  # [1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits)  # ascending, [V]
        cumulative = sorted_logits.softmax(-1).cumsum(-1)  # [V]
        drop_sorted = cumulative <= (1.0 - top_p)
        drop_sorted[-1] = False  # keep at least the most likely id
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)  # [V] back in vocab order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)  # [V]
    race = torch.empty_like(probs).exponential_(1.0)  # [V]; argmax(p / Exp(1)) ~ Categorical(p)
    return (probs / race).argmax(-1, keepdim=True)  # [1]


class TalkerLogitsProcessor:
    """The talker's logits processors (penalty, min-new-tokens, suppression) on static device buffers.

    ``generated`` [V] bool marks codebook-0 ids sampled so far; ``min_new_tokens`` [1] long can be raised (e.g. to
    block EOS for benchmarks) without a new capture.
    """

    def __init__(self, vocab_size: int, eos_id: int, device: torch.device) -> None:
        self.eos_id = eos_id
        self.generated = torch.zeros(vocab_size, dtype=torch.bool, device=device)  # [V]
        self.min_new_tokens = torch.full((1,), TALKER_MIN_NEW_TOKENS, dtype=torch.long, device=device)  # [1]
        ids = torch.arange(vocab_size, device=device)  # [V]
        self.suppressed = (ids >= vocab_size - 1024) & (ids != eos_id)  # [V]
        self.is_eos = ids == eos_id  # [V]

    def reset(self, min_new_tokens: int = TALKER_MIN_NEW_TOKENS) -> None:
        self.generated.zero_()
        self.min_new_tokens.fill_(min_new_tokens)

    def __call__(self, logits: torch.Tensor, n_generated: torch.Tensor, penalty: float) -> torch.Tensor:
        """fp32 ``logits`` [V], ``n_generated`` [1] long (ids sampled before this one) -> processed logits [V]."""
        if penalty != 1.0:
            penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # [V]
            logits = torch.where(self.generated, penalised, logits)
        block_eos = self.is_eos & (n_generated < self.min_new_tokens)  # [V]
        return logits.masked_fill(block_eos | self.suppressed, float("-inf"))

    def record(self, token: torch.Tensor) -> None:
        """Mark ``token`` [1] as generated (in place: safe inside a graph)."""
        self.generated.index_fill_(0, token, True)
