"""Contract tests run over every registered fusion (a new fusion is tested the day it registers)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import polyfuse.fusion  # noqa: F401  (registers the fusions)
from polyfuse.config import ConfigError
from polyfuse.heads import ClassificationHead
from polyfuse.model import MultimodalModel
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput

NAMES = FUSIONS.names()
DIM = 16
# three inputs of different widths and token counts; ``c`` has a single token
WIDTHS = {"a": 8, "b": 12, "c": 6}
TOKENS = {"a": 3, "b": 5, "c": 1}
# every modality is present in some rows and absent in others; the last row has nothing
PRESENT = {
    "a": [True, False, True, False, True],
    "b": [True, True, False, False, False],
    "c": [True, True, True, False, False],
}
DECISION = set(FUSIONS.names(level="decision")) | set(FUSIONS.names(level="hybrid"))


def make_features(n_modalities: int = 3, batch: int = 5, seed: int = 0) -> dict[str, EncoderOutput]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in list(WIDTHS)[:n_modalities]:
        t, d = TOKENS[name], WIDTHS[name]
        mask = torch.rand(batch, t, generator=gen) > 0.3
        mask[:, 0] = True  # every row of a present modality has at least one real token
        out[name] = EncoderOutput(torch.randn(batch, t, d, generator=gen), torch.randn(batch, d, generator=gen), mask)
    return out


def make_present(n_modalities: int = 3, batch: int = 5) -> dict[str, Tensor]:
    return {name: torch.tensor(PRESENT[name][:batch]) for name in list(WIDTHS)[:n_modalities]}


def build(name: str, n_modalities: int = 3, seed: int = 0, **hyper) -> torch.nn.Module:
    torch.manual_seed(seed)
    dims = {m: WIDTHS[m] for m in list(WIDTHS)[:n_modalities]}
    return FUSIONS.build(name, input_dims=dims, dim=DIM, **hyper)


def row_outputs(out: FusionOutput, row: int) -> dict[str, Tensor]:
    """Everything a fusion returns for one row (masked token positions are zero by contract)."""
    parts = {"pooled": out.pooled[row]}
    if out.tokens is not None:
        parts["tokens"] = out.tokens[row]
        parts["mask"] = out.mask[row].float()
    if out.branches is not None:
        parts.update({f"branch:{k}": v[row] for k, v in out.branches.items()})
        parts["branch_weights"] = out.branch_weights[row]
    if out.modality_weights is not None:
        parts["modality_weights"] = out.modality_weights[row]
    return parts


def all_tensors(out: FusionOutput) -> list[Tensor]:
    tensors = [out.pooled, out.tokens, out.branch_weights, out.modality_weights, *(out.branches or {}).values()]
    return [t for t in tensors if t is not None]


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name: str, n_modalities: int) -> None:
    fusion = build(name, n_modalities).eval()
    out = fusion(make_features(n_modalities), make_present(n_modalities))
    assert fusion.output_dim == DIM
    assert out.pooled.shape == (5, fusion.output_dim)
    assert out.modalities == tuple(list(WIDTHS)[:n_modalities])
    if out.tokens is not None:
        assert out.tokens.shape[:2] == out.mask.shape and out.tokens.shape[-1] == DIM
        assert out.mask.dtype == torch.bool
    if out.branches is not None:
        assert out.branch_weights.shape == (5, len(out.branches))
        assert all(b.shape == (5, DIM) for b in out.branches.values())
    if out.modality_weights is not None:
        assert out.modality_weights.shape == (5, n_modalities)
    assert all(torch.isfinite(t).all() for t in all_tensors(out))


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_grads_to_every_parameter(name: str) -> None:
    fusion = build(name).train()
    out = fusion(make_features(), make_present())
    loss = sum(t.float().pow(2).mean() for t in all_tensors(out))
    loss.backward()
    for pname, param in fusion.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name}: {pname} gets no gradient"
            assert torch.isfinite(param.grad).all(), f"{name}: {pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in fusion.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one(name: str) -> None:
    fusion = build(name)
    for mode in (fusion.train, fusion.eval):
        mode()
        for present in (True, False):  # everything present, and ``a`` missing
            out = fusion(make_features(batch=1), {m: torch.tensor([present or m != "a"]) for m in WIDTHS})
            assert out.pooled.shape == (1, DIM)
            assert all(torch.isfinite(t).all() for t in all_tensors(out))


@pytest.mark.parametrize("name", NAMES)
def test_missing_modality_does_not_affect_its_row(name: str) -> None:
    fusion = build(name).eval()
    present = make_present()
    base = make_features()
    with torch.no_grad():
        ref = fusion(base, present)
        for modality in WIDTHS:
            changed = dict(base)
            other = make_features(seed=99)[modality]  # unrelated values, scaled up, flipped token mask
            changed[modality] = EncoderOutput(other.tokens * 5.0, other.pooled * 5.0, ~base[modality].mask)
            out = fusion(changed, present)
            absent_rows = (~present[modality]).nonzero().flatten().tolist()
            present_rows = present[modality].nonzero().flatten().tolist()
            for row in absent_rows:
                for key, value in row_outputs(out, row).items():
                    expected = row_outputs(ref, row)[key]
                    assert torch.allclose(value, expected, atol=1e-5), f"{name}: {key} of row {row} changed via {modality}"
            # and the modality does matter where it is present (the test can fail)
            assert any(
                not torch.allclose(out.pooled[r], ref.pooled[r], atol=1e-5) for r in present_rows
            ), f"{name}: {modality} has no effect even where present"


def poisoned(features: dict[str, EncoderOutput], present: dict[str, Tensor], fill: float) -> dict[str, EncoderOutput]:
    """``features`` with ``fill`` (NaN or inf) wherever the fusion must not look: the pooled
    features and tokens of absent rows, and the masked token positions of present rows."""
    out = {}
    for name, f in features.items():
        absent = ~present[name].bool()
        tokens = torch.where(absent[:, None, None] | ~f.mask[..., None], torch.full_like(f.tokens, fill), f.tokens)
        pooled = torch.where(absent[:, None], torch.full_like(f.pooled, fill), f.pooled)
        out[name] = EncoderOutput(tokens, pooled, f.mask)
    return out


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_where_inputs_are_missing_or_masked_do_not_leak(name: str, fill: float) -> None:
    fusion = build(name).eval()
    present = make_present()
    clean = make_features()
    for f in clean.values():
        f.mask[4:] = False  # the last row has nothing: its modalities arrive with all-false masks
    zeroed = poisoned(clean, present, 0.0)
    with torch.no_grad():
        ref = fusion(zeroed, present)
        out = fusion(poisoned(clean, present, fill), present)
    for row in range(5):
        for key, value in row_outputs(out, row).items():
            assert torch.isfinite(value).all(), f"{name}: {fill} leaked into {key} of row {row}"
            assert torch.allclose(value, row_outputs(ref, row)[key], atol=1e-5), f"{name}: {key} of row {row} changed"


@pytest.mark.parametrize("name", NAMES)
def test_row_with_everything_missing_is_finite(name: str) -> None:
    fusion = build(name).train()
    features = make_features(batch=3)
    present = {m: torch.zeros(3, dtype=torch.bool) for m in WIDTHS}
    for f in features.values():
        f.mask.zero_()  # missing modalities arrive with all-false masks
    out = fusion(features, present)
    assert all(torch.isfinite(t).all() for t in all_tensors(out))
    sum(t.sum() for t in all_tensors(out)).backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name: str) -> None:
    outs = []
    for _ in range(2):
        fusion = build(name, seed=3).train()
        torch.manual_seed(7)  # dropout draws
        outs.append(fusion(make_features(), make_present()).pooled)
    assert torch.equal(outs[0], outs[1])
    other = build(name, seed=4).eval()(make_features(), make_present()).pooled
    assert not torch.allclose(outs[0], other)


@pytest.mark.parametrize("name", NAMES)
def test_weights_sum_to_one_over_present_modalities(name: str) -> None:
    fusion = build(name, combine="learned") if name == "late" else build(name)
    fusion.eval()
    present = make_present()
    p = torch.stack([present[m] for m in WIDTHS], dim=1)  # [B,M]
    out = fusion(make_features(), present)
    some = p.any(dim=1)
    if out.modality_weights is not None:
        w = out.modality_weights
        assert (w >= 0).all()
        assert torch.allclose(w[some].sum(dim=1), torch.ones(int(some.sum())), atol=1e-5)
        assert (w[some][~p[some]] == 0).all()
    if out.branch_weights is not None:
        bw = out.branch_weights
        assert torch.allclose(bw.sum(dim=1), torch.ones(len(bw)), atol=1e-5)
        modality_part = bw[:, -len(WIDTHS):]  # decision branches per modality come last, in order
        assert (modality_part[some][~p[some]] == 0).all()
    if name in DECISION:
        assert out.branches is not None and out.branch_weights is not None


def test_late_fusion_learned_weights_and_model_combination() -> None:
    fusion = build("late", combine="learned").eval()
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    present = make_present()
    out = fusion(make_features(), present)
    # row 0 has everything: softmax of the logits; row 1 lacks ``a``: renormalized over b, c
    assert torch.allclose(out.branch_weights[0], torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=1e-6)
    assert torch.allclose(out.branch_weights[1], torch.tensor([0.0, *torch.softmax(torch.tensor([1.0, 2.0]), 0)]), atol=1e-6)
    assert torch.allclose(out.branch_weights[4], torch.tensor([1.0, 0.0, 0.0]))  # only ``a``
    assert torch.allclose(out.branch_weights[3], torch.full((3,), 1 / 3))  # nothing: uniform
    head = ClassificationHead(DIM, 3)
    logits = MultimodalModel.apply_head(None, head, out)  # type: ignore[arg-type]  (self unused)
    expected = sum(out.branch_weights[:, i : i + 1] * head(b) for i, b in enumerate(out.branches.values()))
    assert torch.allclose(logits, expected, atol=1e-6)


def test_bad_hyperparameters_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="combine"):
        build("late", combine="max")
    with pytest.raises(ConfigError, match="heads"):
        build("fit", heads=5)
    with pytest.raises(ConfigError, match="fusion_layer"):
        build("bottleneck", depth=2, fusion_layer=2)
    with pytest.raises(ConfigError, match="rank_dim"):
        build("tensor", rank_dim=0)


def test_fit_attends_across_modalities() -> None:
    """In FiT, a modality's tokens change when another modality's tokens change (one shared stack)."""
    fusion = build("fit", n_modalities=2).eval()
    present = {m: torch.ones(5, dtype=torch.bool) for m in ("a", "b")}
    feats = make_features(2)
    changed = dict(feats, b=EncoderOutput(feats["b"].tokens + 1.0, feats["b"].pooled, feats["b"].mask))
    with torch.no_grad():
        ref, out = fusion(feats, present), fusion(changed, present)
    a_positions = slice(1, 1 + TOKENS["a"])  # after CLS
    assert not torch.allclose(ref.tokens[:, a_positions], out.tokens[:, a_positions])


class _FlatFusion(torch.nn.Module):
    """A fusion behind flat tensor inputs (tokens, pooled, mask, present per modality) for export."""

    def __init__(self, fusion: torch.nn.Module) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, *flat: Tensor) -> tuple[Tensor, Tensor]:
        features, present = {}, {}
        for i, m in enumerate(WIDTHS):
            tokens, pooled, mask, pres = flat[4 * i : 4 * i + 4]
            features[m], present[m] = EncoderOutput(tokens, pooled, mask), pres
        out = self.fusion(features, present)
        weights = out.modality_weights if out.modality_weights is not None else out.pooled[:, :1]
        return out.pooled, weights


def _flat_args(features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> list[Tensor]:
    return [t for m in WIDTHS for t in (features[m].tokens, features[m].pooled, features[m].mask, present[m])]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", NAMES)
def test_exports_to_onnx_with_a_dynamic_batch(name: str) -> None:
    """No data-dependent control flow: a trace at batch 5 matches eager at batch 3 with other masks."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import io

    wrapped = _FlatFusion(build(name)).eval()
    args = _flat_args(make_features(), make_present())
    names = [f"x{i}" for i in range(len(args))]
    buffer = io.BytesIO()
    torch.onnx.export(
        wrapped, tuple(args), buffer, dynamo=False, input_names=names, output_names=["pooled", "weights"],
        dynamic_axes={n: {0: "batch"} for n in names},
    )
    session = ort.InferenceSession(buffer.getvalue())
    wrapped.eval()  # export restores the wrapper's mode
    present = {m: torch.tensor(v[2:]) for m, v in PRESENT.items()}  # rows 2..4: other patterns, an empty row
    new_args = _flat_args(make_features(batch=3, seed=5), present)
    used = {i.name for i in session.get_inputs()}  # unused inputs (e.g. tokens of pooled fusions) are pruned
    got = session.run(None, {n: a.numpy() for n, a in zip(names, new_args) if n in used})
    with torch.no_grad():
        expected = wrapped(*new_args)
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        assert abs(g - e.numpy()).max() < 1e-4


