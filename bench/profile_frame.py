"""Where a graphed frame step spends its time on the GPU: kernel table per frame, and micro-timings of the kernels
the step is made of, each against the per-kernel floor of a CUDA graph.

Usage (repo root and qwen-tts 0.1.1 on PYTHONPATH, as bench_qwen3.py):
    python bench/profile_frame.py --ckpt CKPT --size 0.6b --out DIR

Writes ``DIR/profile-<size>.txt``: (1) the kernels of the frames of one graphed generation from the torch
profiler's trace (count, mean and total µs per frame by kernel name; kernel time summed vs the wall span, the rest
being gaps between kernels), the same for the eager path; (2) micro-timings, each op captured 200 times in one CUDA
graph: a 1024-element add (the floor per kernel), the talker's matmul shapes as ``matvec_variants.variants`` writes
them (that script covers all shapes, cuBLASLt and top-k; the profiles in results/2026-12-01-h200 come from an
earlier version that timed four call forms with cuBLAS and cuBLASLt here), RMSNorm, and single-token attention as
SDPA (each backend) or as matmul + softmax + matmul.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_qwen3 import sampling_params  # noqa: E402
from common import LANGUAGE, SPEAKER, TEXT, graph_us, setup_logging  # noqa: E402
from matvec_variants import variants  # noqa: E402

PROFILED_FRAMES = 40


def kernel_table(run: Callable[[], None], frames: int) -> list[str]:
    """Profile ``run`` (which makes ``frames`` frames) and tabulate its CUDA kernels per frame."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    if not kernels:
        return ["(the profiler recorded no kernels)"]
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in kernels:
        by_name[e["name"]].append(float(e["dur"]))
    busy = sum(float(e["dur"]) for e in kernels)
    span = max(float(e["ts"]) + float(e["dur"]) for e in kernels) - min(float(e["ts"]) for e in kernels)
    lines = [f"kernels: {len(kernels)} ({len(kernels) / frames:.0f} per frame); busy {busy / frames:.0f} µs per frame "
             f"of a {span / frames:.0f} µs span per frame (gaps {100 * (1 - busy / span):.0f}%)",
             f"{'per frame':>9} {'mean µs':>8} {'µs/frame':>9}  kernel"]
    rows = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
    for name, durs in rows[:45]:
        lines.append(f"{len(durs) / frames:9.1f} {sum(durs) / len(durs):8.2f} {sum(durs) / frames:9.1f}  {name[:150]}")
    return lines


def micro_timings(hidden: int, inter: int) -> list[str]:
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    lines = []
    small = torch.zeros(1024, device=dev)
    lines.append(f"floor: add_ on 1024 fp32: {graph_us(lambda: small.add_(1.0)):.2f} µs")
    shapes = {"talker qkv": (hidden, 4096), "talker o_proj": (2048, hidden), "talker gate_up": (hidden, 2 * inter),
              "talker down": (inter, hidden)}  # the predictor's are the 0.6B talker's
    lines += [variants(name, k, n) for name, (k, n) in shapes.items()]  # cuBLAS, default settings
    for n in (1024, 2048, 3072):
        x = torch.randn(1, n, device=dev, dtype=bf16)
        wn = torch.ones(n, device=dev, dtype=bf16)
        lines.append(f"rms_norm [1, {n}]: {graph_us(lambda: F.rms_norm(x, (n,), wn, 1e-6)):.2f} µs")
    qk = torch.randn(24, 128, device=dev, dtype=bf16)
    lines.append(f"rms_norm [24, 128] no weight: {graph_us(lambda: F.rms_norm(qk, (128,), None, 1e-6)):.2f} µs")
    rot = torch.randn(1, 3, 128, 128, device=dev, dtype=bf16)
    qk3 = torch.randn(1, 3, 8, 128, device=dev, dtype=bf16)
    out3 = torch.empty_like(qk3)
    lines.append(f"rope matmul [3, 8, 128] x [3, 128, 128]: {graph_us(lambda: torch.matmul(qk3, rot, out=out3)):.2f} µs")
    g = torch.randn(1, inter, device=dev, dtype=bf16)
    lines.append(f"silu [1, {inter}]: {graph_us(lambda: F.silu(g)):.2f} µs; silu*up "
                 f"{graph_us(lambda: F.silu(g) * g):.2f} µs")
    for keys in (2, 9, 16, 64, 256, 1024):
        q = torch.randn(1, 8, 2, 128, device=dev, dtype=bf16)
        cache = torch.randn(keys, 16, 128, device=dev, dtype=bf16)
        k = cache[:, :8].transpose(0, 1).unsqueeze(0)
        v = cache[:, 8:].transpose(0, 1).unsqueeze(0)
        parts = [f"attention T=1 S={keys}: sdpa {graph_us(lambda: F.scaled_dot_product_attention(q, k, v)):.2f}"]
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            try:
                with sdpa_kernel(backend):
                    t = graph_us(lambda: F.scaled_dot_product_attention(q, k, v))
                parts.append(f"{backend.name.lower()} {t:.2f}")
            except RuntimeError as exc:
                parts.append(f"{backend.name.lower()} n/a ({str(exc).splitlines()[0][:40]})")

        def manual():
            scores = torch.matmul(q, k.transpose(-1, -2))
            return torch.matmul(scores.softmax(-1), v)

        parts.append(f"matmul+softmax+matmul {graph_us(manual):.2f} µs")
        lines.append(", ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--size", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    setup_logging()
    from s2s.qwen3_tts import Qwen3TTS, SamplingParams

    tts = Qwen3TTS.from_pretrained(args.ckpt, device="cuda", dtype=torch.bfloat16)
    sampling = sampling_params(SamplingParams)
    tts.warmup(sampling)
    prompt = tts.prompt_custom_voice(TEXT, SPEAKER, language=LANGUAGE)

    def generate() -> None:
        tts.generate_codes(prompt, sampling, max_new_tokens=PROFILED_FRAMES + 1, suppress_eos=True)

    generate()
    lines = [f"# {args.size}: {torch.cuda.get_device_name()}, torch {torch.__version__}", "", "## graphed frames"]
    lines += kernel_table(generate, PROFILED_FRAMES)
    tts.use_graphs = False
    generate()
    lines += ["", "## eager frames (same kernels, launched one by one)"] + kernel_table(generate, PROFILED_FRAMES)
    tts.use_graphs = True
    talker = tts.talker.w
    hidden = talker.codec_embedding.shape[1]
    inter = talker.layers[0].down.shape[1]
    lines += ["", "## micro-timings (one CUDA graph of 200 calls; µs per call)"]
    lines += micro_timings(hidden, inter)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"profile-{args.size}.txt").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
