"""Jetson compatibility patches: each detects its breakage, applies only where it is present, and is idempotent.

Call ``patches.apply()`` once at start-up, before ``qwen_tts`` is imported:
- ``numpy_abi``: refuses numpy 2 under a torch built against numpy 1.x (raises ``NumpyABIError`` with the fix);
- ``torchaudio_shim``: a pure-torch ``torchaudio.compliance.kaldi`` where the real torchaudio does not import;
- ``sdpa_gqa``: stops transformers passing ``enable_gqa`` to an SDPA that lacks it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchStatus:
    name: str
    applied: bool
    """True when the breakage was detected and the patch is active."""
    detail: str
    """Why it applied or not (shown by `s2s check`)."""


class NumpyABIError(RuntimeError):
    """numpy and torch cannot exchange arrays (raised by ``apply()``; the message says the fix)."""


_STATUS: dict[str, PatchStatus] = {}


def apply() -> list[PatchStatus]:
    """Apply every patch whose breakage is present. Safe to call more than once; logs each result once."""
    from patches import numpy_abi, sdpa_gqa, torchaudio_shim

    for patch in (numpy_abi, torchaudio_shim, sdpa_gqa):
        if patch.NAME in _STATUS:
            continue
        status = patch.apply()
        _STATUS[patch.NAME] = status
        level = logging.WARNING if status.applied else logging.INFO
        log.log(level, "patch %s: %s (%s)", status.name, "applied" if status.applied else "not needed", status.detail)
    return list(_STATUS.values())


def status() -> list[PatchStatus]:
    """What ``apply()`` decided so far."""
    return list(_STATUS.values())
