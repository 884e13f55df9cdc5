"""The engine's eager path against the reference ``qwen_tts`` generate, on tiny random checkpoints (CPU, fp32).

Exact codec tokens (greedy talker and predictor, same max_new_tokens, N -> N-1 frames) for all three model kinds
and their prompt variants, the same waveform, EOS handling, and reproducible sampling. Each tiny model runs in
well under a second per generation; the whole file takes about half a minute on two CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2s.qwen3_tts import Qwen3TTS, SamplingParams, VoicePrompt
from s2s.checkpoint_builder.build import build_checkpoint

N_TOKENS = 10  # -> 9 frames
TEXT = "Hello there, how are you today?"
GREEDY_REF = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=N_TOKENS)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3-tiny")
    return {kind: build_checkpoint(root / kind, size="tiny", kind=kind) for kind in ("custom_voice", "voice_design", "base")}


def _load_reference(path):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(path), device_map="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def pair(checkpoints):
    """(reference, engine) per kind, loaded once per module."""
    torch.set_num_threads(2)
    loaded = {}

    def get(kind):
        if kind not in loaded:
            path = checkpoints[kind]
            loaded[kind] = (_load_reference(path), Qwen3TTS.from_pretrained(path, device="cpu", dtype=torch.float32))
        return loaded[kind]

    return get


def _reference(ref, method: str, *args, **kwargs) -> tuple[torch.Tensor, np.ndarray]:
    """Call the reference's public ``generate_*`` and return (the codes its model.generate made [T, 16], wav)."""
    captured = []
    generate = ref.model.generate

    def spy(*a, **k):
        out = generate(*a, **k)
        captured.append(out[0][0].cpu())
        return out

    ref.model.generate = spy
    try:
        wavs, sr = getattr(ref, method)(*args, **kwargs)
    finally:
        del ref.model.generate  # back to the class method
    assert sr == 24000 and len(captured) == 1
    return captured[0], wavs[0]


@pytest.mark.parametrize("speaker,language,non_streaming_mode", [
    ("ryan", "auto", True),        # language auto: nothink tags
    ("eric", "auto", True),        # dialect speaker: sichuan dialect id replaces auto
    ("dylan", "chinese", True),    # dialect speaker with an explicit chinese
    ("serena", "english", False),  # explicit language, streaming text input (trailing text rows)
])
def test_custom_voice_matches_reference(pair, speaker, language, non_streaming_mode):
    ref, eng = pair("custom_voice")
    expected, wav = _reference(ref, "generate_custom_voice", TEXT, speaker=speaker, language=language,
                               non_streaming_mode=non_streaming_mode, **GREEDY_REF)
    prompt = eng.prompt_custom_voice(TEXT, speaker, language, non_streaming_mode=non_streaming_mode)
    codes = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=N_TOKENS)
    assert codes.shape == (N_TOKENS - 1, 16)
    assert torch.equal(codes, expected)
    ours = eng.decode(codes)
    assert ours.dtype == np.float32 and ours.shape == wav.shape == ((N_TOKENS - 1) * 1920,)
    assert np.allclose(ours, wav, atol=1e-5)


def test_custom_voice_instruct_matches_reference(pair):
    ref, eng = pair("custom_voice")  # tiny is not "0b6": the instruct is used, as for 1.7B
    instruct = "Speak slowly and calmly."
    expected, wav = _reference(ref, "generate_custom_voice", TEXT, speaker="vivian", language="english",
                               instruct=instruct, **GREEDY_REF)
    codes = eng.generate_codes(eng.prompt_custom_voice(TEXT, "vivian", "english", instruct=instruct),
                               SamplingParams.greedy(), max_new_tokens=N_TOKENS)
    assert torch.equal(codes, expected)
    assert np.allclose(eng.decode(codes), wav, atol=1e-5)