# ---------------------------------------------------------------------------- learning

def quadrant_problem(n: int, seed: int) -> tuple[dict[str, EncoderOutput], Tensor]:
    """Label = 2*[x_a > 0] + [x_b > 0]: one modality alone gets at most 50% (chance 25%)."""
    gen = torch.Generator().manual_seed(seed)
    directions = {"a": torch.linspace(-1, 1, 6), "b": torch.linspace(1, -1, 4).roll(1)}
    tokens = {"a": 3, "b": 2}
    feats, signs = {}, {}
    for m, direction in directions.items():
        x = torch.randn(n, generator=gen)
        signs[m] = (x > 0).long()
        tok = x[:, None, None] * direction + 0.1 * torch.randn(n, tokens[m], len(direction), generator=gen)
        feats[m] = EncoderOutput(tok, tok.mean(dim=1), torch.ones(n, tokens[m], dtype=torch.bool))
    return feats, 2 * signs["a"] + signs["b"]


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_label_that_needs_both_modalities(name: str) -> None:
    torch.manual_seed(0)
    fusion = FUSIONS.build(name, input_dims={"a": 6, "b": 4}, dim=DIM)
    head = ClassificationHead(DIM, 4, hidden=32)
    params = list(fusion.parameters()) + list(head.parameters())
    optim = torch.optim.Adam(params, lr=1e-2)
    train, y = quadrant_problem(256, seed=1)
    present = {m: torch.ones(256, dtype=torch.bool) for m in train}

    def logits(feats: dict[str, EncoderOutput], pres: dict[str, Tensor]) -> Tensor:
        return MultimodalModel.apply_head(None, head, fusion(feats, pres))  # type: ignore[arg-type]

    for _ in range(100):
        optim.zero_grad()
        torch.nn.functional.cross_entropy(logits(train, present), y).backward()
        optim.step()
    fusion.eval(), head.eval()
    test, y_test = quadrant_problem(512, seed=2)
    with torch.no_grad():
        acc = (logits(test, {m: torch.ones(512, dtype=torch.bool) for m in test}).argmax(-1) == y_test).float().mean()
    assert acc > 0.7, f"{name}: accuracy {acc:.2f} (chance 0.25, one modality alone 0.5)"
