"""A full-duplex pipeline running in the simulated room, for tests/test_duplex.py and bench/duplex.py.

``Duplex`` builds the pipeline from a config whose ``[pipeline] duplex = "full"`` (the room must be installed as
``sounddevice`` first), starts it, and types questions into the LLM's queue (``ask``: as if the STT had heard them,
so the room holds only the assistant's voice and what a script says); the ``wait_*`` helpers poll for a turn's
record or for the speaker to play. ``speaker_stop_after`` reads when playback went quiet in the room's recording.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from pipeline_helpers import reuse_models
from simulated_room import EchoPath, SimulatedRoom

from s2s.config import Config
from s2s.messages import Transcript
from s2s.pipeline import Pipeline

WAIT_S = 120.0
"""Bound for one reply on a loaded 2-core machine."""
LOUD_ROOM = EchoPath(delay_s=0.08, rt60_s=0.25, gain=1.0, nonlinearity=0.5)
"""The echo is louder than the user would speak (espeak at half scale), with a mildly distorting loudspeaker."""
NORMAL_ROOM = EchoPath(delay_s=0.06, rt60_s=0.2, gain=0.5)
"""The echo about 6 dB under the user."""
USER_LEVEL = 0.5
"""Scale of espeak-ng's speech for the user's voice."""


class Duplex:
    """A running full-duplex pipeline in ``room``."""

    def __init__(self, room: SimulatedRoom, config: Config) -> None:
        self.room = room
        self.pipeline = reuse_models(Pipeline.from_config(config))
        assert self.pipeline.duplex == "full"
        self.stages = {stage.name: stage for stage in self.pipeline.stages}
        self.turns = self.pipeline.turns
        self.asked: list[int] = []

    def __enter__(self) -> Duplex:
        self.pipeline.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.room.close()
        assert self.pipeline.stop(timeout=10.0) == []

    def ask(self, text: str) -> int:
        """A turn with this transcript, as if the user had said it."""
        turn_id = self.turns.new_id()
        self.turns.begin(turn_id)
        self.stages["llm"].in_queue.put(Transcript(turn_id, text, "en"))
        self.asked.append(turn_id)
        return turn_id

    def record(self, turn_id: int) -> dict | None:
        return next((r for r in self.turns.records if r["turn"] == turn_id), None)

    def wait_record(self, turn_id: int, timeout: float = WAIT_S) -> dict:
        return wait(lambda: self.record(turn_id), timeout, f"turn {turn_id} to end")

    def wait_playing(self, timeout: float = WAIT_S) -> float:
        """Room time at which the speaker starts to play (after now)."""
        start = len(self.room.recorded("speaker"))

        def sound() -> float | None:
            played = self.room.recorded("speaker")[start:]
            loud = np.nonzero(np.abs(played) > 0.01)[0]
            return (start + loud[0]) / self.room.speaker_rate if loud.size else None

        return wait(sound, timeout, "the speaker to play")


def wait(condition: Callable[[], object], timeout: float, what: str):
    """The first true value of ``condition()``, polled every 20 ms; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def speaker_stop_after(room: SimulatedRoom, t: float, silence_s: float = 1.0) -> float | None:
    """Room time at which the speaker went quiet after ``t`` for at least ``silence_s`` (longer than the pauses
    within a reply, shorter than the wait for the answer to a question), or None."""
    rate = room.speaker_rate
    quiet = np.abs(room.recorded("speaker")[int(t * rate):]) <= 0.005
    window = int(silence_s * rate)
    counts = np.concatenate([[0], np.cumsum(quiet)])  # quiet samples before each index
    full = np.nonzero(counts[window:] - counts[:-window] == window)[0]
    return None if not full.size else int(t * rate) / rate + full[0] / rate
