"""Measure the GPU's memory bandwidth with a large device-to-device copy (bytes read + bytes written).

Usage: python bench/bandwidth.py --out bandwidth.json [--gib 4]
The copy is timed with CUDA events over several repetitions after a warm-up; the median is reported. The figure
is the ceiling the per-frame weight reads are compared with (the "bandwidth floor" in the results).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from common import setup_logging, write_result


def copy_bandwidth_gbps(gib: float, repeats: int = 20) -> dict[str, float]:
    """Median copy bandwidth (GB/s, 1e9 bytes, read + write) of a ``gib`` GiB buffer."""
    numel = int(gib * (1 << 30)) // 2
    src = torch.randn(numel, dtype=torch.bfloat16, device="cuda")  # [numel] random (not zeros)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times_ms = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times_ms.append(begin.elapsed_time(end))
    if not torch.equal(dst, src):
        raise RuntimeError("device copy produced a different buffer: the bandwidth figure is not valid")
    moved = 2 * src.numel() * src.element_size()
    median_ms = statistics.median(times_ms)
    return {"gbps": moved / (median_ms * 1e-3) / 1e9, "median_ms": median_ms, "bytes_moved": moved, "gib": gib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--gib", type=float, default=4.0)
    args = parser.parse_args()
    setup_logging()
    write_result(args.out, {"system": "bandwidth", "copy": copy_bandwidth_gbps(args.gib)})


if __name__ == "__main__":
    main()
