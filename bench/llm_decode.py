"""LLM decode: our static-cache decode (s2s.llm_decode, CUDA graphs) against transformers' ``generate``, in one run.

Usage (GPU machine, repo root, our stack on PYTHONPATH as in bench/README.md "Running it"):
    PYTHONPATH=$PWD:/tmp/site-ours python bench/llm_decode.py --out $OUT/llm
    python bench/llm_decode.py --out /tmp/x --device cpu --archs tiny --tokens 16      # a CPU smoke run

For each architecture (random weights of the exact shapes, bf16 on CUDA, built on the device: bench/chat_llm.py):
a prompt of ``--prompt`` random ids, then ``--tokens`` greedy ids with the end token never stopping either side
(``min_new_tokens`` for generate, no end ids for ours). ms per token = (t(N) - t(8)) / (N - 8): prefill and fixed
costs cancel; time to first token = prompt in -> first id on the host. Medians of ``--repeats``. Systems:
``generate`` (transformers, DynamicCache, sdpa), ``ours-graphs`` and ``ours-eager`` (the same step without graphs).
Also the greedy ids' agreement with generate (bf16: informative; the fp32 equality is tests/test_llm_decode.py).
Results: OUT/llm-decode.json and OUT/llm-decode.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chat_llm import ARCHS, build_model
from common import environment, setup_logging

from s2s.llm_decode import StaticDecoder

log = logging.getLogger("bench")
SHORT = 8
TARGET_RATIO = 3.0


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def generate_ids(model, prompt: torch.Tensor, n: int) -> list[int]:
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


def static_ids(decoder: StaticDecoder, prompt: torch.Tensor, n: int) -> list[int]:
    decoder.reset()
    return list(decoder.decode(decoder.extend(prompt), n, 0.0, set()))


def measure(run, prompt: torch.Tensor, tokens: int, repeats: int) -> dict:
    """ms/token, time to first token and the ids of one system (``run(prompt, n) -> ids``)."""
    run(prompt, SHORT)  # warm-up: allocator, kernels
    long, short, first = [], [], []
    for _ in range(repeats):
        t_long, ids = timed(lambda: run(prompt, tokens))
        assert len(ids) == tokens, f"asked {tokens} ids, got {len(ids)}"
        long.append(t_long)
        short.append(timed(lambda: run(prompt, SHORT))[0])
        first.append(timed(lambda: run(prompt, 1))[0])
    ms_per_token = (statistics.median(long) - statistics.median(short)) / (tokens - SHORT) * 1000
    return {"ms_per_token": round(ms_per_token, 3), "first_token_ms": round(statistics.median(first) * 1000, 2),
            "total_ms": round(statistics.median(long) * 1000, 1), "ids": ids}


def bench_arch(arch: str, device: str, dtype: torch.dtype, prompt_len: int, tokens: int, repeats: int) -> dict:
    model = build_model(arch, device, dtype)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, prompt_len), generator=torch.Generator().manual_seed(0)).to(device)
    params = sum(p.numel() for p in model.parameters())
    row: dict = {"arch": arch, "params_m": round(params / 1e6, 1), "prompt": prompt_len, "tokens": tokens}
    with torch.inference_mode():
        row["generate"] = measure(lambda p, n: generate_ids(model, p, n), prompt, tokens, repeats)
    max_len = prompt_len + tokens + 8
    graphs = StaticDecoder(model, max_len)
    start = time.perf_counter()
    graphs.capture(0.0)
    row["capture_s"] = round(time.perf_counter() - start, 2)
    row["graphs"] = graphs.use_graphs
    row["ours-graphs"] = measure(lambda p, n: static_ids(graphs, p, n), prompt, tokens, repeats)
    eager = StaticDecoder(model, max_len, enforce_eager=True)
    row["ours-eager"] = measure(lambda p, n: static_ids(eager, p, n), prompt, tokens, repeats)
    reference = row["generate"]["ids"]
    for system in ("ours-graphs", "ours-eager"):
        ids = row[system].pop("ids")
        row[system]["same_ids_as_generate"] = next((i for i, (a, b) in enumerate(zip(ids, reference))
                                                     if a != b), len(ids))
    row["generate"].pop("ids")
    row["ratio"] = round(row["generate"]["ms_per_token"] / row["ours-graphs"]["ms_per_token"], 2)
    if device.startswith("cuda"):
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    log.info("%s: generate %.2f ms/token, ours %.2f (graphs) / %.2f (eager); x%.1f", arch,
             row["generate"]["ms_per_token"], row["ours-graphs"]["ms_per_token"], row["ours-eager"]["ms_per_token"],
             row["ratio"])
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"# LLM decode: static cache + CUDA graphs vs transformers generate ({result['date']})",
        "",
        f"{env.get('gpu', 'CPU')}, torch {env['torch']}, transformers {result['transformers']}, {result['dtype']}, "
        f"batch 1, random weights of the exact shapes, prompt {result['prompt']} random ids, {result['tokens']} "
        f"greedy ids (end token never stops). ms/token = (t({result['tokens']}) - t({SHORT})) / "
        f"{result['tokens'] - SHORT}; first token = prompt in -> first id on the host; medians of "
        f"{result['repeats']}.",
        "",
        "| model | params | generate ms/token (first) | ours graphs ms/token (first) | ours eager ms/token | "
        "generate / ours | ids equal to generate | capture s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        g, o, e = row["generate"], row["ours-graphs"], row["ours-eager"]
        lines.append(f"| {row['arch']} | {row['params_m']} M | {g['ms_per_token']} ({g['first_token_ms']} ms) | "
                     f"{o['ms_per_token']} ({o['first_token_ms']} ms) | {e['ms_per_token']} | **{row['ratio']}x** | "
                     f"first {o['same_ids_as_generate']} of {row['tokens']} | {row['capture_s']} |")
    met = all(row["ratio"] >= TARGET_RATIO for row in result["rows"])
    lines += ["", f"Target: at least {TARGET_RATIO:g}x fewer ms per token than generate: "
              f"{'met' if met else 'NOT met'} for every model."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--archs", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen3-0.6b", "smollm2-135m",
                                                       "llama3.2-1b"], choices=sorted(ARCHS))
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    setup_logging()
    import transformers

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    rows = [bench_arch(arch, args.device, dtype, args.prompt, args.tokens, args.repeats) for arch in args.archs]
    result = {"date": time.strftime("%Y-%m-%d"), "environment": environment(), "transformers": transformers.__version__,
              "dtype": str(dtype).removeprefix("torch."), "prompt": args.prompt, "tokens": args.tokens,
              "repeats": args.repeats, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm-decode.json").write_text(json.dumps(result, indent=2))
    (args.out / "llm-decode.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
