"""Score with a reward model exported by `haf_rm export`, from Python.

A plain PyTorch implementation of the example model (examples/haf_rm/model.hpp), its tokenizers
(examples: byte-level, SentencePiece), prompt template and single-response assembly
(include/hafrm/data/assemble.hpp). It needs only torch, numpy and the `safetensors` and
`sentencepiece` packages, and gives the same scores as `haf_rm score` on the same directory (the
parity test checks them to 1e-5), so a Python RLHF stack can call a reward model trained in C++.
SentencePiece must encode as the library haf_rm linked: sentencepiece 0.2.1 and later break ties
between equal-score segmentations differently from 0.2.0 and earlier (Debian 12's libsentencepiece
is 0.1.97), so scripts/setup.sh pins sentencepiece==0.2.0.

    from hafrm_rm import RewardModel
    rm = RewardModel.from_pretrained("runs/haf_rm/export")
    rm.score("What is 2+2?", "4")                     # one float
    rm.score_batch(["2+2?", "2+2?"], ["4", "5"])      # a float32 tensor, input order
    rm.best_of_n("2+2?", ["5", "4", "22"])            # {"scores", "ranking", "best"}

Command line, the same rows in and out as `haf_rm score`:
    python hafrm_rm.py score --model DIR --input in.jsonl --output out.jsonl [--raw]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

FORMAT = "hafrm-reward-model"
FORMAT_VERSION = 1


class FormatError(ValueError):
    """An export directory or an input row that does not hold what it must; names file and field."""


# ---- tokenizers ----------------------------------------------------------------------------------


class ByteTokenizer:
    """Bytes 0..255 are ids 0..255; 256 is EOS (and PAD). No BOS, as in the C++ ByteTokenizer."""

    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class SentencePieceTokenizer:
    """The exported SentencePiece model; encode adds no BOS/EOS, as the C++ tokenizer."""

    def __init__(self, path: Path):
        import sentencepiece

        major_minor_patch = tuple(int(x) for x in sentencepiece.__version__.split(".")[:3])
        if major_minor_patch > (0, 2, 0):
            import warnings

            warnings.warn(f"sentencepiece {sentencepiece.__version__} may split some texts "
                          "differently from the C++ library haf_rm links (0.2.1 changed tie "
                          "breaking); install sentencepiece==0.2.0 for identical ids")
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self._sp.get_piece_size()
        self.eos_id = self._sp.eos_id()
        if self.eos_id < 0:
            raise FormatError(f"{path}: the SentencePiece model has no EOS piece")

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)


# ---- text -> ids, as include/hafrm/data does it --------------------------------------------------


def render_messages(messages, field: str) -> str:
    """A TRL message list as prompt text: one user message is its content; otherwise each message
    becomes "role: content", joined with newlines."""
    if not isinstance(messages, list) or not messages:
        raise FormatError(f"{field}: expected a non-empty message list")
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
            m.get("content"), str
        ):
            raise FormatError(f"{field}[{i}]: expected an object with string role and content")
        if m["role"] not in ("system", "user", "assistant"):
            raise FormatError(f"{field}[{i}].role: expected system, user or assistant")
        parts.append(m)
    if len(parts) == 1 and parts[0]["role"] == "user":
        return parts[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in parts)


def prompt_text(value, field: str = "prompt") -> str:
    if isinstance(value, str):
        return value
    return render_messages(value, field)


def response_text(value, field: str = "response") -> str:
    """A response string, or a message list whose last message (role assistant) is the response."""
    if isinstance(value, list):
        if not value:
            raise FormatError(f"{field}: empty message list")
        last = value[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant" or not isinstance(
            last.get("content"), str
        ):
            raise FormatError(f"{field}: the last message must have role assistant and a content")
        value = last["content"]
    if not isinstance(value, str):
        raise FormatError(f"{field}: expected a string or a message list")
    if not value:
        raise FormatError(f"{field}: empty response")
    return value


def fill(fmt: str, placeholder: str, value: str) -> str:
    if fmt.count(placeholder) != 1:
        raise FormatError(f'template "{fmt}" must contain {placeholder} exactly once')
    return fmt.replace(placeholder, value)


class Assembler:
    """prompt + response -> the ids training saw: template, separate tokenisation, the prompt cut
    keeping its end, EOS appended, the total capped at max_length (assemble_single)."""

    def __init__(self, tokenizer, template: dict, assembly: dict):
        self.tok = tokenizer
        self.prompt_format = template["prompt_format"]
        self.response_format = template["response_format"]
        self.max_length = int(assembly["max_length"])
        self.max_prompt = int(assembly["max_prompt_length"])
        self.truncation = assembly["truncation"]
        if not 1 <= self.max_prompt < self.max_length:
            raise FormatError("assembly: expected 1 <= max_prompt_length < max_length")
        if self.truncation not in ("keep_eos", "reference"):
            raise FormatError('assembly.truncation: expected "keep_eos" or "reference"')

    def __call__(self, prompt: str, response: str) -> tuple[list[int], bool]:
        """Returns (ids, truncated)."""
        p = self.tok.encode(fill(self.prompt_format, "{prompt}", prompt))
        r = self.tok.encode(fill(self.response_format, "{response}", response))
        if not p:
            raise FormatError("prompt: no tokens")
        if not r:
            raise FormatError("response: no tokens")
        n_p, n_r = len(p), len(r)
        if self.truncation == "keep_eos":
            p = p[-self.max_prompt :]
            budget = self.max_length - len(p) - 1
            r = r[:budget] + [self.tok.eos_id]
        else:
            r = r + [self.tok.eos_id]
            if len(p) + len(r) > self.max_length:
                p = p[-self.max_prompt :]
            if len(p) + len(r) > self.max_length:
                r = r[: self.max_length - self.max_prompt]
        truncated = len(p) < n_p or len(r) < n_r + 1
        return p + r, truncated


# ---- the model (examples/haf_rm/model.hpp) --------------------------------------------------------


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.proj = torch.nn.Linear(d, d, bias=False)

    def forward(self, x, bias, cos, sin):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(torch.nn.Module):
    def __init__(self, d, heads, d_ff):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, d_ff)
        self.out = torch.nn.Linear(d_ff, d)

    def forward(self, x, bias, cos, sin):
        x = x + self.attn(self.ln1(x), bias, cos, sin)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class HafTransformer(torch.nn.Module):
    """Parameter names equal LibTorch's, so the exported state dict loads strictly."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        d, V = cfg["d_model"], cfg["vocab_size"]
        self.embed = torch.nn.Embedding(V, d)
        self.blocks = torch.nn.ModuleList(
            Block(d, cfg["n_heads"], cfg["d_ff"]) for _ in range(cfg["n_layers"])
        )
        self.final_norm = torch.nn.LayerNorm(d)
        self.lm_head = torch.nn.Linear(d, V, bias=False)
        self.score = torch.nn.Linear(d, 1)

    def token_rewards(self, ids, mask):
        """[B, T] reward-head output at every position (the LM head is never run)."""
        T = ids.shape[1]
        h = self.embed(ids)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        keep = causal.unsqueeze(0) & (mask != 0).view(-1, 1, T)
        bias = torch.zeros(keep.shape, dtype=h.dtype).masked_fill(~keep, float("-inf"))
        bias = bias.unsqueeze(1)
        cos = sin = None
        heads = self.cfg["n_heads"]
        if self.cfg["positions"] == "rope":
            hd = self.cfg["d_model"] // heads
            inv = torch.pow(10000.0, -torch.arange(0, hd, 2, dtype=h.dtype) / hd)
            ang = torch.outer(torch.arange(T, dtype=h.dtype), inv)
            cos, sin = ang.cos(), ang.sin()
        else:
            pos = torch.arange(T, dtype=h.dtype)
            dist = (pos.view(T, 1) - pos.view(1, T)).clamp_min(0)
            slopes = torch.pow(2.0, -8.0 * torch.arange(1, heads + 1, dtype=h.dtype) / heads)
            bias = bias - slopes.view(1, -1, 1, 1) * dist.view(1, 1, T, T)
        for b in self.blocks:
            h = b(h, bias, cos, sin)
        return self.score(h).squeeze(-1)  # the reward head reads the pre-norm hidden state


