"""``compile=True``: the engine's per-layer step functions through ``torch.compile``, still captured in our graphs.

What is compiled is exactly the eager code: the talker's single-token layer (``layers.decoder_layer``), the code
predictor's layer (``layers.decoder_layer_fixed_slots``) and the talker's logits processing + token selection. One
layer is a small FX graph (about 15 ops, no loops), so compiling is quick; the 28 talker layers share one compiled
function because they share shapes, and so do the 5 predictor layers. Inductor fuses the norms with their neighbours,
the q/k norm with the RoPE input, SiLU with the up-projection product and the sampling arithmetic; the matmuls and
the attention stay library kernels. Prefills (the talker prompt, and the predictor's 2-token start) stay eager: their
lengths vary and they run once per utterance or frame outside the hot single-token path.

Dynamo first specialises on the integer arguments (key length, first slot) and, on the first change, recompiles
them as symbolic sizes (automatic dynamic shapes), so the talker's key buckets and the predictor's 14 positions take
two compilations per function instead of one each. ``fullgraph=True``: a construct Dynamo cannot trace is an error
at warm-up, never a silent fall-back to eager. Needs Triton (desktop GPUs); JetPack's torch has none, so Jetson uses
the plain graphs.
"""

from __future__ import annotations

import logging

import torch
import torch._inductor.config

from s2s.qwen3_tts.layers import decoder_layer, decoder_layer_fixed_slots

log = logging.getLogger(__name__)


def compile_steps(talker, predictor) -> None:
    """Swap the step functions of ``talker`` and ``predictor`` for their compiled versions (compiled lazily, at the
    first call: the warm-up calls before graph capture)."""
    torch._inductor.config.fallback_random = True  # aten's RNG ops: the same draws as eager, graph-capture safe
    talker.step_layer = torch.compile(decoder_layer, fullgraph=True)
    predictor.step_layer = torch.compile(decoder_layer_fixed_slots, fullgraph=True)
    talker.sample = torch.compile(talker.sample, fullgraph=True)
    log.info("compile=True: the talker and code predictor step layers and the talker sampling go through "
             "torch.compile at the first warm-up (tens of seconds)")
