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


@pytest.mark.parametrize("name", ["jetson-orin.toml", "desktop-gpu.toml", "cpu.toml"])
def test_device_files_hold_only_what_differs_from_the_defaults(name):
    import tomllib

    defaults = as_dict(Config())
    for section, values in tomllib.loads((CONFIGS / name).read_text()).items():
        same = [key for key, value in values.items() if defaults[section][key] == value]
        assert not same, f"{name} [{section}] repeats defaults: {same}; keep only what differs"


def test_engine_defaults_have_one_home():
    """The [tts] chunk and sampling defaults are the engine's own (s2s.qwen3_tts.options)."""
    from s2s.qwen3_tts import options

    tts = Config().tts
    assert (tts.chunk_size, tts.first_chunk_size) == (options.CHUNK_SIZE, options.FIRST_CHUNK_SIZE)
    assert tts.sampling() == options.SamplingParams()


@pytest.mark.parametrize("override", ["tts.temperature=0", "tts.top_p=1.5", "tts.top_k=-1", "tts.temperature=nan",
                                      "tts.repetition_penalty=inf", "tts.seed=-2"])
def test_bad_sampling_values_name_the_key(override):
    key = override.split("=")[0].split(".")[1]
    with pytest.raises(ValueError, match=f"tts.*{key}"):
        load_config([], [override])


def test_files_merge_in_order_and_overrides_win(tmp_path):
    first = write(tmp_path, "[tts]\nbackend = 'piper'\ntemperature = 0.5\n", "a.toml")
    second = write(tmp_path, "[tts]\ntemperature = 0.7\n[llm]\nmax_new_tokens = 10\n", "b.toml")
    config = load_config([first, second], ["llm.max_new_tokens=20", "pipeline.duplex=full"])
    assert config.tts.backend == "piper"
    assert config.tts.temperature == 0.7
    assert config.llm.max_new_tokens == 20
    assert config.pipeline.duplex == "full"
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
    with pytest.raises(ValueError, match=r"\[stt\] device = 'tpu' is not allowed; use one of: 'auto', 'cpu', 'cuda'"):
        load_config([], ["stt.device=tpu"])


def test_backend_names_are_checked_by_the_registry_not_the_config():
    """Any name loads (a plugin may provide it); Pipeline.from_config refuses one that is not installed."""
    assert load_config([], ["tts.backend=espeak"]).tts.backend == "espeak"


def test_out_of_range_names_the_key_and_bounds():
    with pytest.raises(ValueError, match=r"\[vad\] threshold = 1\.5 is out of range; it must be >= 0\.0 and <= 1\.0"):
        load_config([], ["vad.threshold=1.5"])
    with pytest.raises(ValueError, match=r"\[pipeline\] queue_size = 0"):
        load_config([], ["pipeline.queue_size=0"])


def test_wrong_types_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"\[pipeline\] queue_size = 'many' is not a valid int"):
        load_config([], ["pipeline.queue_size=many"])
    with pytest.raises(ValueError, match=r"\[audio_in\] realtime_file = 'maybe' is not a valid bool"):
        load_config([], ["audio_in.realtime_file=maybe"])
    with pytest.raises(ValueError, match=r"\[llm\] max_new_tokens = 'ten' is not a valid int"):
        load_config([write(tmp_path, "[llm]\nmax_new_tokens = 'ten'\n")])
    with pytest.raises(ValueError, match=r"\[llm\] max_new_tokens = \[1\] must be of type int, not list"):
        load_config([write(tmp_path, "[llm]\nmax_new_tokens = [1]\n")])
    with pytest.raises(ValueError, match=r"\[audio_in\] realtime_file = 1 must be of type bool"):
        load_config([write(tmp_path, "[audio_in]\nrealtime_file = 1\n")])


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


@pytest.mark.parametrize("override", ["vad.threshold=nan", "pipeline.poll_s=nan", "pipeline.max_turn_s=inf",
                                      "vad.max_utterance_s=-inf", "llm.temperature=NaN"])
def test_nan_and_inf_are_refused_with_the_key(override):
    section, key = override.split("=")[0].split(".")
    with pytest.raises(ValueError, match=rf"\[{section}\] {key} = .* must be a finite number"):
        load_config([], [override])


def test_nan_in_a_toml_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[vad\] threshold = nan must be a finite number"):
        load_config([write(tmp_path, "[vad]\nthreshold = nan\n")])


@pytest.mark.parametrize("override", ["llm.max_history_turns=100000000000000000000", "llm.max_history_turns=5000",
                                      "pipeline.queue_size=99999999999", "tts.max_text_chars=10000000000"])
def test_huge_integers_are_refused_with_the_key(override):
    section, key = override.split("=")[0].split(".")
    with pytest.raises(ValueError, match=rf"\[{section}\] {key} = .* out of range"):
        load_config([], [override])


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[llm]\nsystem_prompt = 'caf\u00e9'\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"config file {path} is not UTF-8 text"):
        load_config([path])


def test_server_section_defaults_to_loopback_and_checks_its_values():
    server = load_config().server
    assert (server.host, server.port, server.wyoming_tts_port, server.wyoming_stt_port) == ("127.0.0.1", 8000, 10200,
                                                                                           10300)
    assert load_config([], ["server.voice_map= Alloy=vivian , onyx=ryan"]).server.voices() == {"alloy": "vivian",
                                                                                                "onyx": "ryan"}
    for override, message in (("server.host= ", "host"), ("server.port=0", "port"), ("server.voice_map=alloy",
                              "voice_map entry"), ("server.max_body_mb=nan", "finite")):
        with pytest.raises(ValueError, match=message):
            load_config([], [override])
