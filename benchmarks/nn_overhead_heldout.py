"""The MARS step overhead on models that ``nn_overhead.py`` (the 2FC-Net) was never tuned on.

Issue 12's target: a MARS training step with every mask open at most 1.05x the no-mask step at
batch >= 64. ``nn_overhead.py`` judges it on the MNIST 2FC-Net, whose 4-5 ms step makes the
fixed per-layer cost weigh the most. Here the same judgement on two other models, at batch 64:

- a CNN of two ``Tucker2Conv2d`` and a ``TensorizedLinear`` on 32x32 RGB images;
- an MLP 512-1024-1024-10 of a TT, a TR and a low-rank layer.

Each round builds the no-mask model (``mars=False``, fused Adam) and two MARS models with every
mask open (the default start) under ``opt = loss_fn.optimizer()``: one with the compiled step ops
(:mod:`tnmars.nn.native`, built here when possible), one on the Python path. The three are timed
in interleaved repeats (thread CPU time); the table gives the median over rounds of each MARS
step's ratio to the no-mask step, with a bootstrap 95% interval of that median.

Usage: python benchmarks/nn_overhead_heldout.py [--rounds 20] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C
from nn_overhead import steady_malloc

import tnmars.nn as tnn
from tnmars.nn import native


def cnn(mars: bool) -> nn.Module:
    return nn.Sequential(tnn.Tucker2Conv2d(3, 32, 3, rank=(3, 8), padding=1, mars=mars), nn.ReLU(), nn.MaxPool2d(2),
                         tnn.Tucker2Conv2d(32, 64, 3, rank=(12, 12), padding=1, mars=mars), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), tnn.TensorizedLinear(64 * 8 * 8, 128, rank=8, mars=mars),
                         nn.ReLU(), nn.Linear(128, 10))


def mlp(mars: bool) -> nn.Module:
    return nn.Sequential(tnn.TensorizedLinear(512, 1024, rank=12, mars=mars), nn.ReLU(),
                         tnn.TensorizedLinear(1024, 1024, format="tr", rank=6, mars=mars), nn.ReLU(),
                         tnn.LowRankLinear(1024, 10, rank=8, mars=mars))


MODELS = {
    "CNN: Tucker-2 conv 3->32, Tucker-2 conv 32->64, TT linear 4096->128, linear 128->10; 32x32 RGB": (
        cnn, (3, 32, 32)),
    "MLP: TT 512->1024, TR 1024->1024, low-rank 1024->10": (mlp, (512,)),
}


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mars: bool, steps: int):
    """``steps`` training steps at lr = 0 (every timed step sees the same mask state)."""
    if mars:
        loss_fn = tnn.MarsLoss(model, 50_000)
        opt = loss_fn.optimizer(torch.optim.Adam, lr=0.0)
    else:
        loss_fn = nn.CrossEntropyLoss()
        opt = torch.optim.Adam(model.parameters(), lr=0.0, fused=True)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    return run


def python_path(run):
    def off():
        with native.disabled():
            run()
    return off


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timing sample")
    args = ap.parse_args()
    steady_malloc()
    torch.set_num_threads(1)
    try:
        native.build()
        loaded = True
    except RuntimeError as err:
        print(f"{err}\nthe Python path alone", file=sys.stderr)
        loaded = False
    labels = {"native ops": True, "Python path": False} if loaded else {"Python path": False}
    rows, rng = [], random.Random(0)
    for name, (make, shape) in MODELS.items():
        x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
        ratios: dict = {label: [] for label in labels}
        plain_ms = []
        for _ in range(args.rounds):
            torch.manual_seed(0)
            funcs = {"plain": step_fn(make(False), x, y, False, args.steps)}
            for label, compiled in labels.items():
                run = step_fn(make(True), x, y, True, args.steps)
                funcs[label] = run if compiled else python_path(run)
            t = C.cpu_time_interleaved(funcs, repeats=args.repeats, warmup=2)
            plain_ms.append(t["plain"] / args.steps * 1e3)
            for label in labels:
                ratios[label].append(t[label] / t["plain"])
        for label, values in ratios.items():
            values.sort()
            boot = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(2000))
            low, high = boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]
            said = "met" if high <= 1.05 else "NOT met" if low > 1.05 else "at the line"
            rows.append([name, 64, f"{statistics.median(plain_ms):.2f}", label, f"**{statistics.median(values):.3f}x**",
                         f"{low:.3f}-{high:.3f}", f"{values[0]:.3f}-{values[-1]:.3f}", f"<= 1.05x: {said}"])
    table = C.markdown_table(["model", "batch", "no-mask ms / step (median)", "MARS step",
                              "MARS / no-mask (median of rounds)", "bootstrap 95% interval", "range over rounds",
                              "target"], rows)
    notes = (f"{args.rounds} rounds per model, each three fresh models timed in {args.repeats} interleaved repeats of "
             f"{args.steps} steps (thread CPU time, one torch thread, lr = 0): the no-mask model (`mars=False`) under "
             "fused Adam, and the MARS model with every mask open (the default start) under `loss_fn.optimizer()`, "
             "with the compiled step ops and on the Python path. glibc malloc kept from returning memory "
             "(`steady_malloc`, as in nn_overhead.py). These models were never used to tune the step.")
    cmd = "python benchmarks/nn_overhead_heldout.py" + "".join(
        f" --{k} {v}" for k, v in vars(args).items() if v != ap.get_default(k))
    C.publish("nn_overhead_heldout", "MARS step overhead on held-out models", cmd, notes, table)


if __name__ == "__main__":
    main()
