#!/usr/bin/env python3
"""Turns Google Benchmark JSON files into a markdown table and a PNG chart.

Pairs every fused benchmark with its naive twin (same arguments) and prints time, GB/s or
FLOP/s, peak extra memory, and the speed-up and memory ratios, so a run is read as ratios taken
in one process (the machine is shared and noisy; absolute times across runs are not compared).

  report.py results/token.json results/linear.json --png results/bench.png > results/bench.md
"""
import argparse
import json
import re
import sys


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            data = json.load(f)
        ctx = data.get("context", {})
        bs = data["benchmarks"]
        # With --benchmark_repetitions: the fastest repetition ("min", noise on a shared machine
        # is one-sided), with the median kept beside it as b["median_ms"].
        if any(b.get("run_type") == "aggregate" for b in bs):
            agg = {}
            for b in bs:
                if b.get("run_type") == "aggregate":
                    agg.setdefault(b["run_name"], {})[b["aggregate_name"]] = b
            bs = []
            for name, d in agg.items():
                best = d.get("min") or d.get("median")
                if best is None:
                    continue
                med = d.get("median", best)
                row = dict(best, name=name, median_ms=ms(med))
                # Rate counters of a "min" row are the minimum of the rates (the slowest run):
                # recompute them for the fastest repetition from the median's rate and times.
                scale = ms(med) / ms(best) if ms(best) > 0 else 1.0
                for k in ("bytes_per_second", "FLOPS"):
                    if k in med:
                        row[k] = med[k] * scale
                bs.append(row)
        rows.extend((ctx, b) for b in bs)
    return rows


def split_name(name):
    # BM_Fused_ForwardBackward/N:8192/V:32000/bf16:0/real_time -> (Fused, ForwardBackward, args)
    parts = name.split("/")
    m = re.match(r"BM_(Naive|Fused)(InPlace|NoPool)?(Linear)?_(\w+)", parts[0])
    if not m:
        return None, None, "/".join(parts[1:])
    kind = m.group(1)
    suffix = {"InPlace": " (in-place grad)", "NoPool": " (fresh grad buffer, pool off)"}
    what = ("Linear " if m.group(3) else "") + m.group(4) + suffix.get(m.group(2) or "", "")
    args = "/".join(p for p in parts[1:] if p not in ("real_time",) and not p.startswith("median"))
    return kind, what, args


def ms(b):
    t = b["real_time"]
    unit = b.get("time_unit", "ns")
    return t * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="+")
    ap.add_argument("--png", help="write a bar chart of the speed-ups and memory ratios")
    a = ap.parse_args()
    rows = load(a.json)
    ctx = rows[0][0] if rows else {}
    print(f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
          f"{ctx.get('date', '')}. Times: fastest of the repetitions (median in brackets).\n")
    bw = [b for _, b in rows if b["name"].startswith(("BM_StreamRead", "BM_DeviceCopy"))
          and "bytes_per_second" in b]
    read_gbs = bw[0]["bytes_per_second"] / 1e9 if bw else None
    if read_gbs:
        what = "device-to-device copy (read + write)" if "DeviceCopy" in bw[0]["name"] else \
            "streaming read (same binary, same threads)"
        print(f"Bandwidth reference, {what}: **{read_gbs:.1f} GB/s**\n")
    pairs = {}
    for _, b in rows:
        kind, what, args = split_name(b["name"])
        if kind:
            pairs.setdefault((what, args), {})[kind] = b
    print("| benchmark | args | naive ms (median) | fused ms (median) | speed-up | fused GB/s (% of read) or GFLOP/s "
          "| naive peak extra MB | fused peak extra MB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    chart = []
    for (what, args), d in pairs.items():
        f = d.get("Fused")
        n = d.get("Naive")
        if f is None:
            continue
        tf = ms(f)
        tn = ms(n) if n else None
        if n is None and what.endswith(")"):
            n = pairs.get((what[:what.index(" (")], args), {}).get("Naive")
            tn = ms(n) if n else None
        speed = f"{tn / tf:.2f}x" if tn else "—"
        if "FLOPS" in f:
            rate = f"{f['FLOPS'] / 1e9:.0f} GFLOP/s"
        elif "bytes_per_second" in f:
            g = f["bytes_per_second"] / 1e9
            rate = f"{g:.1f}" + (f" ({100 * g / read_gbs:.0f}%)" if read_gbs else "")
        else:
            rate = "—"
        mf = f.get("peak_extra_MB")
        mn = n.get("peak_extra_MB") if n else None
        if mf is not None and mn and mf < 1.0:
            ratio = "no [N, V] buffer"
        else:
            ratio = f"1/{mn / mf:.1f}" if mf and mn else "—"
        fmed = f" ({f['median_ms']:.0f})" if "median_ms" in f else ""
        nmed = f" ({n['median_ms']:.0f})" if n is not None and "median_ms" in n else ""
        print(f"| {what} | {args} | {tn:.1f}{nmed} | {tf:.1f}{fmed} | {speed} | {rate} | "
              f"{mn:.0f} | {mf:.0f} | {ratio} |" if tn else
              f"| {what} | {args} | — | {tf:.1f}{fmed} | — | {rate} | — | {mf:.0f} | — |")
        if tn:
            chart.append((f"{what}\n{args}", tn / tf, (mn / mf) if mf and mn else 0))
    if a.png and chart:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(13, 0.6 * len(chart) + 1.5))
        labels = [c[0] for c in chart]
        axes[0].barh(labels, [c[1] for c in chart], color="#3b7dd8")
        axes[0].axvline(1.0, color="k", lw=0.8)
        axes[0].set_xlabel("speed-up of fused over naive (x)")
        axes[1].barh(labels, [c[2] for c in chart], color="#d8843b")
        axes[1].set_xlabel("naive / fused peak extra memory (x)")
        axes[1].set_yticks([])
        for ax in axes:
            ax.invert_yaxis()
        fig.suptitle("hafrm fused kernels vs naive LibTorch (one run, ratios)")
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)
        print(f"\nChart: {a.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
