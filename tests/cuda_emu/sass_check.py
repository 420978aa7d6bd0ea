#!/usr/bin/env python3
"""Static checks of the CUDA kernels' SASS (no GPU needed), run by ctest as hafrm.cuda_sass.

  sass_check.py --nvcc NVCC --cuobjdump CUOBJDUMP --include DIR --source sass_check.cu
                [--arch sm_90] [--report FILE]

Compiles every kernel for the target arch with ptxas -v and -warn-spills and fails on any spill
or stack frame; dumps the SASS and fails unless each forward / backward kernel's main loop (the
backward branch whose body holds the unrolled 16-byte loads) uses LDG.E.128, and each backward
loop STG.E.128. Prints, per kernel, the loop's instructions per element on the common path
(instructions jumped over by a forward branch inside the loop, the rare max-rescale and label
blocks, are not counted), which bench/README.md turns into a bandwidth projection.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

UNROLL = 4  # KernelPolicy::kUnroll (2 on the general-transform path)
VEC_ELEMS = {"float": 4, "__nv_bfloat16": 8, "__half": 8}


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return out.stdout.split("\n") if out.returncode == 0 else names


def parse_functions(sass):
    funcs = {}
    for chunk in re.split(r"\n\s*Function : ", sass)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        ins = []
        for line in chunk.split("\n"):
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
            if m:
                ins.append((int(m.group(1), 16), m.group(2)))
        funcs[name] = ins
    return funcs


def main_loop(ins):
    """Of the innermost loops (back edges with no back edge nested inside), the one with the
    most 128-bit loads: the unrolled main loop."""
    edges = []
    for addr, txt in ins:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", txt)
        if m and int(m.group(1), 16) < addr:
            edges.append((int(m.group(1), 16), addr))
    best = None
    for tgt, addr in edges:
        if any(tgt <= t2 and a2 < addr and (t2, a2) != (tgt, addr) for t2, a2 in edges):
            continue
        body = [(a, t) for a, t in ins if tgt <= a <= addr]
        n128 = sum("LDG.E.128" in t for _, t in body)
        if n128 < 2:
            continue
        key = (n128, -len(body))
        if best is None or key > best[0]:
            best = (key, body)
    return best[1] if best else None


def common_path(body):
    lo, hi = body[0][0], body[-1][0]
    skipped = set()
    for addr, txt in body:
        m = re.search(r"^@!?U?P\d+\s+BRA\b.*?0x([0-9a-f]+)", txt)
        if m:
            tgt = int(m.group(1), 16)
            if addr < tgt <= hi:
                skipped.update(a for a, _ in body if addr < a < tgt)
    return [(a, t) for a, t in body if a not in skipped and not t.startswith(("BSSY", "BSYNC"))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvcc", required=True)
    ap.add_argument("--cuobjdump", required=True)
    ap.add_argument("--include", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--report")
    a = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.o")  # -c: the host pass is compiled too
        cmd = [a.nvcc, "-std=c++20", "-O3", f"-arch={a.arch}", "-c", "-I", a.include,
               "-Xptxas", "-v,-warn-spills", "-o", cubin, a.source]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            print("FAIL: nvcc did not compile the kernels")
            return 1
        log = r.stderr
        spills = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
        if not spills:
            print(log)
            print("FAIL: no ptxas -v report")
            return 1
        for frame, st, ld in spills:
            if int(st) or int(ld) or int(frame):
                failures.append(f"ptxas: {frame} bytes stack, {st} spill stores, {ld} spill loads")
        if "spill" in log.lower() and "0 bytes spill stores, 0 bytes spill loads" not in log:
            failures.append("ptxas warned about spills")
        for line in log.split("\n"):
            if "warning" in line.lower() and "spill" in line.lower():
                failures.append(line.strip())
        regs = re.findall(r"Compiling entry function '([^']+)'.*?Used (\d+) registers", log, re.S)
        sass = subprocess.run([a.cuobjdump, "-sass", cubin], capture_output=True, text=True)
        if sass.returncode != 0:
            print(sass.stderr)
            print("FAIL: cuobjdump")
            return 1
        funcs = parse_functions(sass.stdout)
    names = list(funcs)
    dem = dict(zip(names, demangle(names)))
    reg_of = {n: int(c) for n, c in regs}
    rows = []
    for name, ins in funcs.items():
        d = dem[name]
        kind = "forward" if "forward_kernel" in d else "backward" if "backward_kernel" in d else None
        if kind is None:
            continue
        m = re.search(r"_kernel<([^,]+), (\d+), (\w+), (\w+)>", d)
        dtype, tpr, opt, gen = m.groups()
        body = main_loop(ins)
        if body is None:
            failures.append(f"{d[:100]}: no loop with 128-bit loads")
            continue
        if kind == "backward" and not any("STG.E.128" in t for _, t in body):
            failures.append(f"{d[:100]}: main loop stores are not STG.E.128")
        common = common_path(body)
        elems = sum("LDG.E.128" in t for _, t in common) * VEC_ELEMS[dtype]
        ex2 = sum("MUFU.EX2" in t for _, t in common)
        rows.append((kind, dtype, int(tpr), opt, gen, reg_of.get(name, -1), len(common), elems,
                     len(common) / elems, ex2 / elems))
    rows.sort()
    lines = ["kind      dtype           tpr  mode/Hgrad  general  regs  loop-instr  elems  instr/elem  ex2/elem"]
    for k, dt, tpr, opt, gen, rg, n, e, ipe, xpe in rows:
        lines.append(f"{k:9} {dt:15} {tpr:4}  {opt:10}  {gen:7}  {rg:4}  {n:10}  {e:5}  {ipe:10.2f}  {xpe:8.2f}")
    report = "\n".join(lines)
    print(report)
    if a.report:
        with open(a.report, "w") as f:
            f.write(report + "\n")
    expected = 2 * 3 * 3 * 2 + 2 * 3 * 2 * 2  # forward + backward instantiations
    if len(rows) != expected:
        failures.append(f"expected {expected} forward/backward kernels in the SASS, found {len(rows)}")
    for f in failures:
        print("FAIL:", f)
    print("sass check:", "FAILED" if failures else f"ok ({len(rows)} kernels, no spills, 128-bit main loops)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
