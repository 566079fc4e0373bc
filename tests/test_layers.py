"""Layers: log-mel / MFCC against a NumPy/SciPy reference, attention against a naive version,
padding-safe RNNs against torch's own bidirectional RNN, masked pooling and batch norm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

from polyfuse.layers import (
    MFCC,
    CrossAttentionBlock,
    LogMelSpectrogram,
    MaskedBatchNorm,
    MaskedRNN,
    MultiHeadAttention,
    PatchEmbed,
    PowerSpectrogram,
    TransformerBlock,
    TransformerEncoder,
    masked_max,
    masked_mean,
    masked_min,
    masked_std,
    mel_filterbank,
    reference_attention,
    reverse_within_length,
)
from polyfuse.layers.spectrogram import hz_to_mel, mel_to_hz, num_frames

# ----------------------------------------------------------------------------- NumPy reference


def np_hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp, brk = 200.0 / 3, 1000.0
    return np.where(f >= brk, brk / f_sp + np.log(np.maximum(f, brk) / brk) / (np.log(6.4) / 27.0), f / f_sp)


def np_mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, brk = 200.0 / 3, 1000.0
    return np.where(m >= brk / f_sp, brk * np.exp(np.log(6.4) / 27.0 * (m - brk / f_sp)), f_sp * m)


def np_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool, slaney_norm: bool) -> np.ndarray:
    """Triangular filters [n_mels, n_freqs], each filter evaluated point by point."""
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = np_mel_to_hz(np.linspace(np_hz_to_mel(fmin, htk), np_hz_to_mel(fmax, htk), n_mels + 2), htk)
    out = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for j, f in enumerate(freqs):
            if left <= f <= centre:
                out[m, j] = (f - left) / (centre - left)
            elif centre < f <= right:
                out[m, j] = (right - f) / (right - centre)
        if slaney_norm:
            out[m] *= 2.0 / (right - left)
    return out


def np_power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[n_freqs, frames] from zero-padded centred frames, periodic Hann, rfft."""
    padded = np.pad(wave.astype(np.float64), (n_fft // 2, n_fft // 2))
    frames = 1 + len(wave) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    cols = [np.abs(np.fft.rfft(padded[t * hop : t * hop + n_fft] * window)) ** 2 for t in range(frames)]
    return np.stack(cols, axis=1)


def np_log_mel(wave: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int, floor: float, htk: bool = False) -> np.ndarray:
    fb = np_mel_filters(sr, n_fft, n_mels, 0.0, sr / 2, htk, slaney_norm=True)
    return np.log(np.maximum(fb @ np_power_spectrogram(wave, n_fft, hop), floor))


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(1500) / 8000.0
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t) + 0.05 * rng.standard_normal(t.size))


# ----------------------------------------------------------------------------- spectrogram


def test_mel_scale_known_values() -> None:
    f = torch.tensor([0.0, 500.0, 1000.0, 4000.0], dtype=torch.float64)
    slaney = hz_to_mel(f, "slaney")
    assert slaney[2].item() == pytest.approx(15.0)  # 1 kHz is 15 slaney mels
    assert slaney[1].item() == pytest.approx(7.5)  # linear below 1 kHz
    assert hz_to_mel(f, "htk")[2].item() == pytest.approx(1000.0, abs=0.1)  # 1 kHz is about 1000 htk mels
    for scale in ("slaney", "htk"):
        assert torch.allclose(mel_to_hz(hz_to_mel(f, scale), scale), f)
        np.testing.assert_allclose(hz_to_mel(f, scale).numpy(), np_hz_to_mel(f.numpy(), scale == "htk"), rtol=1e-12)


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_matches_reference(scale: str, norm: str | None) -> None:
    fb = mel_filterbank(256, 20, 8000, f_min=50.0, f_max=3800.0, scale=scale, norm=norm)
    ref = np_mel_filters(8000, 256, 20, 50.0, 3800.0, htk=scale == "htk", slaney_norm=norm == "slaney")
    assert fb.shape == (129, 20)
    np.testing.assert_allclose(fb.numpy().T, ref, atol=1e-12)


