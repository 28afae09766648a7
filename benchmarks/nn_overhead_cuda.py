"""The MARS training step against the no-mask step on a CUDA GPU (issue 12's overhead target,
measured where the CPU table of ``nn_overhead.py`` cannot: on the device).

The MNIST 2FC-Net of ``nn_overhead.py`` (TT 784->625 and 625->10, rank 20), every mask open
(alpha = 6, T = 0.1, the state where nothing can be skipped), one training step = forward,
loss, backward, optimizer step. Rows:

- no masks, ``torch.optim.Adam(model.parameters(), fused=True)`` (the baseline);
- MARS with ``opt = loss_fn.optimizer()`` (fused Adam that applies the prior in its step);
- MARS with the prior in the loss and ``torch.optim.Adam(model.parameters(), fused=True)``;
- MARS with ``loss_fn.optimizer()`` and ``skip_closed=True``: the draws classified on the host
  (the CPU's default path) instead of sampled on the device.

Each sample is the wall time of ``--steps`` steps between two ``torch.cuda.synchronize()``;
the variants run interleaved, fresh models each round, and the table gives the median over
rounds of each round's median ratio. On a GPU a MARS layer samples its masks on the device by
default (``skip_closed`` off: the hard-concrete chain and the ``min_rank`` top-up, a few dozen
small kernels and their backward, no host round trip); with ``skip_closed=True`` it reads its
uniforms and logits on the host (one device-to-host copy per layer and step, which waits for
the device) and, when every draw is exactly 1, launches nothing more.

Usage: python benchmarks/nn_overhead_cuda.py [--rounds 7] [--repeats 5] [--steps 20] [--device cuda]
Writes ``benchmarks/results/nn_overhead_cuda.md``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_overhead as O
from _common import markdown_table, time_interleaved, torch_device_header, write_result

import tnmars.nn as tnn

BATCHES = (1, 64, 128, 1024, 8192)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, mode: str):
    """``steps`` training steps at lr 0 (``nn_overhead.step_fn``: the same mask state every
    step; the optimizer does the same work whatever the lr), fused Adam in every mode."""
    if mode == "host":
        for _, layer in tnn.mars_layers(model):
            layer.skip_closed = True
    if mode in ("optimizer", "host"):
        return O.step_fn(model, x, y, steps, prior_in_optimizer=True)
    return O.step_fn(model, x, y, steps, fused=True)  # no masks: cross-entropy; MARS: the prior in the loss


MODES = {"plain": "no masks, fused Adam (baseline)",
         "optimizer": "MARS, every mask open, `loss_fn.optimizer()` (fused Adam, the prior applied in its step)",
         "loss": "MARS, every mask open, the prior in the loss, fused Adam",
         "host": "MARS, every mask open, `loss_fn.optimizer()`, `skip_closed=True` (draws classified on the host)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ms: dict = {}
    ratios: dict = {}
    for batch in BATCHES:
        for _ in range(args.rounds):
            x = torch.randn(batch, 784, device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            funcs = {}
            for mode in MODES:
                torch.manual_seed(0)
                model = O.mnist_2fc(mode != "plain", pi=0.01, alpha=6.0).to(device)
                funcs[mode] = _step(model, x, y, args.steps, mode)
            # warm-up (kernels, plans, allocator), then interleaved samples between synchronisations
            med = {k: v / args.steps * 1e3 for k, v in
                   time_interleaved(funcs, repeats=args.repeats, warmup=1, sync=sync).items()}
            for k in MODES:
                ms.setdefault((batch, k), []).append(med[k])
                ratios.setdefault((batch, k), []).append(med[k] / med["plain"])
    rows = []
    for batch in BATCHES:
        for k, label in MODES.items():
            r = sorted(ratios[(batch, k)])
            ratio = statistics.median(r)
            target = 1.3 if batch == 1 else 1.05
            verdict = "-" if k != "optimizer" else f"<= {target}x: {'met' if ratio <= target else 'NOT met'}"
            rows.append([label, batch, f"{statistics.median(ms[(batch, k)]):.3f}",
                         "1" if k == "plain" else f"**{ratio:.3f}x** ({r[0]:.3f}-{r[-1]:.3f})", verdict])
    table = markdown_table(["training step, MNIST 2FC-Net (TT rank 20)", "batch", "ms / step (median of rounds)",
                            "ratio to no masks (median of rounds; range)", "target"], rows)
    text = (torch_device_header(f"MARS training-step overhead on {device.type.upper()}", "nn_overhead_cuda.py", device)
            + f"\n\n{args.rounds} rounds (fresh models) of {args.repeats} interleaved samples of {args.steps} steps, "
            "wall time between device synchronisations. Every mask open (alpha = 6, T = 0.1), lr = 0.\n\n"
            + table + "\n")
    print(text)
    write_result("nn_overhead_cuda.md" if device.type == "cuda" else f"nn_overhead_{device.type}_wall.md", text)


if __name__ == "__main__":
    main()
