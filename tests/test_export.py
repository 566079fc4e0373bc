"""ONNX export: the contract over every fusion and every from-scratch encoder, a trained AV-MNIST
checkpoint verified on real rows (with a modality missing), the CLI, and the torch-free OnnxPredictor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import polyfuse
import polyfuse.encoders  # noqa: F401  (registers)
import polyfuse.fusion  # noqa: F401
from polyfuse.build import build_encoder, build_fusion, build_head
from polyfuse.cli import app
from polyfuse.config import ComponentConfig
from polyfuse.deploy.export import ExportError, export_checkpoint, export_model
from polyfuse.deploy.onnx_predictor import OnnxPredictor
from polyfuse.model import MultimodalModel
from polyfuse.registry import ENCODERS, FUSIONS
from component_fixtures import example_spec, random_inputs

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

runner = CliRunner()
DIM = 16
ENCODER_NAMES = [n for n in ENCODERS.names() if not ENCODERS.get(n).metadata.get("pretrained")]
FUSION_NAMES = FUSIONS.names()
#: every from-scratch encoder and every fusion appear in at least one exported model
PAIRS = [(enc, FUSION_NAMES[i % len(FUSION_NAMES)]) for i, enc in enumerate(ENCODER_NAMES)]
PAIRS += [("lenet", f) for f in FUSION_NAMES[len(ENCODER_NAMES):]]
TINY = {
    "cnn": {"channels": [8, 16]},
    "audio_cnn": {"channels": [4, 8], "n_mels": 16},
    "audio_transformer": {"n_mels": 16},
    "video_frames": {"frame_encoder": "lenet", "temporal": "transformer"},
}
TASKS = {"label": "classification", "score": "regression", "tags": "multilabel"}


# ----------------------------------------------------------------------------- shared tiny trained model


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("onnx")
    return export_checkpoint(run, out)


def real_rows(avmnist, n: int = 6) -> pd.DataFrame:
    """Test rows; row 1 has no image, row 2 no audio."""
    rows = pd.read_csv(avmnist.test).head(n).astype(object)
    rows.loc[1, "image"] = None
    rows.loc[2, "audio"] = None
    return rows


# ----------------------------------------------------------------------------- contract


def tiny_model(encoder: str, fusion: str) -> tuple[MultimodalModel, dict[str, str], dict]:
    kind = ENCODERS.get(encoder).metadata["modalities"][0]
    specs = {"x": example_spec(kind, "x"), "tab": example_spec("tabular", "tab")}
    torch.manual_seed(0)
    encoders = {
        "x": build_encoder(specs["x"], ComponentConfig(encoder, TINY.get(encoder, {})), DIM),
        "tab": build_encoder(specs["tab"], ComponentConfig("tabular_mlp"), DIM),
    }
    fused = build_fusion(ComponentConfig(fusion), {k: e.output_dim for k, e in encoders.items()}, DIM)
    heads = {
        "label": build_head("classification", {}, fused.output_dim, 3),
        "score": build_head("regression", {}, fused.output_dim, 1),
        "tags": build_head("multilabel", {}, fused.output_dim, 4),
    }
    return MultimodalModel(encoders, fused, heads).eval(), {"x": kind, "tab": "tabular"}, specs


def numpy_batch(specs: dict, rows: int, seed: int, missing: dict[str, list[int]]) -> dict:
    inputs = {
        name: {k: v.numpy() for k, v in random_inputs(spec, rows, missing_rows=missing.get(name, ()), seed=seed).items()}
        for name, spec in specs.items()
    }
    present = {name: np.array([i not in missing.get(name, ()) for i in range(rows)]) for name in specs}
    return {"inputs": inputs, "present": present, "labels": {}, "row": np.arange(rows)}


def test_pairs_cover_every_fusion_and_encoder() -> None:
    assert {e for e, _ in PAIRS} == set(ENCODER_NAMES)
    assert {f for _, f in PAIRS} == set(FUSION_NAMES)


@pytest.mark.parametrize(("encoder", "fusion"), PAIRS, ids=[f"{e}+{f}" for e, f in PAIRS])
def test_every_component_exports_with_onnx_runtime_parity(encoder: str, fusion: str, tmp_path: Path) -> None:
    model, kinds, specs = tiny_model(encoder, fusion)
    # rows with the encoder's input missing, the tabular input missing, and both missing
    example = numpy_batch(specs, 5, seed=0, missing={"x": [1, 4], "tab": [2, 4]})
    checks = [numpy_batch(specs, 3, seed=1, missing={"x": [0]}), numpy_batch(specs, 1, seed=2, missing={})]
    result = export_model(model, kinds, TASKS, example, tmp_path / "m.onnx", checks=checks, exporter="torchscript")
    assert result.max_abs_diff <= 1e-4
    assert [c["rows"] for c in result.checks] == [5, 3, 1]  # other batch sizes (and lengths) ran too
    assert [o.name for o in result.outputs] == list(TASKS)
    shapes = {i.name: i.shape for i in result.inputs}
    assert shapes["x.present"] == ["batch"] and shapes["tab.present"] == ["batch"]
    if kinds["x"] in ("text", "audio", "sequence", "video"):
        length_key = {"text": "x.input_ids", "audio": "x.waveform", "sequence": "x.values", "video": "x.frames"}[kinds["x"]]
        assert shapes[length_key][:2] == ["batch", "x.length"]


def test_dynamo_exporter_keeps_batch_and_length_dynamic(tmp_path: Path) -> None:
    model, kinds, specs = tiny_model("sequence_stats", "gated")
    example = numpy_batch(specs, 4, seed=0, missing={"x": [1], "tab": [2]})
    checks = [numpy_batch(specs, 3, seed=1, missing={"x": [0]}), numpy_batch(specs, 1, seed=2, missing={})]
    result = export_model(model, kinds, TASKS, example, tmp_path / "m.onnx", checks=checks, exporter="dynamo")
    assert result.exporter == "dynamo" and result.max_abs_diff <= 1e-4
    assert all("error" not in c for c in result.checks)
    shapes = {i.name: i.shape for i in result.inputs}
    assert shapes["x.values"][:2] == ["batch", "x.length"] and shapes["tab.numeric"][0] == "batch"


@pytest.mark.slow  # the dynamo exporter on every pair: about 90 s on 2 cores (skip with -m "not slow")
@pytest.mark.parametrize(("encoder", "fusion"), PAIRS, ids=[f"{e}+{f}" for e, f in PAIRS])
def test_every_component_exports_with_the_default_exporter(encoder: str, fusion: str, tmp_path: Path) -> None:
    model, kinds, specs = tiny_model(encoder, fusion)
    example = numpy_batch(specs, 5, seed=0, missing={"x": [1, 4], "tab": [2, 4]})
    checks = [numpy_batch(specs, 3, seed=1, missing={"x": [0]}), numpy_batch(specs, 1, seed=2, missing={})]
    assert export_model(model, kinds, TASKS, example, tmp_path / "m.onnx", checks=checks).max_abs_diff <= 1e-4


# ----------------------------------------------------------------------------- a trained checkpoint


def test_checkpoint_export_writes_a_described_folder(exported, run: Path) -> None:
    out = exported.out
    for name in ("model.onnx", "config.yaml", "onnx_model.json", "pipeline/pipeline.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "onnx_model.json").read_text())
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert set(inputs) == {"audio.values", "audio.mask", "audio.present", "image.pixels", "image.present"}
    assert inputs["audio.values"]["dtype"] == "float32" and inputs["audio.values"]["shape"] == ["batch", "audio.length", 13]
    assert inputs["audio.mask"]["dtype"] == "bool" and inputs["image.present"]["shape"] == ["batch"]
    assert inputs["image.pixels"]["shape"] == ["batch", 1, 28, 28]
    assert meta["outputs"][0]["name"] == "digit" and meta["outputs"][0]["shape"] == ["batch", 10]
    assert meta["tasks"]["digit"] == {"type": "classification", "classes": list(range(10))}
    assert meta["polyfuse_version"] == polyfuse.__version__ and meta["opset"] >= 13
    check = meta["verification"]
    assert check["max_abs_diff"] <= 1e-4 and check["rows"] == 16 + 2  # 16 test rows + one per missing input
    assert "test.csv" in check["source"]


def test_onnx_predictor_matches_predictor_on_real_rows(exported, run: Path, avmnist) -> None:
    rows = real_rows(avmnist)
    expected = polyfuse.load(run).predict(rows, root=avmnist.root)
    got = OnnxPredictor(exported.out).predict(rows, root=avmnist.root)
    assert list(got.columns) == list(expected.columns)
    assert list(got["digit"]) == list(expected["digit"])
    probs = [c for c in expected.columns if c.startswith("digit:p:")]
    np.testing.assert_allclose(got[probs].to_numpy(float), expected[probs].to_numpy(float), atol=1e-5)
    assert list(got["problems"]) == list(expected["problems"]) and "image: empty value" in got["problems"][1]


def test_onnx_predictor_and_onnx_server_never_import_torch(exported, avmnist) -> None:
    rows = real_rows(avmnist, 4)
    script = (
        "import json, sys\n"
        "import pandas as pd\n"
        "from polyfuse.deploy import OnnxPredictor\n"
        f"rows = pd.DataFrame(json.loads({json.dumps(rows.to_dict('records'))!r}))\n"
        f"frame = OnnxPredictor({str(exported.out)!r}).predict(rows, root={str(avmnist.root)!r})\n"
        f"from polyfuse.serve.app import create_app\n"
        f"create_app({str(exported.out)!r})  # serving an export folder is torch-free too\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
        "print(json.dumps(frame['digit'].tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = json.loads(done.stdout.strip().splitlines()[-1])
    assert labels == OnnxPredictor(exported.out).predict(rows, root=avmnist.root)["digit"].tolist()


def test_export_cli_verifies_and_fails_loudly_on_a_mismatch(run: Path, tmp_path: Path, monkeypatch, avmnist) -> None:
    # --data: the user's own manifest (files next to it) instead of the test split
    (tmp_path / "mine").mkdir()
    rows = pd.read_csv(avmnist.test).head(5)
    for column in ("audio", "image"):
        for i, name in enumerate(rows[column]):
            target = tmp_path / "mine" / f"{i}-{Path(name).name}"
            target.write_bytes((avmnist.root / name).read_bytes())
            rows.loc[i, column] = target.name
    rows.to_csv(tmp_path / "mine" / "rows.csv", index=False)
    ok = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "ok"), "--exporter", "torchscript",
                             "--data", str(tmp_path / "mine" / "rows.csv")])
    assert ok.exit_code == 0, ok.output
    assert "matches PyTorch on 7 real rows" in ok.output  # 5 rows + one per missing input
    meta = json.loads((tmp_path / "ok" / "onnx_model.json").read_text())
    assert meta["verification"]["source"].endswith("rows.csv") and meta["exporter"] == "torchscript"

    import polyfuse.deploy.exporters as export_module

    real_session = export_module._session

    class Skewed:  # an ONNX Runtime that is off by 1e-3 on every output
        def __init__(self, path):
            self.inner = real_session(path)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def run(self, names, feed):
            return [out + np.float32(1e-3) for out in self.inner.run(names, feed)]

    monkeypatch.setattr(export_module, "_session", Skewed)
    bad = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "bad"), "--exporter", "torchscript"])
    assert bad.exit_code != 0
    assert "differs from PyTorch by up to 0.001" in bad.output and "tolerance 0.0001" in bad.output
    assert not (tmp_path / "bad" / "onnx_model.json").exists()


def test_export_refuses_unknown_format_and_exporter(run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(run), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "tflite" in result.output
    with pytest.raises(ExportError, match="exporter 'jit'"):
        model, kinds, specs = tiny_model("lenet", "concat")
        export_model(model, kinds, TASKS, numpy_batch(specs, 2, 0, {}), tmp_path / "m.onnx", exporter="jit")
