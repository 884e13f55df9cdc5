"""On the transformers 5 stack, the ``reference`` tests (the official qwen-tts 0.1.1 in-process) run in the reference
venv that ``./setup.sh --dev`` makes: this test runs them there and fails with their output if one fails. On the
transformers 4.57.3 stack they run in this session already, and this test is skipped.

Only the files whose imports the reference venv has (torch, transformers 4.57.3, qwen-tts and its dependencies,
pytest) are run there; the reference *backend* tests of test_tts_qwen3.py need the whole pipeline and stay on the
4.57.3 stack (the backend does not exist on transformers 5: tts.backend = 'qwen3-reference' says so).
"""

from __future__ import annotations

import os

import pytest

from s2s import reference_env

FILES = ("tests/test_codec_stream.py", "tests/test_checkpoint.py", "tests/test_qwen3_engine.py", "tests/test_patch_torchaudio.py")


@pytest.mark.skipif(reference_env.in_process(), reason="the reference tests run in this session (transformers 4.57.3)")
def test_reference_tests_pass_in_the_reference_venv(tmp_path):
    selection = os.environ.get("PYTEST_ADDOPTS", "")
    done = reference_env.run_reference(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "reference and not cuda and not slow", *FILES],
        timeout=900, env={"PYTEST_ADDOPTS": selection, "S2S_CACHE_DIR": str(tmp_path / "cache")})
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, done.stdout[-3000:]
