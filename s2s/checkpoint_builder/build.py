"""Synthetic Qwen3-TTS 12 Hz checkpoints: the exact released layout and configs, filled with random weights.

``build_checkpoint(out_dir, size, kind)`` writes a folder that ``qwen_tts.Qwen3TTSModel.from_pretrained(out_dir)``
loads offline, exactly like a downloaded ``Qwen/Qwen3-TTS-12Hz-*`` repo. The weights are drawn with the reference's
own classes: where ``qwen_tts`` does not import (the transformers 5 stack), the build runs in the reference venv
(s2s/reference_env.py) and only its result is seen here.

    config.json, generation_config.json, model.safetensors, preprocessor_config.json,
    vocab.json, merges.txt, tokenizer_config.json            (the exact Qwen vocabulary, see tokenizer_files.py)
    speech_tokenizer/{config.json, preprocessor_config.json, model.safetensors}

Sizes: ``0.6b`` and ``1.7b`` use the released configs verbatim (talker 28 layers, code predictor 5 layers, 16 code
groups, the 8-layer 12 Hz codec decoder). ``tiny`` keeps every id, vocabulary, code-group and quantizer count and
the 1920 samples per frame, and shrinks only widths and depths (talker 2 layers of width 64, code predictor 1 layer of
width 32, so like 1.7B it has a ``small_to_mtp_projection``; a 2-layer codec decoder with the real 72-frame window):
it builds in about a second and runs the reference code paths on a CPU.

Kinds: ``custom_voice`` (named speakers, incl. two dialect speakers), ``voice_design`` (1.7B only, like the release)
and ``base`` (voice clone: adds the speaker encoder). Weights are bf16 for the full sizes and fp32 for ``tiny`` unless
``dtype`` says otherwise; the speech tokenizer is always fp32, as released. A marker file records what was built, so
building the same spec into the same folder again is a no-op.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from s2s import reference_env
from s2s.checkpoint_builder.tokenizer_files import write_tokenizer_files
from s2s.models import cache_root
from s2s.qwen3_tts.options import KINDS, SamplingParams

log = logging.getLogger(__name__)

SIZES = ("tiny", "0.6b", "1.7b")
MARKER = ".s2s-synthetic-checkpoint.json"
"""Written last; holds the build spec. A folder without it is never overwritten."""
_FORMAT_VERSION = 1
"""Bump when the written files change, so older synthetic folders are rebuilt."""

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "fp32": torch.float32, "float32": torch.float32}
_MODEL_SIZE_TAG = {"tiny": "tiny", "0.6b": "0b6", "1.7b": "1b7"}
"""config.json ``tts_model_size``; upstream drops the instruct of CustomVoice when it is a substring of "0b6"."""

# Released codec control ids (top 1024 of the 3072-entry talker vocabulary), shared by every size.
_CODEC_IDS = {"codec_pad_id": 2148, "codec_bos_id": 2149, "codec_eos_token_id": 2150, "codec_think_id": 2154,
              "codec_nothink_id": 2155, "codec_think_bos_id": 2156, "codec_think_eos_id": 2157}
_LANGUAGES = {"chinese": 2055, "english": 2050, "german": 2053, "italian": 2070, "portuguese": 2071,
              "spanish": 2054, "japanese": 2058, "korean": 2064, "french": 2061, "russian": 2069}
_DIALECTS = {"beijing_dialect": 2074, "sichuan_dialect": 2062}
_SPEAKERS = {"serena": 3066, "vivian": 3065, "uncle_fu": 3010, "ryan": 3061, "aiden": 2861, "ono_anna": 2873,
             "sohee": 2864, "eric": 2875, "dylan": 2878}
_SPEAKER_DIALECT = {"eric": "sichuan_dialect", "dylan": "beijing_dialect"}

# Widths and depths per size; everything else is shared.
_TALKER_SHAPE = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, text_hidden_size=32, mrope_section=[3, 3, 2]),
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, text_hidden_size=2048, mrope_section=[24, 20, 20]),
    "1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, text_hidden_size=2048, mrope_section=[24, 20, 20]),
}
_PREDICTOR_FULL = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=5, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128)
_PREDICTOR_SHAPE = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
    "0.6b": _PREDICTOR_FULL,
    "1.7b": _PREDICTOR_FULL,
}
_TINY_SPEAKER_ENCODER = dict(enc_channels=[32, 32, 32, 32, 96], enc_attention_channels=16, enc_res2net_scale=4,
                             enc_se_channels=16)

_SAMPLING = SamplingParams()  # the engine's defaults are the release's generation_config.json
GENERATION_CONFIG = {"do_sample": _SAMPLING.do_sample, "temperature": _SAMPLING.temperature, "top_k": _SAMPLING.top_k,
                     "top_p": _SAMPLING.top_p, "repetition_penalty": _SAMPLING.repetition_penalty,
                     "subtalker_dosample": _SAMPLING.subtalker_do_sample,
                     "subtalker_temperature": _SAMPLING.subtalker_temperature,
                     "subtalker_top_k": _SAMPLING.subtalker_top_k, "subtalker_top_p": _SAMPLING.subtalker_top_p,
                     "max_new_tokens": 8192}
PREPROCESSOR_CONFIG = {"padding_side": "left", "padding_value": 0.0, "processor_class": "Qwen3TTSProcessor",
                       "return_attention_mask": True}
SPEECH_PREPROCESSOR_CONFIG = {"feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1,
                              "sampling_rate": 24000, "padding_side": "right", "padding_value": 0.0,
                              "return_attention_mask": True, "chunk_length_s": None, "overlap": None}


def check_spec(size: str, kind: str) -> None:
    """Raise ValueError for a size/kind pair that has no released (or tiny) counterpart."""
    if size not in SIZES:
        raise ValueError(f"size {size!r} is not known; use one of: {', '.join(SIZES)}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not known; use one of: {', '.join(KINDS)}")
    if kind == "voice_design" and size == "0.6b":
        raise ValueError("Qwen3-TTS VoiceDesign is only released at 1.7B; use --size 1.7b (or tiny for tests)")


def main_config(size: str, kind: str) -> dict:
    """The config.json of ``Qwen3-TTS-12Hz-<size>-<kind>`` (tiny: same ids, smaller widths/depths)."""
    check_spec(size, kind)
    shape = dict(_TALKER_SHAPE[size])
    mrope_section = shape.pop("mrope_section")
    predictor = _PREDICTOR_SHAPE[size]
    languages = dict(_LANGUAGES, **(_DIALECTS if kind == "custom_voice" else {}))
    speakers = _SPEAKERS if kind == "custom_voice" else {}
    talker = {
        "model_type": "qwen3_tts_talker",
        "vocab_size": 3072,
        **shape,
        "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
        "rope_scaling": {"interleaved": True, "mrope_section": mrope_section, "rope_type": "default",
                         "type": "default"},
        "attention_bias": False, "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": None,
        "num_code_groups": 16, "text_vocab_size": 151936, "position_id_per_seconds": 13,
        "tie_word_embeddings": False, "use_cache": True, "initializer_range": 0.02,
        **_CODEC_IDS,
        "codec_language_id": languages,
        "spk_id": dict(speakers),
        "spk_is_dialect": {name: _SPEAKER_DIALECT.get(name, False) for name in speakers},
        "code_predictor_config": {
            "model_type": "qwen3_tts_talker_code_predictor",
            "vocab_size": 2048,
            **predictor,
            "hidden_act": "silu", "max_position_embeddings": 65536, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
            "rope_scaling": None, "attention_bias": False, "attention_dropout": 0.0,
            "use_sliding_window": False, "sliding_window": None, "max_window_layers": 28,
            "layer_types": ["full_attention"] * predictor["num_hidden_layers"],
            "num_code_groups": 16, "tie_word_embeddings": False, "use_cache": True, "initializer_range": 0.02,
        },
    }
    config = {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": _MODEL_SIZE_TAG[size],
        "tts_model_type": kind,
        "assistant_token_id": 77091,
        "im_start_token_id": 151644, "im_end_token_id": 151645,
        "tts_pad_token_id": 151671, "tts_bos_token_id": 151672, "tts_eos_token_id": 151673,
        "transformers_version": "4.57.3",  # the official value: makes qwen_tts apply the same tokenizer regex fix
        "talker_config": talker,
    }
    if kind == "base":
        encoder = {"enc_dim": shape["hidden_size"], "sample_rate": 24000}
        config["speaker_encoder_config"] = dict(encoder, **(_TINY_SPEAKER_ENCODER if size == "tiny" else {}))
    return config


def speech_tokenizer_config(size: str) -> dict:
    """speech_tokenizer/config.json: the released 12 Hz codec, or for ``tiny`` a narrow one with the same interface
    (16 quantizers of 2048 codes, 12.5 frames/s, 1920 samples per frame, 72-frame attention window)."""
    if size not in SIZES:
        raise ValueError(f"size {size!r} is not known; use one of: {', '.join(SIZES)}")
    encoder = {
        "model_type": "mimi", "sampling_rate": 24000, "frame_rate": 12.5, "_frame_rate": 12.5, "audio_channels": 1,
        "hidden_size": 512, "num_filters": 64, "num_residual_layers": 1, "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7, "last_kernel_size": 3, "residual_kernel_size": 3, "dilation_growth_rate": 2,
        "use_causal_conv": True, "pad_mode": "constant", "compress": 2, "trim_right_ratio": 1.0,
        "codebook_size": 2048, "codebook_dim": 256, "num_quantizers": 32, "use_conv_shortcut": False,
        "vector_quantization_hidden_dimension": 256, "num_semantic_quantizers": 1, "upsample_groups": 512,
        "num_hidden_layers": 8, "intermediate_size": 2048, "num_attention_heads": 8, "num_key_value_heads": 8,
        "head_dim": 64, "hidden_act": "gelu", "max_position_embeddings": 8000, "initializer_range": 0.02,
        "norm_eps": 1e-05, "use_cache": False, "use_streaming": False, "rope_theta": 10000.0, "sliding_window": 250,
        "attention_dropout": 0.0, "layer_scale_initial_scale": 0.01, "attention_bias": False,
    }
    decoder = {
        "codebook_size": 2048, "codebook_dim": 512, "hidden_size": 512, "latent_dim": 1024,
        "intermediate_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 16,
        "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 8000, "rope_theta": 10000,
        "rms_norm_eps": 1e-05, "layer_scale_initial_scale": 0.01, "sliding_window": 72, "attention_bias": False,
        "attention_dropout": 0.0, "num_quantizers": 16, "num_semantic_quantizers": 1, "semantic_codebook_size": 4096,
        "vector_quantization_hidden_dimension": 512, "upsample_rates": [8, 5, 4, 3], "upsampling_ratios": [2, 2],
        "decoder_dim": 1536,
    }
    if size == "tiny":
        encoder.update(hidden_size=32, num_filters=8, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, head_dim=16, intermediate_size=64, codebook_dim=32,
                       vector_quantization_hidden_dimension=32, num_quantizers=16, upsample_groups=32)
        decoder.update(codebook_dim=32, hidden_size=32, latent_dim=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, head_dim=16, decoder_dim=64,
                       vector_quantization_hidden_dimension=32)
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"], "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": 16, "input_sample_rate": 24000, "output_sample_rate": 24000,
        "decode_upsample_rate": 1920, "encode_downsample_rate": 1920, "transformers_version": "4.57.3",
        "encoder_config": encoder, "decoder_config": decoder,
    }


def resolve_dtype(size: str, dtype: str | torch.dtype | None) -> torch.dtype:
    """The main model's weight dtype: bf16 for the full sizes, fp32 for tiny, unless given."""
    if dtype is None:
        return torch.float32 if size == "tiny" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _qwen_tts_classes():
    # qwen_tts imports torchaudio: where that is broken, patches.apply() must have run (the CLI and the tests do).
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    return Qwen3TTSConfig, Qwen3TTSForConditionalGeneration, Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model


