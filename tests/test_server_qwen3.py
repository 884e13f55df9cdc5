"""`s2s serve` on the qwen3 backend with tiny random-weight checkpoints (CPU, float32, greedy, capped frames):
CustomVoice speakers through /v1/audio/speech give audio of whole codec frames; a Base checkpoint starts without
a voice, takes an uploaded clone voice, speaks with it, and still has it after a restart."""

from __future__ import annotations

import io

import httpx
import numpy as np
import openai
import pytest
import torch
from server_helpers import RunningServer

from s2s.audio import write_wav
from s2s.checkpoint_builder.build import build_checkpoint
from s2s.config import load_config
from s2s.server.app import create_app
from s2s.server.audio_codecs import decode_audio
from s2s.server.services import Services

pytestmark = pytest.mark.slow

SAMPLES_PER_FRAME = 1920
MAX_NEW_TOKENS = 8
MAX_FRAMES = MAX_NEW_TOKENS - 1


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    torch.set_num_threads(2)


def qwen3_config(checkpoint, voices_dir, *extra: str):
    return load_config([], ["tts.backend=qwen3", f"tts.model={checkpoint}", "tts.device=cpu", "tts.dtype=float32",
                            "tts.do_sample=false", f"tts.max_new_tokens={MAX_NEW_TOKENS}",
                            f"server.voices_dir={voices_dir}", *extra])


def frames(wav: bytes) -> float:
    audio = decode_audio(io.BytesIO(wav), 24000, 60.0)
    return audio.size / SAMPLES_PER_FRAME


def serve(config):
    services = Services.load(config, stt=False)
    return services, RunningServer(create_app(services))


def test_custom_voice_speakers_through_the_speech_endpoint(tmp_path_factory):
    checkpoint = build_checkpoint(tmp_path_factory.mktemp("cv") / "custom_voice", size="tiny", kind="custom_voice",
                                  seed=0)
    voices_dir = tmp_path_factory.mktemp("voices")
    services, running = serve(qwen3_config(checkpoint, voices_dir, "server.voice_map=alloy=ryan"))
    try:
        with running as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
            listed = httpx.get(f"{server.url}/v1/audio/voices").json()["voices"]
            assert "vivian" in listed and "ryan" in listed and listed[0] == "default"
            by_voice = {}
            for voice in ("vivian", "alloy", "ryan", "default"):
                wav = client.audio.speech.create(model="qwen3", voice=voice, input="Hello there, how are you?",
                                                 response_format="wav", instructions="cheerful").content
                n = frames(wav)
                assert n == int(n) and 1 <= n <= MAX_FRAMES, (voice, n)
                by_voice[voice] = decode_audio(io.BytesIO(wav), 24000, 60.0)
            assert np.array_equal(by_voice["alloy"], by_voice["ryan"])  # mapped by server.voice_map
            assert not np.array_equal(by_voice["vivian"], by_voice["ryan"])
            with pytest.raises(openai.BadRequestError) as error:
                client.audio.speech.create(model="qwen3", voice="ryan", input="Hi.", extra_body={"language": "xx"})
            assert "not a language" in error.value.body["message"]
            with pytest.raises(openai.BadRequestError) as error:
                client.audio.voices.create(audio_sample=("r.wav", b"RIFF"), consent="local", name="mine")
            assert error.value.body["code"] == "cloning_unsupported"
    finally:
        services.close()


def reference_wav(path):
    t = np.arange(48000) / 24000
    voice = 0.3 * np.sin(2 * np.pi * 160 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))
    write_wav(path, voice.astype(np.float32), 24000)
    return path


def test_base_clone_voice_upload_reuse_and_restart(tmp_path_factory):
    checkpoint = build_checkpoint(tmp_path_factory.mktemp("base") / "base", size="tiny", kind="base", seed=0)
    voices_dir = tmp_path_factory.mktemp("voices")
    reference = reference_wav(tmp_path_factory.mktemp("ref") / "me.wav")
    config = qwen3_config(checkpoint, voices_dir)
    spoken = {}
    for run in ("first", "restarted"):
        services, running = serve(config)
        try:
            with running as server:
                client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
                if run == "first":
                    with pytest.raises(openai.BadRequestError) as error:  # no voice of its own
                        client.audio.speech.create(model="qwen3", voice="default", input="Hello.")
                    assert "without a voice of its own" in error.value.body["message"]
                    with open(reference, "rb") as f:
                        created = client.audio.voices.create(audio_sample=f, consent="local", name="My-Voice",
                                                             extra_body={"ref_text": "Hello, this is my voice."})
                    assert (created.id, created.object, created.type) == ("my-voice", "audio.voice", "audio_sample")
                    for bad in ("../etc", "a/b", ".hidden", "x" * 65, "default", "alloy"):
                        with open(reference, "rb") as f, pytest.raises(openai.BadRequestError) as error:
                            client.audio.voices.create(audio_sample=f, consent="local", name=bad)
                        assert error.value.body["param"] == "name", bad
                listed = httpx.get(f"{server.url}/v1/audio/voices").json()
                saved = [row for row in listed["data"] if row["id"] == "my-voice"]
                assert saved and saved[0]["transcript"] == "Hello, this is my voice."
                wav = client.audio.speech.create(model="qwen3", voice={"id": "my-voice"}, input="Cloned speech.",
                                                 response_format="wav").content
                assert 1 <= frames(wav) <= MAX_FRAMES
                spoken[run] = wav
        finally:
            services.close()
    assert spoken["first"] == spoken["restarted"]  # greedy: the saved prompt is the same voice
    assert sorted(p.name for p in voices_dir.iterdir()) == ["my-voice.json", "my-voice.pt"]
