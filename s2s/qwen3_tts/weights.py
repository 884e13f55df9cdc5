"""Take the talker and code-predictor weights out of the reference ``qwen_tts`` modules into the engine's layout.

Layout: per layer one qkv matrix [(Hq + 2 Hkv) d, D], one gate/up matrix [2 I, D], stacked q/k norm weights
[Hq + Hkv, d], o_proj and down stored column-major (``_column_major``); all 16 codec embedding tables in one flat
table [3072 + 15 * 2048, D_talker] (the talker's codebook-0 table, then the 15 predictor tables; the per-table tensors
are views of it), so a frame's 16 codes are embedded by one gather; the 15 predictor heads stacked
[15, 2048, D_pred]. Tensors whose layout does not change are shared, not copied. Each reference layer is dropped as
soon as it has been converted, so peak memory stays near one model copy plus one layer; at the end the whole
reference talker is released (the speech tokenizer and speaker encoder stay with the reference model: the engine
uses them for decoding and voice prompts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

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


def _take_layer(layer: nn.Module) -> LayerWeights:
    attn, mlp = layer.self_attn, layer.mlp
    n_q = attn.q_proj.weight.shape[0] // attn.head_dim
    n_kv = attn.k_proj.weight.shape[0] // attn.head_dim
    qk_norm = torch.cat((attn.q_norm.weight.expand(n_q, -1), attn.k_norm.weight.expand(n_kv, -1)))  # [Hq+Hkv, d]
    return LayerWeights(
        input_norm=layer.input_layernorm.weight.data,
        qkv=torch.cat((attn.q_proj.weight.data, attn.k_proj.weight.data, attn.v_proj.weight.data)),
        qk_norm=qk_norm.detach().contiguous(),
        o_proj=_column_major(attn.o_proj.weight.data),
        post_norm=layer.post_attention_layernorm.weight.data,
        gate_up=torch.cat((mlp.gate_proj.weight.data, mlp.up_proj.weight.data)),
        down=_column_major(mlp.down_proj.weight.data),
    )


def _take_layers(layers: nn.ModuleList) -> list[LayerWeights]:
    taken = []
    for i in range(len(layers)):
        taken.append(_take_layer(layers[i]))
        layers[i] = nn.Identity()  # drop the reference copies of q/k/v and gate/up now
    return taken


def _shape(cfg) -> LayerShape:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LayerShape(cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, cfg.rms_norm_eps)


def take_weights(model: nn.Module) -> tuple[TalkerWeights, PredictorWeights]:
    """Convert ``Qwen3TTSForConditionalGeneration.talker`` and release it from ``model``."""
    talker = model.talker
    cfg = talker.config
    pred = talker.code_predictor
    pcfg = pred.config
    with torch.no_grad():
        predictor_tables = [e.weight.data for e in pred.model.codec_embedding]
        codec_table, code_offsets = _codec_table(talker.model.codec_embedding.weight.data, predictor_tables)
        vocab, n_residual, residual_vocab = talker.model.codec_embedding.weight.shape[0], len(predictor_tables), predictor_tables[0].shape[0]
        predictor = PredictorWeights(
            layers=_take_layers(pred.model.layers),
            shape=_shape(pcfg),
            final_norm=pred.model.norm.weight.data,
            codec_embeddings=codec_table[vocab:].view(n_residual, residual_vocab, -1),
            heads=torch.stack([h.weight.data for h in pred.lm_head]),
            proj_w=None if isinstance(pred.small_to_mtp_projection, nn.Identity) else pred.small_to_mtp_projection.weight.data,
            proj_b=None if isinstance(pred.small_to_mtp_projection, nn.Identity) else pred.small_to_mtp_projection.bias.data,
            rope_theta=float(pcfg.rope_theta),
        )
        talker_weights = TalkerWeights(
            layers=_take_layers(talker.model.layers),
            shape=_shape(cfg),
            final_norm=talker.model.norm.weight.data,
            codec_embedding=codec_table[:vocab],
            codec_table=codec_table,
            code_offsets=code_offsets,
            codec_head=talker.codec_head.weight.data,
            text_embedding=talker.model.text_embedding.weight.data,
            text_fc1_w=talker.text_projection.linear_fc1.weight.data,
            text_fc1_b=talker.text_projection.linear_fc1.bias.data,
            text_fc2_w=talker.text_projection.linear_fc2.weight.data,
            text_fc2_b=talker.text_projection.linear_fc2.bias.data,
            rope_theta=float(cfg.rope_theta),
        )
    model.talker = None  # the shared tensors live on in the engine; everything else is freed
    log.debug("took %d talker and %d predictor layers", len(talker_weights.layers), len(predictor.layers))
    return talker_weights, predictor
