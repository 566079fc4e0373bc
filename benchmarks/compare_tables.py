"""Two ``bench_tables.py`` runs side by side: the same tables and splits before and after a change.

    python benchmarks/compare_tables.py BEFORE.json AFTER.json --preset medium --out benchmarks/results/X.md
    python benchmarks/compare_tables.py RUN.json RUN.json --preset medium --preset-after my-preset --out X.md  # two presets of one run

Per table (and split): the best scikit-learn baseline of the run after (both runs score the same
baselines on the same split), polyfuse before and after, each one's difference to the baseline,
the after-minus-before change, and the seconds of both. Then, per source table, the mean of those
differences over its splits. Higher is better for accuracy and macro-F1, lower for RMSE: every
difference is signed so that positive means better.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import main_metric  # noqa: E402


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["table"]: r for r in json.loads(path.read_text())["results"]}


def _gain(value: float, reference: float, higher: bool) -> float:
    """``value`` minus ``reference``, signed so that positive is better."""
    return value - reference if higher else reference - value


def compare(before: Path, after: Path, preset: str, preset_after: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The paired rows and the markdown lines of their table: ``preset`` of ``before`` against
    ``preset_after`` (default: the same preset) of ``after``; both may be one run's JSON."""
    old, new = _rows(before), _rows(after)
    after_key = preset_after or preset
    paired = []
    lines = [f"| table | metric | best baseline | {preset} before | {after_key} after | before vs baseline | after vs baseline "
             "| after - before | seconds before / after | chosen after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in new.items():
        if name not in old or after_key not in row.get("polyfuse", {}) or preset not in old[name].get("polyfuse", {}):
            continue
        metric, higher = main_metric(row["task"], row.get("metric"))
        base = row["baseline"][metric]
        b, a = old[name]["polyfuse"][preset], row["polyfuse"][after_key]
        item = {"table": name, "source": row.get("source", name), "metric": metric, "baseline": base,
                "before": b[metric], "after": a[metric], "before_gain": _gain(b[metric], base, higher),
                "after_gain": _gain(a[metric], base, higher), "change": _gain(a[metric], b[metric], higher),
                "seconds_before": b.get("seconds"), "seconds_after": a.get("seconds"), "chosen_after": a.get("chosen")}
        paired.append(item)
        lines.append(f"| {name} | {metric} | {base:.4f} ({row['baseline']['model']}) | {b[metric]:.4f} | {a[metric]:.4f} "
                     f"| {item['before_gain']:+.4f} | {item['after_gain']:+.4f} | **{item['change']:+.4f}** "
                     f"| {b.get('seconds')} / {a.get('seconds')} | {a.get('chosen')} |")
    sources = list(dict.fromkeys(p["source"] for p in paired))
    lines += ["", "Per source table, over its splits (mean; positive is better):", "",
              "| table | splits | before vs baseline | after vs baseline | after - before | at or above the baseline, before / after |",
              "|---|---|---|---|---|---|"]
    for source in sources:
        group = [p for p in paired if p["source"] == source]
        mean = lambda key: statistics.fmean(p[key] for p in group)  # noqa: E731
        met_b = sum(p["before_gain"] >= 0 for p in group)
        met_a = sum(p["after_gain"] >= 0 for p in group)
        lines.append(f"| {source} | {len(group)} | {mean('before_gain'):+.4f} | {mean('after_gain'):+.4f} | "
                     f"{mean('change'):+.4f} | {met_b} / {met_a} of {len(group)} |")
    return paired, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--preset-after", default=None,
                        help="the preset key to read from AFTER (default: --preset); e.g. a preset file's stem run beside it")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="polyfuse before and after a change, on the same tables and splits")
    args = parser.parse_args()
    paired, lines = compare(args.before, args.after, args.preset, args.preset_after)
    after_flag = f" --preset-after {args.preset_after}" if args.preset_after else ""
    header = [f"# {args.title}", "", f"Command: `python benchmarks/compare_tables.py {args.before} {args.after} "
              f"--preset {args.preset}{after_flag} --out {args.out}`", "",
              f"Before: `{json.loads(args.before.read_text()).get('command', '')}`", "",
              f"After: `{json.loads(args.after.read_text()).get('command', '')}`", ""]
    args.out.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(paired, indent=2), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
