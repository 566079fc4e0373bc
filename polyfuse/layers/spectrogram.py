"""Log-mel spectrogram and MFCC in plain torch, exportable to ONNX.

The STFT is a ``conv1d`` whose fixed kernels (buffers) are the Hann-windowed DFT basis, so no
``torch.stft`` is needed. Frames are centred with *zero* padding (not reflection): a waveform
then gives the same frames whether or not it is followed by extra zero padding, which keeps
batched, padded audio identical to the unpadded clip.

Conventions: periodic Hann window of length ``n_fft``; frame ``t`` covers samples
``[t*hop - n_fft//2, t*hop + n_fft//2)``; a waveform of S samples has ``1 + S // hop`` frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MEL_SCALES = ("slaney", "htk")


def hz_to_mel(freq: Tensor, scale: str = "slaney") -> Tensor:
    """Hertz -> mel. ``htk``: 2595 log10(1 + f/700). ``slaney``: linear below 1 kHz, log above."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    linear = freq / f_sp
    log = min_log_mel + torch.log(torch.clamp(freq, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(freq >= min_log_hz, log, linear)


def mel_to_hz(mel: Tensor, scale: str = "slaney") -> Tensor:
    """Mel -> hertz (inverse of ``hz_to_mel``)."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(
    n_fft: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
    norm: str | None = "slaney",
) -> Tensor:
    """Triangular mel filters [n_fft//2 + 1, n_mels] (float64), as librosa builds them.

    ``norm="slaney"`` scales each triangle to unit area (2 / bandwidth in Hz); ``None`` keeps peak 1.
    """
    if scale not in MEL_SCALES:
        raise ValueError(f"unknown mel scale {scale!r}; allowed: {', '.join(MEL_SCALES)}")
    if norm not in ("slaney", None):
        raise ValueError(f"unknown mel norm {norm!r}; allowed: slaney, None")
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64), scale)),
        float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64), scale)),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz(mel_edges, scale)  # [n_mels+2]
    widths = hz_edges[1:] - hz_edges[:-1]  # [n_mels+1]
    ramps = hz_edges.unsqueeze(1) - fft_freqs.unsqueeze(0)  # [n_mels+2, n_freqs]
    lower = -ramps[:-2] / widths[:-1].unsqueeze(1)
    upper = ramps[2:] / widths[1:].unsqueeze(1)
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)  # [n_mels, n_freqs]
    if norm == "slaney":
        weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2])).unsqueeze(1)
    return weights.T.contiguous()


def dct_matrix(n_mfcc: int, n_mels: int) -> Tensor:
    """Orthonormal DCT-II basis [n_mels, n_mfcc] (float64): ``mfcc = log_mel @ dct``."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)
    basis = torch.cos(math.pi / n_mels * (n.unsqueeze(1) + 0.5) * k.unsqueeze(0))  # [n_mels, n_mfcc]
    basis[:, 0] *= 1.0 / math.sqrt(2.0)
    return basis * math.sqrt(2.0 / n_mels)


def num_frames(num_samples: Tensor | int, hop_length: int) -> Tensor | int:
    """Frames of a centred STFT: ``1 + S // hop`` (0 for an empty waveform when given a tensor)."""
    if isinstance(num_samples, int):
        return 1 + num_samples // hop_length
    return torch.where(num_samples > 0, 1 + torch.div(num_samples, hop_length, rounding_mode="floor"), 0)


class PowerSpectrogram(nn.Module):
    """|STFT|^power via conv1d with Hann-windowed DFT kernels: waveform [B,S] -> [B, n_fft//2+1, frames]."""

    def __init__(self, n_fft: int = 512, hop_length: int = 160, power: float = 2.0) -> None:
        super().__init__()
        if n_fft < 2 or hop_length < 1:
            raise ValueError(f"need n_fft >= 2 and hop_length >= 1, got n_fft={n_fft}, hop_length={hop_length}")
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
        n_freqs = n_fft // 2 + 1
        t = torch.arange(n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * t / n_fft)  # periodic Hann
        angle = 2 * math.pi * torch.arange(n_freqs, dtype=torch.float64).unsqueeze(1) * t.unsqueeze(0) / n_fft
        kernels = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=0) * window  # [2*n_freqs, n_fft]
        self.register_buffer("kernels", kernels.unsqueeze(1).float(), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        pad = self.n_fft // 2
        x = F.pad(waveform.unsqueeze(1), (pad, pad))  # [B,1,S+2*pad], zero padding
        spec = F.conv1d(x, self.kernels.to(x.dtype), stride=self.hop_length)  # [B, 2*n_freqs, frames]
        real, imag = spec.chunk(2, dim=1)
        power = real**2 + imag**2
        return power if self.power == 2.0 else power.clamp(min=1e-20) ** (self.power / 2.0)


class LogMelSpectrogram(nn.Module):
    """waveform [B,S] -> log(max(mel power, floor)) [B, n_mels, frames]."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "slaney",
        log_floor: float = 1e-6,
    ) -> None:
        super().__init__()
        self.spectrogram = PowerSpectrogram(n_fft, hop_length)
        self.hop_length, self.n_mels, self.log_floor = hop_length, n_mels, log_floor
        fb = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max, mel_scale)
        self.register_buffer("filterbank", fb.float(), persistent=False)  # [n_freqs, n_mels]

    def forward(self, waveform: Tensor) -> Tensor:
        power = self.spectrogram(waveform)  # [B, n_freqs, T]
        mel = torch.matmul(power.transpose(1, 2), self.filterbank.to(power.dtype)).transpose(1, 2)
        return torch.log(torch.clamp(mel, min=self.log_floor))


class MFCC(nn.Module):
    """waveform [B,S] -> MFCC [B, n_mfcc, frames]: orthonormal DCT-II of the log-mel spectrogram."""

    def __init__(
        self,
        sample_rate: int,
        n_mfcc: int = 13,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "slaney",
        log_floor: float = 1e-6,
    ) -> None:
        super().__init__()
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
        self.log_mel = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, mel_scale, log_floor)
        self.hop_length, self.n_mfcc = hop_length, n_mfcc
        self.register_buffer("dct", dct_matrix(n_mfcc, n_mels).float(), persistent=False)  # [n_mels, n_mfcc]

    def forward(self, waveform: Tensor) -> Tensor:
        log_mel = self.log_mel(waveform)  # [B, n_mels, T]
        return torch.matmul(log_mel.transpose(1, 2), self.dct.to(log_mel.dtype)).transpose(1, 2)
