"""Per-row, per-input explanations: Predictor.predict(explain=True), `polyfuse predict --explain`, and the
server's /predict?explain=true, on a real AV-MNIST model (image + audio)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app as cli_app
from polyfuse.explain import column_name, weight_column
from polyfuse.serve.app import create_app

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # conftest.py
    pytest.mark.filterwarnings("ignore::polyfuse.row_problems.PredictionProblemsWarning"),  # row 5 has no input
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A concat model trained enough on real AV-MNIST rows that its predictions depend on its inputs."""
    out = tmp_path_factory.mktemp("explain") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        polyfuse.fit(
            "tiny-avmnist", out=out, overwrite=True,
            overrides=["data.max_rows=480", "train.epochs=4", "model.dim=32", "train.threads=1"],
        )
    return out


@pytest.fixture(scope="module")
def rows(avmnist) -> pd.DataFrame:
    """Twelve real test rows; row 2 has no image, row 5 no input at all."""
    frame = pd.read_csv(avmnist.test).head(12)[["audio", "image"]].astype(object)
    frame.loc[2, "image"] = None
    frame.loc[5, ["audio", "image"]] = None
    return frame


def ignoring(predictor: polyfuse.Predictor, name: str) -> polyfuse.Predictor:
    """The same predictor with the concat fusion's weights reading input ``name`` set to 0: it ignores that input."""
    fusion = predictor.model.fusion
    dims = [fusion.input_dims[m] for m in fusion.modalities]
    start = sum(dims[: fusion.modalities.index(name)])
    width = dims[fusion.modalities.index(name)]
    with torch.no_grad():
        fusion.proj[0].weight[:, start : start + width] = 0.0  # Linear over [audio | image] features
    return predictor


def test_an_ignored_input_contributes_nothing_and_a_used_one_a_lot(trained: Path, rows: pd.DataFrame, avmnist) -> None:
    predictor = ignoring(polyfuse.load(trained), "audio")
    frame = predictor.predict(rows, root=avmnist.root, explain=True)
    audio, image = frame[column_name("digit", "audio")], frame[column_name("digit", "image")]
    full = [i for i in range(len(rows)) if i not in (2, 5)]
    assert np.abs(audio.iloc[full]).max() < 1e-5  # the model no longer reads audio
    # the label now comes from the image alone: without it the prediction falls back to the prior
    assert image.iloc[full].mean() > 0.2
    assert image.iloc[2] == pytest.approx(0.0, abs=1e-6)  # a missing image moved nothing
    assert np.isnan(audio.iloc[5]) and np.isnan(image.iloc[5]) and pd.isna(frame["digit"].iloc[5])


def test_contribution_is_the_change_when_the_input_is_left_out(trained: Path, rows: pd.DataFrame, avmnist) -> None:
    predictor = polyfuse.load(trained)
    explained = predictor.predict(rows, root=avmnist.root, explain=True)
    classes = predictor.classes("digit")
    probs = explained[[f"digit:p:{c}" for c in classes]].to_numpy()
    for name in ("audio", "image"):
        blanked = rows.copy()
        blanked[name] = None
        dropped = predictor.predict(blanked, root=avmnist.root)[[f"digit:p:{c}" for c in classes]].to_numpy()
        for i in (0, 1, 3, 4, 6):
            chosen = int(np.argmax(probs[i]))
            assert explained[column_name("digit", name)].iloc[i] == pytest.approx(probs[i, chosen] - dropped[i, chosen], abs=1e-5)
    plain = predictor.predict(rows, root=avmnist.root)
    assert not any(":explain:" in c for c in plain.columns)
    pd.testing.assert_frame_equal(plain, explained[plain.columns])  # explaining changes no prediction


def test_gated_fusion_reports_its_weights(tmp_path: Path, rows: pd.DataFrame, avmnist) -> None:
    out = tmp_path / "gated"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        polyfuse.fit("tiny-avmnist", out=out, overwrite=True, overrides=["model.fusion=gated", "train.threads=1"])
    frame = polyfuse.load(out).predict(rows, root=avmnist.root, explain=True)
    weights = frame[[weight_column("audio"), weight_column("image")]]
    usable = [i for i in range(len(rows)) if i != 5]
    assert np.allclose(weights.iloc[usable].sum(axis=1), 1.0, atol=1e-5)
    assert weights.iloc[2][weight_column("image")] == pytest.approx(0.0, abs=1e-6)  # absent image: no weight


def test_cli_predict_explain_writes_the_columns(trained: Path, rows: pd.DataFrame, avmnist, tmp_path: Path) -> None:
    manifest = tmp_path / "rows.csv"
    rows.to_csv(manifest, index=False)
    result = CliRunner().invoke(cli_app, [
        "predict", str(trained), "--data", str(manifest), "--root", str(avmnist.root), "--out", str(tmp_path / "p.csv"), "--explain",
    ])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "p.csv", index_col="row")
    expected = polyfuse.load(trained).predict(rows, root=avmnist.root, explain=True)
    for name in ("audio", "image"):
        np.testing.assert_allclose(written[column_name("digit", name)], expected[column_name("digit", name)], atol=1e-6)


def test_server_explains_on_request(trained: Path, rows: pd.DataFrame, avmnist) -> None:
    expected = polyfuse.load(trained).predict(rows, root=avmnist.root, explain=True)
    client = TestClient(create_app(trained))
    row = rows.iloc[0]
    files = {"audio": ("a.npy", (avmnist.root / row["audio"]).read_bytes()), "image": ("x.png", (avmnist.root / row["image"]).read_bytes())}
    body = client.post("/predict?explain=true", files=files).json()
    contributions = body["explanation"]["contributions"]["digit"]
    for name in ("audio", "image"):
        assert contributions[name] == pytest.approx(expected[column_name("digit", name)].iloc[0], abs=1e-5)
    assert body["predictions"]["digit"]["label"] == expected["digit"].iloc[0]
    assert "explanation" not in client.post("/predict", files=files).json()
    bad = client.post("/predict?explain=maybe", files=files)
    assert bad.status_code == 422 and bad.json()["field"] == "explain"


def test_the_onnx_server_explains_like_pytorch(trained: Path, rows: pd.DataFrame, avmnist) -> None:
    """The ONNX engine has no fusion weights but the same contributions (its graph takes the present masks)."""
    expected = polyfuse.load(trained).predict(rows, root=avmnist.root, explain=True)
    client = TestClient(create_app(trained, onnx=True))
    row = rows.iloc[4]
    files = {"audio": ("a.npy", (avmnist.root / row["audio"]).read_bytes()), "image": ("x.png", (avmnist.root / row["image"]).read_bytes())}
    explanation = client.post("/predict?explain=true", files=files).json()["explanation"]
    for name in ("audio", "image"):
        assert explanation["contributions"]["digit"][name] == pytest.approx(expected[column_name("digit", name)].iloc[4], abs=1e-4)
    assert explanation["fusion_weights"] is None  # concat weighs nothing
