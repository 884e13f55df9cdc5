"""torchaudio: ``import qwen_tts`` imports ``torchaudio.compliance.kaldi`` (only the 25 Hz tokenizer ever calls
``kaldi.fbank``). On Jetson, PyPI torchaudio does not load against NVIDIA's torch (``OSError: libc10_cuda.so``,
undefined symbols, a CUDA version check); on a CPU-only x86 torch there may be no matching torchaudio at all.

When, and only when, the real import fails, register our own ``torchaudio``, ``torchaudio.compliance`` and
``torchaudio.compliance.kaldi`` modules, the last backed by ``patches.kaldi`` (pure torch, torchaudio's numerics).
Each module gets a real ``ModuleSpec``: transformers calls ``find_spec("torchaudio")`` and fails on a module
without one. Anything else asked of the stand-in raises an ``AttributeError`` that says it is a stand-in.
Set ``S2S_TORCHAUDIO_SHIM=force`` to use it even where a real torchaudio imports (e.g. one that crashes later).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from collections.abc import Callable
from typing import NoReturn

from patches import PatchStatus

NAME = "torchaudio-kaldi"
FORCE_ENV = "S2S_TORCHAUDIO_SHIM"
_MARK = "__s2s_shim__"
_MODULES = ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi")


def real_kaldi_error() -> str | None:
    """None when the real ``torchaudio.compliance.kaldi`` imports, else why it does not."""
    try:
        import torchaudio.compliance.kaldi  # noqa: F401
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def shim_reason(module: types.ModuleType | None) -> str | None:
    """Why the stand-in was installed, for a module this patch registered; None for any other module."""
    return getattr(module, _MARK, None) if isinstance(module, types.ModuleType) else None


def _missing(name: str, reason: str) -> Callable[[str], NoReturn]:
    """A module ``__getattr__`` that explains why ``name.<attr>`` is absent."""

    def __getattr__(attr: str) -> NoReturn:
        raise AttributeError(f"{name}.{attr} is not available: s2s replaced torchaudio ({reason}) with a stand-in "
                             "that provides only torchaudio.compliance.kaldi. Install a torchaudio built for this "
                             "torch to get the rest.")

    return __getattr__


def _module(name: str, origin: str, reason: str) -> types.ModuleType:
    is_package = name != _MODULES[-1]
    module = types.ModuleType(name, f"s2s stand-in for {name} (see patches.torchaudio_shim).")
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, origin=origin, is_package=is_package)
    module.__file__ = origin
    if is_package:
        module.__path__ = []
    module.__getattr__ = _missing(name, reason)
    setattr(module, _MARK, reason)
    return module


def install_shim(reason: str) -> None:
    """Replace any (half-imported) torchaudio in ``sys.modules`` with the stand-in package."""
    from patches import kaldi

    for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
        del sys.modules[name]
    top, compliance = (_module(name, __file__, reason) for name in _MODULES[:2])
    kaldi_module = _module(_MODULES[2], kaldi.__file__, reason)
    for public in kaldi.__all__:
        setattr(kaldi_module, public, getattr(kaldi, public))
    kaldi_module.__all__ = list(kaldi.__all__)
    top.compliance = compliance
    compliance.kaldi = kaldi_module
    sys.modules.update(zip(_MODULES, (top, compliance, kaldi_module), strict=True))


def apply() -> PatchStatus:
    installed = shim_reason(sys.modules.get("torchaudio"))
    if installed is not None:
        return PatchStatus(NAME, True, f"already applied ({installed})")
    if os.environ.get(FORCE_ENV, "").lower() == "force":
        reason = f"forced by {FORCE_ENV}=force"
    else:
        error = real_kaldi_error()
        if error is None:
            return PatchStatus(NAME, False, "the real torchaudio.compliance.kaldi imports")
        reason = f"the real torchaudio does not import: {error}"
    install_shim(reason)
    return PatchStatus(NAME, True, f"{reason}; using the pure-torch patches.kaldi")
