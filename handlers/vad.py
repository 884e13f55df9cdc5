"""Voice activity detection: Silero speech probabilities -> utterances -> SpeechSegment (one new turn each).

Two parts:

* ``UtteranceDetector``: the state machine, a stateful callable with no thread and no I/O. Audio blocks of any
  size are re-blocked into 512-sample frames (32 ms at 16 kHz); each frame gets a speech probability from the
  model. A frame at or above ``threshold`` starts an utterance that keeps the ``speech_pad_ms`` of audio before it
  (pre-roll) and the triggering frame. While speaking, frames above ``threshold - 0.15`` continue the speech
  (hysteresis); ``min_silence_ms`` of quieter frames end it. The utterance keeps ``speech_pad_ms`` after its last
  voiced frame, is dropped if its voiced span is shorter than ``min_speech_ms``, and is cut (and sent) when it
  reaches ``max_utterance_s``. The model's recurrent state is reset after every utterance. Early transcription:
  when the silence after the last voiced frame first reaches ``early_stt_ms`` (less than ``min_silence_ms``), the
  utterance so far goes out as a ``SpeculativeSegment`` (no turn), for the STT to transcribe while the VAD waits
  for the end of speech. End of turn from the words (``end_of_turn.silence_ms``, ``s2s.end_of_turn``): once the
  STT's verdict on that transcript says the words are finished and the silence has lasted ``end_of_turn.silence_ms``,
  the utterance is sent then, without waiting for ``min_silence_ms``; until ``min_silence_ms`` has passed the
  detector keeps it, and a voiced frame resumes it (``Resumed``: the handler takes the turn back) instead of
  starting a new one.
* ``VADHandler``: the pipeline stage. It runs Silero (TorchScript, or ONNX with ``vad.onnx``) under
  ``torch.inference_mode()``, opens a turn for each utterance, and drops frames (resetting the detector) while the
  turn bookkeeping says the assistant is not listening (half-duplex).

Full duplex (``turns.half_duplex`` off; the frames carry the far end when an echo canceller runs): the microphone
is never muted. Every frame also goes to the barge-in detector (``s2s.barge_in``), which sees the echo-cancelled
audio, Silero's probability and the far end. While it suspects that the user is talking over an open turn, that
turn's playback is paused (``turns.pause``; it resumes if the sound stays short); when it finds enough of the user's
speech, the turn is interrupted (``turns.interrupt``: its generation and playback stop) and the utterance in
progress, pre-roll included, becomes the next turn when it ends. An utterance heard while the assistant thinks or
speaks becomes a turn only that way: a backchannel, a cough or the assistant's own echo are dropped.
"""

from __future__ import annotations

import logging
import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from s2s.audio import SPEECH_RATE, resample
from s2s.barge_in import FAR_ACTIVE_DB, TAIL_S, BargeIn, BargeInDetector, db
from s2s.config import VADConfig
from s2s.end_of_turn import EndOfTurn
from s2s.handler import Handler
from s2s.messages import AudioFrame, SpeculativeSegment, SpeechSegment

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
    far: np.ndarray | None = None
    """The far end that played meanwhile (full duplex), [FRAME_SAMPLES]."""


@dataclass(frozen=True)
class Resumed:
    """The user spoke on after an utterance that was sent early (the words sounded finished): it goes on."""

    start_s: float
    """Stream time of the voiced frame that resumed it."""


