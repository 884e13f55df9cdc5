"""s2s.config: defaults, TOML merge, overrides, and errors that name the key and what is allowed."""

import dataclasses
from pathlib import Path

import pytest

from s2s.config import Config, as_dict, load_config, parse_override

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_toml_equals_the_dataclass_defaults():
    """configs/default.toml lists every key of every section, each with the dataclass default."""
    import tomllib

    listed = tomllib.loads((CONFIGS / "default.toml").read_text())
    defaults = as_dict(Config())
    assert listed.keys() == defaults.keys()
    for section, values in defaults.items():
        assert listed[section] == values, (
            f"[{section}] in configs/default.toml differs from s2s/config.py; "
            "regenerate it: python -m s2s.default_toml > configs/default.toml"
        )


def test_default_toml_is_the_rendered_defaults():
    from s2s.default_toml import render

    assert (CONFIGS / "default.toml").read_text() == render(), (
        "regenerate it: python -m s2s.default_toml > configs/default.toml"
    )


@pytest.mark.parametrize("name", ["jetson-orin.toml", "desktop-gpu.toml", "cpu.toml"])
def test_device_files_load_over_the_defaults(name):
    config = load_config([CONFIGS / "default.toml", CONFIGS / name])
    assert config != Config(), f"{name} changes nothing"


def test_files_merge_in_order_and_overrides_win(tmp_path):
    first = write(tmp_path, "[tts]\nbackend = 'piper'\ntemperature = 0.5\n", "a.toml")
    second = write(tmp_path, "[tts]\ntemperature = 0.7\n[llm]\nmax_new_tokens = 10\n", "b.toml")
    config = load_config([first, second], ["llm.max_new_tokens=20", "pipeline.half_duplex=false"])
    assert config.tts.backend == "piper"
    assert config.tts.temperature == 0.7
    assert config.llm.max_new_tokens == 20
    assert config.pipeline.half_duplex is False
    assert config.vad == Config().vad  # untouched sections keep their defaults


def test_override_values_are_typed():
    config = load_config([], ["pipeline.queue_size=8", "vad.threshold=0.25", "audio_in.device=USB Mic"])
    assert config.pipeline.queue_size == 8 and isinstance(config.pipeline.queue_size, int)
    assert config.vad.threshold == 0.25
    assert config.audio_in.device == "USB Mic"


def test_int_in_a_float_field_is_accepted(tmp_path):
    config = load_config([write(tmp_path, "[pipeline]\nmax_turn_s = 20\n")])
    assert config.pipeline.max_turn_s == 20.0 and isinstance(config.pipeline.max_turn_s, float)


def test_unknown_section_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown section \[speaker\].*audio_out"):
        load_config([write(tmp_path, "[speaker]\ndevice = 'x'\n")])


def test_unknown_key_names_the_section_keys():
    with pytest.raises(ValueError, match=r"unknown key tts\.voice; keys of \[tts\]:.*backend"):
        load_config([], ["tts.voice=joe"])


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"\[tts\] backend = 'espeak' is not allowed; use one of: 'auto', 'qwen3'"):
        load_config([], ["tts.backend=espeak"])


def test_out_of_range_names_the_key_and_bounds():
    with pytest.raises(ValueError, match=r"\[vad\] threshold = 1\.5 is out of range; it must be >= 0\.0 and <= 1\.0"):
        load_config([], ["vad.threshold=1.5"])
    with pytest.raises(ValueError, match=r"\[pipeline\] queue_size = 0"):
        load_config([], ["pipeline.queue_size=0"])


def test_wrong_types_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"\[pipeline\] queue_size = 'many' is not a valid int"):
        load_config([], ["pipeline.queue_size=many"])
    with pytest.raises(ValueError, match=r"\[pipeline\] half_duplex = 'maybe' is not a valid bool"):
        load_config([], ["pipeline.half_duplex=maybe"])
    with pytest.raises(ValueError, match=r"\[llm\] max_new_tokens = 'ten' is not a valid int"):
        load_config([write(tmp_path, "[llm]\nmax_new_tokens = 'ten'\n")])
    with pytest.raises(ValueError, match=r"\[llm\] max_new_tokens = \[1\] must be of type int, not list"):
        load_config([write(tmp_path, "[llm]\nmax_new_tokens = [1]\n")])
    with pytest.raises(ValueError, match=r"\[pipeline\] half_duplex = 1 must be of type bool"):
        load_config([write(tmp_path, "[pipeline]\nhalf_duplex = 1\n")])


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override("tts.backend")
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override("backend=piper")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_config([tmp_path / "nope.toml"])
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config([write(tmp_path, "[tts\nbackend=")])


def test_every_section_validates_its_defaults():
    config = Config()
    config.validate()
    for section in dataclasses.fields(config):
        getattr(config, section.name).validate()
