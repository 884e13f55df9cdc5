"""Device and dtype resolution for every stage, written once.

``device = "auto"`` means CUDA when the stage's library sees a GPU, else the CPU; ``dtype = "auto"`` means bfloat16
on CUDA and float32 on the CPU. A stage that asks for ``cuda`` on a machine where its library sees no GPU gets a
``ValueError`` naming its config key and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")


def torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(section: str, device: str, cuda_count: Callable[[], int] = torch_cuda_count,
                   library: str = "torch") -> str:
    """"cuda" or "cpu" for ``[section] device`` (auto = cuda when ``cuda_count()`` sees a GPU)."""
    if device == "auto":
        return "cuda" if cuda_count() > 0 else "cpu"
    if device == "cuda" and cuda_count() == 0:
        raise ValueError(f"{section}.device = 'cuda' but {library} sees no CUDA GPU; set {section}.device = 'auto' "
                         f"or 'cpu', or install a CUDA build of {library} (./setup.sh; JETSON_SETUP.md on a Jetson)")
    return device


def dtype_name(dtype: str, device: str) -> str:
    """The dtype's name for ``dtype`` on ``device`` (auto = bfloat16 on CUDA, float32 on the CPU)."""
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return dtype


def torch_dtype(dtype: str, device: str):
    """The ``torch.dtype`` for ``dtype`` on ``device``."""
    import torch

    return getattr(torch, dtype_name(dtype, device))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
