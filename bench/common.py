"""What every benchmark script shares: the workload, timers, the streaming gap check, the bandwidth floor, JSON out.

Each system (ours, the reference ``qwen-tts``, ``faster-qwen3-tts``) runs in its own process with its own
PYTHONPATH, so this module imports only the standard library, numpy and torch.

The workload is the same for every system: the CustomVoice speaker ``ryan``, language English, the ~20-word
``TEXT`` below, bf16, batch 1, sampling with the checkpoint defaults (temperature 0.9, top-k 50, top-p 1.0,
repetition penalty 1.05, sub-talker sampling on: faster-qwen3-tts's predictor cannot run greedy), and EOS blocked
until the requested frame count by each system's min-new-tokens rule (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("bench")

TEXT = (
    "The quick brown fox jumps over the lazy dog while the weather stays calm and bright "
    "across the quiet valley today."
)
SPEAKER = "ryan"
LANGUAGE = "english"
FRAME_RATE_HZ = 12.5
"""Codec frames per second of audio (1920 samples at 24 kHz)."""
SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 1920
ORIN_BANDWIDTH_GBPS = 204.8
"""Jetson AGX Orin 32/64 GB DRAM bandwidth from NVIDIA's data sheet (GB/s, 1e9 bytes)."""

SAMPLING = {
    "do_sample": True,
    "temperature": 0.9,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
}
"""The checkpoint's generation_config.json defaults, spelled as the reference's generate keywords."""

STEADY_SHORT_FRAMES = 20
"""ms/frame is measured as (t(long) - t(short)) / (long - short): prefill and fixed costs cancel out."""


def parse_args(description: str) -> argparse.Namespace:
    """The arguments every system's script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint directory (CustomVoice)")
    parser.add_argument("--size", required=True, choices=["0.6b", "1.7b"])
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--frames", type=int, default=100, help="frames per measured utterance (EOS blocked)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the median is reported")
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--mode", default="graphs", help="variant of the system (ours: graphs, compile, eager)")
    parser.add_argument("--device", default="cuda", help="cuda (bf16) for results; cpu (float32) to smoke-test")
    return parser.parse_args()


def dtype_for(device: str) -> torch.dtype:
    """bf16 on the GPU (the benchmark's precision); float32 on a CPU, where the scripts are only smoke-tested."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` with the device drained before and after (work is asynchronous)."""
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def graph_us(op: Callable[[], object], replays: int = 200) -> float:
    """µs per call of ``op`` captured ``replays`` times in one CUDA graph (median of 5 replays): the cost of a
    kernel inside a graph, launch gaps included, as a graphed frame step pays it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            op()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(replays):
            op()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(1000.0 * start.elapsed_time(end) / replays)
    return sorted(times)[2]


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median and all wall times (s) of ``repeats`` calls of ``fn``."""
    times = [timed(fn)[0] for _ in range(repeats)]
    return statistics.median(times), times


def steady_ms_per_frame(seconds_for: Callable[[int], float], frames: int, repeats: int) -> dict[str, Any]:
    """ms per frame of the decode loop (talker + 15 predictor steps + sampling), prefill excluded.

    ``seconds_for(n)`` generates exactly ``n`` frames (no codec decoding) and returns the seconds it took. Both
    lengths are measured ``repeats`` times and the medians subtracted, so prefill and fixed costs cancel out.
    """
    if frames <= STEADY_SHORT_FRAMES:
        raise ValueError(f"--frames must exceed {STEADY_SHORT_FRAMES} to measure ms/frame; got {frames}")
    short_all = [seconds_for(STEADY_SHORT_FRAMES) for _ in range(repeats)]
    long_all = [seconds_for(frames) for _ in range(repeats)]
    t_short, t_long = statistics.median(short_all), statistics.median(long_all)
    return {
        "ms_per_frame": 1000.0 * (t_long - t_short) / (frames - STEADY_SHORT_FRAMES),
        "ms_per_frame_incl_prefill": 1000.0 * t_long / frames,
        "short_frames": STEADY_SHORT_FRAMES,
        "long_frames": frames,
        "short_s": short_all,
        "long_s": long_all,
    }


@dataclass
class ChunkRecord:
    ready_s: float
    """Seconds from the request until this chunk was in hand."""
    samples: int


def stream_report(chunks: list[ChunkRecord]) -> dict[str, Any]:
    """Streaming figures from per-chunk ready times.

    Playback starts when the first chunk is ready; chunk i > 0 is due when every earlier chunk has played, i.e. at
    ``ready[0] + audio_before_i``. ``min_slack_ms`` (over chunks 2..n) < 0 means a gap (the speaker ran dry).
    """
    if not chunks:
        raise ValueError("the stream yielded no audio")
    start = chunks[0].ready_s
    played = chunks[0].samples
    slacks = []
    for chunk in chunks[1:]:
        due = start + played / SAMPLE_RATE
        slacks.append(due - chunk.ready_s)
        played += chunk.samples
    wall = chunks[-1].ready_s
    audio_s = played / SAMPLE_RATE
    min_slack = min(slacks, default=float("inf"))
    return {
        "first_audio_ms": 1000.0 * start,
        "chunks": len(chunks),
        "audio_s": audio_s,
        "wall_s": wall,
        "rtf": audio_s / wall,
        "min_slack_ms": 1000.0 * min_slack if slacks else None,
        "gap_free": min_slack >= 0.0,
        "ready_ms": [1000.0 * c.ready_s for c in chunks],
        "cum_audio_ms": [1000.0 * sum(c.samples for c in chunks[: i + 1]) / SAMPLE_RATE for i in range(len(chunks))],
    }


def record_stream(chunks: Iterable[Any], samples_of: Callable[[Any], int]) -> list[ChunkRecord]:
    """Consume a stream, stamping each item's ready time (device drained) and its sample count."""
    records = []
    sync()
    start = time.perf_counter()
    for item in chunks:
        sync()
        records.append(ChunkRecord(ready_s=time.perf_counter() - start, samples=samples_of(item)))
    return records


def first_chunk_ms(open_stream: Callable[[], Iterable[Any]], repeats: int) -> dict[str, Any]:
    """Median time (ms) from the request to the first audio chunk; the rest of each stream is abandoned."""
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        stream = iter(open_stream())
        next(stream)
        sync()
        times.append(1000.0 * (time.perf_counter() - start))
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return {"median_ms": statistics.median(times), "all_ms": times}


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def memory_report() -> dict[str, float]:
    """Peak and current GPU memory (GiB) as PyTorch's allocator saw it since the process (or the last reset) began."""
    if not torch.cuda.is_available():
        return {}
    gib = float(1 << 30)
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / gib,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / gib,
        "allocated_gib": torch.cuda.memory_allocated() / gib,
    }


