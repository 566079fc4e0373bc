"""The fusion leaderboard as markdown, JSON and a PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping


def _fmt(mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def ranked(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Variants best first by mean test metric (NaN last)."""
    sign = -1.0 if board["higher_is_better"] else 1.0

    def key(row: Mapping[str, Any]) -> float:
        value = row["test_mean"]
        return math.inf if value is None or math.isnan(value) else sign * value

    return sorted(board["variants"], key=key)


def markdown(board: Mapping[str, Any], command: str | None = None) -> str:
    """Leaderboard table, then robustness (metric with each input removed at test time)."""
    metric = f"{board['task']}/{board['metric']}"
    lines = [
        f"# Fusion benchmark: {board['name']} ({board['data']})",
        "",
        f"Test {metric}, mean ± std over {board['seeds']} seed(s); every model has the same encoders, "
        f"epochs ({board['epochs']}) and optimizer. Latency: eager PyTorch, batch 1, median.",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"| rank | model | test {metric} | parameters | train s | latency ms |",
        "|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(ranked(board), 1):
        params = f"{row['parameters']:,}" if row["parameters"] else "-"
        latency = row["latency_ms"]
        latency_cell = f"{latency:.2f}" if latency is not None and not math.isnan(latency) else "-"
        lines.append(
            f"| {i} | {row['key']} | {_fmt(row['test_mean'], row['test_std'])} | {params} "
            f"| {row['train_seconds']:.1f} | {latency_cell} |"
        )
    fused = [r for r in board["variants"] if r["kind"] == "fusion"]
    unimodal = [r for r in board["variants"] if r["kind"] == "unimodal"]
    if fused and unimodal:
        best_f = ranked({**board, "variants": fused})[0]
        best_u = ranked({**board, "variants": unimodal})[0]
        gap = best_f["test_mean"] - best_u["test_mean"]
        lines += ["", f"Best fusion **{best_f['key']}** vs best single input **{best_u['key']}**: {gap:+.4f} {board['metric']}."]
    inputs = board["inputs"]
    if fused and len(inputs) > 1:
        lines += [
            "",
            "## Robustness: each input missing at test time",
            "",
            f"Test {metric} of the fused models with one input removed"
            + (f" (`+md`: trained with modality dropout {board['modality_dropout']})." if board["modality_dropout"] else "."),
            "",
            "| model | all inputs | " + " | ".join(f"without {n}" for n in inputs) + " |",
            "|---|---|" + "---|" * len(inputs),
        ]
        for row in ranked({**board, "variants": fused}):
            cells = [_fmt(row["without"].get(n, {}).get("mean", float("nan"))) for n in inputs]
            lines.append(f"| {row['key']} | {_fmt(row['test_mean'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(board: Mapping[str, Any], path: Path) -> Path:
    """Horizontal bars of the mean test metric with std error bars, unimodal baselines in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ranked(board)[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(rows) + 1.4))
    values = [0.0 if math.isnan(r["test_mean"]) else r["test_mean"] for r in rows]
    errors = [0.0 if math.isnan(r["test_std"]) else r["test_std"] for r in rows]
    colors = ["#999999" if r["kind"] == "unimodal" else ("#DD8452" if r["modality_dropout"] else "#4C72B0") for r in rows]
    ax.barh([r["key"] for r in rows], values, xerr=errors, color=colors, capsize=2)
    low = min(values) if values else 0.0
    ax.set_xlim(max(0.0, low - 0.05 * max(abs(low), 1e-3) - 0.02), max(v + e for v, e in zip(values + [1e-6], errors + [0.0])) * 1.01 + 0.01)
    for i, (v, e) in enumerate(zip(values, errors)):
        ax.text(v + e, i, f"  {v:.4f}", va="center", fontsize=7)  # right of the error bar
    ax.set_xlabel(f"test {board['task']}/{board['metric']} (mean ± std, {board['seeds']} seeds)")
    legend = "grey: one input only" + ("; orange: modality dropout" if board.get("modality_dropout") else "")
    ax.set_title(f"{board['name']}: fusion strategies\n({legend})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_leaderboard(board: Mapping[str, Any], out: Path, command: str | None = None) -> dict[str, Path]:
    """``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "json": out / "leaderboard.json", "png": out / "leaderboard.png"}
    text = markdown(board, command) + "\n![leaderboard](leaderboard.png)\n"
    paths["md"].write_text(text)
    paths["json"].write_text(json.dumps(board, indent=2, default=float))
    plot(board, paths["png"])
    return paths
