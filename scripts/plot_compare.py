#!/usr/bin/env python3
"""Summarises haf_rm runs: prints the comparison tables and draws PNGs.

Reads <root>/<objective>-s<seed>/{summary.json,metrics.jsonl} (what scripts/compare.sh writes;
<objective> is bt, haf, dpo or haf-aX, the hybrid at alpha X) and prints Markdown tables:

1. per objective, the mean ± sample sd [min-max] over seeds of the eval and OOD preference
   accuracy of the objective's score (reward head for bt/haf, implicit reward for dpo) against
   the labels and, when the records carry "gold_agrees" (data/rules), against the hidden gold
   ordering; per corruption kind when the data has kinds (data/synthetic); time;
2. a paired comparison across seeds: for each pair of objectives, over the seeds both have, the
   mean difference of each accuracy and on how many seeds its sign holds;
3. every run's reward-head and implicit-reward accuracies.

With matplotlib it also writes <root>/curves.png (training loss, training accuracy, eval/OOD
accuracy vs step) and <root>/comparison.png (accuracy per objective, one dot per seed; with the
hybrid's alpha sweep, a second panel of accuracy vs alpha).

  .venv/bin/python scripts/plot_compare.py runs/compare [--table runs/compare/table.md]
      [--task rules] [--complete-seeds]

Also reads CSV metrics (a run trained with --metrics run/metrics.csv).
"""

import argparse
import csv
import itertools
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LABEL = {"bt": "bt (plain RM, alpha 0)", "haf": "haf (hybrid, alpha 0.2)",
         "dpo": "dpo (implicit reward)"}
TASK_TITLE = {"synthetic": "the synthetic 'sort the letters' task",
              "rules": "the 'rules' task (hidden gold reward, noisy labels)"}


def alpha_of(obj):
    """The hybrid's policy-loss weight of an objective name (None for dpo)."""
    if obj == "bt":
        return 0.0
    if obj == "haf":
        return 0.2
    m = re.fullmatch(r"haf-a([0-9.]+)", obj)
    return float(m.group(1)) if m else None


def order_key(obj):
    a = alpha_of(obj)
    return (0, a, obj) if a is not None else (1, 0.0, obj)


def label(obj):
    if obj in LABEL:
        return LABEL[obj]
    a = alpha_of(obj)
    return f"hybrid, alpha {a:g}" if a is not None else obj


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
        # The folder name tells the alpha sweep's runs apart (their summary says "haf").
        runs.append({"objective": m.group(1) if m else s["objective"],
                     "seed": int(m.group(2)) if m else s["seed"],
                     "summary": s, "metrics": metrics, "dir": summary.parent})
    runs.sort(key=lambda r: (order_key(r["objective"]), r["seed"]))
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


# The measures of a run: (column name, function summary -> fraction or None).
MEASURES = [
    ("eval label", lambda s: s.get("eval", {}).get("score_acc")),
    ("eval gold", lambda s: s.get("eval", {}).get("gold", {}).get("score_acc")),
    ("OOD label", lambda s: s.get("ood", {}).get("score_acc")),
    ("OOD gold", lambda s: s.get("ood", {}).get("gold", {}).get("score_acc")),
]


def by_objective(runs):
    by_obj = defaultdict(list)
    for r in runs:
        by_obj[r["objective"]].append(r)
    return by_obj


def values(rs, measure):
    v = [measure(r["summary"]) for r in rs]
    return [x for x in v if x is not None]


