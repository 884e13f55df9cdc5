"""The language model stage: Transcript -> TextChunk ... -> TurnEnd, streamed token by token.

``ChatModel`` wraps a transformers causal LM (a model directory, a hub name, or a GGUF file that transformers
dequantizes) and its tokenizer. ``generate_ids`` is a manual decode loop over a ``DynamicCache``: one forward
pass per token, greedy or temperature sampling, and a ``should_stop`` check before every step, so a stop request
or a closed turn ends generation within one step (tens of milliseconds). The prompt is fed in slices sized to take
about ``PREFILL_SLICE_S`` each, with the same check between slices, so a long prompt can be stopped too, and the
handler counts each slice as progress (the hang detector does not mistake a long prefill for a hang).
``stream_text`` turns the ids into text deltas (a token that ends inside a UTF-8 character waits for the next one).
Models of the families ``s2s.llm_decode`` runs (Llama/SmolLM, Mistral, Qwen2/2.5, Qwen3) take its static-cache
decode instead (``llm.decode = "auto"``: CUDA graphs on a GPU, the same code eagerly on a CPU), with the same prompt
slices and checks; a conversation longer than its cache (``llm.max_seq_len``) takes the loop above.

``LLMHandler`` builds the chat prompt (system prompt, the last ``max_history_turns`` exchanges, the user's words),
cuts the streamed text into speakable chunks with ``s2s.text_chunker`` and emits each chunk as soon as it is
complete. An exchange joins the history only once its turn has ended without an error (checked in the turn
records when the next prompt is built), so a reply that was never heard is not remembered; a reply the user
interrupted (full duplex) joins it as far as it was played, marked with ``INTERRUPTED`` so that the model knows.
The prompt must leave ``max_new_tokens`` of the model's context for the reply: the oldest exchanges are dropped
until it does, and words that do not fit even alone fail the turn with a message saying how much shorter they must
be.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from s2s.causal_lm import cache_argument, load_causal_lm
from s2s.config import LLMConfig
from s2s.devices import resolve_device, torch_dtype
from s2s.handler import Handler
from s2s.llm_decode import StaticDecoder, unsupported
from s2s.messages import TextChunk, Transcript, TurnEnd, TurnFailed
from s2s.models import llm_model
from s2s.text_chunker import TextChunker

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Message = dict[str, str]
"""A chat message: {"role": "system" | "user" | "assistant", "content": text}."""

INTERRUPTED = "[interrupted by the user]"
"""Ends the history's copy of a reply the user talked over, after the words that were played."""
SMALL_LLM_PARAMS = 1_000_000_000
"""With ``llm.max_history_turns = -1`` (auto) a model of fewer parameters keeps no chat history, a larger one
``AUTO_HISTORY_TURNS`` exchanges: SmolLM2-135M answers every later question with one of its earlier replies once
a few of them are in the prompt (bench/results/2026-12-02-history-cpu.md)."""
AUTO_HISTORY_TURNS = 4
PREFILL_SLICE_S = 0.25
"""About how long one prompt slice may take (s): a stop request is seen, and progress reported, this often."""
PREFILL_SLICE_TOKENS = (16, 128, 4096)
"""(smallest, first, largest) slice in tokens; after each full slice the next is sized from the measured speed."""


def static_decoder(model: torch.nn.Module, cfg: LLMConfig) -> StaticDecoder | None:
    """The static-cache decode of a loaded model (``llm.decode = "auto"``), or None: the transformers loop. It
    shares the model's weights (the model stays usable for conversations longer than its cache)."""
    if cfg.decode == "transformers":
        return None
    reason = unsupported(model)
    if reason is not None:
        log.info("LLM: the transformers decode loop (the static decode does not run this model: %s)", reason)
        return None
    decoder = StaticDecoder(model, cfg.max_seq_len, cfg.enforce_eager, share_weights=True)
    log.info("LLM: static decode, %d-token cache, %s", cfg.max_seq_len,
             "CUDA graphs" if decoder.use_graphs else "eager")
    return decoder


class PromptTooLong(ValueError):
    """The user's words alone leave no room for the reply in the model's context."""


