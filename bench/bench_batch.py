"""Benchmark batched decoding (``s2s.qwen3_tts.batch``: continuous batching, CUDA graphs per batch bucket) on CUDA.

Usage (repo root on PYTHONPATH, plus qwen-tts 0.1.1 + transformers 4.57.3, see bench/run_all.sh):
    python bench/bench_batch.py --ckpt CKPT --size 0.6b --out ours-batch-0.6b.json [--frames 100]

Measured, bf16, the ``common`` workload (speaker ryan, sampling with the checkpoint defaults, one seed per stream),
EOS blocked (``suppress_eos``), max_seq_len 2048, one ``BatchDecoder`` of 16 row slots captured once:
* ``single_stream``: the single-stream engine's ms/frame (``Qwen3TTS.generate_codes``), the B = 1 baseline;
* ``codes[B]`` for B = 1, 2, 4, 8, 16 streams started together: the frame steps after the step that admitted them
  (their prefills), codes only (host reads per chunk, as streaming does): ms per step (= per stream per frame) and
  aggregate frames/s;
* ``audio[B]``: the same with every row's streaming codec decoder (graphed), as the server runs it, plus each
  stream's chunk ready times against its playback (``common.stream_report``: first audio, min slack, gaps);
* ``join``: 7 streams running, an 8th arrives: ms from its submission to its first audio chunk (2 frames).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench_qwen3 import sampling_params
from common import (
    LANGUAGE,
    SPEAKER,
    TEXT,
    ChunkRecord,
    dtype_for,
    memory_report,
    parse_args,
    reset_peak_memory,
    setup_logging,
    steady_ms_per_frame,
    stream_report,
    sync,
    timed,
    write_result,
)

BATCHES = (1, 2, 4, 8, 16)
JOIN_RUNNING = 7
JOIN_REPEATS = 3


def _requests(tts, n: int, frames: int, seed0: int = 0) -> list:
    from dataclasses import replace

    from s2s.qwen3_tts import SamplingParams
    from s2s.qwen3_tts.batch_scheduler import RowRequest

    prompt = tts.prompt_custom_voice(TEXT, SPEAKER, LANGUAGE)
    base = sampling_params(SamplingParams)
    return [RowRequest(prompt, replace(base, seed=seed0 + i), max_new_tokens=frames + 1, suppress_eos=True)
            for i in range(n)]


def run_batch(rows, tts, n: int, frames: int) -> dict[str, Any]:
    """``n`` streams of ``frames`` frames started together: steady ms per step after the admitting step."""
    requests = _requests(tts, n, frames)
    for request in requests:
        rows.submit(request)
    records: dict[Any, list[ChunkRecord]] = {r: [] for r in requests}
    sync()
    start = time.perf_counter()
    first_step = frames_end = None
    while rows.busy:
        events = rows.step()
        if first_step is None:  # the step that admitted them (their prefills) and ran their first frame
            sync()
            first_step, frames_at_first = time.perf_counter(), rows.frames
        if frames_end is None and not rows.running:  # every frame computed (decoding may still be under way)
            sync()
            frames_end, timed = time.perf_counter(), rows.frames - frames_at_first
        for event in events:  # chunks arrive as host arrays: no sync needed to stamp them
            if event.audio is not None or event.codes is not None:
                samples = event.audio.size if event.audio is not None else len(event.codes) * 1920
                records[event.request].append(ChunkRecord(time.perf_counter() - start, samples))
    ms_per_step = 1000.0 * (frames_end - first_step) / timed
    result = {"streams": n, "frames": frames, "timed_steps": timed, "ms_per_frame_per_stream": ms_per_step,
              "aggregate_frames_per_s": n * 1000.0 / ms_per_step, "first_step_ms": 1000.0 * (first_step - start)}
    if rows.audio:
        reports = [stream_report(records[r]) for r in requests]
        result.update(first_audio_ms=[r["first_audio_ms"] for r in reports],
                      min_slack_ms=min(r["min_slack_ms"] for r in reports),
                      gap_free=all(r["gap_free"] for r in reports),
                      rtf=[r["rtf"] for r in reports])
    return result


def join_latency(rows, tts, frames: int) -> dict[str, Any]:
    """7 streams running (audio on), then an 8th: ms from its submission to its first audio chunk."""
    times = []
    for repeat in range(JOIN_REPEATS):
        running = _requests(tts, JOIN_RUNNING, frames, seed0=100 * repeat)
        for request in running:
            rows.submit(request)
        for _ in range(10):
            rows.step()
        late = _requests(tts, 1, frames, seed0=100 * repeat + 50)[0]
        sync()
        start = time.perf_counter()
        rows.submit(late)
        heard = None
        while rows.busy:
            for event in rows.step():
                if event.request is late and event.audio is not None and heard is None:
                    heard = 1000.0 * (time.perf_counter() - start)
            if heard is not None:
                for request in [*running, late]:
                    request.cancel.set()
        times.append(heard)
    return {"running": JOIN_RUNNING, "first_audio_ms": statistics.median(times), "all_ms": times}


def run(ckpt: Path, frames: int, repeats: int, max_seq_len: int, device: str) -> dict[str, Any]:
    from s2s.qwen3_tts import Qwen3TTS, SamplingParams
    from s2s.qwen3_tts.batch import BatchDecoder
    from s2s.qwen3_tts.batch_scheduler import RowScheduler

    load_s, tts = timed(lambda: Qwen3TTS.from_pretrained(ckpt, device=device, dtype=dtype_for(device),
                                                         max_seq_len=max_seq_len))
    sampling = sampling_params(SamplingParams)
    tts.warmup(sampling)
    prompt = tts.prompt_custom_voice(TEXT, SPEAKER, LANGUAGE)
    single = steady_ms_per_frame(
        lambda n: timed(lambda: tts.generate_codes(prompt, sampling, max_new_tokens=n + 1, suppress_eos=True))[0],
        frames, repeats)
    reset_peak_memory()
    decoder = BatchDecoder.for_sampling(tts, max(BATCHES), sampling)  # as the server builds it
    capture_s = decoder.capture()
    codes_rows = RowScheduler(tts, decoder, audio=False)
    audio_rows = RowScheduler(tts, decoder, overlap_audio=True)  # as the server runs it on CUDA
    warm_s, _ = timed(lambda: audio_rows.warmup((2, 4)))
    run_batch(codes_rows, tts, 2, 24)  # first use of the rows (lazy inits) out of the figures
    codes = {n: min((run_batch(codes_rows, tts, n, frames) for _ in range(repeats)),
                    key=lambda r: r["ms_per_frame_per_stream"]) for n in BATCHES}
    audio = {n: run_batch(audio_rows, tts, n, frames) for n in BATCHES}
    join = join_latency(audio_rows, tts, frames)
    return {
        "load_s": load_s,
        "batch_capture_s": capture_s,
        "codec_capture_s": warm_s,
        "kv_bytes_per_row": decoder.kv_bytes_per_row,
        "single_stream": single,
        "codes": codes,
        "audio": audio,
        "join": join,
        "memory": memory_report(),
    }


def main() -> None:
    setup_logging()
    args = parse_args(__doc__.splitlines()[0])
    result = run(Path(args.ckpt), args.frames, args.repeats, args.max_seq_len, args.device)
    write_result(Path(args.out), {"system": "ours-batch", "size": args.size, **result})
    single = result["single_stream"]["ms_per_frame"]
    print(f"single stream {single:.2f} ms/frame")
    for n, r in result["codes"].items():
        audio = result["audio"][n]
        print(f"B={n:2}: {r['ms_per_frame_per_stream']:.2f} ms/frame per stream, "
              f"{r['aggregate_frames_per_s']:.0f} frames/s; with audio {audio['ms_per_frame_per_stream']:.2f} ms, "
              f"gap-free {audio['gap_free']}, min slack {audio['min_slack_ms']:.0f} ms")
    print(f"join with 7 running: first audio {result['join']['first_audio_ms']:.1f} ms")


if __name__ == "__main__":
    main()
