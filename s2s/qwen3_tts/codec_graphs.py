"""CUDA graphs for the streaming codec decoder: one graph per chunk size, replayed chunk after chunk.

``StreamingCodecDecoder`` updates its state in place and runs a fixed kernel sequence per chunk size, so the decode
of ``n`` frames can be captured once and replayed with new codes copied into a static ``[n, 16]`` buffer. Eager,
a chunk costs ~14 ms on an H100 (launch-bound); replayed, ~2.8 ms. Chunk sizes without a graph (and the
voice-clone context decoded by ``reset``) run eagerly on the same state, so mixing both stays exact.
Uses ``torch.cuda.CUDAGraph`` and ``torch.cuda.graph`` (torch >= 1.10; JetPack's 2.5 has both).
"""

from __future__ import annotations

import logging
import time

import torch

from s2s.qwen3_tts.codec_stream import StreamingCodecDecoder

log = logging.getLogger(__name__)


class GraphedCodecDecoder:
    """Same interface as ``StreamingCodecDecoder`` (``reset``, ``decode``, ``frames_decoded``)."""

    def __init__(self, decoder: StreamingCodecDecoder):
        self.decoder = decoder
        self.samples_per_frame = decoder.samples_per_frame
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        """chunk frames -> (graph, codes buffer [n, 16], audio output [n * 1920])."""
        self._pool = None
        self.capture_s = 0.0

    @property
    def frames_decoded(self) -> int:
        return self.decoder.frames_decoded

    @torch.inference_mode()
    def capture(self, chunk_sizes: tuple[int, ...]) -> None:
        """Capture one graph per chunk size (skipping sizes already captured); leaves the decoder reset."""
        start = time.perf_counter()
        for frames in sorted(set(chunk_sizes) - set(self._graphs)):
            codes = torch.zeros(frames, self.decoder.num_quantizers, dtype=torch.long, device=self.decoder.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.decoder.decode(codes)  # warm-up: cuDNN/cuBLAS handles and workspaces before capture
            torch.cuda.current_stream().wait_stream(side)
            self.decoder.reset()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                audio = self.decoder.decode(codes)  # recorded, not run
            self._pool = graph.pool()
            self._graphs[frames] = (graph, codes, audio)
        self.decoder.reset()
        self.capture_s += time.perf_counter() - start
        log.debug("codec decoder graphs for chunk sizes %s captured", sorted(self._graphs))

    def reset(self, context_codes: torch.Tensor | None = None) -> None:
        self.decoder.reset(context_codes)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [n, 16] -> float32 audio [n * 1920]; replayed when a graph of n frames exists, else eager."""
        entry = self._graphs.get(codes.shape[0]) if codes.ndim == 2 else None
        if entry is None:
            return self.decoder.decode(codes)
        graph, buffer, audio = entry
        buffer.copy_(codes)
        graph.replay()
        self.decoder.frames_decoded += codes.shape[0]
        return audio.clone()