# ---- the exported reward model -------------------------------------------------------------------


def _require(obj: dict, key: str, where: str, kind):
    if key not in obj:
        raise FormatError(f"{where}: missing field {key!r}")
    if not isinstance(obj[key], kind):
        raise FormatError(f"{where}: field {key!r} has the wrong type")
    return obj[key]


class RewardModel:
    def __init__(self, model: HafTransformer, assembler: Assembler, config: dict):
        self.model = model.eval()
        self.assemble = assembler
        self.config = config
        self.pad_id = int(config["pad_id"])
        self.readout = config["readout"]
        self.normalization = config.get("normalization")

    @classmethod
    def from_pretrained(cls, directory) -> "RewardModel":
        d = Path(directory)
        cfg_path = d / "config.json"
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise FormatError(f"{cfg_path}: {e}") from e
        where = str(cfg_path)
        if config.get("format") != FORMAT:
            raise FormatError(f"{where}: field 'format' is not {FORMAT!r}")
        if config.get("format_version") != FORMAT_VERSION:
            raise FormatError(f"{where}: format_version {config.get('format_version')!r}, "
                              f"this reader knows {FORMAT_VERSION}")
        mcfg = _require(config, "model", where, dict)
        tok_cfg = _require(config, "tokenizer", where, dict)
        kind = tok_cfg.get("kind")
        if kind == "byte":
            tok = ByteTokenizer()
        elif kind == "sentencepiece":
            tok = SentencePieceTokenizer(d / _require(tok_cfg, "file", where + " tokenizer", str))
        else:
            raise FormatError(f"{where}: tokenizer.kind {kind!r} is not byte or sentencepiece")
        if tok.vocab_size != mcfg["vocab_size"]:
            raise FormatError(f"{where}: model.vocab_size {mcfg['vocab_size']} but the tokenizer "
                              f"has {tok.vocab_size}")
        if _require(config, "readout", where, str) not in ("last_non_pad", "last_position"):
            raise FormatError(f"{where}: readout {config['readout']!r} is not known")
        model = HafTransformer(mcfg)
        weights = load_file(str(d / "model.safetensors"))
        missing = set(model.state_dict()) ^ set(weights)
        if missing:
            raise FormatError(f"{d / 'model.safetensors'}: tensors differ from the model's: "
                              f"{sorted(missing)[:5]}")
        model.load_state_dict(weights, strict=True)
        assembler = Assembler(tok, _require(config, "template", where, dict),
                              _require(config, "assembly", where, dict))
        return cls(model, assembler, config)

    @torch.inference_mode()
    def score_ids(self, sequences: list[list[int]], raw: bool = False,
                  max_batch_tokens: int = 16384) -> torch.Tensor:
        """One reward per id sequence, in input order, length-bucketed batches."""
        out = torch.empty(len(sequences), dtype=torch.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(sequences[order[end]]) <= max_batch_tokens:
                end += 1
            rows = order[start:end]
            T = len(sequences[rows[-1]])
            ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(sequences[i])] = torch.tensor(sequences[i])
                mask[r, : len(sequences[i])] = 1
            tr = self.model.token_rewards(ids, mask)
            if self.readout == "last_non_pad":
                last = mask.sum(1) - 1
            else:
                last = torch.full((len(rows),), T - 1)
            out[torch.tensor(rows)] = tr.gather(1, last.view(-1, 1)).squeeze(1).float()
            start = end
        if self.normalization is not None and not raw:
            out = (out - self.normalization["mean"]) / self.normalization["std"]
        return out

    def score_batch(self, prompts, responses, raw: bool = False) -> torch.Tensor:
        ids = [self.assemble(prompt_text(p), response_text(r))[0] for p, r in zip(prompts, responses)]
        return self.score_ids(ids, raw=raw)

    def score(self, prompt, response, raw: bool = False) -> float:
        return float(self.score_batch([prompt], [response], raw=raw)[0])

    def best_of_n(self, prompt, responses, raw: bool = False) -> dict:
        s = self.score_batch([prompt] * len(responses), responses, raw=raw)
        return {"scores": s.tolist(), **rank(s.tolist())}