class ChatModel:
    """A causal LM and its tokenizer: chat messages -> streamed reply text."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, device: torch.device | str = "cpu",
        decoder: StaticDecoder | None = None,
    ) -> None:
        self.model = model.eval()
        self.decoder = decoder
        """The static-cache decode of ``model`` (s2s.llm_decode), or None for the transformers loop."""
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the LLM's tokenizer has no chat template; set llm.model to an instruct (chat) model")
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(i) for i in [*eos_ids, tokenizer.eos_token_id] if i is not None}
        """Any of these ends the reply (instruct models often list several, e.g. <|im_end|> and <|endoftext|>)."""
        self.prefill_tokens = PREFILL_SLICE_TOKENS[1]
        """Prompt tokens per forward pass, learnt from the speed of the last full slice."""
        self.cache_argument = cache_argument(self.model)
        """The forward's K/V cache argument (``s2s.causal_lm.cache_argument``)."""

    @classmethod
    def load(cls, cfg: LLMConfig) -> ChatModel:
        """Load ``llm.model`` (see s2s.models.llm_model) on the configured device."""
        path, gguf_file = llm_model(cfg)
        device = resolve_device("llm", cfg.device)
        model, tokenizer = load_causal_lm(path, gguf_file, device, torch_dtype(cfg.dtype, device))
        return cls(model, tokenizer, device, static_decoder(model, cfg))

    @property
    def context_tokens(self) -> int | None:
        """Tokens the model attends to, prompt and reply together (``config.max_position_embeddings``); None if
        the model does not say."""
        value = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return int(value) if value else None

    def prompt_ids(self, messages: list[Message]) -> torch.Tensor:
        """The chat template applied to ``messages``, ending with the assistant's turn: [1, T] token ids."""
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)  # transformers 5 returns a dict either way
        return encoded["input_ids"].to(self.device)  # [1, T]

    @torch.inference_mode()
    def generate_ids(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[int]:
        """Token ids of the reply to ``input_ids`` [1, T], one per forward pass, without the end token."""
        if self.decoder is not None and input_ids.shape[1] + max_new_tokens <= self.decoder.max_seq_len:
            yield from self._static_ids(input_ids, max_new_tokens, temperature, should_stop)
            return
        from transformers import DynamicCache

        cache = DynamicCache()
        step_ids = input_ids  # [1, T] for the prompt, then [1, 1]
        for _ in range(max_new_tokens):
            if should_stop():
                return
            logits = self.feed(step_ids, cache, should_stop)  # [1, vocab]
            if logits is None:
                return  # stopped between prompt slices
            if temperature > 0:
                next_id = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1)  # [1, 1]
            else:
                next_id = logits.argmax(dim=-1, keepdim=True)  # [1, 1]
            token = int(next_id)
            if token in self.eos_ids:
                return
            yield token
            step_ids = next_id

    def _static_ids(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float,
                    should_stop: Callable[[], bool]) -> Iterator[int]:
        """``generate_ids`` on the static decoder: the part of the prompt its cache does not hold yet (the last
        conversation's slots are reused as far as the prompt repeats it), in the same slices, then its steps."""
        if should_stop():
            return
        self.decoder.capture(temperature)  # done at start-up for llm.temperature; another one is captured now
        kept = self.decoder.reuse_prefix(input_ids)
        logits = self.feed(input_ids[:, kept:], self.decoder, should_stop)  # [1, vocab]
        if logits is not None:
            yield from self.decoder.decode(logits[0], max_new_tokens, temperature, self.eos_ids, should_stop)

    def warmup(self, messages: list[Message], temperature: float = 0.0) -> None:
        """A few tokens at ``temperature``: allocator, kernels, first-call overheads, and the decode graphs."""
        for _ in self.stream_text(messages, max_new_tokens=4, temperature=temperature):
            pass

    def feed(
        self, ids: torch.Tensor, cache: object, should_stop: Callable[[], bool] = lambda: False
    ) -> torch.Tensor | None:
        """Run ``ids`` [1, T] through the model into ``cache`` (a transformers cache, or the static decoder), in
        slices of ``prefill_tokens`` with a ``should_stop`` check between them. The float logits at the last
        position [1, vocab], or None if stopped."""
        low, _, high = PREFILL_SLICE_TOKENS
        start, total = 0, ids.shape[1]
        while True:
            size = min(self.prefill_tokens, total - start)
            t0 = time.monotonic()
            if isinstance(cache, StaticDecoder):
                logits = cache.extend(ids[:, start:start + size]).unsqueeze(0)  # [1, vocab]
            else:
                logits = self.model(input_ids=ids[:, start:start + size], **{self.cache_argument: cache},
                                    use_cache=True, logits_to_keep=1).logits[:, -1, :]  # [1, vocab]
            start += size
            if size == self.prefill_tokens:  # a full slice measures the speed: the next ones take PREFILL_SLICE_S
                rate = size / max(time.monotonic() - t0, 1e-3)  # tokens/s
                self.prefill_tokens = int(min(max(rate * PREFILL_SLICE_S, low), high))
            if start >= total:
                return logits.float()  # [1, vocab]
            if should_stop():
                return None

    def stream_text(
        self,
        messages: list[Message],
        max_new_tokens: int,
        temperature: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[str]:
        """The reply to ``messages`` as text deltas, as the tokens are generated."""
        ids: list[int] = []
        text = ""
        for token in self.generate_ids(self.prompt_ids(messages), max_new_tokens, temperature, should_stop):
            ids.append(token)
            # Decoding the whole reply each step keeps multi-token characters and merges right; replies are short.
            decoded = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            if decoded.endswith("\ufffd") or not decoded.startswith(text):
                continue  # inside a multi-byte character: wait for the token that completes it
            if len(decoded) > len(text):
                yield decoded[len(text):]
                text = decoded


class LLMHandler(Handler):
    """Transcript -> TextChunk (index 0, 1, ...) -> TurnEnd; marks ``llm_first_token`` and ``first_text_chunk``."""

    name = "llm"
    cfg: LLMConfig
    chat_model: ChatModel | None = None
    """Injected for tests; loaded by ``setup`` otherwise."""
    history: deque[tuple[str, str]]
    """(user, assistant) exchanges of turns that ended without an error, oldest first."""
    _unconfirmed: tuple[int, str, str] | None = None
    """(turn id, user, assistant) of the last reply, until its turn is known to have ended well."""

    def setup(self) -> None:
        if self.chat_model is None:
            self.chat_model = ChatModel.load(self.cfg)
        self.history = deque(maxlen=self.history_turns())
        self.chat_model.warmup(self.build_messages("Hello."), self.cfg.temperature)

    def history_turns(self) -> int:
        """``llm.max_history_turns``, or for -1 (auto) the number that suits the model's size."""
        if self.cfg.max_history_turns >= 0:
            return self.cfg.max_history_turns
        params = sum(p.numel() for p in self.chat_model.model.parameters())
        turns = 0 if params < SMALL_LLM_PARAMS else AUTO_HISTORY_TURNS
        log.info("LLM: %.2fB parameters: %d exchanges of chat history (llm.max_history_turns = -1, auto)",
                 params / 1e9, turns)
        return turns

    def build_messages(self, user_text: str) -> list[Message]:
        """System prompt, the remembered exchanges (the newest that fit: see ``prompt_limit``), and the user's
        words. Raises PromptTooLong when the words do not fit even without any history."""
        self._confirm_last_reply()
        system = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        exchanges = [[{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
                     for user, assistant in self.history]
        question = [{"role": "user", "content": user_text}]
        limit = self.prompt_limit()
        while True:
            messages = system + [m for exchange in exchanges for m in exchange] + question
            if limit is None:
                return messages
            length = self.chat_model.prompt_ids(messages).shape[1]
            if length <= limit:
                return messages
            if not exchanges:
                break
            exchanges.pop(0)
            log.info("LLM: the prompt is %d tokens, more than the %d that leave room for the reply; dropped the "
                     "oldest exchange from the history", length, limit)
        context = self.chat_model.context_tokens
        raise PromptTooLong(
            f"the text is too long for the LLM: the prompt is {length:,} tokens, but only {limit:,} fit "
            f"({context:,} of model context less llm.max_new_tokens={self.cfg.max_new_tokens} for the reply); "
            f"shorten it to about {max(len(user_text) * limit // length, 0):,} characters or less"
        )

    def prompt_limit(self) -> int | None:
        """The most prompt tokens that leave ``max_new_tokens`` for the reply; None if the context is unknown."""
        context = self.chat_model.context_tokens
        return None if context is None else context - self.cfg.max_new_tokens

    def process(self, item: object) -> Iterator[object]:
        if not isinstance(item, Transcript):
            raise TypeError(f"the LLM stage takes Transcript items, not {type(item).__name__}")
        turn_id = item.turn_id
        if not item.text.strip():
            yield TurnEnd(turn_id)
            return
        assert self.chat_model is not None, "LLMHandler.setup() was not called"

        def should_stop() -> bool:
            self.last_progress = time.monotonic()  # asked between forward passes (prompt slices, tokens): progress
            return self.stop_event.is_set() or not self.turns.is_open(turn_id)

        try:
            messages = self.build_messages(item.text)
        except PromptTooLong as exc:
            log.warning("LLM: turn %d: %s", turn_id, exc)
            yield TurnFailed(turn_id=turn_id, stage=self.name, error=str(exc))
            return
        chunker = TextChunker(self.cfg.min_chunk_chars, self.cfg.first_chunk_words)
        reply: list[str] = []
        index = 0
        deltas = self.chat_model.stream_text(messages, self.cfg.max_new_tokens, self.cfg.temperature, should_stop)
        for delta in deltas:
            if not reply:
                self.turns.mark(turn_id, "llm_first_token")
            reply.append(delta)
            for text in chunker(delta):
                yield self._chunk(item, text, index)
                index += 1
        if self.stop_event.is_set():
            return
        if not self.turns.is_open(turn_id):
            log.info("LLM: turn %d closed during generation; the rest of the reply is dropped", turn_id)
            self._unconfirmed = (turn_id, item.text, "".join(reply).strip())  # interrupted: what was played counts
            yield TurnEnd(turn_id)
            return
        for text in chunker.flush():
            yield self._chunk(item, text, index)
            index += 1
        answer = "".join(reply).strip()
        log.info("LLM: turn %d: %r", turn_id, answer)
        if index == 0:
            log.warning("LLM: turn %d: the reply has nothing speakable (%r): no audio for this turn", turn_id, answer)
        self._unconfirmed = (turn_id, item.text, answer)
        yield TurnEnd(turn_id)

    def _chunk(self, item: Transcript, text: str, index: int) -> TextChunk:
        if index == 0:
            self.turns.mark(item.turn_id, "first_text_chunk")
        return TextChunk(turn_id=item.turn_id, text=text, language=item.language, index=index)

    def _confirm_last_reply(self) -> None:
        """Move the last reply into the history if its turn ended without an error (or is still playing)."""
        if self._unconfirmed is None:
            return
        turn_id, user, assistant = self._unconfirmed
        heard = self.turns.heard(turn_id)
        if heard is not None or self.turns.interrupted(turn_id):  # the sink may not have ended it yet: none heard
            self.history.append((user, f"{heard} {INTERRUPTED}" if heard else INTERRUPTED))
            if self.history.maxlen:
                log.info("LLM: turn %d was interrupted; the history keeps what was played: %r", turn_id, heard or "")
            self._unconfirmed = None
            return
        record = next((r for r in reversed(self.turns.records) if r["turn"] == turn_id), None)
        if record is not None and record.get("retracted"):
            log.info("LLM: turn %d was taken back (the user spoke on); its exchange is left out", turn_id)
            self._unconfirmed = None
            return
        ended_well = record["error"] is None if record is not None else self.turns.is_open(turn_id)
        if ended_well and assistant:
            self.history.append((user, assistant))
        elif not ended_well:
            log.info("LLM: turn %d failed; its exchange is left out of the history", turn_id)
        self._unconfirmed = None
