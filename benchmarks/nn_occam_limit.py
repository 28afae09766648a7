"""``occam_prune`` on small data: the BIC alone against the default limit on the fit it may cost.

The BIC charges ``(1/2) ln N`` nats per parameter an index frees; a network's parameters are
not all effective degrees of freedom, so on small data the BIC alone can close most of a
classifier's indices. ``occam_prune(max_nll_rise=0.05)`` (the default) takes no closure that
would raise the summed training nll by more than 0.05 nats per example over the start.

Each model is built from default tnmars layers, trained on scikit-learn's 8x8 digits (1,400
train / 397 test, split by the seed) with ``MarsLoss`` + ``loss_fn.optimizer()`` (Adam, lr
3e-3, batch 64) for ``--epochs`` epochs, then pruned twice from the same trained state: with
the default limit and with ``max_nll_rise=None``. Reported: test accuracy, parameters of the
tensorized layers and the training nll per example, before and after each prune.

The limit (0.05 nats per example) is the threshold of the warning the BIC prune already gave
before the limit existed; it was not tuned on these models, which were run once.

Usage: python benchmarks/nn_occam_limit.py [--epochs 30] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import copy
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
from tnmars.nn.occam import LOUD_NLL_RISE


def mlp() -> nn.Module:
    return nn.Sequential(tnn.TensorizedLinear(64, 256), nn.ReLU(), tnn.TensorizedLinear(256, 256, format="tr"),
                         nn.ReLU(), tnn.LowRankLinear(256, 10))


def small_mlp() -> nn.Module:
    return nn.Sequential(tnn.TensorizedLinear(64, 128), nn.ReLU(), tnn.TensorizedLinear(128, 10))


MODELS = {"64-256-256-10 (TT, TR, low-rank)": mlp, "64-128-10 (TT, TT)": small_mlp}


def tensorized_params(model: nn.Module) -> int:
    return sum(layer.num_params_at(layer.selected_ranks()) for _, layer in tnn.mars_layers(model))


def run(make, seed: int, epochs: int) -> dict:
    x_tr, y_tr, x_te, y_te = digits(seed)
    torch.manual_seed(seed)
    model = make()
    loss_fn = tnn.MarsLoss(model, len(x_tr))
    opt = loss_fn.optimizer(lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x_tr)).split(64):
            opt.zero_grad()
            loss_fn(model(x_tr[batch]), y_tr[batch]).backward()
            opt.step()
    model.eval()
    nll = tnn.classification_nll(x_tr, y_tr)
    rec = {"seed": seed, "acc": C.accuracy(model, x_te, y_te), "params": tensorized_params(model),
           "nll": nll(model) / len(x_tr)}
    for name, limit in (("limited", LOUD_NLL_RISE), ("bic", None)):
        pruned = copy.deepcopy(model)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = tnn.occam_prune(pruned, nll, len(x_tr), max_nll_rise=limit)
        rec[name] = {"acc": C.accuracy(pruned.eval(), x_te, y_te), "params": tensorized_params(pruned),
                     "nll": report.nll_after / len(x_tr), "closed": len(report.closures),
                     "limited": report.limited, "warned": [str(w.message)[:60] for w in caught],
                     "seconds": time.perf_counter() - t0}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, records = [], []
    for label, make in MODELS.items():
        for seed in seeds:
            rec = run(make, seed, args.epochs)
            rec["model"] = label
            records.append(rec)
            lim, bic = rec["limited"], rec["bic"]
            rows.append(f"| {label} | {seed} | {rec['acc']:.1%} | {rec['params']:,} | {rec['nll']:.3f} "
                        f"| {lim['acc']:.1%} | {lim['params']:,} | {lim['nll']:.3f} | {lim['closed']} "
                        f"| {'yes' if lim['limited'] else 'no'} | {bic['acc']:.1%} | {bic['params']:,} "
                        f"| {bic['nll']:.3f} | {bic['closed']} |")
            print(rows[-1], flush=True)
    table = ("| model | seed | test acc. trained | params trained | train nll / ex. | test acc. limited | params "
             "limited | train nll / ex. limited | closed limited | limit refused a BIC closure | test acc. BIC "
             "alone | params BIC alone | train nll / ex. BIC alone | closed BIC alone |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    notes = (f"Digits, {args.epochs} epochs of MARS from default layers, then `occam_prune` from the same trained "
             "state with the default `max_nll_rise=0.05` (\"limited\") and with `max_nll_rise=None` (the BIC "
             "alone). Parameters: the tensorized layers' cores at the selected ranks. " + __doc__.split("\n\n")[3])
    C.publish("nn_occam_limit", "occam_prune on small data: the BIC alone and the default limit",
              f"python benchmarks/nn_occam_limit.py --epochs {args.epochs} --seeds {args.seeds}", notes, table,
              records)


if __name__ == "__main__":
    main()
