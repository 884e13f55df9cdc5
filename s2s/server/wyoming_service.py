"""`s2s wyoming`: Wyoming TTS and STT services for Home Assistant, with the ``wyoming`` package's server and events.

    s2s wyoming [--host ADDR] [--tts-port 10200] [--stt-port 10300] [--no-stt | --no-tts]

Both services run in one process on the same loaded models as `s2s serve` (``Services``), one port each, as
wyoming-piper (10200) and wyoming-faster-whisper (10300) do; add each in Home Assistant under Settings -> Devices &
services -> Wyoming Protocol with this machine's host and the port. Wyoming has no authentication: the services
listen on 127.0.0.1 unless ``--host`` (or ``[server] host``) opens them to a trusted network.

TTS port: ``describe`` -> ``info`` (the voices: the configured one, the speakers, the saved clone voices; the
languages); ``synthesize`` -> ``audio-start``, ``audio-chunk`` (16-bit mono at the engine's rate, as generated),
``audio-stop``; streaming ``synthesize-start`` / ``synthesize-chunk``... / ``synthesize-stop`` -> audio for each
sentence as soon as it is complete, one ``audio-start`` ... ``audio-stop`` for all, then ``synthesize-stopped`` (a
``synthesize`` sent inside a stream, for older servers, is ignored).
STT port: ``transcribe`` (language), ``audio-start``, ``audio-chunk``..., ``audio-stop`` -> ``transcript``.
Failures answer an ``error`` event (busy: code "busy"; bad input: "bad_request") and the connection stays usable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from functools import partial

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from s2s import __version__
from s2s.audio import SPEECH_RATE
from s2s.server.audio_codecs import to_pcm16
from s2s.server.scheduler import QueueFull, SpeechRequest
from s2s.server.serve import StartError, listen, load_services, server_config, server_options
from s2s.server.services import Services, TranscribeRequest
from s2s.server.transcripts import LANGUAGE_NAMES
from s2s.text_chunker import TextChunker, clean_for_speech

log = logging.getLogger(__name__)

ATTRIBUTION = Attribution(name="s2s-edge", url="https://github.com/s2s-edge/s2s-edge")
SAMPLE_WIDTH = 2
"""Bytes per sample of the audio sent and expected (16-bit)."""
SENTENCE_CHARS = 400
"""A streamed sentence longer than this is cut at a clause mark (``TextChunker``'s clause threshold)."""


def _codes(languages: list[str]) -> list[str]:
    """Language names (``english``) as the ISO codes Home Assistant matches (``en``); "auto" dropped."""
    by_name = {name: code for code, name in LANGUAGE_NAMES.items()}
    return [by_name.get(name, name) for name in languages if name != "auto"]


def describe(services: Services, role: str) -> Info:
    """The ``info`` answer of one port."""
    if role == "tts":
        catalog = services.voices
        languages = _codes(catalog.languages()) or [services.config.tts.language if services.config.tts.language
                                                    != "auto" else "en"]
        voices = [TtsVoice(name=name, attribution=ATTRIBUTION, installed=True, description=f"s2s-edge {name}",
                           version=None, languages=languages) for name in catalog.names()]
        engine = services.speech.engine.name
        return Info(tts=[TtsProgram(name=f"s2s-edge-{engine}", attribution=ATTRIBUTION, installed=True,
                                    description=f"s2s-edge text to speech ({engine})", version=__version__,
                                    voices=voices, supports_synthesize_streaming=True)])
    stt = services.stt
    language = services.config.stt.language
    model = getattr(stt.stt, "model", None)
    if language != "auto":
        languages = [language]
    elif getattr(model, "is_multilingual", False):
        languages = sorted(LANGUAGE_NAMES)
    else:
        languages = ["en"]
    return Info(asr=[AsrProgram(name=f"s2s-edge-{stt.name}", attribution=ATTRIBUTION, installed=True,
                                description=f"s2s-edge speech to text ({stt.name})", version=__version__,
                                models=[AsrModel(name=stt.name, attribution=ATTRIBUTION, installed=True,
                                                 description=stt.name, version=None, languages=languages)])])


class SpeechHandler(AsyncEventHandler):
    """One TTS connection."""

    def __init__(self, reader, writer, services: Services, info: Info) -> None:
        super().__init__(reader, writer)
        self.services, self.info = services, info
        self.rate = services.speech.sample_rate
        self.streaming = False
        self.voice = None
        self.chunker = TextChunker(min_chunk_chars=SENTENCE_CHARS)
        self.audio_started = False

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info.event())
            return True
        try:
            await self._handle(event)
        except QueueFull as exc:
            await self.write_event(Error(text=str(exc), code="busy").event())
        except ValueError as exc:
            await self.write_event(Error(text=str(exc), code="bad_request").event())
        return True

    async def _handle(self, event: Event) -> None:
        if SynthesizeStart.is_type(event.type):
            start = SynthesizeStart.from_event(event)
            self.streaming, self.audio_started = True, False
            self.chunker.reset()
            self.voice = self._voice(start.voice)
        elif SynthesizeChunk.is_type(event.type) and self.streaming:
            for sentence in self.chunker(SynthesizeChunk.from_event(event).text):
                await self._speak(sentence)
        elif SynthesizeStop.is_type(event.type) and self.streaming:
            self.streaming = False
            for sentence in self.chunker.flush():
                await self._speak(sentence)
            await self._stop_audio()
            await self.write_event(SynthesizeStopped().event())
        elif Synthesize.is_type(event.type) and not self.streaming:
            synthesize = Synthesize.from_event(event)
            self.voice, self.audio_started = self._voice(synthesize.voice), False
            await self._speak(synthesize.text)
            await self._stop_audio()

    def _voice(self, voice):
        name = (voice.name if voice is not None else None) or "default"
        return self.services.voices.resolve(name)

    async def _speak(self, text: str) -> None:
        text = clean_for_speech(text)
        if not text:
            return
        limit = self.services.config.server.max_input_chars
        if len(text) > limit:
            raise ValueError(f"the text is {len(text)} characters long; the limit is {limit}")
        job = self.services.speech.submit(SpeechRequest(text, self.voice))
        timeout = self.services.config.server.request_timeout_s
        try:
            while (audio := await job.next(timeout)) is not None:
                if not self.audio_started:
                    self.audio_started = True
                    await self.write_event(AudioStart(rate=self.rate, width=SAMPLE_WIDTH, channels=1).event())
                await self.write_event(AudioChunk(rate=self.rate, width=SAMPLE_WIDTH, channels=1,
                                                  audio=to_pcm16(audio)).event())
        except asyncio.TimeoutError:
            raise ValueError(f"synthesis took longer than {timeout:g} s") from None
        finally:
            job.cancel()  # the connection dropped, timed out, or done (then a no-op)

    async def _stop_audio(self) -> None:
        if not self.audio_started:  # nothing was spoken: still a well-formed (empty) stream
            await self.write_event(AudioStart(rate=self.rate, width=SAMPLE_WIDTH, channels=1).event())
        await self.write_event(AudioStop().event())
        self.audio_started = False


