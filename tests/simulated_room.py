"""A simulated room as the sound device, for the full-duplex tests and bench/duplex.py (not part of the product).

``SimulatedRoom.sounddevice`` stands in for the ``sounddevice`` module (``install(monkeypatch)`` puts it in
``sys.modules``): one microphone and one speaker. What the speaker plays goes through an echo path (a delay, a
synthetic room impulse response with an exponential tail, a gain, an optional mild loudspeaker nonlinearity) into
the microphone, together with white noise and the user's scripted speech (``say``).

The room keeps its own clock: ``clock()`` is the number of microphone samples read so far over the microphone rate
(plus ``STREAM_TIME_ORIGIN`` it is the streams' ``time``, which the product takes as the device clock). Each
microphone read advances it by one block and plays the speaker's samples for that stretch, so speaker and microphone
stay in lockstep; ``speed`` paces the reads against the wall clock (1.0 = real time, ``math.inf`` = as fast as they
are asked for). The speaker's buffer
holds ``output_latency_s`` of audio: a write blocks while it is full, as a sound card does (it must hold a
microphone block and a write block: the speaker plays in steps of a microphone block), and returns True when the
speaker ran dry since the previous write (PortAudio's output underflow). ``drift_ppm`` makes the
speaker's clock run that much faster than the microphone's. Every signal is recorded in room time for measurement:
the user's speech, the echo and the microphone at the microphone rate, and what the speaker played.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import fftconvolve

from s2s.audio import StreamResampler, resample

STREAM_TIME_ORIGIN = 1000.0
"""The streams' ``time`` is room time plus this (a sound card's stream time does not start at zero)."""
ONSET_LEVEL = 0.02
"""|sample| above which scripted speech (or played audio) counts as sound, for onsets and stops."""


@dataclass(frozen=True)
class EchoPath:
    """How the speaker's sound reaches the microphone."""

    delay_s: float = 0.06
    """Acoustic delay of the direct path (s)."""
    rt60_s: float = 0.2
    """Reverberation time of the synthetic impulse response: its tail decays by 60 dB over this long (s)."""
    gain: float = 0.7
    """Amplitude gain of the whole path (the impulse response has unit energy)."""
    noise_dbfs: float = -60.0
    """RMS of the microphone's white noise (dB full scale)."""
    nonlinearity: float = 0.0
    """Loudspeaker drive of a tanh soft clipper (0 = linear; 2 = mild)."""
    seed: int = 0


