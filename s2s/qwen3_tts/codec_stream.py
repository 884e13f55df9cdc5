"""Exact streaming decode of the Qwen3-TTS 12 Hz codec: code frames in, the same audio as a one-shot decode out.

The codec decoder (``Qwen3TTSTokenizerV2Decoder``) is causal, but its reach is long: 8 stacked sliding-window
attention layers (72 positions each) plus causal convolutions, so re-decoding a fixed left window of frames changes
the audio. This decoder keeps the state instead and runs every stage only on the new frames:

    codes [n, 16]
      -> codebook lookup, summed, 1x1 projections                        [1, 512, n]     (stateless)
      -> pre_conv: causal conv k=3                                       [1, 1024, n]    (keeps 2 input frames)
      -> transformer: input_proj, 8 layers, norm, output_proj            [1, n, 1024]    (keeps each layer's rotated
         K and V of the last window-1 = 71 positions, their absolute positions, and the next position)
      -> 2 x (transposed conv k=s=2, ConvNeXt block)                     [1, 1024, 4n]   (dwconv keeps 6 samples)
      -> causal conv k=7, 4 decoder blocks (SnakeBeta, transposed conv k=2r stride r, 3 residual units with dilated
         causal convs), SnakeBeta, causal conv k=7, clamp to [-1, 1]     [1, 1, 1920n]

A causal conv of kernel k and dilation d keeps its last (k-1)*d input samples and runs unpadded on
``cat(state, new)``; a transposed conv of kernel k and stride s keeps its last ceil(k/s)-1 input frames and keeps the
output samples that belong to the new frames. Attention masks by absolute position (key in (q-72, q]), so the cache
has a fixed size (empty slots hold a far-negative position) and RoPE uses absolute positions. With ``reset(context)``
a voice-clone reference is decoded into the state and its audio dropped, as upstream decodes ``ref + generated`` and
cuts the reference's samples.

The weights are read from the decoder's own modules when this object is built: move the model to its device and
dtype first. Numerics follow the reference (RMSNorm in fp32, RoPE angles in fp32), so in float64 the stream equals the
one-shot forward to rounding. Per chunk the work is a fixed sequence of kernels with no host sync and no branch on
tensor values; states are updated in place (``copy_``), so a decode of a fixed chunk size can be captured in a CUDA
graph (``frames_decoded`` is a host-side count that a replay does not advance). Torch features used:
``F.conv1d``, ``F.conv_transpose1d``, ``F.scaled_dot_product_attention`` with a boolean mask, ``F.layer_norm``,
``F.gelu``, advanced indexing, ``torch.cat``, ``Tensor.copy_``; all in torch 2.5 (JetPack).
Batch size is 1 (one utterance per decoder).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Part = Callable[[torch.Tensor], torch.Tensor]


class _CausalConv:
    """Causal Conv1d (stride 1) that keeps its trailing input between chunks."""

    def __init__(self, module: nn.Module):
        conv: nn.Conv1d = module.conv
        if conv.stride[0] != 1:
            raise ValueError(f"streaming supports stride-1 causal convs only, got stride {conv.stride[0]}")
        self.weight, self.bias = conv.weight.detach(), _detached(conv.bias)
        self.dilation, self.groups = conv.dilation[0], conv.groups
        self.keep = (conv.kernel_size[0] - 1) * self.dilation
        self.state = self.weight.new_zeros(1, conv.in_channels, self.keep)  # [1, C_in, (k-1)*d]

    def reset(self) -> None:
        self.state.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [1, C_in, n] -> [1, C_out, n]
        if self.keep:
            x = torch.cat((self.state, x), dim=-1)  # [1, C_in, keep + n]: the zero state is the left padding
            self.state.copy_(x[..., -self.keep :])
        return F.conv1d(x, self.weight, self.bias, dilation=self.dilation, groups=self.groups)


class _CausalTransConv:
    """ConvTranspose1d trimmed to ``stride`` output samples per input frame, keeping the frames that overlap."""

    def __init__(self, module: nn.Module):
        conv: nn.ConvTranspose1d = module.conv
        self.weight, self.bias = conv.weight.detach(), _detached(conv.bias)
        self.stride = conv.stride[0]
        self.keep = math.ceil(conv.kernel_size[0] / self.stride) - 1  # earlier frames that reach the new outputs
        self.state = self.weight.new_zeros(1, conv.in_channels, self.keep)  # [1, C_in, keep]

    def reset(self) -> None:
        self.state.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [1, C_in, n] -> [1, C_out, n*stride]
        n = x.shape[-1]
        if self.keep:
            x = torch.cat((self.state, x), dim=-1)  # [1, C_in, keep + n]
            self.state.copy_(x[..., -self.keep :])
        y = F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride)
        return y[..., self.keep * self.stride : (self.keep + n) * self.stride]


class _SnakeBeta:
    """x + 1/(e^beta + 1e-9) * sin(x * e^alpha)^2, per channel."""

    def __init__(self, module: nn.Module):
        self.alpha = torch.exp(module.alpha.detach())[None, :, None]  # [1, C, 1]
        self.inv_beta = 1.0 / (torch.exp(module.beta.detach())[None, :, None] + module.no_div_by_zero)

    def reset(self) -> None:
        pass

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [1, C, T]
        return x + self.inv_beta * torch.pow(torch.sin(x * self.alpha), 2)


class _ResidualUnit:
    """SnakeBeta, dilated causal conv k=7, SnakeBeta, conv k=1, plus the input."""

    def __init__(self, module: nn.Module):
        self.parts = [_SnakeBeta(module.act1), _CausalConv(module.conv1), _SnakeBeta(module.act2),
                      _CausalConv(module.conv2)]

    def reset(self) -> None:
        for part in self.parts:
            part.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [1, C, T]
        return x + _run(self.parts, x)


class _ConvNeXt:
    """Depthwise causal conv k=7, LayerNorm, Linear 4x, GELU, Linear, gamma, plus the input."""

    def __init__(self, module: nn.Module):
        self.dwconv = _CausalConv(module.dwconv)
        norm: nn.LayerNorm = module.norm
        self.norm = (norm.normalized_shape, norm.weight.detach(), norm.bias.detach(), norm.eps)
        self.up = (module.pwconv1.weight.detach(), module.pwconv1.bias.detach())
        self.down = (module.pwconv2.weight.detach(), module.pwconv2.bias.detach())
        self.approximate = module.act.approximate
        self.gamma = module.gamma.detach()

    def reset(self) -> None:
        self.dwconv.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [1, C, T]
        h = self.dwconv(x).transpose(1, 2)  # [1, T, C]
        h = F.layer_norm(h, *self.norm)
        h = F.linear(F.gelu(F.linear(h, *self.up), approximate=self.approximate), *self.down)  # [1, T, C]
        return x + (self.gamma * h).transpose(1, 2)


class _Sequence:
    def __init__(self, parts: list):
        self.parts = parts

    def reset(self) -> None:
        for part in self.parts:
            part.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self.parts, x)


_PARTS = {
    # codec_model.py's modules (what the engine loads) and qwen-tts 0.1.1's (the reference, for the tests)
    "CausalConv": _CausalConv, "Qwen3TTSTokenizerV2CausalConvNet": _CausalConv,
    "CausalTransConv": _CausalTransConv, "Qwen3TTSTokenizerV2CausalTransConvNet": _CausalTransConv,
    "SnakeBeta": _SnakeBeta,
    "ConvNeXtBlock": _ConvNeXt, "Qwen3TTSTokenizerV2ConvNeXtBlock": _ConvNeXt,
    "ResidualUnit": _ResidualUnit, "Qwen3TTSTokenizerV2DecoderDecoderResidualUnit": _ResidualUnit,
}


def _stream_part(module: nn.Module):
    """The streaming counterpart of one module of the decoder's conv stack."""
    name = type(module).__name__
    if name in _PARTS:
        return _PARTS[name](module)
    if name in ("DecoderBlock", "Qwen3TTSTokenizerV2DecoderDecoderBlock", "ModuleList"):
        return _Sequence([_stream_part(child) for child in (module.block if hasattr(module, "block") else module)])
    raise TypeError(f"the streaming codec decoder does not know the module {name} (s2s.qwen3_tts.codec_model's "
                    "modules and qwen-tts 0.1.1's are supported)")


