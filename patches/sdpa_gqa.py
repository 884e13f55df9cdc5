"""SDPA ``enable_gqa``: transformers 4.57 passes ``enable_gqa=True`` to ``scaled_dot_product_attention`` on any
torch whose base version is >= 2.5. JetPack's ``2.5.0a0+...nv24.08`` passes that check but its SDPA has no such
argument (``TypeError: scaled_dot_product_attention() got an unexpected keyword argument 'enable_gqa'``).

Detection: one tiny CPU call of SDPA with ``enable_gqa=True``. Fix: make transformers' ``use_gqa_in_sdpa``
answer False, so it repeats the K/V heads itself (``repeat_kv``) and never passes the argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from patches import PatchStatus

NAME = "sdpa-enable-gqa"
_MARK = "_s2s_no_gqa"


def sdpa_accepts_enable_gqa() -> bool:
    """True when this torch's SDPA takes ``enable_gqa`` (probed with the call transformers makes)."""
    q = torch.zeros(1, 2, 1, 4)
    kv = torch.zeros(1, 1, 1, 4)
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    except TypeError:
        return False
    return True


def _no_gqa(*args, **kwargs) -> bool:
    return False


setattr(_no_gqa, _MARK, True)


def apply() -> PatchStatus:
    from transformers.integrations import sdpa_attention

    if getattr(sdpa_attention.use_gqa_in_sdpa, _MARK, False):
        return PatchStatus(NAME, True, "already applied")
    if sdpa_accepts_enable_gqa():
        return PatchStatus(NAME, False, f"torch {torch.__version__} SDPA accepts enable_gqa")
    sdpa_attention.use_gqa_in_sdpa = _no_gqa
    return PatchStatus(NAME, True, f"torch {torch.__version__} SDPA lacks enable_gqa; transformers repeats K/V heads")
