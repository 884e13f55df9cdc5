"""Convert the talker and code-predictor tensors of model.safetensors into the engine's layout.

Layout: per layer one qkv matrix [(Hq + 2 Hkv) d, D], one gate/up matrix [2 I, D], stacked q/k norm weights
[Hq + Hkv, d], o_proj and down stored column-major (``_column_major``); all 16 codec embedding tables in one flat
table [3072 + 15 * 2048, D_talker] (the talker's codebook-0 table, then the 15 predictor tables; the per-table tensors
are views of it), so a frame's 16 codes are embedded by one gather; the 15 predictor heads stacked
[15, 2048, D_pred]. Tensors whose layout does not change are shared, not copied. Each layer's tensors are dropped as
soon as it has been converted, so peak memory stays near one model copy plus one layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from s2s.qwen3_tts.layers import LayerShape, LayerWeights

log = logging.getLogger(__name__)


@dataclass
class TalkerWeights:
    layers: list[LayerWeights]
    shape: LayerShape
    final_norm: torch.Tensor  # [D]
    codec_embedding: torch.Tensor  # [V=3072, D]: a view of codec_table
    codec_table: torch.Tensor  # [V + 15 * 2048, D]: codebook 0 (talker) then codebooks 1..15 (predictor) rows
    code_offsets: torch.Tensor  # [16] long: first row of codebook i in codec_table
    codec_head: torch.Tensor  # [V, D]
    text_embedding: torch.Tensor  # [text_vocab, text_hidden]
    text_fc1_w: torch.Tensor  # [text_hidden, text_hidden]
    text_fc1_b: torch.Tensor  # [text_hidden]
    text_fc2_w: torch.Tensor  # [D, text_hidden]
    text_fc2_b: torch.Tensor  # [D]
    rope_theta: float


@dataclass
class PredictorWeights:
    layers: list[LayerWeights]
    shape: LayerShape
    final_norm: torch.Tensor  # [Dp=1024]
    codec_embeddings: torch.Tensor  # [15, 2048, D_talker]: a view of TalkerWeights.codec_table
    heads: torch.Tensor  # [15, 2048, Dp]
    proj_w: torch.Tensor | None  # [Dp, D_talker] (1.7B) or None (0.6B: identity)
    proj_b: torch.Tensor | None  # [Dp]
    rope_theta: float


def embed_codes(codes: torch.Tensor, talker: TalkerWeights) -> torch.Tensor:
    """Codes [R, 16] -> summed embeddings [R, D]: the talker's table for codebook 0, predictor table i for
    codebook i + 1 (the talker input of a frame; also the voice-clone reference rows). One gather from the flat
    table, summed over a [R, 16, D] stack, the reference's reduction layout, so fp32 results match bit for bit."""
    rows = (codes + talker.code_offsets).reshape(-1)  # [R * 16] rows of codec_table
    return talker.codec_table.index_select(0, rows).view(codes.shape[0], codes.shape[1], -1).sum(1)  # [R, D]