def build_main_model(config: dict, dtype: torch.dtype, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Instantiate ``Qwen3TTSForConditionalGeneration`` for a config.json dict (``device="meta"``: shapes only)."""
    config_cls, model_cls, _, _ = _qwen_tts_classes()
    with torch.device(device):
        return model_cls._from_config(config_cls.from_dict(config), dtype=dtype)


def build_speech_tokenizer(config: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Instantiate ``Qwen3TTSTokenizerV2Model`` (fp32) whose decoder turns codes into audible, code-dependent audio.

    The upstream initialisation leaves every codebook entry at zero (``embedding_sum`` zeros: the audio would not
    depend on the codes) and draws linear/conv weights with std 0.02 (the audio comes out near 1e-8). Codebook
    entries are drawn from N(0, 1) instead (decoder and Mimi encoder), and the decoder's linear and conv layers get
    PyTorch's default (fan-in scaled) initialisation; the last conv is then rescaled so that random codes decode to
    zero-mean audio of std 0.2 (otherwise SnakeBeta's positive offset drives most samples into the clamp at +-1).
    """
    _, _, config_cls, model_cls = _qwen_tts_classes()
    with torch.device(device):
        model = model_cls._from_config(config_cls.from_dict(config), dtype=torch.float32)
    if device != "meta":
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name.endswith(("embedding_sum", "embed_sum")):
                    tensor.normal_()
            for module in model.decoder.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                    module.reset_parameters()
            _calibrate_output_level(model.decoder, level=0.2)
    return model


def _calibrate_output_level(decoder: torch.nn.Module, level: float) -> None:
    """Rescale the decoder's last conv so its pre-clamp output on random codes has mean 0 and std ``level``."""
    last = decoder.decoder[-1].conv
    seen = []
    hook = last.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        codes = torch.randint(0, decoder.config.codebook_size, (1, decoder.config.num_quantizers, 16))
        decoder(codes)  # [1, 16, 16 frames]
    finally:
        hook.remove()
    out = seen[0]  # [1, 1, 16 * 1920], before the clamp
    scale = level / out.std().clamp(min=1e-12)
    last.weight.mul_(scale)
    last.bias.sub_(out.mean()).mul_(scale)


def _save_safetensors(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    path.chmod(0o644)  # safetensors creates the file owner-only; the other files are world-readable


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_checkpoint(
    out_dir: str | Path,
    size: str = "tiny",
    kind: str = "custom_voice",
    seed: int = 0,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write a random-weight Qwen3-TTS checkpoint folder and return its path (no-op if already built the same way).

    The folder is built next to ``out_dir`` and renamed into place, so a reader never sees half a checkpoint and two
    concurrent builders of the same spec do not clash. An existing ``out_dir`` is replaced only if it is empty or
    was written by this function (it carries the marker file).
    """
    check_spec(size, kind)
    weight_dtype = resolve_dtype(size, dtype)
    out = Path(out_dir).expanduser().resolve()
    spec = {"format": _FORMAT_VERSION, "size": size, "kind": kind, "seed": seed,
            "dtype": str(weight_dtype).removeprefix("torch.")}
    found = _read_marker(out)
    if found == spec:
        log.debug("synthetic checkpoint %s already built (%s)", out, spec)
        return out
    if out.exists() and found is None and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and was not written by build_checkpoint; choose an empty or new folder")

    if not reference_env.in_process():
        _build_in_reference_venv(out, spec)
        return out
    started = time.monotonic()
    log.info("building synthetic Qwen3-TTS %s %s checkpoint (%s, seed %d) in %s", size, kind, spec["dtype"], seed, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_folder(staging, size, kind, seed, weight_dtype)
        _write_json(staging / MARKER, spec)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError:
        if _read_marker(out) != spec:  # not a concurrent builder that won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("synthetic checkpoint ready in %.1f s: %s", time.monotonic() - started, out)
    return out


def _build_in_reference_venv(out: Path, spec: dict) -> None:
    """The same build, run by the reference venv (transformers 5 stack: qwen_tts does not import here)."""
    started = time.monotonic()
    reference_env.run_reference(["-m", "s2s.checkpoint_builder.build", "--out", str(out), "--size", spec["size"],
                                 "--kind", spec["kind"], "--seed", str(spec["seed"]), "--dtype", spec["dtype"]])
    if _read_marker(out) != spec:
        raise RuntimeError(f"the reference venv did not build {out} as asked ({spec})")
    log.info("synthetic checkpoint built in the reference venv in %.1f s: %s", time.monotonic() - started, out)


def cached_checkpoint(size: str = "tiny", kind: str = "custom_voice", seed: int = 0,
                      dtype: str | torch.dtype | None = None) -> Path:
    """``build_checkpoint`` into the shared cache (``$S2S_CACHE_DIR/checkpoints/<size>-<kind>-seed<seed>-<dtype>``),
    so tests and benchmarks build each spec once per machine."""
    name = f"{size}-{kind}-seed{seed}-{str(resolve_dtype(size, dtype)).removeprefix('torch.')}"
    return build_checkpoint(cache_root() / "checkpoints" / name, size=size, kind=kind, seed=seed, dtype=dtype)


def _write_folder(folder: Path, size: str, kind: str, seed: int, dtype: torch.dtype) -> None:
    (folder / "speech_tokenizer").mkdir(parents=True)
    config = main_config(size, kind)
    codec_config = speech_tokenizer_config(size)
    _write_json(folder / "config.json", config)
    _write_json(folder / "generation_config.json", GENERATION_CONFIG)
    _write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    _write_json(folder / "speech_tokenizer" / "config.json", codec_config)
    _write_json(folder / "speech_tokenizer" / "preprocessor_config.json", SPEECH_PREPROCESSOR_CONFIG)
    write_tokenizer_files(folder)

    torch.manual_seed(seed)
    model = build_main_model(config, dtype)
    _save_safetensors(model, folder / "model.safetensors")
    del model
    torch.manual_seed(seed + 1)
    _save_safetensors(build_speech_tokenizer(codec_config), folder / "speech_tokenizer" / "model.safetensors")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=SIZES, default="tiny", help="model size (default: tiny)")
    parser.add_argument("--kind", choices=KINDS, default="custom_voice", help="model kind (default: custom_voice)")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="weight dtype of the main model (default: bf16, fp32 for tiny)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``s2s build-checkpoint`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "build-checkpoint",
        help="write a random-weight Qwen3-TTS checkpoint (for tests and benchmarks without downloads)",
        description=__doc__.split("\n\n")[0],
    )
    _add_arguments(parser)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``build-checkpoint``: build, then print where the checkpoint is."""
    try:
        path = build_checkpoint(args.out, size=args.size, kind=args.kind, seed=args.seed, dtype=args.dtype)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}")
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    import patches

    patches.apply()  # a program's entry: qwen_tts imports torchaudio
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _parser = argparse.ArgumentParser(prog="python -m s2s.checkpoint_builder.build",
                                      description=__doc__.split("\n\n")[0])
    _add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
