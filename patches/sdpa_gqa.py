"""SDPA ``enable_gqa``: transformers 4.57 passes ``enable_gqa=True`` to ``scaled_dot_product_attention`` whenever
a module has ``num_key_value_groups`` and the mask is None, on any torch whose *base* version is >= 2.5. JetPack's
``2.5.0a0+872d972e41.nv24.08`` passes that check (base version 2.5.0) but predates the argument, so qwen-tts's
12 Hz speech tokenizer (loaded with SDPA) fails with ``TypeError: scaled_dot_product_attention() got an unexpected
keyword argument 'enable_gqa'``.

Detection: one tiny CPU SDPA call with ``enable_gqa=True`` (the call transformers makes, looked up at call time).
Fix: make ``transformers.integrations.sdpa_attention.use_gqa_in_sdpa`` answer False, so transformers repeats the
K/V heads itself (``repeat_kv``, a no-op for 1 group) and never passes the argument. No file is edited.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from patches import PatchStatus

NAME = "sdpa-enable-gqa"
_MARK = "__s2s_no_gqa__"


def enable_gqa_error() -> str | None:
    """None when this torch's SDPA takes ``enable_gqa``, else the error the probe call raised."""
    q = torch.zeros(1, 2, 1, 4)  # (batch, query heads, seq, head_dim)
    kv = torch.zeros(1, 1, 1, 4)  # (batch, kv heads, seq, head_dim): 2 query heads per K/V head
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    except (TypeError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _never_gqa(*args: object, **kwargs: object) -> bool:
    """Replacement for ``use_gqa_in_sdpa``: always take transformers' repeat_kv path."""
    return False


setattr(_never_gqa, _MARK, True)


def apply() -> PatchStatus:
    from transformers.integrations import sdpa_attention

    current = getattr(sdpa_attention, "use_gqa_in_sdpa", None)
    if getattr(current, _MARK, False):
        return PatchStatus(NAME, True, "already applied")
    error = enable_gqa_error()
    if error is None:
        return PatchStatus(NAME, False, f"torch {torch.__version__} SDPA accepts enable_gqa")
    if current is None:  # a transformers without use_gqa_in_sdpa always repeats K/V heads itself
        return PatchStatus(NAME, False, f"SDPA rejects enable_gqa ({error}) but this transformers never passes it")
    sdpa_attention.use_gqa_in_sdpa = _never_gqa
    return PatchStatus(NAME, True, f"torch {torch.__version__} SDPA rejects enable_gqa ({error}); "
                                   "transformers repeats K/V heads instead")
