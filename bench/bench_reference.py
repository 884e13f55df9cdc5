"""Benchmark the reference ``qwen-tts`` 0.1.1 generate (HF generate, sdpa attention, bf16, batch 1) on CUDA.

Usage (PYTHONPATH holding qwen-tts 0.1.1 + transformers 4.57.3, see bench/run_all.sh):
    python bench/bench_reference.py --ckpt CKPT --size 0.6b --out ref-0.6b.json [--frames 100 --repeats 2]

EOS is blocked by forcing ``min_new_tokens = max_new_tokens`` on the talker's HF generate (its
MinNewTokensLengthLogitsProcessor sets the EOS logit to -inf until then); qwen-tts hard-codes
``min_new_tokens=2`` and does not forward extra keywords, so the talker's ``generate`` is wrapped. With no EOS,
``max_new_tokens = n + 1`` yields ``n`` frames (the last sampled codebook-0 token never gets its residual codes).
The reference has no streaming output: its first audio arrives with the whole utterance.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import torch
from common import (
    FRAME_RATE_HZ,
    LANGUAGE,
    SAMPLES_PER_FRAME,
    SAMPLING,
    SPEAKER,
    TEXT,
    dtype_for,
    median_time,
    memory_report,
    parse_args,
    setup_logging,
    steady_ms_per_frame,
    timed,
    weight_bytes_per_frame,
    write_result,
)


class EosBlockingTimer:
    """Stands in for ``talker.generate``: forces min_new_tokens = max_new_tokens and times each call (s)."""

    def __init__(self, talker: torch.nn.Module) -> None:
        self.inner = talker.generate
        self.last_s = 0.0
        talker.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        self.last_s, out = timed(lambda: self.inner(*args, **kwargs))
        return out


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup_logging()
    import patches

    patches.apply()  # a program's entry: qwen_tts imports torchaudio
    from qwen_tts import Qwen3TTSModel

    torch.manual_seed(0)
    load_s, tts = timed(
        lambda: Qwen3TTSModel.from_pretrained(
            str(args.ckpt), device_map=args.device, dtype=dtype_for(args.device), attn_implementation="sdpa"
        )
    )
    talker_timer = EosBlockingTimer(tts.model.talker)

    def speak(frames: int) -> int:
        """Whole public call (codes + codec decode); returns the frames of audio it produced."""
        wavs, rate = tts.generate_custom_voice(
            TEXT, speaker=SPEAKER, language=LANGUAGE, max_new_tokens=frames + 1, **SAMPLING
        )
        produced, rest = divmod(len(wavs[0]), SAMPLES_PER_FRAME)
        if rate != 24000 or rest or produced != frames:
            raise RuntimeError(f"expected {frames} frames at 24 kHz, got {len(wavs[0])} samples at {rate} Hz")
        return produced

    speak(4)  # warm-up: cuBLAS handles, sdpa kernels, the codec decoder

    def codes_seconds(frames: int) -> float:
        speak(frames)
        return talker_timer.last_s

    per_frame = steady_ms_per_frame(codes_seconds, args.frames, args.repeats)
    wall_s, wall_all = median_time(lambda: speak(args.frames), args.repeats)
    audio_s = args.frames / FRAME_RATE_HZ
    write_result(
        args.out,
        {
            "system": "reference",
            "label": "qwen-tts 0.1.1 generate (HF, sdpa)",
            "versions": {
                "qwen-tts": importlib.metadata.version("qwen-tts"),
                "transformers": importlib.metadata.version("transformers"),
            },
            "size": args.size,
            "frames": args.frames,
            "eos_blocking": "talker HF generate with min_new_tokens = max_new_tokens = frames + 1",
            "load_s": load_s,
            "weights_per_frame": weight_bytes_per_frame(args.ckpt),
            "capture_s": None,
            **per_frame,
            "non_streaming": {"wall_s": wall_s, "all_s": wall_all, "audio_s": audio_s, "rtf": audio_s / wall_s},
            "first_audio_ms": {"whole_utterance": 1000.0 * wall_s},
            "streaming": None,
            "memory": memory_report(),
        },
    )


if __name__ == "__main__":
    main()
