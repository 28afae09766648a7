"""A transformer compressed by ``tensorize``, attention included, on data it was not tuned on.

The model reads a scikit-learn 8x8 digit as a sequence of its 8 rows (a linear embedding of
each row, learned positions), through a 2-layer ``nn.TransformerEncoder`` (width 64, 4 heads,
feed-forward 128, post-norm) and a mean-pooled linear head; 1,400 train / 397 test digits per
data seed. Three ways to get a small model, each against the dense one trained the same way:

- ``scratch``: ``tensorize`` of the untrained model at ``rank`` (default 0.25: each layer at a
  quarter of its dense parameters), then MARS training from there;
- ``scratch, attention dense``: the same with ``attention=None`` (what ``tensorize`` did before
  it converted attention: only the feed-forward, embedding and head linears);
- ``pretrained``: the dense model trained, ``tensorize`` at ``rank``, MARS fine-tuning.

Reported: test accuracy, the selected ranks' parameters against the dense weights of the
converted layers and of the whole model (``tnn.compress``), and how much of it is attention.
Nothing here was tuned: the settings are the library's defaults, Adam at lr 1e-3, batch 64.

Usage: python benchmarks/nn_transformer.py [--epochs 20] [--finetune-epochs 10] [--seeds 0,1,2] [--rank 0.25]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C
from nn_defaults import digits

import tnmars.nn as tnn


class DigitRows(nn.Module):
    """A digit's 8 rows as 8 tokens: row embedding, learned positions, encoder, mean pool, head."""

    def __init__(self, width: int = 64, heads: int = 4, layers: int = 2, feedforward: int = 128) -> None:
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.position = nn.Parameter(0.02 * torch.randn(1, 8, width))
        block = nn.TransformerEncoderLayer(width, heads, feedforward, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x.reshape(-1, 8, 8)) + self.position)
        return self.head(h.mean(1))


def train(model: nn.Module, data, epochs: int, lr: float = 1e-3) -> float:
    return C.train_classifier(model, data, epochs, lr, prior_in_optimizer=True)


def sizes(dense: nn.Module, model: nn.Module) -> dict:
    """Parameters of the converted layers (cores at the selected ranks) against their dense
    weights, the attention projections' share, and the whole models' parameter counts."""
    small = tnn.compress(model.eval())
    layers = {name: m for name, m in small.named_modules() if isinstance(m, tnn.TensorizedLayer)}
    cores = sum(m.num_params for m in layers.values())
    weights = sum(m.dense_size for m in layers.values())
    attention = {n: m for n, m in layers.items() if ".self_attn." in n}
    return {"layers": len(layers), "attention_layers": len(attention), "cores": cores, "dense_weights": weights,
            "attention_cores": sum(m.num_params for m in attention.values()),
            "attention_dense": sum(m.dense_size for m in attention.values()),
            "model_params": sum(p.numel() for p in small.parameters()),
            "dense_model_params": sum(p.numel() for p in dense.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rank", type=float, default=0.25, help="tensorize's rank: a share of each dense layer")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, records = [], []
    for seed in seeds:
        data = digits(seed)
        torch.manual_seed(seed)
        fresh = DigitRows()
        dense = DigitRows()
        dense.load_state_dict(fresh.state_dict())
        t0 = time.perf_counter()
        dense_acc = train(dense, data, args.epochs)
        rec = {"seed": seed, "dense": {"acc": dense_acc, "seconds": time.perf_counter() - t0}}
        variants = {"scratch": (fresh, {}, args.epochs), "scratch, attention dense": (fresh, {"attention": None},
                                                                                        args.epochs),
                    "pretrained": (dense, {}, args.finetune_epochs)}
        for label, (start, options, epochs) in variants.items():
            torch.manual_seed(seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = tnn.tensorize(start, rank=args.rank, progress=False, **options)
            before = {n: m.num_params for n, m in model.named_modules() if isinstance(m, tnn.TensorizedLayer)}
            t0 = time.perf_counter()
            acc = train(model, data, epochs)
            seconds = time.perf_counter() - t0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                size = sizes(dense, model)
                report = tnn.summary(model)
            rec[label] = {"acc": acc, "seconds": seconds, "start_cores": sum(before.values()),
                          "dead": report.dead_layers, "closed": report.closed_layers,
                          "left_dense": [str(w.message)[:300] for w in caught if "left these layers dense" in
                                         str(w.message)], **size}
            rows.append([seed, label, f"{100 * dense_acc:.1f}%", f"**{100 * acc:.1f}%**",
                         f"{100 * (acc - dense_acc):+.1f}", f"{size['layers']} ({size['attention_layers']})",
                         f"{size['dense_weights']:,} -> {sum(before.values()):,} -> {size['cores']:,} "
                         f"(**{size['dense_weights'] / max(size['cores'], 1):.1f}x**)",
                         f"{size['attention_dense']:,} -> {size['attention_cores']:,}",
                         f"{size['dense_model_params']:,} -> {size['model_params']:,} "
                         f"({size['dense_model_params'] / size['model_params']:.1f}x)",
                         len(report.dead_layers), f"{seconds:.0f}"])
        records.append(rec)
        print(json.dumps(rec), flush=True)
    table = C.markdown_table(["data seed", "start", "dense acc", "tensorized acc", "points vs dense",
                              "converted layers (of them attention)",
                              "converted weights: dense -> start -> selected (compression)",
                              "attention projections: dense -> selected", "whole model: dense -> compressed",
                              "layers at rank 0", "training s"], rows)
    worst = {label: min(100 * (r[label]["acc"] - r["dense"]["acc"]) for r in records)
             for label in ("scratch", "scratch, attention dense", "pretrained")}
    ratio = {label: [r["dense"]["acc"] and r[label]["dense_weights"] / max(r[label]["cores"], 1) for r in records]
             for label in worst}
    summary = "; ".join(f"{label}: worst {worst[label]:+.1f} points against dense, converted weights "
                        f"{min(ratio[label]):.1f}-{max(ratio[label]):.1f}x smaller" for label in worst)
    cmd = "python benchmarks/nn_transformer.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != ap.get_default(k))
    notes = ("Every run on data seeds none of the library's defaults were tuned on; `tensorize(model, "
             f"rank={args.rank:g})` (each converted layer at most that share of its dense parameters). MARS at the layers' defaults (masks start open, "
             "`pi=0.01`), `MarsLoss.optimizer(lr=1e-3)`; the dense model: Adam, lr 1e-3, cross-entropy. "
             f"Dense training {args.epochs} epochs; scratch variants {args.epochs} epochs of MARS; pretrained: the "
             f"trained dense model tensorized and fine-tuned {args.finetune_epochs} epochs. " + summary + ".")
    C.publish("nn_transformer", "A transformer compressed by tensorize, attention included", cmd, notes, table,
              records)


if __name__ == "__main__":
    main()
