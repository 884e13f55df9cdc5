"""The pipeline: builds the stages from a Config, wires them with bounded queues, runs and supervises them.

    source -> [VAD -> STT ->] LLM -> TTS -> sink        (``--text`` skips VAD and STT)

Every stage is a backend found by name in the registry (``s2s.registry``); the pipeline imports none of them.
Full duplex (``[pipeline] duplex = "full"``, live microphone and speaker only) shares a ``FarEnd`` between the
speaker and the microphone (the echo canceller's reference), gives the microphone the [aec] section, and keeps the
microphone open while a turn is open (``Turns(half_duplex=False)``).
Life cycle: ``setup()`` calls every stage's ``setup()`` (model load and warmup) in order, naming the stage that
failed; ``start()`` starts one thread per stage; ``wait()`` returns once the end of
the input has reached the sink; ``stop()`` sets the stop event and joins the threads within a deadline (threads
are daemons, so one that ignores the stop cannot keep the process alive; ``stop()`` logs it). The health view
(``health()``, ``healthy()``) is what the service watchdog reads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from s2s import registry
from s2s.config import Config
from s2s.end_of_turn import EndOfTurn
from s2s.far_end import FarEnd
from s2s.handler import Handler, Wiring
from s2s.tts_stage import TTSHandler
from s2s.turns import Turns

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 2.0


def duplex_mode(config: Config, live: bool) -> str:
    """"full" or "half": full duplex needs the live microphone and speaker (an --input, --text or --output run is
    half duplex whatever the config says)."""
    return "full" if config.pipeline.duplex == "full" and live else "half"


class StageSetupError(RuntimeError):
    """A stage could not load its model or device; the message names the stage and the cause."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage} stage failed to start: {type(exc).__name__}: {exc}")
        self.stage = stage


@dataclass(frozen=True)
class StageHealth:
    """One stage as the watchdog sees it."""

    name: str
    alive: bool
    """The stage's thread is running."""
    last_progress_age_s: float
    """Seconds since the stage last took or produced an item."""
    busy_s: float
    """Seconds spent on the current item (0 while idle)."""
    hung: bool
    """Busy on one item for longer than ``pipeline.hang_timeout_s`` without progress, or its thread died."""


