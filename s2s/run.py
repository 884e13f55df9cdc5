"""``s2s run``: build, start and supervise the pipeline until the input ends, a stage hangs, or a stop signal.

- Usage errors (an output path that would overwrite the input, a folder, a file we cannot write) are found before
  any model loads (exit 2), and the user's files are not touched until the run has started: the reply WAV and
  its latency record are written beside their targets and renamed into place at the end (``s2s.atomic_file``).
- SIGTERM and Ctrl-C stop the run at any point with exit status 130: while the models load with one line and no
  traceback, mid-turn within ``STOP_TIMEOUT_S`` (what was produced is kept).
- A file or text run with a failed turn (e.g. words too long for the LLM) exits 1, after the per-turn lines.
- A hung stage ends the run with exit status 1 and a message; the console script (``s2s.cli.console``) then
  exits without waiting for the stuck thread, so a thread inside a native call cannot abort the interpreter.
- Under systemd: READY once every stage is warm, watchdog pings while every stage progresses (s2s.supervisor).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from s2s.atomic_file import check_writable, commit, staging_path
from s2s.config import Config

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 1.0
STOP_POLL_S = 0.05
"""How often the main thread looks for Ctrl-C / SIGTERM and the end of the input (s)."""
STOP_TIMEOUT_S = 1.5
"""How long the stage threads get to finish after a stop, so that the process ends within 2 s of the signal."""


class UsageError(Exception):
    """Bad command-line arguments (exit status 2)."""


class StopRequested(BaseException):
    """SIGTERM or Ctrl-C while the models load (a BaseException, so that no stage's error handling takes it)."""


def run(config: Config, args: argparse.Namespace) -> int:
    if args.output is not None:
        check_output(Path(args.output), None if args.input is None else Path(args.input))
    stop_requested = threading.Event()
    loading_models = threading.Event()
    loading_models.set()
    previous_handlers = _on_stop_signals(stop_requested, loading_models)
    try:
        return _run(config, args, stop_requested, loading_models)
    except (StopRequested, KeyboardInterrupt):
        print("stopped while loading the models", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def _run(config: Config, args: argparse.Namespace, stop_requested: threading.Event,
         loading_models: threading.Event) -> int:
    from s2s.audio_devices import AudioDeviceError
    from s2s.pipeline import Pipeline, StageSetupError
    from s2s.supervisor import loading, supervised

    pipeline = Pipeline.from_config(config, input_path=args.input, text=args.text, output_path=args.output)
    print(duplex_line(config, pipeline.duplex), flush=True)
    record = _latency_record(config, args.output)
    if record is not None:
        pipeline.turns.latency_log = staging_path(record)
    loading("loading models")
    try:
        pipeline.setup()
    except StageSetupError as exc:
        cause = exc.__cause__
        if isinstance(cause, AudioDeviceError):
            print(f"error: {cause}", file=sys.stderr)
        else:
            print(f"error: {exc}\n(run `s2s check` to see which models and devices are found)", file=sys.stderr)
        return 1
    loading_models.clear()
    hung: list[str] = []
    live = args.input is None and args.text is None
    try:
        pipeline.start()
        if live:
            print("listening (Ctrl-C to stop)", flush=True)
        with supervised(pipeline, stop_requested, status="listening" if live else "answering"):
            hung = _supervise(pipeline, stop_requested)
    finally:
        pipeline.stop(STOP_TIMEOUT_S)
        if record is not None and pipeline.turns.records:
            commit(staging_path(record), record)
    _report(pipeline, args, record, stopped=stop_requested.is_set(), hung=hung)
    if hung:
        print(f"error: the {', '.join(hung)} stage stopped making progress (pipeline.hang_timeout_s="
              f"{config.pipeline.hang_timeout_s:g}); see the log above, run with -v for details", file=sys.stderr)
        return 1
    if stop_requested.is_set():
        return 130
    failed = [turn["turn"] for turn in pipeline.turns.records if turn.get("error")]
    if failed and not live:
        print(f"error: {len(failed)} of {len(pipeline.turns.records)} turns failed (turn "
              f"{', '.join(map(str, failed))}; the reason is on its line above)", file=sys.stderr)
        return 1
    return 0


def duplex_line(config: Config, duplex: str) -> str:
    """The line ``s2s run`` starts with: the duplex mode and what it means."""
    if duplex == "full":
        return (f"duplex: full (echo canceller {config.aec.backend!r}; talk over the assistant to interrupt it after "
                f"{config.vad.barge_in_min_speech_ms} ms of speech)")
    if config.pipeline.duplex == "full":
        return "duplex: half (full duplex needs the live microphone and speaker; --input/--text/--output runs are half)"
    return "duplex: half (nothing is listened to while the assistant replies)"


def check_output(output: Path, input_path: Path | None) -> None:
    """UsageError unless ``--output`` names an audio file we can write, apart from the input."""
    from s2s.audio import output_format  # numpy/scipy: imported once the numpy check has passed

    try:
        check_writable(output, "--output")
        output_format(output)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if input_path is not None:
        target, source = output.resolve(), input_path.resolve()
        if target == source:
            raise UsageError(f"--output {output} is the --input file: the reply would overwrite the question; "
                             f"give another file name")
        if source.is_dir() and source in target.parents:
            raise UsageError(f"--output {output} is inside the --input folder {input_path}: it would be read as "
                             f"input next time; write it somewhere else")


def _latency_record(config: Config, output: str | None) -> Path | None:
    """``<output>.latency.jsonl`` next to the reply (rewritten per run), unless pipeline.latency_log names a file
    (which the turns append to directly)."""
    if config.pipeline.latency_log or output is None:
        return None
    return Path(output).with_suffix(".latency.jsonl")


def _on_stop_signals(stop_requested: threading.Event, loading_models: threading.Event) -> dict:
    """Ctrl-C and SIGTERM set ``stop_requested``; while ``loading_models`` is set they also raise StopRequested in
    the main thread, which interrupts the loading. Returns the handlers they replaced (main thread only)."""
    def handler(signum: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop_requested.set()
        if loading_models.is_set():
            raise StopRequested(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, handler)
    return previous


def _supervise(pipeline, stop_requested: threading.Event) -> list[str]:
    """Wait for the end of the input or a stop signal. Returns the stages that hung or died (then stops waiting)."""
    next_check = time.monotonic() + HEALTH_CHECK_S
    while not stop_requested.wait(STOP_POLL_S) and not pipeline.wait(0):
        if time.monotonic() < next_check:
            continue
        next_check += HEALTH_CHECK_S
        pipeline.turns.expire()
        hung = [stage for stage in pipeline.health() if stage.hung]
        for stage in hung:
            log.error("%s stage is hung (busy %.0f s, no progress for %.0f s, thread alive: %s)",
                      stage.name, stage.busy_s, stage.last_progress_age_s, stage.alive)
        if hung:
            return [stage.name for stage in hung]
    return []


def _report(pipeline, args: argparse.Namespace, record: Path | None, stopped: bool, hung: list[str]) -> None:
    """One line per turn, then where the reply and the latency record went; says why when there was no turn."""
    records = pipeline.turns.records
    for turn in records:
        e2e = turn.get("e2e_s")
        line = f"turn {turn['turn']}: end of speech -> first audio out "
        line += f"{e2e * 1000:.0f} ms" if e2e is not None else "n/a"
        if turn.get("error"):
            line += f" (error: {turn['error']})"
        if turn.get("interrupted"):
            stopped = turn["playback_stopped_ms"]
            line += f" (interrupted: barge-in {turn['barge_in_detected_ms']:.0f} ms after the user began"
            line += ")" if stopped is None else f", playback stopped at {stopped:.0f} ms)"
        print(line)
    if not records:
        if stopped:
            print("no turn finished: stopped before the first reply was complete")
        elif hung:
            print(f"no turn finished: the {', '.join(hung)} stage hung")
        elif args.text is not None:
            print("no turn finished")
        else:
            print("no turn: no speech was found in the input")
    if args.output is not None:
        written = getattr(pipeline.sink, "written", None) is not None
        print(f"reply audio: {args.output}" if written else f"reply audio: none (no reply audio; {args.output} "
                                                             f"was left as it was)")
    latency_log = record or (Path(pipeline.turns.latency_log) if pipeline.turns.latency_log else None)
    if latency_log is not None and records:
        print(f"latency record: {latency_log} (one JSON line per turn)")
    elif records:
        print("latency record: logged only; set pipeline.latency_log=FILE to keep it")
