"""s2s.pipeline with small fake stages on real threads: failures mid-turn, hung stages, stop, setup errors."""

import logging
import queue
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from handlers.audio_in import Source
from handlers.audio_out import WavSink
from s2s.config import AudioOutConfig
from s2s.handler import Handler, Wiring
from s2s.messages import AudioChunk, TextChunk, Transcript, TurnEnd
from s2s.pipeline import STOP_TIMEOUT_S, Pipeline, StageSetupError
from s2s.turns import Turns

RATE = 24000
WAIT_S = 60.0
"""Bound for a wait that takes well under a second on an idle machine (a loaded 2-core CI machine is slower)."""


class ScriptedSource(Source):
    """Says each text in turn, waiting (half-duplex) for the previous reply to finish."""

    name = "script"

    def __init__(self, wiring, texts):
        super().__init__(wiring)
        self.texts = texts

    def produce(self):
        for text in self.texts:
            if not self.wait_listening():
                return
            turn_id = self.turns.new_id()
            self.turns.begin(turn_id)
            self.put(Transcript(turn_id, text))


class FakeLLM(Handler):
    """Echoes the transcript as one text chunk, then ends the turn."""

    name = "llm"

    def process(self, item):
        yield TextChunk(item.turn_id, item.text)
        yield TurnEnd(item.turn_id)