def _codec_table(talker_table: torch.Tensor, predictor_tables: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One flat table [V + sum V_i, D] and the first row of each part [16] (long, on the tables' device)."""
    tables = [talker_table, *predictor_tables]
    sizes = torch.tensor([0] + [t.shape[0] for t in tables[:-1]])  # [16]
    return torch.cat(tables), sizes.cumsum(0).to(talker_table.device)


def _column_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [N, K] with column-major storage (strides (1, N)), same values: its transpose [K, N], the operand of
    the layers' ``addmm_``, is then contiguous. For the projections back to the hidden size (o_proj, down: long K,
    narrow N), cuBLAS runs a one-row product much faster in that layout: o_proj 2048 -> 1024 takes 5.0 µs instead of
    12.3 µs, down 6144 -> 2048 8.8 instead of 9.4 µs on an H200; wide outputs (qkv, gate/up) gain nothing
    (bench/matvec_variants.py, bench/results/2026-12-01-h200/matvec.txt)."""
    return weight.t().contiguous().t()


Tensors = dict[str, torch.Tensor]


def _pop(tensors: Tensors, name: str) -> torch.Tensor:
    if name not in tensors:
        raise ValueError(f"model.safetensors has no {name}: is this a Qwen3-TTS 12 Hz checkpoint of the kind its "
                         "config.json says?")
    return tensors.pop(name)


def _take_layer(tensors: Tensors, prefix: str, shape: LayerShape) -> LayerWeights:
    def get(name: str) -> torch.Tensor:
        return _pop(tensors, f"{prefix}.{name}.weight")

    q, k, v = get("self_attn.q_proj"), get("self_attn.k_proj"), get("self_attn.v_proj")
    n_q, n_kv = q.shape[0] // shape.head_dim, k.shape[0] // shape.head_dim
    qk_norm = torch.cat((get("self_attn.q_norm").expand(n_q, -1), get("self_attn.k_norm").expand(n_kv, -1)))  # [Hq+Hkv, d]
    return LayerWeights(
        input_norm=get("input_layernorm"),
        qkv=torch.cat((q, k, v)),
        qk_norm=qk_norm.contiguous(),
        o_proj=_column_major(get("self_attn.o_proj")),
        post_norm=get("post_attention_layernorm"),
        gate_up=torch.cat((get("mlp.gate_proj"), get("mlp.up_proj"))),
        down=_column_major(get("mlp.down_proj")),
    )


def _take_layers(tensors: Tensors, prefix: str, count: int, shape: LayerShape) -> list[LayerWeights]:
    # Popping each layer's tensors as it is converted frees the separate q/k/v and gate/up copies right away.
    return [_take_layer(tensors, f"{prefix}.{i}", shape) for i in range(count)]


def _shape(cfg) -> LayerShape:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LayerShape(cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, cfg.rms_norm_eps)


def take_weights(tensors: Tensors, cfg) -> tuple[TalkerWeights, PredictorWeights]:
    """Convert the ``talker.*`` tensors of model.safetensors (popped from ``tensors``, already on the engine's device
    and dtype) for the talker config ``cfg`` (its ``code_predictor_config`` inside)."""
    pcfg = cfg.code_predictor_config
    n_residual = cfg.num_code_groups - 1
    with torch.no_grad():
        predictor_tables = [_pop(tensors, f"talker.code_predictor.model.codec_embedding.{i}.weight")
                            for i in range(n_residual)]
        talker_table = _pop(tensors, "talker.model.codec_embedding.weight")
        codec_table, code_offsets = _codec_table(talker_table, predictor_tables)
        del talker_table, predictor_tables  # codec_table holds the only copy
        vocab, residual_vocab = cfg.vocab_size, pcfg.vocab_size
        projected = "talker.code_predictor.small_to_mtp_projection.weight" in tensors  # 1.7B: talker 2048 -> 1024
        predictor = PredictorWeights(
            layers=_take_layers(tensors, "talker.code_predictor.model.layers", pcfg.num_hidden_layers, _shape(pcfg)),
            shape=_shape(pcfg),
            final_norm=_pop(tensors, "talker.code_predictor.model.norm.weight"),
            codec_embeddings=codec_table[vocab:].view(n_residual, residual_vocab, -1),
            heads=torch.stack([_pop(tensors, f"talker.code_predictor.lm_head.{i}.weight") for i in range(n_residual)]),
            proj_w=_pop(tensors, "talker.code_predictor.small_to_mtp_projection.weight") if projected else None,
            proj_b=_pop(tensors, "talker.code_predictor.small_to_mtp_projection.bias") if projected else None,
            rope_theta=float(pcfg.rope_theta),
        )
        talker_weights = TalkerWeights(
            layers=_take_layers(tensors, "talker.model.layers", cfg.num_hidden_layers, _shape(cfg)),
            shape=_shape(cfg),
            final_norm=_pop(tensors, "talker.model.norm.weight"),
            codec_embedding=codec_table[:vocab],
            codec_table=codec_table,
            code_offsets=code_offsets,
            codec_head=_pop(tensors, "talker.codec_head.weight"),
            text_embedding=_pop(tensors, "talker.model.text_embedding.weight"),
            text_fc1_w=_pop(tensors, "talker.text_projection.linear_fc1.weight"),
            text_fc1_b=_pop(tensors, "talker.text_projection.linear_fc1.bias"),
            text_fc2_w=_pop(tensors, "talker.text_projection.linear_fc2.weight"),
            text_fc2_b=_pop(tensors, "talker.text_projection.linear_fc2.bias"),
            rope_theta=float(cfg.rope_theta),
        )
    log.debug("took %d talker and %d predictor layers", len(talker_weights.layers), len(predictor.layers))
    return talker_weights, predictor
