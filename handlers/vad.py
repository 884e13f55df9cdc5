"""Voice activity detection: Silero speech probabilities -> utterances -> SpeechSegment (one new turn each).

Two parts:

* ``UtteranceDetector``: the state machine, a stateful callable with no thread and no I/O. Audio blocks of any
  size are re-blocked into 512-sample frames (32 ms at 16 kHz); each frame gets a speech probability from the
  model. A frame at or above ``threshold`` starts an utterance that keeps the ``speech_pad_ms`` of audio before it
  (pre-roll) and the triggering frame. While speaking, frames above ``threshold - 0.15`` continue the speech
  (hysteresis); ``min_silence_ms`` of quieter frames end it. The utterance keeps ``speech_pad_ms`` after its last
  voiced frame, is dropped if its voiced span is shorter than ``min_speech_ms``, and is cut (and sent) when it
  reaches ``max_utterance_s``. The model's recurrent state is reset after every utterance.
* ``VADHandler``: the pipeline stage. It runs Silero (TorchScript, or ONNX with ``vad.onnx``) under
  ``torch.inference_mode()``, opens a turn for each utterance, and drops frames (resetting the detector) while the
  turn bookkeeping says the assistant is not listening (half-duplex).
"""

from __future__ import annotations

import logging
import dataclasses
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from s2s.audio import SPEECH_RATE, resample
from s2s.config import VADConfig
from s2s.handler import Handler
from s2s.messages import AudioFrame, SpeechSegment

log = logging.getLogger(__name__)

FRAME_SAMPLES = 512
FRAME_S = FRAME_SAMPLES / SPEECH_RATE
HYSTERESIS = 0.15
"""While speaking, a frame counts as speech down to ``threshold - HYSTERESIS`` (as Silero's own iterator does)."""


class SpeechModel(Protocol):
    """Speech probability of one 512-sample frame at 16 kHz; ``reset`` clears the model's recurrent state."""

    def __call__(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class _Frame:
    samples: np.ndarray  # [FRAME_SAMPLES] float32
    start_s: float
    """Stream time of the first sample."""
    t_end: float
    """Monotonic capture time of the last sample."""


class UtteranceDetector:
    """``__call__(samples, stream_time, t_captured) -> [SpeechSegment]`` per audio block (turn_id 0: the handler
    opens the turn); ``flush()`` at end of input."""

    def __init__(self, cfg: VADConfig, model: SpeechModel) -> None:
        self.model = model
        self.threshold = cfg.threshold
        self.min_speech_s = cfg.min_speech_ms / 1000
        self.min_silence_frames = math.ceil(cfg.min_silence_ms / 1000 / FRAME_S)
        self.pad_frames = math.ceil(cfg.speech_pad_ms / 1000 / FRAME_S)
        self.max_frames = max(1, int(cfg.max_utterance_s / FRAME_S))
        self.reset()

    def reset(self) -> None:
        """Forget all audio and the model state (e.g. while the microphone is muted)."""
        self._pending = np.zeros(0, dtype=np.float32)  # [< FRAME_SAMPLES] samples not yet framed
        self._pending_start = 0.0
        self._preroll: deque[_Frame] = deque(maxlen=self.pad_frames)
        self._frames: list[_Frame] = []
        """The open utterance (empty while idle), pre-roll included."""
        self._first_voiced = 0
        self._last_voiced = 0
        self._silent_run = 0
        self.model.reset()

    @property
    def in_speech(self) -> bool:
        return bool(self._frames)

    def __call__(self, samples: np.ndarray, stream_time: float, t_captured: float) -> list[SpeechSegment]:
        """Feed a block of 16 kHz mono float32 audio whose first sample is at ``stream_time`` and whose last sample
        was captured at monotonic time ``t_captured``. Returns the utterances that ended in it."""
        if self._pending.size == 0:
            self._pending_start = stream_time
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])  # [n]
        n_frames = audio.size // FRAME_SAMPLES
        utterances = []
        for k in range(n_frames):
            samples_after = audio.size - (k + 1) * FRAME_SAMPLES
            frame = _Frame(
                samples=audio[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES],  # [FRAME_SAMPLES]
                start_s=self._pending_start + k * FRAME_S,
                t_end=t_captured - samples_after / SPEECH_RATE,
            )
            utterance = self._step(frame)
            if utterance is not None:
                utterances.append(utterance)
        self._pending = audio[n_frames * FRAME_SAMPLES:].copy()
        self._pending_start += n_frames * FRAME_S
        return utterances

    def flush(self) -> list[SpeechSegment]:
        """End of input: the open utterance if its speech is long enough; then reset. A partial frame is dropped."""
        utterance = self._end() if self._frames else None
        self.reset()
        return [utterance] if utterance is not None else []

    def _step(self, frame: _Frame) -> SpeechSegment | None:
        probability = self.model(frame.samples)
        if not self._frames:
            if probability >= self.threshold:
                self._frames = [*self._preroll, frame]
                self._preroll.clear()
                self._first_voiced = self._last_voiced = len(self._frames) - 1
                self._silent_run = 0
            else:
                self._preroll.append(frame)
            return None
        self._frames.append(frame)
        index = len(self._frames) - 1
        if probability >= self.threshold or (self._silent_run == 0 and probability >= self.threshold - HYSTERESIS):
            self._last_voiced = index
            self._silent_run = 0
        else:
            self._silent_run += 1
        if self._silent_run >= self.min_silence_frames or len(self._frames) >= self.max_frames:
            return self._end()
        return None

    def _end(self) -> SpeechSegment | None:
        """Close the open utterance: the SpeechSegment, or None if its speech was too short. Frames after the
        post-speech padding become the next pre-roll; the model state is reset."""
        keep = self._frames[:self._last_voiced + 1 + self.pad_frames]
        first, last = self._frames[self._first_voiced], self._frames[self._last_voiced]
        voiced_s = last.start_s + FRAME_S - first.start_s
        utterance = None
        if voiced_s >= self.min_speech_s:
            utterance = SpeechSegment(
                audio=np.concatenate([f.samples for f in keep]),  # [len(keep) * FRAME_SAMPLES]
                start_s=keep[0].start_s,
                end_s=last.start_s + FRAME_S,
                t_speech_end=last.t_end,
            )
        else:
            log.debug("VAD: dropped a %.0f ms burst (vad.min_speech_ms=%.0f)", voiced_s * 1000,
                      self.min_speech_s * 1000)
        self._preroll.clear()
        self._preroll.extend(self._frames[len(keep):])
        self._frames = []
        self._silent_run = 0
        self.model.reset()
        return utterance


