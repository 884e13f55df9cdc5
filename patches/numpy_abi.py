"""numpy 2 under a torch built against numpy 1.x (NVIDIA's JetPack 24.xx wheels): refuse to start, say the fix.

How it fails: ``import torch`` still works. numpy 2 prints "A module that was compiled using NumPy 1.x cannot be
run in NumPy 2.x ...", torch warns "Failed to initialize NumPy: _ARRAY_API not found" and switches its numpy
bridge off, and every later ``torch.from_numpy`` / ``Tensor.numpy()`` raises ``RuntimeError: Numpy is not
available``: deep inside audio I/O, long after start-up. The probe makes exactly those two calls.
This patch cannot repair anything; it turns that late failure into one clear error at start-up.
"""

from __future__ import annotations

import numpy as np
import torch

from patches import NumpyABIError, PatchStatus

NAME = "numpy-abi"


def bridge_error() -> str | None:
    """None when torch and numpy exchange arrays both ways, else the error (the calls an ABI mismatch breaks)."""
    try:
        tensor = torch.from_numpy(np.arange(3, dtype=np.float32))  # (3,)
        back = tensor.numpy()  # (3,)
    except (RuntimeError, TypeError, ValueError, ImportError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if back.tolist() != [0.0, 1.0, 2.0]:
        return f"numpy -> torch -> numpy round trip returned {back.tolist()}"
    return None


def apply() -> PatchStatus:
    if int(np.__version__.split(".")[0]) < 2:
        return PatchStatus(NAME, False, f"numpy {np.__version__} < 2")
    error = bridge_error()
    if error is None:
        return PatchStatus(NAME, False, f"numpy {np.__version__} works with torch {torch.__version__}")
    raise NumpyABIError(
        f"numpy {np.__version__} cannot exchange arrays with torch {torch.__version__} ({error}): this torch was "
        "built against numpy 1.x. Fix: pip install 'numpy<2' (setup.sh keeps numpy<2 in its constraints file).")