def rank(scores: list[float]) -> dict:
    """Indices best first; equal scores keep input order (lower index first), as haf_rm score."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable
    return {"ranking": order, "best": order[0]}


# ---- command line --------------------------------------------------------------------------------


def score_file(rm: RewardModel, inp: Path, outp: Path, raw: bool) -> int:
    rows, flat, spans = [], [], []
    with open(inp, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{inp}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{where}: malformed JSON: {e}") from e
            if not isinstance(row, dict) or "prompt" not in row:
                raise FormatError(f"{where}: expected an object with a 'prompt' field")
            if ("response" in row) == ("responses" in row):
                raise FormatError(f"{where}: expected exactly one of 'response' and 'responses'")
            try:
                p = prompt_text(row["prompt"])
                group = "responses" in row
                rs = row["responses"] if group else [row["response"]]
                if not isinstance(rs, list) or not rs:
                    raise FormatError("responses: expected a non-empty list")
                texts = [response_text(r, f"responses[{k}]" if group else "response")
                         for k, r in enumerate(rs)]
            except FormatError as e:
                raise FormatError(f"{where}: {e}") from e
            spans.append((len(flat), len(texts), group))
            flat.extend(rm.assemble(p, t)[0] for t in texts)
            rows.append(row)
    scores = rm.score_ids(flat, raw=raw).tolist()
    fd, tmp = tempfile.mkstemp(dir=str(outp.parent or Path(".")), prefix=outp.name + ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row, (at, n, group) in zip(rows, spans):
                s = scores[at : at + n]
                if group:
                    row.update({"scores": s, **rank(s)})
                else:
                    row["score"] = s[0]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, outp)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(flat)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("score", help="score JSONL rows as haf_rm score does")
    sc.add_argument("--model", required=True, help="directory written by haf_rm export")
    sc.add_argument("--input", required=True, type=Path)
    sc.add_argument("--output", required=True, type=Path)
    sc.add_argument("--raw", action="store_true", help="skip the stored reward normalisation")
    a = ap.parse_args(argv)
    try:
        rm = RewardModel.from_pretrained(a.model)
        n = score_file(rm, a.input, a.output, a.raw)
    except (FormatError, OSError) as e:
        print(f"hafrm_rm: {e}", file=sys.stderr)
        return 2
    print(f"scored {n} responses -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
