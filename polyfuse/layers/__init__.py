"""Reusable neural-network layers: attention, Transformer blocks, MLPs, positions, patches,
masked pooling, padding-safe RNNs and an ONNX-exportable log-mel / MFCC front end."""

from polyfuse.layers.attention import MultiHeadAttention, reference_attention, safe_key_mask
from polyfuse.layers.mlp import MLP, FeedForward
from polyfuse.layers.norm import MaskedBatchNorm
from polyfuse.layers.patch import PatchEmbed
from polyfuse.layers.pooling import (
    gather_last,
    lengths_to_mask,
    masked_max,
    masked_mean,
    masked_min,
    masked_std,
    zero_masked,
)
from polyfuse.layers.positional import CLSToken, LearnedPositionalEmbedding, sinusoidal_positions
from polyfuse.layers.rnn import MaskedRNN, reverse_within_length
from polyfuse.layers.spectrogram import MFCC, LogMelSpectrogram, PowerSpectrogram, dct_matrix, mel_filterbank
from polyfuse.layers.transformer import CrossAttentionBlock, TransformerBlock, TransformerEncoder

__all__ = [
    "CLSToken", "CrossAttentionBlock", "FeedForward", "LearnedPositionalEmbedding", "LogMelSpectrogram",
    "MFCC", "MLP", "MaskedBatchNorm", "MaskedRNN", "MultiHeadAttention", "PatchEmbed", "PowerSpectrogram", "TransformerBlock",
    "TransformerEncoder", "dct_matrix", "gather_last", "lengths_to_mask", "masked_max", "masked_mean",
    "masked_min", "masked_std", "mel_filterbank", "reference_attention", "reverse_within_length",
    "safe_key_mask", "sinusoidal_positions", "zero_masked",
]
