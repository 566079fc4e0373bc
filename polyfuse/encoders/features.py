"""Features-first encoders: a fixed extractor (computed once per row, cacheable) + a learned linear map.

A ``FeatureEncoder`` splits into

- ``extract(inputs) -> [B, F]``: fixed features (random convolutions, statistics, pixels, a frozen
  pretrained backbone); never trained, so the trainer computes it once per row and caches it
  (``polyfuse.train.features``);
- ``fit_extractor(inputs)``: optional, learns the extractor's data-dependent constants (MiniRocket
  biases) from a sample of training rows before any feature is computed;
- ``fit_scaler(features)``: per-feature standardization fitted on the training rows' features;
- ``from_features(features) -> EncoderOutput``: standardize -> dropout -> Linear(F, dim); one token.

``forward(inputs)`` uses ``inputs["features"]`` when the batch carries precomputed features,
else runs ``extract``, so a saved model predicts from raw rows like any other encoder.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import choice, positive
from polyfuse.encoders.base import Encoder
from polyfuse.encoders.extraction_memo import MEMO
from polyfuse.encoders.pretrained_image import IMAGENET_MEAN, IMAGENET_STD
from polyfuse.layers.pooling import masked_max, masked_mean, masked_min, masked_std
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput

FEATURES_KEY = "features"


class FeatureEncoder(Encoder):
    """Base class: subclasses set ``feature_dim`` and implement ``extract``; see the module docstring."""

    feature_dim: int

    def _init_head(self, feature_dim: int, dim: int | None, dropout: float) -> None:
        self.feature_dim = int(feature_dim)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.drop = nn.Dropout(float(dropout))
        self.proj = nn.Linear(feature_dim, dim) if dim is not None else nn.Identity()
        self.output_dim = int(dim) if dim is not None else int(feature_dim)

    # ------------------------------------------------------------------ the fixed part
    def extract(self, inputs: dict[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def present_rows(self, inputs: dict[str, Tensor]) -> Tensor | None:
        """Bool [B]: rows whose input is there (None: the batch's present mask decides)."""
        return None

    def fit_extractor(self, inputs: dict[str, Tensor]) -> None:
        """Learn data-dependent constants of ``extract`` from a batch of training rows (default: none)."""

    def fit_scaler(self, features: Tensor, present: Tensor | None = None) -> None:
        """Per-feature mean / std of the training rows' features [N, F] (rows with ``present`` False skipped)."""
        rows = features if present is None else features[present.bool()]
        if rows.shape[0] == 0:
            return
        rows = rows.double()
        mean = rows.mean(dim=0)
        std = rows.std(dim=0, unbiased=False) if rows.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(std.float())

    def extractor_fingerprint(self) -> str:
        """SHA-256 over the class, its options and every fixed tensor: the feature cache's key."""
        digest = hashlib.sha256(type(self).__name__.encode())
        digest.update(repr(sorted(self.extractor_options().items())).encode())
        for name, tensor in sorted(self.extractor_state().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def extractor_options(self) -> dict:
        return {}

    def extractor_state(self) -> dict[str, Tensor]:
        """The tensors ``extract`` depends on (everything but the scaler and the learned map)."""
        skip = ("feature_mean", "feature_std", "proj.", "drop.")
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    # ------------------------------------------------------------------ the learned part
    def from_features(self, features: Tensor, present: Tensor | None = None) -> EncoderOutput:
        scaled = (features.float() - self.feature_mean) / self.feature_std  # [B, F]
        scaled = torch.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).clamp(-20.0, 20.0)
        pooled = self.proj(self.drop(scaled))  # [B, D]
        if present is not None:
            pooled = torch.where(present[:, None], pooled, torch.zeros_like(pooled))
            mask = present[:, None]
        else:
            mask = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
        return EncoderOutput(tokens=pooled.unsqueeze(1), pooled=pooled, mask=mask)

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        present = self.present_rows(inputs) if FEATURES_KEY not in inputs else None
        if FEATURES_KEY in inputs:
            features = inputs[FEATURES_KEY]
        elif MEMO.active and not self.training and not torch.is_grad_enabled():  # evaluation: each batch extracted once
            features = MEMO.get_or_extract(self._memo_fingerprint(), inputs, lambda: self.extract(inputs))
        else:
            with torch.no_grad():
                features = self.extract(inputs)
        return self.from_features(features, present)

    def _memo_fingerprint(self) -> str:
        """``extractor_fingerprint``, recomputed only when a fixed tensor was replaced or changed in place."""
        skip = ("feature_mean", "feature_std", "proj.", "drop.")
        version = (repr(sorted(self.extractor_options().items())), *(
            (name, t.data_ptr(), t._version)
            for name, t in itertools.chain(self.named_parameters(), self.named_buffers()) if not name.startswith(skip)
        ))
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is None or cached[0] != version:
            cached = (version, self.extractor_fingerprint())
            object.__setattr__(self, "_fingerprint_cache", cached)  # not a module attribute: never saved
        return cached[1]


# --------------------------------------------------------------------------- sensor / time series

#: MiniRocket's 84 kernels: length 9, weight 2 at three positions and -1 elsewhere (they sum to zero).
_MINIROCKET_KERNELS = torch.tensor(
    [[2.0 if i in combo else -1.0 for i in range(9)] for combo in itertools.combinations(range(9), 3)]
)  # [84, 9]
_SERIES_STATS = ("mean", "std", "min", "max", "slope", "diff_mean", "diff_std")


def series_statistics(values: Tensor, mask: Tensor) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """Per-channel statistics of series [B, T, C] (padding zeroed) over their valid frames [B, T].

    Returns ([mean, std, min, max], the least-squares slope over time in row lengths, each [B, C]),
    the first difference [B, T-1, C] and its mask [B, T-1]; what the series encoders summarise.
    """
    moments = [masked_mean(values, mask), masked_std(values, mask), masked_min(values, mask), masked_max(values, mask)]
    count = mask.to(values.dtype).sum(dim=1).clamp(min=1.0)  # [B]
    time = torch.arange(values.shape[1], device=values.device, dtype=values.dtype)[None, :, None] / count[:, None, None]
    t_centered = (time - masked_mean(time, mask)[:, None, :]) * mask[..., None]  # [B,T,1]
    slope = (t_centered * (values - moments[0][:, None, :])).sum(1) / (t_centered**2).sum(1).clamp(min=1e-6)
    return moments, slope, values[:, 1:] - values[:, :-1], mask[:, 1:] & mask[:, :-1]


@ENCODERS.register("sequence_rocket", modalities=("sequence",), features=True)
class SequenceRocketEncoder(FeatureEncoder):
    """MiniRocket-style random convolution features + per-channel statistics, then a linear map.

    84 fixed kernels of length 9 at ``dilations`` exponentially spaced dilations, each applied to
    a fixed random subset of up to 3 channels (summed); each output is summarised as the
    proportion of positive values (PPV) above ``biases`` thresholds fitted as quantiles of the
    convolution output on training rows. Alongside: per-channel mean, std, min, max, slope and
    mean / std of the first difference. Features are fixed (cached per row); only the linear
    map is trained, which is what works from ~50 rows (Dempster et al., 2021).
    """

    def __init__(
        self,
        feature_dim: int,
        dim: int | None = 128,
        dilations: int = 8,
        biases: int = 3,
        max_channels: int = 3,
        max_length: int | None = None,
        seed: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        positive("sequence_rocket", feature_dim=feature_dim, dilations=dilations, biases=biases, max_channels=max_channels)
        self.channels = int(feature_dim)
        self.num_dilations = int(dilations)
        self.num_biases = int(biases)
        self.seed = int(seed)
        self.reference_length = int(max_length) if max_length else None
        gen = torch.Generator().manual_seed(self.seed)
        k = _MINIROCKET_KERNELS.shape[0]
        self.register_buffer("kernels", _MINIROCKET_KERNELS.clone().unsqueeze(1))  # [84, 1, 9]
        selection = torch.zeros(self.num_dilations, k, self.channels)
        for d in range(self.num_dilations):
            for j in range(k):
                n = int(torch.randint(1, min(max_channels, self.channels) + 1, (1,), generator=gen))
                selection[d, j, torch.randperm(self.channels, generator=gen)[:n]] = 1.0
        self.register_buffer("selection", selection)  # [n_dil, 84, C]
        self.register_buffer("bias", torch.zeros(self.num_dilations, k, self.num_biases))  # fitted
        self.register_buffer("dilation", torch.ones(self.num_dilations, dtype=torch.long))  # fitted from lengths
        self._set_dilations(self.reference_length or 512)
        ppv_dim = self.num_dilations * k * self.num_biases
        self._init_head(ppv_dim + self.channels * len(_SERIES_STATS), dim, dropout)

    def extractor_options(self) -> dict:
        return {"channels": self.channels, "dilations": self.num_dilations, "biases": self.num_biases, "seed": self.seed}

    def _set_dilations(self, length: int) -> None:
        top = max(0.0, math.log2(max(1.0, (length - 1) / 8.0)))
        values = np.unique(np.floor(np.logspace(0, top, self.num_dilations, base=2)).astype(np.int64))
        values = np.resize(values, self.num_dilations) if len(values) < self.num_dilations else values
        self.dilation.copy_(torch.as_tensor(np.sort(values), dtype=torch.long))

    def _convolve(self, values: Tensor, mask: Tensor, d: int) -> Tensor:
        """[B,T,C] -> [B,84,T]: the kernels at dilation index ``d`` over their channel subsets."""
        b, t, c = values.shape
        dilation = int(self.dilation[d])
        x = values.transpose(1, 2).reshape(b * c, 1, t)  # [B*C, 1, T]
        y = nn.functional.conv1d(x, self.kernels, padding=4 * dilation, dilation=dilation)  # [B*C, 84, T]
        y = y.reshape(b, c, -1, t)  # [B, C, 84, T]
        return torch.einsum("bckt,kc->bkt", y, self.selection[d])

    def present_rows(self, inputs: dict[str, Tensor]) -> Tensor:
        return inputs["mask"].bool().any(dim=1)

    def fit_extractor(self, inputs: dict[str, Tensor]) -> None:
        values, mask = inputs["values"].float(), inputs["mask"].bool()
        keep = mask.any(dim=1)
        values, mask = values[keep], mask[keep]
        if values.shape[0] == 0:
            return
        lengths = mask.sum(dim=1)
        self._set_dilations(int(lengths.float().median()))
        gen = torch.Generator().manual_seed(self.seed + 1)
        quantiles = torch.tensor([(0.5 + i) / self.num_biases for i in range(self.num_biases)])  # [n_bias]
        for d in range(self.num_dilations):
            conv = self._convolve(values * mask[..., None], mask, d)  # [N, 84, T]
            rows = torch.randint(0, values.shape[0], (conv.shape[1],), generator=gen)  # one training row per kernel
            for j in range(conv.shape[1]):
                r = int(rows[j])
                valid = conv[r, j, : int(lengths[r])]
                self.bias[d, j] = torch.quantile(valid, quantiles)

    def extract(self, inputs: dict[str, Tensor]) -> Tensor:
        values, mask = inputs["values"].float(), inputs["mask"].bool()  # [B,T,C], [B,T]
        values = values * mask[..., None]
        weights = mask.to(values.dtype)  # [B,T]
        count = weights.sum(dim=1).clamp(min=1.0)  # [B]
        ppv = []
        for d in range(self.num_dilations):
            conv = self._convolve(values, mask, d)  # [B, 84, T]
            above = (conv.unsqueeze(2) > self.bias[d][None, :, :, None]).to(values.dtype)  # [B, 84, n_bias, T]
            ppv.append((above * weights[:, None, None, :]).sum(dim=-1) / count[:, None, None])
        moments, slope, diff, dmask = series_statistics(values, mask)
        stats = [*moments, slope, masked_mean(diff, dmask), masked_std(diff, dmask)]
        return torch.cat([torch.cat(ppv, dim=1).flatten(1), *stats], dim=1)  # [B, F]


#: The quantiles ``sequence_summary`` reports per channel.
SUMMARY_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def masked_quantiles(values: Tensor, mask: Tensor, quantiles: tuple[float, ...]) -> Tensor:
    """Per-channel quantiles over each row's valid frames, linearly interpolated as ``numpy.quantile``.

    [B, T, C], [B, T] bool -> [B, len(quantiles) * C] (quantile-major); rows without frames give zeros.
    """
    b, _, c = values.shape
    ordered = values.masked_fill(~mask[..., None], float("inf")).sort(dim=1).values  # [B,T,C], valid first
    count = mask.sum(dim=1)  # [B]
    last = (count - 1).clamp(min=0).to(values.dtype)  # [B]
    out = []
    for q in quantiles:
        pos = q * last  # [B]
        lo, hi = pos.floor().long(), pos.ceil().long()
        low = ordered.gather(1, lo.view(b, 1, 1).expand(b, 1, c)).squeeze(1)  # [B,C]
        high = ordered.gather(1, hi.view(b, 1, 1).expand(b, 1, c)).squeeze(1)
        out.append(low + (high - low) * (pos - lo.to(values.dtype))[:, None])
    result = torch.cat(out, dim=1)
    return torch.where((count > 0)[:, None], result, torch.zeros_like(result))


@ENCODERS.register("sequence_summary", modalities=("sequence",), features=True)
class SequenceSummaryEncoder(FeatureEncoder):
    """Per-channel summary statistics of a series, then a linear map: few features for few rows.

    Per channel: mean, std, min, max, the 10/25/50/75/90% quantiles, the least-squares slope over
    time, and the mean absolute and std of the first difference (12 numbers). The compact
    representation a linear (or boosted) model uses on short series or a few dozen rows; fixed,
    so cached per row like every features-first encoder.
    """

    def __init__(self, feature_dim: int, dim: int | None = 128, dropout: float = 0.0) -> None:
        super().__init__()
        positive("sequence_summary", feature_dim=feature_dim)
        self.channels = int(feature_dim)
        self._init_head(self.channels * (4 + len(SUMMARY_QUANTILES) + 3), dim, dropout)

    def extractor_options(self) -> dict:
        return {"channels": self.channels, "quantiles": SUMMARY_QUANTILES}

    def present_rows(self, inputs: dict[str, Tensor]) -> Tensor:
        return inputs["mask"].bool().any(dim=1)

    def extract(self, inputs: dict[str, Tensor]) -> Tensor:
        values, mask = inputs["values"].float(), inputs["mask"].bool()  # [B,T,C], [B,T]
        values = values * mask[..., None]
        moments, slope, diff, dmask = series_statistics(values, mask)
        return torch.cat([
            *moments, masked_quantiles(values, mask, SUMMARY_QUANTILES), slope,
            masked_mean(diff.abs(), dmask), masked_std(diff, dmask),
        ], dim=1)  # [B, 12 * C]


# --------------------------------------------------------------------------- images


@ENCODERS.register("image_pixels", modalities=("image",), features=True)
class ImagePixelsEncoder(FeatureEncoder):
    """Pixels pooled to ``grid`` x ``grid`` cells per channel plus colour statistics, then a linear map.

    Features per image: the mean of each channel in each cell (``grid**2 * C``), and per channel
    the mean, std, and the fraction of normalized pixels above each of ``bins`` levels in [-2, 2]
    (a cumulative colour histogram). The classical
    representation that a linear head can use on tiny image sets.
    """

    def __init__(
        self, in_channels: int = 3, dim: int | None = 128, grid: int = 8, bins: int = 8, dropout: float = 0.0
    ) -> None:
        super().__init__()
        positive("image_pixels", in_channels=in_channels, grid=grid, bins=bins)
        self.in_channels, self.grid, self.bins = int(in_channels), int(grid), int(bins)
        self._init_head(self.in_channels * (grid * grid + 2 + bins), dim, dropout)

    def extractor_options(self) -> dict:
        return {"channels": self.in_channels, "grid": self.grid, "bins": self.bins}

    def extract(self, inputs: dict[str, Tensor]) -> Tensor:
        pixels = inputs["pixels"].float()  # [B,C,H,W] (normalized)
        cells = nn.functional.adaptive_avg_pool2d(pixels, self.grid).flatten(1)  # [B, C*g*g]
        flat = pixels.flatten(2)  # [B,C,HW]
        levels = torch.linspace(-2.0, 2.0, self.bins, device=pixels.device)  # [bins]
        hist = (flat.unsqueeze(-1) > levels).to(flat.dtype).mean(dim=2).flatten(1)  # [B, C*bins]
        return torch.cat([cells, flat.mean(dim=2), flat.std(dim=2, unbiased=False), hist], dim=1)


# --------------------------------------------------------------------------- frozen pretrained backbones


def _call_registered(name: str, **offered: object) -> nn.Module:
    from polyfuse.registry import call_with

    return call_with(ENCODERS.get(name).factory, offered, {})


@ENCODERS.register(
    "pretrained_image_embedding", modalities=("image",), pretrained=True, features=True,
    image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
)
class PretrainedImageEmbeddingEncoder(FeatureEncoder):
    """A frozen ImageNet backbone's mean-pooled final features (1280-d), computed once per row, then a linear map.

    ``backbone``: ``mobilenet_v2`` or ``efficientnet_lite0`` (packaged weights, offline), or a local
    ``weights`` file for the chosen backbone.
    """

    def __init__(
        self, backbone: str = "mobilenet_v2", weights: str | None = None, in_channels: int = 3,
        dim: int | None = 128, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        choice("pretrained_image_embedding", "backbone", backbone, ("mobilenet_v2", "efficientnet_lite0"))
        self.backbone_name = backbone
        self.net = _call_registered(backbone, weights=weights, freeze=True, dim=None, in_channels=in_channels)
        self.net.requires_grad_(False)
        self._init_head(int(self.net.output_dim), dim, dropout)

    def extractor_options(self) -> dict:
        return {"backbone": self.backbone_name}

    def train(self, mode: bool = True) -> "PretrainedImageEmbeddingEncoder":
        super().train(mode)
        self.net.eval()
        return self

    def extract(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.net(inputs).pooled  # [B, 1280]


@ENCODERS.register("pretrained_text_embedding", modalities=("text",), pretrained=True, features=True)
class PretrainedTextEmbeddingEncoder(FeatureEncoder):
    """A frozen sentence encoder's mean-pooled embedding (MiniLM: 384-d), computed once per row, then a linear map.

    ``model`` as for ``hf_text`` (``minilm``, a local folder, ``hf:ORG/NAME``); the text input must
    use the model's tokenizer.
    """

    def __init__(
        self, model: str = "minilm", vocab_size: int | None = None, max_length: int | None = None,
        dim: int | None = 128, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.model_name = model
        self.net = _call_registered("hf_text", model=model, pool="mean", freeze=True, dim=None,
                                    vocab_size=vocab_size, max_length=max_length)
        self._init_head(int(self.net.output_dim), dim, dropout)

    def extractor_options(self) -> dict:
        return {"model": self.model_name}

    def train(self, mode: bool = True) -> "PretrainedTextEmbeddingEncoder":
        super().train(mode)
        self.net.eval()
        return self

    def present_rows(self, inputs: dict[str, Tensor]) -> Tensor:
        return inputs["attention_mask"].bool().any(dim=1)

    def extract(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.net(inputs).pooled  # [B, 384]


__all__ = [
    "FEATURES_KEY", "FeatureEncoder", "SequenceRocketEncoder", "ImagePixelsEncoder",
    "PretrainedImageEmbeddingEncoder", "PretrainedTextEmbeddingEncoder", "ConfigError",
]
