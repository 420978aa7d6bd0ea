#!/usr/bin/env python3
"""Summarises haf_rm runs: prints the comparison table and draws PNGs.

Reads <root>/<objective>-s<seed>/{summary.json,metrics.jsonl} (what scripts/compare.sh writes)
and prints a Markdown table: per objective, the mean and spread (sample standard deviation, and
min-max) over seeds of the eval and OOD preference accuracy of the objective's score (reward
head for bt/haf, implicit reward for dpo), per corruption kind, and time. With matplotlib it also
writes <root>/curves.png (training loss, training accuracy, eval/OOD accuracy vs step) and
<root>/comparison.png (eval and OOD accuracy per objective, one dot per seed).

  .venv/bin/python scripts/plot_compare.py runs/compare [--table runs/compare/table.md]

Also reads CSV metrics (a run trained with --metrics run/metrics.csv).
"""

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ORDER = {"bt": 0, "haf": 1, "dpo": 2}
LABEL = {"bt": "bt (plain RM, alpha 0)", "haf": "haf (hybrid, alpha 0.2)",
         "dpo": "dpo (implicit reward)"}


def load_runs(root: Path):
    runs = []
    for summary in sorted(root.glob("*/summary.json")):
        m = re.fullmatch(r"(.+)-s(\d+)", summary.parent.name)
        s = json.loads(summary.read_text())
        metrics = []
        for name in ("metrics.jsonl", "metrics.csv"):
            f = summary.parent / name
            if f.exists():
                metrics = read_metrics(f)
                break
        runs.append({"objective": s["objective"], "seed": int(m.group(2)) if m else s["seed"],
                     "summary": s, "metrics": metrics, "dir": summary.parent})
    runs.sort(key=lambda r: (ORDER.get(r["objective"], 9), r["objective"], r["seed"]))
    return runs