class Pipeline:
    """Runs ``stages`` (already wired by their queues) in one thread each."""

    def __init__(
        self,
        stages: list[Handler],
        turns: Turns,
        stop_event: threading.Event,
        hang_timeout_s: float = 30.0,
        duplex: str = "half",
    ) -> None:
        assert stages, "a pipeline needs at least one stage"
        self.stages = stages
        self.duplex = duplex
        """"half" or "full" (see ``duplex_mode``)."""
        self.turns = turns
        self.stop_event = stop_event
        self.hang_timeout_s = hang_timeout_s
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, str] = {}
        """Stage name -> the exception that killed its thread."""
        self._set_up = False

    @classmethod
    def from_config(
        cls,
        config: Config,
        input_path: str | Path | None = None,
        text: str | None = None,
        output_path: str | Path | None = None,
    ) -> Pipeline:
        """The stages for a run mode: microphone (default), ``input_path`` (a WAV or a folder of WAVs) or
        ``text``; replies to the speaker, or to ``output_path`` (one WAV). Each stage is the backend its config
        section names, found in the registry. Raises ValueError for bad arguments or an unknown backend."""
        if input_path is not None and text is not None:
            raise ValueError("give either --input or --text, not both")
        registry.check_backends(config)
        duplex = duplex_mode(config, live=input_path is None and text is None and output_path is None)
        far_end = FarEnd() if duplex == "full" else None
        if text is not None:
            source = (registry.load("audio_in", "text"), config.audio_in, {"text": text})
        elif input_path is not None:
            source = (registry.load("audio_in", "file"), config.audio_in, {"path": input_path})
        else:
            source = (registry.load("audio_in", "microphone"), config.audio_in,
                      {"aec": config.aec} if duplex == "full" else {})
        specs = [source]
        if text is None:
            specs += [(registry.load("vad", config.vad.backend), config.vad, {}),
                      (registry.load("stt", config.stt.backend), config.stt, {})]
        specs += [(registry.load("llm", config.llm.backend), config.llm, {}), (TTSHandler, config.tts, {})]
        if output_path is not None:
            specs.append((registry.load("audio_out", "wav"), config.audio_out, {"path": output_path}))
        else:
            specs.append((registry.load("audio_out", "speaker"), config.audio_out, {}))

        p = config.pipeline
        turns = Turns(half_duplex=duplex == "half", max_turn_s=p.max_turn_s, latency_log=p.latency_log)
        stop = threading.Event()
        edges = [None, *(queue.Queue(maxsize=p.queue_size) for _ in range(len(specs) - 1)), None]
        end_of_turn = EndOfTurn(config.end_of_turn) if config.end_of_turn.silence_ms and text is None else None
        stages = [
            stage_cls(Wiring(turns, edges[i], edges[i + 1], stop, p.poll_s, far_end, end_of_turn), section, **extra)
            for i, (stage_cls, section, extra) in enumerate(specs)
        ]
        return cls(stages, turns, stop, hang_timeout_s=p.hang_timeout_s, duplex=duplex)

    @property
    def sink(self) -> Handler:
        return self.stages[-1]

    # ---- life cycle ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load and warm up every stage. Raises StageSetupError (after releasing what the stages set up so far).

        The source and the sink go first: a missing sound card is reported before minutes of model loading.
        """
        if self._set_up:
            return
        ends = [self.stages[0], self.stages[-1]] if len(self.stages) > 1 else self.stages
        ready: list[Handler] = []
        for stage in [*ends, *self.stages[1:-1]]:
            t0 = time.monotonic()
            try:
                stage.setup()
            except Exception as exc:
                for done in reversed(ready):
                    done.safe_cleanup()
                raise StageSetupError(stage.name, exc) from exc
            ready.append(stage)
            log.info("%s ready (%.1f s)", stage.name, time.monotonic() - t0)
        self._set_up = True

    def start(self) -> None:
        """Set up (if not done yet) and start one daemon thread per stage."""
        self.setup()
        for stage in self.stages:
            thread = threading.Thread(target=self._run_stage, args=(stage,), name=f"s2s-{stage.name}", daemon=True)
            self.threads.append(thread)
            thread.start()
        log.info("pipeline running: %s", " -> ".join(stage.name for stage in self.stages))

    def _run_stage(self, stage: Handler) -> None:
        try:
            stage.run()
        except Exception as exc:  # a dead stage is reported by the health view and ends its turns by timeout
            self.errors[stage.name] = f"{type(exc).__name__}: {exc}"
            log.exception("%s stage died: %s", stage.name, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the end of the input has reached the sink (or ``timeout`` s); True if it has."""
        return self.sink.finished.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> list[str]:
        """Ask every stage to stop and join them within ``timeout`` s. Returns (and logs) the stages still running."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # Threads are started in stage order; there are fewer of them if start() failed part-way (or never ran).
        stuck = [stage.name for stage, thread in zip(self.stages, self.threads, strict=False) if thread.is_alive()]
        if stuck:
            log.error("stages still running %.1f s after the stop request: %s (left behind as daemon threads)",
                      timeout, ", ".join(stuck))
        return stuck

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- health ----------------------------------------------------------------------------------
    def health(self) -> list[StageHealth]:
        """One StageHealth per stage, in pipeline order."""
        now = time.monotonic()
        view = []
        for i, stage in enumerate(self.stages):
            alive = i < len(self.threads) and self.threads[i].is_alive()
            busy_since = stage.busy_since
            busy_s = 0.0 if busy_since is None else now - busy_since
            progress_age = now - stage.last_progress
            stalled = busy_since is not None and now - max(busy_since, stage.last_progress) > self.hang_timeout_s
            hung = stage.name in self.errors or (alive and stalled)
            view.append(StageHealth(stage.name, alive, round(progress_age, 3), round(busy_s, 3), hung))
        return view

    def healthy(self) -> bool:
        """No stage hung or dead."""
        return not any(stage.hung for stage in self.health())
