"""The 12 Hz codec decoder's parameters, laid out as in ``speech_tokenizer/model.safetensors`` (keys ``decoder.*``).

These modules only hold weights (no ``forward``): ``StreamingCodecDecoder`` (codec_stream.py) runs them, for
streaming and for one-shot decodes alike. The tree mirrors the checkpoint's key names, so ``load_state_dict(strict=True)``
checks a checkpoint's layout, and holds the few hyper-parameters the state dict does not (kernel sizes, strides,
dilations, groups), taken from the decoder config:

    quantizer        rvq_first (1 semantic codebook) and rvq_rest (Q-1 acoustic codebooks), 1x1 projections
    pre_conv         causal conv k=3, codebook_dim -> latent_dim
    pre_transformer  input_proj, L sliding-window layers (RMSNorm, attention with layer scale, SwiGLU MLP), norm,
                     output_proj; RoPE inverse frequencies computed in fp32 (Rotary.place), the checkpoint has none
    upsample         per upsampling ratio: transposed conv (k = stride = ratio) + ConvNeXt block
    decoder          causal conv k=7, one block per upsample rate (SnakeBeta, transposed conv k=2r stride r, residual
                     units with dilations 1, 3, 9), SnakeBeta, causal conv k=7 to one channel
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

RESIDUAL_DILATIONS = (1, 3, 9)


class CausalConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, groups=groups)


class CausalTransConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel, stride=stride)


class SnakeBeta(nn.Module):
    """x + 1 / (e^beta + no_div_by_zero) * sin(x e^alpha)^2 per channel (log-scale parameters)."""

    no_div_by_zero = 1e-9

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, rate: int):
        super().__init__()
        units = [ResidualUnit(c_out, dilation) for dilation in RESIDUAL_DILATIONS]
        self.block = nn.ModuleList([SnakeBeta(c_in), CausalTransConv(c_in, c_out, 2 * rate, rate), *units])


class Codebook(nn.Module):
    """Entries are ``embedding_sum / max(cluster_usage, epsilon)`` (an EMA codebook as trained)."""

    epsilon = 1e-5

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.cluster_usage = nn.Parameter(torch.ones(size))
        self.embedding_sum = nn.Parameter(torch.zeros(size, dim))


class CodebookLayer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self._codebook = Codebook(size, dim)
        self.project_out = nn.Identity()


class ResidualQuantizer(nn.Module):
    def __init__(self, n_codebooks: int, size: int, dim: int, io_dim: int):
        super().__init__()
        self.input_proj = nn.Conv1d(io_dim, dim, 1, bias=False)
        self.output_proj = nn.Conv1d(dim, io_dim, 1, bias=False)
        self.vq = nn.Module()
        self.vq.layers = nn.ModuleList([CodebookLayer(size, dim) for _ in range(n_codebooks)])


class SplitQuantizer(nn.Module):
    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        n_semantic = cfg.num_semantic_quantizers
        dim = cfg.codebook_dim // 2
        self.rvq_first = ResidualQuantizer(n_semantic, cfg.codebook_size, dim, cfg.codebook_dim)
        self.rvq_rest = ResidualQuantizer(cfg.num_quantizers - n_semantic, cfg.codebook_size, dim, cfg.codebook_dim)


class LayerScale(nn.Module):
    def __init__(self, dim: int, initial: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), initial))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class Attention(nn.Module):
    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.scaling = cfg.head_dim**-0.5
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size, bias=cfg.attention_bias)


class Mlp(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act_fn = nn.SiLU()


class TransformerLayer(nn.Module):
    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size)
        self.self_attn = Attention(cfg)
        self.self_attn_layer_scale = LayerScale(cfg.hidden_size, cfg.layer_scale_initial_scale)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size)
        self.mlp = Mlp(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_layer_scale = LayerScale(cfg.hidden_size, cfg.layer_scale_initial_scale)


class Rotary(nn.Module):
    """Plain RoPE inverse frequencies theta^(-2i/d), not in the checkpoint: computed by ``place`` in fp32 whatever the
    weights' dtype (as the reference computes them), a plain attribute so that ``.to(dtype)`` leaves them alone."""

    attention_scaling = 1.0

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.inv_freq: torch.Tensor | None = None  # [head_dim / 2] fp32, after place()

    def place(self, device: torch.device | str) -> None:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        self.inv_freq = 1.0 / (self.theta**exponents)


class SlidingWindowTransformer(nn.Module):
    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        self.config = cfg
        self.input_proj = nn.Linear(cfg.latent_dim, cfg.hidden_size)
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size)
        self.output_proj = nn.Linear(cfg.hidden_size, cfg.latent_dim)
        self.rotary_emb = Rotary(cfg.head_dim, cfg.rope_theta)


class CodecDecoder(nn.Module):
    """Codes [T, Q] -> 24 kHz audio [T * total_upsample] (run by ``StreamingCodecDecoder``)."""

    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        self.config = cfg
        self.total_upsample = math.prod(cfg.upsample_rates) * math.prod(cfg.upsampling_ratios)
        self.quantizer = SplitQuantizer(cfg)
        self.pre_conv = CausalConv(cfg.codebook_dim, cfg.latent_dim, 3)
        self.pre_transformer = SlidingWindowTransformer(cfg)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv(cfg.latent_dim, cfg.latent_dim, ratio, ratio), ConvNeXtBlock(cfg.latent_dim)])
            for ratio in cfg.upsampling_ratios
        )
        widths = [cfg.decoder_dim // 2**i for i in range(len(cfg.upsample_rates) + 1)]
        self.decoder = nn.ModuleList([
            CausalConv(cfg.latent_dim, widths[0], 7),
            *(DecoderBlock(widths[i], widths[i + 1], rate) for i, rate in enumerate(cfg.upsample_rates)),
            SnakeBeta(widths[-1]),
            CausalConv(widths[-1], 1, 7),
        ])


def decoder_config(decoder_json: dict) -> SimpleNamespace:
    """``decoder_config`` of speech_tokenizer/config.json with the defaults the released files leave out."""
    defaults = {"num_semantic_quantizers": 1, "attention_bias": False, "layer_scale_initial_scale": 0.01}
    cfg = SimpleNamespace(**{**defaults, **decoder_json})
    if getattr(cfg, "head_dim", None) is None:
        cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    return cfg
