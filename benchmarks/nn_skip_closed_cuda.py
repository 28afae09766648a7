"""Where should a MARS layer on a GPU draw its masks: on the device, or classified on the host?

``TensorizedLayer.skip_closed`` chooses between two ways of drawing a layer's hard-concrete
masks in training:

- **device draws** (``skip_closed=False``): the whole chain (uniforms, sigmoid, stretch, clamp,
  the ``min_rank`` top-up) runs as small kernels on the device; no host round trip, but a few
  dozen kernel launches per layer and step, and the contraction always runs at the maximal ranks;
- **host-classified draws** (``skip_closed=True``): the uniforms and logits are read on the host,
  which finds the entries that are exactly 0 or 1 and sends the rest in one copy; closed indices
  are sliced out of the cores (the contraction runs at the ranks in use), but the copy waits for
  the device (one synchronisation per layer and step).

This times both against the no-mask step on two models and two mask states, so that the default
rests on a measurement rather than on a guess about synchronisation costs:

- the MNIST 2FC-Net of ``nn_overhead.py`` (launch-bound on a GPU: about 2 ms per step at every
  batch size);
- a stack of ``--layers`` TT-matrix layers ``--width`` -> ``--width`` (rank ``--rank``) with
  ReLUs at batch ``--batch`` (compute-bound: the matrix products dominate);

each with every mask open (alpha = +6: nothing to skip, the device draws' best case) and with
half of every bond's indices closed (logits +6 / -6: what training reaches once MARS selects).
One training step = forward, loss, backward, ``MarsLoss.optimizer()`` (fused Adam) step, lr 0.

Usage: python benchmarks/nn_skip_closed_cuda.py [--device cuda] [--rounds 3] [--repeats 5]
       [--steps 10] [--width 2048] [--layers 4] [--rank 32] [--batch 8192]
Writes ``benchmarks/results/nn_skip_closed_cuda.md`` (``nn_skip_closed_<device>.md`` elsewhere).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_overhead as O
from _common import markdown_table, time_interleaved, torch_device_header, write_result

import tnmars.nn as tnn

MODES = {"plain": "no masks (baseline)",
         "device": "MARS, device draws (`skip_closed=False`)",
         "host": "MARS, host-classified draws (`skip_closed=True`)"}


def _factors(n: int) -> tuple[int, ...]:
    """``n`` as four near-equal factors (the TT-matrix mode sizes), e.g. 2048 -> (8, 8, 8, 4)."""
    out, rest = [], n
    for k in range(4, 0, -1):
        f = max(d for d in range(1, rest + 1) if rest % d == 0 and d <= round(rest ** (1 / k)) + 1e-9) if k > 1 else rest
        out.append(f)
        rest //= f
    return tuple(sorted(out, reverse=True))


def wide_stack(mars: bool, width: int, layers: int, rank: int) -> nn.Sequential:
    shape = _factors(width)
    mods: list[nn.Module] = []
    for k in range(layers):
        mods.append(tnn.TensorizedLinear(width, width, rank=rank, in_shape=shape, out_shape=shape, mars=mars,
                                         pi=0.1, alpha=6.0))
        if k < layers - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def _set_state(model: nn.Module, state: str) -> None:
    with torch.no_grad():
        for _, layer in tnn.mars_layers(model):
            for logits in layer.masks.bond_logits().values():
                logits.fill_(6.0)
                if state == "half":
                    logits[math.ceil(logits.numel() / 2):] = -6.0


def _build(model_name: str, mode: str, state: str, args, device) -> nn.Module:
    torch.manual_seed(0)
    if model_name == "2fc":
        model = O.mnist_2fc(mode != "plain", pi=0.01, alpha=6.0)
    else:
        model = wide_stack(mode != "plain", args.width, args.layers, args.rank)
    model = model.to(device)
    _set_state(model, state)
    for _, layer in tnn.mars_layers(model):
        layer.skip_closed = mode == "host"
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--small-batch", type=int, default=64, help="the 2FC-Net's batch")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cases = [("2fc", args.small_batch, 784), ("wide", args.batch, args.width)]
    rows = []
    for model_name, batch, features in cases:
        classes = 10 if model_name == "2fc" else args.width
        for state in ("open", "half"):
            ms: dict = {k: [] for k in MODES}
            ratios: dict = {k: [] for k in MODES}
            for _ in range(args.rounds):
                x = torch.randn(batch, features, device=device)
                y = torch.randint(0, classes, (batch,), device=device)
                funcs = {}
                for mode in MODES:
                    model = _build(model_name, mode, state, args, device)
                    funcs[mode] = O.step_fn(model, x, y, args.steps, prior_in_optimizer=mode != "plain",
                                            **({"fused": True} if mode == "plain" else {}))
                # warm-up (kernels, plans, allocator), then interleaved samples between synchronisations
                med = {k: v / args.steps * 1e3 for k, v in
                       time_interleaved(funcs, repeats=args.repeats, warmup=1, sync=sync).items()}
                for k in MODES:
                    ms[k].append(med[k])
                    ratios[k].append(med[k] / med["plain"])
            label = ("MNIST 2FC-Net (TT rank 20)" if model_name == "2fc"
                     else f"{args.layers} x TT-matrix {args.width}->{args.width} (rank {args.rank})")
            state_label = "every mask open" if state == "open" else "half of each bond closed"
            for k, text in MODES.items():
                r = sorted(ratios[k])
                rows.append([label, batch, state_label, text, f"{statistics.median(ms[k]):.3f}",
                             "1" if k == "plain" else f"**{statistics.median(r):.3f}x** ({r[0]:.3f}-{r[-1]:.3f})"])
            print(rows[-3:], flush=True)
    table = markdown_table(["model", "batch", "masks", "training step", "ms / step (median of rounds)",
                            "ratio to no masks (median of rounds; range)"], rows)
    text = (torch_device_header(f"Device draws or host-classified draws: a MARS training step on "
                                f"{device.type.upper()}", "nn_skip_closed_cuda.py", device)
            + f"\n\n{args.rounds} rounds (fresh models) of {args.repeats} interleaved samples of {args.steps} steps, "
            "wall time between device synchronisations; `MarsLoss.optimizer()` (fused Adam where available) "
            "for MARS, fused Adam without masks; lr = 0; T = 0.1. 'Half closed': logits +6 on the first half "
            "of each bond's indices and -6 on the rest (the no-mask baseline keeps the maximal ranks).\n\n"
            + table + "\n")
    print(text)
    write_result("nn_skip_closed_cuda.md" if device.type == "cuda" else f"nn_skip_closed_{device.type}.md", text)


if __name__ == "__main__":
    main()
