"""Voice names: what a request's `voice` resolves to, clone voice names that cannot reach another path, and the
store writing each voice whole and reading it back."""

from __future__ import annotations

import json

import pytest

from s2s.server.voices import OPENAI_VOICES, VoiceCatalog, VoiceStore, check_name
from s2s.tts_engine import VoiceRequest


class FakeVoiceEngine:
    """A VoiceEngine whose clone prompts are strings saved as text files."""

    name = "fake"
    sample_rate = 24000
    takes_instructions = True
    can_clone = True

    def warmup(self):
        pass

    def speakers(self):
        return ["vivian", "ryan"]

    def languages(self):
        return ["auto", "english"]

    def make_clone(self, samples, rate, transcript=""):
        return f"clone of {transcript}"

    def save_clone(self, clone, path):
        path.write_text(clone)

    def load_clone(self, path):
        return path.read_text()

    def synthesize(self, text, cancel=None, voice=None):
        return iter(())


class OneVoiceEngine:
    name = "piper"
    sample_rate = 22050

    def warmup(self):
        pass

    def synthesize(self, text, cancel=None):
        return iter(())


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "..", ".hidden", "", "x" * 65, "na me", "voice.pt", "ü"])
def test_names_that_could_reach_another_path_are_refused(bad):
    with pytest.raises(ValueError, match="not allowed"):
        check_name(bad)


def test_names_are_lower_case():
    assert check_name(" My-Voice_2 ") == "my-voice_2"


def test_store_saves_whole_lists_loads_and_deletes(tmp_path):
    engine, store = FakeVoiceEngine(), VoiceStore(tmp_path / "voices")
    assert store.list() == []
    saved = store.save("Mine", engine, "clone of hi", "hi", "en", "ckpt")
    assert saved.name == "mine" and sorted(p.name for p in (tmp_path / "voices").iterdir()) == ["mine.json", "mine.pt"]
    assert json.loads((tmp_path / "voices" / "mine.json").read_text())["transcript"] == "hi"
    fresh = VoiceStore(tmp_path / "voices")  # a restart
    assert [v.name for v in fresh.list()] == ["mine"] and fresh.load("mine", engine) == "clone of hi"
    (tmp_path / "voices" / "orphan.pt").write_text("no metadata: not listed")
    (tmp_path / "voices" / "broken.json").write_text("{")
    (tmp_path / "voices" / "broken.pt").write_text("x")
    assert [v.name for v in fresh.list()] == ["mine"]
    assert fresh.delete("mine") and not fresh.delete("mine")
    with pytest.raises(KeyError):
        fresh.load("mine", engine)


def test_a_failed_save_leaves_nothing(tmp_path):
    class Failing(FakeVoiceEngine):
        def save_clone(self, clone, path):
            path.write_text("half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        VoiceStore(tmp_path).save("mine", Failing(), "c", "", "", "")
    assert list(tmp_path.iterdir()) == []


def test_catalog_resolves_speakers_clones_and_openai_names(tmp_path):
    engine = FakeVoiceEngine()
    store = VoiceStore(tmp_path)
    store.save("mine", engine, "clone of hi", "hi", "", "")
    catalog = VoiceCatalog(engine, store, {"alloy": "ryan"})
    assert catalog.resolve("default") is None and catalog.resolve("echo") is None
    assert catalog.resolve("Vivian") == VoiceRequest(speaker="vivian")
    assert catalog.resolve("alloy") == VoiceRequest(speaker="ryan")
    assert catalog.resolve("mine", "calm", "en") == VoiceRequest("", "calm", "en", "clone of hi")
    with pytest.raises(ValueError, match="default, vivian, ryan, mine"):
        catalog.resolve("nobody")
    assert catalog.reserved("ryan") and catalog.reserved("alloy") and not catalog.reserved("mine")
    assert [row["type"] for row in catalog.listing()] == ["configured", "speaker", "speaker", "audio_sample"]


def test_a_single_voice_engine_takes_only_the_default_and_openai_names(tmp_path):
    catalog = VoiceCatalog(OneVoiceEngine(), VoiceStore(tmp_path), {})
    assert all(catalog.resolve(name) is None for name in ("default", "piper", *OPENAI_VOICES))
    with pytest.raises(ValueError):
        catalog.resolve("vivian")
    assert not catalog.can_clone and catalog.names() == ["default"]
