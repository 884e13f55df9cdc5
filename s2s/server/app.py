"""The OpenAI-compatible routes of `s2s serve` (FastAPI):

    POST   /v1/audio/speech            text -> audio, streamed as it is made (stream_format audio or sse)
    POST   /v1/audio/transcriptions    audio file -> text (json, text, verbose_json, srt, vtt)
    GET    /v1/models                  the TTS and STT served
    GET    /v1/audio/voices            the configured voice, the speakers, the saved clone voices
    POST   /v1/audio/voices            reference clip + transcript -> a saved clone voice (Base checkpoints)
    DELETE /v1/audio/voices/{name}
    GET    /health                     each worker as the pipeline's health view shows a stage; 503 if one hung

A speech request waits for its first audio chunk before the response starts, so a request the engine refuses
(text too long for its context, a voice it cannot speak) is a 400, and the status is known; after that every chunk
is encoded and sent as soon as the engine yields it. A client that goes away (while waiting or mid-stream)
cancels its job, which frees the engine at its next chunk. Every request has ``request_timeout_s`` in all,
queue wait included: past it, a 504 before the first byte, or the end of the stream after it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from s2s.server import errors
from s2s.server.audio_codecs import (
    FORMATS,
    MEDIA_TYPES,
    SPEEDS,
    AudioTooLong,
    BadAudio,
    TimeStretch,
    available_formats,
    decode_audio,
    make_encoder,
)
from s2s.server.errors import APIError, bad_request
from s2s.server.guards import MB, ApiKey, BodyLimit, api_key
from s2s.server.scheduler import Job, QueueFull, SpeechRequest
from s2s.server.services import Services, TranscribeRequest
from s2s.server.transcripts import RESPONSE_FORMATS, TIMESTAMP_GRANULARITIES, render
from s2s.server.voices import MAX_REFERENCE_S, MIN_REFERENCE_S, check_name

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.1
"""How often a request waiting for its first chunk checks that its client is still there (s)."""
UPLOAD_PATHS = ("/v1/audio/transcriptions", "/v1/audio/voices")
REFERENCE_RATE = 24000
"""Hz at which a clone voice's reference clip is decoded (the codec's and speaker encoder's own rates)."""
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}$")


class ClientGone(Exception):
    """The client disconnected before the answer started."""


class VoiceId(BaseModel):
    id: str


class SpeechBody(BaseModel):
    """The JSON body of POST /v1/audio/speech (OpenAI's fields, plus ``language``)."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    """Accepted and ignored: a server speaks with its one configured TTS."""
    input: str
    voice: str | VoiceId = "default"
    instructions: str = ""
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: str = "audio"
    language: str = ""


def _unavailable(what: str) -> APIError:
    return APIError(404, f"this server was started without {what}", code="not_served")


def _busy(exc: QueueFull) -> APIError:
    return APIError(503, f"{exc}; the server is busy", code="server_busy",
                    headers={"Retry-After": str(exc.retry_after_s)})


def _timeout(limit: float) -> APIError:
    return APIError(504, f"the request took longer than the server's limit of {limit:g} s", code="timeout")


async def _first(job: Job, request: Request, deadline: float) -> object | None:
    """The job's first item (None if it ended without one), watching for the client to leave."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(job.next(None))
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            done, _ = await asyncio.wait({task}, timeout=min(DISCONNECT_POLL_S, remaining))
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()


async def _run(job: Job, request: Request, limit: float) -> object:
    """The result of a one-item job, cancelled when its client leaves or ``limit`` s pass."""
    deadline = asyncio.get_running_loop().time() + limit
    try:
        item = await _first(job, request, deadline)
    except asyncio.TimeoutError:
        raise _timeout(limit) from None
    finally:
        job.cancel()  # no-op once done
    if item is None:
        raise APIError(500, "the request ended without a result")
    return item