class FakeTTS(Handler):
    """0.1 s of tone per chunk. "fail" raises; "hang" blocks, ignoring stop; "slow" works until stopped."""

    name = "tts"

    def __init__(self, wiring):
        super().__init__(wiring)
        self.unblock = threading.Event()
        self.setup_error: Exception | None = None

    def setup(self):
        if self.setup_error is not None:
            raise self.setup_error

    def process(self, item):
        if "fail" in item.text:
            raise RuntimeError("synthesis exploded")
        if "hang" in item.text:
            self.unblock.wait()  # an uninterruptible call (a stuck kernel, a dead device)
        while "slow" in item.text and not self.stop_event.is_set():
            time.sleep(0.01)
        yield AudioChunk(item.turn_id, np.full(RATE // 10, 0.25, dtype=np.float32), RATE)


def build(tmp_path, texts, hang_timeout_s=30.0, max_turn_s=30.0, sample_rate=RATE):
    """script -> llm -> tts -> wav-out, wired as Pipeline.from_config wires them (bounded queues, one stop)."""
    turns = Turns(half_duplex=True, max_turn_s=max_turn_s)
    stop = threading.Event()
    edges = [None, *(queue.Queue(maxsize=4) for _ in range(3)), None]
    wire = [Wiring(turns, edges[i], edges[i + 1], stop, poll_s=0.01) for i in range(4)]
    tts = FakeTTS(wire[2])
    sink = WavSink(wire[3], AudioOutConfig(sample_rate=sample_rate), path=tmp_path / "out.wav")
    stages = [ScriptedSource(wire[0], texts), FakeLLM(wire[1]), tts, sink]
    return Pipeline(stages, turns, stop, hang_timeout_s=hang_timeout_s), tts


def wait_until(condition, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_turns_are_answered_in_order(tmp_path):
    pipeline, _ = build(tmp_path, ["one", "two"])
    with pipeline:
        assert pipeline.wait(WAIT_S)
    assert [r["turn"] for r in pipeline.turns.records] == [1, 2]
    assert all(r["error"] is None and r["e2e_s"] is not None for r in pipeline.turns.records)
    audio, rate = sf.read(tmp_path / "out.wav")
    assert rate == RATE and len(audio) == 2 * RATE // 10 + RATE // 2  # two replies and the gap between them
    assert pipeline.turns.listening


def test_the_wav_is_written_at_the_tts_rate_by_default(tmp_path):
    pipeline, _ = build(tmp_path, ["one"], sample_rate=AudioOutConfig().sample_rate)
    with pipeline:
        assert pipeline.wait(WAIT_S)
    audio, rate = sf.read(tmp_path / "out.wav")
    assert rate == RATE and len(audio) == RATE // 10  # the TTS's rate, not resampled


def test_stage_failing_mid_turn_ends_the_turn_and_the_next_one_is_answered(tmp_path, caplog):
    pipeline, _ = build(tmp_path, ["please fail", "answer me"])
    with caplog.at_level(logging.ERROR), pipeline:
        assert pipeline.wait(WAIT_S)
    first, second = pipeline.turns.records
    assert "tts" in first["error"] and "synthesis exploded" in first["error"]
    assert "tts failed on TextChunk (turn 1)" in caplog.text
    assert second["error"] is None and second["first_audio_out_ms"] is not None
    audio, _ = sf.read(tmp_path / "out.wav")
    assert len(audio) == RATE // 10  # only the second turn's reply was written
    assert pipeline.turns.listening and pipeline.healthy()


def test_hung_stage_is_reported_and_stop_returns_after_its_timeout(tmp_path):
    pipeline, tts = build(tmp_path, ["hang here"], hang_timeout_s=0.3)
    pipeline.start()
    try:
        wait_until(lambda: not pipeline.healthy())
        view = {stage.name: stage for stage in pipeline.health()}
        assert view["tts"].hung and view["tts"].alive and view["tts"].busy_s >= 0.3
        assert not view["llm"].hung and not view["wav-out"].hung
        assert not pipeline.healthy()
        t0 = time.monotonic()
        stuck = pipeline.stop()
        assert time.monotonic() - t0 < STOP_TIMEOUT_S + 5.0  # it waits for the hung stage, then gives up
        assert stuck == ["tts"]  # it ignores the stop; left behind as a daemon thread
    finally:
        tts.unblock.set()
    for thread in pipeline.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_a_lost_turn_expires_so_listening_resumes(tmp_path):
    pipeline, tts = build(tmp_path, ["hang here", "after"], max_turn_s=1.0)
    pipeline.start()
    try:
        wait_until(lambda: pipeline.turns.is_open(2))
        assert pipeline.turns.is_open(2)  # max_turn_s ended the hung turn, so the source was heard again
        assert "max_turn_s" in pipeline.turns.records[0]["error"]
    finally:
        tts.unblock.set()
        pipeline.stop()


def test_stop_while_busy_leaves_no_thread(tmp_path):
    pipeline, _ = build(tmp_path, ["slow reply"])
    pipeline.start()
    wait_until(lambda: pipeline.stages[2].busy_since is not None)
    assert pipeline.stages[2].busy_since is not None
    assert pipeline.stop() == []  # every thread ended within STOP_TIMEOUT_S of the stop request
    assert not any(thread.is_alive() for thread in pipeline.threads)
    assert all(stage.finished.is_set() for stage in pipeline.stages)


def test_setup_failure_names_the_stage(tmp_path):
    pipeline, tts = build(tmp_path, ["x"])
    tts.setup_error = FileNotFoundError("no model at /models/tts")
    with pytest.raises(StageSetupError, match=r"tts stage failed to start: FileNotFoundError: no model at /models/tts"):
        pipeline.start()
    assert pipeline.threads == []


def test_dead_thread_is_reported_hung(tmp_path):
    pipeline, tts = build(tmp_path, ["x"])

    def crash():
        raise RuntimeError("thread body crashed")

    tts.run = crash
    pipeline.start()
    try:
        wait_until(lambda: not pipeline.healthy())
        pipeline.threads[2].join(WAIT_S)
        view = {stage.name: stage for stage in pipeline.health()}
        assert view["tts"].hung and not view["tts"].alive
        assert "thread body crashed" in pipeline.errors["tts"]
    finally:
        pipeline.stop()


def test_health_and_stop_before_start(tmp_path):
    pipeline, _ = build(tmp_path, ["x"])
    view = pipeline.health()
    assert [stage.name for stage in view] == ["script", "llm", "tts", "wav-out"]
    assert not any(stage.alive or stage.hung for stage in view)
    assert pipeline.stop() == []


def test_setup_checks_source_and_sink_first_and_releases_them_on_failure(tmp_path):
    pipeline, tts = build(tmp_path, ["x"])
    order = []
    for stage in pipeline.stages:
        stage.setup = (lambda original, name: lambda: (order.append(name), original()))(stage.setup, stage.name)
    tts.setup_error = RuntimeError("no GPU")
    sink = pipeline.sink
    with pytest.raises(StageSetupError):
        pipeline.setup()
    assert order == ["script", "wav-out", "llm", "tts"]
    assert sink._file is None and not sink.path.exists()  # the user's output is not touched by a failed start


@pytest.mark.parametrize(
    "mode, names",
    [
        ({}, ["mic", "vad", "stt", "llm", "tts", "speaker"]),
        ({"input_path": "examples/question.wav"}, ["file-in", "vad", "stt", "llm", "tts", "speaker"]),
        ({"text": "hello", "output_path": "r.wav"}, ["text-in", "llm", "tts", "wav-out"]),
    ],
)
def test_from_config_wires_the_mode_with_bounded_queues(mode, names, monkeypatch):
    from pathlib import Path

    from s2s.config import load_config

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    config = load_config([], ["pipeline.queue_size=5", "pipeline.max_turn_s=7", "pipeline.poll_s=0.02"])
    pipeline = Pipeline.from_config(config, **mode)  # builds the stages; models load only in setup()
    stages = pipeline.stages
    assert [stage.name for stage in stages] == names
    assert stages[0].in_queue is None and stages[-1].out_queue is None
    for upstream, downstream in zip(stages, stages[1:], strict=False):
        assert upstream.out_queue is downstream.in_queue and upstream.out_queue.maxsize == 5
    assert all(stage.poll_s == 0.02 and stage.stop_event is pipeline.stop_event for stage in stages)
    assert pipeline.turns.max_turn_s == 7 and pipeline.threads == []


def test_from_config_refuses_input_and_text_together():
    from s2s.config import Config

    with pytest.raises(ValueError, match="either --input or --text"):
        Pipeline.from_config(Config(), input_path="examples/question.wav", text="hi")


@pytest.mark.parametrize("section", ["vad", "stt", "llm", "tts"])
def test_from_config_refuses_an_unknown_backend_in_any_mode(section):
    from s2s.config import load_config
    from s2s.registry import UnknownBackend

    config = load_config([], [f"{section}.backend=nope"])
    with pytest.raises(UnknownBackend, match=rf"\[{section}\] backend = 'nope' is not installed; installed"):
        Pipeline.from_config(config, text="hi")  # --text skips VAD and STT; their names are still checked
