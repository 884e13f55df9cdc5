"""The checkpoint's text tokenizer (Qwen2 byte-level BPE: vocab.json, merges.txt, tokenizer_config.json), split into
pre-tokens exactly as the official qwen-tts 0.1.1 splits them.

qwen-tts loads its processor with ``fix_mistral_regex=True``. Under transformers 4.57.3 that replaces the Qwen
pre-tokenizer pattern by Mistral's whenever config.json's ``transformers_version`` is missing or lies in (4.57.2,
5.0) (the released checkpoints say 4.57.3, so it applies to them); transformers 5 never does. The two patterns differ
on words mixing case ("HelloWorld", "iPhone", "McDonald's"). To give the same token ids under any transformers, the
rule is applied here, by us, after loading.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from packaging.version import InvalidVersion, Version

from s2s.qwen3_tts.quiet import quiet_transformers

log = logging.getLogger(__name__)

REFERENCE_SPLIT_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The pre-tokenizer pattern transformers 4.57.3 installs for ``fix_mistral_regex=True``."""
_MISTRAL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")


def reference_replaces_pattern(config: dict) -> bool:
    """Whether qwen-tts 0.1.1 on transformers 4.57.3 tokenizes this checkpoint with ``REFERENCE_SPLIT_PATTERN``."""
    written_by = config.get("transformers_version")
    if not written_by:
        return True
    try:
        version = Version(written_by)
    except InvalidVersion:
        return True
    if version >= Version("5.0.0"):
        return False
    if version <= Version("4.57.2"):
        return config.get("model_type") is None or config.get("model_type") in _MISTRAL_TYPES
    return True


def load_text_tokenizer(folder: Path):
    """The tokenizer of a checkpoint folder (a transformers fast tokenizer), pre-tokenizing as the reference."""
    import tokenizers
    from transformers import AutoTokenizer

    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise ValueError(f"{folder} has no vocab.json / merges.txt: a Qwen3-TTS checkpoint folder holds its text "
                         "tokenizer next to config.json (download the whole model repository)")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), fix_mistral_regex=False)  # the rule is applied below
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if reference_replaces_pattern(config):
        split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(REFERENCE_SPLIT_PATTERN), behavior="isolated")
        tokenizer.backend_tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
            [split, tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        log.debug("%s: pre-tokenizing with the reference's replacement pattern", folder.name)
    return tokenizer