def weight_bytes_per_frame(ckpt: Path, bytes_per_param: int = 2) -> dict[str, float]:
    """Weight bytes one frame must read at batch 1 (qwen3-tts.md §4), from the checkpoint's config.json.

    One talker step reads every talker layer and the codec head; the 15 predictor passes read the 5 predictor
    layers 15 times, each of the 15 lm_heads once, and (1.7B) the talker->predictor projection once: only the
    frame's first predictor input needs it, the later inputs are codec embeddings whose projected rows can be
    tabulated once per model (as our engine does).
    Embedding lookups read single rows and KV-cache reads are small (112 KiB per cached talker position):
    both are left out, so this is a lower bound.
    """
    talker = json.loads((ckpt / "config.json").read_text())["talker_config"]
    predictor = talker["code_predictor_config"]

    def layer_params(cfg: dict[str, Any]) -> int:
        hidden, inter, head_dim = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
        q_width = cfg["num_attention_heads"] * head_dim
        kv_width = cfg["num_key_value_heads"] * head_dim
        attention = hidden * q_width + 2 * hidden * kv_width + q_width * hidden + 2 * head_dim
        return attention + 3 * hidden * inter + 2 * hidden

    groups = talker["num_code_groups"] - 1
    talker_params = talker["num_hidden_layers"] * layer_params(talker) + talker["hidden_size"] * talker["vocab_size"]
    predictor_pass = predictor["num_hidden_layers"] * layer_params(predictor)
    heads = groups * predictor["hidden_size"] * predictor["vocab_size"]
    projection = 0
    if talker["hidden_size"] != predictor["hidden_size"]:
        projection = talker["hidden_size"] * predictor["hidden_size"] + predictor["hidden_size"]
    predictor_params = groups * predictor_pass + projection + heads
    total = talker_params + predictor_params
    return {
        "talker_params": talker_params,
        "predictor_params": predictor_params,
        "params": total,
        "bytes": total * bytes_per_param,
    }


def environment() -> dict[str, Any]:
    """GPU, library versions and date, for the results header."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / float(1 << 30), sms=props.multi_processor_count)
    return info


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment(), **result}
    path.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", path)
