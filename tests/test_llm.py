"""LLM: the manual decode loop (tiny random Qwen2), the handler's streaming, chunking, history and stopping
(a scripted model), and the real SmolLM2-135M answering in chunks."""

import time
from types import SimpleNamespace

import pytest
import torch
from fixtures_models import smollm2_dir  # noqa: F401  (session fixture)
from stage_harness import start, wiring

from handlers.llm import ChatModel, LLMHandler
from s2s.config import LLMConfig
from s2s.messages import TextChunk, Transcript, TurnEnd, TurnFailed
from s2s.turns import Turns

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["The capital of France is Paris. It is lovely, and it is big!", "What is the weather like today?",
          "You are a helpful voice assistant. Answer in one short sentence."]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module")
def tiny_qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(config).eval()


class ScriptedLM(torch.nn.Module):
    """Emits the tokens of ``script`` (then the end token), one per forward pass; records each prompt."""

    def __init__(self, tokenizer, script: str) -> None:
        super().__init__()
        self.script = tokenizer.encode(script) + [tokenizer.eos_token_id]
        self.vocab = len(tokenizer)
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        self.prompts: list[list[int]] = []
        self.steps = 0
        self._position = 0

    def forward(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=0):
        if input_ids.shape[1] > 1:  # a new prompt
            self.prompts.append(input_ids[0].tolist())
            self._position = 0
        token = self.script[min(self._position, len(self.script) - 1)]
        self._position += 1
        self.steps += 1
        logits = torch.full((1, 1, self.vocab), -1e9)  # [1, 1, vocab]
        logits[0, -1, token] = 0.0
        return SimpleNamespace(logits=logits)


def scripted_handler(tokenizer, script: str, turns: Turns, **cfg) -> tuple[LLMHandler, ScriptedLM]:
    """A set-up handler over a ScriptedLM whose counters start after the warm-up request."""
    model = ScriptedLM(tokenizer, script)
    handler = LLMHandler(wiring(turns), LLMConfig(**cfg))
    handler.chat_model = ChatModel(model, tokenizer)
    handler.setup()
    model.prompts.clear()  # forget the warm-up: prompt k is the k-th question
    model.steps = 0
    return handler, model


def ask(handler: LLMHandler, text: str, events: list | None = None) -> tuple[int, list]:
    """Open a turn, run the handler on the transcript; (turn id, outputs). ``events`` gets (model steps, item)."""
    turn_id = handler.turns.new_id()
    handler.turns.begin(turn_id)
    outputs = []
    for item in handler.process(Transcript(turn_id, text, "en")):
        outputs.append(item)
        if events is not None:
            events.append((handler.chat_model.model.steps, item))
    return turn_id, outputs


# ---- the decode loop ---------------------------------------------------------------------------------------------
def test_manual_decode_loop_matches_generate(tiny_qwen2, tokenizer):
    chat = ChatModel(tiny_qwen2, tokenizer)
    prompt = chat.prompt_ids([{"role": "user", "content": "What is the weather like today?"}])  # [1, T]
    ours = list(chat.generate_ids(prompt, max_new_tokens=24))
    reference = tiny_qwen2.generate(prompt, max_new_tokens=24, do_sample=False, attention_mask=torch.ones_like(prompt),
                                    pad_token_id=tokenizer.pad_token_id)[0, prompt.shape[1]:].tolist()
    assert ours == [t for t in reference if t != tokenizer.eos_token_id][:len(ours)]
    assert len(ours) == 24 or reference[len(ours)] == tokenizer.eos_token_id


def test_stop_request_ends_generation_before_the_next_step(tiny_qwen2, tokenizer):
    chat = ChatModel(tiny_qwen2, tokenizer)
    prompt = chat.prompt_ids([{"role": "user", "content": "Hi"}])
    produced: list[int] = []
    for token in chat.generate_ids(prompt, max_new_tokens=50, should_stop=lambda: len(produced) >= 3):
        produced.append(token)  # noqa: PERF402  (should_stop reads the list as it grows)
    assert len(produced) == 3


def test_temperature_sampling_is_seeded_and_differs_from_greedy(tiny_qwen2, tokenizer):
    chat = ChatModel(tiny_qwen2, tokenizer)
    prompt = chat.prompt_ids([{"role": "user", "content": "Hi"}])
    greedy = list(chat.generate_ids(prompt, max_new_tokens=16))
    samples = []
    for _ in range(2):
        torch.manual_seed(1)
        samples.append(list(chat.generate_ids(prompt, max_new_tokens=16, temperature=1.5)))
    assert samples[0] == samples[1] and samples[0] != greedy


