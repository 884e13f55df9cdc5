"""CUDA graph capture of the frame-step functions.

A step function takes no arguments and only reads/writes static buffers, so a graph replay is the whole step.
Capture follows the usual recipe: a few warm-up calls on a side stream (lazy inits, cuBLAS workspaces, and for
``torch.compile`` the compilation itself), then ``torch.cuda.graph`` capture into a memory pool shared by all of
the engine's graphs. RNG ops use the default CUDA generator, which graph capture registers and advances on every
replay (supported since torch 1.10; nothing here needs newer than JetPack's torch 2.5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


class GraphPool:
    """Captures step functions into CUDA graphs that share one memory pool."""

    def __init__(self, warmup_calls: int = 2):
        self.pool = torch.cuda.graph_pool_handle()
        self.warmup_calls = warmup_calls
        self.capture_seconds = 0.0

    def capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        start = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_calls):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            fn()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        self.capture_seconds += elapsed
        log.debug("captured a CUDA graph in %.2f s", elapsed)
        return graph
