"""numpy 2 on a torch built against numpy 1.x: tensors <-> arrays fail with ABI errors
("A module that was compiled using NumPy 1.x cannot be run in NumPy 2.x"). Refuse to start with a clear message.
"""

from __future__ import annotations

import numpy as np
import torch

from patches import PatchStatus

NAME = "numpy-abi"


class NumpyABIError(RuntimeError):
    pass


def torch_numpy_ok() -> bool:
    """True when torch and numpy exchange arrays (the call that breaks on an ABI mismatch)."""
    try:
        return bool(torch.from_numpy(np.arange(3, dtype=np.float32)).sum().item() == 3.0)
    except (RuntimeError, TypeError, ValueError):
        return False


def apply() -> PatchStatus:
    major = int(np.__version__.split(".")[0])
    if major < 2:
        return PatchStatus(NAME, False, f"numpy {np.__version__} < 2")
    if torch_numpy_ok():
        return PatchStatus(NAME, False, f"numpy {np.__version__} works with torch {torch.__version__}")
    raise NumpyABIError(
        f"numpy {np.__version__} cannot exchange arrays with torch {torch.__version__}, which was built against "
        "numpy 1.x. Fix: pip install 'numpy<2' (setup.sh keeps numpy<2 in its constraints file)."
    )
