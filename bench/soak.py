"""Soak: one real pipeline (file in -> VAD -> STT -> LLM -> TTS -> WAV out, the embedded CPU models, every stage on
its own thread) answering many spoken turns in a row; turns, latency percentiles, and the process's memory every
10 turns, which must stay flat.

    .venv/bin/python bench/soak.py                                  # 200 turns, report printed
    .venv/bin/python bench/soak.py --turns 50 --max-minutes 10 --out bench/results/2026-12-02-soak-cpu.md

The input is a folder of espeak-ng WAVs (the questions of ``bench/questions.txt``, spoken by
``bench/cpu_workload.py`` and repeated in order to make ``--turns`` files, one turn each). A run that reaches
``--max-minutes`` stops the pipeline and reports the turns it finished.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from cpu_workload import QUESTIONS, machine, speak

from s2s.config import load_config
from s2s.pipeline import Pipeline

log = logging.getLogger("bench.soak")

RSS_EVERY = 10
"""Turns between two memory samples."""


def rss_mb() -> float:
    """Resident memory of this process (MiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def make_inputs(folder: Path, turns: int) -> None:
    """``turns`` 16 kHz mono WAVs in ``folder / "inputs"`` (turn-000.wav, ...), cycling through the questions."""
    spoken = [speak(question, folder / f"q-{i}.wav") for i, question in enumerate(QUESTIONS)]
    inputs = folder / "inputs"
    inputs.mkdir()
    for turn in range(turns):
        shutil.copyfile(spoken[turn % len(spoken)], inputs / f"turn-{turn:03d}.wav")


class Sampler(threading.Thread):
    """Every 0.5 s: once another RSS_EVERY turns have finished, note (turns, seconds, RSS MiB, threads)."""

    def __init__(self, pipeline: Pipeline, t0: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pipeline, self.t0 = pipeline, t0
        self.samples: list[tuple[int, float, float, int]] = []
        self.done = threading.Event()

    def sample(self) -> None:
        finished = len(self.pipeline.turns.records)
        self.samples.append((finished, time.monotonic() - self.t0, rss_mb(), threading.active_count()))
        log.info("%d turns, %.0f s, RSS %.0f MiB, %d threads", *self.samples[-1])

    def run(self) -> None:
        self.sample()
        while not self.done.wait(0.5):
            if len(self.pipeline.turns.records) >= self.samples[-1][0] + RSS_EVERY:
                self.sample()

    def finish(self) -> None:
        """Stop sampling; a last sample if turns finished since the previous one (the threads still running)."""
        self.done.set()
        self.join()
        if len(self.pipeline.turns.records) != self.samples[-1][0]:
            self.sample()


def overrides(args: argparse.Namespace) -> list[str]:
    """The soak's settings: the embedded models on the CPU, short replies, then the user's ``--set``."""
    return ["tts.backend=piper", "stt.device=cpu", "llm.device=cpu", "llm.max_new_tokens=32",
            "pipeline.max_turn_s=300", *args.set]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(args, records: list[dict], samples: list, wall_s: float, setup_s: float, rss_setup: float,
           stopped_early: bool) -> str:
    e2e = [r["e2e_s"] for r in records if r.get("e2e_s") is not None]
    first_token = [r["llm_first_token_ms"] / 1000 for r in records if r.get("llm_first_token_ms") is not None]
    errors = [r for r in records if r.get("error")]
    settled = [s[2] for s in samples if s[0] >= 2 * RSS_EVERY]  # RSS after the first allocations
    half = len(settled) // 2
    lines = [
        f"# Soak: {len(records)} turns through one CPU pipeline ({datetime.date.today()})",
        "",
        f"- machine: {machine()}",
        ("- pipeline: file in -> Silero VAD -> Whisper tiny.en (embedded) -> SmolLM2-135M-Instruct (embedded GGUF) "
         "-> Piper joe (embedded) -> WAV out, half duplex; settings: "
         f"{', '.join(f'`{o}`' for o in overrides(args))}"),
        (f"- input: {args.turns} espeak-ng WAVs, the {len(QUESTIONS)} questions of `bench/questions.txt` in turn; "
         f"script `bench/soak.py --turns {args.turns} --max-minutes {args.max_minutes:g}"
         f"{''.join(f' --set {o}' for o in args.set)}`"),
        "",
        "| | value |",
        "|---|---|",
        f"| turns finished | {len(records)} of {args.turns}{' (stopped at --max-minutes)' if stopped_early else ''} |",
        f"| turns with an error | {len(errors)} |",
        f"| model loading and warm-up | {setup_s:.1f} s, RSS {rss_setup:.0f} MiB after |",
        f"| wall time of the turns | {wall_s / 60:.1f} min ({wall_s / max(len(records), 1):.1f} s per turn) |",
    ]
    if e2e:
        lines.append(f"| end of speech -> first audio out, p50 / p90 / max | {percentile(e2e, 50):.2f} / "
                     f"{percentile(e2e, 90):.2f} / {max(e2e):.2f} s ({len(e2e)} turns) |")
    if first_token:
        lines.append(f"| end of speech -> first LLM token, p50 / p90 | {percentile(first_token, 50):.2f} / "
                     f"{percentile(first_token, 90):.2f} s |")
    if half:
        first, second = statistics.mean(settled[:half]), statistics.mean(settled[half:])
        lines.append(f"| RSS from turn {2 * RSS_EVERY} on: min / max | {min(settled):.0f} / {max(settled):.0f} MiB |")
        lines.append(f"| RSS mean, first half -> second half of those samples | {first:.0f} -> {second:.0f} MiB |")
    lines += [
        "",
        "## Memory every 10 turns",
        "",
        "| turns | minutes | RSS MiB | threads |",
        "|---|---|---|---|",
    ]
    lines += [f"| {turns} | {t / 60:.1f} | {rss:.0f} | {threads} |" for turns, t, rss, threads in samples]
    if errors:
        lines += ["", "## Errors", ""] + [f"- turn {r['turn']}: {r['error']}" for r in errors[:20]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop after this long and report")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting over the soak's own (CPU, Piper, llm.max_new_tokens=32), repeatable")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("handlers").setLevel(logging.WARNING)  # one line per stage per turn would drown the samples
    logging.getLogger("s2s.turns").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="s2s-soak-") as tmp:
        folder = Path(tmp)
        make_inputs(folder, args.turns)
        config = load_config([], overrides(args))
        pipeline = Pipeline.from_config(config, input_path=folder / "inputs", output_path=folder / "replies.wav")
        t0 = time.monotonic()
        pipeline.setup()
        setup_s, rss_setup = time.monotonic() - t0, rss_mb()
        t0 = time.monotonic()
        pipeline.start()
        sampler = Sampler(pipeline, t0)
        sampler.start()
        try:
            finished = pipeline.wait(args.max_minutes * 60)
        finally:
            wall_s = time.monotonic() - t0
            sampler.finish()
            stuck = pipeline.stop()
        if stuck:
            log.error("stages still running after the stop: %s", stuck)
        records = list(pipeline.turns.records)
    text = report(args, records, sampler.samples, wall_s, setup_s, rss_setup, stopped_early=not finished)
    if args.out:
        args.out.write_text(text)
        log.info("wrote %s", args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
