"""Default-constructed MARS layers dropped into models they were never tuned on.

Each model is trained three times on scikit-learn's 8x8 digits (1,400 train / 397 test) with
``MarsLoss`` + Adam (lr 3e-3, batch 64, 15 epochs, temperature fixed at its default): as the
dense model, with its hidden layers replaced by tnmars layers at their defaults, and with the
same layers at the defaults before issue 12 (``alpha=-1``, no minimum rank: every mask closed
at its MAP from the start). Reported: test accuracy, the selected ranks, the layers left at
rank 0 and the compression (the paper's rule, NaN for a model with a zero weight).

Tuning and held-out: the default ``alpha`` (+3) was chosen on the MLP and the TT CNN with
data split seed 0 (sweeps over alpha in {0.5, 1, 2, 3} and two learning rates); every other
row (other seeds, the deeper MLP, the Tucker-2 / low-rank CNN, the TT recurrent model) was
run once, after the choice.

Usage: python benchmarks/nn_defaults.py [--epochs 15] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C

import tnmars.nn as tnn
from tnmars.nn.masks import DEFAULT_ALPHA

OLD_DEFAULTS = {"alpha": -1.0, "min_rank": 0}


def digits(seed: int):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    return X[perm[:1400]], y[perm[:1400]], X[perm[1400:]], y[perm[1400:]]


class RowRNN(nn.Module):
    """Reads a digit row by row (8 steps of 8 pixels) with a tanh RNN; classifies the last state."""

    def __init__(self, kind: str, **kw) -> None:
        super().__init__()
        if kind == "dense":
            self.rnn = tnn.TanhRNN(8, 64, seed=0)
        else:
            self.rnn = tnn.TanhRNN(8, 64, recurrent="tt", tt_rank=8, seed=0, **kw)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x.reshape(-1, 8, 8))[:, -1])


def build(model: str, kind: str) -> nn.Module:
    """``kind``: "dense", "new" (today's defaults) or "old" (alpha=-1, min_rank=0)."""
    kw = OLD_DEFAULTS if kind == "old" else {}

    def lin(i, o):
        return nn.Linear(i, o) if kind == "dense" else tnn.TensorizedLinear(i, o, **kw)

    if model == "mlp":
        return nn.Sequential(lin(64, 256), nn.ReLU(), lin(256, 128), nn.ReLU(), lin(128, 10))
    if model == "deep-mlp":
        return nn.Sequential(lin(64, 128), nn.ReLU(), lin(128, 128), nn.ReLU(), lin(128, 128), nn.ReLU(),
                             lin(128, 10))
    if model in ("tt-cnn", "tucker-cnn"):
        if kind == "dense":
            conv, head = nn.Conv2d(16, 32, 3, padding=1), nn.Linear(512, 10)
        elif model == "tt-cnn":
            conv, head = tnn.TensorizedConv2d(16, 32, 3, padding=1, **kw), tnn.TensorizedLinear(512, 10, **kw)
        else:
            conv, head = tnn.Tucker2Conv2d(16, 32, 3, padding=1, **kw), tnn.LowRankLinear(512, 10, **kw)
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), conv, nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), head)
    if model == "tt-rnn":
        return RowRNN(kind, **kw)
    raise ValueError(model)


