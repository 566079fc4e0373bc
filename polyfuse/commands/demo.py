"""`polyfuse demo`: the main job — audio-only vs image-only vs fused on AV-MNIST."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from polyfuse.commands._common import console, user_errors

DEMO_RUNS = (("audio", "avmnist-audio"), ("image", "avmnist-image"), ("fused", "avmnist-fused"))
#: The demo's figures must not depend on the machine: deterministic kernels and a fixed thread
#: count (float sums are split per thread, so another count rounds differently). Overridable.
DEMO_DEFAULTS = ("train.deterministic=true", "train.threads=2")


def run_demo(out: Path, overrides: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the three demo models, compare them, reload the fused one and predict test rows."""
    from polyfuse.api import fit, load
    from polyfuse.registry import DATASETS
    import polyfuse.data  # noqa: F401  (registers datasets)

    out.mkdir(parents=True, exist_ok=True)
    con = console()
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for key, recipe in DEMO_RUNS:
        con.rule(f"[bold]{key}[/bold]: recipe {recipe}")
        run = fit(recipe, out=out / key, overrides=[*DEMO_DEFAULTS, *(overrides or [])], overwrite=True, progress=progress)
        results[key] = run.metrics
    total = time.perf_counter() - started

    summary = {key: results[key]["test"]["digit"]["acc"] for key, _ in DEMO_RUNS}
    details = {
        key: {
            "recipe": recipe,
            "test": results[key]["test"],
            "valid": results[key].get("valid"),
            "parameters": results[key]["parameters"],
            "train_seconds": results[key]["train_seconds"],
        }
        for key, recipe in DEMO_RUNS
    }
    metrics = {**summary, "details": details, "total_seconds": round(total, 1)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    from rich.table import Table

    table = Table(title="AV-MNIST test set: which modality matters?")
    for col in ("model", "test accuracy", "macro-F1", "parameters", "train s"):
        table.add_column(col)
    for key, _ in DEMO_RUNS:
        t = results[key]["test"]["digit"]
        table.add_row(key, f"{t['acc']:.4f}", f"{t['f1']:.4f}", f"{results[key]['parameters']:,}", f"{results[key]['train_seconds']:.0f}")
    con.print(table)
    contrib = results["fused"].get("contribution", {})
    lines = [
        "# polyfuse demo: AV-MNIST",
        "",
        "Spoken digits (MFCC sequences) paired with handwritten digits of the same class.",
        "",
        "| model | test accuracy | macro-F1 | parameters | train seconds |",
        "|---|---|---|---|---|",
    ]
    for key, recipe in DEMO_RUNS:
        t = results[key]["test"]["digit"]
        lines.append(f"| {key} (`{recipe}`) | {t['acc']:.4f} | {t['f1']:.4f} | {results[key]['parameters']:,} | {results[key]['train_seconds']:.0f} |")
    if contrib.get("without"):
        lines += ["", "Fused model with one input removed at test time:", "", "| inputs | accuracy |", "|---|---|"]
        lines.append(f"| all | {contrib['all']['digit']['acc']:.4f} |")
        for name, values in contrib["without"].items():
            lines.append(f"| without {name} | {values['digit']['acc']:.4f} |")
    lines += ["", f"Total time: {total:.0f} s. Full reports: `audio/report.md`, `image/report.md`, `fused/report.md`.", ""]

    # Reload the saved fused model from its directory alone and predict a few test rows.
    prepared = DATASETS.get("avmnist").factory()
    import pandas as pd

    from polyfuse.data.manifest import read_manifest

    rows = read_manifest(prepared.test).head(8)
    model = load(out / "fused")
    preds = model.predict(rows, root=prepared.root)
    shown = pd.DataFrame({"label": rows["label"].tolist(), "predicted": preds["digit"].tolist()})
    shown["p(predicted)"] = [preds.loc[i, f"digit:p:{p}"] for i, p in zip(preds.index, preds["digit"])]
    table = Table(title="reloaded fused model on test rows")
    for col in ("row", "true digit", "predicted", "probability"):
        table.add_column(col)
    records = list(zip(shown.index, shown["label"], shown["predicted"], shown["p(predicted)"]))
    for i, true, pred, prob in records:
        table.add_row(str(i), str(true), str(pred), f"{prob:.3f}")
    con.print(table)
    lines += ["Reloaded fused model (`polyfuse.load`) on the first test rows:", "", "| row | true | predicted | probability |", "|---|---|---|---|"]
    lines += [f"| {i} | {true} | {pred} | {prob:.3f} |" for i, true, pred, prob in records]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    con.print(f"wrote {out / 'metrics.json'} and {out / 'report.md'} in {total:.0f} s")
    return metrics


def register(app: typer.Typer) -> None:
    @app.command("demo", context_settings={"allow_extra_args": True})
    @user_errors
    def demo(
        overrides: Optional[list[str]] = typer.Argument(None, help="key.path=value overrides applied to all three runs."),
        out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output directory."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Train audio-only, image-only and fused models on AV-MNIST and compare them."""
        run_demo(out, overrides=list(overrides or []), progress=not no_progress)
