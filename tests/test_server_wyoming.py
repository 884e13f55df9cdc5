"""`s2s wyoming` (Piper + Whisper) on 127.0.0.1, driven by the ``wyoming`` package's own client and events:
describe/info, synthesize, streaming synthesize (audio per sentence), transcribe, errors."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from fixtures_models import speak
from pipeline_helpers import words
from server_helpers import piper_config, piper_services, whisper_text
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from s2s.server.serve import listen
from s2s.server.wyoming_service import WyomingServers

pytestmark = pytest.mark.slow

TIMEOUT_S = 60.0


def free_port() -> int:
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(scope="module")
def ports(tmp_path_factory):
    """The TTS and STT ports of WyomingServers running on their own event loop thread."""
    services = piper_services(piper_config(), tmp_path_factory.mktemp("voices"))
    tts_port, stt_port = free_port(), free_port()
    servers = WyomingServers(services, "127.0.0.1", tts_port, stt_port)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(servers.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(TIMEOUT_S)
    yield tts_port, stt_port
    asyncio.run_coroutine_threadsafe(servers.stop(), loop).result(TIMEOUT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(TIMEOUT_S)
    services.close()


async def read_until(client: AsyncTcpClient, last: str) -> list:
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), TIMEOUT_S)
        assert event is not None, f"the server closed the connection; events so far: {[e.type for e in events]}"
        events.append(event)
        if event.type in (last, "error"):
            return events


def audio_of(events: list) -> tuple[np.ndarray, int]:
    start = next(AudioStart.from_event(e) for e in events if AudioStart.is_type(e.type))
    assert (start.width, start.channels) == (2, 1)
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, start.rate


def test_describe_lists_the_programs(ports):
    async def main():
        results = []
        for port in ports:
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                results.append(Info.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT_S)))
        return results

    tts_info, stt_info = asyncio.run(main())
    program = tts_info.tts[0]
    assert program.supports_synthesize_streaming and [v.name for v in program.voices] == ["default"]
    assert program.voices[0].languages == ["en"]
    assert stt_info.asr[0].models[0].languages == ["en"]


def test_synthesize_then_transcribe(ports):
    text = "The quick brown fox jumps over the lazy dog."

    async def main():
        async with AsyncTcpClient("127.0.0.1", ports[0]) as client:
            await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="default")).event())
            events = await read_until(client, "audio-stop")
        audio, rate = audio_of(events)
        async with AsyncTcpClient("127.0.0.1", ports[1]) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            pcm = (audio * 32767).astype("<i2").tobytes()
            for i in range(0, len(pcm), 8192):
                await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i:i + 8192]).event())
            await client.write_event(AudioStop().event())
            transcript = Transcript.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT_S))
        return events, transcript

    events, transcript = asyncio.run(main())
    assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
    assert len(words(transcript.text) & words(text)) >= 4, transcript.text
    assert transcript.language == "en"


def test_streaming_synthesis_speaks_each_sentence_as_it_completes(ports):
    async def main():
        async with AsyncTcpClient("127.0.0.1", ports[0]) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="default")).event())
            for delta in ("The cat sat", " on the mat. ", "Then it ", "slept all day. And"):
                await client.write_event(SynthesizeChunk(text=delta).event())
            # the first sentence is complete: its audio comes before the stream is stopped
            first = await asyncio.wait_for(client.read_event(), TIMEOUT_S)
            await client.write_event(Synthesize(text="ignored inside a stream").event())
            await client.write_event(SynthesizeChunk(text=" the dog barked.").event())
            await client.write_event(SynthesizeStop().event())
            return [first, *await read_until(client, SynthesizeStopped().event().type)]

    events = asyncio.run(main())
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert types.count("audio-start") == 1 and types.count("audio-chunk") >= 3
    audio, rate = audio_of(events)
    heard = words(whisper_text(audio, rate))
    assert len(heard & words("The cat sat on the mat. Then it slept all day. And the dog barked.")) >= 6, heard
    assert "ignored" not in heard


def test_errors_are_error_events_and_the_connection_stays_usable(ports):
    question = speak("What is the capital of France?")

    async def main():
        async with AsyncTcpClient("127.0.0.1", ports[0]) as client:
            await client.write_event(Synthesize(text="Hi.", voice=SynthesizeVoice(name="nobody")).event())
            error = Error.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT_S))
            await client.write_event(Synthesize(text="Hello again.").event())
            events = await read_until(client, "audio-stop")
        async with AsyncTcpClient("127.0.0.1", ports[1]) as client:  # audio at another rate is converted
            await client.write_event(Transcribe().event())
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1,
                                                audio=(question * 32767).astype("<i2").tobytes()).event())
            await client.write_event(AudioStop().event())
            transcript = Transcript.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT_S))
        return error, events, transcript

    error, events, transcript = asyncio.run(main())
    assert error.code == "bad_request" and "nobody" in error.text
    assert audio_of(events)[0].size > 0
    assert {"capital", "france"} <= words(transcript.text)
