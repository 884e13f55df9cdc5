"""Barge-in: is the user talking over the assistant, long enough to interrupt it? (full duplex)

``BargeInDetector`` is a stateful callable fed every VAD frame (512 samples, 32 ms at 16 kHz): the echo-cancelled
microphone audio, Silero's speech probability and the far-end reference that played meanwhile
(``AudioFrame.far_end``). It returns a ``BargeIn`` once the user has spoken for ``barge_in_min_speech_ms``; no
thread, no I/O.

A run of speech is a stretch of frames Silero calls speech (probability at least ``barge_in_threshold``, down to
``HYSTERESIS`` less once the run goes on) with gaps of less than ``GAP_FRAMES``; it starts ``LEARN_DELAY_FRAMES``
frames early (Silero's probability rises a frame or two late). The run's duration is the time its 4 ms sub-blocks
are

* **loud**: ``LOUD_DB`` above the noise floor (a low quantile of the sub-block energies), so the probability Silero
  keeps for a frame or two after a sound ends adds nothing, and a 150 ms "mm" counts 150 ms at most;
* and **clear of echo**: ``echo_margin_db`` louder than the echo expected from the far end, so what the canceller
  lets through around the user's voice (it cancels less while both talk) adds nothing either. The expected echo is
  the loudest far-end sub-block of the last ``TAIL_S`` (the acoustic delay plus the reverberation) times the coupling,
  the loudest ratio of canceller output to far end seen while the user was silent (Silero's probability under
  ``SPEECH_FREE``, no run ``LEARN_DELAY_FRAMES`` frames before and after, and under the guard itself: the start of the
  user's voice, which Silero may rate low for a while after the canceller has thinned it, must not raise it);
  meanwhile it decays by ``COUPLING_DECAY`` while the far end plays (the loud residual of a canceller that is still
  converging is forgotten within seconds), and it starts at ``COUPLING_START_DB``.

The run interrupts once its duration reaches the minimum; its onset is its first loud sub-block. Before that, from
``PAUSE_FRACTION`` of the minimum on, ``pause_wanted`` is set until the run ends or interrupts: the VAD then holds
the reply's playback. This matters because while both talk, the canceller's suppressor cuts much of the user's
voice (whole frames fall to the noise floor), so the minimum would take far longer than itself to gather; once the
speaker is quiet, the user's voice comes through whole. A run that ends short of the minimum (a "mm") lets the
reply play on after a short pause. The echo itself leaves almost nothing above the guard, and a cough or a door slam
never starts a run (Silero gives them almost no probability).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

RATE = 16000
SUB = 64
"""Samples per sub-block (4 ms)."""
SUB_S = SUB / RATE
TAIL_S = 0.3
"""Far-end audio this old can still echo: up to 120 ms of delay plus the reverberation tail (RT60 up to 300 ms at
-60 dB; the canceller removes most of it)."""
HYSTERESIS = 0.15
"""Once a run goes on, a frame counts down to ``barge_in_threshold - HYSTERESIS`` (as the VAD does)."""
GAP_FRAMES = 6
"""Frames (192 ms) without speech that end a run (a pause between words is shorter)."""
LOUD_DB = 12.0
"""A sub-block counts only this far above the noise floor."""
FLOOR_QUANTILE = 0.05
FLOOR_STEP_DB = 0.5
"""The noise floor is the ``FLOOR_QUANTILE`` of the sub-block energies, tracked in steps of this size (it rises by
at most ~6 dB per second of continuous sound)."""
FLOOR_START_DB = -70.0
"""The noise floor before anything was heard (dB full scale)."""
FAR_ACTIVE_DB = -60.0
"""Far-end sub-blocks quieter than this play nothing (dB full scale)."""
COUPLING_START_DB = -30.0
"""The coupling before anything was learnt (a converged canceller leaves ~40 dB less; an unconverged one teaches the
coupling its own level within a few frames)."""
COUPLING_DECAY = 10.0
"""dB per second the coupling falls while the far end plays and nothing louder comes out of the canceller."""
PAUSE_FRACTION = 0.25
"""Part of the minimum duration (50 ms of 200) after which the reply is paused while the run goes on."""
SPEECH_FREE = 0.3
"""Outside runs, sub-blocks of frames below this probability teach the coupling (they are not the user's)..."""
LEARN_DELAY_FRAMES = 2
"""... once this many later frames have not started a run either (Silero may call the start of speech a frame or
two late; the user's first syllable must not teach the coupling)."""


@dataclass(frozen=True)
class BargeIn:
    """The user's speech reached the minimum duration."""

    onset_s: float
    """Stream time of its first loud sub-block."""
    decided_s: float
    """Stream time of the end of the frame that reached the minimum."""
    speech_s: float
    """Seconds of speech counted: loud and clear of echo (at least the minimum)."""


def db(energy: float | np.ndarray) -> float | np.ndarray:
    return 10.0 * np.log10(np.maximum(energy, 1e-12))


class BargeInDetector:
    """``__call__(near, probability, start_s, far=None) -> BargeIn | None`` per VAD frame (one BargeIn per run);
    ``reset()`` forgets the current run (the noise floor and the coupling describe the room and are kept)."""

    def __init__(self, min_speech_ms: int, threshold: float, echo_margin_db: float) -> None:
        self.min_speech_s = min_speech_ms / 1000
        self.threshold = threshold
        self.margin_db = echo_margin_db
        self.floor_db = FLOOR_START_DB
        self.coupling_db = COUPLING_START_DB
        self._far: deque[float] = deque(maxlen=max(1, round(TAIL_S / SUB_S)))
        """Energy (dB) of the last ``TAIL_S`` of far-end sub-blocks."""
        self._recent: deque[tuple[list[tuple[bool, bool]], float]] = deque(maxlen=LEARN_DELAY_FRAMES)
        """(sub-blocks' (loud, clear), start) of the last frames: a run that starts counts them too."""
        self._to_learn: deque[list[float | None]] = deque()
        """Per recent frame: what it would teach the coupling, once no run has started after it."""
        self.reset()

    def reset(self) -> None:
        self._run = False
        self._gap = 0
        self._speech_s = 0.0
        self._onset_s: float | None = None
        self._fired = False

    @property
    def pause_wanted(self) -> bool:
        """A run that may become an interruption is going on: hold the playback until it does or ends."""
        return self._run and not self._fired and self._speech_s >= PAUSE_FRACTION * self.min_speech_s - 1e-9

    def __call__(self, near: np.ndarray, probability: float, start_s: float,
                 far: np.ndarray | None = None) -> BargeIn | None:
        near_db = db(np.mean(np.square(near.reshape(-1, SUB), dtype=np.float64), axis=1))  # [8]
        far_db = np.full(len(near_db), -120.0) if far is None else \
            db(np.mean(np.square(far.reshape(-1, SUB), dtype=np.float64), axis=1))  # [8]
        lesson: list[float | None] = []
        subs = [self._sub_block(float(n), float(f), lesson) for n, f in zip(near_db, far_db, strict=True)]
        speech = probability >= self.threshold or (self._run and probability >= self.threshold - HYSTERESIS)
        found = self._count(speech, subs, start_s)
        self._learn(lesson if not self._run and probability < SPEECH_FREE else [])
        self._recent.append((subs, start_s))
        return found

    def _sub_block(self, near_db: float, far_db: float, lesson: list[float | None]) -> tuple[bool, bool]:
        """(loud, clear of echo) for one sub-block; updates the noise floor and, while the far end plays, adds what
        it could teach the coupling to ``lesson`` (its ratio to the far end if loud, else None: time to decay)."""
        self._far.append(far_db)
        far_max_db = max(self._far)
        far_active = far_max_db > FAR_ACTIVE_DB
        self.floor_db += FLOOR_STEP_DB * (FLOOR_QUANTILE - (near_db < self.floor_db))
        loud = near_db >= self.floor_db + LOUD_DB
        if far_active:
            lesson.append(near_db - far_max_db if loud else None)
        clear = loud and (not far_active or near_db >= far_max_db + self.coupling_db + self.margin_db)
        return loud, clear

    def _learn(self, lesson: list[float | None]) -> None:
        """Queue this frame's lesson; teach the one of the frame ``LEARN_DELAY_FRAMES`` back unless a run started
        since (a run clears the queue: while the user may be speaking, the coupling neither learns nor decays)."""
        if self._run:
            self._to_learn.clear()
            return
        self._to_learn.append(lesson)
        if len(self._to_learn) > LEARN_DELAY_FRAMES:
            for ratio in self._to_learn.popleft():
                self.coupling_db -= COUPLING_DECAY * SUB_S
                if ratio is not None and ratio < self.coupling_db + self.margin_db:  # above the guard: maybe the user
                    self.coupling_db = max(self.coupling_db, ratio)

    def _count(self, speech: bool, subs: list[tuple[bool, bool]], start_s: float) -> BargeIn | None:
        if not speech:
            if self._run:
                self._gap += 1
                if self._gap >= GAP_FRAMES:
                    self.reset()
            return None
        if not self._run:
            self._run = True
            for recent, recent_start in self._recent:
                self._add(recent, recent_start)
        self._gap = 0
        self._add(subs, start_s)
        if self._fired or self._speech_s < self.min_speech_s - 1e-9:
            return None
        self._fired = True
        return BargeIn(onset_s=self._onset_s, decided_s=start_s + len(subs) * SUB_S, speech_s=self._speech_s)

    def _add(self, subs: list[tuple[bool, bool]], start_s: float) -> None:
        for k, (loud, clear) in enumerate(subs):
            if loud and self._onset_s is None:
                self._onset_s = start_s + k * SUB_S
            if clear:
                self._speech_s += SUB_S
