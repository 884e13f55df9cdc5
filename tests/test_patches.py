"""patches.apply() / patches.status(): every patch decided once, logged once, in a clean interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import patches

REPO = Path(__file__).resolve().parents[1]


def test_status_reports_every_patch_after_conftest_applied_them() -> None:
    statuses = patches.status()
    assert [s.name for s in statuses] == ["numpy-abi", "torchaudio-kaldi", "sdpa-enable-gqa"]
    assert all(s.detail for s in statuses)
    assert patches.apply() == statuses


def test_apply_decides_and_logs_each_patch_once() -> None:
    code = textwrap.dedent("""
        import json, logging
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("patches").addHandler(handler)
        logging.getLogger("patches").setLevel(logging.INFO)
        import patches
        assert patches.status() == []
        first = patches.apply()
        second = patches.apply()
        print(json.dumps({
            "same": first == second == patches.status(),
            "names": [s.name for s in first],
            "logs": [(r.levelname, r.getMessage()) for r in records],
            "applied": {s.name: s.applied for s in first},
        }))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("S2S_TORCHAUDIO_SHIM", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["same"]
    assert result["names"] == ["numpy-abi", "torchaudio-kaldi", "sdpa-enable-gqa"]
    assert len(result["logs"]) == 3
    for (level, message), name in zip(result["logs"], result["names"], strict=True):
        applied = result["applied"][name]
        assert message.startswith(f"patch {name}: {'applied' if applied else 'not needed'} (")
        assert level == ("WARNING" if applied else "INFO")
