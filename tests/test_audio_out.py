"""handlers.audio_out: WAV and speaker sinks (with a fake output stream) end turns, mark first audio out, and are
the one place where reply audio is resampled."""

import time

import numpy as np
import pytest
import soundfile as sf
from stage_harness import wiring

from handlers.audio_out import TURN_GAP_S, SpeakerSink, WavSink
from s2s.config import AudioOutConfig
from s2s.messages import AudioChunk, TurnEnd, TurnFailed
from s2s.turns import Turns

RATE = 24000


def chunk(turn_id: int, n: int, rate: int = RATE, value: float = 0.5) -> AudioChunk:
    return AudioChunk(turn_id, np.full(n, value, dtype=np.float32), rate)


def feed(sink, items) -> None:
    for item in items:
        sink.handle(item)


def wav_sink(turns: Turns, path, sample_rate: int = RATE) -> WavSink:
    sink = WavSink(wiring(turns, sink=True), AudioOutConfig(sample_rate=sample_rate), path=path)
    sink.setup()
    return sink


def test_wav_sink_writes_replies_with_a_gap_and_ends_turns(tmp_path):
    turns = Turns()
    sink = wav_sink(turns, tmp_path / "out" / "reply.wav")
    turns.begin(1)
    feed(sink, [chunk(1, 1000), chunk(1, 500), TurnEnd(1)])
    assert turns.listening and turns.records[0]["first_audio_out_ms"] is not None
    turns.begin(2)
    feed(sink, [chunk(2, 300), TurnEnd(2)])
    sink.cleanup()
    audio, rate = sf.read(tmp_path / "out" / "reply.wav")
    gap = int(TURN_GAP_S * RATE)
    assert rate == RATE and len(audio) == 1500 + gap + 300
    assert np.all(audio[1500:1500 + gap] == 0) and audio[0] > 0.4


def test_sink_drops_audio_of_failed_turns_and_records_the_error(tmp_path):
    turns = Turns()
    sink = wav_sink(turns, tmp_path / "reply.wav")
    turns.begin(1)
    feed(sink, [TurnFailed(1, "llm", "RuntimeError: boom"), chunk(1, 1000), TurnEnd(1)])
    sink.cleanup()
    assert turns.listening
    assert turns.records[0]["error"] == "llm: RuntimeError: boom"
    assert not (tmp_path / "reply.wav").exists()  # no reply audio, no file


def test_sink_resamples_other_rates_to_the_configured_rate(tmp_path):
    turns = Turns()
    sink = wav_sink(turns, tmp_path / "reply.wav")
    turns.begin(1)
    feed(sink, [chunk(1, 16000, rate=16000), TurnEnd(1)])
    sink.cleanup()
    info = sf.info(tmp_path / "reply.wav")
    assert info.samplerate == RATE
    assert abs(info.frames - RATE) < 100  # 1 s at 16 kHz became ~1 s at 24 kHz (plus the resampler's short lead-in)


@pytest.mark.parametrize("tts_rate", [16000, 22050, 24000])
def test_wav_sink_by_default_writes_at_the_rate_of_the_first_reply_audio(tmp_path, tts_rate):
    """audio_out.sample_rate = 0 (the default): the TTS's own rate, sample for sample, no resampling at all."""
    assert AudioOutConfig().sample_rate == 0
    turns = Turns()
    sink = wav_sink(turns, tmp_path / "reply.wav", sample_rate=AudioOutConfig().sample_rate)
    turns.begin(1)
    samples = np.linspace(-0.5, 0.5, tts_rate, dtype=np.float32)  # 1 s
    feed(sink, [AudioChunk(1, samples, tts_rate), TurnEnd(1)])
    sink.cleanup()
    audio, rate = sf.read(tmp_path / "reply.wav", dtype="float32")
    assert rate == tts_rate and len(audio) == tts_rate
    np.testing.assert_allclose(audio, samples, atol=4 / 2**15)  # only the 16-bit quantisation


def test_wav_sink_resamples_a_later_rate_to_the_first_one_once(tmp_path):
    turns = Turns()
    sink = wav_sink(turns, tmp_path / "reply.wav", sample_rate=0)
    turns.begin(1)
    feed(sink, [chunk(1, 16000, rate=16000), TurnEnd(1)])
    turns.begin(2)
    feed(sink, [chunk(2, 24000, rate=24000), TurnEnd(2)])  # 1 s at 24 kHz
    sink.cleanup()
    info = sf.info(tmp_path / "reply.wav")
    gap = int(TURN_GAP_S * 16000)
    assert info.samplerate == 16000
    assert abs(info.frames - (16000 + gap + 16000)) < 100  # the second reply became ~1 s at 16 kHz


