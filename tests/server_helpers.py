"""A real `s2s serve` app on 127.0.0.1 for the server tests, and the Piper + Whisper models loaded once per session.

* ``RunningServer(app)``: uvicorn on a daemon thread, listening on a free loopback port (``url``); a context
  manager that stops it (and waits for the thread) on exit.
* ``piper_services(config)``: ``Services`` over the session's one Piper engine and one embedded Whisper tiny.en,
  with that config's queue and limits (fresh workers each time; close them when done).
* ``rss_mb()``: this process's resident memory.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from pathlib import Path

import uvicorn

from s2s.config import Config, load_config
from s2s.handler import Wiring
from s2s.server.scheduler import SpeechScheduler
from s2s.server.serve import listen
from s2s.server.services import Services, Transcriber
from s2s.server.voices import VoiceCatalog, VoiceStore
from s2s.tts_engine import make_engine
from s2s.turns import Turns

START_TIMEOUT_S = 30.0


class RunningServer:
    """uvicorn serving ``app`` on a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app) -> None:
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop"


def piper_config(*overrides: str) -> Config:
    return load_config([], ["tts.backend=piper", "stt.device=cpu", *overrides])


@cache
def _models() -> tuple[object, object]:
    """(Piper engine, STT handler), loaded and warmed up once per session."""
    from s2s import registry

    config = piper_config()
    engine = make_engine(config.tts)
    engine.warmup()
    stt = registry.load("stt", config.stt.backend)(Wiring(Turns()), config.stt)
    stt.setup()
    return engine, stt


def piper_services(config: Config, voices_dir: Path, engine=None) -> Services:
    """Services over the session's models (``engine`` replaces the Piper engine, e.g. a wrapper around it)."""
    piper, stt = _models()
    engine = engine or piper
    server = config.server
    speech = SpeechScheduler(engine, server.queue_size, config.tts.max_text_chars)
    transcriber = Transcriber(stt, server.queue_size, server.max_audio_s)
    return Services(config, speech, transcriber, VoiceCatalog(engine, VoiceStore(voices_dir), server.voices()))


def piper_engine():
    return _models()[0]


def whisper_text(audio, rate: int) -> str:
    """What the session's Whisper hears in mono float32 ``audio`` at ``rate``."""
    from s2s.audio import SPEECH_RATE, resample

    text, _ = _models()[1].transcribe(resample(audio, rate, SPEECH_RATE))
    return text


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
