#!/usr/bin/env python3
"""haf_rm under torchrun: 2 processes give the losses of 1 with the same global batch and seed,
and a 2-process checkpoint resumes in 1 process. Every run has a hard timeout, and no process the
test started outlives the test.

  test_data_parallel.py --haf-rm build/dev/examples/haf_rm/haf_rm --torchrun .venv/bin/torchrun

A = 1 process, 12 steps, batch 8. B = torchrun 2 processes, 6 steps, batch 4 per rank (global 8).
C = 1 process resuming B's checkpoint to step 12. B's steps 1-6 and C's 7-12 must equal A's.
The constant schedule keeps the learning rate independent of --steps (B stops at 6, A at 12).

Then the interruptions, each bounded in time:
D = torchrun 2 processes, Ctrl-C (SIGINT to the whole process group, as a terminal sends it) after
    a few steps: every rank stops at the same step, rank 0 writes the checkpoint, exit 130;
E = torchrun 2 processes resuming D's checkpoint: D's steps + E's steps must equal A's.
F = torchrun 2 processes, one worker SIGKILLed mid-run: torchrun must end the other and exit
    non-zero (no hang).
G = 2 processes started without torchrun (RANK/WORLD_SIZE/MASTER_* set by hand), rank 1
    SIGKILLed mid-run: rank 0 must fail with an error within --dist-timeout plus a margin.
G2 = the same with rank 1 SIGSTOPped (alive, silent): rank 0 fails on the collective's timeout.
H = rank 1 alone, its store (rank 0) never started: fails naming the store within the timeout.

L = 1 process --objective lm (next-token loss on both sides of every pair), 12 steps, batch 8;
L2 = torchrun 2 processes, 6 steps, batch 4 per rank; L3 = 1 process resuming L2 to step 12: the
loss is the mean over the global batch's tokens, so L2 + L3 must equal L however the tokens fall
between the ranks.

P = torchrun 2 processes --packing --pack-tokens 256, 6 steps, batch 4 per rank; Q = 1 process
resuming P packed to step 12: P + Q must equal A (packing changes only the round-off); PV =
torchrun 2 processes --vocab-parallel --packing, 12 steps, must equal A too.

And the vocab-parallel trainer: V = torchrun 2 processes --vocab-parallel (batch 8 on both ranks,
the LM head's rows split) for 6 steps, W = 1 process resuming V to step 12, VL = the same on the
logits path with --reference model, V4 = 4 processes as 2 data-parallel groups of 2 that split
the LM head (--vocab-parallel-size 2, batch 4 per group); all must equal A.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Float32 training: the ranks' half-batches differ from one batch only in summation order
# (and padding length); measured drift over 30 steps was below 4e-7 relative.
RTOL = 1e-4
COMMON = ["--steps", "12", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "0",
          "--schedule", "constant", "--warmup-steps", "0", "--progress", "plain", "--threads", "1",
          "--eval", "", "--ood", "", "--dist-timeout", "60"]


# The interrupted runs are this long (A too, so they have a reference for every step); the
# constant learning rate makes A's first 12 steps the same as a 12-step run's.
LONG = 60
DEAD_PEER_TIMEOUT = 8  # --dist-timeout (s) of the runs without torchrun (G, G2, H)


def run(cmd, timeout):
    """Runs cmd to completion (killed with its whole group after `timeout`); fails unless it
    exits 0. Returns its output."""
    rc, out = finish(start(cmd), timeout, " ".join(cmd))
    if rc != 0:
        print(out)
        sys.exit(f"FAILED (exit {rc}): {' '.join(cmd)}")
    return out


STARTED = []  # every process start() began: kill_leftovers() ends those still running


def start(cmd, env_extra=None, log=None):
    """Starts cmd in a session of its own (so the whole group can be signalled or killed)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(env_extra or {})
    print("+", " ".join(cmd), flush=True)
    p = subprocess.Popen(cmd, env=env, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    STARTED.append(p)
    return p


def start_rank(cmd, rank, port, log=None):
    """Starts cmd as rank `rank` of 2 without torchrun (the launch variables set by hand)."""
    return start(cmd, {"WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}, log)


def kill_leftovers():
    """Kills the process group of every started process still running (a failed check exits
    early), so no rank or torchrun agent outlives the test."""
    for p in STARTED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def finish(p, timeout, what):
    """Waits for p; on timeout kills its group and fails (the point of these runs: no hang)."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        print(out)
        sys.exit(f"FAILED: {what} did not end within {timeout} s")
    return p.returncode, out or ""


def train_steps_logged(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if '"split":"train"' in line.replace(" ", ""))
    except FileNotFoundError:
        return 0


def wait_for_steps(path, n, p, timeout):
    """Until metrics at path hold n training steps; fails if p ends first or time runs out."""
    t0 = time.monotonic()
    while train_steps_logged(path) < n:
        if p.poll() is not None:
            out = p.stdout.read() if p.stdout else ""
            print(out)
            sys.exit(f"FAILED: the run ended (exit {p.returncode}) before {n} steps were logged")
        if time.monotonic() - t0 > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            sys.exit(f"FAILED: {n} steps not logged within {timeout} s")
        time.sleep(0.05)


def workers_of(pid):
    """The direct children of pid (torchrun's agent starts the workers as its children)."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare(ref, got, steps, what, names=("loss", "reward_loss", "policy_loss", "grad_norm")):
    if sorted(got) != list(steps):
        sys.exit(f"FAILED: {what}: steps logged {sorted(got)}, expected {list(steps)}")
    worst = 0.0
    for s in steps:
        for x, y, name in zip(ref[s], got[s], names):
            rel = abs(x - y) / max(abs(x), 1e-12)
            worst = max(worst, rel)
            if rel > RTOL:
                sys.exit(f"FAILED: {what}: step {s} {name}: 1 process {x!r}, data parallel {y!r} "
                         f"(relative {rel:.2e} > {RTOL})")
    return worst


def losses(path, keys=("loss", "reward_loss", "policy_loss", "grad_norm")):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") == "train":
                out[r["step"]] = tuple(r[k] for k in keys)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--haf-rm", required=True)
    ap.add_argument("--torchrun", required=True)
    ap.add_argument("--train", required=True, help="a JSONL split; its first 256 pairs are used")
    ap.add_argument("--timeout", type=int, default=400, help="seconds per run")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hafrm_dp_") as d:
        with open(a.train) as f, open(f"{d}/train.jsonl", "w") as g:
            g.writelines(line for _, line in zip(range(256), f))
        COMMON.extend(["--train", f"{d}/train.jsonl"])
        run([a.haf_rm, *COMMON, "--steps", str(LONG), "--batch-size", "8", "--out", f"{d}/A"],
            a.timeout)
        out = run([a.torchrun, "--no-python", "--standalone", "--nproc-per-node", "2", a.haf_rm,
                   *COMMON, "--steps", "6", "--batch-size", "4", "--out", f"{d}/B"], a.timeout)
        if "data parallel: 2 processes (gloo), global batch 8" not in out:
            print(out)
            sys.exit("FAILED: rank 0 did not report the 2-process data-parallel set-up")
        run([a.haf_rm, *COMMON, "--batch-size", "8", "--out", f"{d}/C",
             "--resume", f"{d}/B/checkpoint.pt"], a.timeout)
        ref, b, c = losses(f"{d}/A/metrics.jsonl"), losses(f"{d}/B/metrics.jsonl"), \
            losses(f"{d}/C/metrics.jsonl")
        if sorted(ref) != list(range(1, LONG + 1)):
            sys.exit(f"FAILED: steps logged by A {sorted(ref)}")
        got = {**{s: v for s, v in b.items() if s <= 6}, **{s: v for s, v in c.items() if s > 6}}
        worst = compare(ref, got, range(1, 13), "B + C")
        print(f"OK: 12 steps, 1 process vs 2 processes (steps 1-6) + 1-process resume of the "
              f"2-process checkpoint (7-12): worst relative difference {worst:.2e} (tolerance {RTOL})")

        torchrun2 = [a.torchrun, "--no-python", "--standalone", "--nproc-per-node", "2", a.haf_rm]
        long_run = [*COMMON, "--steps", str(LONG), "--batch-size", "4"]

        lm = ["--objective", "lm"]
        run([a.haf_rm, *COMMON, *lm, "--batch-size", "8", "--out", f"{d}/L"], a.timeout)
        run([*torchrun2, *COMMON, *lm, "--steps", "6", "--batch-size", "4", "--out", f"{d}/L2"],
            a.timeout)
        run([a.haf_rm, *COMMON, *lm, "--batch-size", "8", "--out", f"{d}/L3",
             "--resume", f"{d}/L2/checkpoint.pt"], a.timeout)
        keys = ("loss", "grad_norm")
        l2, l3 = losses(f"{d}/L2/metrics.jsonl", keys), losses(f"{d}/L3/metrics.jsonl", keys)
        got = {**{s: v for s, v in l2.items() if s <= 6}, **{s: v for s, v in l3.items() if s > 6}}
        worst = compare(losses(f"{d}/L/metrics.jsonl", keys), got, range(1, 13), "lm L2 + L3",
                        keys)
        print(f"OK: --objective lm, 2 processes (steps 1-6) + 1-process resume (7-12) vs 1 "
              f"process: worst relative difference {worst:.2e} (tolerance {RTOL})")

        # P + Q: --packing under torchrun (each rank's 4 pairs cut into micro-batches of at most
        # 256 tokens), then a 1-process packed resume: the padded run's losses to round-off.
        pack = ["--packing", "--pack-tokens", "256"]
        out = run([*torchrun2, *COMMON, *pack, "--steps", "6", "--batch-size", "4",
                   "--out", f"{d}/P"], a.timeout)
        if "micro-batches of at most 256 tokens" not in out:
            print(out)
            sys.exit("FAILED: rank 0 did not report packing")
        run([a.haf_rm, *COMMON, *pack, "--batch-size", "8", "--out", f"{d}/Q",
             "--resume", f"{d}/P/checkpoint.pt"], a.timeout)
        p, q = losses(f"{d}/P/metrics.jsonl"), losses(f"{d}/Q/metrics.jsonl")
        got = {**{s: x for s, x in p.items() if s <= 6}, **{s: x for s, x in q.items() if s > 6}}
        worst = compare(ref, got, range(1, 13), "packed P + Q")
        print(f"OK: --packing, 2 processes (steps 1-6) + 1-process resume (7-12) vs 1 padded "
              f"process: worst relative difference {worst:.2e} (tolerance {RTOL})")

        # V + W: --vocab-parallel (both ranks take the global batch of 8 and split the LM head's
        # vocabulary), then a 1-process resume of its checkpoint; VL: the same on the logits path
        # (the model returns its logits shard) with the reference model run in every step.
        out = run([*torchrun2, *COMMON, "--steps", "6", "--batch-size", "8", "--vocab-parallel",
                   "--out", f"{d}/V"], a.timeout)
        if ("vocab parallel: 2 processes (gloo), the LM head split over groups of 2 (rows "
                "[0, 128) of 257 on rank 0), 1 group(s) data parallel, global batch 8") not in out:
            print(out)
            sys.exit("FAILED: rank 0 did not report the 2-process vocab-parallel set-up")
        run([a.haf_rm, *COMMON, "--batch-size", "8", "--out", f"{d}/W",
             "--resume", f"{d}/V/checkpoint.pt"], a.timeout)
        v, w = losses(f"{d}/V/metrics.jsonl"), losses(f"{d}/W/metrics.jsonl")
        got = {**{s: x for s, x in v.items() if s <= 6}, **{s: x for s, x in w.items() if s > 6}}
        worst = compare(ref, got, range(1, 13), "vocab parallel V + W")
        run([*torchrun2, *COMMON, "--batch-size", "8", "--vocab-parallel", "--logits",
             "--reference", "model", "--out", f"{d}/VL"], a.timeout)
        worst_l = compare(ref, losses(f"{d}/VL/metrics.jsonl"), range(1, 13), "vocab parallel VL")
        print(f"OK: --vocab-parallel, 2 processes (steps 1-6) + 1-process resume (7-12): worst "
              f"relative difference {worst:.2e}; on the logits path with the reference model: "
              f"{worst_l:.2e} (tolerance {RTOL})")

        # PV: --vocab-parallel with --packing (the packed path's per-token hook over the split
        # LM head), 12 steps: A's losses to round-off.
        run([*torchrun2, *COMMON, "--batch-size", "8", "--vocab-parallel", "--packing",
             "--out", f"{d}/PV"], a.timeout)
        worst = compare(ref, losses(f"{d}/PV/metrics.jsonl"), range(1, 13), "vocab parallel PV")
        print(f"OK: --vocab-parallel --packing, 2 processes vs 1 padded process: worst relative "
              f"difference {worst:.2e} (tolerance {RTOL})")

        # V4: 4 processes as 2 data-parallel groups of 2 that split the LM head (batch 4 per
        # group, global 8); then a group size that does not divide the world is refused.
        torchrun4 = [a.torchrun, "--no-python", "--standalone", "--nproc-per-node", "4", a.haf_rm]
        out = run([*torchrun4, *COMMON, "--batch-size", "4", "--vocab-parallel",
                   "--vocab-parallel-size", "2", "--out", f"{d}/V4"], a.timeout)
        if "split over groups of 2 (rows [0, 128) of 257 on rank 0), 2 group(s) data parallel, " \
                "global batch 8" not in out:
            print(out)
            sys.exit("FAILED: rank 0 did not report 2 data-parallel groups of 2 vocab-parallel ranks")
        worst4 = compare(ref, losses(f"{d}/V4/metrics.jsonl"), range(1, 13), "vocab parallel V4")
        rc, out = finish(start([*torchrun2, *COMMON, "--vocab-parallel", "--vocab-parallel-size",
                                "3", "--out", f"{d}/V3"]), a.timeout, "--vocab-parallel-size 3")
        if rc == 0 or "--vocab-parallel-size 3 must divide the number of processes (2)" not in out:
            print(out)
            sys.exit(f"FAILED: --vocab-parallel-size 3 on 2 processes: exit {rc}, expected an error")
        print(f"OK: 4 processes as 2 data-parallel groups of 2 vocab-parallel ranks: worst relative "
              f"difference {worst4:.2e}; a group size of 3 on 2 processes is refused")

        # D + E: Ctrl-C under torchrun, then resume with torchrun.
        p = start([*torchrun2, *long_run, "--out", f"{d}/D"])
        wait_for_steps(f"{d}/D/metrics.jsonl", 3, p, a.timeout)
        os.killpg(p.pid, signal.SIGINT)
        rc, out = finish(p, 120, "the Ctrl-C'd 2-process run")
        dsteps = losses(f"{d}/D/metrics.jsonl")
        k = max(dsteps)
        if rc == 0 or k >= LONG or not os.path.exists(f"{d}/D/checkpoint.pt"):
            print(out)
            sys.exit(f"FAILED: Ctrl-C: exit {rc}, last step {k} of {LONG}, checkpoint "
                     f"{os.path.exists(f'{d}/D/checkpoint.pt')} (expected non-zero, < {LONG}, True)")
        run([*torchrun2, *long_run, "--out", f"{d}/E", "--resume", f"{d}/D/checkpoint.pt"],
            a.timeout)
        e = losses(f"{d}/E/metrics.jsonl")
        got = {**{s: v for s, v in dsteps.items() if s <= k}, **{s: v for s, v in e.items() if s > k}}
        worst = compare(ref, got, range(1, LONG + 1), "Ctrl-C + resume")
        print(f"OK: Ctrl-C under torchrun at step {k} (exit {rc}), resumed with torchrun to step "
              f"{LONG}: worst relative difference to 1 process {worst:.2e}")

        # F: a worker killed under torchrun.
        p = start([*torchrun2, *long_run, "--out", f"{d}/F"])
        wait_for_steps(f"{d}/F/metrics.jsonl", 2, p, a.timeout)
        kids = workers_of(p.pid)
        if len(kids) != 2:
            os.killpg(p.pid, signal.SIGKILL)
            sys.exit(f"FAILED: expected torchrun to have 2 workers, found {kids}")
        t0 = time.monotonic()
        os.kill(max(kids), signal.SIGKILL)
        rc, out = finish(p, 120, "torchrun after a worker was killed")
        if rc == 0:
            print(out)
            sys.exit("FAILED: torchrun exited 0 although a worker was killed")
        print(f"OK: one of 2 workers SIGKILLed: torchrun ended the run in "
              f"{time.monotonic() - t0:.1f} s, exit {rc}")

        # G, G2: no agent; rank 1 killed (a closed socket), then rank 1 stopped (SIGSTOP: alive
        # but silent, what only the timeout reveals); rank 0 must fail on its own either way.
        short = [*long_run, "--dist-timeout", str(DEAD_PEER_TIMEOUT)]
        for name, sig, what in (("G", signal.SIGKILL, "SIGKILLed"),
                                ("G2", signal.SIGSTOP, "SIGSTOPped")):
            rc, out, took = peer_fault(a, short, f"{d}/{name}", sig)
            if rc == 0 or "rank 0: a gloo collective failed" not in out:
                print(out)
                sys.exit(f"FAILED: rank 0 after rank 1 was {what}: exit {rc}, expected an error")
            print(f"OK: without torchrun, rank 1 {what}: rank 0 failed in {took:.1f} s "
                  f"(--dist-timeout {DEAD_PEER_TIMEOUT}): {last_error_line(out)}")

        # H: the store never comes up.
        t0 = time.monotonic()
        p = start_rank([a.haf_rm, *short, "--out", f"{d}/H"], 1, free_port())
        rc, out = finish(p, DEAD_PEER_TIMEOUT + 60, "a rank whose store never started")
        if rc == 0 or "rank 1: cannot reach the c10d store at 127.0.0.1:" not in out:
            print(out)
            sys.exit(f"FAILED: unreachable store: exit {rc}, expected an error naming the store")
        print(f"OK: unreachable store: exit {rc} after {time.monotonic() - t0:.1f} s: "
              f"{last_error_line(out)}")


def peer_fault(a, args, out_dir, sig):
    """Starts ranks 0 and 1 of a 2-process run by hand (no torchrun), sends `sig` to rank 1 after
    two steps, and returns rank 0's exit code, output and the seconds it took to end."""
    port = free_port()
    with open(f"{out_dir}.log", "w") as log0:
        p0 = start_rank([a.haf_rm, *args, "--out", out_dir], 0, port, log0)
        p1 = start_rank([a.haf_rm, *args, "--out", f"{out_dir}_1"], 1, port, subprocess.DEVNULL)
        wait_for_steps(f"{out_dir}/metrics.jsonl", 2, p0, a.timeout)
        t0 = time.monotonic()
        os.killpg(p1.pid, sig)
        rc, _ = finish(p0, DEAD_PEER_TIMEOUT + 60, f"rank 0 after rank 1 got signal {sig}")
        kill_leftovers()  # rank 1 (stopped or killed)
    with open(f"{out_dir}.log") as f:
        return rc, f.read(), time.monotonic() - t0


def last_error_line(out):
    lines = [l for l in out.splitlines() if l.startswith("haf_rm: error:")]
    return (lines[-1] if lines else out.strip().splitlines()[-1])[:200]

if __name__ == "__main__":
    try:
        main()
    finally:
        kill_leftovers()
