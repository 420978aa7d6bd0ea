"""C++ and Python score the same exported reward model alike (ctest hafrm.examples.python_parity).

For the byte tokenizer (RoPE positions) and a SentencePiece tokenizer (ALiBi positions, a stored
reward normalisation): train a small model with `haf_rm`, export it, score >= 100 responses
(single rows and best-of-N rows; string and message-list prompts and responses; responses long
enough to be truncated) with `haf_rm score` and with hafrm_rm.py, and require
  - every score within 1e-5 (float32), and
  - the same ranking and best index wherever the scores are not tied within that tolerance.
Also checks that hafrm_rm.py refuses a directory of an unknown format version.

    python check_parity.py --haf-rm build/dev/examples/haf_rm/haf_rm --data data --work /tmp/p
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hafrm_rm  # noqa: E402

TOLERANCE = 1e-5


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")


def make_rows(records: list[dict]) -> list[dict]:
    """>= 100 responses in all four input shapes."""
    rows: list[dict] = []
    for r in records[:30]:
        rows.append({"prompt": r["prompt"], "response": r["chosen"]})
    for r in records[30:50]:
        rows.append({
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "response": [{"role": "user", "content": r["prompt"]},
                         {"role": "assistant", "content": r["rejected"]}],
        })
    for k, r in enumerate(records[50:70]):
        long = (r["chosen"] + " ") * 40  # longer than --max-length: truncated on both sides
        group = [r["chosen"], r["rejected"], r["chosen"] + r["rejected"], long]
        if k % 2:
            rows.append({"prompt": r["prompt"], "responses": group, "id": k})
        else:
            prompt = [{"role": "system", "content": "rank"}, {"role": "user", "content": r["prompt"]}]
            rows.append({"prompt": prompt, "responses": [
                [{"role": "assistant", "content": g}] for g in group], "id": k})
    rows.append({"prompt": records[0]["prompt"], "responses": ["same", "same", "other"]})  # a tie
    return rows


def compare(cpp_rows: list[dict], py_rows: list[dict], label: str) -> tuple[int, float]:
    if len(cpp_rows) != len(py_rows):
        sys.exit(f"[{label}] row counts differ: C++ {len(cpp_rows)}, Python {len(py_rows)}")
    n, worst = 0, 0.0
    for i, (c, p) in enumerate(zip(cpp_rows, py_rows)):
        if "responses" in c:
            cs, ps = c["scores"], p["scores"]
            if len(cs) != len(ps):
                sys.exit(f"[{label}] row {i}: {len(cs)} C++ scores, {len(ps)} Python scores")
            tied = any(abs(a - b) <= 2 * TOLERANCE for j, a in enumerate(cs) for b in cs[j + 1:])
            if not tied and (c["ranking"] != p["ranking"] or c["best"] != p["best"]):
                sys.exit(f"[{label}] row {i}: ranking C++ {c['ranking']} / Python {p['ranking']}")
            if c["best"] != c["ranking"][0]:
                sys.exit(f"[{label}] row {i}: C++ best {c['best']} is not ranking[0]")
        else:
            cs, ps = [c["score"]], [p["score"]]
        for a, b in zip(cs, ps):
            worst = max(worst, abs(a - b))
            n += 1
    if worst > TOLERANCE:
        sys.exit(f"[{label}] max |C++ - Python| = {worst:.3g} > {TOLERANCE}")
    return n, worst


def check_one(args, label: str, train_flags: list[str], export_flags: list[str]) -> None:
    work = args.work / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = args.data / "rules"
    run([args.haf_rm, "--train", str(data / "train.jsonl"), "--eval", str(data / "eval.jsonl"),
         "--ood", "", "--steps", "30", "--batch-size", "16", "--lr", "0.01", "--warmup-steps", "0",
         "--eval-every", "0", "--max-length", "48", "--max-prompt-length", "16",
         "--out", str(work / "run"), *train_flags])
    run([args.haf_rm, "export", "--checkpoint", str(work / "run" / "checkpoint.pt"),
         "--out", str(work / "export"), *export_flags])
    records = [json.loads(line) for line in open(data / "eval.jsonl", encoding="utf-8")]
    rows = make_rows(records)
    inp = work / "rows.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run([args.haf_rm, "score", "--model", str(work / "export"), "--input", str(inp),
         "--output", str(work / "cpp.jsonl")])
    rm = hafrm_rm.RewardModel.from_pretrained(work / "export")
    hafrm_rm.score_file(rm, inp, work / "py.jsonl", raw=False)
    load = lambda p: [json.loads(line) for line in open(p, encoding="utf-8")]  # noqa: E731
    cpp_rows, py_rows = load(work / "cpp.jsonl"), load(work / "py.jsonl")
    n, worst = compare(cpp_rows, py_rows, label)
    if n < 100:
        sys.exit(f"[{label}] only {n} responses compared, expected >= 100")
    spread = max(abs(s) for r in cpp_rows for s in r.get("scores", [r.get("score")]))
    if spread == 0:
        sys.exit(f"[{label}] every score is 0: the reward head did not train, parity is vacuous")
    print(f"[{label}] {n} responses, max |C++ - Python| = {worst:.2e} (tolerance {TOLERANCE})")

    bad = work / "bad_export"
    shutil.copytree(work / "export", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["format_version"] = 99
    (bad / "config.json").write_text(json.dumps(cfg))
    try:
        hafrm_rm.RewardModel.from_pretrained(bad)
        sys.exit(f"[{label}] a config.json with format_version 99 was accepted")
    except hafrm_rm.FormatError as e:
        if "format_version" not in str(e):
            sys.exit(f"[{label}] the format_version error does not name the field: {e}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--haf-rm", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    args = ap.parse_args()
    check_one(args, "byte", ["--positions", "rope"], [])

    import sentencepiece

    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / "spm_corpus.txt"
    with open(args.data / "rules" / "train.jsonl", encoding="utf-8") as f, open(
        corpus, "w", encoding="utf-8"
    ) as out:
        for line in f:
            r = json.loads(line)
            out.write(f"{r['prompt']}\n{r['chosen']}\n{r['rejected']}\n")
    # The C++ trainer's defaults (TrainSentencePieceOptions): byte-faithful, soft vocabulary limit.
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(args.work / "spm"), vocab_size=120,
        model_type="unigram", normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, character_coverage=1.0, hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    check_one(args, "sentencepiece",
              ["--tokenizer", str(args.work / "spm.model"), "--positions", "alibi"],
              ["--normalize", str(args.data / "rules" / "eval.jsonl")])
    print("python parity: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
