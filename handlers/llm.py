"""The language model stage: Transcript -> TextChunk ... -> TurnEnd, streamed token by token.

``ChatModel`` wraps a transformers causal LM (a model directory, a hub name, or a GGUF file that transformers
dequantizes) and its tokenizer. ``generate_ids`` is a manual decode loop over a ``DynamicCache``: one forward
pass per token, greedy or temperature sampling, and a ``should_stop`` check before every step, so a stop request
or a closed turn ends generation within one step (tens of milliseconds). ``stream_text`` turns the ids into text
deltas (a token that ends inside a UTF-8 character waits for the next one).

``LLMHandler`` builds the chat prompt (system prompt, the last ``max_history_turns`` exchanges, the user's words),
cuts the streamed text into speakable chunks with ``s2s.text_chunker`` and emits each chunk as soon as it is
complete. An exchange joins the history only once its turn has ended without an error (checked in the turn
records when the next prompt is built), so a reply that was never heard is not remembered.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from s2s.config import LLMConfig
from s2s.handler import Handler
from s2s.messages import TextChunk, Transcript, TurnEnd, TurnFailed
from s2s.models import gguf_conversion_dir, llm_model
from s2s.text_chunker import TextChunker
from s2s.turns import Turns

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Message = dict[str, str]
"""A chat message: {"role": "system" | "user" | "assistant", "content": text}."""


def resolve_device(cfg: LLMConfig) -> tuple[torch.device, torch.dtype]:
    """(device, dtype): auto = CUDA when available (bfloat16, else float16), else CPU float32."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("llm.device = 'cuda' but torch sees no CUDA device; install a CUDA build of torch "
                           "(JetPack wheel on a Jetson, see JETSON_SETUP.md) or set llm.device = 'auto'")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if cfg.dtype != "auto":
        return device, getattr(torch, cfg.dtype)
    if not use_cuda:
        return device, torch.float32
    return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def save_conversion(model, tokenizer, folder: Path) -> None:
    """Keep a dequantized GGUF model as a plain transformers folder so later starts skip the conversion."""
    staging = folder.with_name(folder.name + ".partial")
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.replace(folder)
    except OSError as exc:
        log.warning("LLM: could not cache the converted model in %s (%s); the next start converts again", folder, exc)
    else:
        log.info("LLM: converted model cached in %s", folder)


class ChatModel:
    """A causal LM and its tokenizer: chat messages -> streamed reply text."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, device: torch.device | str = "cpu"
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the LLM's tokenizer has no chat template; set llm.model to an instruct (chat) model")
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(i) for i in [*eos_ids, tokenizer.eos_token_id] if i is not None}
        """Any of these ends the reply (instruct models often list several, e.g. <|im_end|> and <|endoftext|>)."""

    @classmethod
    def load(cls, cfg: LLMConfig) -> ChatModel:
        """Load ``llm.model`` (see s2s.models.llm_model) on the configured device."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path, gguf_file = llm_model(cfg)
        device, dtype = resolve_device(cfg)
        converted = gguf_conversion_dir(path, gguf_file) if gguf_file else None
        if converted is not None and (converted / "config.json").is_file():
            path, gguf_file = str(converted), None
        source = f"{path}/{gguf_file} (GGUF: dequantizing once, then cached)" if gguf_file else path
        log.info("LLM: loading %s on %s (%s)", source, device, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=dtype)
        if gguf_file and converted is not None:
            save_conversion(model, tokenizer, converted)
        return cls(model.to(device), tokenizer, device)

    def prompt_ids(self, messages: list[Message]) -> torch.Tensor:
        """The chat template applied to ``messages``, ending with the assistant's turn: [1, T] token ids."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        return ids.to(self.device)  # [1, T]

    @torch.inference_mode()
    def generate_ids(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[int]:
        """Token ids of the reply to ``input_ids`` [1, T], one per forward pass, without the end token."""
        from transformers import DynamicCache

        cache = DynamicCache()
        step_ids = input_ids  # [1, T] for the prompt, then [1, 1]
        for _ in range(max_new_tokens):
            if should_stop():
                return
            out = self.model(input_ids=step_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1, :].float()  # [1, vocab]
            if temperature > 0:
                next_id = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1)  # [1, 1]
            else:
                next_id = logits.argmax(dim=-1, keepdim=True)  # [1, 1]
            token = int(next_id)
            if token in self.eos_ids:
                return
            yield token
            step_ids = next_id

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

    def __init__(
        self,
        cfg: LLMConfig,
        turns: Turns,
        in_queue: queue.Queue | None,
        out_queue: queue.Queue | None,
        stop_event: threading.Event,
        poll_s: float = 0.1,
        chat_model: ChatModel | None = None,
    ) -> None:
        super().__init__(in_queue, out_queue, stop_event, poll_s)
        self.cfg = cfg
        self.turns = turns
        self.chat_model = chat_model
        """Injected for tests; loaded by ``setup`` otherwise."""
        self.history: deque[tuple[str, str]] = deque(maxlen=cfg.max_history_turns)
        """(user, assistant) exchanges of turns that ended without an error, oldest first."""
        self._unconfirmed: tuple[int, str, str] | None = None
        """(turn id, user, assistant) of the last reply, until its turn is known to have ended well."""

    def setup(self) -> None:
        if self.chat_model is None:
            self.chat_model = ChatModel.load(self.cfg)
        for _ in self.chat_model.stream_text(self.build_messages("Hello."), max_new_tokens=4):
            pass  # warm-up: allocator, kernels, first-call overheads

    def build_messages(self, user_text: str) -> list[Message]:
        """System prompt, the remembered exchanges, and the user's words."""
        self._confirm_last_reply()
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        for user, assistant in self.history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": user_text})
        return messages

    def process(self, item: object) -> Iterator[object]:
        if isinstance(item, (TurnEnd, TurnFailed)):
            yield item
            return
        if not isinstance(item, Transcript):
            raise TypeError(f"the LLM stage takes Transcript items, not {type(item).__name__}")
        turn_id = item.turn_id
        if not self.turns.is_open(turn_id):
            log.debug("LLM: turn %d is closed; transcript dropped", turn_id)
            return
        if not item.text.strip():
            yield TurnEnd(turn_id)
            return
        assert self.chat_model is not None, "LLMHandler.setup() was not called"

        def should_stop() -> bool:
            return self.stop_event.is_set() or not self.turns.is_open(turn_id)

        chunker = TextChunker(self.cfg.min_chunk_chars)
        reply: list[str] = []
        index = 0
        deltas = self.chat_model.stream_text(
            self.build_messages(item.text), self.cfg.max_new_tokens, self.cfg.temperature, should_stop
        )
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
            yield TurnEnd(turn_id)
            return
        for text in chunker.flush():
            yield self._chunk(item, text, index)
            index += 1
        answer = "".join(reply).strip()
        log.info("LLM: turn %d: %r", turn_id, answer)
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
        record = next((r for r in reversed(self.turns.records) if r["turn"] == turn_id), None)
        ended_well = record["error"] is None if record is not None else self.turns.is_open(turn_id)
        if ended_well and assistant:
            self.history.append((user, assistant))
        elif not ended_well:
            log.info("LLM: turn %d failed; its exchange is left out of the history", turn_id)
        self._unconfirmed = None
