"""Reusable voice-clone prompts for the Base model: x-vector (speaker encoder) plus, for in-context cloning, the
reference text and the reference audio's codec codes [R, 16] (speech tokenizer encoder, 12.5 frames/s).

Both are computed once, with the checkpoint's speech tokenizer encoder and speaker encoder (24 kHz log-mel), and can
be saved and loaded, so a voice costs nothing per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch


@dataclass
class VoicePrompt:
    speaker_embedding: torch.Tensor  # [D] x-vector, D = talker hidden size
    ref_codes: torch.Tensor | None = None  # [R, 16] long; None = x-vector-only cloning
    ref_text: str | None = None  # transcript of the reference audio (in-context cloning)

    @property
    def xvec_only(self) -> bool:
        return self.ref_codes is None

    def save(self, path: str | Path) -> None:
        torch.save({"speaker_embedding": self.speaker_embedding.cpu(),
                    "ref_codes": None if self.ref_codes is None else self.ref_codes.cpu(),
                    "ref_text": self.ref_text}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "VoicePrompt":
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls(data["speaker_embedding"], data["ref_codes"], data["ref_text"])


def load_reference_audio(ref_audio) -> tuple[np.ndarray, int]:
    """A path (any rate, mixed to mono as the reference loader does) or (samples, rate) -> (float32 mono, rate)."""
    if isinstance(ref_audio, (str, Path)):
        if not Path(ref_audio).is_file():
            raise ValueError(f"reference audio {ref_audio} does not exist: give a WAV/FLAC file or (samples, rate)")
        wav, sr = librosa.load(str(ref_audio), sr=None, mono=True)
    elif isinstance(ref_audio, tuple) and len(ref_audio) == 2 and isinstance(ref_audio[0], np.ndarray):
        wav, sr = ref_audio
        if wav.ndim > 1:
            wav = np.mean(wav, axis=-1)
    else:
        raise ValueError("ref_audio must be a file path or a (np.ndarray, sample_rate) tuple")
    return np.asarray(wav, dtype=np.float32), int(sr)


def create_voice_prompt(speech_tokenizer, speaker_encoder, ref_audio, ref_text: str | None = None,
                        xvec_only: bool = False) -> VoicePrompt:
    """Encode a reference voice with a Base checkpoint's speech tokenizer (``SpeechTokenizer``, its codes) and
    speaker encoder (``SpeakerEncoder``, the x-vector).

    In-context cloning (the default) needs ``ref_text``, the words spoken in ``ref_audio``; ``xvec_only=True`` uses
    the speaker embedding alone.
    """
    if not xvec_only and not ref_text:
        raise ValueError("ref_text (the transcript of the reference audio) is required for in-context cloning; "
                         "pass it, or use xvec_only=True to clone from the speaker embedding alone")
    wav, sr = load_reference_audio(ref_audio)
    codes = None if xvec_only else speech_tokenizer.encode(wav, sr)  # [R, 16]
    rate = speaker_encoder.config.sample_rate
    wav_spk = wav if sr == rate else librosa.resample(y=wav, orig_sr=sr, target_sr=rate)
    embedding = speaker_encoder.embed(wav_spk).detach().cpu()  # [D]
    return VoicePrompt(embedding.clone(), None if codes is None else codes.clone(), None if xvec_only else ref_text)
