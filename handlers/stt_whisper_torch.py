"""Speech to text with Whisper in torch (``s2s.whisper``): the STT stage of ``handlers.stt`` on a torch model.

For a GPU that CTranslate2 cannot use: on a Jetson (PyPI's aarch64 CTranslate2 is CPU-only) or a machine whose
CUDA is not the one CTranslate2 was built for. It reads the same faster-whisper (CTranslate2) model folders, so
``stt.model`` and the embedded Whisper tiny.en work as they are. float16 on CUDA, float32 on the CPU; greedy
decoding (``stt.beam_size`` above 1 is not used). Everything else (early transcription, the end-of-turn verdicts,
noise) is the faster-whisper stage's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.stt import STTHandler
from s2s.devices import resolve_device
from s2s.models import whisper_model

if TYPE_CHECKING:
    from s2s.whisper.transcriber import TorchWhisper

log = logging.getLogger(__name__)


class TorchWhisperSTTHandler(STTHandler):
    """SpeechSegment -> Transcript with ``s2s.whisper.transcriber.TorchWhisper``."""

    def load_model(self) -> TorchWhisper:
        import torch

        from s2s.whisper.transcriber import TorchWhisper

        folder = whisper_model(self.cfg)
        if not (Path(folder) / "model.bin").is_file():
            raise FileNotFoundError(
                f"stt.backend = \"whisper-torch\" reads a faster-whisper (CTranslate2) model folder, and {folder!r} "
                "is not one; set stt.model to such a folder (./setup.sh downloads one)")
        device = resolve_device("stt", self.cfg.device)
        dtype = torch.float16 if device == "cuda" else torch.float32
        if self.cfg.beam_size > 1:
            log.info("STT: the torch Whisper decodes greedily; stt.beam_size = %d is not used", self.cfg.beam_size)
        log.info("STT: Whisper (torch) %s on %s (%s)", folder, device, str(dtype).removeprefix("torch."))
        return TorchWhisper(folder, device, dtype)
