"""Audio encoders over raw waveforms: a log-mel / MFCC front end in torch, then a CNN or a Transformer.

Input: ``waveform`` float [B,S] (zero padded), ``lengths`` long [B] in samples. A frame is valid
when its centre lies inside the clip (frames ``0 .. lengths // hop``); tokens are frames, zero
beyond a clip's length, so padding never changes a clip's output (in eval mode).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import choice, divisible, positive
from polyfuse.encoders.base import Encoder
from polyfuse.layers import (
    MFCC,
    CLSToken,
    LearnedPositionalEmbedding,
    LogMelSpectrogram,
    MaskedBatchNorm,
    TransformerEncoder,
)
from polyfuse.layers.pooling import lengths_to_mask, masked_max, masked_mean, zero_masked
from polyfuse.layers.spectrogram import MEL_SCALES, num_frames
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput


def default_stft(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop): a 25 ms window rounded up to a power of two, a 10 ms hop."""
    return 2 ** math.ceil(math.log2(max(2.0, 0.025 * sample_rate))), max(1, round(0.010 * sample_rate))


class AudioFeatures(nn.Module):
    """waveform [B,S], lengths [B] -> normalized features [B, n_features, T], frame mask [B,T].

    ``features="logmel"`` gives ``n_mels`` bands, ``"mfcc"`` gives ``n_mfcc`` coefficients. The
    features are batch-normalized per band over valid frames and zero at invalid frames.
    """

    def __init__(
        self,
        encoder: str,
        sample_rate: int,
        features: str = "logmel",
        n_mels: int = 64,
        n_mfcc: int = 20,
        n_fft: int | None = None,
        hop: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "slaney",
    ) -> None:
        super().__init__()
        positive(encoder, sample_rate=sample_rate, n_mels=n_mels, n_mfcc=n_mfcc)
        choice(encoder, "features", features, ("logmel", "mfcc"))
        choice(encoder, "mel_scale", mel_scale, MEL_SCALES)
        default_fft, default_hop = default_stft(sample_rate)
        self.n_fft, self.hop = n_fft or default_fft, hop or default_hop
        positive(encoder, n_fft=self.n_fft, hop=self.hop)
        if features == "mfcc":
            if n_mfcc > n_mels:
                raise ConfigError(f"n_mfcc: {n_mfcc} coefficients need n_mels >= {n_mfcc} (n_mels={n_mels})")
            self.transform: nn.Module = MFCC(sample_rate, n_mfcc, self.n_fft, self.hop, n_mels, f_min, f_max, mel_scale)
            self.num_features = n_mfcc
        else:
            self.transform = LogMelSpectrogram(sample_rate, self.n_fft, self.hop, n_mels, f_min, f_max, mel_scale)
            self.num_features = n_mels
        self.norm = MaskedBatchNorm(self.num_features)

    def frames(self, num_samples: int) -> int:
        """Frames of a waveform of ``num_samples`` samples."""
        return int(num_frames(num_samples, self.hop))

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.transform(waveform)  # [B,F,T]
        mask = lengths_to_mask(num_frames(lengths.long(), self.hop), feats.shape[-1])  # [B,T]
        return self.norm(feats, mask), mask


@ENCODERS.register("audio_cnn", modalities=("audio",))
class AudioCNNEncoder(Encoder):
    """Log-mel (or MFCC) image [features x time] -> 2-D conv stages (3x3 conv, masked BN, ReLU,
    pool over frequency only) -> mean over frequency -> one token per frame.

    Time resolution is kept, so each frame stays a token and padding is masked exactly.
    ``pool``: masked ``mean`` or ``max`` over valid frames.
    """

    def __init__(
        self,
        sample_rate: int,
        dim: int = 128,
        features: str = "logmel",
        n_mels: int = 64,
        n_mfcc: int = 20,
        n_fft: int | None = None,
        hop: int | None = None,
        channels: tuple[int, ...] = (16, 32, 64),
        dropout: float = 0.1,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        positive("audio_cnn", dim=dim)
        if not channels:
            raise ConfigError("channels: expected a list of stage widths such as [16, 32, 64]")
        self.pool = choice("audio_cnn", "pool", pool, ("mean", "max"))
        self.features = AudioFeatures("audio_cnn", sample_rate, features, n_mels, n_mfcc, n_fft, hop)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = 1
        for out in channels:
            self.convs.append(nn.Conv2d(width, out, 3, padding=1, bias=False))
            self.norms.append(MaskedBatchNorm(out))
            width = out
        # frequency halves per stage while it is at least 2 bins tall
        self.freq_pool = nn.MaxPool2d((2, 1))
        self.pool_stages = [self.features.num_features >> i >= 2 for i in range(len(channels))]
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, dim)
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        x, mask = self.features(inputs["waveform"], inputs["lengths"])  # [B,F,T], [B,T]
        x = x.unsqueeze(1)  # [B,1,F,T]
        for conv, norm, pool_freq in zip(self.convs, self.norms, self.pool_stages):
            x = torch.relu(norm(conv(x), mask))  # padded frames back to zero
            if pool_freq:
                x = self.freq_pool(x)
        tokens = self.proj(self.drop(x.mean(dim=2)).transpose(1, 2))  # [B,T,D]
        tokens = zero_masked(self.norm(tokens), mask)
        pooled = masked_mean(tokens, mask) if self.pool == "mean" else masked_max(tokens, mask)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=mask)


@ENCODERS.register("audio_transformer", modalities=("audio",))
class AudioTransformerEncoder(Encoder):
    """Log-mel (or MFCC) frames -> Linear to ``dim`` -> learned positions -> pre-norm blocks.

    ``pool``: masked ``mean`` over frames or a ``cls`` token. Positions cover ``num_samples``
    (from the audio processor) or ``max_frames`` when clips have no fixed length.
    """

    def __init__(
        self,
        sample_rate: int,
        dim: int = 128,
        num_samples: int | None = None,
        features: str = "logmel",
        n_mels: int = 64,
        n_mfcc: int = 20,
        n_fft: int | None = None,
        hop: int | None = None,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        pool: str = "mean",
        max_frames: int = 1024,
    ) -> None:
        super().__init__()
        positive("audio_transformer", dim=dim, depth=depth, heads=heads, max_frames=max_frames)
        divisible("audio_transformer", dim, heads)
        self.pool = choice("audio_transformer", "pool", pool, ("mean", "cls"))
        self.features = AudioFeatures("audio_transformer", sample_rate, features, n_mels, n_mfcc, n_fft, hop)
        if num_samples is not None:
            max_frames = self.features.frames(num_samples)
        self.proj = nn.Linear(self.features.num_features, dim)
        self.positions = LearnedPositionalEmbedding(max_frames, dim)
        self.cls = CLSToken(dim) if pool == "cls" else None
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(dim, depth, heads, mlp_ratio, dropout)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        feats, mask = self.features(inputs["waveform"], inputs["lengths"])  # [B,F,T], [B,T]
        x = self.drop(self.positions(self.proj(feats.transpose(1, 2))))  # [B,T,D]
        if self.cls is not None:
            x, full_mask = self.cls(x, mask)
            x = self.encoder(x, full_mask)
            tokens, pooled = x[:, 1:], x[:, 0]
        else:
            tokens = self.encoder(x, mask)
            pooled = masked_mean(tokens, mask)
        return EncoderOutput(tokens=zero_masked(tokens, mask), pooled=pooled, mask=mask)