def test_voice_design_matches_reference(pair):
    ref, eng = pair("voice_design")
    instruct = "A warm, low female voice, speaking cheerfully."
    expected, wav = _reference(ref, "generate_voice_design", TEXT, instruct=instruct, language="english", **GREEDY_REF)
    codes = eng.generate_codes(eng.prompt_voice_design(TEXT, instruct, "english"), SamplingParams.greedy(),
                               max_new_tokens=N_TOKENS)
    assert torch.equal(codes, expected)
    assert np.allclose(eng.decode(codes), wav, atol=1e-5)


def _reference_audio() -> tuple[np.ndarray, int]:
    """1.2 s of a gliding tone with noise at 16 kHz (exercises the resampling to 24 kHz)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * 16000)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) + 0.02 * rng.standard_normal(t.shape)
    return wav.astype(np.float32), 16000


@pytest.mark.parametrize("xvec_only", [False, True], ids=["icl", "xvec_only"])
def test_voice_clone_tokens_and_waveform_match_reference(pair, tmp_path, xvec_only):
    ref, eng = pair("base")
    audio, ref_text = _reference_audio(), "This is my reference voice."
    items = ref.create_voice_clone_prompt(ref_audio=audio, ref_text=ref_text, x_vector_only_mode=xvec_only)
    expected, wav = _reference(ref, "generate_voice_clone", TEXT, language="english", voice_clone_prompt=items,
                               **GREEDY_REF)

    voice = eng.create_voice_prompt(audio, ref_text=ref_text, xvec_only=xvec_only)
    assert voice.xvec_only is xvec_only
    voice.save(tmp_path / "voice.pt")
    for v in (voice, VoicePrompt.load(tmp_path / "voice.pt")):
        prompt = eng.prompt_voice_clone(TEXT, v, "english")
        codes = eng.generate_codes(prompt, SamplingParams.greedy(), max_new_tokens=N_TOKENS)
        assert torch.equal(codes, expected)
    ours = eng.decode(codes, context_codes=prompt.context_codes)
    assert ours.shape == ((N_TOKENS - 1) * 1920,)
    # The reference cuts the reference part at int(ref_len / total_len * samples), which float rounding can put one
    # sample before the frame boundary; we cut on the exact boundary, so compare the common tail.
    assert len(wav) - len(ours) in (0, 1)
    assert np.allclose(ours, wav[len(wav) - len(ours):], atol=1e-5)


def test_eos_ends_the_utterance_like_the_reference(pair):
    """With the EOS logit pushed up, both stop where EOS is first allowed (after min_new_tokens=2 ids)."""
    ref, eng = pair("custom_voice")
    eos = eng.eos_id
    ref_head, eng_head = ref.model.talker.codec_head.weight, eng.talker.w.codec_head
    saved_ref, saved_eng = ref_head.data[eos].clone(), eng_head[eos].clone()
    try:
        ref_head.data[eos] = 50 * ref_head.data.abs().max()
        eng_head[eos] = ref_head.data[eos]
        expected, _ = _reference(ref, "generate_custom_voice", TEXT, speaker="ryan", language="english", **GREEDY_REF)
        codes = eng.generate_codes(eng.prompt_custom_voice(TEXT, "ryan", "english"), SamplingParams.greedy(),
                                   max_new_tokens=N_TOKENS)
    finally:
        ref_head.data[eos], eng_head[eos] = saved_ref, saved_eng
    assert codes.shape == (2, 16)  # ids 1 and 2 cannot be EOS; id 3 is, and ends the utterance
    assert torch.equal(codes, expected)
    assert (codes[:, 0] != eos).all()


def test_sampling_is_reproducible_with_a_seed(pair):
    _, eng = pair("custom_voice")
    prompt = eng.prompt_custom_voice(TEXT, "ryan", "english")

    def run(seed):
        return eng.generate_codes(prompt, SamplingParams(seed=seed, temperature=1.5, top_k=0, top_p=0.95),
                                  max_new_tokens=N_TOKENS)

    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert (first[:, 0] < 2048).all() and (first[:, 1:] < 2048).all()  # control ids 2048.. suppressed
