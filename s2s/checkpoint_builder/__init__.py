"""Random-weight Qwen3-TTS checkpoints of the exact architecture, for tests and benchmarks (`s2s build-checkpoint`).

Nothing at run time uses this package: the engine (``s2s.qwen3_tts``) loads real and synthetic checkpoints alike.
``build.py`` writes the config files and weights with the reference's own classes; ``tokenizer_files.py`` turns
the Qwen vocabulary shipped by dashscope into the text tokenizer files.
"""

from s2s.checkpoint_builder.build import add_parser, build_checkpoint, cached_checkpoint, main

__all__ = ["add_parser", "build_checkpoint", "cached_checkpoint", "main"]
