"""Read a Qwen3-TTS 12 Hz checkpoint folder into the engine's parts, with no ``qwen_tts`` import.

    config.json                      -> ``Qwen3TTSConfig`` (attribute access; talker and predictor configs nested)
    model.safetensors                -> talker and code-predictor weights (weights.py), speaker encoder (Base)
    vocab.json, merges.txt, ...      -> the text tokenizer (text_tokenizer.py)
    speech_tokenizer/                -> the 12 Hz codec: decoder, and Mimi's encoder for Base (speech_tokenizer.py)

Everything is loaded in the engine's dtype and device, as qwen-tts 0.1.1's ``from_pretrained(dtype=...)`` loads
it, so the engine sees the same numbers as the reference. Needs safetensors, tokenizers and transformers (4.57 or
5.x: only its tokenizer and ``MimiModel`` are used).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from s2s.qwen3_tts.options import KINDS
from s2s.qwen3_tts.speaker_encoder import SpeakerEncoder, SpeakerEncoderConfig
from s2s.qwen3_tts.speech_tokenizer import SpeechTokenizer
from s2s.qwen3_tts.text_tokenizer import load_text_tokenizer
from s2s.qwen3_tts.weights import PredictorWeights, TalkerWeights, take_weights

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    config: SimpleNamespace
    """config.json: ``tts_model_type``, ``tts_model_size``, the tts_* token ids, ``talker_config`` (a namespace
    whose ``code_predictor_config`` is one too; its id maps stay dicts)."""
    talker: TalkerWeights
    predictor: PredictorWeights
    tokenizer: object
    """A transformers fast tokenizer: ``tokenizer(text=..., return_tensors="pt")["input_ids"]``."""
    speech_tokenizer: SpeechTokenizer
    speaker_encoder: SpeakerEncoder | None
    """Base checkpoints only."""


def read_config(folder: Path) -> SimpleNamespace:
    """config.json as attributes, checked to be a 12 Hz Qwen3-TTS model of a known kind."""
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if data.get("model_type") != "qwen3_tts" or data.get("tts_model_type") not in KINDS:
        raise ValueError(f"{folder}/config.json is not a Qwen3-TTS 12 Hz model (model_type {data.get('model_type')!r}, "
                         f"tts_model_type {data.get('tts_model_type')!r}; expected qwen3_tts and one of {KINDS})")
    talker = dict(data["talker_config"])
    talker["code_predictor_config"] = SimpleNamespace(**talker["code_predictor_config"])
    return SimpleNamespace(**{**data, "talker_config": SimpleNamespace(**talker)})


def load_checkpoint(folder: str | Path, device: torch.device, dtype: torch.dtype) -> Checkpoint:
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    base = config.tts_model_type == "base"
    tensors = {name: tensor.to(dtype) for name, tensor in load_file(str(folder / "model.safetensors"),
                                                                     device=str(device)).items()}
    talker, predictor = take_weights(tensors, config.talker_config)
    speaker_encoder = None
    if base:
        speaker_encoder = SpeakerEncoder(SpeakerEncoderConfig.from_json(config.speaker_encoder_config))
        state = {name.removeprefix("speaker_encoder."): tensors.pop(name) for name in list(tensors)
                 if name.startswith("speaker_encoder.")}
        speaker_encoder.load_state_dict(state)
        speaker_encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if tensors:
        raise ValueError(f"{folder}/model.safetensors has weights this engine does not know ({sorted(tensors)[:5]}): "
                         f"is it a Qwen3-TTS 12 Hz {config.tts_model_type} checkpoint?")
    speech = SpeechTokenizer.from_folder(folder / "speech_tokenizer", device, dtype, with_encoder=base)
    log.debug("read %s: %s %s", folder.name, config.tts_model_size, config.tts_model_type)
    return Checkpoint(config, talker, predictor, load_text_tokenizer(folder), speech, speaker_encoder)
