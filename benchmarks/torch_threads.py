"""Torch intra-op threads against problem size: where does a thread pool start to pay?

For Tucker networks of growing size, one training step (masked reconstruction, squared
error, backward pass, an in-place update) is timed on torch's CPU backend with one thread
and with torch's default thread count, round-robin in one run so that load from other
processes hits both alike. The FLOPs column is the contraction plan's count per forward
pass; ``tnmars.backends.torch_backend.SMALL_WORK_FLOPS`` is the threshold below which
:func:`~tnmars.backends.torch_backend.cpu_threads_for` chooses one thread.

    python benchmarks/torch_threads.py            # writes benchmarks/results/torch_threads.md
    python benchmarks/torch_threads.py --quick    # fewer repeats
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from _common import machine_line, markdown_table, write_result

import tnmars
from tnmars.backends.torch_backend import SMALL_WORK_FLOPS, cpu_threads_for, machine_busy

CASES = [((4, 5, 6), 3), ((8, 8, 8), 4), ((16, 16, 16), 8), ((32, 32, 32), 12), ((48, 48, 48), 16),
         ((64, 64, 64), 24), ((96, 96, 96), 32)]


def _step_function(shape, rank, seed=0):
    net = tnmars.Network.tucker(shape, rank, backend="torch", seed=seed)
    cores = [c.clone().requires_grad_() for c in net.cores]
    masks = {b: torch.full((r,), 0.9, dtype=torch.float64) for b, r in net.bonds.items()}
    target = torch.as_tensor(np.random.default_rng(seed + 1).standard_normal(shape))

    def step():
        out = net.with_cores(cores).to_tensor(masks)
        loss = ((out - target) ** 2).sum()
        loss.backward()
        with torch.no_grad():
            for c in cores:
                c -= 1e-4 * c.grad
                c.grad = None

    return step, net.path_info().flops


def _time(step, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 7
    default = torch.get_num_threads()
    rows = []
    for shape, rank in CASES:
        step, flops = _step_function(shape, rank)
        steps = max(3, int(2e8 / max(flops, 1) // 20))  # about the same work per sample
        steps = min(steps, 400)
        for threads in (1, default):  # warm-up
            _time(step, threads, 2)
        one, many = [], []
        for r in range(rounds):
            order = [(1, one), (default, many)] if r % 2 == 0 else [(default, many), (1, one)]
            for threads, sink in order:
                sink.append(_time(step, threads, steps))
        t1, tn = statistics.median(one), statistics.median(many)
        busy = machine_busy()
        with cpu_threads_for(flops) as chosen:
            pass
        rows.append(["x".join(map(str, shape)) + f" rank {rank}", f"{flops:,}", f"{1e3 * t1:.3f}",
                     f"{1e3 * tn:.3f}", f"{tn / t1:.2f}x", f"{chosen}{' (busy)' if busy else ''}", f"{os.getloadavg()[0]:.1f}"])
        print(rows[-1], flush=True)
    torch.set_num_threads(default)
    table = markdown_table(
        ["Tucker network", "FLOPs (forward)", "ms/step, 1 thread", f"ms/step, {default} threads (default)",
         "default / 1 thread", "cpu_threads_for picks", "load average"], rows)
    text = "\n".join([
        "# Torch CPU threads against problem size",
        "",
        f"Command: `python benchmarks/torch_threads.py{' --quick' if args.quick else ''}`  ",
        f"Machine: {machine_line()}; torch {torch.__version__}, default {default} intra-op threads.",
        "",
        "One training step (masked reconstruction, squared error, backward, update) per row, timed with",
        f"one thread and with torch's default, alternating, median of {rounds} rounds. A ratio above 1",
        "means the default thread pool is slower than one thread. The machine was shared with other",
        "jobs, which is the situation where idle pool threads hurt most; compare within a row only.",
        f"`cpu_threads_for` uses one thread below {SMALL_WORK_FLOPS:,} FLOPs per contraction, and at any size",
        "while the load average fills every CPU (\"busy\"); the last column is the 1-minute load average when",
        "the row was measured.",
        "",
        table,
    ])
    print(write_result("torch_threads.md", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
