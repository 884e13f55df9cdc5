"""Micro-timings of the ways to write one decode step's matrix-vector products and top-k on the GPU.

A frame step multiplies one row by each weight matrix. cuBLAS serves wide outputs well (qkv, gate/up: about 2x the
bytes floor) but K-heavy, narrow ones (o_proj 2048 -> 1024, down 3072 -> 1024) badly: a few thread blocks stream
the whole matrix (profile_frame.py, 2026-12-01: 10.8 us for o_proj against a 1 us floor on an H200). This script
times the alternatives, each captured 200 times in one CUDA graph (µs per call, median of 5 replays):

- ``linear``: F.linear(x, W) with W [N, K] (the layout of the checkpoint);
- ``addmm_``: res.addmm_(x, W.t()) (what the layers do: the residual add in the same kernel);
- ``t-layout``: the same with the weight stored transposed, [K, N] contiguous;
- ``splitK s``: K cut into s slices as one strided batched matmul of W's column blocks, [s, N] partial sums
  reduced into the residual by res.addmm_(ones [1, s], partials);
- ``rows b``: N cut into b batches of rows ([b, N/b, K] @ x), for more thread blocks;
- ``topk``/``sort`` of 2048 and 3072 logits (the sampler's top-50).

    python bench/matvec_variants.py [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import graph_us  # noqa: E402

BANDWIDTH = 4.2e12
SHAPES = {
    "o_proj 0.6b/pred": (2048, 1024),
    "down 0.6b/pred": (3072, 1024),
    "o_proj 1.7b": (2048, 2048),
    "down 1.7b": (6144, 2048),
    "qkv 0.6b/pred": (1024, 4096),
    "gate_up 0.6b/pred": (1024, 6144),
    "qkv 1.7b": (2048, 4096),
    "gate_up 1.7b": (2048, 12288),
    "head pred": (1024, 2048),
}


def split_k(x: torch.Tensor, w: torch.Tensor, res: torch.Tensor, parts: torch.Tensor, ones: torch.Tensor) -> None:
    """res [1, N] += x [1, K] @ W[N, K].T with K in s slices: one batched matmul into parts [s, N, 1], one addmm_."""
    s = parts.shape[0]
    n, k = w.shape
    blocks = w.view(n, s, k // s).transpose(0, 1)  # [s, N, K/s], strides (K/s, K, 1): no copy
    torch.bmm(blocks, x.view(s, k // s, 1), out=parts)  # [s, N, 1]
    res.addmm_(ones, parts.view(s, n))  # [1, N] += sum over slices


def variants(name: str, k: int, n: int) -> str:
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    w = torch.randn(n, k, device=dev, dtype=bf16) / k**0.5
    wt = w.t().contiguous()  # [K, N]
    x = torch.randn(1, k, device=dev, dtype=bf16)
    res = torch.zeros(1, n, device=dev, dtype=bf16)
    ref = F.linear(x.float(), w.float())
    floor = 2 * n * k / BANDWIDTH * 1e6
    parts_ = [f"{name:18} [{k:5}->{n:5}] floor {floor:5.2f}"]
    parts_.append(f"linear {graph_us(lambda: F.linear(x, w)):6.2f}")
    parts_.append(f"addmm_ {graph_us(lambda: res.addmm_(x, w.t())):6.2f}")
    parts_.append(f"t-layout {graph_us(lambda: res.addmm_(x, wt)):6.2f}")
    for s in (2, 4, 8, 16):
        if k % s:
            continue
        parts = torch.empty(s, n, 1, device=dev, dtype=bf16)
        ones = torch.ones(1, s, device=dev, dtype=bf16)
        t = graph_us(lambda: split_k(x, w, res, parts, ones))
        res.zero_()
        split_k(x, w, res, parts, ones)
        err = (res.float() - ref).abs().max().item()
        parts_.append(f"splitK{s} {t:6.2f} (err {err:.1e})")
    for b in (4, 16):
        rows = w.view(b, n // b, k)
        xb = x.view(1, k, 1).expand(b, k, 1)
        out = torch.empty(b, n // b, 1, device=dev, dtype=bf16)
        parts_.append(f"rows{b} {graph_us(lambda: torch.bmm(rows, xb, out=out)):6.2f}")
    return "  ".join(parts_)


def topk_lines() -> list[str]:
    lines = []
    for v, dtype in ((2048, torch.bfloat16), (3072, torch.float32)):
        logits = torch.randn(v, device="cuda", dtype=dtype)
        lines.append(
            f"top-50 of {v} {str(dtype)[6:]}: topk unsorted {graph_us(lambda: torch.topk(logits, 50, sorted=False)):.2f}"
            f"  topk sorted {graph_us(lambda: torch.topk(logits, 50)):.2f}"
            f"  sort {graph_us(lambda: torch.sort(logits, descending=True)):.2f}"
            f"  sort stable {graph_us(lambda: torch.sort(logits, descending=True, stable=True)):.2f}"
            f"  argmax {graph_us(lambda: logits.argmax(-1, keepdim=True)):.2f}  µs")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; µs per call in a CUDA graph"]
    for lib in ("cublas", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(lib)
        lines.append(f"## {lib}")
        lines += [variants(name, k, n) for name, (k, n) in SHAPES.items()]
    torch.backends.cuda.preferred_blas_library("default")
    lines += ["## top-k"] + topk_lines()
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
