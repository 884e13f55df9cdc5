"""Benchmark ``faster-qwen3-tts`` 0.5.4 (CUDA graphs over the HF modules, bf16, batch 1) through its public API.

Usage (PYTHONPATH holding faster-qwen3-tts 0.5.4 + qwen-tts-hf + transformers 5.16.1, see bench/run_all.sh):
    python bench/bench_faster_qwen3_tts.py --ckpt CKPT --size 0.6b --out fq3-0.6b.json [--frames 100]

EOS is blocked with its own ``min_new_tokens`` argument set to ``max_new_tokens = n``: its loop masks EOS while
fewer than ``min_new_tokens`` frames exist and emits one frame per step, so it yields exactly ``n`` frames.
Its code predictor always samples (top-k 50, temperature 0.9; no greedy switch). ms/frame is timed around its
``fast_generate`` (codes only, the codec decode left out); streaming uses ``generate_custom_voice_streaming``
with ``chunk_size`` = the first-chunk size (it has one chunk size for the whole stream).
"""

from __future__ import annotations

import importlib.metadata
import statistics
from typing import Any

import torch
from common import (
    FRAME_RATE_HZ,
    LANGUAGE,
    SAMPLING,
    SPEAKER,
    TEXT,
    first_chunk_ms,
    median_time,
    memory_report,
    parse_args,
    record_stream,
    setup_logging,
    steady_ms_per_frame,
    stream_report,
    timed,
    weight_bytes_per_frame,
    write_result,
)

FIRST_CHUNK_SIZES = (1, 2, 4)
STREAM_CHUNK = 4


class CodeGenerationTimer:
    """Stands in for ``faster_qwen3_tts.generate.fast_generate``: times each call (s) and keeps its frame count."""

    def __init__(self, module: Any) -> None:
        self.inner = module.fast_generate
        self.last_s = 0.0
        self.last_frames = 0
        self.self_reported_ms: list[float] = []
        module.fast_generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.last_s, (codes, timing) = timed(lambda: self.inner(*args, **kwargs))
        self.last_frames = 0 if codes is None else int(codes.shape[0])
        self.self_reported_ms.append(timing["ms_per_step"])
        return codes, timing


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup_logging()
    import faster_qwen3_tts.generate
    from faster_qwen3_tts import FasterQwen3TTS

    torch.manual_seed(0)
    load_s, tts = timed(
        lambda: FasterQwen3TTS.from_pretrained(
            str(args.ckpt),
            device="cuda",
            dtype=torch.bfloat16,
            attn_implementation="sdpa",
            max_seq_len=args.max_seq_len,
        )
    )
    capture_s, _ = timed(tts.warmup)
    codes_timer = CodeGenerationTimer(faster_qwen3_tts.generate)
    options = {
        "temperature": SAMPLING["temperature"],
        "top_k": SAMPLING["top_k"],
        "top_p": SAMPLING["top_p"],
        "do_sample": SAMPLING["do_sample"],
        "repetition_penalty": SAMPLING["repetition_penalty"],
    }

    def speak(frames: int) -> None:
        wavs, rate = tts.generate_custom_voice(
            TEXT, speaker=SPEAKER, language=LANGUAGE, max_new_tokens=frames, min_new_tokens=frames, **options
        )
        if codes_timer.last_frames != frames or rate != 24000:
            raise RuntimeError(f"expected {frames} frames at 24 kHz, got {codes_timer.last_frames} at {rate} Hz")

    def stream(frames: int, chunk: int):
        return tts.generate_custom_voice_streaming(
            TEXT,
            speaker=SPEAKER,
            language=LANGUAGE,
            max_new_tokens=frames,
            min_new_tokens=frames,
            chunk_size=chunk,
            **options,
        )

    speak(4)  # warm-up outside the graphs: prefill kernels, the codec decoder

    def codes_seconds(frames: int) -> float:
        speak(frames)
        return codes_timer.last_s

    per_frame = steady_ms_per_frame(codes_seconds, args.frames, args.repeats)
    self_reported = statistics.median(codes_timer.self_reported_ms)
    wall_s, wall_all = median_time(lambda: speak(args.frames), args.repeats)
    audio_s = args.frames / FRAME_RATE_HZ

    first_audio = {
        f"chunk_{size}": first_chunk_ms(lambda size=size: stream(args.frames, size), args.repeats + 2)
        for size in FIRST_CHUNK_SIZES
    }
    streams = [record_stream(stream(args.frames, STREAM_CHUNK), lambda item: len(item[0])) for _ in range(args.repeats)]
    reports = sorted((stream_report(s) for s in streams), key=lambda r: r["wall_s"])
    streaming = reports[len(reports) // 2]
    write_result(
        args.out,
        {
            "system": "faster-qwen3-tts",
            "label": "faster-qwen3-tts 0.5.4 (CUDA graphs, sdpa)",
            "versions": {
                "faster-qwen3-tts": importlib.metadata.version("faster-qwen3-tts"),
                "qwen-tts-hf": importlib.metadata.version("qwen-tts-hf"),
                "transformers": importlib.metadata.version("transformers"),
            },
            "size": args.size,
            "frames": args.frames,
            "eos_blocking": "min_new_tokens = max_new_tokens = frames (its own argument)",
            "load_s": load_s,
            "weights_per_frame": weight_bytes_per_frame(args.ckpt),
            "capture_s": capture_s,
            **per_frame,
            "self_reported_ms_per_step": self_reported,
            "non_streaming": {"wall_s": wall_s, "all_s": wall_all, "audio_s": audio_s, "rtf": audio_s / wall_s},
            "first_audio_ms": {key: value["median_ms"] for key, value in first_audio.items()},
            "first_audio_all_ms": first_audio,
            "streaming": {"chunk_size": STREAM_CHUNK, "first_chunk_size": STREAM_CHUNK, **streaming},
            "memory": memory_report(),
        },
    )


if __name__ == "__main__":
    main()
