"""Does the chat history make the embedded LLM repeat itself? 30 different spoken-style questions, asked in one
conversation through ``LLMHandler`` (its prompt building, history and chunking) for each ``max_history_turns``;
counts distinct replies, replies that repeat an earlier one, and replies that share no word with their question.

    .venv/bin/python bench/history.py                              # SmolLM2 (the embedded GGUF), CPU, 0/1/2/4
    .venv/bin/python bench/history.py --model DIR --turns 0 2 4    # another model
    .venv/bin/python bench/history.py --out bench/results/2026-12-02-history-cpu.md

Greedy decoding (the default ``llm.temperature = 0``), so a run is deterministic on one machine.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import re
import time
from collections import Counter
from pathlib import Path

import torch

from handlers.llm import ChatModel, LLMHandler
from s2s.config import LLMConfig
from s2s.handler import Wiring
from s2s.messages import TextChunk, Transcript
from s2s.turns import Turns

log = logging.getLogger("bench.history")

QUESTIONS = (Path(__file__).parent / "questions.txt").read_text().splitlines()
"""30 short questions as people say them, one a line (shared with bench/soak.py)."""

_WORD = re.compile(r"[a-z']+")
_STOP = frozenset({"what's", "what", "should", "there", "tell", "your", "with", "that", "this", "best", "good"})
"""Words of 4+ letters that say nothing about the topic."""


def normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in _STOP}


def ask(handler: LLMHandler, question: str) -> str:
    """One turn through the handler, ended without an error (so the exchange joins the history)."""
    turns = handler.turns
    turn_id = turns.new_id()
    turns.begin(turn_id)
    chunks = [item.text for item in handler.process(Transcript(turn_id, question, "en")) if isinstance(item, TextChunk)]
    turns.end(turn_id)
    return " ".join(chunks)


def conversation(chat: ChatModel, history_turns: int, max_new_tokens: int) -> list[tuple[str, str, float]]:
    """(question, reply, seconds) for every question, in one conversation with ``history_turns`` of history."""
    cfg = LLMConfig(max_history_turns=history_turns, max_new_tokens=max_new_tokens)
    handler = LLMHandler(Wiring(Turns(half_duplex=False)), cfg)
    handler.chat_model = chat
    handler.setup()
    rows = []
    for question in QUESTIONS:
        t0 = time.monotonic()
        reply = ask(handler, question)
        rows.append((question, reply, time.monotonic() - t0))
        log.info("history %d: %r -> %r (%.1f s)", history_turns, question, reply, rows[-1][2])
    return rows


def summary(rows: list[tuple[str, str, float]]) -> dict:
    replies = [normalized(reply) for _, reply, _ in rows]
    seen: set[str] = set()
    repeats = 0
    for reply in replies:
        repeats += reply in seen
        seen.add(reply)
    off_topic = sum(1 for question, reply, _ in rows if not content_words(question) & content_words(reply))
    common, count = Counter(replies).most_common(1)[0]
    return {"distinct": len(set(replies)), "repeats": repeats, "off_topic": off_topic,
            "most_common": (count, common), "mean_s": sum(s for *_, s in rows) / len(rows)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(model: str, runs: dict[int, list], max_new_tokens: int) -> str:
    lines = [
        f"# History vs repetition: {len(QUESTIONS)} spoken questions in one conversation ({datetime.date.today()})",
        "",
        f"- model: {model}, greedy, `llm.max_new_tokens={max_new_tokens}`, default system prompt",
        (f"- machine: {cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
         f"Python {platform.python_version()}"),
        ("- script: `bench/history.py` (questions: `bench/questions.txt`); each setting is a fresh `LLMHandler` over the "
         "same loaded model, every turn ends without an error, so every exchange joins the history"),
        ("- distinct: different replies (lower case, punctuation ignored); repeats: replies equal to an earlier "
         "one; off topic: replies sharing no word of 4+ letters with their question (a rough signal)"),
        "",
        ("| max_history_turns | distinct replies | repeats of an earlier reply | off topic | most common reply | "
         "mean s/turn |"),
        "|---|---|---|---|---|---|",
    ]
    for turns, rows in runs.items():
        s = summary(rows)
        count, text = s["most_common"]
        lines.append(f"| {turns} | {s['distinct']} / {len(rows)} | {s['repeats']} | {s['off_topic']} | "
                     f"{count}x \"{text[:60]}\" | {s['mean_s']:.1f} |")
    for turns, rows in runs.items():
        lines += ["", f"## max_history_turns = {turns}", "", "| # | question | reply |", "|---|---|---|"]
        lines += [f"| {i} | {q} | {r.replace('|', '/')} |" for i, (q, r, _) in enumerate(rows, 1)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="llm.model (default: the configured/embedded one)")
    parser.add_argument("--turns", type=int, nargs="+", default=[0, 1, 2, 4], help="max_history_turns values")
    parser.add_argument("--max-new-tokens", type=int, default=LLMConfig.max_new_tokens)
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    chat = ChatModel.load(LLMConfig(model=args.model, device="cpu"))
    name = args.model or "SmolLM2-135M-Instruct (embedded Q4_1 GGUF, dequantized to float32)"
    runs = {turns: conversation(chat, turns, args.max_new_tokens) for turns in args.turns}
    text = report(name, runs, args.max_new_tokens)
    if args.out:
        args.out.write_text(text)
        log.info("wrote %s", args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
