"""torchaudio: ``import qwen_tts`` imports ``torchaudio.compliance.kaldi`` (only the 25 Hz tokenizer ever calls
``kaldi.fbank``). On Jetson, PyPI torchaudio does not load against NVIDIA's torch (``OSError: libc10_cuda.so``,
undefined symbols); on a CPU-only x86 torch there is no matching torchaudio at all.

When, and only when, the real import fails, register our own ``torchaudio``, ``torchaudio.compliance`` and
``torchaudio.compliance.kaldi`` modules, the last backed by ``patches.kaldi`` (a pure-torch ``fbank`` with
torchaudio's numerics). Each module gets a real ``ModuleSpec``: transformers calls ``find_spec("torchaudio")``.
Set ``S2S_TORCHAUDIO_SHIM=force`` to use the shim even where a real torchaudio imports (e.g. one that crashes).
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import sys
import types

from patches import PatchStatus

NAME = "torchaudio-kaldi"
_MARK = "__s2s_shim__"
log = logging.getLogger(__name__)


def real_kaldi_error() -> str | None:
    """None when the real ``torchaudio.compliance.kaldi`` imports, else why it does not."""
    try:
        import torchaudio.compliance.kaldi  # noqa: F401
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _module(name: str, is_package: bool) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=is_package)
    if is_package:
        module.__path__ = []
    setattr(module, _MARK, True)
    return module


def install_shim() -> None:
    from patches import kaldi

    for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
        del sys.modules[name]
    top = _module("torchaudio", True)
    compliance = _module("torchaudio.compliance", True)
    kaldi_module = _module("torchaudio.compliance.kaldi", False)
    for public in kaldi.__all__:
        setattr(kaldi_module, public, getattr(kaldi, public))
    top.compliance = compliance
    compliance.kaldi = kaldi_module
    sys.modules.update({"torchaudio": top, "torchaudio.compliance": compliance,
                        "torchaudio.compliance.kaldi": kaldi_module})


def apply() -> PatchStatus:
    import transformers  # noqa: F401  (it probes find_spec("torchaudio") when imported: let it see the real state)

    if getattr(sys.modules.get("torchaudio"), _MARK, False):
        return PatchStatus(NAME, True, "already applied")
    forced = os.environ.get("S2S_TORCHAUDIO_SHIM", "").lower() == "force"
    error = "forced by S2S_TORCHAUDIO_SHIM=force" if forced else real_kaldi_error()
    if error is None:
        return PatchStatus(NAME, False, "the real torchaudio.compliance.kaldi imports")
    install_shim()
    return PatchStatus(NAME, True, f"real torchaudio unusable ({error}); using the pure-torch kaldi.fbank")
