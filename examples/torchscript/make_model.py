"""Writes a small HaF-architecture reward model as a TorchScript file for examples/torchscript.

The C++ side loads it with torch::jit::load and trains it through hafrm's ready model trait
(#include <hafrm/model/torchscript.hpp>): forward(input_ids, attention_mask) returns either

  --returns tuple   (logits [B, T, V], token_rewards [B, T])
  --returns dict    {"lm_hidden": [B, T, H], "lm_head_weight": [V, H], "rewards": [B, T]}
                    (hafrm's fused linear -> log-prob path; the logits are never stored)

Usage (the build runs this with the project's .venv python):
  .venv/bin/python examples/torchscript/make_model.py --out model.pt [--returns dict]

torch.jit.script reads the class's source, so the class must live in a real file like this one
(not in `python -`). torch 2.x warns that TorchScript is deprecated in favour of torch.compile /
torch.export; neither gives a module that C++ can train, so this example keeps TorchScript.
"""

import argparse
import math
import warnings
from typing import Dict, Tuple

import torch
from torch import Tensor, nn


class Block(nn.Module):
    """Pre-LayerNorm transformer block with causal self-attention (plain ops, scriptable)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, d_ff)
        self.out = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + bias
        y = torch.softmax(scores, dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class TinyHafRm(nn.Module):
    """Shared backbone; LM head = final LayerNorm -> Linear(V); reward head = Linear(H, 1) on the
    pre-norm hidden state, zero-initialised (HaF-RM)."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, d_ff: int,
                 max_len: int, return_dict: bool):
        super().__init__()
        self.return_dict = return_dict
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads, d_ff) for _ in range(n_layers)])
        self.final_norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.score = nn.Linear(d_model, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def backbone(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        t = input_ids.size(1)
        positions = torch.arange(t, device=input_ids.device)
        h = self.embed(input_ids) + self.pos(positions).unsqueeze(0)
        causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
        keep = causal.unsqueeze(0) & (attention_mask != 0).unsqueeze(1)
        bias = torch.zeros(keep.shape, dtype=h.dtype, device=h.device)
        bias = bias.masked_fill(~keep, float("-inf")).unsqueeze(1)
        for block in self.blocks:
            h = block(h, bias)
        return h

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Dict[str, Tensor]:
        h = self.backbone(input_ids, attention_mask)
        return {"lm_hidden": self.final_norm(h), "lm_head_weight": self.lm_head.weight,
                "rewards": self.score(h).squeeze(-1)}


class TinyHafRmTuple(TinyHafRm):
    """The same model returning (logits, token_rewards)."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.backbone(input_ids, attention_mask)
        return self.lm_head(self.final_norm(h)), self.score(h).squeeze(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--returns", choices=["tuple", "dict"], default="tuple")
    p.add_argument("--vocab", type=int, default=257, help="257 = the byte tokenizer")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=256)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    cls = TinyHafRm if a.returns == "dict" else TinyHafRmTuple
    model = cls(a.vocab, a.d_model, a.layers, a.heads, a.d_ff, a.max_len, a.returns == "dict")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice (see the docstring)
        scripted = torch.jit.script(model)
        scripted.save(a.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: {cls.__name__}, {n} parameters, returns {a.returns}")


if __name__ == "__main__":
    main()
