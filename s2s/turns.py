"""Turn bookkeeping: the one owner of half-duplex listening and of each turn's latency marks.

A turn begins when the VAD hands over an utterance (or a ``--text`` prompt is injected) and ends when the output
stage has played the reply's last sample, when any stage reports ``TurnFailed``, or, as a last resort, after
``max_turn_s``. While any turn is open and ``half_duplex`` is on, the microphone is muted; ``end`` (called from
``finally`` blocks) and the timeout guarantee that listening always resumes.

Latency marks (monotonic seconds), in order of a normal turn:
    speech_end, transcript_ready, llm_first_token, first_text_chunk, tts_first_audio, first_audio_out
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKS = ("speech_end", "transcript_ready", "llm_first_token", "first_text_chunk", "tts_first_audio", "first_audio_out")


class Turns:
    """Thread-safe: stages call ``begin``/``mark``/``end`` from their own threads."""

    def __init__(self, half_duplex: bool = True, max_turn_s: float = 60.0, latency_log: str = "") -> None:
        self.half_duplex = half_duplex
        self.max_turn_s = max_turn_s
        self.latency_log = Path(latency_log) if latency_log else None
        if self.latency_log is not None:
            self.latency_log.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, float] = {}
        """turn id -> monotonic deadline."""
        self._marks: dict[int, dict[str, float]] = {}
        self._listening = threading.Event()
        self._listening.set()
        self.records: list[dict] = []
        """Every finished turn's latency record, in order (also written to ``latency_log``)."""

    # ---- turns -----------------------------------------------------------------------------------
    def new_id(self) -> int:
        return next(self._ids)

    def begin(self, turn_id: int, t_speech_end: float | None = None) -> None:
        """Open a turn (mutes the microphone in half-duplex mode)."""
        with self._lock:
            self._open[turn_id] = time.monotonic() + self.max_turn_s
            self._marks.setdefault(turn_id, {})["speech_end"] = t_speech_end or time.monotonic()
            if self.half_duplex:
                self._listening.clear()
        log.debug("turn %d begins", turn_id)

    def mark(self, turn_id: int, name: str, t: float | None = None) -> None:
        """Record the first time ``name`` happened in the turn (later calls for the same name are ignored)."""
        assert name in MARKS, name
        with self._lock:
            self._marks.setdefault(turn_id, {}).setdefault(name, t if t is not None else time.monotonic())

    def end(self, turn_id: int, error: str | None = None) -> None:
        """Close a turn (idempotent); listening resumes when no turn is open. Writes the latency record."""
        with self._lock:
            if self._open.pop(turn_id, None) is None:
                return
            record = self._record(turn_id, error)
            self._resume_if_idle()
        self.records.append(record)
        if error:
            log.warning("turn %d ended with an error: %s", turn_id, error)
        e2e = record.get("e2e_s")
        if e2e is not None:
            log.info("turn %d: end of speech -> first audio out %.0f ms", turn_id, e2e * 1000)
        if self.latency_log is not None:
            try:
                with self.latency_log.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            except OSError as exc:  # ending the turn (listening again) matters more than the record
                log.error("cannot write the latency record to %s: %s", self.latency_log, exc)

    def is_open(self, turn_id: int) -> bool:
        with self._lock:
            return turn_id in self._open

    def _record(self, turn_id: int, error: str | None) -> dict:
        marks = self._marks.pop(turn_id, {})
        start = marks.get("speech_end")
        record: dict = {"turn": turn_id, "error": error}
        for name in MARKS:
            value = marks.get(name)
            record[f"{name}_ms"] = None if value is None or start is None else round((value - start) * 1000, 1)
        out = marks.get("first_audio_out")
        record["e2e_s"] = None if out is None or start is None else round(out - start, 4)
        return record

    def _resume_if_idle(self) -> None:
        if not self._open:
            self._listening.set()

    # ---- listening -------------------------------------------------------------------------------
    @property
    def listening(self) -> bool:
        """False while the microphone is muted (a turn is open in half-duplex mode)."""
        self.expire()
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        """Block until listening (or ``timeout`` s); True if listening."""
        deadline = time.monotonic() + timeout
        while True:
            self.expire()
            remaining = deadline - time.monotonic()
            if self._listening.wait(min(0.05, max(remaining, 0))) or remaining <= 0:
                return self._listening.is_set()

    def expire(self) -> None:
        """End turns that outlived ``max_turn_s`` (a stage lost or hung them)."""
        now = time.monotonic()
        with self._lock:
            late = [t for t, deadline in self._open.items() if deadline < now]
        for turn_id in late:
            self.end(turn_id, error=f"no reply finished within pipeline.max_turn_s={self.max_turn_s:g} s")
