"""Turn bookkeeping: the one owner of half-duplex listening and of each turn's latency marks.

A turn begins when the VAD hands over an utterance (or a ``--text`` prompt is injected) and ends when the output
stage has played the reply's last sample, when any stage reports ``TurnFailed``, or, as a last resort, after
``max_turn_s``. While any turn is open and ``half_duplex`` is on, the microphone is muted; ``end`` (called from
``finally`` blocks) and the timeout guarantee that listening always resumes.

Latency marks (monotonic seconds), in order of a normal turn:
    speech_end, speech_end_decided, transcript_ready, llm_first_token, first_text_chunk, tts_first_audio,
    first_audio_out
(``speech_end`` is the capture of the last voiced frame; ``speech_end_decided`` the VAD's decision, after
``vad.min_silence_ms`` of silence.)

Full duplex: the VAD may ``interrupt`` a turn when the user talks over it (barge-in). From then on the turn is no
longer open (every stage drops its data and stops generating), but it ends only when the sink has stopped playing
it (``end`` with ``heard``, the words of the reply that were played). Its record then also has ``interrupted``
and, in milliseconds from the user's speech onset, ``barge_in_detected`` and ``playback_stopped``. Before that, on
the first evidence of the user's voice, the VAD may ``pause`` the turn: it stays open and keeps generating, only
its playback waits until it is resumed (the user said no more) or interrupted.

A turn the VAD opened before ``vad.min_silence_ms`` of silence (``end_of_turn``: the words sounded finished) is
``retract``-ed when the user speaks on: it ends at once, its record says ``retracted``, the LLM forgets the
exchange, and the utterance, continued, becomes a new turn.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKS = ("speech_end", "speech_end_decided", "transcript_ready", "llm_first_token", "first_text_chunk",
         "tts_first_audio", "first_audio_out")
BARGE_IN_MARKS = ("barge_in_detected", "playback_stopped")
"""Marks of an interrupted turn, recorded from the user's speech onset (not from the end of the turn's speech)."""
HEARD_KEPT = 16
"""Interrupted turns whose played words are kept for the LLM to read."""


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
        self._interrupted: dict[int, float] = {}
        """Open turns the user interrupted -> monotonic time of the onset of the user's speech."""
        self._heard: dict[int, str] = {}
        """Interrupted turn -> the words of its reply that were played (the last ``HEARD_KEPT``)."""
        self._cancel: dict[int, threading.Event] = {}
        """Open turn -> the event ``cancel_event`` handed out (set when the turn stops being open)."""
        self._paused: set[int] = set()
        """Open turns whose playback waits (full duplex: the user may be interrupting)."""
        self._retracted: set[int] = set()
        """Turns being ended by ``retract`` (until their record is written)."""
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
        assert name in MARKS or name in BARGE_IN_MARKS, name
        with self._lock:
            self._marks.setdefault(turn_id, {}).setdefault(name, t if t is not None else time.monotonic())

    def interrupt(self, turn_id: int, t_onset: float, t_detected: float | None = None) -> bool:
        """The user talked over the turn (barge-in): it is no longer open, so its data is dropped and its generation
        stops; the sink ends it once playback has stopped. ``t_onset`` is the monotonic time the user's speech
        began. False if the turn was not open (already ended or interrupted)."""
        with self._lock:
            if turn_id not in self._open or turn_id in self._interrupted:
                return False
            self._interrupted[turn_id] = t_onset
            self._paused.discard(turn_id)
            self._marks.setdefault(turn_id, {})["barge_in_detected"] = t_detected or time.monotonic()
            self._set_cancel(turn_id)
        log.info("turn %d: interrupted by the user", turn_id)
        return True

    def retract(self, turn_id: int) -> bool:
        """Take back a turn opened too early (the user spoke on): it ends now, generation and playback stop, and its
        record says ``retracted`` (the LLM leaves the exchange out of its history). False if it was not open."""
        with self._lock:
            if turn_id not in self._open:
                return False
            self._retracted.add(turn_id)
        log.info("turn %d: taken back, the user speaks on", turn_id)
        self.end(turn_id)
        return True

    def cancel_event(self, turn_id: int) -> threading.Event:
        """An event that is set once the turn is no longer open (ended, expired, failed or interrupted): the TTS
        engine's ``cancel``."""
        with self._lock:
            event = self._cancel.get(turn_id)
            if event is None:
                event = threading.Event()
                if turn_id in self._open and turn_id not in self._interrupted:
                    self._cancel[turn_id] = event
                else:
                    event.set()
            return event

    def _set_cancel(self, turn_id: int) -> None:
        event = self._cancel.pop(turn_id, None)
        if event is not None:
            event.set()

    def pause(self, turn_id: int) -> bool:
        """Hold the playback of an open turn (the user may be talking over it). False if it is not open or paused."""
        with self._lock:
            if turn_id not in self._open or turn_id in self._interrupted or turn_id in self._paused:
                return False
            self._paused.add(turn_id)
        log.debug("turn %d: playback paused", turn_id)
        return True

    def resume(self, turn_id: int) -> None:
        """Let a paused turn play on."""
        with self._lock:
            self._paused.discard(turn_id)
        log.debug("turn %d: playback resumed", turn_id)

    def paused(self, turn_id: int) -> bool:
        """The turn's playback waits for ``resume`` or ``interrupt``."""
        with self._lock:
            return turn_id in self._paused

    def interrupted(self, turn_id: int) -> bool:
        """The user interrupted the turn and the sink has not ended it yet."""
        with self._lock:
            return turn_id in self._interrupted

    def open_turns(self) -> list[int]:
        """The turns still open (not interrupted), oldest first."""
        with self._lock:
            return [t for t in self._open if t not in self._interrupted]

    def heard(self, turn_id: int) -> str | None:
        """The words of an interrupted turn's reply that were played ("" for none), or None if it was not
        interrupted (or is older than the last ``HEARD_KEPT``)."""
        with self._lock:
            return self._heard.get(turn_id)

    def end(self, turn_id: int, error: str | None = None, heard: str | None = None) -> None:
        """Close a turn (idempotent); listening resumes when no turn is open. Writes the latency record. ``heard``:
        for an interrupted turn, the words of its reply that were played."""
        with self._lock:
            if self._open.pop(turn_id, None) is None:
                return
            self._set_cancel(turn_id)
            self._paused.discard(turn_id)
            onset = self._interrupted.pop(turn_id, None)
            retracted = turn_id in self._retracted
            self._retracted.discard(turn_id)
            if onset is not None and not retracted:
                self._heard[turn_id] = heard or ""
                while len(self._heard) > HEARD_KEPT:
                    self._heard.pop(next(iter(self._heard)))
            record = self._record(turn_id, error, onset)
            record["retracted"] = retracted
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

    def marked(self, turn_id: int, name: str) -> bool:
        """The open turn has the mark ``name`` (e.g. ``first_audio_out``: its reply is being heard)."""
        with self._lock:
            return name in self._marks.get(turn_id, {})

    def is_open(self, turn_id: int) -> bool:
        """The turn has begun and neither ended nor been interrupted."""
        with self._lock:
            return turn_id in self._open and turn_id not in self._interrupted

    def _record(self, turn_id: int, error: str | None, onset: float | None = None) -> dict:
        marks = self._marks.pop(turn_id, {})
        start = marks.get("speech_end")
        record: dict = {"turn": turn_id, "error": error}
        for name in MARKS:
            record[f"{name}_ms"] = _ms(marks.get(name), start)
        out = marks.get("first_audio_out")
        record["e2e_s"] = None if out is None or start is None else round(out - start, 4)
        record["interrupted"] = onset is not None
        for name in BARGE_IN_MARKS:
            record[f"{name}_ms"] = _ms(marks.get(name), onset)
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


def _ms(t: float | None, start: float | None) -> float | None:
    return None if t is None or start is None else round((t - start) * 1000, 1)
