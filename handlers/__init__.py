"""Pipeline stages, one file per stage: audio in, VAD, STT, LLM, TTS, audio out.

Each stage is a thin ``s2s.handler.Handler`` over a library; modules are imported by the pipeline when needed
(this package imports nothing, so importing one stage never loads another stage's models or libraries).
"""