class FakeStream:
    latency = 0.05

    def __init__(self):
        self.blocks: list[np.ndarray] = []
        self.closed = False

    def write(self, block):
        self.blocks.append(block.copy())
        return False

    def close(self):
        self.closed = True


def speaker(turns: Turns, block_size: int = 256) -> tuple[SpeakerSink, FakeStream]:
    sink = SpeakerSink(wiring(turns, sink=True), AudioOutConfig(sample_rate=RATE, block_size=block_size))
    sink.stream = FakeStream()  # what setup() opens on a machine with a sound card
    return sink, sink.stream


def test_speaker_writes_exact_blocks_pads_the_last_and_waits_for_playback():
    turns = Turns()
    sink, stream = speaker(turns)
    turns.begin(1)
    feed(sink, [chunk(1, 100)])
    assert stream.blocks == [] and turns.records == []  # less than a block: nothing handed to the device yet
    feed(sink, [chunk(1, 500)])
    assert len(stream.blocks) == 2
    t0 = time.monotonic()
    feed(sink, [TurnEnd(1)])
    assert time.monotonic() - t0 >= FakeStream.latency  # the turn ends once the last block has played
    assert [b.shape for b in stream.blocks] == [(256, 1)] * 3
    assert np.all(stream.blocks[2][600 - 512:] == 0) and stream.blocks[2][0, 0] == 0.5
    assert turns.listening and turns.records[0]["first_audio_out_ms"] is not None
    sink.cleanup()
    assert stream.closed


def test_speaker_error_still_ends_the_turn():
    turns = Turns()
    sink, stream = speaker(turns)

    def broken(block):
        raise OSError("device unplugged")

    stream.write = broken
    turns.begin(1)
    feed(sink, [chunk(1, 1000)])
    assert turns.listening
    assert "speaker: OSError: device unplugged" in turns.records[0]["error"]


@pytest.fixture
def usb_speaker(monkeypatch):
    """A fake sounddevice whose one device plays only 48 kHz; returns the list of (device, rate, block) opened
    and the rates tried."""
    import types

    import handlers.audio_out as audio_out

    class PortAudioError(Exception):
        pass

    opened, tried = [], []

    class OutputStream(FakeStream):
        def __init__(self, device, samplerate, channels, dtype, blocksize):
            super().__init__()
            tried.append(samplerate)
            if samplerate != 48000:
                raise PortAudioError("Invalid sample rate")
            opened.append((device, samplerate, blocksize))

        def start(self):
            pass

    fake_sd = types.SimpleNamespace(PortAudioError=PortAudioError, OutputStream=OutputStream)
    device = {"index": 3, "name": "USB speaker", "max_input_channels": 0, "max_output_channels": 2,
              "default_samplerate": 48000.0}
    monkeypatch.setattr(audio_out, "import_sounddevice", lambda: fake_sd)
    monkeypatch.setattr(audio_out, "find_device", lambda spec, kind: device)
    return opened, tried


def test_speaker_falls_back_to_the_device_rate(usb_speaker):
    """A 48 kHz-only USB speaker refuses 24 kHz: the sink opens it at 48 kHz and resamples to it."""
    opened, tried = usb_speaker
    turns = Turns()
    sink = SpeakerSink(wiring(turns, sink=True), AudioOutConfig(sample_rate=RATE, block_size=512))
    sink.setup()
    assert tried == [RATE, 48000] and opened == [(3, 48000, 512)] and sink.rate == 48000
    turns.begin(1)
    feed(sink, [chunk(1, RATE), TurnEnd(1)])  # 1 s at 24 kHz
    played = sum(len(block) for block in sink.stream.blocks)
    assert abs(played - 48000) <= 2 * 512  # ~1 s at 48 kHz, in whole blocks


def test_speaker_by_default_opens_at_the_device_rate_and_resamples_the_tts_audio_once(usb_speaker):
    """audio_out.sample_rate = 0: no rate is forced on the device; 24 kHz TTS audio is resampled to 48 kHz here."""
    opened, tried = usb_speaker
    turns = Turns()
    sink = SpeakerSink(wiring(turns, sink=True), AudioOutConfig(block_size=512))
    sink.setup()
    assert tried == [48000] and opened == [(3, 48000, 512)] and sink.rate == 48000
    turns.begin(1)
    t = np.arange(RATE) / RATE
    feed(sink, [AudioChunk(1, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE), TurnEnd(1)])
    played = np.concatenate([block[:, 0] for block in sink.stream.blocks])
    assert abs(len(played) - 48000) <= 2 * 512
    peak_hz = np.argmax(np.abs(np.fft.rfft(played))) * 48000 / len(played)
    assert abs(peak_hz - 440) < 5  # the pitch is kept: resampled once, by the ratio of the two rates
