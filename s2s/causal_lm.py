"""Loading a transformers causal LM and its tokenizer: a model folder, a hub name, or a GGUF file.

A GGUF file is dequantized once by transformers and kept as a plain transformers folder in the cache
(``s2s.models.gguf_conversion_dir``), so later starts skip the conversion. Used by the LLM stage and by the
end-of-turn model (``s2s.end_of_turn``).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch

from s2s.models import check_gguf, gguf_conversion_dir

log = logging.getLogger(__name__)


def load_causal_lm(path: str, gguf_file: str | None, device: torch.device | str, dtype: torch.dtype,
                   what: str = "LLM") -> tuple[torch.nn.Module, object]:
    """(model on ``device`` in eval mode, tokenizer) from ``path`` (a folder or hub name) and, for a GGUF model,
    the file name inside it (``s2s.models.llm_model`` gives both). ``what`` names the user in log lines."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = gguf_conversion_dir(path, gguf_file) if gguf_file else None
    if converted is not None and (converted / "config.json").is_file():
        path, gguf_file = str(converted), None
    source = f"{path}/{gguf_file} (GGUF: dequantizing once, then cached)" if gguf_file else path
    log.info("%s: loading %s on %s (%s)", what, source, device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=dtype)
    except Exception:
        if gguf_file:
            check_gguf(Path(path) / gguf_file)  # a truncated or corrupt file: say so, and how to get a good one
        raise
    if gguf_file and converted is not None:
        save_conversion(model, tokenizer, converted, what)
    return model.to(device).eval(), tokenizer


def cache_argument(model: torch.nn.Module) -> str:
    """The forward's K/V cache argument: ``cache`` from transformers 5.x (``past_key_values`` is deprecated there),
    ``past_key_values`` before. The model's output names its cache the same way."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def save_conversion(model, tokenizer, folder: Path, what: str = "LLM") -> None:
    """Keep a dequantized GGUF model as a plain transformers folder so later starts skip the conversion."""
    staging = folder.with_name(folder.name + ".partial")
    if getattr(model, "hf_quantizer", None) is not None:
        # transformers 5 keeps the GGUF "quantizer" on the loaded model and refuses to save it, although the weights
        # are already dequantized into plain tensors: drop that record, so the folder loads as a plain model.
        model.hf_quantizer = None
        model.config.quantization_config = None
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.replace(folder)
    except OSError as exc:
        log.warning("%s: could not cache the converted model in %s (%s); the next start converts again", what,
                    folder, exc)
    else:
        log.info("%s: converted model cached in %s", what, folder)