def read_metrics(path: Path):
    if path.suffix == ".csv":
        rows = []
        with path.open() as f:
            for row in csv.DictReader(f):
                rows.append({k: (v if k == "split" else float(v)) for k, v in row.items() if v != ""})
        return rows
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spread(values):
    """'mean ± sd [min-max]' of a list of fractions, as percentages."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * sd:.1f} [{100 * min(values):.1f}-{100 * max(values):.1f}]"


def mean_sd(values, fmt="{:.0f}"):
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (fmt + " ± " + fmt).format(statistics.fmean(values), sd)


def kind_acc(summary, split, kind, field):
    return summary.get(split, {}).get("by_kind", {}).get(kind, {}).get(field)


def table(runs, note):
    by_obj = defaultdict(list)
    for r in runs:
        by_obj[r["objective"]].append(r)
    lines = []
    lines.append("| objective | score | seeds | eval acc % | OOD acc % | eval swap / substitute % "
                 "| OOD swap / substitute % | train s | wall s |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for obj, rs in by_obj.items():
        s0 = rs[0]["summary"]
        field = "implicit_acc" if s0["score"] == "implicit" else "reward_acc"
        ev = [r["summary"]["eval"]["score_acc"] for r in rs if "eval" in r["summary"]]
        ood = [r["summary"]["ood"]["score_acc"] for r in rs if "ood" in r["summary"]]

        def kinds(split):
            parts = []
            for kind in ("swap", "substitute"):
                v = [kind_acc(r["summary"], split, kind, field) for r in rs]
                v = [x for x in v if x is not None]
                parts.append(f"{100 * statistics.fmean(v):.1f}" if v else "-")
            return " / ".join(parts)

        lines.append(
            f"| {LABEL.get(obj, obj)} | {'implicit reward' if field == 'implicit_acc' else 'reward head'}"
            f" | {len(rs)} | {spread(ev)} | {spread(ood)} | {kinds('eval')} | {kinds('ood')}"
            f" | {mean_sd([r['summary']['train_seconds'] for r in rs])}"
            f" | {mean_sd([r['summary']['wall_seconds'] for r in rs])} |")
    lines.append("")
    lines.append("Accuracy: % of pairs with score(chosen) > score(rejected), mean ± sample sd "
                 "[min-max] over seeds. " + (note or ""))
    lines.append("")
    lines.append("Per run (reward head / implicit reward accuracy, %):")
    lines.append("")
    lines.append("| run | eval reward | eval implicit | OOD reward | OOD implicit | steps |")
    lines.append("|---|---|---|---|---|---|")
    for r in runs:
        s = r["summary"]
        cell = lambda split, f: f"{100 * s[split][f]:.1f}" if split in s else "-"
        lines.append(f"| {r['dir'].name} | {cell('eval', 'reward_acc')} | "
                     f"{cell('eval', 'implicit_acc')} | {cell('ood', 'reward_acc')} | "
                     f"{cell('ood', 'implicit_acc')} | {s['steps']} |")
    return "\n".join(lines)


def plot(runs, root: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_compare: matplotlib not installed (bash scripts/setup.sh adds it); "
              "no PNGs written", file=sys.stderr)
        return []
    colors = {"bt": "tab:blue", "haf": "tab:orange", "dpo": "tab:green"}
    by_obj = defaultdict(list)
    for r in runs:
        by_obj[r["objective"]].append(r)

    def series(rs, split, key):
        """Mean and min/max over seeds of `key` per step."""
        per_step = defaultdict(list)
        for r in rs:
            for m in r["metrics"]:
                if m.get("split") == split and key in m:
                    per_step[int(m["step"])].append(float(m[key]))
        steps = sorted(per_step)
        return (steps, [statistics.fmean(per_step[s]) for s in steps],
                [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps])

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [(axes[0][0], "train", "loss", "training loss (objective)"),
              (axes[0][1], "train", "score_acc", "training accuracy of the score"),
              (axes[1][0], "eval", "score_acc", "eval accuracy of the score"),
              (axes[1][1], "ood", "score_acc", "OOD accuracy of the score")]
    for ax, split, key, title in panels:
        for obj, rs in by_obj.items():
            steps, mean, lo, hi = series(rs, split, key)
            if not steps:
                continue
            c = colors.get(obj)
            ax.plot(steps, mean, label=LABEL.get(obj, obj), color=c,
                    marker="o" if split != "train" else None, ms=3)
            ax.fill_between(steps, lo, hi, color=c, alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if key.endswith("acc"):
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[0][0].legend()
    fig.suptitle("haf_rm on the synthetic 'sort the letters' task: mean over seeds, band = min-max")
    fig.tight_layout()
    curves = root / "curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    objs = list(by_obj)
    width = 0.38
    for j, split in enumerate(("eval", "ood")):
        xs = [i + (j - 0.5) * width for i in range(len(objs))]
        vals = [[r["summary"][split]["score_acc"] for r in by_obj[o] if split in r["summary"]]
                for o in objs]
        means = [statistics.fmean(v) if v else math.nan for v in vals]
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(xs, means, width, yerr=sds, capsize=4, label=split,
               color=["tab:gray", "tab:purple"][j], alpha=0.7)
        for x, v in zip(xs, vals):
            ax.scatter([x] * len(v), v, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(objs)))
    ax.set_xticklabels([LABEL.get(o, o) for o in objs])
    ax.set_ylabel("preference accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend()
    ax.set_title("eval and OOD accuracy (bars: mean ± sd over seeds; dots: seeds)")
    fig.tight_layout()
    comparison = root / "comparison.png"
    fig.savefig(comparison, dpi=110)
    plt.close(fig)
    return [curves, comparison]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="directory of <objective>-s<seed>/ run folders")
    p.add_argument("--table", type=Path, help="also write the table to this file")
    p.add_argument("--note", default="", help="a sentence appended under the table")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args()
    runs = load_runs(a.root)
    if not runs:
        sys.exit(f"plot_compare: no <objective>-s<seed>/summary.json under {a.root}")
    text = table(runs, a.note)
    print(text)
    if a.table:
        a.table.write_text(text + "\n")
    if not a.no_plots:
        for f in plot(runs, a.root):
            print(f"wrote {f}")


if __name__ == "__main__":
    main()