def test_multibyte_characters_are_not_split(tokenizer):
    text = "Tokyo 日本 is big, and 🗼 is tall."
    chat = ChatModel(ScriptedLM(tokenizer, text), tokenizer)
    deltas = list(chat.stream_text([{"role": "user", "content": "Tell me"}], max_new_tokens=100))
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)


def test_a_model_without_chat_template_is_refused(tiny_qwen2, tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    with pytest.raises(ValueError, match="chat template"):
        ChatModel(tiny_qwen2, plain)


# ---- the handler -------------------------------------------------------------------------------------------------
def test_reply_is_streamed_in_chunks_before_generation_ends(tokenizer):
    turns = Turns()
    handler, model = scripted_handler(tokenizer, "Sure, the capital of France is **Paris**. It is lovely! And big",
                                      turns)
    events: list = []
    turn_id, outputs = ask(handler, "What is the capital of France?", events)
    assert outputs == [TextChunk(turn_id, "Sure, the capital of France is Paris.", "en", 0),
                       TextChunk(turn_id, "It is lovely!", "en", 1),
                       TextChunk(turn_id, "And big", "en", 2), TurnEnd(turn_id)]
    first_chunk_step = events[0][0]
    assert first_chunk_step < model.steps - 5  # it went out while tokens were still being generated
    turns.end(turn_id)
    record = turns.records[-1]
    assert 0 <= record["llm_first_token_ms"] <= record["first_text_chunk_ms"]


def test_prompt_has_system_prompt_and_bounded_history_of_good_turns(tokenizer):
    turns = Turns(half_duplex=False)
    handler, model = scripted_handler(tokenizer, "Fine.", turns, max_history_turns=1, system_prompt="Be brief.")
    first, _ = ask(handler, "first question")
    turns.end(first)
    second, _ = ask(handler, "second question")
    turns.end(second, error="tts failed")
    third, _ = ask(handler, "third question")
    turns.end(third)
    ask(handler, "fourth question")
    prompts = [tokenizer.decode(p) for p in model.prompts]
    assert prompts[0].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "first question" in prompts[1] and prompts[1].count("Fine.") == 1
    assert "first question" in prompts[2] and "second question" not in prompts[2]  # turn 2 failed
    assert "third question" in prompts[3] and "first question" not in prompts[3]  # bounded to one exchange
    assert list(handler.history) == [("third question", "Fine.")]


def test_closing_the_turn_stops_generation_and_keeps_no_history(tokenizer):
    turns = Turns()
    handler, model = scripted_handler(tokenizer, "One two three, four five six. " * 20, turns, max_new_tokens=400)
    turn_id = turns.new_id()
    turns.begin(turn_id)
    outputs = handler.process(Transcript(turn_id, "Count", "en"))
    first = next(outputs)
    assert isinstance(first, TextChunk)
    turns.end(turn_id, error="tts failed")
    steps = model.steps
    assert list(outputs) == [TurnEnd(turn_id)]
    assert model.steps == steps  # no forward pass after the turn closed
    handler.build_messages("next")
    assert list(handler.history) == []


def test_closed_or_empty_turns_and_controls(tokenizer):
    turns = Turns(half_duplex=False)
    handler, model = scripted_handler(tokenizer, "Hello.", turns)
    closed = turns.new_id()
    assert list(handler.outputs(Transcript(closed, "hi", "en"))) == []  # never begun: dropped by the base
    turn_id = turns.new_id()
    turns.begin(turn_id)
    assert list(handler.outputs(Transcript(turn_id, "  ", "en"))) == [TurnEnd(turn_id)]
    assert model.steps == 0
    failed = TurnFailed(turn_id, "stt", "boom")
    assert list(handler.outputs(failed)) == [failed]
    assert list(handler.outputs(TurnEnd(turn_id))) == [TurnEnd(turn_id)]


def test_tiny_qwen2_handler_respects_max_new_tokens(tiny_qwen2, tokenizer):
    turns = Turns()
    steps = []
    hook = tiny_qwen2.register_forward_hook(lambda *_: steps.append(1))
    try:
        handler = LLMHandler(wiring(turns), LLMConfig(max_new_tokens=10, min_chunk_chars=1))
        handler.chat_model = ChatModel(tiny_qwen2, tokenizer)
        handler.setup()
        steps.clear()
        turn_id, outputs = ask(handler, "What is the weather like today?")
    finally:
        hook.remove()
    assert outputs[-1] == TurnEnd(turn_id)
    chunks = outputs[:-1]
    assert all(isinstance(c, TextChunk) and c.turn_id == turn_id for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len(steps) <= 10


def test_stop_event_ends_a_long_generation_promptly(tokenizer):
    turns = Turns()
    handler, model = scripted_handler(tokenizer, "Tick, tock, tick, tock. " * 400, turns, max_new_tokens=4096)
    thread = start(handler)
    turn_id = turns.new_id()
    turns.begin(turn_id)
    handler.in_queue.put(Transcript(turn_id, "Count forever", "en"))
    assert isinstance(handler.out_queue.get(timeout=30), TextChunk)
    handler.stop_event.set()
    t0 = time.monotonic()
    thread.join(timeout=30)
    # The stop is checked before every decode step (milliseconds here); the bound leaves room for a loaded machine.
    assert not thread.is_alive() and time.monotonic() - t0 < 5.0
    assert model.steps < 4096


# ---- real SmolLM2 ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_answers_in_chunks_and_uses_history(smollm2_dir):  # noqa: F811
    torch.manual_seed(0)
    turns = Turns()
    handler = LLMHandler(wiring(turns), LLMConfig(model=str(smollm2_dir), device="cpu", max_new_tokens=24,
                                                  max_history_turns=1))
    handler.setup()
    steps = []
    decoder = handler.chat_model.decoder
    assert decoder is not None  # SmolLM2 (a Llama) takes the static decode; count its token steps
    step = decoder.step
    decoder.step = lambda *args: (steps.append(1), step(*args))

    first, outputs = ask(handler, "What is the capital of France?")
    assert outputs[-1] == TurnEnd(first)
    assert "paris" in " ".join(c.text for c in outputs[:-1]).lower()
    turns.end(first)

    events = []
    steps.clear()
    second = turns.new_id()
    turns.begin(second)
    for item in handler.process(Transcript(second, "Name three colors.", "en")):
        events.append((len(steps), item))
    chunks = [(step, item) for step, item in events if isinstance(item, TextChunk)]
    assert len(chunks) >= 2, f"expected a reply in several chunks, got {[c.text for _, c in chunks]}"
    assert chunks[0][0] < len(steps)  # the first chunk went out before the last token was generated
    turns.end(second)

    prompt = handler.build_messages("And a fourth?")
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]  # one exchange kept (bounded)
    assert prompt[1]["content"] == "Name three colors."


def test_a_gguf_model_is_converted_once_then_loaded_from_the_cache(tiny_qwen2, tokenizer, tmp_path, monkeypatch):
    import transformers

    import handlers.llm as llm_module
    from s2s.config import LLMConfig

    (tmp_path / "m.gguf").write_bytes(b"GGUF stand-in")
    monkeypatch.setenv("S2S_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(llm_module, "llm_model", lambda cfg: (str(tmp_path), "m.gguf"))
    gguf_loads = []
    real_model_load = transformers.AutoModelForCausalLM.from_pretrained
    real_tokenizer_load = transformers.AutoTokenizer.from_pretrained

    def model_load(path, gguf_file=None, **kwargs):
        if gguf_file:
            gguf_loads.append(gguf_file)
            return tiny_qwen2
        return real_model_load(path, **kwargs)

    def tokenizer_load(path, gguf_file=None, **kwargs):
        return tokenizer if gguf_file else real_tokenizer_load(path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_load)
    cfg = LLMConfig(device="cpu", dtype="float32")
    first = ChatModel.load(cfg)
    second = ChatModel.load(cfg)
    assert gguf_loads == ["m.gguf"]
    assert list((tmp_path / "cache" / "llm").glob("m-*/config.json"))
    prompt = first.prompt_ids([{"role": "user", "content": "hello there"}])
    assert list(first.generate_ids(prompt, 8)) == list(second.generate_ids(prompt, 8))


def test_the_first_chunk_follows_llm_first_chunk_words(tokenizer):
    handler, _ = scripted_handler(tokenizer, "The capital of France is Paris. It is lovely!", Turns(half_duplex=False),
                                  first_chunk_words=3)
    turn_id, outputs = ask(handler, "What is the capital of France?")
    assert [c.text for c in outputs if isinstance(c, TextChunk)] == ["The capital of", "France is Paris.",
                                                                      "It is lovely!"]
