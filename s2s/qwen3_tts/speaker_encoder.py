"""The Base model's speaker encoder: 24 kHz audio -> log-mel [T, 128] -> ECAPA-TDNN -> x-vector [D_talker].

ECAPA-TDNN (Desplanques et al. 2020): a TDNN layer, three SE-Res2Net blocks, multi-layer feature aggregation
(the blocks' outputs concatenated, then a TDNN), attentive statistics pooling (attention-weighted mean and standard
deviation over time, the attention seeing the global mean and std as well), a 1x1 conv to ``enc_dim``. Every conv
pads "same" with reflection. Parameter names follow the checkpoint's ``speaker_encoder.*`` keys; the computation
follows qwen-tts 0.1.1 op for op, so fp32 embeddings equal the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 24000
N_FFT, HOP, N_MELS, F_MAX = 1024, 256, 128, 12000


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """``speaker_encoder_config`` of config.json; the released files set only enc_dim and sample_rate."""

    enc_dim: int
    sample_rate: int = SAMPLE_RATE
    mel_dim: int = N_MELS
    enc_channels: list[int] = field(default_factory=lambda: [512, 512, 512, 512, 1536])
    enc_kernel_sizes: list[int] = field(default_factory=lambda: [5, 3, 3, 3, 1])
    enc_dilations: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 1])
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128

    @classmethod
    def from_json(cls, data: dict) -> "SpeakerEncoderConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"speaker_encoder_config has unknown keys {sorted(unknown)}; is this a Qwen3-TTS 12 Hz "
                             "Base checkpoint?")
        return cls(**data)


def _conv(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding="same", padding_mode="reflect")


class TDNN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = _conv(c_in, c_out, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, T]
        return F.relu(self.conv(x))


class Res2Net(nn.Module):
    """Channel groups; group i > 0 goes through its TDNN after adding the previous group's output."""

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int):
        super().__init__()
        self.scale = scale
        self.blocks = nn.ModuleList(TDNN(channels // scale, channels // scale, kernel, dilation)
                                    for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for i, part in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 1:
                part = self.blocks[0](part)
            elif i > 1:
                part = self.blocks[i - 1](part + outputs[-1])
            outputs.append(part)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.conv1 = _conv(channels, bottleneck)
        self.conv2 = _conv(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(x.mean(dim=2, keepdim=True)))))  # [B, C, 1]
        return x * gate


class SERes2NetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, scale: int, se: int, kernel: int, dilation: int):
        super().__init__()
        self.tdnn1 = TDNN(c_in, c_out)
        self.res2net_block = Res2Net(c_out, scale, kernel, dilation)
        self.tdnn2 = TDNN(c_out, c_out)
        self.se_block = SqueezeExcitation(c_out, se)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + x


def _weighted_stats(x: torch.Tensor, weights: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    mean = (weights * x).sum(2)  # [B, C]
    std = torch.sqrt((weights * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(eps))
    return mean, std


class AttentiveStatsPooling(nn.Module):
    eps = 1e-12

    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.tdnn = TDNN(channels * 3, attention_channels)
        self.conv = _conv(attention_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, 2C, 1]
        length = x.shape[-1]
        ones = torch.ones(x.shape[0], 1, length, dtype=x.dtype, device=x.device)
        mean, std = _weighted_stats(x, ones / ones.sum(dim=2, keepdim=True), self.eps)  # uniform weights 1/T
        context = torch.cat((x, mean.unsqueeze(2).repeat(1, 1, length), std.unsqueeze(2).repeat(1, 1, length)), dim=1)
        attention = F.softmax(self.conv(torch.tanh(self.tdnn(context))), dim=2)  # [B, C, T]
        mean, std = _weighted_stats(x, attention, self.eps)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


class SpeakerEncoder(nn.Module):
    def __init__(self, cfg: SpeakerEncoderConfig):
        super().__init__()
        self.config = cfg
        ch, k, d = cfg.enc_channels, cfg.enc_kernel_sizes, cfg.enc_dilations
        self.blocks = nn.ModuleList([TDNN(cfg.mel_dim, ch[0], k[0], d[0])])
        self.blocks.extend(SERes2NetBlock(ch[i - 1], ch[i], cfg.enc_res2net_scale, cfg.enc_se_channels, k[i], d[i])
                           for i in range(1, len(ch) - 1))
        self.mfa = TDNN(ch[-1], ch[-1], k[-1], d[-1])
        self.asp = AttentiveStatsPooling(ch[-1], cfg.enc_attention_channels)
        self.fc = _conv(ch[-1] * 2, cfg.enc_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:  # [B, T, mel] -> [B, enc_dim]
        h = mels.transpose(1, 2)
        outputs = []
        for block in self.blocks:
            h = block(h)
            outputs.append(h)
        h = self.mfa(torch.cat(outputs[1:], dim=1))  # multi-layer feature aggregation
        return self.fc(self.asp(h)).squeeze(-1)

    @torch.inference_mode()
    def embed(self, wav: np.ndarray) -> torch.Tensor:
        """Mono float32 audio at ``config.sample_rate`` -> x-vector [enc_dim] (the encoder's device and dtype)."""
        weight = self.fc.weight
        mels = log_mel(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None], self.config.sample_rate)
        return self(mels.transpose(1, 2).to(weight.device, weight.dtype))[0]


def log_mel(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """[B, samples] -> natural-log mel magnitudes [B, 128, frames]: Slaney mel filters (librosa), Hann window 1024,
    hop 256, reflection padding (N_FFT - HOP) / 2 on each side instead of centring, magnitudes floored at 1e-5."""
    basis = torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=N_MELS, fmin=0, fmax=F_MAX))
    pad = (N_FFT - HOP) // 2
    wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(wav, N_FFT, hop_length=HOP, win_length=N_FFT, window=torch.hann_window(N_FFT), center=False,
                      normalized=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)  # [B, N_FFT / 2 + 1, frames]
    return torch.log(torch.clamp(torch.matmul(basis.float(), magnitude), min=1e-5))
