"""The 12 Hz speech tokenizer (``speech_tokenizer/`` of a checkpoint): codes [T, 16] <-> 24 kHz audio.

Decoding runs ``StreamingCodecDecoder`` over the decoder weights (codec_model.py). A one-shot ``decode`` repeats the
reference's windowing: windows of 300 frames, each decoded together with the 25 frames before it, whose audio is
dropped (for 300 frames or fewer this is one plain decode). Encoding (Base models: the reference audio of a cloned
voice) is Mimi's encoder from transformers (``MimiModel``, the same class qwen-tts builds on), keeping the first 16
of its quantizers and ceil(samples / 1920) frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import torch

from s2s.qwen3_tts.codec_model import CodecDecoder, decoder_config
from s2s.qwen3_tts.codec_stream import StreamingCodecDecoder
from s2s.qwen3_tts.quiet import quiet_transformers

DECODE_WINDOW = 300
DECODE_LEFT_CONTEXT = 25


class SpeechTokenizer:
    def __init__(self, folder: Path, config: dict, tensors: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, with_encoder: bool):
        self.config = config
        self.device = device
        self.sample_rate: int = config["output_sample_rate"]
        self.samples_per_frame: int = config["decode_upsample_rate"]
        with torch.device("meta"):  # shapes only: the weights come from the checkpoint, no random init to pay for
            decoder = CodecDecoder(decoder_config(config["decoder_config"]))
        self.decoder = _load(decoder, tensors, "decoder.", device, dtype)
        self.decoder.pre_transformer.rotary_emb.place(device)
        self.encoder = _load_mimi(folder, config, device, dtype) if with_encoder else None
        self._one_shot: StreamingCodecDecoder | None = None

    @classmethod
    def from_folder(cls, folder: Path, device: torch.device, dtype: torch.dtype, with_encoder: bool) -> "SpeechTokenizer":
        from safetensors import safe_open

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "qwen3_tts_tokenizer_12hz":
            raise ValueError(f"{folder}/config.json has model_type {config.get('model_type')!r}: only the 12 Hz "
                             "speech tokenizer (qwen3_tts_tokenizer_12hz) is supported")
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:  # the encoder half: Mimi's loader
            decoder = {name: weights.get_tensor(name) for name in weights.keys() if name.startswith("decoder.")}
        return cls(folder, config, decoder, device, dtype, with_encoder)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """codes [T, 16] -> float32 [T * 1920], windowed as the reference's one-shot decode."""
        if self._one_shot is None:
            self._one_shot = StreamingCodecDecoder(self.decoder)
        codes = codes.clamp(min=0)
        pieces, start = [], 0
        while start < codes.shape[0]:
            end = min(start + DECODE_WINDOW, codes.shape[0])
            context = DECODE_LEFT_CONTEXT if start > DECODE_LEFT_CONTEXT else start
            self._one_shot.reset()
            audio = self._one_shot.decode(codes[start - context : end])
            pieces.append(audio[context * self.samples_per_frame :])
            start = end
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return torch.cat(pieces).float().cpu().numpy()

    @torch.inference_mode()
    def encode(self, wav: np.ndarray, sr: int) -> torch.Tensor:
        """Mono float32 audio at ``sr`` -> codes [ceil(samples at 24 kHz / 1920), 16] (long, CPU)."""
        if self.encoder is None:
            raise ValueError("this speech tokenizer was loaded without its encoder: only Base checkpoints encode "
                             "reference audio (load a Qwen3-TTS-12Hz-*-Base model to clone a voice)")
        rate = self.config["input_sample_rate"]
        if sr != rate:
            wav = librosa.resample(y=wav.astype(np.float32), orig_sr=sr, target_sr=rate)
        weight = next(self.encoder.parameters())
        samples = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(weight.device, weight.dtype)
        codes = self.encoder.encode(samples.view(1, 1, -1), return_dict=True).audio_codes  # [1, Q_all, frames]
        frames = -(-samples.shape[-1] // self.config["encode_downsample_rate"])
        return codes[0, : self.config["encoder_valid_num_quantizers"], :frames].T.cpu()  # [frames, 16]


def _load(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, device: torch.device,
          dtype: torch.dtype) -> torch.nn.Module:
    """Fill ``module`` from the ``prefix`` keys of ``tensors`` (every key must fit), move it, eval mode."""
    state = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the checkpoint's {prefix}* weights do not fit the 12 Hz codec layout (missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}): is it a Qwen3-TTS-12Hz speech tokenizer?")
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _load_mimi(folder: Path, config: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Mimi's encoder half from the checkpoint's ``encoder.*`` weights. transformers' own loader reads them (5.x
    reorganised Mimi's modules and renames the keys while loading; 4.57 takes them as they are); the decoder half,
    absent from the checkpoint, is dropped after loading."""
    from transformers import MimiConfig, MimiModel

    with quiet_transformers():  # it would list the decoder half as "newly initialized"
        mimi = MimiModel.from_pretrained(str(folder), config=MimiConfig(**config["encoder_config"]), dtype=dtype,
                                         attn_implementation="sdpa",  # what the reference's from_pretrained picks
                                         key_mapping={r"^encoder\.": "", r"^decoder\.": "codec_decoder."})
    for half in ("decoder", "decoder_transformer", "upsample"):
        if half in mimi._modules:
            setattr(mimi, half, None)
    return mimi.to(device).eval().requires_grad_(False)
