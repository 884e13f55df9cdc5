"""LLM limits: the prompt fed in slices (same logits as one pass, stoppable between slices, sized from the measured
speed), a long prefill that is progress and not a hang, a prompt too long for the context, and a reply with
nothing speakable. The tiny random Qwen2 and the scripted model come from test_llm."""

import logging
import time
from types import SimpleNamespace

import torch
from fixtures_models import smollm2_dir  # noqa: F401  (session fixture)
from stage_harness import run_stage, wiring
from test_llm import ScriptedLM, ask, scripted_handler, tiny_qwen2, tokenizer  # noqa: F401  (fixtures)

from handlers import llm
from handlers.llm import ChatModel, LLMHandler
from s2s.config import LLMConfig
from s2s.messages import Transcript, TurnEnd, TurnFailed
from s2s.pipeline import Pipeline
from s2s.turns import Turns


class SlowLM(ScriptedLM):
    """A scripted model whose every forward pass takes ``pass_s``, with a context of ``context`` tokens."""

    def __init__(self, tok, script: str, pass_s: float = 0.0, context: int = 100_000) -> None:
        super().__init__(tok, script)
        self.pass_s = pass_s
        self.config = SimpleNamespace(max_position_embeddings=context)
        self.pass_lengths: list[int] = []

    def forward(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=0):
        self.pass_lengths.append(input_ids.shape[1])
        time.sleep(self.pass_s)
        return super().forward(input_ids, past_key_values, use_cache, logits_to_keep)


def fixed_slices(monkeypatch, tokens: int) -> None:
    monkeypatch.setattr(llm, "PREFILL_SLICE_TOKENS", (tokens, tokens, tokens))


# ---- the prompt in slices ----------------------------------------------------------------------------------------
def test_sliced_prefill_gives_the_logits_of_one_pass(tiny_qwen2, tokenizer, monkeypatch):  # noqa: F811
    from transformers import DynamicCache

    ids = torch.randint(0, len(tokenizer), (1, 53))  # [1, 53]
    whole = ChatModel(tiny_qwen2, tokenizer)
    whole.prefill_tokens = 64
    fixed_slices(monkeypatch, 8)
    sliced = ChatModel(tiny_qwen2, tokenizer)
    sliced.prefill_tokens = 8
    passes = []
    hook = tiny_qwen2.register_forward_hook(lambda *_: passes.append(1))
    try:
        expected = whole.feed(ids, DynamicCache())  # [1, vocab]
        passes.clear()
        got = sliced.feed(ids, DynamicCache())
    finally:
        hook.remove()
    assert len(passes) == 7  # 6 slices of 8 and one of 5
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    prompt = whole.prompt_ids([{"role": "user", "content": "What is the weather like today?"}])
    assert list(sliced.generate_ids(prompt, 12)) == list(whole.generate_ids(prompt, 12))


def test_a_stop_request_is_seen_between_slices(tokenizer, monkeypatch):  # noqa: F811
    fixed_slices(monkeypatch, 8)
    model = SlowLM(tokenizer, "Fine.")
    chat = ChatModel(model, tokenizer)
    checks = []

    def stop_after_two_checks() -> bool:
        checks.append(1)
        return len(checks) > 2

    ids = torch.zeros((1, 80), dtype=torch.long)  # 10 slices
    assert list(chat.generate_ids(ids, 10, should_stop=stop_after_two_checks)) == []
    assert model.pass_lengths == [8, 8]  # before the prompt, after slice 1, after slice 2: stop


def test_the_slice_is_sized_from_the_measured_speed(tokenizer):  # noqa: F811
    first = llm.PREFILL_SLICE_TOKENS[1]
    ids = torch.zeros((1, first + 10), dtype=torch.long)  # one full slice (it measures), then the rest
    slow = ChatModel(SlowLM(tokenizer, "Fine.", pass_s=0.5), tokenizer)
    slow.feed(ids, object())
    # `first` tokens in >= 0.5 s: the next slices take about PREFILL_SLICE_S (fewer tokens on a loaded machine).
    assert llm.PREFILL_SLICE_TOKENS[0] <= slow.prefill_tokens <= first / 0.5 * llm.PREFILL_SLICE_S
    fast = ChatModel(SlowLM(tokenizer, "Fine."), tokenizer)
    fast.feed(ids, object())
    assert fast.prefill_tokens > first  # a fast model gets bigger slices (up to the largest)
    short = ChatModel(SlowLM(tokenizer, "Fine.", pass_s=0.2), tokenizer)
    short.feed(torch.zeros((1, first - 1), dtype=torch.long), object())
    assert short.prefill_tokens == first  # a short prompt is one pass and teaches nothing


