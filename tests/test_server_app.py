"""`s2s serve` with the Piper backend and the embedded Whisper, on 127.0.0.1, driven by the official ``openai``
client: speech in every format (decoded and heard again), streaming, SSE, speed, transcription in every response
format, models and voices, the 400s, and the API key."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import openai
import pytest
from fixtures_models import speak
from pipeline_helpers import words
from server_helpers import RunningServer, piper_config, piper_services, whisper_text

from s2s.audio import SPEECH_RATE, write_wav
from s2s.server.app import create_app
from s2s.server.audio_codecs import PCM_RATE, available_formats, decode_audio

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog."
QUESTION = "What is the capital of France?"
KEY = "test-key-1234"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    services = piper_services(piper_config(), tmp_path_factory.mktemp("voices"))
    yield services
    services.close()


@pytest.fixture(scope="module")
def server(services):
    with RunningServer(create_app(services)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def heard(data: bytes, fmt: str) -> tuple[str, float]:
    """(Whisper's transcript, duration in s) of one speech response body."""
    if fmt == "pcm":
        audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        rate = PCM_RATE
    else:
        audio, rate = decode_audio(io.BytesIO(data), SPEECH_RATE, 60.0), SPEECH_RATE
    return whisper_text(audio, rate), audio.size / rate


def test_every_supported_format_is_speech_with_the_words(client):
    assert set(available_formats()) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}
    for fmt in available_formats():
        response = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format=fmt)
        text, seconds = heard(response.content, fmt)
        assert 1.0 < seconds < 10.0, (fmt, seconds)
        assert len(words(text) & words(SENTENCE)) >= 4, (fmt, text)


def test_streaming_sends_audio_before_the_utterance_is_done(client, server):
    text = " ".join(f"This is sentence number {n}, spoken on its own." for n in range(1, 7))
    started = time.monotonic()
    arrivals, body = [], b""
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="default", input=text,
                                                            response_format="wav") as response:
        assert response.headers["content-type"] == "audio/wav"
        for part in response.iter_bytes():
            arrivals.append(time.monotonic() - started)
            body += part
    assert len(arrivals) >= 3  # Piper yields sentence by sentence; each is sent when ready
    assert arrivals[0] < arrivals[-1] / 2, arrivals
    audio, rate = decode_audio(io.BytesIO(body), SPEECH_RATE, 120.0), SPEECH_RATE
    assert audio.size / rate > 8.0


def test_sse_sends_audio_deltas_then_done(client):
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="alloy", input=SENTENCE,
                                                            response_format="pcm", stream_format="sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 2
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == 9
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    text, _ = heard(pcm, "pcm")
    assert len(words(text) & words(SENTENCE)) >= 4, text


def test_speed_changes_the_duration_not_the_words(client):
    durations = {}
    for speed in (1.0, 2.0, 0.5):
        data = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav",
                                          speed=speed).content
        text, durations[speed] = heard(data, "wav")
        if speed != 0.5:
            assert len(words(text) & words(SENTENCE)) >= 4, (speed, text)
    assert durations[2.0] / durations[1.0] == pytest.approx(0.5, abs=0.08)
    assert durations[0.5] / durations[1.0] == pytest.approx(2.0, abs=0.2)


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("question") / "question.wav"
    write_wav(path, speak(QUESTION), SPEECH_RATE)
    return path


def test_transcription_in_every_response_format(client, question_wav):
    expected = words(QUESTION)
    with open(question_wav, "rb") as f:
        result = client.audio.transcriptions.create(file=f, model="whisper-1")
    assert len(words(result.text) & expected) >= 2, result.text
    with open(question_wav, "rb") as f:
        verbose = client.audio.transcriptions.create(file=f, model="whisper-1", response_format="verbose_json",
                                                     timestamp_granularities=["segment", "word"], language="en")
    assert verbose.language == "english" and 1.0 < verbose.duration < 5.0
    assert verbose.segments and verbose.segments[0].end > verbose.segments[0].start
    assert verbose.words and len(words(" ".join(w.word for w in verbose.words)) & expected) >= 2
    for fmt, marker in (("text", ""), ("srt", "00:00:00,000 --> "), ("vtt", "WEBVTT")):
        with open(question_wav, "rb") as f:
            body = client.audio.transcriptions.create(file=f, model="whisper-1", response_format=fmt, prompt="Paris")
        assert isinstance(body, str) and marker in body, (fmt, body)
        assert len(words(body) & expected) >= 2, (fmt, body)
    assert "-->" in body and body.startswith("WEBVTT\n\n")


def test_models_and_voices_are_listed(client, server):
    assert {model.id for model in client.models.list()} == {"piper", "faster-whisper"}
    voices = httpx.get(f"{server.url}/v1/audio/voices").json()
    assert voices["voices"] == ["default"] and voices["data"][0]["type"] == "configured"
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and [s["name"] for s in health["stages"]] == ["tts", "stt"]


@pytest.mark.parametrize(("fields", "param"), [
    ({"response_format": "wma"}, "response_format"),
    ({"speed": 4.5}, "speed"),
    ({"speed": 0.1}, "speed"),
    ({"input": "   "}, "input"),
    ({"input": "x" * 5000}, "input"),
    ({"voice": "nobody-here"}, "voice"),
    ({"voice": "vivian"}, "voice"),  # a Qwen3 speaker: Piper has one voice
    ({"stream_format": "ogg"}, "stream_format"),
])
def test_bad_speech_fields_are_400_naming_the_field(client, fields, param):
    request = {"model": "tts-1", "voice": "alloy", "input": "Hello.", **fields}
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.speech.create(**request)
    assert error.value.status_code == 400
    body = error.value.body
    assert body["param"] == param and body["type"] == "invalid_request_error" and body["message"], body


def test_bad_transcription_fields_are_400(client, question_wav, tmp_path):
    with open(question_wav, "rb") as f, pytest.raises(openai.BadRequestError) as error:
        client.audio.transcriptions.create(file=f, model="whisper-1", response_format="docx")
    assert error.value.body["param"] == "response_format"
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are words, not audio")
    with open(not_audio, "rb") as f, pytest.raises(openai.BadRequestError) as error:
        client.audio.transcriptions.create(file=f, model="whisper-1")
    assert error.value.body["param"] == "file" and "audio" in error.value.body["message"]
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.voices.create(audio_sample=("x.wav", b"RIFF"), consent="local", name="mine")
    assert error.value.body["code"] == "cloning_unsupported"


def test_unknown_path_is_404_in_openai_shape(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", json={})
    assert response.status_code == 404 and response.json()["error"]["message"].startswith("no such endpoint")


def test_an_api_key_is_required_when_set(services):
    config = piper_config(f"server.api_key={KEY}")
    services_with_key = type(services)(config, services.speech, services.stt, services.voices)
    with RunningServer(create_app(services_with_key)) as server:
        anonymous = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            anonymous.models.list()
        assert error.value.status_code == 401 and error.value.body["code"] == "invalid_api_key"
        assert httpx.post(f"{server.url}/v1/audio/speech", json={"input": "hi"}).status_code == 401
        assert httpx.get(f"{server.url}/health").status_code == 200  # monitoring needs no key
        keyed = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        assert keyed.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="wav").content
