"""The exact Qwen text tokenizer files (vocab.json, merges.txt, tokenizer_config.json), built without a model hub.

The Qwen BPE ranks ship in the PyPI package ``dashscope`` as ``dashscope/resources/qwen.tiktoken``: one line per
token, ``<base64 bytes> <rank>``, 151643 lines; the rank is the token id of Qwen2/Qwen3's ``vocab.json``.
Converting them to the byte-level BPE files that ``Qwen2Tokenizer`` reads:

- vocab.json: each token's bytes spelled with the GPT-2 byte-to-unicode alphabet, mapped to its rank;
- merges.txt: for every multi-byte token, byte-pair encoding of its own bytes using only lower ranks stops at exactly
  two parts; that pair is the merge that creates it. Merges are listed in the rank order of the token they create.

The special tokens are not in the BPE file; they are declared in tokenizer_config.json at their real ids
(151643-151675, Qwen3-TTS's set). The conversion takes about 1.5 s, so its result is cached under
``$S2S_CACHE_DIR`` (default ``~/.cache/s2s-edge``).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from s2s.models import cache_root

log = logging.getLogger(__name__)

BPE_TOKEN_COUNT = 151643
"""Tokens in qwen.tiktoken; the special tokens start at this id."""

SPECIAL_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
    (151669, "<|audio_start|>", True),
    (151670, "<|audio_end|>", True),
    (151671, "<tts_pad>", True),
    (151672, "<tts_text_bos>", True),
    (151673, "<tts_text_eod>", True),
    (151674, "<tts_text_bos_single>", True),
    (151675, "<|audio_pad|>", True),
)
"""(id, text, special) of the added tokens, as in Qwen3-TTS's tokenizer_config.json."""

_FORMAT_VERSION = 1
"""Bump when the written files change, so stale caches are rebuilt."""


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte alphabet: printable Latin-1 bytes stand for themselves, the rest get code points 256+."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def find_tiktoken_file() -> Path:
    """Locate dashscope's qwen.tiktoken without importing dashscope (its import pulls in a web client)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The Qwen tokenizer vocabulary comes from the 'dashscope' package, which is not installed: "
            "run `pip install dashscope==2.0.2` (only its data file is used)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall it with `pip install --force-reinstall dashscope==2.0.2`.")
    return path


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken rank file into {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _merge_pair(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Run BPE on ``token``'s bytes with merges ranked below ``rank`` until two parts are left."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = rank, -1
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1], rank)
            if pair_rank < best_rank:
                best_rank, best_at = pair_rank, i
        if best_at < 0:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower-ranked merges")
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return parts[0], parts[1]


def convert_ranks(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[str]]:
    """Turn tiktoken ranks into (vocab, merges) of a byte-level BPE in the GPT-2 alphabet."""
    alphabet = byte_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _merge_pair(token, rank, ranks)
            merges.append(f"{spell(left)} {spell(right)}")
    return vocab, merges


def tokenizer_config() -> dict:
    """tokenizer_config.json of the Qwen3-TTS checkpoints (Qwen2Tokenizer with the TTS special tokens)."""
    added = {
        str(token_id): {
            "content": text,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for token_id, text, special in SPECIAL_TOKENS
    }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [text for token_id, text, special in SPECIAL_TOKENS if special][1:],
        "audio_bos_token": "<|audio_start|>",
        "audio_eos_token": "<|audio_end|>",
        "audio_token": "<|audio_pad|>",
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def cache_dir() -> Path:
    """Where converted files are kept between runs."""
    return cache_root() / f"qwen-vocab-v{_FORMAT_VERSION}"


def _convert_into(folder: Path) -> None:
    source = find_tiktoken_file()
    log.info("converting %s to vocab.json/merges.txt (once; cached in %s)", source, folder)
    vocab, merges = convert_ranks(read_ranks(source))
    if len(vocab) != BPE_TOKEN_COUNT:
        raise RuntimeError(f"{source} holds {len(vocab)} tokens, expected {BPE_TOKEN_COUNT}: wrong dashscope version?")
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    try:
        staging.rename(folder)  # atomic: a concurrent builder either wins or finds the folder complete
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "merges.txt").is_file():
            raise


def write_tokenizer_files(out_dir: str | Path) -> None:
    """Write vocab.json, merges.txt and tokenizer_config.json into ``out_dir`` (converting once, then from cache)."""
    out = Path(out_dir)
    cached = cache_dir()
    if not (cached / "merges.txt").is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        _convert_into(cached)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(cached / name, out / name)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n")
