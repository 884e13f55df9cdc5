"""Benchmark our engine (``s2s.qwen3_tts``: static KV cache, CUDA graphs, in-graph sampling) on CUDA, bf16, batch 1.

Usage (repo root on PYTHONPATH, plus qwen-tts 0.1.1 + transformers 4.57.3, see bench/run_all.sh):
    python bench/bench_qwen3.py --ckpt CKPT --size 0.6b --out ours-0.6b.json [--mode graphs|compile|eager]

Modes: ``graphs`` (the default engine), ``compile`` (``compile=True``: torch.compile of the step functions, still
captured in our graphs), ``eager`` (``enforce_eager=True``, the reference point without graphs; ms/frame only).
EOS is blocked with the engine's ``suppress_eos=True`` (its min-new-tokens EOS mask held beyond max_seq_len), and
``max_new_tokens = n + 1`` yields exactly n frames (the reference's N -> N-1 rule, which the engine keeps).
Measured: ms/frame of code generation (talker + 15 predictor steps, sampling on the device), RTF with codec
decoding (non-streaming, and streaming with chunk 4 after a first chunk of 2), time to first audio for first
chunks of 1, 2 and 4 frames, per-chunk ready times vs cumulative audio, capture time, peak GPU memory over the whole
process (loading included) at ``--max-seq-len``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    FRAME_RATE_HZ,
    LANGUAGE,
    SAMPLING,
    SPEAKER,
    TEXT,
    dtype_for,
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
EAGER_FRAMES = 60
"""Eager steps take ~50 ms: a shorter run is enough for that reference point."""


def sampling_params(sampling_cls: Any) -> Any:
    """Our SamplingParams with the same values as ``common.SAMPLING`` (the reference's keyword names)."""
    return sampling_cls(
        do_sample=SAMPLING["do_sample"],
        temperature=SAMPLING["temperature"],
        top_k=SAMPLING["top_k"],
        top_p=SAMPLING["top_p"],
        repetition_penalty=SAMPLING["repetition_penalty"],
        subtalker_do_sample=SAMPLING["subtalker_dosample"],
        subtalker_temperature=SAMPLING["subtalker_temperature"],
        subtalker_top_k=SAMPLING["subtalker_top_k"],
        subtalker_top_p=SAMPLING["subtalker_top_p"],
        seed=0,
    )


def run(ckpt: Path, mode: str, frames: int, repeats: int, max_seq_len: int, device: str) -> dict[str, Any]:
    from s2s.qwen3_tts import Qwen3TTS, SamplingParams

    if mode not in ("graphs", "compile", "eager"):
        raise ValueError(f"--mode must be graphs, compile or eager; got {mode!r}")
    load_s, tts = timed(
        lambda: Qwen3TTS.from_pretrained(
            ckpt,
            device=device,
            dtype=dtype_for(device),
            max_seq_len=max_seq_len,
            enforce_eager=mode == "eager",
            compile=mode == "compile",
        )
    )
    sampling = sampling_params(SamplingParams)
    warmup_s, _ = timed(lambda: tts.warmup(sampling, chunk_sizes=(*FIRST_CHUNK_SIZES, STREAM_CHUNK)))
    prompt = tts.prompt_custom_voice(TEXT, SPEAKER, language=LANGUAGE)

    def codes(n: int) -> torch.Tensor:
        out = tts.generate_codes(prompt, sampling, max_new_tokens=n + 1, suppress_eos=True)  # [n, 16]
        if tuple(out.shape) != (n, 16):
            raise RuntimeError(f"expected {n} frames of 16 codes, got shape {tuple(out.shape)}")
        return out

    def stream(first_chunk: int) -> Any:
        return tts.stream(
            prompt, sampling, chunk_size=STREAM_CHUNK, first_chunk_size=first_chunk, max_new_tokens=frames + 1,
            suppress_eos=True,
        )

    codes(4)  # warm-up of the prefill path and the sampler outside the graphs
    if mode == "eager":
        frames = EAGER_FRAMES
    per_frame = steady_ms_per_frame(lambda n: timed(lambda: codes(n))[0], frames, repeats)
    result: dict[str, Any] = {
        "load_s": load_s,
        "capture_s": tts.capture_seconds,
        "warmup_s": warmup_s,
        **per_frame,
    }
    if mode == "eager":
        return {**result, "frames": frames, "memory": memory_report()}

    def speak() -> np.ndarray:
        return tts.decode(codes(frames))

    audio = speak()
    if len(audio) != frames * 1920:
        raise RuntimeError(f"decode of {frames} frames gave {len(audio)} samples, expected {frames * 1920}")
    wall_s, wall_all = median_time(speak, repeats)
    audio_s = frames / FRAME_RATE_HZ
    first_audio = {
        f"chunk_{size}": first_chunk_ms(lambda size=size: stream(size), repeats + 2) for size in FIRST_CHUNK_SIZES
    }
    streams = [record_stream(stream(2), len) for _ in range(repeats)]
    reports = sorted((stream_report(s) for s in streams), key=lambda r: r["wall_s"])
    streaming = reports[len(reports) // 2]
    if round(streaming["audio_s"] * FRAME_RATE_HZ) != frames:
        raise RuntimeError(f"the stream gave {streaming['audio_s']:.3f} s of audio, expected {frames} frames")
    return {
        **result,
        "frames": frames,
        "non_streaming": {"wall_s": wall_s, "all_s": wall_all, "audio_s": audio_s, "rtf": audio_s / wall_s},
        "first_audio_ms": {key: value["median_ms"] for key, value in first_audio.items()},
        "first_audio_all_ms": first_audio,
        "streaming": {"chunk_size": STREAM_CHUNK, "first_chunk_size": 2, **streaming},
        "memory": memory_report(),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup_logging()
    torch.manual_seed(0)
    result = run(args.ckpt, args.mode, args.frames, args.repeats, args.max_seq_len, args.device)
    labels = {"graphs": "CUDA graphs", "compile": "CUDA graphs + torch.compile", "eager": "eager, no graphs"}
    write_result(
        args.out,
        {
            "system": "ours" if args.mode == "graphs" else f"ours-{args.mode}",
            "label": f"s2s.qwen3_tts ({labels[args.mode]})",
            "mode": args.mode,
            "size": args.size,
            "max_seq_len": args.max_seq_len,
            "eos_blocking": "suppress_eos=True (EOS masked like min_new_tokens), max_new_tokens = frames + 1",
            "weights_per_frame": weight_bytes_per_frame(args.ckpt),
            **result,
        },
    )


if __name__ == "__main__":
    main()
