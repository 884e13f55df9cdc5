"""What an early end of turn waits for: the speculative transcription and the end-of-turn rating, timed apart.

Usage (repo root; the GPU machine: after bench/e2e_gpu.sh stt ours whisper turn-a turn-b):
    python bench/turn_parts.py --questions DIR --whisper DIR --turn-model GGUF --out OUT

For each of the e2e questions (WAVs in ``--questions``): faster-whisper's transcription of the whole question (as
the STT stage's ``transcribe``: beam 1, no timestamps) on the CPU with several thread counts, with faster-whisper's
temperature fallback (the stage's default) and without it (greedy only), and the end-of-turn model's rating of the
transcript on each device there is (float32, eager). Writes OUT/turn-parts.json and .md (p50/p90 ms).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from e2e import environment, pctl, whisper_device  # noqa: E402

log = logging.getLogger("bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=REPO / "build" / "e2e-questions")
    parser.add_argument("--whisper", type=Path, help="the Whisper CTranslate2 folder (default: the embedded one)")
    parser.add_argument("--turn-model", default="", help="end_of_turn.model (default: the embedded SmolLM2)")
    parser.add_argument("--threads", default="2,4,8,16")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import soundfile as sf
    import torch

    from s2s.config import EndOfTurnConfig
    from s2s.end_of_turn import ChatTurnModel
    from s2s.models import embedded_whisper

    whisper = args.whisper or embedded_whisper()
    import transformers  # noqa: F401  (before the PyAV stand-in: transformers looks PyAV up when imported)

    whisper_device(whisper)  # the PyAV stand-in where PyAV is missing
    from faster_whisper import WhisperModel
    manifest = json.loads((args.questions / "manifest.json").read_text())
    clips = [sf.read(args.questions / q["file"], dtype="float32")[0] for q in manifest]
    result = {"environment": environment("gpu" if torch.cuda.is_available() else "cpu"), "stt": {}, "rating": {}}
    texts = []
    for threads in (int(t) for t in args.threads.split(",")):
        model = WhisperModel(str(whisper), device="cpu", compute_type="int8", cpu_threads=threads)
        for fallback in (True, False):
            options = {} if fallback else {"temperature": 0.0}
            times = []
            for _ in range(args.repeat):
                for audio in clips:
                    start = time.monotonic()
                    segments, _ = model.transcribe(audio, beam_size=1, vad_filter=False, without_timestamps=True,
                                                   condition_on_previous_text=False, **options)
                    text = " ".join(s.text.strip() for s in segments)
                    times.append((time.monotonic() - start) * 1000)
                    if not texts or len(texts) < len(clips):
                        texts.append(text)
            key = f"{threads} threads, {'fallback' if fallback else 'greedy only'}"
            result["stt"][key] = {"p50": pctl(times, 0.5), "p90": pctl(times, 0.9), "n": len(times)}
            log.info("STT %s: %s", key, result["stt"][key])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        rater = ChatTurnModel.load(EndOfTurnConfig(model=args.turn_model, device=device))
        for threads in ((None, 4) if device == "cpu" else (None,)):
            if threads:
                torch.set_num_threads(threads)
            rater("Hello.")
            times = []
            for _ in range(args.repeat):
                for text in texts:
                    start = time.monotonic()
                    rater(text)
                    times.append((time.monotonic() - start) * 1000)
            key = device + (f", {threads} threads" if threads else ", torch's threads" if device == "cpu" else "")
            result["rating"][key] = {"p50": pctl(times, 0.5), "p90": pctl(times, 0.9), "n": len(times)}
            log.info("rating %s: %s", key, result["rating"][key])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "turn-parts.json").write_text(json.dumps(result, indent=2))
    env = result["environment"]
    lines = [f"# The speculative transcription and the end-of-turn rating ({env['date']})", "",
             f"{env.get('gpu', '')} {env['cpu']}, {env['cores']} cores; torch {env['torch']}, CTranslate2 "
             f"{env.get('ctranslate2')}. Whisper tiny.en int8 on the CPU over the {len(clips)} e2e questions "
             f"(x{args.repeat}); the SmolLM2-135M-Instruct rating of their transcripts (float32, eager).", "",
             "| ms | p50 | p90 | n |", "|---|---|---|---|"]
    lines += [f"| STT, {k} | {v['p50']} | {v['p90']} | {v['n']} |" for k, v in result["stt"].items()]
    lines += [f"| rating, {k} | {v['p50']} | {v['p90']} | {v['n']} |" for k, v in result["rating"].items()]
    (args.out / "turn-parts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