def impulse_response(rt60_s: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A direct path plus an exponentially decaying noise tail of ``rt60_s`` (60 dB down at its end), unit energy."""
    n = max(1, int(rt60_s * rate))
    t = np.arange(n) / rate
    tail = 0.5 * rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)  # amplitude: -60 dB at rt60_s
    tail[0] = 1.0
    return (tail / np.sqrt(np.sum(tail**2))).astype(np.float32)  # [n]


def onset(audio: np.ndarray, rate: int) -> float:
    """Seconds into ``audio`` of its first sample louder than ``ONSET_LEVEL`` (its length if none is)."""
    loud = np.nonzero(np.abs(audio) > ONSET_LEVEL)[0]
    return (loud[0] if loud.size else len(audio)) / rate


@dataclass
class Utterance:
    """Scripted user speech."""

    start_s: float
    """Room time of its first sample."""
    audio: np.ndarray
    """At the microphone rate."""
    label: str = ""
    rate: int = 16000
    onset_s: float = field(init=False)
    """Room time of the first audible sample."""
    end_s: float = field(init=False)
    """Room time of the last audible sample."""

    def __post_init__(self) -> None:
        self.onset_s = self.start_s + onset(self.audio, self.rate)
        self.end_s = self.start_s + (len(self.audio) / self.rate - onset(self.audio[::-1], self.rate))


class SimulatedRoom:
    """One microphone, one speaker, the echo path between them, and a script of user speech."""

    def __init__(self, path: EchoPath = EchoPath(), mic_rate: int = 16000, speaker_rate: int = 48000,
                 drift_ppm: float = 0.0, speed: float = 1.0, output_latency_s: float = 0.04,
                 reported_output_latency_s: float | None = -1.0, input_latency_s: float = 0.01) -> None:
        self.path = path
        self.mic_rate, self.speaker_rate = mic_rate, speaker_rate
        self.drift = drift_ppm * 1e-6
        self.speed = speed
        self.output_latency_s = output_latency_s
        self.reported_output_latency_s = output_latency_s if reported_output_latency_s == -1.0 \
            else reported_output_latency_s
        """What the output stream reports as its latency (None or 0: a device that reports none)."""
        self.input_latency_s = input_latency_s
        rng = np.random.default_rng(path.seed)
        self._noise = np.random.default_rng(path.seed + 1)
        self.rir = impulse_response(path.rt60_s, mic_rate, rng)  # [taps] at the microphone rate
        self._to_mic = StreamResampler(speaker_rate, mic_rate)
        self._delay = round(path.delay_s * mic_rate) - self._to_mic.delay  # the resampler's lead-in is delay too
        if self._delay < 4:
            raise ValueError(f"delay_s={path.delay_s} is shorter than the room's resampling latency")
        self.script: list[Utterance] = []
        self._cond = threading.Condition()
        self._queue = np.zeros(0, dtype=np.float32)
        """Written to the speaker, not yet played."""
        self._read = 0
        """Microphone samples read (the room clock, in samples)."""
        self._played = 0
        """Speaker samples played."""
        self._was_playing = False
        self._air = np.zeros(0, dtype=np.float32)
        """The speaker's sound at the microphone rate (before the room), not yet heard: index ``_air_start``."""
        self._air_start = 0.0
        self._tail = np.zeros(0, dtype=np.float32)
        """Reverberation still to come (overlap-add)."""
        self._wall0: float | None = None
        self.closed = False
        self.mic: list[np.ndarray] = []
        self.echo: list[np.ndarray] = []
        self.user: list[np.ndarray] = []
        self.speaker: list[np.ndarray] = []
        """What the speaker played, at the speaker rate (silence where it had nothing)."""
        self.underflows = 0
        self.ran_dry = False
        """The speaker ran out of audio since the last write."""

    # ---- the script ------------------------------------------------------------------------------------------
    def say(self, speech_16k: np.ndarray, at_s: float, label: str = "") -> Utterance:
        """The user says ``speech_16k`` (16 kHz) starting at room time ``at_s``."""
        audio = resample(np.asarray(speech_16k, dtype=np.float32), 16000, self.mic_rate)
        utterance = Utterance(at_s, audio, label, self.mic_rate)
        self.script.append(utterance)
        return utterance

    def clock(self) -> float:
        """Room time (s): microphone samples read over the microphone rate."""
        return self._read / self.mic_rate

    # ---- the devices -----------------------------------------------------------------------------------------
    @property
    def sounddevice(self) -> types.ModuleType:
        """A stand-in for the ``sounddevice`` module with this room's two devices."""
        room = self

        class PortAudioError(Exception):
            pass

        class InputStream:
            def __init__(self, device=None, samplerate=None, channels=1, dtype="float32", blocksize=0, **_):
                if samplerate != room.mic_rate:
                    raise PortAudioError(f"the room microphone runs at {room.mic_rate} Hz, not {samplerate}")
                self.latency = room.input_latency_s

            @property
            def time(self) -> float:
                return STREAM_TIME_ORIGIN + room.clock()

            def start(self):
                pass

            def read(self, frames: int):
                return room.capture(frames)[:, None], False  # [frames, 1]

            def close(self):
                pass

            stop = abort = close

        class OutputStream:
            def __init__(self, device=None, samplerate=None, channels=1, dtype="float32", blocksize=0, **_):
                if samplerate != room.speaker_rate:
                    raise PortAudioError(f"the room speaker runs at {room.speaker_rate} Hz, not {samplerate}")
                self.latency = room.reported_output_latency_s

            @property
            def time(self) -> float:
                return STREAM_TIME_ORIGIN + room.clock()

            def start(self):
                pass

            def write(self, block) -> bool:
                room.play(np.asarray(block, dtype=np.float32).reshape(-1))
                underflowed, room.ran_dry = room.ran_dry, False
                return underflowed

            def close(self):
                pass

            stop = abort = close

        devices = [
            {"name": "room microphone", "max_input_channels": 1, "max_output_channels": 0,
             "default_samplerate": float(self.mic_rate)},
            {"name": "room speaker", "max_input_channels": 0, "max_output_channels": 1,
             "default_samplerate": float(self.speaker_rate)},
        ]
        module = types.ModuleType("sounddevice")
        module.PortAudioError = PortAudioError
        module.InputStream, module.OutputStream = InputStream, OutputStream
        module.query_devices = lambda: [dict(d) for d in devices]
        module.default = types.SimpleNamespace(device=(0, 1))
        module.get_portaudio_version = lambda: (0, "simulated room")
        return module

    def install(self, monkeypatch) -> SimulatedRoom:
        """Make ``import sounddevice`` give this room (for the rest of the test)."""
        monkeypatch.setitem(sys.modules, "sounddevice", self.sounddevice)
        return self

    def close(self) -> None:
        """Release a speaker write that waits for room."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # ---- one block of room time ------------------------------------------------------------------------------
    def speaker_free(self) -> int:
        """Samples the speaker's buffer takes before a write would wait."""
        with self._cond:
            return max(0, int(self.output_latency_s * self.speaker_rate) - len(self._queue))

    def play(self, samples: np.ndarray, wait: bool = True) -> None:
        """Queue ``samples`` (speaker rate) on the speaker; with ``wait``, once its buffer is no longer over full (a
        blocking sound-card write), else at once (a single-threaded driver checks ``speaker_free``)."""
        capacity = int(self.output_latency_s * self.speaker_rate)
        with self._cond:
            while wait and len(self._queue) > capacity and not self.closed:  # as PortAudio: wait, then copy
                self._cond.wait(0.05)
            self._queue = np.concatenate([self._queue, samples])

    def capture(self, frames: int) -> np.ndarray:
        """The next ``frames`` microphone samples (room time advances by as much; paced by ``speed``)."""
        if self._wall0 is None:
            self._wall0 = time.monotonic()
        if math.isfinite(self.speed):  # a sound card delivers a block once it has been recorded
            due = self._wall0 + (self._read + frames) / self.mic_rate / self.speed
            time.sleep(max(0.0, due - time.monotonic()))
        start, end = self._read, self._read + frames
        with self._cond:
            played = self._speaker_until(end)
            self._read = end
            self._cond.notify_all()
        self._hear(played)
        echo = self._echo(start, end)
        user = self._user(start, end)
        noise = self._noise.standard_normal(frames).astype(np.float32) * 10 ** (self.path.noise_dbfs / 20)
        mic = np.clip(echo + user + noise, -1.0, 1.0)
        self.mic.append(mic)
        self.echo.append(echo)
        self.user.append(user)
        return mic.astype(np.float32)

    def _speaker_until(self, end: int) -> np.ndarray:
        """Play the speaker up to microphone sample ``end`` (its clock runs ``drift`` faster); underflow is silence."""
        due = int(end / self.mic_rate * self.speaker_rate * (1 + self.drift)) - self._played
        out = np.zeros(due, dtype=np.float32)
        taken = min(due, len(self._queue))
        out[:taken] = self._queue[:taken]
        self._queue = self._queue[taken:]
        if taken < due and (taken > 0 or self._was_playing):  # it ran out of audio in this stretch
            self.underflows += 1
            self.ran_dry = True
        self._was_playing = taken == due
        self._played += due
        self.speaker.append(out)
        return out

    def _hear(self, played: np.ndarray) -> None:
        """The played samples, converted to the microphone rate, through the loudspeaker's nonlinearity."""
        air = self._to_mic(played)
        if self.path.nonlinearity > 0:
            drive = self.path.nonlinearity
            air = np.tanh(drive * air) / drive
        self._air = np.concatenate([self._air, air])

    def _echo(self, start: int, end: int) -> np.ndarray:
        """The echo in microphone samples [start, end): the air signal delayed (drift: resampled on the fly)
        and convolved with the room (overlap-add)."""
        positions = (np.arange(start, end) - self._delay) * (1 + self.drift) - self._air_start  # into _air
        direct = _cubic(self._air, positions)  # [frames]
        keep_from = int(max(0, np.floor(positions[-1]) - 2))
        self._air, self._air_start = self._air[keep_from:], self._air_start + keep_from
        wet = fftconvolve(direct, self.rir)  # [frames + taps - 1]
        n = end - start
        tail = np.zeros(max(len(self._tail), len(wet)), dtype=np.float32)
        tail[:len(self._tail)] += self._tail
        tail[:len(wet)] += wet
        self._tail = tail[n:]
        return (self.path.gain * tail[:n]).astype(np.float32)

    def _user(self, start: int, end: int) -> np.ndarray:
        out = np.zeros(end - start, dtype=np.float32)
        for u in self.script:
            first = round(u.start_s * self.mic_rate)
            lo, hi = max(start, first), min(end, first + len(u.audio))
            if lo < hi:
                out[lo - start:hi - start] += u.audio[lo - first:hi - first]
        return out

    # ---- measurements ----------------------------------------------------------------------------------------
    def recorded(self, name: str) -> np.ndarray:
        """The whole recording of "mic", "echo", "user" (microphone rate) or "speaker" (speaker rate)."""
        parts = getattr(self, name)
        return np.concatenate([np.zeros(0, dtype=np.float32), *parts])

    def playback_stop_after(self, t: float) -> float | None:
        """Room time at which the speaker last played sound after ``t`` and then stayed silent (None if it never
        stopped, i.e. it still played at the end of the recording)."""
        played = self.recorded("speaker")
        rate = self.speaker_rate * (1 + self.drift)
        first = int(t * rate)
        loud = np.nonzero(np.abs(played[first:]) > ONSET_LEVEL / 4)[0]
        if not loud.size:
            return t
        last = first + loud[-1]
        if len(played) - last < 0.3 * rate:  # still playing when the recording ended
            return None
        return (last + 1) / rate

    def speaking_at(self, t: float, margin_s: float = 0.0) -> Utterance | None:
        """The scripted utterance audible at room time ``t`` (with ``margin_s`` either side), if any."""
        for u in self.script:
            if u.onset_s - margin_s <= t <= u.end_s + margin_s:
                return u
        return None


def _cubic(signal: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``signal`` at fractional ``positions`` (4-point Lagrange); zeros outside it."""
    padded = np.concatenate([np.zeros(2, dtype=np.float32), signal, np.zeros(3, dtype=np.float32)])
    base = np.floor(positions).astype(np.int64)
    frac = (positions - base).astype(np.float32)
    idx = np.clip(base + 2, 1, len(padded) - 3)  # padded index of signal[base]
    ym1, y0, y1, y2 = padded[idx - 1], padded[idx], padded[idx + 1], padded[idx + 2]
    inside = (base >= -1) & (base < len(signal) + 1)
    out = (-frac * (frac - 1) * (frac - 2) / 6 * ym1 + (frac + 1) * (frac - 1) * (frac - 2) / 2 * y0
           - (frac + 1) * frac * (frac - 2) / 2 * y1 + (frac + 1) * frac * (frac - 1) / 6 * y2)
    return np.where(inside, out, 0.0).astype(np.float32)


# ---- the canceller alone -------------------------------------------------------------------------------------
def cancel_in_room(room: SimulatedRoom, far: np.ndarray, canceller, tail_s: float = 1.0,
                   block: int = 1024, mic_block_ms: int = 32) -> tuple[np.ndarray, np.ndarray, float]:
    """Play ``far`` (at the speaker rate) in ``room`` and cancel its echo, single-threaded: the speaker is kept
    fed with blocks handed to a ``FarEnd`` on the room's clock (as the speaker sink does), the microphone is read
    in blocks, resampled to 16 kHz and cleaned by ``EchoCancellation`` (as the microphone source does). Returns
    (cleaned 16 kHz, the echo component of the microphone at 16 kHz, CPU seconds spent in the canceller)."""
    from s2s.aec import EchoCancellation
    from s2s.far_end import FarEnd

    far_end = FarEnd(room.clock)
    far_end.output_latency_s = room.reported_output_latency_s or None
    echo_cancellation = EchoCancellation(canceller, far_end, room.input_latency_s)
    to_16k = StreamResampler(room.mic_rate, 16000)
    mic_block = room.mic_rate * mic_block_ms // 1000
    audio = np.concatenate([np.asarray(far, dtype=np.float32), np.zeros(int(tail_s * room.speaker_rate), np.float32)])
    audio = np.pad(audio, (0, -len(audio) % block))
    position, cleaned, cpu = 0, [], 0.0
    while position < len(audio) or room.speaker_free() < int(room.output_latency_s * room.speaker_rate):
        while position < len(audio) and room.speaker_free() > 0:
            room.play(audio[position:position + block], wait=False)
            far_end.played(audio[position:position + block], room.speaker_rate, room.clock())
            position += block
        mic = to_16k(room.capture(mic_block))
        t0 = time.process_time()
        out, _ = echo_cancellation(mic, room.clock() - len(mic) / 16000)
        cpu += time.process_time() - t0
        cleaned.append(out)
    cleaned_16k = np.concatenate(cleaned)
    echo_16k = resample(room.recorded("echo"), room.mic_rate, 16000)
    n = min(len(cleaned_16k), len(echo_16k))
    return cleaned_16k[:n], echo_16k[:n], cpu


def erle_db(echo: np.ndarray, residual: np.ndarray, skip_s: float = 2.0, rate: int = 16000) -> float:
    """Echo return loss enhancement: echo power in the microphone over residual power after the canceller (dB),
    over the samples after ``skip_s`` (convergence) where the echo is audible."""
    first = int(skip_s * rate)
    echo, residual = echo[first:], residual[first:]
    audible = np.abs(echo) > 1e-3
    return float(10 * np.log10(np.mean(echo[audible] ** 2) / max(np.mean(residual[audible] ** 2), 1e-20)))
