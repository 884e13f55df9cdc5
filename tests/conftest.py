"""Shared test set-up: offline hubs, the Jetson patches applied (qwen_tts needs the torchaudio shim on CPU CI)."""

import os
import shutil
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import patches  # noqa: E402

patches.apply()

CI_ENV = "S2S_CI"
"""Set to 1 by .ci/run, after ./setup.sh --dev has installed every tool the tests use."""


@pytest.fixture
def system_tool() -> Callable[..., str]:
    """``system_tool(name, path=None)`` -> the tool's path. Without it the test is skipped, except under CI
    (``$S2S_CI=1``), where ./setup.sh --dev installs it: there a missing tool fails the test."""

    def find(name: str, path: str | None = None) -> str:
        found = shutil.which(name) or (shutil.which(name, path=path) if path else None)
        if found is not None:
            return found
        message = f"{name} is not installed (./setup.sh --dev installs it)"
        if os.environ.get(CI_ENV) == "1":
            pytest.fail(f"{message}, and {CI_ENV}=1 says this is CI, where it must be there")
        pytest.skip(message)

    return find