class TranscriptionHandler(AsyncEventHandler):
    """One STT connection."""

    def __init__(self, reader, writer, services: Services, info: Info) -> None:
        super().__init__(reader, writer)
        self.services, self.info = services, info
        self.language: str | None = None
        self.converter = AudioChunkConverter(rate=SPEECH_RATE, width=SAMPLE_WIDTH, channels=1)
        self.audio = bytearray()
        self.too_long = False

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info.event())
        elif Transcribe.is_type(event.type):
            self.language = Transcribe.from_event(event).language or None
        elif AudioStart.is_type(event.type):
            self.audio.clear()
            self.too_long = False
        elif AudioChunk.is_type(event.type):
            limit = int(self.services.config.server.max_audio_s * SPEECH_RATE) * SAMPLE_WIDTH
            chunk = self.converter.convert(AudioChunk.from_event(event))
            if len(self.audio) + len(chunk.audio) > limit:
                self.too_long = True
            else:
                self.audio += chunk.audio
        elif AudioStop.is_type(event.type):
            await self._transcribe()
        return True

    async def _transcribe(self) -> None:
        if self.too_long:
            limit = self.services.config.server.max_audio_s
            await self.write_event(Error(text=f"the audio is longer than {limit:g} s", code="bad_request").event())
            return
        audio = np.frombuffer(bytes(self.audio), dtype="<i2").astype(np.float32) / 32768.0
        self.audio.clear()
        try:
            job = self.services.stt.submit(TranscribeRequest(audio, self.language))
        except QueueFull as exc:
            await self.write_event(Error(text=str(exc), code="busy").event())
            return
        try:
            result = await job.result(self.services.config.server.request_timeout_s)
        except (ValueError, asyncio.TimeoutError) as exc:
            await self.write_event(Error(text=str(exc) or "transcription timed out", code="bad_request").event())
            return
        finally:
            job.cancel()
        await self.write_event(Transcript(text=result.text, language=result.language or None).event())