def _run(parts: list, x: torch.Tensor) -> torch.Tensor:
    for part in parts:
        x = part(x)
    return x


def _detached(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach()


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference RMSNorm: normalised in fp32, cast back, then scaled."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Quantizer:
    """Codes to the summed codebook vectors: 1 semantic codebook and the acoustic rest, each with a 1x1 projection."""

    def __init__(self, quantizer: nn.Module):
        first, rest = quantizer.rvq_first, quantizer.rvq_rest
        self.first_table = self._tables(first)[0]  # [codebook_size, d]
        self.rest_tables = self._tables(rest)  # [Q-1, codebook_size, d]
        self.first_proj = first.output_proj.weight.detach()[..., 0]  # [C, d]
        self.rest_proj = rest.output_proj.weight.detach()[..., 0]  # [C, d]
        self.rest_index = torch.arange(self.rest_tables.shape[0], device=self.rest_tables.device)[:, None]

    @classmethod
    def of(cls, quantizer: nn.Module) -> _Quantizer:
        """The tables of ``quantizer``, built once per module (the batched server keeps a decoder per row)."""
        made = _QUANTIZERS.get(quantizer)
        if made is None:
            made = _QUANTIZERS[quantizer] = cls(quantizer)
        return made

    @staticmethod
    def _tables(rvq: nn.Module) -> torch.Tensor:
        tables = []
        for layer in rvq.vq.layers:
            if not isinstance(layer.project_out, nn.Identity):
                raise TypeError("codebooks with a project_out layer are not supported")
            book = layer._codebook
            usage = book.cluster_usage.detach().clamp(min=book.epsilon)
            tables.append(book.embedding_sum.detach() / usage[:, None])  # [codebook_size, d], as in decode()
        return torch.stack(tables)

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:  # [n, Q] -> [1, C, n]
        first = self.first_table[codes[:, 0]]  # [n, d]
        rest = self.rest_tables[self.rest_index, codes[:, 1:].T].sum(0)  # [Q-1, n, d] -> [n, d]
        hidden = first @ self.first_proj.T + rest @ self.rest_proj.T  # [n, C]
        return hidden.T[None]


_QUANTIZERS: weakref.WeakKeyDictionary[nn.Module, _Quantizer] = weakref.WeakKeyDictionary()
"""Quantizer module -> its tables (``_Quantizer.of``); an entry goes with its model."""


class _SlidingWindowTransformer:
    """The pre-transformer with a per-layer cache of the last ``window - 1`` rotated keys and values."""

    def __init__(self, model: nn.Module):
        config = model.config
        self.window = config.sliding_window  # a query at position q sees keys at q-window+1 .. q
        self.keep = self.window - 1
        self.eps = config.rms_norm_eps
        attn0 = model.layers[0].self_attn
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.scaling = attn0.head_dim, attn0.scaling
        self.input_proj = (model.input_proj.weight.detach(), model.input_proj.bias.detach())
        self.output_proj = (model.output_proj.weight.detach(), model.output_proj.bias.detach())
        self.final_norm = model.norm.weight.detach()
        self.inv_freq = model.rotary_emb.inv_freq.detach().float()  # [D/2], the reference computes angles in fp32
        self.rope_scale = model.rotary_emb.attention_scaling
        self.layers = [self._layer_weights(layer) for layer in model.layers]
        weight = self.input_proj[0]
        shape = (len(self.layers), 1, self.kv_heads, self.keep, self.head_dim)
        self.keys = weight.new_zeros(shape)  # [L, 1, H_kv, window-1, D], RoPE already applied
        self.values = weight.new_zeros(shape)  # [L, 1, H_kv, window-1, D]
        self.key_positions = torch.zeros(self.keep, dtype=torch.long, device=weight.device)  # [window-1]
        self.next_position = torch.zeros((), dtype=torch.long, device=weight.device)
        self.reset()

    @staticmethod
    def _layer_weights(layer: nn.Module) -> dict:
        attn, mlp = layer.self_attn, layer.mlp

        def linear(module: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
            return module.weight.detach(), _detached(module.bias)

        return {
            "norm_in": layer.input_layernorm.weight.detach(),
            "norm_post": layer.post_attention_layernorm.weight.detach(),
            "q": linear(attn.q_proj), "k": linear(attn.k_proj), "v": linear(attn.v_proj), "o": linear(attn.o_proj),
            "gate": linear(mlp.gate_proj), "up": linear(mlp.up_proj), "down": linear(mlp.down_proj), "act": mlp.act_fn,
            "scale_attn": layer.self_attn_layer_scale.scale.detach(), "scale_mlp": layer.mlp_layer_scale.scale.detach(),
        }

    def reset(self) -> None:
        self.keys.zero_()
        self.values.zero_()
        self.key_positions.fill_(-(2**40))  # empty slots: never inside any query's window
        self.next_position.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [1, n, latent] -> [1, n, latent]
        n = x.shape[1]
        positions = self.next_position + torch.arange(n, device=x.device)  # [n] absolute positions
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # [n, D/2]
        angles = torch.cat((angles, angles), dim=-1)  # [n, D]
        cos = (angles.cos() * self.rope_scale).to(x.dtype)
        sin = (angles.sin() * self.rope_scale).to(x.dtype)
        key_positions = torch.cat((self.key_positions, positions))  # [window-1 + n]
        offset = positions[:, None] - key_positions[None, :]  # [n, window-1 + n]
        mask = (offset >= 0) & (offset < self.window)  # causal, sliding window

        h = F.linear(x, *self.input_proj)  # [1, n, hidden]
        for index, w in enumerate(self.layers):
            h = h + w["scale_attn"] * self._attention(index, w, _rms_norm(h, w["norm_in"], self.eps), cos, sin, mask)
            g = _rms_norm(h, w["norm_post"], self.eps)
            h = h + w["scale_mlp"] * F.linear(w["act"](F.linear(g, *w["gate"])) * F.linear(g, *w["up"]), *w["down"])
        self.key_positions.copy_(key_positions[-self.keep :])
        self.next_position.add_(n)
        return F.linear(_rms_norm(h, self.final_norm, self.eps), *self.output_proj)

    def _attention(self, index: int, w: dict, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:  # [1, n, hidden] -> [1, n, hidden]
        n = x.shape[1]
        q = F.linear(x, *w["q"]).view(1, n, self.heads, self.head_dim).transpose(1, 2)  # [1, H, n, D]
        k = F.linear(x, *w["k"]).view(1, n, self.kv_heads, self.head_dim).transpose(1, 2)  # [1, H_kv, n, D]
        v = F.linear(x, *w["v"]).view(1, n, self.kv_heads, self.head_dim).transpose(1, 2)  # [1, H_kv, n, D]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        keys = torch.cat((self.keys[index], k), dim=2)  # [1, H_kv, window-1 + n, D]
        values = torch.cat((self.values[index], v), dim=2)
        self.keys[index].copy_(keys[:, :, -self.keep :])
        self.values[index].copy_(values[:, :, -self.keep :])
        if self.kv_heads != self.heads:
            keys = keys.repeat_interleave(self.heads // self.kv_heads, dim=1)  # [1, H, window-1 + n, D]
            values = values.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)  # [1, H, n, D]
        return F.linear(out.transpose(1, 2).reshape(1, n, self.heads * self.head_dim), *w["o"])


def find_codec_decoder(model: object) -> nn.Module:
    """The ``Qwen3TTSTokenizerV2Decoder`` inside a Qwen3TTSModel, its ``.model``, a speech tokenizer, or itself."""
    for path in ("", "decoder", "model.decoder", "speech_tokenizer.model.decoder",
                 "model.speech_tokenizer.model.decoder"):
        found = model
        for attribute in filter(None, path.split(".")):
            found = getattr(found, attribute, None)
        if all(hasattr(found, name) for name in ("quantizer", "pre_conv", "pre_transformer", "upsample", "decoder")):
            return found
    raise TypeError(
        f"no 12 Hz codec decoder found in {type(model).__name__}: pass an s2s.qwen3_tts SpeechTokenizer or "
        "CodecDecoder, or a qwen_tts.Qwen3TTSModel, Qwen3TTSTokenizerV2Model or Qwen3TTSTokenizerV2Decoder"
    )


class StreamingCodecDecoder:
    """Decodes 12 Hz code frames chunk by chunk into exactly the audio of a one-shot decode of all frames."""

    def __init__(self, speech_tokenizer_model: object):
        decoder = find_codec_decoder(speech_tokenizer_model)
        config = decoder.config
        self.num_quantizers = config.num_quantizers
        self.samples_per_frame = int(decoder.total_upsample)
        self.device = decoder.pre_conv.conv.weight.device
        self._quantizer = _Quantizer.of(decoder.quantizer)  # read-only: shared by the decoders of one model
        self._pre_conv = _CausalConv(decoder.pre_conv)
        self._transformer = _SlidingWindowTransformer(decoder.pre_transformer)
        self._convs = _Sequence([_stream_part(stage) for stage in (*decoder.upsample, *decoder.decoder)])
        self.frames_decoded = 0
        """Frames decoded since the last reset, context included (host-side count)."""

    @torch.inference_mode()
    def reset(self, context_codes: torch.Tensor | None = None) -> None:
        """Start a new utterance; ``context_codes`` [T, 16] (a voice-clone reference) are decoded and their audio
        dropped, so the next frames continue from them."""
        self._pre_conv.reset()
        self._transformer.reset()
        self._convs.reset()
        self.frames_decoded = 0
        if context_codes is not None and len(context_codes):
            self.decode(context_codes)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio of the next frames: codes [n, 16] -> float32 [n * 1920] at 24 kHz."""
        if codes.ndim != 2 or codes.shape[1] != self.num_quantizers:
            raise ValueError(f"codes must be [frames, {self.num_quantizers}], got {tuple(codes.shape)}")
        if codes.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float32, device=self.device)
        hidden = self._pre_conv(self._quantizer(codes.to(self.device)))  # [1, latent, n]
        hidden = self._transformer(hidden.transpose(1, 2)).transpose(1, 2)  # [1, latent, n]
        wav = self._convs(hidden).clamp(min=-1, max=1)  # [1, 1, n * 1920]
        self.frames_decoded += codes.shape[0]
        return wav.reshape(-1).float()
