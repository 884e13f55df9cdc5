"""Token selection on the device, written so that it can run inside a CUDA graph.

Talker (codebook 0, vocab V = 3072) follows the order of the reference's Hugging Face generate, on fp32 logits:
repetition penalty over the codebook-0 ids generated so far (also when greedy) -> EOS masked until
``min_new_tokens`` ids exist -> suppress [V-1024, V) except EOS -> temperature -> top-k -> top-p -> sample.
The code predictor (15 residual codebooks, vocab 2048) uses only temperature / top-k / top-p (``subtalker_*``).

Strategy: sampling parameters are Python constants baked into the captured step (a change of parameters means
another capture, cached by ``options.SamplingParams.graph_key``); everything that changes per step (generated-id mask,
number of generated ids) is a device tensor. Sampling draws by the Gumbel-max trick on the top-k logits (the same
distribution as ``torch.multinomial``, see ``select_token``), which needs no host sync and uses the default
generator, the one RNG that CUDA graph capture handles on torch 2.5.
"""

from __future__ import annotations

import torch

TALKER_MIN_NEW_TOKENS = 2
"""The reference always passes ``min_new_tokens=2`` to the talker's generate."""


def candidates(vocab_size: int, top_k: int) -> int:
    """How many logits the sampler draws among: k with top-k, else the whole vocabulary."""
    return top_k if 0 < top_k < vocab_size else vocab_size


def log_exponential(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """log E, E ~ Exp(1) i.i.d., fp32 [shape] (minus a standard Gumbel draw), from the default generator."""
    return torch.empty(shape, dtype=torch.float32, device=device).exponential_().log_()


def select_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
                 log_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy or sampled id from ``logits`` [V] (any float dtype) -> LongTensor [1] (HF warper order, no host sync).

    Sampling works on the k largest logits only (``topk``, unsorted unless top-p needs the order) and draws by the
    Gumbel-max trick: argmax(l / T - log E), E ~ Exp(1) i.i.d., is distributed as softmax(l / T), the same
    distribution as ``torch.multinomial``. It is computed as argmax(l - T log E) (T > 0 does not move the argmax),
    so the temperature costs no kernel: 4 kernels with top-k and ``log_noise`` (log E [candidates(V, top_k)],
    e.g. drawn for several tokens at once by ``log_exponential``), 6 when drawing here. Unlike HF's top-k, logits
    tied with the k-th largest are not kept as well (exact ties do not occur in practice).
    """
    if not do_sample:
        return logits.argmax(-1, keepdim=True)  # [1]; first maximum, as HF greedy
    values, ids = logits, None
    if 0 < top_k < logits.shape[-1]:
        values, ids = torch.topk(logits, top_k, sorted=top_p < 1.0)  # [k] each (descending if sorted)
    if top_p < 1.0:
        if ids is None:
            values, ids = torch.sort(logits, descending=True)  # [V]
        probs = (values.float() / temperature).softmax(-1)  # [k]
        ranked_above = probs.cumsum(-1) - probs  # [k] probability mass of the more likely ids
        values = values.masked_fill(ranked_above >= top_p, float("-inf"))  # HF's rule; the first id always stays
    if log_noise is None:
        log_noise = log_exponential(values.shape, values.device)  # [k]
    scores = torch.add(values, log_noise, alpha=-temperature)  # [k] fp32: T * (l / T + Gumbel)
    winner = scores.argmax(-1, keepdim=True)  # [1]
    return winner if ids is None else ids.index_select(0, winner)  # [1] vocabulary id


class TalkerLogitsProcessor:
    """The talker's logits processors (penalty, min-new-tokens, suppression) on static device buffers.

    ``generated`` [V] bool marks codebook-0 ids sampled so far; ``min_new_tokens`` [1] long can be raised (e.g. to
    block EOS for benchmarks) without a new capture. Suppression and the EOS block are additive rows (0 / -inf,
    so kept logits are unchanged bit for bit): ``bias[0]`` with EOS allowed, ``bias[1]`` with EOS blocked.
    """

    def __init__(self, vocab_size: int, eos_id: int, device: torch.device) -> None:
        self.eos_id = eos_id
        self.generated = torch.zeros(vocab_size, dtype=torch.bool, device=device)  # [V]
        self.min_new_tokens = torch.full((1,), TALKER_MIN_NEW_TOKENS, dtype=torch.long, device=device)  # [1]
        ids = torch.arange(vocab_size, device=device)  # [V]
        suppressed = (ids >= vocab_size - 1024) & (ids != eos_id)  # [V]
        self.bias = torch.zeros(2, vocab_size, device=device)  # [2, V] fp32
        self.bias.masked_fill_(torch.stack((suppressed, suppressed | (ids == eos_id))), float("-inf"))

    def reset(self, min_new_tokens: int = TALKER_MIN_NEW_TOKENS) -> None:
        self.generated.zero_()
        self.min_new_tokens.fill_(min_new_tokens)

    def __call__(self, logits: torch.Tensor, n_generated: torch.Tensor, penalty: float) -> torch.Tensor:
        """fp32 ``logits`` [V], ``n_generated`` [1] long (ids sampled before this one) -> processed logits [V]."""
        if penalty != 1.0:
            penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # [V]
            logits = torch.where(self.generated, penalised, logits)
        eos_blocked = n_generated < self.min_new_tokens  # [1]
        return logits + torch.where(eos_blocked, self.bias[1], self.bias[0])  # [V]

    def record(self, token: torch.Tensor) -> None:
        """Mark ``token`` [1] as generated (in place: safe inside a graph)."""
        self.generated.index_fill_(0, token, True)
