"""The MARS training step under ``torch.compile`` against the no-mask step, on a GPU.

On a GPU the MNIST 2FC-Net's step is bound by kernel launches (``nn_overhead_cuda.md``: about
2 ms at every batch size), and a MARS layer's device-side mask draws (a few dozen small kernels
per layer) about double it. ``torch.compile`` fuses those kernels; this measures how much of
the overhead that removes. Rows, each at every batch of ``--batches``:

- no masks, eager; no masks, ``torch.compile`` of forward + loss;
- MARS (every mask open: alpha = +6, T = 0.1), eager; MARS, ``torch.compile`` of forward +
  ``MarsLoss`` (the mask draws inside the graph); the same with the prior in the compiled loss and
  PyTorch's fused Adam (how much of what is left is ``MarsLoss.optimizer()``'s step);

backward and the fused Adam step eager in every row (``MarsLoss.optimizer()`` for MARS, which
applies the prior in its step). The compiled rows are compared with the compiled no-mask step
and the eager rows with the eager no-mask step.

Each round resets dynamo and compiles its functions before any timing (fresh models each round),
so no function is timed while it (re)compiles and dynamo's recompile limit is never reached.

Usage: python benchmarks/nn_compiled_step_cuda.py [--device cuda] [--rounds 2] [--repeats 5]
       [--steps 20] [--batches 64,1024] [--backend inductor]
Writes ``benchmarks/results/nn_compiled_step_cuda.md`` (``nn_compiled_step_<device>.md`` elsewhere).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_overhead as O
from _common import markdown_table, time_interleaved, torch_device_header, write_result

import tnmars.nn as tnn

MODES = {"plain": "no masks, eager",
         "plain_compiled": "no masks, `torch.compile` (forward + loss)",
         "mars": "MARS, every mask open, eager",
         "mars_compiled": "MARS, every mask open, `torch.compile` (forward + loss, draws inside)",
         "mars_compiled_prior_in_loss": "MARS, every mask open, `torch.compile`, the prior in the loss and fused "
                                        "`torch.optim.Adam`"}
BASELINE = {"plain": "plain", "mars": "plain", "plain_compiled": "plain_compiled", "mars_compiled": "plain_compiled",
            "mars_compiled_prior_in_loss": "plain_compiled"}


def _step(mode: str, x: torch.Tensor, y: torch.Tensor, steps: int, device, backend: str):
    torch.manual_seed(0)
    mars = mode.startswith("mars")
    model = O.mnist_2fc(mars, pi=0.01, alpha=6.0).to(device)
    if mars:
        for _, layer in tnn.mars_layers(model):
            layer.skip_closed = False  # the compiled graph never slices; eager alike (the GPU's default)
        loss_fn = tnn.MarsLoss(model, O.NUM_TRAIN)
        if mode.endswith("prior_in_loss"):
            opt = torch.optim.Adam(model.parameters(), lr=0.0, fused=device.type == "cuda" or None)
        else:
            opt = loss_fn.optimizer(torch.optim.Adam, lr=0.0)
    else:
        loss_fn = nn.CrossEntropyLoss()
        fused = device.type == "cuda" or None
        opt = torch.optim.Adam(model.parameters(), lr=0.0, fused=fused)

    def forward(a, b):
        return loss_fn(model(a), b)

    if "compiled" in mode:
        forward = torch.compile(forward, backend=backend, fullgraph=True, dynamic=False)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            forward(x, y).backward()
            opt.step()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", default="64,1024")
    ap.add_argument("--backend", default="inductor")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for batch in batches:
        ms: dict = {k: [] for k in MODES}
        ratios: dict = {k: [] for k in MODES}
        compile_s = []
        for _ in range(args.rounds):
            torch._dynamo.reset()
            x = torch.randn(batch, 784, device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            funcs = {mode: _step(mode, x, y, args.steps, device, args.backend) for mode in MODES}
            for mode, f in funcs.items():  # warm-up, which compiles
                t0 = time.perf_counter()
                f()
                sync()
                if "compiled" in mode:
                    compile_s.append(time.perf_counter() - t0)
            med = {k: v / args.steps * 1e3 for k, v in
                   time_interleaved(funcs, repeats=args.repeats, warmup=0, sync=sync).items()}
            for k in MODES:
                ms[k].append(med[k])
                ratios[k].append(med[k] / med[BASELINE[k]])
        for k, label in MODES.items():
            r = sorted(ratios[k])
            base = "1" if BASELINE[k] == k else f"**{statistics.median(r):.3f}x** ({r[0]:.3f}-{r[-1]:.3f})"
            rows.append([label, batch, f"{statistics.median(ms[k]):.3f}", base,
                         MODES[BASELINE[k]] if BASELINE[k] != k else "-"])
        print(rows[-len(MODES):], f"first call incl. compile: {max(compile_s):.1f} s at most", flush=True)
    table = markdown_table(["training step, MNIST 2FC-Net (TT rank 20)", "batch", "ms / step (median of rounds)",
                            "ratio (median of rounds; range)", "against"], rows)
    text = (torch_device_header(f"The MARS training step under torch.compile on {device.type.upper()}",
                                "nn_compiled_step_cuda.py", device) + f", backend {args.backend}\n\n"
            f"{args.rounds} rounds (fresh models, dynamo reset, compiled before timing) of {args.repeats} "
            f"interleaved samples of {args.steps} steps, wall time between device synchronisations; "
            "backward and the fused Adam step eager in every row; lr = 0.\n\n" + table + "\n")
    print(text)
    write_result("nn_compiled_step_cuda.md" if device.type == "cuda" else f"nn_compiled_step_{device.type}.md",
                 text)


if __name__ == "__main__":
    main()