class UtteranceDetector:
    """``__call__(samples, stream_time, t_captured, far_end=None) -> [SpeechSegment | SpeculativeSegment | Resumed]``
    per audio block (turn_id 0: the handler opens the turn); ``flush()`` at end of input. ``on_frame(frame,
    probability)``, if set, sees every frame with its speech probability (the far end framed along with the audio).
    ``end_of_turn``: the verdicts on the speculative transcripts (None: utterances end on silence alone)."""

    def __init__(self, cfg: VADConfig, model: SpeechModel, end_of_turn: EndOfTurn | None = None) -> None:
        self.model = model
        self.end_of_turn = end_of_turn if end_of_turn is not None and end_of_turn.silence_ms > 0 else None
        self.finished_frames = math.ceil(end_of_turn.silence_ms / 1000 / FRAME_S) if self.end_of_turn else 0
        """Silent frames after which an utterance whose words are finished is sent."""
        self.threshold = cfg.threshold
        self.min_speech_s = cfg.min_speech_ms / 1000
        self.min_silence_frames = math.ceil(cfg.min_silence_ms / 1000 / FRAME_S)
        early = math.ceil(cfg.early_stt_ms / 1000 / FRAME_S)
        self.early_frames = early if 0 < early < self.min_silence_frames else 0
        """Silent frames after which the utterance so far is sent as a SpeculativeSegment (0 = never)."""
        self.pad_frames = math.ceil(cfg.speech_pad_ms / 1000 / FRAME_S)
        self.max_frames = max(1, int(cfg.max_utterance_s / FRAME_S))
        self.on_frame: Callable[[_Frame, float], None] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all audio and the model state (e.g. while the microphone is muted)."""
        self._pending = np.zeros(0, dtype=np.float32)  # [< FRAME_SAMPLES] samples not yet framed
        self._pending_far = np.zeros(0, dtype=np.float32)  # [len(_pending)] their far end (full duplex)
        self._pending_start = 0.0
        self._preroll: deque[_Frame] = deque(maxlen=self.pad_frames)
        self._frames: list[_Frame] = []
        """The open utterance (empty while idle), pre-roll included."""
        self._first_voiced = 0
        self._last_voiced = 0
        self._silent_run = 0
        self._sent_early = False
        self.model.reset()

    @property
    def in_speech(self) -> bool:
        return bool(self._frames)

    @property
    def sent_early(self) -> bool:
        """The open utterance was sent before ``min_silence_ms`` of silence; a voiced frame would resume it."""
        return self._sent_early

    def settle(self) -> None:
        """Close an utterance that was sent early (its turn went ahead): speech from now on is a new utterance."""
        if self._sent_early:
            self._close()

    def __call__(self, samples: np.ndarray, stream_time: float, t_captured: float,
                 far_end: np.ndarray | None = None) -> list[SpeechSegment | SpeculativeSegment]:
        """Feed a block of 16 kHz mono float32 audio whose first sample is at ``stream_time`` and whose last sample
        was captured at monotonic time ``t_captured`` (``far_end``: what played meanwhile, same length). Returns the
        utterances that ended in it."""
        if self._pending.size == 0:
            self._pending_start = stream_time
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])  # [n]
        far = None
        if far_end is not None or self._pending_far.size:
            block_far = np.zeros(audio.size - self._pending.size, dtype=np.float32) if far_end is None else far_end
            far = np.concatenate([self._pending_far, np.asarray(block_far, dtype=np.float32).reshape(-1)])  # [n]
        n_frames = audio.size // FRAME_SAMPLES
        utterances = []
        for k in range(n_frames):
            samples_after = audio.size - (k + 1) * FRAME_SAMPLES
            frame = _Frame(
                samples=audio[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES],  # [FRAME_SAMPLES]
                start_s=self._pending_start + k * FRAME_S,
                t_end=t_captured - samples_after / SPEECH_RATE,
                far=None if far is None else far[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES],
            )
            utterance = self._step(frame)
            if utterance is not None:
                utterances.append(utterance)
        self._pending = audio[n_frames * FRAME_SAMPLES:].copy()
        self._pending_far = np.zeros(0, dtype=np.float32) if far is None else far[n_frames * FRAME_SAMPLES:].copy()
        self._pending_start += n_frames * FRAME_S
        return utterances

    def flush(self) -> list[SpeechSegment]:
        """End of input: the open utterance if its speech is long enough (and not sent already); then reset. A
        partial frame is dropped."""
        utterance = self._end() if self._frames and not self._sent_early else None
        self.reset()
        return [utterance] if utterance is not None else []

    def _step(self, frame: _Frame) -> SpeechSegment | SpeculativeSegment | Resumed | None:
        probability = self.model(frame.samples)
        if self.on_frame is not None:
            self.on_frame(frame, probability)
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
        voiced = probability >= self.threshold or (self._silent_run == 0 and probability >= self.threshold - HYSTERESIS)
        if voiced:
            self._last_voiced = index
            self._silent_run = 0
        else:
            self._silent_run += 1
        if self._sent_early:
            if voiced:
                self._sent_early = False
                return Resumed(frame.start_s)
            if self._silent_run >= self.min_silence_frames or len(self._frames) >= self.max_frames:
                self._close()
            return None
        if self._silent_run >= self.min_silence_frames or len(self._frames) >= self.max_frames:
            return self._end()
        if self._silent_run == self.early_frames and self._silent_run:
            return self._speculative()
        if self._words_finished():
            self._sent_early = True
            return self._segment()
        return None

    def _words_finished(self) -> bool:
        """The silence has lasted ``end_of_turn.silence_ms`` and the verdict on the utterance says finished."""
        if self.end_of_turn is None or self._silent_run < self.finished_frames:
            return False
        first = self._frames[0].start_s
        return self.end_of_turn.finished(first, self._frames[self._last_voiced].start_s + FRAME_S)

    def _speculative(self) -> SpeculativeSegment | None:
        """The open utterance so far (as ``_end`` would cut it now), or None if its speech is still too short."""
        first, last = self._frames[self._first_voiced], self._frames[self._last_voiced]
        if last.start_s + FRAME_S - first.start_s < self.min_speech_s:
            return None
        keep = self._frames[:self._last_voiced + 1 + self.pad_frames]
        return SpeculativeSegment(audio=np.concatenate([f.samples for f in keep]),  # [len(keep) * FRAME_SAMPLES]
                                  start_s=keep[0].start_s, end_s=last.start_s + FRAME_S)

    def _end(self) -> SpeechSegment | None:
        """Close the open utterance: the SpeechSegment, or None if its speech was too short."""
        utterance = self._segment()
        self._close()
        return utterance

    def _segment(self) -> SpeechSegment | None:
        """The open utterance as it stands (up to the post-speech padding), or None if its speech is too short."""
        keep = self._frames[:self._last_voiced + 1 + self.pad_frames]
        first, last = self._frames[self._first_voiced], self._frames[self._last_voiced]
        voiced_s = last.start_s + FRAME_S - first.start_s
        if voiced_s < self.min_speech_s:
            log.debug("VAD: dropped a %.0f ms burst (vad.min_speech_ms=%.0f)", voiced_s * 1000,
                      self.min_speech_s * 1000)
            return None
        return SpeechSegment(
            audio=np.concatenate([f.samples for f in keep]),  # [len(keep) * FRAME_SAMPLES]
            start_s=keep[0].start_s,
            end_s=last.start_s + FRAME_S,
            t_speech_end=last.t_end,
        )

    def _close(self) -> None:
        """Forget the open utterance: frames after its post-speech padding become the next pre-roll; the model
        state is reset."""
        keep = self._last_voiced + 1 + self.pad_frames
        self._preroll.clear()
        self._preroll.extend(self._frames[keep:])
        self._frames = []
        self._silent_run = 0
        self._sent_early = False
        self.model.reset()


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


@dataclass(frozen=True)
class Interruption:
    """A barge-in that interrupted turns (kept for test harnesses and benchmarks: ``VADHandler.interruptions``)."""

    barge_in: BargeIn
    """Stream times of the user's speech onset and of the decision."""
    turn_ids: tuple[int, ...]
    """The turns it interrupted."""


