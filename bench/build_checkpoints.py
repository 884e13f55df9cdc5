"""Build the synthetic full-size CustomVoice checkpoints the benchmark runs on (random weights, exact architecture).

Usage: python bench/build_checkpoints.py --root /tmp/ckpts [--sizes 0.6b 1.7b]
Writes ROOT/<size>-custom_voice/ with ``s2s.checkpoint_builder.build_checkpoint`` (seed 0) and skips a
checkpoint that is already there, so one machine builds each once.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from common import setup_logging, timed

log = logging.getLogger("bench")


def checkpoint_dir(root: Path, size: str) -> Path:
    return root / f"{size}-custom_voice"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--sizes", nargs="+", default=["0.6b", "1.7b"], choices=["0.6b", "1.7b"])
    args = parser.parse_args()
    setup_logging()
    import patches

    patches.apply()  # a program's entry: qwen_tts (used by the builder) imports torchaudio
    from s2s.checkpoint_builder.build import build_checkpoint

    for size in args.sizes:
        out = checkpoint_dir(args.root, size)
        if (out / "model.safetensors").exists() and (out / "speech_tokenizer" / "model.safetensors").exists():
            log.info("%s already built", out)
            continue
        seconds, _ = timed(lambda: build_checkpoint(out, size=size, kind="custom_voice", seed=0))
        log.info("built %s in %.1f s", out, seconds)


if __name__ == "__main__":
    main()