def test_power_spectrogram_matches_rfft(wave: np.ndarray) -> None:
    spec = PowerSpectrogram(n_fft=256, hop_length=80)
    out = spec(torch.from_numpy(wave).float()[None])[0].numpy()
    ref = np_power_spectrogram(wave, 256, 80)
    assert out.shape == ref.shape == (129, 1 + 1500 // 80)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.max())


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_log_mel_matches_reference(wave: np.ndarray, scale: str) -> None:
    module = LogMelSpectrogram(8000, n_fft=256, hop_length=80, n_mels=32, mel_scale=scale, log_floor=1e-6)
    ref = np_log_mel(wave, 8000, 256, 80, 32, 1e-6, htk=scale == "htk")
    out = module(torch.from_numpy(wave).float()[None])[0].numpy()
    assert out.shape == ref.shape == (32, 19)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_mfcc_matches_scipy_dct(wave: np.ndarray) -> None:
    module = MFCC(8000, n_mfcc=13, n_fft=256, hop_length=80, n_mels=32, log_floor=1e-6)
    ref = scipy.fft.dct(np_log_mel(wave, 8000, 256, 80, 32, 1e-6), type=2, norm="ortho", axis=0)[:13]
    out = module(torch.from_numpy(wave).float()[None])[0].numpy()
    assert out.shape == ref.shape == (13, 19)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_spectrogram_ignores_trailing_zero_padding(wave: np.ndarray) -> None:
    module = LogMelSpectrogram(8000, n_fft=256, hop_length=80, n_mels=16)
    x = torch.from_numpy(wave).float()[None]
    padded = torch.cat([x, torch.zeros(1, 700)], dim=1)
    frames = int(num_frames(x.shape[1], 80))
    torch.testing.assert_close(module(padded)[..., :frames], module(x))
    assert num_frames(torch.tensor([0, 79, 80, 1500]), 80).tolist() == [0, 1, 2, 19]


# ----------------------------------------------------------------------------- attention


def naive_multihead(mha: MultiHeadAttention, q_in, kv_in, key_mask):
    """Per-row, per-head loops over valid keys only, with the module's own projections."""
    q, k, v = mha.q_proj(q_in), mha.k_proj(kv_in), mha.v_proj(kv_in)
    b, tq, d = q.shape
    h, dh = mha.heads, mha.head_dim
    out = torch.zeros(b, tq, d, dtype=q.dtype)
    for i in range(b):
        valid = key_mask[i].nonzero().flatten()
        if len(valid) == 0:
            continue  # no key: zero attention output
        for head in range(h):
            sl = slice(head * dh, (head + 1) * dh)
            scores = q[i, :, sl] @ k[i, valid, sl].T / math.sqrt(dh)
            out[i, :, sl] = torch.softmax(scores, dim=-1) @ v[i, valid, sl]
    out = mha.out_proj(out)
    return out * key_mask.any(-1).to(out.dtype)[:, None, None]


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_matches_naive(need_weights: bool) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, heads=4, kv_dim=12).eval()
    q, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 12)
    key_mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [0] * 7], dtype=torch.bool)
    with torch.no_grad():
        out, weights = mha(q, kv, kv, key_mask=key_mask, need_weights=need_weights)
        ref = naive_multihead(mha, q, kv, key_mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all() and out[2].abs().max() == 0  # all-masked row: zero, not NaN
    if need_weights:
        assert weights is not None and weights.shape == (3, 4, 5, 7)
        assert (weights[1, :, :, 3:] == 0).all()  # masked keys get no weight
        torch.testing.assert_close(weights[:2].sum(-1), torch.ones(2, 4, 5))
        assert (weights[2] == 0).all()
    else:
        assert weights is None


def test_reference_attention_and_gradients_with_empty_rows() -> None:
    q = torch.randn(2, 3, 8, requires_grad=True)
    kv = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    out = reference_attention(q, kv, kv, mask)
    manual = torch.softmax(q[0] @ kv[0, :2].T / math.sqrt(8), -1) @ kv[0, :2]
    torch.testing.assert_close(out[0], manual)
    mha = MultiHeadAttention(8, heads=2)
    y, _ = mha(q, kv, key_mask=mask)
    (y.sum() + out.sum()).backward()
    assert torch.isfinite(q.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters())


def test_transformer_block_masks_padding() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, heads=4, mlp_ratio=2.0).eval()
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    noisy = x.clone()
    noisy[0, 4:] = 100.0  # garbage in padded positions must not reach valid ones
    with torch.no_grad():
        a, b = block(x, mask), block(noisy, mask)
        torch.testing.assert_close(a[0, :4], b[0, :4])
        torch.testing.assert_close(a[0, :4], block(x[:1, :4])[0])  # same as without padding
        y, w = block.forward_with_weights(x, mask)
        torch.testing.assert_close(y, a)
        assert w.shape == (2, 4, 6, 6) and (w[0, ..., 4:] == 0).all()
        encoder = TransformerEncoder(16, depth=2, heads=4).eval()
        out, weights = encoder.forward_with_weights(x, mask)
        torch.testing.assert_close(out, encoder(x, mask))
        assert len(weights) == 2


def test_cross_attention_block_shapes_and_empty_context() -> None:
    block = CrossAttentionBlock(16, heads=2, context_dim=8)
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    y, w = block(x, ctx, mask, need_weights=True)
    assert y.shape == (2, 3, 16) and w is not None and w.shape == (2, 2, 3, 5)
    assert torch.isfinite(y).all()


# ----------------------------------------------------------------------------- RNN, pooling, norm