class SileroSpeechModel:
    """Silero VAD from the silero-vad wheel (no torch.hub, no network)."""

    def __init__(self, onnx: bool = False) -> None:
        from silero_vad import load_silero_vad

        self._model = load_silero_vad(onnx=onnx)

    def __call__(self, frame: np.ndarray) -> float:
        with torch.inference_mode():  # the TorchScript model otherwise builds an autograd graph on every call
            return float(self._model(torch.from_numpy(frame), SPEECH_RATE))  # [1, 1] -> float

    def reset(self) -> None:
        self._model.reset_states()


class VADHandler(Handler):
    """AudioFrame -> SpeechSegment; each segment opens a turn (``turns.begin``)."""

    name = "vad"
    cfg: VADConfig
    model: SpeechModel | None = None
    """Injected for tests; Silero is loaded by ``setup`` otherwise."""
    detector: UtteranceDetector | None = None
    _muted = False
    _warned_rate = False

    def setup(self) -> None:
        if self.model is None:
            self.model = SileroSpeechModel(onnx=self.cfg.onnx)
            log.info("VAD: Silero (%s) loaded", "ONNX" if self.cfg.onnx else "TorchScript")
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        for _ in range(3):
            self.model(silence)
        self.detector = UtteranceDetector(self.cfg, self.model)

    def process(self, item: object) -> Iterator[object]:
        if not isinstance(item, AudioFrame):
            raise TypeError(f"the VAD stage takes AudioFrame items, not {type(item).__name__}")
        assert self.detector is not None, "VADHandler.setup() was not called"
        if not self.turns.listening:
            if not self._muted:
                self.detector.reset()
                self._muted = True
                log.debug("VAD: muted while the assistant replies")
            return
        self._muted = False
        for utterance in self.detector(self._samples_16k(item), item.stream_time, item.t_captured):
            yield self._open_turn(utterance)
            if not self.turns.listening:  # half-duplex: audio after the utterance is not listened to
                self.detector.reset()
                self._muted = True
                return

    def flush(self) -> Iterator[object]:
        if self.detector is None or not self.turns.listening:
            return
        for utterance in self.detector.flush():
            yield self._open_turn(utterance)

    def _samples_16k(self, frame: AudioFrame) -> np.ndarray:
        if frame.sample_rate == SPEECH_RATE:
            return frame.samples
        if not self._warned_rate:
            self._warned_rate = True
            log.warning("VAD: got %d Hz audio; resampling each block to 16 kHz (the source should do it once)",
                        frame.sample_rate)
        return resample(frame.samples, frame.sample_rate, SPEECH_RATE)

    def _open_turn(self, utterance: SpeechSegment) -> SpeechSegment:
        turn_id = self.turns.new_id()
        self.turns.begin(turn_id, utterance.t_speech_end)
        log.info("VAD: utterance %.2f-%.2f s -> turn %d", utterance.start_s, utterance.end_s, turn_id)
        return dataclasses.replace(utterance, turn_id=turn_id)
