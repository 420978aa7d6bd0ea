#!/usr/bin/env python3
"""Pre-trained against from-scratch reward models: the tables and chart of
`scripts/compare.sh rules --pretrained`.

Reads <root>/{scratch,pretrained}[-large]/<objective>-s<seed>/summary.json (plot_compare.py's
layout, one folder per initialisation) and <root>/backbone[-large]/{lm,sft}/summary.json, and
prints Markdown:

1. the backbones: steps, training time, next-token NLL of the eval and OOD responses;
2. per model size, objective and initialisation, the gold-ordering and label accuracy of the
   objective's score, mean ± sample sd [min-max] over seeds;
3. paired by seed: pretrained - scratch for each objective, and within each initialisation every
   objective against bt (the plain reward model), with on how many seeds the sign holds.

With matplotlib it writes <root>/pretrained_vs_scratch.png (gold accuracy per objective, scratch
beside pretrained, one dot per seed).

  .venv/bin/python scripts/compare_init.py runs/compare-rules-pretrained
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plot_compare as pc  # noqa: E402

INITS = ("scratch", "pretrained")
SIZES = (("", "default model (2 layers, d 64)"), ("-large", "larger model (4 layers, d 128)"))


def backbones(root: Path):
    lines = ["| backbone | stage | steps | train s | eval NLL | OOD NLL |", "|---|---|---|---|---|---|"]
    for suffix, name in SIZES:
        for stage in ("lm", "sft"):
            f = root / f"backbone{suffix}" / stage / "summary.json"
            if not f.exists():
                continue
            s = json.loads(f.read_text())

            def nll(split):
                return f"{s[split]['nll']:.3f}" if split in s and "nll" in s[split] else "-"

            lines.append(f"| {name} | {stage} | {s['steps']} | {s['train_seconds']:.0f} | "
                         f"{nll('eval')} | {nll('ood')} |")
    return lines


def diff_cell(a, b, f):
    """Mean over common seeds of f(A) - f(B) in points, with sign agreement."""
    seeds = sorted(set(a) & set(b))
    diffs = [f(a[k]) - f(b[k]) for k in seeds if f(a[k]) is not None and f(b[k]) is not None]
    if not diffs:
        return "-"
    mean = statistics.fmean(diffs)
    sign = (mean > 0) - (mean < 0)
    held = sum(1 for d in diffs if sign != 0 and (d > 0) - (d < 0) == sign)
    mark = " ✓" if sign != 0 and held == len(diffs) else ""
    return f"{100 * mean:+.1f} ({held}/{len(diffs)}){mark}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args()
    grids = {}
    for suffix, _ in SIZES:
        for init in INITS:
            d = a.root / f"{init}{suffix}"
            if d.is_dir():
                runs = pc.load_runs(d)
                if runs:
                    grids[(suffix, init)] = pc.by_objective(runs)
    if not grids:
        sys.exit(f"compare_init: no scratch*/ or pretrained*/ runs under {a.root}")
    measures = pc.MEASURES
    out = ["### Pre-trained backbone vs from scratch", ""]
    out += backbones(a.root) + [""]
    out += ["NLL: mean next-token NLL (nats) of the eval / OOD responses: over every token of both "
            "sides for lm, over the chosen responses given their prompts for sft.", ""]
    out.append("| model | objective | init | seeds | " +
               " | ".join(f"{n} acc %" for n, _ in measures) + " |")
    out.append("|" + "---|" * (4 + len(measures)))
    for suffix, size in SIZES:
        objs = []
        for init in INITS:
            for o in grids.get((suffix, init), {}):
                if o not in objs:
                    objs.append(o)
        for o in sorted(objs, key=pc.order_key):
            for init in INITS:
                rs = grids.get((suffix, init), {}).get(o)
                if rs:
                    out.append(f"| {size} | {pc.label(o)} | {init} | {len(rs)} | " +
                               " | ".join(pc.spread(pc.values(rs, f)) for _, f in measures) + " |")
    out += ["", "Paired by seed (A - B in accuracy points; k/n = seeds on which the sign holds; "
            "✓ = every seed):", ""]
    out.append("| model | A | B | " + " | ".join(f"{n} A - B" for n, _ in measures) + " |")
    out.append("|" + "---|" * (3 + len(measures)))

    def seeds_of(rs):
        return {r["seed"]: r["summary"] for r in rs}

    for suffix, size in SIZES:
        pre, scr = grids.get((suffix, "pretrained"), {}), grids.get((suffix, "scratch"), {})
        for o in sorted(set(pre) & set(scr), key=pc.order_key):
            out.append(f"| {size} | pretrained {pc.label(o)} | scratch {pc.label(o)} | " +
                       " | ".join(diff_cell(seeds_of(pre[o]), seeds_of(scr[o]), f)
                                  for _, f in measures) + " |")
        for init in INITS:
            g = grids.get((suffix, init), {})
            if "bt" not in g:
                continue
            for o in sorted(g, key=pc.order_key):
                if o == "bt":
                    continue
                out.append(f"| {size} | {init} {pc.label(o)} | {init} bt | " +
                           " | ".join(diff_cell(seeds_of(g[o]), seeds_of(g["bt"]), f)
                                      for _, f in measures) + " |")
    print("\n".join(out))
    if not a.no_plots:
        f = plot(grids, a.root)
        if f:
            print(f"\nwrote {f}")


def plot(grids, root: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare_init: matplotlib not installed; no PNG written", file=sys.stderr)
        return None
    sizes = [(s, n) for s, n in SIZES if any((s, i) in grids for i in INITS)]
    fig, axes = plt.subplots(len(sizes), 2, figsize=(13, 4.2 * len(sizes)), squeeze=False)
    colors = {"scratch": "tab:gray", "pretrained": "tab:red"}
    for row, (suffix, size) in enumerate(sizes):
        objs = sorted({o for i in INITS for o in grids.get((suffix, i), {})}, key=pc.order_key)
        for col, (name, f) in enumerate([pc.MEASURES[1], pc.MEASURES[3]]):
            ax = axes[row][col]
            for j, init in enumerate(INITS):
                g = grids.get((suffix, init), {})
                xs, means, sds = [], [], []
                for i, o in enumerate(objs):
                    v = pc.values(g.get(o, []), f)
                    if not v:
                        continue
                    x = i + (j - 0.5) * 0.3
                    ax.scatter([x] * len(v), v, color=colors[init], s=12, alpha=0.6)
                    xs.append(x)
                    means.append(statistics.fmean(v))
                    sds.append(statistics.stdev(v) if len(v) > 1 else 0.0)
                ax.errorbar(xs, means, yerr=sds, fmt="_", ms=14, color=colors[init], capsize=4,
                            label=init)
            ax.set_xticks(range(len(objs)))
            ax.set_xticklabels([pc.label(o).replace(" (", "\n(") for o in objs], fontsize=8)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_ylabel("accuracy vs the gold ordering")
            ax.set_title(f"{size}: {name}", fontsize=10)
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=8)
    fig.suptitle("haf_rm on the rules task: reward models from a pre-trained (lm + sft) backbone "
                 "vs from scratch (dots: seeds; bars: mean ± sd)", fontsize=11)
    fig.tight_layout()
    out = root / "pretrained_vs_scratch.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
