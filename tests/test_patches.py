"""patches.apply() / patches.status(): every patch decided once, logged once, in a clean interpreter."""

from __future__ import annotations

import textwrap

from fresh_python import run_python

import patches


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
    result = run_python(code)
    assert result["same"]
    assert result["names"] == ["numpy-abi", "torchaudio-kaldi", "sdpa-enable-gqa"]
    assert len(result["logs"]) == 3
    for (level, message), name in zip(result["logs"], result["names"], strict=True):
        applied = result["applied"][name]
        assert message.startswith(f"patch {name}: {'applied' if applied else 'not needed'} (")
        assert level == ("WARNING" if applied else "INFO")
