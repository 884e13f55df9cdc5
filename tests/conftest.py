"""Shared test set-up: offline hubs, the Jetson patches applied (qwen_tts needs the torchaudio shim on CPU CI)."""

import os
import shutil
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import patches  # noqa: E402
from s2s import reference_env  # noqa: E402

patches.apply()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``reference`` tests need the official qwen_tts in-process: on the transformers 5 stack they are skipped here
    and run in the reference venv instead (tests/test_reference_venv.py)."""
    if reference_env.in_process():
        return
    skip = pytest.mark.skip(reason="needs qwen-tts 0.1.1 in-process (transformers 4.57.3 stack); "
                                   "tests/test_reference_venv.py runs it in the reference venv")
    for item in items:
        if item.get_closest_marker("reference") is not None:
            item.add_marker(skip)

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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): a tiny
    model's ops are too small to share, and a thread that other work on a loaded machine delays would hold up every
    op at its barrier."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
