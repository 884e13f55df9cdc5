"""Tell systemd how the running pipeline is doing: READY once it works, WATCHDOG while every stage progresses.

``s2s run`` loads the models, warms up and captures the CUDA graphs (``Pipeline.setup()``), starts the stage
threads, and then runs inside ``supervised(pipeline, stop_event)``:

- on entry: ``READY=1`` with a ``STATUS=`` line; a SIGTERM handler (main thread only) that sends ``STOPPING=1``
  and sets ``stop_event`` so the stages stop cleanly;
- while inside, if systemd set a watchdog (``WatchdogSec=``), a thread pings ``WATCHDOG=1`` every half interval,
  but only while ``pipeline.healthy()``: a hung or dead stage stops the pings, and systemd restarts the service
  (its SIGABRT makes ``PYTHONFAULTHANDLER`` dump every thread's stack into the journal). The unhealthy stages
  are logged and shown in ``STATUS=``;
- on exit: ``STOPPING=1``, the watchdog thread ends, the previous SIGTERM handler is restored.

The pipeline is any object with ``healthy() -> bool`` and ``health() -> list`` of items with ``name``,
``alive``, ``last_progress_age_s``, ``busy_s`` and ``hung`` (``s2s.pipeline.Pipeline`` / ``StageHealth``).
Outside systemd (no ``$NOTIFY_SOCKET``) every message is a no-op.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

from s2s import sdnotify

log = logging.getLogger(__name__)


class HealthReport(Protocol):
    name: str
    alive: bool
    last_progress_age_s: float
    busy_s: float
    hung: bool


class Supervised(Protocol):
    def healthy(self) -> bool: ...

    def health(self) -> list[HealthReport]: ...


def describe_unhealthy(reports: list[HealthReport]) -> str:
    """One line naming each hung stage, e.g. ``tts hung (busy 42.0 s, no progress for 41.5 s, thread alive)``."""
    parts = [
        f"{stage.name} hung (busy {stage.busy_s:.1f} s, no progress for {stage.last_progress_age_s:.1f} s, "
        f"thread {'alive' if stage.alive else 'dead'})"
        for stage in reports
        if stage.hung
    ]
    return "; ".join(parts) or "the pipeline reports itself unhealthy"


def thread_stack(name: str) -> str:
    """The current Python stack of the live thread called ``name`` (a stage's thread is ``s2s-<stage>``), innermost
    call last, or a line saying there is none."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        if thread.name == name and thread.ident in frames:
            return "".join(traceback.format_stack(frames[thread.ident]))
    return f"(no live thread named {name})"


class Watchdog:
    """A thread that pings systemd's watchdog every ``period_s`` while the pipeline is healthy."""

    def __init__(self, pipeline: Supervised, period_s: float, stop_event: threading.Event) -> None:
        self.pipeline = pipeline
        self.period_s = period_s
        self.stop_event = stop_event
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s2s-watchdog", daemon=True)
        self._hung: tuple[str, ...] | None = None
        """The stages last reported as hung (None while healthy), so each change is logged once."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=2.0)

    def check(self) -> bool:
        """Ping if every stage shows progress; otherwise log (once per change) which do not. True if pinged."""
        if self.pipeline.healthy():
            if self._hung is not None:
                log.warning("watchdog: all stages progress again; pinging systemd again")
                sdnotify.notify("STATUS=running")
                self._hung = None
            sdnotify.notify("WATCHDOG=1")
            return True
        reports = self.pipeline.health()
        hung = tuple(stage.name for stage in reports if stage.hung)
        if hung != self._hung:
            problem = describe_unhealthy(reports)
            log.error("watchdog: not pinging systemd (it restarts the service if this lasts): %s", problem)
            for name in hung:
                log.error("watchdog: where the %s stage is stuck:\n%s", name, thread_stack(f"s2s-{name}"))
            sdnotify.notify(f"STATUS=unhealthy: {problem}")
            self._hung = hung
        return False

    def _run(self) -> None:
        while not self._done.is_set() and not self.stop_event.is_set():
            try:
                self.check()
            except Exception:  # a broken health view must stop the pings, not hide the hang
                log.exception("watchdog: health check failed; not pinging")
            self._done.wait(self.period_s)


def _install_sigterm(stop_event: threading.Event) -> object | None:
    """Make SIGTERM a clean stop (STOPPING=1, then ``stop_event``); returns the previous handler, or None when
    not on the main thread (Python only lets the main thread set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("not on the main thread: SIGTERM is left to the caller")
        return None
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        sdnotify.notify("STOPPING=1", "STATUS=stopping")
        stop_event.set()
        if callable(previous):
            previous(signum, frame)  # e.g. the CLI's own stop handler, which logs it
        else:
            log.info("SIGTERM: stopping")

    signal.signal(signal.SIGTERM, on_sigterm)
    return previous


@contextmanager
def supervised(
    pipeline: Supervised,
    stop_event: threading.Event,
    status: str = "listening",
    period_s: float | None = None,
) -> Iterator[Watchdog | None]:
    """Run the body as the supervised, ready service (see the module docstring).

    Enter only after the pipeline is set up (models loaded, warmed, graphs captured) and its threads started.
    ``period_s`` overrides the ping period (default: half of systemd's ``WATCHDOG_USEC``). Yields the running
    watchdog, or None when systemd set none.
    """
    previous = _install_sigterm(stop_event)
    sdnotify.notify("READY=1", f"STATUS={status}")
    log.info("ready: %s", status)
    interval = sdnotify.watchdog_interval()
    watchdog = None
    if period_s is not None or interval is not None:
        watchdog = Watchdog(pipeline, period_s if period_s is not None else interval / 2, stop_event)
        log.info("watchdog: pinging systemd every %.1f s while every stage progresses", watchdog.period_s)
        watchdog.start()
    try:
        yield watchdog
    finally:
        sdnotify.notify("STOPPING=1", "STATUS=stopping")
        if watchdog is not None:
            watchdog.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def loading(status: str) -> None:
    """Show start-up progress in ``systemctl status`` (e.g. "loading models", "capturing CUDA graphs")."""
    sdnotify.notify(f"STATUS={status}")
