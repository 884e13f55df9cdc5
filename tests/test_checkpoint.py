"""Synthetic Qwen3-TTS checkpoints: exact released configs, the exact Qwen vocabulary, and tiny folders that the
reference ``qwen_tts.Qwen3TTSModel`` loads offline and generates from."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from s2s.checkpoint_builder import build as checkpoint
from s2s.checkpoint_builder.build import MARKER, build_checkpoint, main_config, speech_tokenizer_config
from s2s.checkpoint_builder.tokenizer_files import SPECIAL_TOKENS, write_tokenizer_files

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {kind: build_checkpoint(root / kind, size="tiny", kind=kind) for kind in checkpoint.KINDS}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer_files(folder)
    return folder


@pytest.mark.parametrize("fast", [True, False])
def test_tokenizer_has_the_real_qwen_ids(tokenizer_dir, fast):
    from transformers import Qwen2Tokenizer, Qwen2TokenizerFast

    tokenizer = (Qwen2TokenizerFast if fast else Qwen2Tokenizer).from_pretrained(tokenizer_dir)
    assert tokenizer("<|im_start|>assistant\n")["input_ids"] == [151644, 77091, 198]
    assert tokenizer("<|im_end|>\n<tts_pad><tts_text_bos><tts_text_eod>")["input_ids"] == [
        151645, 198, 151671, 151672, 151673]
    assert tokenizer("Hello world.")["input_ids"] == [9707, 1879, 13]
    for token_id, text, _ in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(text) == token_id
    assert len(tokenizer) == 151676


def test_tokenizer_matches_tiktoken_on_mixed_text(tokenizer_dir):
    tiktoken = pytest.importorskip("tiktoken")
    from transformers import Qwen2TokenizerFast

    from s2s.checkpoint_builder.tokenizer_files import find_tiktoken_file, read_ranks

    # Qwen's pre-tokenizer pattern (from the Qwen tokenizer docs): contractions, letters, single digits, punctuation
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
    reference = tiktoken.Encoding("qwen", pat_str=pattern, mergeable_ranks=read_ranks(find_tiktoken_file()),
                                  special_tokens={})
    tokenizer = Qwen2TokenizerFast.from_pretrained(tokenizer_dir)
    for text in ["It's 12:30 — the café's naïve crème brûlée costs €4.50!", "你好，世界！今天天气怎么样？",
                 "def f(x):\n\treturn {'a': [1, 2]}  # ok\n\n", "Emoji 🙂👍 and   spaces   "]:
        assert tokenizer(text)["input_ids"] == reference.encode(text), text


def test_full_size_configs_are_the_released_ones():
    base = main_config("0.6b", "base")
    talker = base["talker_config"]
    assert (talker["hidden_size"], talker["intermediate_size"], talker["num_hidden_layers"]) == (1024, 3072, 28)
    assert (talker["num_attention_heads"], talker["num_key_value_heads"], talker["head_dim"]) == (16, 8, 128)
    assert (talker["vocab_size"], talker["text_vocab_size"], talker["text_hidden_size"]) == (3072, 151936, 2048)
    assert talker["num_code_groups"] == 16 and talker["rope_theta"] == 1000000 and talker["rms_norm_eps"] == 1e-6
    assert talker["rope_scaling"]["mrope_section"] == [24, 20, 20] and talker["rope_scaling"]["interleaved"]
    assert talker["position_id_per_seconds"] == 13 and talker["max_position_embeddings"] == 32768
    assert (talker["codec_pad_id"], talker["codec_bos_id"], talker["codec_eos_token_id"]) == (2148, 2149, 2150)
    assert (talker["codec_think_id"], talker["codec_nothink_id"]) == (2154, 2155)
    assert (talker["codec_think_bos_id"], talker["codec_think_eos_id"]) == (2156, 2157)
    assert talker["codec_language_id"]["english"] == 2050 and "sichuan_dialect" not in talker["codec_language_id"]
    predictor = talker["code_predictor_config"]
    assert (predictor["hidden_size"], predictor["intermediate_size"], predictor["num_hidden_layers"]) == (1024, 3072, 5)
    assert (predictor["vocab_size"], predictor["max_position_embeddings"], predictor["num_code_groups"]) == (
        2048, 65536, 16)
    assert base["speaker_encoder_config"] == {"enc_dim": 1024, "sample_rate": 24000}
    assert (base["tts_model_size"], base["tts_model_type"], base["assistant_token_id"]) == ("0b6", "base", 77091)
    assert (base["im_start_token_id"], base["tts_pad_token_id"], base["tts_eos_token_id"]) == (151644, 151671, 151673)

    voice = main_config("1.7b", "custom_voice")
    assert (voice["tts_model_size"], voice["talker_config"]["hidden_size"]) == ("1b7", 2048)
    assert voice["talker_config"]["intermediate_size"] == 6144 and "speaker_encoder_config" not in voice
    assert voice["talker_config"]["spk_id"]["serena"] == 3066 and voice["talker_config"]["spk_id"]["dylan"] == 2878
    assert voice["talker_config"]["spk_is_dialect"]["eric"] == "sichuan_dialect"
    assert set(voice["talker_config"]["spk_is_dialect"]) == set(voice["talker_config"]["spk_id"])
    assert voice["talker_config"]["codec_language_id"]["beijing_dialect"] == 2074
    assert main_config("1.7b", "base")["speaker_encoder_config"]["enc_dim"] == 2048
    assert main_config("1.7b", "voice_design")["talker_config"]["spk_id"] == {}

    decoder = speech_tokenizer_config("1.7b")["decoder_config"]
    assert (decoder["num_quantizers"], decoder["codebook_size"], decoder["sliding_window"]) == (16, 2048, 72)
    assert (decoder["num_hidden_layers"], decoder["hidden_size"], decoder["latent_dim"]) == (8, 512, 1024)
    assert decoder["upsample_rates"] == [8, 5, 4, 3] and decoder["upsampling_ratios"] == [2, 2]


def test_voice_design_is_refused_at_0_6b():
    with pytest.raises(ValueError, match="only released at 1.7B"):
        main_config("0.6b", "voice_design")
    with pytest.raises(ValueError, match="size 'big'"):
        build_checkpoint("/nonexistent", size="big")


@pytest.mark.reference
@pytest.mark.parametrize(("size", "kind", "millions"), [("0.6b", "base", 914.6), ("0.6b", "custom_voice", 905.7),
                                                        ("1.7b", "base", 1928.7), ("1.7b", "voice_design", 1916.7)])
def test_full_size_models_have_the_released_parameter_counts(size, kind, millions):
    # Built on the meta device: shapes only, nothing materialised.
    model = checkpoint.build_main_model(main_config(size, kind), torch.bfloat16, device="meta")
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)
    codec = checkpoint.build_speech_tokenizer(speech_tokenizer_config(size), device="meta")
    assert sum(p.numel() for p in codec.decoder.parameters()) / 1e6 == pytest.approx(114.3, abs=0.1)


@pytest.mark.reference
@pytest.mark.parametrize("kind", checkpoint.KINDS)
def test_tiny_checkpoint_loads_and_generates_with_the_reference(tiny_dirs, kind):
    from qwen_tts import Qwen3TTSModel

    tts = Qwen3TTSModel.from_pretrained(str(tiny_dirs[kind]), device_map="cpu", dtype=torch.float32,
                                        attn_implementation="sdpa")
    assert tts.model.config.talker_config.num_code_groups == 16
    assert tts.model.speech_tokenizer.model.decoder.config.num_quantizers == 16
    greedy = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=4)
    if kind == "custom_voice":
        assert "dylan" in tts.model.get_supported_speakers()
        wavs, rate = tts.generate_custom_voice(text="Hello world.", speaker="dylan", language="auto", **greedy)
    elif kind == "voice_design":
        wavs, rate = tts.generate_voice_design(text="Hello world.", instruct="A calm voice.", language="English",
                                               **greedy)
    else:
        tone = (0.3 * np.sin(np.arange(24000) * 2 * np.pi * 220 / 24000)).astype(np.float32)
        wavs, rate = tts.generate_voice_clone(text="Hello world.", language="English", ref_audio=(tone, 24000),
                                              ref_text="A tone.", **greedy)
    assert rate == 24000
    assert wavs[0].shape == (3 * 1920,)  # max_new_tokens=4 gives 3 frames of 1920 samples
    assert np.isfinite(wavs[0]).all() and 0.001 < float(np.std(wavs[0])) < 1.0


def test_the_engines_codec_decoder_has_the_released_layout_and_size():
    from s2s.qwen3_tts.codec_model import CodecDecoder, decoder_config

    with torch.device("meta"):
        decoder = CodecDecoder(decoder_config(speech_tokenizer_config("1.7b")["decoder_config"]))
    assert sum(p.numel() for p in decoder.parameters()) / 1e6 == pytest.approx(114.3, abs=0.1)
    assert decoder.total_upsample == 1920
    assert [len(p) for p in (decoder.upsample, decoder.decoder)] == [2, 7]  # 2 upsampling stages; conv, 4 blocks, act, conv


def test_build_is_idempotent_and_never_overwrites_foreign_folders(tmp_path):
    folder = build_checkpoint(tmp_path / "ck", size="tiny", kind="voice_design", seed=3)
    weights = folder / "model.safetensors"
    first = weights.stat().st_mtime_ns
    assert build_checkpoint(folder, size="tiny", kind="voice_design", seed=3) == folder
    assert weights.stat().st_mtime_ns == first
    assert json.loads((folder / MARKER).read_text())["seed"] == 3
    build_checkpoint(folder, size="tiny", kind="voice_design", seed=4)
    assert json.loads((folder / MARKER).read_text())["seed"] == 4

    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by build_checkpoint"):
        build_checkpoint(foreign, size="tiny")


def test_cli_builds_a_checkpoint(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="s2s")
    checkpoint.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["build-checkpoint", "--size", "tiny", "--kind", "base", "--out", str(tmp_path / "b")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["tts_model_type"] == "base"
    bad = parser.parse_args(["build-checkpoint", "--size", "0.6b", "--kind", "voice_design", "--out", str(tmp_path)])
    assert args.func(bad) == 2
    assert "only released at 1.7B" in capsys.readouterr().out


def test_cached_checkpoint_builds_once_under_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_CACHE_DIR", str(tmp_path))
    folder = checkpoint.cached_checkpoint("tiny", "voice_design", seed=1)
    assert folder == tmp_path / "checkpoints" / "tiny-voice_design-seed1-float32"
    assert (tmp_path / "qwen-vocab-v1" / "merges.txt").is_file()
    first = (folder / "model.safetensors").stat().st_mtime_ns
    assert checkpoint.cached_checkpoint("tiny", "voice_design", seed=1) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == first
