"""The ``s2s`` command under careless input and signals: nothing of the user's is lost, no traceback, the right
exit status (issue 9). Usage errors are checked in-process; signals and start failures through the real console
script in a subprocess."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_models import smollm2_dir  # noqa: F401  (session fixture)
from pipeline_helpers import EXAMPLES

from s2s import cli

S2S = [sys.executable, "-c", "from s2s.cli import console; console()"]
QUESTION = EXAMPLES / "question.wav"


def s2s(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*S2S, *args], capture_output=True, text=True, timeout=300, **kwargs)


def test_output_equal_to_the_input_is_refused_and_the_input_kept(tmp_path, capsys):
    question = tmp_path / "x.wav"
    shutil.copy(QUESTION, question)
    before = question.read_bytes()
    assert cli.main(["run", "--input", str(question), "--output", str(question)]) == 2
    assert "is the --input file" in capsys.readouterr().err
    assert question.read_bytes() == before


def test_output_inside_the_input_folder_is_refused(tmp_path, capsys):
    shutil.copy(QUESTION, tmp_path / "q.wav")
    assert cli.main(["run", "--input", str(tmp_path), "--output", str(tmp_path / "reply.wav")]) == 2
    assert "inside the --input folder" in capsys.readouterr().err


@pytest.mark.parametrize("output, message", [
    ("{tmp}", "is a folder"),
    ("{tmp}/reply", "has no file extension"),
    ("/proc/x.wav", "--output /proc/x.wav cannot be written"),
])
def test_bad_output_paths_are_usage_errors(tmp_path, capsys, output, message):
    assert cli.main(["run", "--text", "hi", "--output", output.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "s2s check" not in err and "Traceback" not in err


def test_a_run_that_fails_at_start_keeps_the_previous_reply(tmp_path):
    keep, record = tmp_path / "keep.wav", tmp_path / "keep.latency.jsonl"
    shutil.copy(QUESTION, keep)
    record.write_text('{"turn": 1}\n')
    before = keep.read_bytes()
    empty = tmp_path / "emptydir"
    empty.mkdir()
    done = s2s("run", "--text", "hi", "--output", str(keep), "--set", "tts.backend=piper",
               "--set", f"llm.model={empty}")
    assert done.returncode == 1, done.stderr
    assert keep.read_bytes() == before
    assert record.read_text() == '{"turn": 1}\n'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def _start_and_signal(tmp_path: Path, signum: int, smollm2: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Start a run, send ``signum`` once the first stage reports ready (the other models are still loading);
    (the finished process, seconds from the signal to its exit)."""
    proc = subprocess.Popen(
        [*S2S, "run", "--text", "Tell me a story.", "--output", str(tmp_path / "r.wav"), "--set", "tts.backend=piper",
         "--set", f"llm.model={smollm2}", "--set", "llm.device=cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if " ready (" in line or not line:
            break
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + err), time.monotonic() - sent


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_models_load_exits_130_with_one_line(tmp_path, smollm2_dir, signum):  # noqa: F811
    done, took = _start_and_signal(tmp_path, signum, smollm2_dir)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert "stopped while loading the models" in done.stderr or "no turn finished: stopped" in done.stdout
    assert took < 10.0  # generous for a loaded 2-core CI machine; the point is "not after the whole load"
    assert not (tmp_path / "r.wav").exists()


@pytest.mark.slow
def test_words_too_long_for_the_llm_fail_the_run_with_status_1(tmp_path, smollm2_dir):  # noqa: F811
    done = s2s("run", "--text", "Tell me about " + "the sea and " * 6000, "--output", str(tmp_path / "r.wav"),
               "--set", "tts.backend=piper", "--set", f"llm.model={smollm2_dir}", "--set", "llm.device=cpu")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "the text is too long for the LLM" in done.stdout and "shorten it to about" in done.stdout
    assert "error: 1 of 1 turns failed (turn 1;" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.wav").exists()


def test_piper_says_what_it_ignores(tmp_path):
    done = s2s("--set", "tts.backend=piper", "--set", "tts.device=cuda", "say", "Hi.", "-o", str(tmp_path / "h.wav"))
    assert done.returncode == 0, done.stderr
    assert "tts.device = 'cuda' is ignored" in done.stderr


def test_the_console_script_exits_with_mains_status():
    done = s2s("--set", "tts.bad=1", "check")
    assert done.returncode == 2 and "unknown key tts.bad" in done.stderr