class WyomingServers:
    """The TTS and STT servers of one ``Services`` (either may be absent), started and stopped together."""

    def __init__(self, services: Services, host: str, tts_port: int, stt_port: int) -> None:
        self.services = services
        self.servers: list[tuple[AsyncServer, partial]] = []
        self.ports: dict[str, int] = {}
        """Role (tts, stt) -> port."""
        if services.speech is not None:
            factory = partial(SpeechHandler, services=services, info=describe(services, "tts"))
            self.servers.append((AsyncServer.from_uri(f"tcp://{host}:{tts_port}"), factory))
            self.ports["tts"] = tts_port
        if services.stt is not None:
            factory = partial(TranscriptionHandler, services=services, info=describe(services, "stt"))
            self.servers.append((AsyncServer.from_uri(f"tcp://{host}:{stt_port}"), factory))
            self.ports["stt"] = stt_port

    async def start(self) -> None:
        for server, factory in self.servers:
            await server.start(factory)

    async def stop(self) -> None:
        for server, _ in self.servers:
            await server.stop()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from s2s.cli import _global_options

    parser = subparsers.add_parser("wyoming", parents=[_global_options(suppress=True)],
                                   help="Wyoming TTS and STT services for Home Assistant",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--tts-port", type=int, help="TTS port (default: [server] wyoming_tts_port, 10200)")
    parser.add_argument("--stt-port", type=int, help="STT port (default: [server] wyoming_stt_port, 10300)")
    server_options(parser, "Wyoming has no authentication: open it to trusted networks only")
    return parser


def main(args: argparse.Namespace) -> int:
    from s2s.supervisor import supervised

    config = server_config(args, wyoming_tts_port=args.tts_port, wyoming_stt_port=args.stt_port)
    cfg = config.server
    ports = ([cfg.wyoming_tts_port] if not args.no_tts else []) + ([cfg.wyoming_stt_port] if not args.no_stt else [])
    if len(set(ports)) < len(ports):
        raise ValueError(f"the TTS and STT ports are both {ports[0]}; give them different ports")
    try:
        for port in ports:  # a port in use fails now, not after the models load
            listen(cfg.host, port).close()
        services = load_services(config, tts=not args.no_tts, stt=not args.no_stt)
    except StartError as exc:
        print(f"error: {exc}")
        return 1
    try:
        with supervised(services, threading.Event(), status=f"Wyoming on {cfg.host}, ports {ports}"):
            asyncio.run(_serve(services, cfg.host, cfg.wyoming_tts_port, cfg.wyoming_stt_port))
    except OSError as exc:
        print(f"error: cannot listen on {cfg.host} {ports}: {exc.strerror or exc}")
        return 1
    finally:
        services.close()
    return 0


async def _serve(services: Services, host: str, tts_port: int, stt_port: int) -> None:
    servers = WyomingServers(services, host, tts_port, stt_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await servers.start()
    log.info("Wyoming on %s: %s (Ctrl-C stops)", host,
             ", ".join(f"{role.upper()} port {port}" for role, port in servers.ports.items()))
    await stopping.wait()
    log.info("Wyoming: stopping")
    await servers.stop()
