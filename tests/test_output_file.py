"""Outputs appear whole or not at all: s2s.atomic_file, the WAV sink's staging file, and a run killed mid-reply."""

import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_models import smollm2_dir  # noqa: F401
from pipeline_helpers import integration_overrides, reuse_models
from stage_harness import run_stage, start, wiring

from handlers.audio_out import WavSink
from s2s import cli
from s2s.atomic_file import check_writable, commit, staging_path
from s2s.audio import write_wav
from s2s.config import AudioOutConfig
from s2s.messages import AudioChunk, TurnEnd, TurnFailed
from s2s.pipeline import Pipeline
from s2s.turns import Turns

RATE = 24000
S2S = Path(sys.executable).parent / "s2s"
"""The console script of the venv the tests run in."""
KILL_TEST_TIMEOUT_S = 300.0
"""Generous bound for model loading plus the first reply audio on a loaded 2-core CI machine."""


def chunk(turn_id: int, n: int, value: float = 0.5) -> AudioChunk:
    return AudioChunk(turn_id, np.full(n, value, dtype=np.float32), RATE)


def previous_reply(path: Path) -> bytes:
    """A valid WAV at ``path`` (what an earlier run left); its bytes."""
    write_wav(path, np.full(RATE // 2, -0.25, dtype=np.float32), RATE)
    return path.read_bytes()


def sink_for(path: Path, turns: Turns | None = None) -> WavSink:
    sink = WavSink(wiring(turns, sink=True), AudioOutConfig(sample_rate=RATE), path=path)
    sink.setup()
    return sink


def size(path: Path) -> int:
    """Bytes in ``path``; 0 while it does not exist (also when it is renamed away meanwhile)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def wav_frames(path: Path) -> int:
    """Frames by the header, read by Python's own reader (stricter than libsndfile about the data size)."""
    with wave.open(str(path)) as reader:
        return reader.getnframes()


# ---- s2s.atomic_file ---------------------------------------------------------------------------------------
def test_staging_file_is_hidden_beside_the_target_and_named_after_this_process(tmp_path):
    staging = staging_path(tmp_path / "reply.wav")
    assert staging.parent == tmp_path.resolve()
    assert staging.name == f".reply.wav.{os.getpid()}.partial"


def test_commit_replaces_the_target_keeping_its_permissions(tmp_path):
    target = tmp_path / "reply.wav"
    target.write_bytes(b"old")
    target.chmod(0o600)
    staging = staging_path(target)
    staging.write_bytes(b"new")
    assert commit(staging, target) == target.resolve()
    assert target.read_bytes() == b"new" and not staging.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_commit_through_a_symlink_replaces_the_file_it_points_to(tmp_path):
    real = tmp_path / "real.wav"
    real.write_bytes(b"old")
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    staging = staging_path(link)
    assert staging.parent == tmp_path.resolve() and staging.name.startswith(".real.wav.")
    staging.write_bytes(b"new")
    commit(staging, link)
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_check_writable_creates_nothing(tmp_path):
    target = tmp_path / "new" / "folder" / "reply.wav"
    assert check_writable(target, "--output") == target.resolve()
    assert list(tmp_path.iterdir()) == []  # neither the folders nor a probe file are left


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp, "is a folder; give a file path"),
    (lambda tmp: Path("/proc/x.wav"), "cannot be written"),
    (lambda tmp: Path("/dev/null"), "not a regular file"),
    (lambda tmp: (tmp / "notes.txt").write_text("x") and tmp / "notes.txt" / "r.wav", "is a file, not a folder"),
    (lambda tmp: tmp / "reply", "has no file extension.*name it .*reply.wav"),
    (lambda tmp: tmp / "reply.xyz", r"\.xyz is not an audio format.*use \.wav"),
    (lambda tmp: tmp / "reply.raw", r"\.raw is not an audio format"),
])
def test_an_output_that_can_never_be_written_is_refused_when_the_sink_is_built(tmp_path, make, message):
    """Before any model loads (the pipeline builds its stages first): a ValueError naming --output and the fix, not
    a LibsndfileError or TypeError at the first reply."""
    path = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ValueError, match=f"--output {re.escape(str(path))}.*{message}"):
        WavSink(wiring(sink=True), AudioOutConfig(), path=path)
    assert sorted(tmp_path.iterdir()) == before


