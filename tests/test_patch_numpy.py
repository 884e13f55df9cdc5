"""patches.numpy_abi: numpy 2 under a torch built against numpy 1.x is refused at start-up with the fix.

The breakage is emulated in a clean interpreter the way it happens: torch's numpy bridge asks numpy's
``_multiarray_umath`` for its ``_ARRAY_API`` capsule, numpy 2 refuses a numpy-1.x build, torch warns "Failed to
initialize NumPy" and every ``from_numpy`` / ``.numpy()`` then raises ``RuntimeError: Numpy is not available``
(seen with torch 2.2.2 + numpy 2.0.2). Here the capsule is hidden and ``numpy.__version__`` reads 2.0.2.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from fresh_python import run_python

from patches import numpy_abi

EMULATE_NUMPY2_UNDER_NUMPY1_TORCH = """
    import sys, types
    import numpy
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        sys.modules[name] = types.ModuleType(name)  # no _ARRAY_API: what numpy 2 shows a numpy-1.x extension
    numpy.__version__ = "2.0.2"
    import torch
"""


def test_numpy2_under_numpy1_torch_is_refused_with_the_fix() -> None:
    code = textwrap.dedent(EMULATE_NUMPY2_UNDER_NUMPY1_TORCH) + textwrap.dedent("""
        import json
        result = {}
        try:
            torch.from_numpy(numpy.arange(3))
        except RuntimeError as exc:
            result["reproduced"] = str(exc)
        import patches
        for attempt in ("first", "second"):
            try:
                patches.apply()
            except patches.numpy_abi.NumpyABIError as exc:
                result[attempt] = str(exc)
        result["recorded"] = [s.name for s in patches.status()]
        print(json.dumps(result))
    """)
    result = run_python(code)
    assert result["reproduced"] == "Numpy is not available"
    assert "numpy 2.0.2 cannot exchange arrays with torch" in result["first"]
    assert "Numpy is not available" in result["first"] and "pip install 'numpy<2'" in result["first"]
    assert result["second"] == result["first"], "a refused start-up must stay refused"
    assert result["recorded"] == []


def test_s2s_check_and_run_report_the_refusal_and_exit_1(tmp_path: Path) -> None:
    code = textwrap.dedent(EMULATE_NUMPY2_UNDER_NUMPY1_TORCH) + textwrap.dedent(f"""
        import contextlib, io, json
        from s2s import cli
        result = {{}}
        run = ["--set", "tts.backend=piper", "run", "--text", "hi", "--output", {str(tmp_path / "r.wav")!r}]
        for name, argv in (("check", ["check"]), ("run", run)):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main(argv)
            result[name] = [status, out.getvalue(), err.getvalue()]
        print(json.dumps(result))
    """)
    result = run_python(code)
    status, out, _ = result["check"]
    assert status == 1
    patch_lines = out.split("Jetson patches:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert patch_lines[0].split()[:2] == ["numpy-abi", "refused:"]
    assert "cannot exchange arrays with torch" in patch_lines[0] and "pip install 'numpy<2'" in patch_lines[0]
    status, _, err = result["run"]
    assert status == 1
    assert err.startswith("error: numpy 2.0.2 cannot exchange arrays with torch") and "Traceback" not in err
    assert not (tmp_path / "r.wav").exists()  # refused before any stage was set up


def test_no_op_on_numpy1() -> None:
    if int(np.__version__.split(".")[0]) >= 2:
        pytest.skip("numpy 2 here")
    status = numpy_abi.apply()
    assert not status.applied and status.detail == f"numpy {np.__version__} < 2"


def test_no_op_on_numpy2_with_a_torch_that_exchanges_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "__version__", "2.1.0")
    assert numpy_abi.bridge_error() is None
    status = numpy_abi.apply()
    assert not status.applied and "numpy 2.1.0 works with torch" in status.detail
    assert numpy_abi.apply() == status
