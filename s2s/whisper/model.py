"""Whisper's encoder and decoder in torch, built from a CTranslate2 WhisperSpec's weights.

Pre-norm transformer layers (LayerNorm eps 1e-5, exact GELU). CTranslate2 fuses the projections: the self-attention
``linear_0`` is q, k and v stacked, the cross-attention ``linear_0`` is q and ``linear_1`` k and v stacked; the
output projection is the token embedding (tied). The decoder keeps its self-attention keys and values per layer
(``Cache``) and the cross-attention keys and values of the audio, so each new token costs one position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _linear(weights: dict[str, np.ndarray], name: str) -> nn.Linear:
    weight = torch.from_numpy(weights[f"{name}/weight"].astype(np.float32))
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(torch.from_numpy(weights[f"{name}/bias"].astype(np.float32)))
    return layer


def _norm(weights: dict[str, np.ndarray], name: str) -> nn.LayerNorm:
    gamma = torch.from_numpy(weights[f"{name}/gamma"].astype(np.float32))
    layer = nn.LayerNorm(gamma.shape[0], eps=1e-5)
    layer.weight.data.copy_(gamma)
    layer.bias.data.copy_(torch.from_numpy(weights[f"{name}/beta"].astype(np.float32)))
    return layer


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False) -> torch.Tensor:
    """[B, Tq, D] x [B, Tk, D] x [B, Tk, D] -> [B, Tq, D]."""
    b, tq, d = q.shape
    split = lambda x: x.view(b, x.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731  [B, H, T, D/H]
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)  # [B, H, Tq, D/H]
    return out.transpose(1, 2).reshape(b, tq, d)


class _FeedForward(nn.Module):
    """The residual MLP block of a layer: ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, weights: dict, name: str) -> None:
        super().__init__()
        self.norm = _norm(weights, f"{name}/ffn/layer_norm")
        self.fc1 = _linear(weights, f"{name}/ffn/linear_0")
        self.fc2 = _linear(weights, f"{name}/ffn/linear_1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, weights: dict, name: str, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = _norm(weights, f"{name}/self_attention/layer_norm")
        self.qkv = _linear(weights, f"{name}/self_attention/linear_0")
        self.attn_out = _linear(weights, f"{name}/self_attention/linear_1")
        self.ffn = _FeedForward(weights, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.attn_norm(x)).chunk(3, dim=-1)
        return self.ffn(x + self.attn_out(_attend(q, k, v, self.heads)))


@dataclass
class Cache:
    """The decoder's keys and values: per layer, self-attention (grown a token at a time) and cross-attention."""

    self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    length: int = 0


class _DecoderLayer(nn.Module):
    def __init__(self, weights: dict, name: str, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.self_norm = _norm(weights, f"{name}/self_attention/layer_norm")
        self.qkv = _linear(weights, f"{name}/self_attention/linear_0")
        self.self_out = _linear(weights, f"{name}/self_attention/linear_1")
        self.cross_norm = _norm(weights, f"{name}/attention/layer_norm")
        self.cross_q = _linear(weights, f"{name}/attention/linear_0")
        self.cross_kv = _linear(weights, f"{name}/attention/linear_1")
        self.cross_out = _linear(weights, f"{name}/attention/linear_2")
        self.ffn = _FeedForward(weights, name)

    def forward(self, x: torch.Tensor, cache: Cache, index: int) -> torch.Tensor:
        q, k, v = self.qkv(self.self_norm(x)).chunk(3, dim=-1)
        past = cache.self_kv[index]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)
        cache.self_kv[index] = (k, v)
        causal = q.shape[1] > 1  # the prompt: causal among its own tokens (nothing is cached before it)
        x = x + self.self_out(_attend(q, k, v, self.heads, causal=causal and past is None))
        ck, cv = cache.cross_kv[index]
        return self.ffn(x + self.cross_out(_attend(self.cross_q(self.cross_norm(x)), ck, cv, self.heads)))


class Whisper(nn.Module):
    """``encode(mel [B, n_mels, 3000]) -> audio [B, 1500, D]``; ``start(audio) -> Cache``;
    ``decode(tokens [B, T], cache) -> logits [B, T, vocab]`` (appends to the cache)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.heads = int(weights["encoder/num_heads"].reshape(-1)[0])
        self.decoder_heads = int(weights["decoder/num_heads"].reshape(-1)[0])
        conv1, conv2 = (torch.from_numpy(weights[f"encoder/conv{i}/weight"].astype(np.float32)) for i in (1, 2))
        self.conv1 = nn.Conv1d(conv1.shape[1], conv1.shape[0], 3, padding=1)
        self.conv2 = nn.Conv1d(conv2.shape[1], conv2.shape[0], 3, stride=2, padding=1)
        for conv, weight, i in ((self.conv1, conv1, 1), (self.conv2, conv2, 2)):
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(torch.from_numpy(weights[f"encoder/conv{i}/bias"].astype(np.float32)))
        self.register_buffer("audio_positions", torch.from_numpy(
            weights["encoder/position_encodings/encodings"].astype(np.float32)))
        layers = sorted({n.split("/")[1] for n in weights if n.startswith("encoder/layer_") and n.count("/") > 2},
                        key=lambda n: int(n.split("_")[1]))
        self.encoder_layers = nn.ModuleList(_EncoderLayer(weights, f"encoder/{n}", self.heads) for n in layers)
        self.encoder_norm = _norm(weights, "encoder/layer_norm")
        self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(
            weights["decoder/embeddings/weight"].astype(np.float32)), freeze=True)
        self.register_buffer("text_positions", torch.from_numpy(
            weights["decoder/position_encodings/encodings"].astype(np.float32)))
        layers = sorted({n.split("/")[1] for n in weights if n.startswith("decoder/layer_") and n.count("/") > 2},
                        key=lambda n: int(n.split("_")[1]))
        self.decoder_layers = nn.ModuleList(_DecoderLayer(weights, f"decoder/{n}", self.decoder_heads)
                                            for n in layers)
        self.decoder_norm = _norm(weights, "decoder/layer_norm")

    @property
    def n_mels(self) -> int:
        return self.conv1.in_channels

    @property
    def max_tokens(self) -> int:
        return self.text_positions.shape[0]

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)  # [B, 1500, D]
        x = x + self.audio_positions[:x.shape[1]]
        for layer in self.encoder_layers:
            x = layer(x)
        return self.encoder_norm(x)

    def start(self, audio: torch.Tensor) -> Cache:
        """A fresh decoder cache for this audio (its cross-attention keys and values computed once)."""
        cross = [tuple(layer.cross_kv(audio).chunk(2, dim=-1)) for layer in self.decoder_layers]
        return Cache(self_kv=[None] * len(self.decoder_layers), cross_kv=cross)

    def decode(self, tokens: torch.Tensor, cache: Cache) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.embedding(tokens) + self.text_positions[cache.length:cache.length + t]
        for index, layer in enumerate(self.decoder_layers):
            x = layer(x, cache, index)
        cache.length += t
        return self.decoder_norm(x) @ self.embedding.weight.T  # [B, T, vocab]