def table(runs, note):
    by_obj = by_objective(runs)
    has_gold = any(values(rs, MEASURES[1][1]) for rs in by_obj.values())
    has_kinds = any(r["summary"].get("eval", {}).get("by_kind") for r in runs)
    measures = MEASURES if has_gold else [MEASURES[0], MEASURES[2]]
    lines = []
    head = "| objective | score | seeds | " + " | ".join(f"{n} acc %" for n, _ in measures)
    if has_kinds:
        head += " | eval swap / substitute % | OOD swap / substitute %"
    lines.append(head + " | train s | wall s |")
    ncols = 3 + len(measures) + (2 if has_kinds else 0) + 2
    lines.append("|" + "---|" * ncols)
    for obj, rs in by_obj.items():
        s0 = rs[0]["summary"]
        field = "implicit_acc" if s0["score"] == "implicit" else "reward_acc"

        def kinds(split):
            parts = []
            for kind in ("swap", "substitute"):
                v = [kind_acc(r["summary"], split, kind, field) for r in rs]
                v = [x for x in v if x is not None]
                parts.append(f"{100 * statistics.fmean(v):.1f}" if v else "-")
            return " / ".join(parts)

        row = (f"| {label(obj)} | {'implicit reward' if field == 'implicit_acc' else 'reward head'}"
               f" | {len(rs)} | " + " | ".join(spread(values(rs, f)) for _, f in measures))
        if has_kinds:
            row += f" | {kinds('eval')} | {kinds('ood')}"
        row += (f" | {mean_sd([r['summary']['train_seconds'] for r in rs])}"
                f" | {mean_sd([r['summary']['wall_seconds'] for r in rs])} |")
        lines.append(row)
    lines.append("")
    lines.append("Accuracy: % of pairs with score(chosen) > score(rejected) (label), or with "
                 "score(gold-better) > score(gold-worse) (gold), mean ± sample sd [min-max] over "
                 "seeds. " + (note or ""))
    lines.append("")
    lines.extend(paired(by_obj, measures))
    lines.append("")
    lines.append("Per run (reward head / implicit reward accuracy, %):")
    lines.append("")
    gold_cols = " | eval gold reward | eval gold implicit | OOD gold reward | OOD gold implicit" \
        if has_gold else ""
    lines.append("| run | eval reward | eval implicit | OOD reward | OOD implicit" + gold_cols +
                 " | steps |")
    lines.append("|" + "---|" * (6 + (4 if has_gold else 0)))
    for r in runs:
        s = r["summary"]

        def cell(split, f, gold=False):
            d = s.get(split, {})
            if gold:
                d = d.get("gold", {})
            return f"{100 * d[f]:.1f}" if f in d else "-"

        row = (f"| {r['dir'].name} | {cell('eval', 'reward_acc')} | {cell('eval', 'implicit_acc')}"
               f" | {cell('ood', 'reward_acc')} | {cell('ood', 'implicit_acc')}")
        if has_gold:
            row += (f" | {cell('eval', 'reward_acc', True)} | {cell('eval', 'implicit_acc', True)}"
                    f" | {cell('ood', 'reward_acc', True)} | {cell('ood', 'implicit_acc', True)}")
        lines.append(row + f" | {s['steps']} |")
    return "\n".join(lines)