async def _audio(job: Job, first: np.ndarray, deadline: float) -> AsyncIterator[np.ndarray]:
    """The job's chunks from ``first`` on; ends early (logged) at the deadline or an engine error; cancels the job
    when it ends in any way, a client disconnect included."""
    loop = asyncio.get_running_loop()
    try:
        chunk = first
        while chunk is not None:
            yield chunk
            chunk = await job.next(max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        log.warning("speech: the request timed out mid-stream; the audio ends here")
    except Exception as exc:
        log.error("speech: the engine failed mid-stream (%s: %s); the audio ends here", type(exc).__name__, exc)
    finally:
        job.cancel()


async def _encoded(chunks: AsyncIterator[np.ndarray], fmt: str, rate: int, speed: float) -> AsyncIterator[bytes]:
    encoder = make_encoder(fmt, rate)
    stretch = TimeStretch(rate, speed) if speed != 1.0 else None
    async for chunk in chunks:
        data = encoder(stretch(chunk) if stretch else chunk)
        if data:
            yield data
    tail = encoder(stretch.flush()) if stretch else b""
    tail += encoder.flush()
    if tail:
        yield tail


async def _sse(encoded: AsyncIterator[bytes], text: str) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE: ``speech.audio.delta`` events with base64 audio, then ``speech.audio.done``."""
    async for data in encoded:
        event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
        yield f"data: {json.dumps(event)}\n\n".encode()
    tokens = len(text.split())  # no tokenizer is involved: words stand in for tokens
    usage = {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens}
    yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n".encode()


def create_app(services: Services) -> FastAPI:
    """The app serving ``services`` (the routes above), with the API key and body limits of ``[server]``."""
    cfg = services.config.server
    app = FastAPI(title="s2s-edge", summary="OpenAI-compatible speech server")
    app.state.services = services
    errors.install(app)

    @app.post("/v1/audio/speech")
    async def speech(body: SpeechBody, request: Request) -> Response:
        if services.speech is None or services.voices is None:
            raise _unavailable("text to speech")
        text = body.input
        if not text.strip():
            raise bad_request("input is empty; give the text to speak", "input", "empty_input")
        if len(text) > cfg.max_input_chars:
            raise bad_request(f"input is {len(text)} characters long; the limit is {cfg.max_input_chars}", "input",
                              "string_above_max_length")
        fmt = body.response_format.strip().lower()
        if fmt not in available_formats():
            known = "is not supported here" if fmt in FORMATS else "is not a response format"
            raise bad_request(f"response_format {body.response_format!r} {known}; use one of: "
                              f"{', '.join(available_formats())}", "response_format", "unsupported_format")
        if not SPEEDS[0] <= body.speed <= SPEEDS[1]:
            raise bad_request(f"speed {body.speed} is out of range; use {SPEEDS[0]} to {SPEEDS[1]}", "speed",
                              "invalid_value")
        if body.stream_format not in ("audio", "sse"):
            raise bad_request(f"stream_format {body.stream_format!r} is not 'audio' or 'sse'", "stream_format",
                              "invalid_value")
        name = body.voice if isinstance(body.voice, str) else body.voice.id
        try:
            voice = services.voices.resolve(name, body.instructions, body.language)
        except (ValueError, KeyError) as exc:
            raise bad_request(str(exc), "voice", "voice_not_found") from None
        try:
            job = services.speech.submit(SpeechRequest(text, voice))
        except QueueFull as exc:
            raise _busy(exc) from None
        except ValueError as exc:
            raise bad_request(str(exc), "voice") from None
        deadline = asyncio.get_running_loop().time() + cfg.request_timeout_s
        try:
            first = await _first(job, request, deadline)
        except ValueError as exc:  # the engine refused the text or the voice
            raise bad_request(str(exc)) from None
        except asyncio.TimeoutError:
            job.cancel()
            raise _timeout(cfg.request_timeout_s) from None
        except ClientGone:
            job.cancel()
            log.info("speech: the client left before the first audio; cancelled")
            return Response(status_code=499)
        except BaseException:
            job.cancel()
            raise
        rate = services.speech.sample_rate
        chunks = _audio(job, first if first is not None else np.zeros(0, np.float32), deadline)
        encoded = _encoded(chunks, fmt, rate, body.speed)
        if body.stream_format == "sse":
            return StreamingResponse(_sse(encoded, text), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return StreamingResponse(encoded, media_type=MEDIA_TYPES[fmt])

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        request: Request,
        file: UploadFile = File(...),
        model: str = Form(""),
        language: str = Form(""),
        prompt: str = Form(""),
        response_format: str = Form("json"),
        temperature: float = Form(0.0),
        timestamp_granularities: list[str] = Form([], alias="timestamp_granularities[]"),
    ) -> Response:
        if services.stt is None:
            raise _unavailable("speech to text")
        if response_format not in RESPONSE_FORMATS:
            raise bad_request(f"response_format {response_format!r} is not one of: {', '.join(RESPONSE_FORMATS)}",
                              "response_format", "invalid_value")
        if language and not _LANGUAGE.match(language):
            raise bad_request(f"language {language!r} is not an ISO-639-1 code (e.g. en)", "language", "invalid_value")
        if not 0.0 <= temperature <= 1.0:
            raise bad_request(f"temperature {temperature} is out of range; use 0 to 1", "temperature", "invalid_value")
        unknown = set(timestamp_granularities) - set(TIMESTAMP_GRANULARITIES)
        if unknown:
            raise bad_request(f"timestamp_granularities {sorted(unknown)} unknown; use {TIMESTAMP_GRANULARITIES}",
                              "timestamp_granularities", "invalid_value")
        words = "word" in timestamp_granularities
        timestamps = response_format in ("srt", "vtt", "verbose_json")
        # temperature 0 = OpenAI's "raise it automatically when unsure", i.e. faster-whisper's fallback schedule
        stt_request = TranscribeRequest(file.file, language.lower() or None, prompt, temperature or None,
                                        timestamps=timestamps, words=words)
        try:
            job = services.stt.submit(stt_request)
        except QueueFull as exc:
            raise _busy(exc) from None
        try:
            transcription = await _run(job, request, cfg.request_timeout_s)
        except AudioTooLong as exc:
            raise bad_request(str(exc), "file", "audio_too_long") from None
        except BadAudio as exc:
            raise bad_request(str(exc), "file", "invalid_audio") from None
        except ValueError as exc:  # the STT refused a setting (e.g. a language it does not know)
            raise bad_request(str(exc)) from None
        except ClientGone:
            return Response(status_code=499)
        content, media_type = render(transcription, response_format, words)
        if isinstance(content, dict):
            return JSONResponse(content)
        return PlainTextResponse(content, media_type=media_type)

    @app.get("/v1/models")
    async def models() -> dict:
        data = []
        if services.speech is not None:
            data.append(services.speech.engine.name)
        if services.stt is not None:
            data.append(services.stt.name)
        created = int(services.started_at)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "s2s-edge"} for name in data]}

    @app.get("/v1/audio/voices")
    async def list_voices() -> dict:
        if services.voices is None:
            raise _unavailable("text to speech")
        rows = services.voices.listing()
        return {"object": "list", "data": rows, "voices": [row["id"] for row in rows]}

    @app.post("/v1/audio/voices")
    async def create_voice(
        request: Request,
        audio_sample: UploadFile = File(...),
        name: str = Form(...),
        ref_text: str = Form(""),
        language: str = Form(""),
        consent: str = Form(""),
    ) -> dict:
        catalog, speech_scheduler = services.voices, services.speech
        if catalog is None or speech_scheduler is None:
            raise _unavailable("text to speech")
        if not catalog.can_clone:
            raise bad_request(f"clone voices need a Qwen3-TTS Base checkpoint; this server speaks with the "
                              f"{speech_scheduler.engine.name} engine without cloning", None, "cloning_unsupported")
        try:
            key = check_name(name)
        except ValueError as exc:
            raise bad_request(str(exc), "name", "invalid_value") from None
        if catalog.reserved(key):
            raise bad_request(f"{key!r} is already the name of a built-in voice; choose another", "name",
                              "invalid_value")
        if len(ref_text) > cfg.max_input_chars:
            raise bad_request(f"ref_text is longer than {cfg.max_input_chars} characters", "ref_text",
                              "string_above_max_length")

        def make(engine):
            samples = decode_audio(audio_sample.file, REFERENCE_RATE, MAX_REFERENCE_S)
            if samples.size < MIN_REFERENCE_S * REFERENCE_RATE:
                raise ValueError(f"the reference audio is shorter than {MIN_REFERENCE_S:g} s")
            clone = engine.make_clone(samples, REFERENCE_RATE, ref_text)
            return catalog.store.save(key, engine, clone, ref_text.strip(), language, services.checkpoint)

        try:
            job = speech_scheduler.call(make)
        except QueueFull as exc:
            raise _busy(exc) from None
        try:
            saved = await _run(job, request, cfg.request_timeout_s)
        except AudioTooLong as exc:
            raise bad_request(f"{exc} for a reference clip", "audio_sample", "audio_too_long") from None
        except ValueError as exc:  # BadAudio, too short, or the engine refused it
            raise bad_request(str(exc), "audio_sample", "invalid_audio") from None
        except ClientGone:
            return Response(status_code=499)
        log.info("voices: saved %r (%s)", saved.name, "in-context" if saved.transcript else "x-vector only")
        return {"id": saved.name, "object": "audio.voice", "name": saved.name, "created_at": saved.created_at,
                "type": "audio_sample"}

    @app.delete("/v1/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> dict:
        if services.voices is None:
            raise _unavailable("text to speech")
        try:
            key = check_name(voice_id)
        except ValueError as exc:
            raise bad_request(str(exc), "voice_id", "invalid_value") from None
        if not services.voices.store.delete(key):
            raise APIError(404, f"no saved voice named {key!r}", "voice_id", "voice_not_found")
        return {"id": key, "object": "audio.voice.deleted", "deleted": True}

    @app.get("/health")
    async def health() -> JSONResponse:
        reports = services.health()
        healthy = not any(report.hung for report in reports)
        body = {"status": "ok" if healthy else "unhealthy", "uptime_s": round(time.time() - services.started_at, 1),
                "stages": [dataclasses.asdict(report) for report in reports]}
        return JSONResponse(body, status_code=200 if healthy else 503)

    app.add_middleware(BodyLimit, max_body=int(cfg.max_body_mb * MB), max_upload=int(cfg.max_upload_mb * MB),
                       upload_paths=UPLOAD_PATHS)
    app.add_middleware(ApiKey, key=api_key(cfg))
    return app
