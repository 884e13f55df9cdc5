"""patches.sdpa_gqa: a JetPack-like SDPA without ``enable_gqa`` is emulated by a wrapper that lacks the argument.

In-process tests swap ``F.scaled_dot_product_attention`` and ``use_gqa_in_sdpa`` through ``monkeypatch`` (restored
after each test); one test runs the whole start-up (``patches.apply()``, a tiny Llama) in a clean interpreter.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from fresh_python import run_python
from transformers.integrations import sdpa_attention

from patches import sdpa_gqa

REAL_SDPA = F.scaled_dot_product_attention
N_REP = 2


def sdpa_without_gqa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """SDPA as JetPack's 2.5.0a0 build has it: same maths, no ``enable_gqa`` keyword."""
    return REAL_SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)


class GQAModule(torch.nn.Module):
    """What transformers' SDPA path reads from an attention module."""

    num_key_value_groups = N_REP
    is_causal = True


def qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=generator)  # (batch, query heads, seq, head_dim)
    k = torch.randn(2, 4 // N_REP, 5, 8, generator=generator)  # (batch, kv heads, seq, head_dim)
    v = torch.randn(2, 4 // N_REP, 5, 8, generator=generator)  # (batch, kv heads, seq, head_dim)
    return q, k, v


def transformers_attention() -> torch.Tensor:
    """transformers' SDPA attention with GQA and no mask: the call that passes enable_gqa=True."""
    q, k, v = qkv()
    out, _ = sdpa_attention.sdpa_attention_forward(GQAModule(), q, k, v, attention_mask=None, scaling=0.25)
    return out  # (batch, seq, query heads, head_dim)


def reference_gqa() -> torch.Tensor:
    q, k, v = qkv()
    k, v = k.repeat_interleave(N_REP, dim=1), v.repeat_interleave(N_REP, dim=1)  # (batch, query heads, seq, dim)
    return REAL_SDPA(q, k, v, is_causal=True, scale=0.25).transpose(1, 2)  # (batch, seq, query heads, head_dim)


@pytest.fixture
def jetson_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa_without_gqa)
    monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", sdpa_attention.use_gqa_in_sdpa)


def test_breakage_reproduced(jetson_sdpa: None) -> None:
    assert sdpa_gqa.enable_gqa_error() is not None
    with pytest.raises(TypeError, match="enable_gqa"):
        transformers_attention()


def test_patch_gives_reference_gqa_bit_for_bit(jetson_sdpa: None) -> None:
    status = sdpa_gqa.apply()
    assert status.applied and "enable_gqa" in status.detail
    assert torch.equal(transformers_attention(), reference_gqa())


def test_patch_is_idempotent(jetson_sdpa: None) -> None:
    sdpa_gqa.apply()
    patched = sdpa_attention.use_gqa_in_sdpa
    assert sdpa_gqa.apply().detail == "already applied"
    assert sdpa_attention.use_gqa_in_sdpa is patched


def test_no_op_where_sdpa_takes_enable_gqa(monkeypatch: pytest.MonkeyPatch) -> None:
    if sdpa_gqa.enable_gqa_error() is not None:
        pytest.skip("this torch's SDPA lacks enable_gqa")
    original = sdpa_attention.use_gqa_in_sdpa
    monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", original)
    status = sdpa_gqa.apply()
    assert not status.applied and "accepts enable_gqa" in status.detail
    assert sdpa_attention.use_gqa_in_sdpa is original
    torch.testing.assert_close(transformers_attention(), reference_gqa())


def test_start_up_on_emulated_jetson_runs_a_gqa_model() -> None:
    """Clean interpreter: the fake SDPA is in place before transformers runs a tiny GQA Llama; unpatched it
    raises, after ``patches.apply()`` it matches the same model with K/V repeated by hand."""
    code = textwrap.dedent("""
        import json
        import torch, torch.nn.functional as F
        real = F.scaled_dot_product_attention
        def sdpa_without_gqa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
            return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
        F.scaled_dot_product_attention = sdpa_without_gqa
        from transformers import LlamaConfig, LlamaModel
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
        model = LlamaModel(config).eval()
        ids = torch.arange(6).unsqueeze(0)
        result = {}
        try:
            model(ids)
        except TypeError as exc:
            result["unpatched"] = str(exc)
        import patches
        import transformers.integrations.sdpa_attention as sa
        original = sa.use_gqa_in_sdpa
        statuses = patches.apply()
        result["status"] = {s.name: s.applied for s in statuses}
        with torch.no_grad():
            patched = model(ids).last_hidden_state

        def sdpa_repeating_kv(q, k, v, enable_gqa=False, **kwargs):  # GQA by hand: repeat_interleave
            n_rep = q.shape[1] // k.shape[1]
            return real(q, k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1), **kwargs)

        F.scaled_dot_product_attention = sdpa_repeating_kv
        sa.use_gqa_in_sdpa = original
        with torch.no_grad():
            reference = model(ids).last_hidden_state
        result["equal"] = torch.equal(patched, reference)
        print(json.dumps(result))
    """)
    result = run_python(code)
    assert "enable_gqa" in result["unpatched"]
    assert result["status"]["sdpa-enable-gqa"] is True
    assert result["equal"]