def paired(by_obj, measures):
    """For each pair (A, B): mean over common seeds of acc(A) - acc(B), and sign agreement."""
    lines = ["Paired comparison across seeds (A - B in accuracy points, mean over the seeds both "
             "ran; k/n = on how many of the n seeds the difference has the mean's sign; ✓ = on "
             "every seed):", ""]
    lines.append("| A | B | seeds | " + " | ".join(f"{n} A - B" for n, _ in measures) + " |")
    lines.append("|" + "---|" * (3 + len(measures)))
    # B is the earlier objective in the table (bt first), so A - B > 0 reads "A beats B".
    for b, a in itertools.combinations(list(by_obj), 2):
        sa = {r["seed"]: r["summary"] for r in by_obj[a]}
        sb = {r["seed"]: r["summary"] for r in by_obj[b]}
        seeds = sorted(set(sa) & set(sb))
        if not seeds:
            continue
        cells = []
        for _, f in measures:
            diffs = [f(sa[k]) - f(sb[k]) for k in seeds
                     if f(sa[k]) is not None and f(sb[k]) is not None]
            if not diffs:
                cells.append("-")
                continue
            mean = statistics.fmean(diffs)
            sign = (mean > 0) - (mean < 0)
            held = sum(1 for d in diffs if sign != 0 and (d > 0) - (d < 0) == sign)
            mark = " ✓" if sign != 0 and held == len(diffs) else ""
            cells.append(f"{100 * mean:+.1f} ({held}/{len(diffs)}){mark}")
        lines.append(f"| {label(a)} | {label(b)} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def plot(runs, root: Path, task: str):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_compare: matplotlib not installed (bash scripts/setup.sh adds it); "
              "no PNGs written", file=sys.stderr)
        return []
    by_obj = by_objective(runs)
    objs = list(by_obj)
    cmap = plt.get_cmap("viridis")
    hybrids = [o for o in objs if o not in ("bt", "dpo") and alpha_of(o) is not None]
    colors = {"bt": "tab:blue", "dpo": "tab:green"}
    for i, o in enumerate(hybrids):
        colors[o] = "tab:orange" if o == "haf" and len(hybrids) == 1 else \
            cmap(0.25 + 0.7 * i / max(1, len(hybrids) - 1))
    title = TASK_TITLE.get(task, f"task '{task}'") if task else "the comparison"

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

    has_gold = any(values(rs, MEASURES[1][1]) for rs in by_obj.values())
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    eval_key = "gold_score_acc" if has_gold else "score_acc"
    what = "gold-ordering accuracy" if has_gold else "accuracy"
    panels = [(axes[0][0], "train", "loss", "training loss (objective)"),
              (axes[0][1], "train", "score_acc", "training accuracy of the score (labels)"),
              (axes[1][0], "eval", eval_key, f"eval {what} of the score"),
              (axes[1][1], "ood", eval_key, f"OOD {what} of the score")]
    for ax, split, key, ptitle in panels:
        for obj, rs in by_obj.items():
            steps, mean, lo, hi = series(rs, split, key)
            if not steps:
                continue
            c = colors.get(obj)
            ax.plot(steps, mean, label=label(obj), color=c,
                    marker="o" if split != "train" else None, ms=3)
            ax.fill_between(steps, lo, hi, color=c, alpha=0.15)
        ax.set_title(ptitle)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if key.endswith("acc"):
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"haf_rm on {title}: mean over seeds, band = min-max")
    fig.tight_layout()
    curves = root / "curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    measures = MEASURES if has_gold else [MEASURES[0], MEASURES[2]]
    sweep = [o for o in objs if alpha_of(o) is not None]
    two = has_gold and len(sweep) > 2
    fig, axs = plt.subplots(1, 2 if two else 1, figsize=(15 if two else 9, 5),
                            gridspec_kw={"width_ratios": [3, 2]} if two else None)
    ax = axs[0] if two else axs
    width = 0.8 / len(measures)
    shades = ["#9e9e9e", "#424242", "#b39ddb", "#5e35b1"] if has_gold else ["tab:gray",
                                                                            "tab:purple"]
    for j, (name, f) in enumerate(measures):
        xs = [i + (j - (len(measures) - 1) / 2) * width for i in range(len(objs))]
        vals = [values(by_obj[o], f) for o in objs]
        means = [statistics.fmean(v) if v else math.nan for v in vals]
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(xs, means, width, yerr=sds, capsize=3, label=name, color=shades[j], alpha=0.8)
        for x, v in zip(xs, vals):
            ax.scatter([x] * len(v), v, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(objs)))
    ax.set_xticklabels([label(o).replace(" (", "\n(") for o in objs], fontsize=8)
    ax.set_ylabel("preference accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("accuracy of each objective's score (bars: mean ± sd; dots: seeds)", fontsize=10)
    if two:
        ax2 = axs[1]
        alphas = [alpha_of(o) for o in sweep]
        # alpha 0 (bt) sits left of the smallest positive alpha on the log axis.
        pos = [a for a in alphas if a > 0]
        x0 = min(pos) / 2.5 if pos else 0.01
        xs = [a if a > 0 else x0 for a in alphas]
        for (name, f), c, ls in zip(measures, shades, ["--", "-", "--", "-"]):
            means = [statistics.fmean(values(by_obj[o], f)) for o in sweep]
            sds = [statistics.stdev(values(by_obj[o], f)) if len(values(by_obj[o], f)) > 1
                   else 0.0 for o in sweep]
            ax2.errorbar(xs, means, yerr=sds, color=c, ls=ls, marker="o", capsize=3, label=name)
            if "dpo" in by_obj:
                ax2.axhline(statistics.fmean(values(by_obj["dpo"], f)), color=c, ls=":", lw=1)
        ax2.set_xscale("log")
        ax2.minorticks_off()
        ax2.set_xticks(xs)
        ax2.set_xticklabels([f"{a:g}" if a > 0 else "0\n(bt)" for a in alphas], fontsize=8)
        ax2.set_xlabel("alpha (policy-loss weight of the hybrid)")
        ax2.set_ylabel("preference accuracy (reward head)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8, loc="center right")
        ax2.set_title("alpha sweep (dotted: dpo's implicit reward)", fontsize=10)
    fig.suptitle(f"haf_rm on {title}", fontsize=11)
    fig.tight_layout()
    comparison = root / "comparison.png"
    fig.savefig(comparison, dpi=110)
    plt.close(fig)
    return [curves, comparison]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="directory of <objective>-s<seed>/ run folders")
    p.add_argument("--table", type=Path, help="also write the tables to this file")
    p.add_argument("--note", default="", help="a sentence appended under the first table")
    p.add_argument("--task", default="", help="task name for the chart titles")
    p.add_argument("--complete-seeds", action="store_true",
                   help="use only the seeds every objective has finished (a stopped comparison)")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args()
    runs = load_runs(a.root)
    if not runs:
        sys.exit(f"plot_compare: no <objective>-s<seed>/summary.json under {a.root}")
    if a.complete_seeds:
        seeds = set.intersection(*({r["seed"] for r in rs} for rs in by_objective(runs).values()))
        dropped = sorted({r["dir"].name for r in runs if r["seed"] not in seeds})
        runs = [r for r in runs if r["seed"] in seeds]
        if not runs:
            sys.exit("plot_compare: no seed has finished for every objective")
        if dropped:
            print(f"plot_compare: left out runs of incomplete seeds: {', '.join(dropped)}",
                  file=sys.stderr)
    text = table(runs, a.note)
    print(text)
    if a.table:
        a.table.write_text(text + "\n")
    if not a.no_plots:
        for f in plot(runs, a.root, a.task):
            print(f"wrote {f}")


if __name__ == "__main__":
    main()
