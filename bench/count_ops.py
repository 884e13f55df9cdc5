"""Count the kernel-launching aten ops of one Qwen3-TTS frame step on the CPU (no GPU needed).

Once a frame step is captured as a CUDA graph it is bound by the number of kernels it launches (about 3 us each on
an H100), not by bytes. Each aten compute op is roughly one kernel, so the count of dispatched ops is a good proxy
that can be taken on a CPU. The model has the real layer counts and head layout (talker 28 layers, code predictor
5 layers, 16 q / 8 kv heads, vocabularies 3072 / 2048, 16 code groups) with small widths and random weights; the
op count does not depend on the widths. ``0.6b`` has no talker -> predictor projection (equal widths), ``1.7b`` has
one. The step runs in bf16, the dtype the GPU benchmark uses, so dtype casts are counted.

Counted: every aten op except views and allocations (view, reshape, expand, transpose, slice, select, empty, ...).
CPU-vs-CUDA difference handled: ``F.rms_norm`` is one fused kernel on CUDA (``_fused_rms_norm``) but decomposes into
six ops on the CPU, so it is counted as one. Ops are attributed to the innermost engine file on the Python stack.

    python bench/count_ops.py                 # table for 0.6b and 1.7b, sampled and greedy
    python bench/count_ops.py --ops           # plus the op histogram per step

Ops per frame, 0.6b sampled (predictor / talker / total): 1710 / 681 / 2391 with the first engine version,
950 / 369 / 1319 now (greedy 2279 -> 1267; 1.7b sampled 2406 -> 1320).
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import patches
from s2s.checkpoint_builder.build import build_main_model, main_config
from s2s.qwen3_tts.predictor import CodePredictor
from s2s.qwen3_tts.options import SamplingParams
from s2s.qwen3_tts.talker import Talker
from s2s.qwen3_tts.weights import take_weights

ENGINE_DIR = Path(__file__).resolve().parents[1] / "s2s" / "qwen3_tts"
FREE_OPS = {"view", "reshape", "_reshape_alias", "as_strided", "expand", "t", "transpose", "permute", "unsqueeze",
            "squeeze", "select", "slice", "detach", "alias", "_unsafe_view", "split", "split_with_sizes", "chunk",
            "unbind", "lift_fresh", "empty", "empty_like", "empty_strided", "view_as_real", "view_as_complex"}
"""aten ops that launch no kernel: views and allocations."""
SYNC_OPS = {"_local_scalar_dense", "item", "nonzero"}
"""Ops that make the host wait for the device: not allowed inside a captured step."""
PART_OF_FILE = {"sampling.py": "sampling", "layers.py": "layers", "rope.py": "layers", "kv_cache.py": "layers"}
"""Engine file -> part; any other engine file (talker.py, predictor.py, weights.py) counts as 'glue'."""

_WIDTHS = dict(hidden_size=64, intermediate_size=128, num_attention_heads=16, num_key_value_heads=8, head_dim=8)


class OpCounter(TorchDispatchMode):
    """Counts kernel-launching aten ops per (part, op name) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.syncs: list[str] = []
        self._muted = 0

    def record(self, name: str) -> None:
        self.counts[(_part_on_stack(), name)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self._muted and not func.is_view and name not in FREE_OPS:
            if name in SYNC_OPS:
                self.syncs.append(name)
            self.record(name)
        return func(*args, **(kwargs or {}))

    def fused(self, fn: Callable, name: str) -> Callable:
        """``fn`` counted as the one kernel ``name`` (what CUDA runs), its CPU decomposition not counted."""

        def wrapper(*args, **kwargs):
            self.record(name)
            self._muted += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._muted -= 1

        return wrapper


def _part_on_stack() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent == ENGINE_DIR:
            return PART_OF_FILE.get(path.name, "glue")
        frame = frame.f_back
    return "glue"


def build_talker(layout: str, max_seq_len: int = 256) -> Talker:
    """A bf16 talker + code predictor with the real depths and head layout, small widths, random weights."""
    config = main_config("tiny", "custom_voice")
    talker_cfg = config["talker_config"]
    talker_cfg.update(_WIDTHS, num_hidden_layers=28)
    predictor_widths = dict(_WIDTHS, hidden_size=64 if layout == "0.6b" else 32)
    talker_cfg["code_predictor_config"].update(predictor_widths, num_hidden_layers=5, layer_types=["full_attention"] * 5)
    model = build_main_model(config, torch.bfloat16)
    talker_w, predictor_w = take_weights(dict(model.state_dict()), model.config.talker_config)
    device, dtype = torch.device("cpu"), torch.bfloat16
    predictor = CodePredictor(predictor_w, talker_cfg["num_code_groups"], dtype, device)
    return Talker(talker_w, predictor, talker_cfg["codec_eos_token_id"], max_seq_len, dtype, device)


def count_frame(talker: Talker, sampling: SamplingParams) -> tuple[dict[str, collections.Counter], list[str]]:
    """Ops of one frame after a short prompt and one warm-up frame: {step: Counter[(part, op)]}, sync ops seen."""
    hidden = talker.w.codec_embedding.shape[1]
    prompt = torch.randn(1, 8, hidden, dtype=torch.bfloat16)  # [1, T, D]
    steps = {"predictor": lambda slot: talker.codes_step(sampling),  # as the engine runs them: the talker step
             "talker": lambda slot: talker.talker_step(sampling, talker.key_bucket(slot))}  # of the slot's bucket
    result, syncs = {}, []
    with torch.no_grad():
        talker.prefill(prompt, prompt[:, :2], prompt[:, :1], sampling, min_new_tokens=2)
        for fn in steps.values():
            fn(8)  # warm-up frame: the first frame writes cache slot 8 (after the 8 prompt rows)
        for step, fn in steps.items():
            counter = OpCounter()
            with _patched(F, "rms_norm", counter.fused(F.rms_norm, "_fused_rms_norm")), counter:
                fn(9)
            result[step] = counter.counts
            syncs += counter.syncs
    return result, syncs


class _patched:
    """Temporarily replace ``owner.name`` (restored on exit)."""

    def __init__(self, owner, name: str, value) -> None:
        self.owner, self.name, self.value = owner, name, value

    def __enter__(self):
        self.saved = getattr(self.owner, self.name)
        setattr(self.owner, self.name, self.value)

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.saved)


