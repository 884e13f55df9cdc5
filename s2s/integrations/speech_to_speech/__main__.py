"""``python -m s2s.integrations.speech_to_speech COMMAND [options]``: speech-to-speech's own command line (``serve``,
``local``, ``talk``; options or ``-f config.yaml``) with ``s2s-edge`` registered among its TTS backends.

    python -m s2s.integrations.speech_to_speech local --tts s2s-edge \
        --s2s_edge_model models/Qwen3-TTS-12Hz-0.6B-CustomVoice --s2s_edge_speaker vivian
"""

from __future__ import annotations

import sys

from s2s.integrations.speech_to_speech import register


def main() -> None:
    try:
        register()
    except ImportError as exc:
        sys.exit(str(exc))
    from speech_to_speech.cli import main as speech_to_speech_main

    speech_to_speech_main()


if __name__ == "__main__":
    main()