def test_reverse_within_length() -> None:
    x = torch.arange(10.0).view(2, 5)
    lengths = torch.tensor([3, 0])
    rev = reverse_within_length(x, lengths)
    assert rev.tolist() == [[2.0, 1.0, 0.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]]
    torch.testing.assert_close(reverse_within_length(rev, lengths), x)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_masked_bidirectional_rnn_equals_torch_on_unpadded_rows(cell: str) -> None:
    torch.manual_seed(0)
    rnn = MaskedRNN(4, 6, cell=cell, layers=2, bidirectional=True).eval()
    ref = getattr(nn, cell.upper())(4, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    with torch.no_grad():  # copy our per-direction weights into torch's fused RNN
        for layer in range(2):
            for name, p in rnn.forward_layers[layer].named_parameters():
                getattr(ref, name.replace("l0", f"l{layer}")).copy_(p)
            for name, p in rnn.backward_layers[layer].named_parameters():
                getattr(ref, name.replace("l0", f"l{layer}") + "_reverse").copy_(p)
    x = torch.randn(3, 7, 4)
    lengths = torch.tensor([7, 4, 0])
    with torch.no_grad():
        out, last = rnn(x, lengths)
        for i in (0, 1):
            n = int(lengths[i])
            expected, h = ref(x[i : i + 1, :n])
            h = h[0] if cell == "lstm" else h
            torch.testing.assert_close(out[i, :n], expected[0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(last[i], torch.cat([h[-2, 0], h[-1, 0]]), atol=1e-6, rtol=1e-5)
        assert (out[1, 4:] == 0).all() and (out[2] == 0).all() and (last[2] == 0).all()


def test_masked_pooling() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [6.0], [7.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    assert masked_mean(x, mask).flatten().tolist() == [2.0, 0.0]
    assert masked_max(x, mask).flatten().tolist() == [3.0, 0.0]
    assert masked_min(x, mask).flatten().tolist() == [1.0, 0.0]
    std = masked_std(x, mask, eps=0.0).flatten()
    assert std.tolist() == [1.0, 0.0]


def test_masked_batch_norm_uses_valid_steps_only() -> None:
    torch.manual_seed(0)
    norm = MaskedBatchNorm(3, momentum=1.0)
    x = torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    x_noisy = x.masked_fill(~mask[:, None, :], 1e3)
    out = norm(x_noisy, mask)
    valid = torch.cat([x[0, :, :3], x[1, :, :2]], dim=1)  # [C, 5 valid steps]
    ref = nn.functional.batch_norm(valid[None], None, None, training=True, eps=1e-5)[0]
    torch.testing.assert_close(torch.cat([out[0, :, :3], out[1, :, :2]], dim=1), ref)
    assert (out[0, :, 3:] == 0).all()
    torch.testing.assert_close(norm.running_mean, valid.mean(1))
    torch.testing.assert_close(norm.running_var, valid.var(1, unbiased=True))
    norm.eval()
    expected = (x - valid.mean(1)[None, :, None]) / torch.sqrt(valid.var(1)[None, :, None] + 1e-5) * mask[:, None]
    torch.testing.assert_close(norm(x, mask), expected)
    before = norm.running_mean.clone()
    norm.train()(x, torch.zeros(2, 5, dtype=torch.bool))  # an all-padding batch leaves the estimates alone
    torch.testing.assert_close(norm.running_mean, before)


def test_patch_embed_shape() -> None:
    patches = PatchEmbed(3, 8, patch_size=4)
    assert patches(torch.randn(2, 3, 16, 12)).shape == (2, 12, 8)
    assert patches.num_patches(16, 12) == 12


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), float("-inf")])
def test_pooling_helpers_ignore_nan_and_inf_at_masked_positions(fill: float) -> None:
    from polyfuse.layers import pooling

    torch.manual_seed(0)
    tokens = torch.randn(3, 4, 5)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False], [False, False, False, False]])
    dirty = torch.where(mask[..., None], tokens, torch.full_like(tokens, fill))
    clean = torch.where(mask[..., None], tokens, torch.zeros_like(tokens))
    lengths = torch.tensor([2, 1, 0])
    for name in ("masked_mean", "masked_max", "masked_min", "masked_std", "zero_masked"):
        fn = getattr(pooling, name)
        got, expected = fn(dirty, mask), fn(clean, mask)
        assert torch.isfinite(got).all(), f"{name}: {fill} leaked"
        torch.testing.assert_close(got, expected, msg=f"{name} changed")
    prefix = pooling.lengths_to_mask(lengths, 4)
    dirty = torch.where(prefix[..., None], tokens, torch.full_like(tokens, fill))
    assert torch.isfinite(pooling.gather_last(dirty, lengths)).all()
    assert (pooling.gather_last(dirty, lengths)[2] == 0).all()
