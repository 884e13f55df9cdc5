"""Serving the loaded models to other programs: `s2s serve` (the OpenAI audio API over HTTP, FastAPI + uvicorn)
and `s2s wyoming` (Wyoming TTS and STT services for Home Assistant, the ``wyoming`` package).

    services.py          loads the configured TTS engine and STT once; health; shared by both servers
    scheduler.py         the engine's worker thread and bounded queue: submit -> async stream, cancel, 503
    voices.py            what a request's `voice` may name; uploaded clone voices on disk
    audio_codecs.py      response formats (wav, pcm, mp3, opus, aac, flac), speed, decoding uploads
    transcripts.py       transcription response formats (json, text, verbose_json, srt, vtt)
    errors.py            OpenAI-shaped JSON errors
    guards.py            API key and body size limits (ASGI middleware)
    app.py               the FastAPI routes
    serve.py             `s2s serve`
    wyoming_service.py   `s2s wyoming`
"""