class VADHandler(Handler):
    """AudioFrame -> SpeechSegment; each segment opens a turn (``turns.begin``). Full duplex: barge-in."""

    name = "vad"
    cfg: VADConfig
    model: SpeechModel | None = None
    """Injected for tests; Silero is loaded by ``setup`` otherwise."""
    detector: UtteranceDetector | None = None
    barge_in: BargeInDetector | None = None
    _muted = False
    _warned_rate = False
    _confirmed_s: float | None = None
    """Full duplex: stream time at which the barge-in detector last confirmed the user's speech."""
    _far_heard_s = -math.inf
    """Full duplex: stream time of the end of the last frame during which the far end played."""
    _paused: tuple[int, ...] = ()
    """Full duplex: the turns this stage paused while the barge-in detector decides."""
    _early_turn: int | None = None
    """The turn of an utterance sent before ``min_silence_ms`` (its words sounded finished), while the user may
    still speak on and take it back."""
    _resumed = False
    """The utterance in progress took back its turn: when it ends, it is the user's turn whatever plays."""

    def setup(self) -> None:
        if self.model is None:
            self.model = SileroSpeechModel(onnx=self.cfg.onnx)
            log.info("VAD: Silero (%s) loaded", "ONNX" if self.cfg.onnx else "TorchScript")
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        for _ in range(3):
            self.model(silence)
        self.detector = UtteranceDetector(self.cfg, self.model, self.wiring.end_of_turn)
        self.interruptions: list[Interruption] = []
        self.pauses: list[float] = []
        """Full duplex: stream times at which a reply was paused (for test harnesses and benchmarks)."""
        if not self.turns.half_duplex:
            self.barge_in = BargeInDetector(self.cfg.barge_in_min_speech_ms, self.cfg.barge_in_threshold,
                                            self.cfg.echo_margin_db)
            self.detector.on_frame = self._barge_in_frame

    def process(self, item: object) -> Iterator[object]:
        if not isinstance(item, AudioFrame):
            raise TypeError(f"the VAD stage takes AudioFrame items, not {type(item).__name__}")
        assert self.detector is not None, "VADHandler.setup() was not called"
        may_resume = self._early_turn is not None and self._may_resume()
        if not self.turns.listening and not may_resume:
            if not self._muted:
                self.detector.reset()
                self._muted = True
                log.debug("VAD: muted while the assistant replies")
            return
        self._muted = False
        far_end = item.far_end if item.sample_rate == SPEECH_RATE else None
        for utterance in self.detector(self._samples_16k(item), item.stream_time, item.t_captured, far_end):
            if isinstance(utterance, Resumed):
                self._take_back(utterance)
                continue
            if isinstance(utterance, SpeculativeSegment):
                if not self.turns.open_turns():  # full duplex: no early work for speech over the assistant
                    yield utterance
                continue
            if not self._wanted(utterance):
                continue
            turn = self._open_turn(utterance)
            yield turn
            if self.detector.sent_early:  # the user may speak on until vad.min_silence_ms: keep listening
                self._early_turn = turn.turn_id
                continue
            if not self.turns.listening:  # half-duplex: audio after the utterance is not listened to
                self.detector.reset()
                self._muted = True
                return

    def flush(self) -> Iterator[object]:
        if self.detector is None or not self.turns.listening:
            return
        for utterance in self.detector.flush():
            if self._wanted(utterance):
                yield self._open_turn(utterance)

    def _may_resume(self) -> bool:
        """An utterance sent early may still be resumed: the detector holds it (``min_silence_ms`` has not passed),
        its turn is open and, in half duplex, none of its reply has played (the microphone would hear it)."""
        turn = self._early_turn
        if turn is not None and self.detector.sent_early and self.turns.is_open(turn) and not (
                self.turns.half_duplex and self.turns.marked(turn, "first_audio_out")):
            return True
        if turn is not None:
            self.detector.settle()
            self._early_turn = None
        return False

    def _take_back(self, resumed: Resumed) -> None:
        """The user spoke on after an utterance was sent early: its turn is taken back and the utterance goes on."""
        turn, self._early_turn = self._early_turn, None
        if turn is not None and self.turns.retract(turn):
            self._resumed = True
            self._paused = tuple(t for t in self._paused if t != turn)
            log.info("VAD: speech again at %.2f s: turn %d taken back, the utterance goes on", resumed.start_s, turn)

    def _samples_16k(self, frame: AudioFrame) -> np.ndarray:
        if frame.sample_rate == SPEECH_RATE:
            return frame.samples
        if not self._warned_rate:
            self._warned_rate = True
            log.warning("VAD: got %d Hz audio; resampling each block to 16 kHz (the source should do it once)",
                        frame.sample_rate)
        return resample(frame.samples, frame.sample_rate, SPEECH_RATE)

    def _barge_in_frame(self, frame: _Frame, probability: float) -> None:
        """Full duplex, every frame: the barge-in detector. While it suspects the user is talking over the assistant,
        the open turns' playback is paused; when it confirms it, they are interrupted; else they play on."""
        if frame.far is not None and db(float(np.max(np.abs(frame.far))) ** 2) > FAR_ACTIVE_DB:
            self._far_heard_s = frame.start_s + FRAME_S
        found = self.barge_in(frame.samples, probability, frame.start_s, frame.far)
        if found is None:
            if self.barge_in.pause_wanted and not self._paused:
                self._paused = tuple(t for t in self.turns.open_turns() if self.turns.pause(t))
                if self._paused:
                    self.pauses.append(frame.start_s)
                    log.info("VAD: the user may be interrupting at %.2f s; turn %s paused", frame.start_s,
                             ", ".join(map(str, self._paused)))
            elif self._paused and not self.barge_in.pause_wanted:
                for turn_id in self._paused:
                    self.turns.resume(turn_id)
                log.info("VAD: not enough to interrupt; turn %s plays on", ", ".join(map(str, self._paused)))
                self._paused = ()
            return
        self._paused = ()
        self._confirmed_s = found.decided_s
        t_onset = frame.t_end - (found.decided_s - found.onset_s)  # monotonic capture time of the onset
        interrupted = tuple(t for t in self.turns.open_turns() if self.turns.interrupt(t, t_onset))
        if interrupted:
            self.interruptions.append(Interruption(found, interrupted))
            log.info("VAD: barge-in at %.2f s (%.0f ms of speech from %.2f s) interrupts turn %s", found.decided_s,
                     found.speech_s * 1000, found.onset_s, ", ".join(map(str, interrupted)))

    def _wanted(self, utterance: SpeechSegment) -> bool:
        """Half duplex: every utterance. Full duplex: one the barge-in detector confirmed, or one heard while the
        assistant neither thought nor spoke."""
        resumed, self._resumed = self._resumed, False
        if self.turns.half_duplex or resumed:
            return True
        confirmed, self._confirmed_s = self._confirmed_s, None
        if confirmed is not None and utterance.start_s - FRAME_S <= confirmed <= utterance.end_s + FRAME_S:
            return True  # decided while it was being said (its onset may be earlier: Silero rates thinned speech low)
        busy = self.turns.open_turns() or self._far_heard_s >= utterance.start_s - TAIL_S
        if busy:
            log.info("VAD: %.2f-%.2f s was not enough to interrupt the assistant; ignored", utterance.start_s,
                     utterance.end_s)
            return False
        return True

    def _open_turn(self, utterance: SpeechSegment) -> SpeechSegment:
        turn_id = self.turns.new_id()
        self.turns.begin(turn_id, utterance.t_speech_end)
        self.turns.mark(turn_id, "speech_end_decided")
        log.info("VAD: utterance %.2f-%.2f s -> turn %d", utterance.start_s, utterance.end_s, turn_id)
        return dataclasses.replace(utterance, turn_id=turn_id)
