"""systemd's notify protocol against a real AF_UNIX datagram socket standing in for systemd (no systemd needed):
s2s.sdnotify (messages, abstract sockets, the watchdog interval) and s2s.supervisor (READY after set-up,
WATCHDOG only while every stage progresses, STOPPING on SIGTERM), with fake and real pipelines."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from s2s import sdnotify
from s2s.handler import Handler, Wiring
from s2s.pipeline import Pipeline
from s2s.supervisor import loading, supervised
from s2s.turns import Turns


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def messages(self, wait_s: float) -> list[str]:
        """Every datagram that arrives within ``wait_s`` seconds."""
        received = []
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return received

    def next_message(self, timeout_s: float = 2.0) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(4096).decode()

    def drain(self) -> None:
        self.messages(0.05)


@pytest.fixture
def fake_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    folder = tempfile.mkdtemp(prefix="s2s-notify-", dir="/tmp")  # short: socket paths are limited to 107 bytes
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield FakeSystemd(sock)
    finally:
        sock.close()
        shutil.rmtree(folder)


@pytest.fixture
def watchdog_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd's watchdog at 0.2 s for this process: pings every 0.1 s."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))


# ---- s2s.sdnotify ------------------------------------------------------------------------------------------------
def test_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_notify_sends_one_datagram_of_lines(fake_systemd: FakeSystemd) -> None:
    assert sdnotify.notify("READY=1", "STATUS=loading models") is True
    assert fake_systemd.next_message() == "READY=1\nSTATUS=loading models"


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"s2s-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("WATCHDOG=1") is True
        sock.settimeout(2.0)
        assert sock.recv(64) == b"WATCHDOG=1"


def test_notify_to_a_missing_socket_logs_and_returns_false(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/s2s-notify")
    with caplog.at_level(logging.WARNING, logger="s2s.sdnotify"):
        assert sdnotify.notify("READY=1") is False
    assert "/nonexistent/s2s-notify" in caplog.text


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "1", None),  # meant for another process
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert sdnotify.watchdog_interval() == expected


# ---- s2s.supervisor with a fake pipeline -------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    alive: bool = True
    last_progress_age_s: float = 0.0
    busy_s: float = 0.0
    hung: bool = False


class FakePipeline:
    """The health duck type: a stage can be marked hung."""

    def __init__(self) -> None:
        self.stages = [Stage("vad"), Stage("tts")]

    def health(self) -> list[Stage]:
        return list(self.stages)

    def healthy(self) -> bool:
        return not any(stage.hung for stage in self.stages)


def test_no_watchdog_thread_when_systemd_sets_no_watchdog(fake_systemd: FakeSystemd) -> None:
    with supervised(FakePipeline(), threading.Event()) as watchdog:
        assert watchdog is None
        assert fake_systemd.next_message().startswith("READY=1")
        assert fake_systemd.messages(0.3) == []
    assert fake_systemd.next_message().startswith("STOPPING=1")


def test_watchdog_pings_while_healthy_and_stops_while_a_stage_hangs(
    fake_systemd: FakeSystemd, watchdog_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = FakePipeline()
    with caplog.at_level(logging.ERROR, logger="s2s.supervisor"), supervised(pipeline, threading.Event()) as watchdog:
        assert watchdog is not None and watchdog.period_s == pytest.approx(0.1)
        assert fake_systemd.next_message() == "READY=1\nSTATUS=listening"
        assert fake_systemd.messages(0.6).count("WATCHDOG=1") >= 2  # every 0.1 s; slack for a busy CI

        pipeline.stages[1] = Stage("tts", busy_s=42.0, last_progress_age_s=41.5, hung=True)
        time.sleep(0.15)  # a ping may have been in flight
        fake_systemd.drain()
        silent = fake_systemd.messages(0.5)
        assert "WATCHDOG=1" not in silent

        pipeline.stages[1] = Stage("tts")
        resumed = fake_systemd.messages(0.6)
        assert resumed.count("WATCHDOG=1") >= 2
        assert "STATUS=running" in resumed
    assert "tts hung (busy 42.0 s, no progress for 41.5 s, thread alive)" in caplog.text
    assert caplog.text.count("not pinging systemd") == 1  # logged once, not once per check


def test_watchdog_logs_where_a_hung_stage_is_stuck(
    fake_systemd: FakeSystemd, watchdog_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def stuck_in_the_decoder() -> None:
        release.wait(10.0)

    thread = threading.Thread(target=stuck_in_the_decoder, name="s2s-tts", daemon=True)
    thread.start()
    pipeline = FakePipeline()
    pipeline.stages[1] = Stage("tts", busy_s=42.0, last_progress_age_s=41.5, hung=True)
    try:
        with caplog.at_level(logging.ERROR, logger="s2s.supervisor"), supervised(pipeline, threading.Event()):
            fake_systemd.messages(0.3)
    finally:
        release.set()
        thread.join(2.0)
    assert "where the tts stage is stuck" in caplog.text
    assert "in stuck_in_the_decoder" in caplog.text and "release.wait(10.0)" in caplog.text
    assert "where the vad stage" not in caplog.text  # only the hung ones


def test_unhealthy_stage_is_shown_in_the_status(fake_systemd: FakeSystemd, watchdog_env: None) -> None:
    pipeline = FakePipeline()
    pipeline.stages[0] = Stage("vad", alive=False, hung=True, last_progress_age_s=3.0)
    with supervised(pipeline, threading.Event()):
        assert fake_systemd.next_message().startswith("READY=1")
        status = fake_systemd.next_message()
    assert status == "STATUS=unhealthy: vad hung (busy 0.0 s, no progress for 3.0 s, thread dead)"


def test_sigterm_sends_stopping_and_sets_the_stop_event(fake_systemd: FakeSystemd) -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with supervised(FakePipeline(), stop):
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and handler is not before  # guard: without it SIGTERM would end pytest
        fake_systemd.drain()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2.0)
        assert fake_systemd.next_message() == "STOPPING=1\nSTATUS=stopping"
    assert signal.getsignal(signal.SIGTERM) is before


def test_loading_status_is_not_ready(fake_systemd: FakeSystemd) -> None:
    loading("capturing CUDA graphs")
    assert fake_systemd.next_message() == "STATUS=capturing CUDA graphs"


# ---- s2s.supervisor with the real Pipeline ------------------------------------------------------------------------
class SlowSetup(Handler):
    """A stage whose set-up (model load, warm-up) lasts until ``loaded`` is set."""

    name = "slow-setup"
    loaded: threading.Event

    def setup(self) -> None:
        assert self.loaded.wait(5.0)

    def process(self, item: object) -> Iterator[object]:
        yield item


class Stall(Handler):
    """Forwards items; the item "hang" blocks it until ``release`` is set (a stuck model call)."""

    name = "stall"
    release: threading.Event

    def process(self, item: object) -> Iterator[object]:
        if item == "hang":
            self.release.wait(5.0)
        yield item


def test_real_pipeline_ready_after_setup_and_no_watchdog_once_a_stage_hangs(
    fake_systemd: FakeSystemd, watchdog_env: None
) -> None:
    loaded, release, stop = threading.Event(), threading.Event(), threading.Event()
    feed, middle, out = queue.Queue(), queue.Queue(), queue.Queue()
    turns = Turns()
    stages = [SlowSetup(Wiring(turns, feed, middle, stop, 0.02)), Stall(Wiring(turns, middle, out, stop, 0.02))]
    stages[0].loaded, stages[1].release = loaded, release
    pipeline = Pipeline(stages, turns, stop, hang_timeout_s=0.3)

    def serve() -> None:  # what `s2s run` does
        pipeline.setup()
        pipeline.start()
        with supervised(pipeline, stop):
            stop.wait(10.0)

    server = threading.Thread(target=serve)
    server.start()
    try:
        assert fake_systemd.messages(0.3) == []  # models still loading: not ready
        loaded.set()
        assert fake_systemd.next_message().startswith("READY=1")
        assert fake_systemd.messages(0.6).count("WATCHDOG=1") >= 2

        feed.put("hang")
        time.sleep(0.5)  # past hang_timeout_s
        assert not pipeline.healthy()
        fake_systemd.drain()
        assert "WATCHDOG=1" not in fake_systemd.messages(0.4)
    finally:
        release.set()
        stop.set()
        server.join(5.0)
    assert not server.is_alive()
    assert pipeline.stop() == []  # the released stage ended with the others


def test_s2s_run_is_ready_only_after_setup_and_says_stopping_on_sigterm(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`s2s run` itself, with its pipeline replaced by one slow-loading stage: STATUS while loading, READY once
    set-up has finished, STOPPING after a SIGTERM, then exit status 130."""
    from s2s import cli

    loaded, stop = threading.Event(), threading.Event()
    turns = Turns()
    stage = SlowSetup(Wiring(turns, queue.Queue(), None, stop, 0.02))
    stage.loaded = loaded
    pipeline = Pipeline([stage], turns, stop)
    monkeypatch.setattr(Pipeline, "from_config", classmethod(lambda cls, *args, **kwargs: pipeline))
    seen: dict[str, object] = {}

    def systemd_side() -> None:
        try:
            seen["loading"] = fake_systemd.next_message(10.0)
            seen["while loading"] = fake_systemd.messages(0.3)
            loaded.set()
            seen["ready"] = fake_systemd.next_message(10.0)
        finally:
            loaded.set()
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=systemd_side)
    driver.start()
    assert cli.main(["run", "--text", "hello"]) == 130
    driver.join(5.0)
    assert seen["loading"] == "STATUS=loading models"
    assert seen["while loading"] == []
    assert seen["ready"] == "READY=1\nSTATUS=answering"
    assert "STOPPING=1\nSTATUS=stopping" in fake_systemd.messages(0.3)
