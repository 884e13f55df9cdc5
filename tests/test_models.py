"""Model discovery: explicit paths, the models directory, embedded fallbacks, errors and the download list."""

import json
import logging

import pytest

from s2s import models
from s2s.config import Config, LLMConfig, STTConfig


@pytest.fixture(autouse=True)
def models_dir(tmp_path, monkeypatch):
    """An empty models directory; every warning may be logged again."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("S2S_MODELS_DIR", str(folder))
    monkeypatch.setattr(models, "_warned", set())
    return folder


def make_qwen3_checkpoint(folder, model_type="qwen3_tts"):
    (folder / "speech_tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_models_dir_follows_the_environment(models_dir, monkeypatch):
    assert models.models_dir() == models_dir
    monkeypatch.delenv("S2S_MODELS_DIR")
    assert models.models_dir().name == "models" and (models.models_dir().parent / "s2s").is_dir()


def test_whisper_prefers_the_downloaded_model_then_warns_once_for_the_embedded(models_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="s2s.models"):
        first = models.whisper_model(STTConfig())
        models.whisper_model(STTConfig())
    assert first == str(models.embedded_whisper())
    (warning,) = caplog.records
    assert "tiny.en" in warning.getMessage() and "./setup.sh" in warning.getMessage()
    downloaded = models_dir / models.WHISPER_DIR
    downloaded.mkdir()
    (downloaded / "model.bin").write_bytes(b"")
    assert models.whisper_model(STTConfig()) == str(downloaded)


def test_whisper_explicit_values(tmp_path):
    own = tmp_path / "my-whisper"
    own.mkdir()
    (own / "model.bin").write_bytes(b"")
    assert models.whisper_model(STTConfig(model=str(own))) == str(own)
    assert models.whisper_model(STTConfig(model="small.en")) == "small.en"
    with pytest.raises(FileNotFoundError, match=r"set stt.model to an existing CTranslate2 model directory"):
        models.whisper_model(STTConfig(model=str(tmp_path / "missing")))


def test_llm_default_falls_back_to_the_embedded_gguf(models_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="s2s.models"):
        folder, gguf = models.llm_model(LLMConfig())
    assert gguf == models.SMOLLM2_GGUF and (models.Path(folder) / gguf).is_file()
    assert "SmolLM2" in caplog.text and models.DEFAULT_MODELS[models.LLM_DIR] in caplog.text
    downloaded = models_dir / models.LLM_DIR
    downloaded.mkdir()
    (downloaded / "config.json").write_text("{}")
    assert models.llm_model(LLMConfig()) == (str(downloaded), None)


def test_llm_explicit_values(tmp_path):
    gguf = tmp_path / "ggufs" / "m.Q4.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    assert models.llm_model(LLMConfig(model=str(gguf))) == (str(gguf.parent), "m.Q4.gguf")
    assert models.llm_model(LLMConfig(model=str(gguf.parent))) == (str(gguf.parent), "m.Q4.gguf")
    (gguf.parent / "other.gguf").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="several GGUF files"):
        models.llm_model(LLMConfig(model=str(gguf.parent)))
    assert models.llm_model(LLMConfig(model="Qwen/Qwen2.5-0.5B-Instruct")) == ("Qwen/Qwen2.5-0.5B-Instruct", None)
    with pytest.raises(FileNotFoundError, match="llm.model"):
        models.llm_model(LLMConfig(model=str(tmp_path / "nowhere" / "model")))


def test_qwen3_checkpoint(models_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="s2s.models"):
        assert models.qwen3_checkpoint("") is None
    assert models.DEFAULT_MODELS[models.QWEN3_TTS_DIR] in caplog.text
    default = make_qwen3_checkpoint(models_dir / models.QWEN3_TTS_DIR)
    assert models.qwen3_checkpoint("") == default
    wrong = make_qwen3_checkpoint(tmp_path / "wrong", model_type="llama")
    with pytest.raises(FileNotFoundError, match="model_type 'llama'"):
        models.qwen3_checkpoint(str(wrong))
    with pytest.raises(FileNotFoundError, match="tts.model"):
        models.qwen3_checkpoint(str(tmp_path / "absent"))


def test_piper_voice(tmp_path):
    assert models.piper_voice("") == models.embedded_piper() and models.piper_voice("").suffix == ".onnx"
    with pytest.raises(FileNotFoundError, match="tts.piper_voice"):
        models.piper_voice(str(tmp_path / "voice.onnx"))


def test_describe_models_reports_without_raising(models_dir, tmp_path, caplog):
    config = Config()
    with caplog.at_level(logging.WARNING):
        rows = models.describe_models(config)
    assert caplog.records == []
    assert [(stage, status) for stage, _, status in rows] == [
        ("vad", models.EMBEDDED), ("stt", models.EMBEDDED), ("llm", models.EMBEDDED), ("tts", models.EMBEDDED)]
    make_qwen3_checkpoint(models_dir / models.QWEN3_TTS_DIR)
    config.stt.model = str(tmp_path / "missing")
    rows = {stage: (what, status) for stage, what, status in models.describe_models(config)}
    assert rows["tts"] == (f"Qwen3-TTS {models_dir / models.QWEN3_TTS_DIR}", models.FOUND)
    assert rows["stt"][1] == models.MISSING and "stt.model" in rows["stt"][0]


def test_list_downloads(capsys):
    assert models.main(["--list-downloads"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{d} {r}" for d, r in models.DEFAULT_MODELS.items()]
    assert "faster-whisper-base.en Systran/faster-whisper-base.en" in lines