def test_write_wav_is_whole_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "say.wav"
    old = previous_reply(target)

    def disk_full(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF")  # a partial write, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_wav(target, np.zeros(100, dtype=np.float32), RATE)
    assert target.read_bytes() == old and sorted(tmp_path.iterdir()) == [target]


# ---- the WAV sink ------------------------------------------------------------------------------------------
def test_reply_goes_to_a_valid_staging_file_and_replaces_the_target_at_the_end(tmp_path):
    target = tmp_path / "reply.wav"
    old = previous_reply(target)
    turns = Turns()
    sink = sink_for(target, turns)
    turns.begin(1)
    sink.handle(chunk(1, 1000))
    sink.handle(chunk(1, 500))
    assert target.read_bytes() == old  # the previous reply is untouched while the run goes on
    assert wav_frames(sink.staging) == 1500  # the header is current: a kill now would leave a valid WAV
    sink.handle(TurnEnd(1))
    sink.cleanup()
    audio, rate = sf.read(target)
    assert rate == RATE and len(audio) == 1500 and audio[0] > 0.4
    assert wav_frames(target) == 1500 and sink.written == target.resolve()
    assert sorted(tmp_path.iterdir()) == [target]  # no staging file left


def test_no_reply_audio_leaves_the_previous_file_as_it_was(tmp_path, caplog):
    target = tmp_path / "reply.wav"
    old = previous_reply(target)
    turns = Turns()
    turns.begin(1)
    sink = sink_for(target, turns)
    with caplog.at_level(logging.INFO, logger="handlers.audio_out"):
        run_stage(sink, [TurnFailed(1, "llm", "RuntimeError: boom"), chunk(1, 1000), TurnEnd(1)])
    assert target.read_bytes() == old and sink.written is None
    assert f"no reply audio was produced; --output {target} was not written" in caplog.text
    assert turns.records[0]["error"] == "llm: RuntimeError: boom"


def test_no_reply_audio_and_no_previous_file_writes_no_file(tmp_path):
    target = tmp_path / "sub" / "reply.wav"
    run_stage(sink_for(target), [])
    assert list(tmp_path.iterdir()) == []  # not even the folder


def test_a_stop_mid_reply_keeps_what_was_produced(tmp_path):
    """SIGTERM / Ctrl-C stop the threads; the sink's cleanup then commits the reply so far, complete and valid."""
    target = tmp_path / "out" / "reply.wav"
    turns = Turns()
    turns.begin(1)
    sink = sink_for(target, turns)
    thread = start(sink)
    for _ in range(3):
        sink.in_queue.put(chunk(1, 800))
    deadline = time.monotonic() + 30
    while not (sink.staging.exists() and wav_frames(sink.staging) == 2400) and time.monotonic() < deadline:
        time.sleep(0.02)
    sink.stop_event.set()  # the turn never ended
    thread.join(10)
    assert not thread.is_alive()
    assert wav_frames(target) == 2400 and sf.info(target).frames == 2400
    assert not sink.staging.exists()


def test_format_follows_the_extension(tmp_path):
    target = tmp_path / "reply.flac"
    turns = Turns()
    turns.begin(1)
    sink = sink_for(target, turns)
    run_stage(sink, [chunk(1, 1000), TurnEnd(1)])
    info = sf.info(target)
    assert info.format == "FLAC" and info.subtype == "PCM_16" and info.frames == 1000


# ---- through the CLI, with the real models -----------------------------------------------------------------
def test_a_run_that_fails_to_start_leaves_the_previous_reply(tmp_path, capsys):
    target = tmp_path / "keep.wav"
    old = previous_reply(target)
    empty = tmp_path / "empty_model_dir"
    empty.mkdir()
    code = cli.main(["--set", "tts.backend=piper", "--set", f"llm.model={empty}", "--set", "llm.device=cpu",
                     "run", "--text", "hi", "--output", str(target)])
    assert code != 0
    assert target.read_bytes() == old
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.slow
def test_sigterm_mid_reply_keeps_a_complete_valid_file(smollm2_dir, tmp_path, monkeypatch):  # noqa: F811
    build = Pipeline.from_config
    monkeypatch.setattr(Pipeline, "from_config", lambda *a, **k: reuse_models(build(*a, **k)))
    target = tmp_path / "keep.wav"
    old = previous_reply(target)
    start_pipeline = Pipeline.start

    def start_then_terminate_once_writing(pipeline):
        start_pipeline(pipeline)
        staging, deadline = pipeline.sink.staging, time.monotonic() + KILL_TEST_TIMEOUT_S
        while not staging.exists() and time.monotonic() < deadline and not pipeline.wait(0):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Pipeline, "start", start_then_terminate_once_writing)
    argv = [*sets(integration_overrides(smollm2_dir)), "--set", "llm.max_new_tokens=300", "run", "--text", "Tell me a long story about a dragon.", "--output", str(target)]
    assert cli.main(argv) == 130
    assert target.read_bytes() != old
    assert wav_frames(target) == sf.info(target).frames > 0  # the header matches the data: complete and valid
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.slow
def test_sigkill_mid_reply_never_leaves_a_broken_target(smollm2_dir, tmp_path):  # noqa: F811
    """kill -9 while the reply is being written: the target is the previous file, byte for byte; the staging file
    left behind is itself a valid WAV of the audio written so far."""
    target = tmp_path / "keep.wav"
    old = previous_reply(target)
    argv = [str(S2S), "run", "--text", "Tell me a long story", "--output", str(target), "--set", "tts.backend=piper",
            "--set", f"llm.model={smollm2_dir}", "--set", "llm.device=cpu", "--set", "stt.device=cpu",
            "--set", "llm.max_new_tokens=300"]
    log_path = tmp_path / "s2s.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        staging = target.with_name(f".keep.wav.{proc.pid}.partial")
        deadline = time.monotonic() + KILL_TEST_TIMEOUT_S
        while size(staging) <= 44 and time.monotonic() < deadline:  # 44: a WAV header with no audio yet
            assert proc.poll() is None, f"s2s ended before writing a reply:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.01)
        assert size(staging) > 44, f"no reply audio within {KILL_TEST_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "s2s finished before it could be killed; the test saw nothing"
    assert target.read_bytes() == old
    assert wav_frames(staging) == sf.info(staging).frames > 0
