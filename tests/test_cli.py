"""The ``s2s`` command, called in-process: exit codes and messages for usage, config and start-up errors, and
a real headless run (models shared with the integration tests through pipeline_helpers)."""

import json

import pytest
import soundfile as sf
from fixtures_models import smollm2_dir  # noqa: F401  (session fixture)
from pipeline_helpers import EXAMPLES, RUN_TIMEOUT_S, integration_overrides, reuse_models

import patches
from s2s import cli
from s2s.pipeline import STOP_TIMEOUT_S, Pipeline


def sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "say", "check", "service", "build-checkpoint"):
        assert command in out


def test_global_options_are_accepted_after_the_command(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[tts]\nbackend = 'piper'\n")
    before = cli.build_parser().parse_args(["--config", str(config), "--set", "llm.max_new_tokens=5", "check"])
    after = cli.build_parser().parse_args(["check", "--config", str(config), "--set", "llm.max_new_tokens=5"])
    assert before.config == after.config == [str(config)]
    assert before.overrides == after.overrides == ["llm.max_new_tokens=5"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "tts.voice=joe", "run", "--text", "hi"], "unknown key tts.voice"),
        (["--set", "vad.threshold=2", "run", "--text", "hi"], "[vad] threshold = 2.0 is out of range"),
        (["--set", "tts.backend=espeak", "run", "--text", "hi"],
         "[tts] backend = 'espeak' is not installed; installed tts backends: auto, piper, qwen3"),
        (["--set", "stt.backend=nope", "run", "--text", "hi"], "installed stt backends: faster-whisper"),
        (["--set", "novalue", "check"], "must look like section.key=value"),
        (["--config", "missing.toml", "check"], "config file missing.toml not found"),
        (["run", "--text", "   "], "--text is empty"),
        (["run", "--input", "nowhere.wav"], "--input nowhere.wav does not exist"),
        (["run", "--input", "examples/question.wav", "--text", "hi"], "either --input or --text"),
        (["say", "", "-o", "x.wav"], "the text is empty"),
        (["run", "--input", "README.md"], "README.md is not a readable audio file"),
    ],
)
def test_usage_and_config_errors_exit_2_with_the_reason(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err


def test_live_mode_without_a_sound_card_says_how_to_run_headless(capsys, monkeypatch):
    import s2s.audio_devices as audio_devices

    monkeypatch.setattr(audio_devices, "list_devices", lambda: [])
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert "no audio input device found" in err and "--input" in err and "--output" in err


def test_missing_model_path_names_the_stage(capsys, tmp_path):
    argv = ["--set", "stt.model=/nonexistent/whisper", "--set", "tts.backend=piper", "run",
            "--input", str(EXAMPLES / "question.wav"), "--output", str(tmp_path / "r.wav")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "stt stage failed to start" in err and "/nonexistent/whisper" in err and "s2s check" in err


@pytest.fixture
def sigterm_if_stuck():
    """A run that does not end in time gets a SIGTERM (the CLI stops and the test fails) instead of hanging CI."""
    import os
    import signal
    import threading

    timer = threading.Timer(RUN_TIMEOUT_S, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    yield
    timer.cancel()


@pytest.mark.slow
def test_run_writes_the_reply_and_the_latency_record(smollm2_dir, tmp_path, capsys, monkeypatch,  # noqa: F811
                                                     sigterm_if_stuck):
    build = Pipeline.from_config
    monkeypatch.setattr(Pipeline, "from_config", lambda *a, **k: reuse_models(build(*a, **k)))
    out = tmp_path / "reply.wav"
    argv = [*sets(integration_overrides(smollm2_dir)), "run", "--input", str(EXAMPLES / "question.wav"),
            "--output", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    record_path = tmp_path / "reply.latency.jsonl"
    assert f"reply audio: {out}" in printed and f"latency record: {record_path}" in printed
    assert "turn 1: end of speech -> first audio out" in printed
    (line,) = record_path.read_text().splitlines()
    record = json.loads(line)
    assert record["turn"] == 1 and record["error"] is None and record["e2e_s"] > 0
    assert sf.info(out).frames > 0


@pytest.mark.slow
def test_say_writes_speech(tmp_path, capsys):
    out = tmp_path / "hello.wav"
    assert cli.main(["--set", "tts.backend=piper", "say", "Hello there, this is a test.", "-o", str(out)]) == 0
    info = sf.info(out)
    assert info.frames / info.samplerate > 0.5
    assert f"{out}:" in capsys.readouterr().out


def test_check_reports_every_part(capsys):
    code = cli.main(["check"])
    out = capsys.readouterr().out
    for heading in ("packages:", "CUDA:", "audio devices:", "models:", "Jetson patches:"):
        assert heading in out
    for stage in ("vad", "stt", "llm", "tts"):
        assert f"\n  {stage} " in out
    patch_lines = out.split("Jetson patches:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    statuses = patches.status()
    assert [line.split()[0] for line in patch_lines] == [status.name for status in statuses]
    for line, status in zip(patch_lines, statuses, strict=True):
        assert line.endswith(f"{'applied' if status.applied else 'not needed'}: {status.detail}"), line
    assert code == (1 if " missing " in out else 0)


@pytest.mark.slow
def test_sigterm_while_answering_stops_within_the_stop_deadline(smollm2_dir, tmp_path, monkeypatch):  # noqa: F811
    import os
    import signal
    import threading
    import time

    build = Pipeline.from_config
    monkeypatch.setattr(Pipeline, "from_config", lambda *a, **k: reuse_models(build(*a, **k)))
    start = Pipeline.start
    sent = []

    def start_then_signal(pipeline):
        start(pipeline)

        def terminate():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Timer(0.5, terminate).start()

    monkeypatch.setattr(Pipeline, "start", start_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    argv = [*sets(integration_overrides(smollm2_dir)), "--set", "llm.max_new_tokens=400", "run", "--text",
            "Tell me a very long story about a dragon.", "--output", str(tmp_path / "r.wav")]
    assert cli.main(argv) == 130
    # The stages stop within the stop deadline (else threads would be left below); the margin is for a loaded CI.
    assert time.monotonic() - sent[0] < STOP_TIMEOUT_S + 5.0
    assert signal.getsignal(signal.SIGTERM) is previous  # the CLI's handler is removed again
    assert not [t for t in threading.enumerate() if t.name.startswith("s2s-")]


def test_an_optional_command_whose_module_cannot_load_says_so(capsys, monkeypatch):
    monkeypatch.setitem(cli.OPTIONAL_COMMANDS, "service", ("s2s.no_such_module", "help"))
    assert cli.main(["service", "status"]) == 1
    assert "s2s service is not available" in capsys.readouterr().err
    assert cli.main(["--set", "tts.bad=1", "check"]) == 2  # the other commands still work