def _by_part(counts: collections.Counter) -> collections.Counter:
    parts: collections.Counter[str] = collections.Counter()
    for (part, _), n in counts.items():
        parts[part] += n
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", action="store_true", help="print the op histogram of each step")
    args = parser.parse_args()
    patches.apply()  # a program's entry: qwen_tts (used by the builder) imports torchaudio
    torch.set_num_threads(1)
    torch.manual_seed(0)
    modes = {"sampled": SamplingParams(), "greedy": SamplingParams.greedy()}
    print("| layout | sampling | predictor: layers / glue / sampling | talker: layers / glue / sampling | frame |")
    print("|---|---|---|---|---|")
    for layout in ("0.6b", "1.7b"):
        talker = build_talker(layout)
        for mode, sampling in modes.items():
            counts, syncs = count_frame(talker, sampling)
            if syncs:
                raise SystemExit(f"host syncs inside the frame step: {syncs}")
            cells = []
            for step in ("predictor", "talker"):
                parts = _by_part(counts[step])
                cells.append(f"{parts['layers']} / {parts['glue']} / {parts['sampling']} = {sum(parts.values())}")
            total = sum(sum(c.values()) for c in counts.values())
            print(f"| {layout} | {mode} | {cells[0]} | {cells[1]} | {total} |")
            if args.ops:
                for step, c in counts.items():
                    ops = collections.Counter()
                    for (part, name), n in c.items():
                        ops[f"{part}:{name}"] += n
                    print(f"  {step}: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))


if __name__ == "__main__":
    main()
