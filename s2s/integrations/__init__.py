"""Our engines inside other projects' voice pipelines, one subpackage per host project.

Each subpackage imports its host lazily (only when a user selects it), so s2s-edge itself never needs the host
installed; a missing host is an ImportError that gives the pip line.

- ``speech_to_speech``: our TTS as a TTS backend of huggingface/speech-to-speech 1.1.0 (``--tts s2s-edge``).
"""
