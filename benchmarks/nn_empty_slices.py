"""Fine-tuning after a conversion whose decomposition leaves rank indices empty.

``from_linear`` and the other constructors decompose a trained weight; a rank index that the
decomposition leaves zero in every core it joins (the closing bond of a ring past its first
index, a zero-initialised weight, CP components past the weight's terms) is a saddle point:
neither core's slice gets a gradient, so fine-tuning never uses it. The constructors now give
such an index the fresh layer's random values in all but one of its cores (``_trainable`` in
``tnmars/nn/convert.py``: the same function, every index trainable). This script measures that
side by side in one process, ``on`` (the library as it is) against ``off`` (``_trainable``
replaced by the identity: the cores as the decomposition gives them):

- a dense MLP 64-256-256-10 trained on scikit-learn's 8x8 digits (1,400 train / 397 test per
  data seed, 30 epochs of Adam), converted by ``tensorize(linear="tr", rank=R)``, then 10
  epochs of MARS fine-tuning (``MarsLoss.optimizer``, lr 1e-3): test accuracy and the empty
  indices left after fine-tuning;
- a zero-initialised ``nn.Linear(64, 64)`` made a ``LowRankLinear`` (and a CP
  ``TensorizedLinear``), fitted for 200 Adam steps to a random linear map: the mean squared error.

Nothing here was tuned.

Usage: python benchmarks/nn_empty_slices.py [--seeds 0,1,2] [--ranks 0.1,0.25]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C
from nn_defaults import digits

import tnmars.nn as tnn
from tnmars.nn import convert


@contextlib.contextmanager
def revival(on: bool):
    """``on``: the library as it is; off: the decomposition's cores copied as they are."""
    kept = convert._trainable
    if not on:
        convert._trainable = lambda layer, cores: list(cores)
    try:
        yield
    finally:
        convert._trainable = kept


def empty_indices(model: nn.Module) -> int:
    """Bond indices whose slice is zero in every core on the bond, over the model's layers."""
    count = 0
    for layer in model.modules():
        for places in getattr(layer, "bond_axes", {}).values():
            if len(places) < 2:
                continue
            zero = None
            for k, axis in places:
                core = layer.cores[k].detach().movedim(axis, 0)
                empty = ~core.reshape(core.shape[0], -1).ne(0).any(1)
                zero = empty if zero is None else zero & empty
            count += int(zero.sum())
    return count


def mlp_rows(seeds, ranks) -> list[dict]:
    rows = []
    for seed in seeds:
        data = digits(seed)
        torch.manual_seed(seed)
        dense = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        dense_acc = C.train_classifier(dense, data, 30, 1e-3)
        for rank in ranks:
            row = {"seed": seed, "rank": rank, "dense": dense_acc}
            for on in (False, True):
                torch.manual_seed(1000 + seed)
                with revival(on), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = tnn.tensorize(copy.deepcopy(dense), linear="tr", rank=rank)
                tag = "on" if on else "off"
                row[f"empty_{tag}_before"] = empty_indices(model)
                row[f"acc_{tag}"] = C.train_classifier(model, data, 10, 1e-3, prior_in_optimizer=True)
                row[f"empty_{tag}_after"] = empty_indices(model)
                row["params"] = sum(m.num_params for m in model.modules() if isinstance(m, tnn.TensorizedLayer))
            rows.append(row)
            print(row, flush=True)
    return rows


def zero_weight_rows(seeds) -> list[dict]:
    rows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(1024, 64, generator=gen)
        target = x @ (torch.randn(64, 64, generator=gen) / 8)
        for kind, build in (("LowRankLinear", tnn.LowRankLinear.from_linear),
                            ("TensorizedLinear cp", lambda m: tnn.TensorizedLinear.from_linear(m, "cp"))):
            row = {"seed": seed, "layer": kind}
            for on in (False, True):
                dense = nn.Linear(64, 64, bias=False)
                with torch.no_grad():
                    dense.weight.zero_()
                torch.manual_seed(seed)
                with revival(on), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layer = build(dense)
                loss_fn = tnn.MarsLoss(layer, len(x), nn.MSELoss())
                opt = loss_fn.optimizer(lr=1e-2)
                for _ in range(200):
                    idx = torch.randint(0, len(x), (128,), generator=gen)
                    opt.zero_grad()
                    loss = loss_fn(layer(x[idx]), target[idx])
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    row[f"mse_{'on' if on else 'off'}"] = float(((layer.eval()(x) - target) ** 2).mean())
                row["rank"] = dict(layer.max_ranks)
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ranks", default="0.1,0.25")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    ranks = [float(r) for r in args.ranks.split(",")]
    mlp = mlp_rows(seeds, ranks)
    zero = zero_weight_rows(seeds)
    table = C.markdown_table(
        ["data seed", "rank", "dense accuracy", "converted parameters", "empty indices after conversion (off / on)",
         "accuracy after fine-tuning, off", "accuracy after fine-tuning, on", "empty indices after fine-tuning, off"],
        [[r["seed"], r["rank"], f"{r['dense']:.1%}", f"{r['params']:,}",
          f"{r['empty_off_before']} / {r['empty_on_before']}", f"{r['acc_off']:.1%}", f"{r['acc_on']:.1%}",
          r["empty_off_after"]] for r in mlp])
    table += "\n\nA zero-initialised `nn.Linear(64, 64)` converted and fitted to a random linear map (200 Adam steps " \
             "at lr 1e-2, batch 128; mean squared error on the 1,024 inputs; 1.0 is the zero layer's):\n\n"
    table += C.markdown_table(["seed", "layer", "ranks", "MSE, off", "MSE, on"],
                              [[r["seed"], r["layer"], r["rank"], f"{r['mse_off']:.3f}", f"{r['mse_on']:.3f}"]
                               for r in zero])
    notes = ("`off`: the cores as the decomposition gives them (the code before 2026-12-01); `on`: the library as "
             "it is. The same dense model, conversion seed and fine-tuning in both; only the empty indices differ.")
    C.publish("nn_empty_slices", "Fine-tuning after conversions that leave rank indices empty",
              "python benchmarks/nn_empty_slices.py " + " ".join(sys.argv[1:]), notes, table,
              {"mlp": mlp, "zero_weight": zero})


if __name__ == "__main__":
    main()