def test_a_long_prefill_is_progress_not_a_hang_and_can_be_stopped(tokenizer, monkeypatch):  # noqa: F811
    fixed_slices(monkeypatch, 8)
    model = SlowLM(tokenizer, "Fine. " * 200, pass_s=0.15)
    turns = Turns(max_turn_s=120)
    handler = LLMHandler(wiring(turns, poll_s=0.02), LLMConfig(max_new_tokens=4096))
    handler.chat_model = ChatModel(model, tokenizer)
    pipeline = Pipeline([handler], turns, handler.stop_event, hang_timeout_s=1.0)
    pipeline.setup()
    question = "a long question " * 40
    prompt_tokens = handler.chat_model.prompt_ids(handler.build_messages(question)).shape[1]
    assert prompt_tokens / 8 * model.pass_s > 6.0  # the prefill alone takes longer than this test watches it
    pipeline.start()
    turn_id = turns.new_id()
    turns.begin(turn_id)
    model.pass_lengths.clear()
    handler.in_queue.put(Transcript(turn_id, question, "en"))
    deadline = time.monotonic() + 3.0
    busy = 0.0
    try:
        while time.monotonic() < deadline:
            assert pipeline.healthy(), pipeline.health()
            busy = max(busy, pipeline.health()[0].busy_s)
            time.sleep(0.05)
        assert busy > 2 * pipeline.hang_timeout_s  # busy on the one prompt all along, never called hung
        assert handler.out_queue.empty()  # still inside the prompt: no text yet
        t_stop = time.monotonic()
        assert pipeline.stop(timeout=10.0) == []
        stopped_after = time.monotonic() - t_stop
    finally:
        handler.stop_event.set()
    assert stopped_after < 2.0  # one slice (0.15 s) and a poll, with a wide margin for a loaded CI machine
    assert sum(model.pass_lengths) < prompt_tokens  # stopped mid-prompt


# ---- the context -------------------------------------------------------------------------------------------------
def test_words_too_long_for_the_context_fail_the_turn_with_a_message(tokenizer, caplog):  # noqa: F811
    handler, model = scripted_handler(tokenizer, "Fine.", Turns(half_duplex=False), max_new_tokens=32)
    model.config = SimpleNamespace(max_position_embeddings=160)
    with caplog.at_level(logging.WARNING, logger="handlers.llm"):
        turn_id, outputs = ask(handler, "What is the weather like today? " * 40)
    assert len(outputs) == 1 and isinstance(outputs[0], TurnFailed) and outputs[0].turn_id == turn_id
    error = outputs[0].error
    assert "too long" in error and "128 fit" in error and "llm.max_new_tokens=32" in error
    assert "shorten it to about" in error and "too long" in caplog.text
    assert model.prompts == []  # refused before any forward pass
    assert list(handler.history) == []


def test_the_oldest_history_is_dropped_to_leave_room_for_the_reply(tokenizer):  # noqa: F811
    turns = Turns(half_duplex=False)
    handler, model = scripted_handler(tokenizer, "Fine.", turns, max_new_tokens=32, max_history_turns=4,
                                      system_prompt="Be brief.")
    for question in ("first question", "second question", "third question"):
        turn_id, _ = ask(handler, question)
        turns.end(turn_id)
    everything = handler.build_messages("fourth question")  # the context is unknown: the whole history
    assert [m["content"] for m in everything[1:3]] == ["first question", "Fine."]
    without_first = [everything[0], *everything[3:]]
    model.config = SimpleNamespace(max_position_embeddings=handler.chat_model.prompt_ids(without_first).shape[1] + 32)
    assert handler.build_messages("fourth question") == without_first


def test_the_real_smollm2_refuses_50000_characters_at_once(smollm2_dir):  # noqa: F811
    handler = LLMHandler(wiring(Turns()), LLMConfig(model=str(smollm2_dir), device="cpu", max_new_tokens=16))
    handler.setup()
    assert handler.chat_model.context_tokens == 8192
    turn_id = handler.turns.new_id()
    handler.turns.begin(turn_id)
    t0 = time.monotonic()
    outputs = run_stage(handler, [Transcript(turn_id, "Tell me about the weather in Berlin. " * 1400, "en")])
    assert time.monotonic() - t0 < 20.0  # tokenized and refused, not prefilled (minutes on this CPU)
    failed = outputs[0]
    assert isinstance(failed, TurnFailed) and "8,192 of model context" in failed.error, outputs


def test_auto_history_keeps_none_for_a_small_model_and_some_for_a_large_one(tiny_qwen2, tokenizer,  # noqa: F811
                                                                            monkeypatch, caplog):
    handler = LLMHandler(wiring(Turns()), LLMConfig(max_history_turns=-1))
    handler.chat_model = ChatModel(tiny_qwen2, tokenizer)
    with caplog.at_level(logging.INFO, logger="handlers.llm"):
        handler.setup()
    assert handler.history.maxlen == 0 and "llm.max_history_turns = -1, auto" in caplog.text
    monkeypatch.setattr(llm, "SMALL_LLM_PARAMS", sum(p.numel() for p in tiny_qwen2.parameters()))  # "large"
    handler.setup()
    assert handler.history.maxlen == llm.AUTO_HISTORY_TURNS
    handler.cfg.max_history_turns = 1
    assert handler.history_turns() == 1  # an explicit value is kept whatever the size


# ---- the reply ---------------------------------------------------------------------------------------------------
def test_a_reply_with_nothing_speakable_is_logged(tokenizer, caplog):  # noqa: F811
    handler, _ = scripted_handler(tokenizer, "😀 🎉 😀", Turns(half_duplex=False))
    with caplog.at_level(logging.WARNING, logger="handlers.llm"):
        turn_id, outputs = ask(handler, "😀")
    assert outputs == [TurnEnd(turn_id)]
    assert "nothing speakable" in caplog.text and "no audio" in caplog.text


def test_a_model_that_does_not_give_its_context_length_has_no_limit(tokenizer):  # noqa: F811
    handler, _ = scripted_handler(tokenizer, "Fine.", Turns(half_duplex=False))
    assert handler.chat_model.context_tokens is None and handler.prompt_limit() is None