def train(model: nn.Module, data, epochs: int, lr: float = 3e-3) -> float:
    return C.train_classifier(model, data, epochs, lr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = [(m, s) for m in ("mlp", "tt-cnn") for s in range(args.seeds)]
    cases += [(m, 0) for m in ("deep-mlp", "tucker-cnn", "tt-rnn")]
    rows, records = [], []
    for model_name, seed in cases:
        data = digits(seed)
        rec = {"model": model_name, "seed": seed, "tuning": model_name in ("mlp", "tt-cnn") and seed == 0}
        for kind in ("dense", "new", "old"):
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # clipped ranks, closed-bond warnings (reported below)
                model = build(model_name, kind)
                acc = train(model, data, args.epochs)
                report = tnn.summary(model) if kind != "dense" else None
            rec[kind] = {"acc": acc, "seconds": time.perf_counter() - t0}
            if report is not None:
                rec[kind].update(ranks=[list(r.selected_ranks.values()) for r in report.layers],
                                 start=[list(r.max_ranks.values()) for r in report.layers],
                                 dead=report.dead_layers, closed=report.closed_layers,
                                 compression=report.compression, start_compression=report.initial_compression)
        records.append(rec)
        print(json.dumps(rec), flush=True)
        new, old = rec["new"], rec["old"]
        comp = "NaN (zero weight)" if math.isnan(new["compression"]) else f"{new['compression']:.1f}x"
        old_comp = "NaN (zero weight)" if math.isnan(old["compression"]) else f"{old['compression']:.1f}x"
        rows.append([model_name, seed, "tuning" if rec["tuning"] else "held-out", f"{100 * rec['dense']['acc']:.1f}%",
                     f"**{100 * new['acc']:.1f}%**", f"{100 * (new['acc'] - rec['dense']['acc']):+.1f}",
                     str(new["ranks"]), f"{new['start_compression']:.1f}x -> {comp}", len(new["dead"]),
                     f"{100 * old['acc']:.1f}%", str(old["ranks"]), old_comp])
    table = C.markdown_table(["model", "data seed", "split", "dense acc", "default layers acc", "points vs dense",
                              "selected ranks (per layer)", "compression start -> selected", "layers at rank 0",
                              "old defaults acc", "old defaults ranks", "old defaults compression"], rows)
    held = [r for r in records if not r["tuning"]]
    worst = min(100 * (r["new"]["acc"] - r["dense"]["acc"]) for r in records)
    worst_held = min(100 * (r["new"]["acc"] - r["dense"]["acc"]) for r in held) if held else float("nan")
    dead = sum(len(r["new"]["dead"]) for r in records)
    pruned = sum(1 for r in records for a, b in zip(r["new"]["ranks"], r["new"]["start"]) if a != b)
    summary = (f"Default layers: worst accuracy change against the dense model {worst:+.1f} points "
               f"(held-out rows {worst_held:+.1f}); layers at rank 0: {dead}; layers whose ranks MARS reduced within "
               f"{args.epochs} epochs: {pruned} of {sum(len(r['new']['ranks']) for r in records)}. The old defaults "
               f"left {sum(len(r['old']['dead']) for r in records)} layers at rank 0.")
    cmd = "python benchmarks/nn_defaults.py" + "".join(
        f" --{k} {v}" for k, v in vars(args).items() if v != ap.get_default(k))
    notes = ("Models: `mlp` 64-256-128-10 and `deep-mlp` 64-128-128-128-10 of `TensorizedLinear(in, out)`; `tt-cnn`: "
             "a dense 1->16 conv, `TensorizedConv2d(16, 32, 3, padding=1)`, max-pool, `TensorizedLinear(512, 10)`; "
             "`tucker-cnn`: the same with `Tucker2Conv2d(16, 32, 3, padding=1)` and `LowRankLinear(512, 10)` (their "
             "default ranks: the largest equal ranks up to 32 within the dense layers' parameters); `tt-rnn`: a tanh RNN over the "
             "8 rows of a digit, hidden size 64, recurrent matrix `TTRecurrentMatrix(64, rank=8)`, dense head. "
             f"Every tnmars layer at its constructor defaults (`pi=0.01`, `alpha={DEFAULT_ALPHA:g}`, `min_rank=1`, "
             "temperature 0.1); 'old defaults': `alpha=-1, min_rank=0`. " + summary)
    C.publish("nn_defaults", "Default MARS layers in models they were not tuned on", cmd, notes, table, records)


if __name__ == "__main__":
    main()
