"""Does the chat history make the embedded LLM repeat itself? 30 different spoken-style questions asked in one
conversation through ``LLMHandler`` (its prompt building, history and chunking), for each ``max_history_turns``;
counts distinct replies, replies that repeat an earlier one, and replies that share no word with their question.

Two inputs: ``text``, the questions as typed, and ``spoken``, what the STT stage hears when they are spoken
(espeak-ng speech transcribed by the embedded Whisper tiny.en, its mistakes included), as in a `s2s run --input
FOLDER` of recorded questions.

    .venv/bin/python bench/history.py                                  # SmolLM2 (embedded GGUF), CPU, 0/1/2/4
    .venv/bin/python bench/history.py --model DIR --turns 0 2 4 --inputs spoken
    .venv/bin/python bench/history.py --out bench/results/2026-12-02-history-cpu.md

Greedy decoding (the default ``llm.temperature = 0``), so a run is deterministic on one machine.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

from cpu_workload import QUESTIONS, machine, speak

from handlers.llm import ChatModel, LLMHandler
from s2s.audio import read_wav
from s2s.config import LLMConfig, STTConfig
from s2s.handler import Wiring
from s2s.messages import TextChunk, Transcript
from s2s.turns import Turns

log = logging.getLogger("bench.history")

_WORD = re.compile(r"[a-z']+")
_VAGUE = frozenset({"what's", "what", "should", "there", "tell", "your", "with", "that", "this", "best", "good"})
"""Words of 4+ letters that say nothing about the topic."""


def normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in _VAGUE}


def heard(questions: list[str]) -> list[str]:
    """What the STT stage (the embedded Whisper, as configured by default on a CPU) hears of each question spoken."""
    from handlers.stt import STTHandler

    stt = STTHandler(Wiring(Turns()), STTConfig(device="cpu"))
    stt.setup()
    with tempfile.TemporaryDirectory(prefix="s2s-history-") as tmp:
        transcripts = []
        for i, question in enumerate(questions):
            audio, _ = read_wav(speak(question, Path(tmp) / f"q{i}.wav"))  # [n] at 16 kHz
            transcripts.append(stt.transcribe(audio)[0])
            log.info("heard %r as %r", question, transcripts[-1])
    return transcripts


def ask(handler: LLMHandler, question: str) -> str:
    """One turn through the handler, ended without an error (so the exchange joins the history)."""
    turns = handler.turns
    turn_id = turns.new_id()
    turns.begin(turn_id)
    chunks = [item.text for item in handler.process(Transcript(turn_id, question, "en")) if isinstance(item, TextChunk)]
    turns.end(turn_id)
    return " ".join(chunks)


def conversation(chat: ChatModel, prompts: list[str], history_turns: int,
                 max_new_tokens: int) -> list[tuple[str, float]]:
    """(reply, seconds) for every prompt, in one conversation with ``history_turns`` exchanges of history."""
    cfg = LLMConfig(max_history_turns=history_turns, max_new_tokens=max_new_tokens)
    handler = LLMHandler(Wiring(Turns(half_duplex=False)), cfg)
    handler.chat_model = chat
    handler.setup()
    rows = []
    for prompt in prompts:
        t0 = time.monotonic()
        reply = ask(handler, prompt)
        rows.append((reply, time.monotonic() - t0))
        log.info("history %d: %r -> %r (%.1f s)", history_turns, prompt, reply, rows[-1][1])
    return rows


def summary(prompts: list[str], rows: list[tuple[str, float]]) -> dict:
    replies = [normalized(reply) for reply, _ in rows]
    repeats = sum(1 for i, reply in enumerate(replies) if reply in replies[:i])
    off_topic = sum(1 for prompt, (reply, _) in zip(prompts, rows) if not content_words(prompt) & content_words(reply))
    common, count = Counter(replies).most_common(1)[0]
    return {"distinct": len(set(replies)), "repeats": repeats, "off_topic": off_topic,
            "most_common": f'{count}x "{common[:50]}"', "mean_s": sum(s for _, s in rows) / len(rows)}


def report(model: str, inputs: dict[str, list[str]], runs: dict[tuple[str, int], list], max_new_tokens: int) -> str:
    lines = [
        f"# History vs repetition: {len(QUESTIONS)} questions in one conversation ({datetime.date.today()})",
        "",
        f"- model: {model}, greedy, `llm.max_new_tokens={max_new_tokens}`, the default system prompt",
        f"- machine: {machine()}",
        ("- script: `bench/history.py` (questions: `bench/questions.txt`); each row is a fresh `LLMHandler` over "
         "the same loaded model; every turn ends without an error, so every exchange joins the history"),
        ("- inputs: `text` = the questions as typed; `spoken` = Whisper tiny.en's transcripts of their espeak-ng "
         "speech (what a folder of recorded questions gives the LLM)"),
        ("- distinct: different replies (lower case, punctuation ignored); repeats: replies equal to an earlier "
         "one; off topic: replies that share no word of 4+ letters with their prompt (a rough signal)"),
        "",
        "| input | max_history_turns | distinct replies | repeats | off topic | most common reply | s/turn |",
        "|---|---|---|---|---|---|---|",
    ]
    for (source, turns), rows in runs.items():
        s = summary(inputs[source], rows)
        lines.append(f"| {source} | {turns} | {s['distinct']} / {len(rows)} | {s['repeats']} | {s['off_topic']} | "
                     f"{s['most_common']} | {s['mean_s']:.1f} |")
    for (source, turns), rows in runs.items():
        lines += ["", f"## {source}, max_history_turns = {turns}", "", "| # | prompt | reply |", "|---|---|---|"]
        lines += [f"| {i} | {prompt} | {reply.replace('|', '/')} |"
                  for i, (prompt, (reply, _)) in enumerate(zip(inputs[source], rows), 1)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="llm.model (default: the configured/embedded one)")
    parser.add_argument("--turns", type=int, nargs="+", default=[0, 1, 2, 4], help="max_history_turns values")
    parser.add_argument("--inputs", nargs="+", choices=["text", "spoken"], default=["text", "spoken"])
    parser.add_argument("--max-new-tokens", type=int, default=48, help="llm.max_new_tokens (default 48)")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("handlers.llm").setLevel(logging.WARNING)  # bench.history logs each reply
    inputs = {"text": QUESTIONS}
    if "spoken" in args.inputs:
        inputs["spoken"] = heard(QUESTIONS)
    chat = ChatModel.load(LLMConfig(model=args.model, device="cpu"))
    name = args.model or "SmolLM2-135M-Instruct (embedded Q4_1 GGUF, dequantized to float32)"
    runs = {(source, turns): conversation(chat, inputs[source], turns, args.max_new_tokens)
            for source in args.inputs for turns in args.turns}
    text = report(name, inputs, runs, args.max_new_tokens)
    if args.out:
        args.out.write_text(text)
        log.info("wrote %s", args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
