"""The engine's own checkpoint reader (s2s/qwen3_tts/loader.py and its parts): the tokenizer rule that matches the
reference's pre-tokenizer, and errors that name a bad checkpoint. Exactness against the official qwen-tts (weights,
tokenizer, codec, speaker encoder) is proven end to end by test_qwen3_parity.py."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from s2s.checkpoint_builder.build import build_checkpoint
from s2s.qwen3_tts.loader import load_checkpoint, read_config
from s2s.qwen3_tts.text_tokenizer import load_text_tokenizer, reference_replaces_pattern


@pytest.mark.parametrize(("config", "replaced"), [
    ({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}, True),  # the released checkpoints
    ({"model_type": "qwen3_tts"}, True),
    ({"model_type": "qwen3_tts", "transformers_version": "4.57.2"}, False),
    ({"model_type": "mistral", "transformers_version": "4.50.0"}, True),
    ({"model_type": "qwen3_tts", "transformers_version": "5.0.0"}, False),
])
def test_the_reference_pattern_rule_follows_transformers_4_57_3(config, replaced):
    assert reference_replaces_pattern(config) is replaced


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("loader") / "cv", size="tiny", kind="custom_voice")


def test_mixed_case_words_split_by_the_reference_pattern(tiny, tmp_path):
    patched = load_text_tokenizer(tiny)
    folder = tmp_path / "plain"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, transformers_version="5.0.0")))
    plain = load_text_tokenizer(folder)
    text = "HelloWorld iPhone McDonald's"
    assert len(patched(text)["input_ids"]) == 7 and len(plain(text)["input_ids"]) == 5
    assert patched("Hello world.")["input_ids"] == plain("Hello world.")["input_ids"] == [9707, 1879, 13]


def test_a_folder_that_is_not_a_qwen3_tts_checkpoint_is_named(tiny, tmp_path):
    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(ValueError, match="is not a Qwen3-TTS 12 Hz model"):
        read_config(folder)
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["talker.codec_head.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="has no talker.codec_head.weight"):
        load_checkpoint(broken, torch.device("cpu"), torch.float32)
