"""Fit the planner's memory-traffic prices (``tnmars.contract``'s ``COPY_FLOPS``,
``CACHED_COPY_FLOPS``, ``NARROW_GEMM``, ``TALL_GEMM``) on measured contractions, and judge them
on held-out ones.

    python benchmarks/contraction_prices.py [--repeats 7]

For every row of ``benchmarks/contraction.py`` with at most eight operands, the candidate
paths the planner weighs (the cheapest trees by FLOPs up to six operands; beyond, opt_einsum's
path, the greedy variants and the star orders) are each built into a plan and timed on NumPy
and torch (one thread, the process's CPU time, median of interleaved repeats). Then, for every
point of a small grid of prices, the planner's choice among those candidates (the lowest
``Plan.cost``) is looked up and its time compared with the fastest candidate's. The prices
kept are those with the smallest worst slowdown over the tuning rows (ties: the smallest mean,
then the fewest changes from the prices before);
the held-out rows are reported at those prices without having been used to choose them.
Layouts are built once at the current prices (they depend on copy costs in entries, not on
prices, except for which of two equally cheap layouts is kept).
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# first: benchmarks/contraction.py pins one BLAS thread before NumPy loads
from contraction import cases, time_batched  # noqa: E402

# isort: split
import numpy as np  # noqa: E402
import opt_einsum  # noqa: E402
import torch  # noqa: E402
from _common import machine_line, markdown_table, write_result  # noqa: E402

from tnmars.backends import get_backend  # noqa: E402
from tnmars.contract import make_plan  # noqa: E402
from tnmars.paths import cheapest_paths, greedy_variants, pairwise_path, star_paths  # noqa: E402
from tnmars.spec import einsum_terms  # noqa: E402

_contract = sys.modules["tnmars.contract"]
GRID = {
    "COPY_FLOPS": (5.0, 10.0, 15.0, 20.0, 30.0, 50.0),
    "CACHED_COPY_FLOPS": (1.0, 2.0, 4.0),
    "NARROW_GEMM": (4.0, 8.0, 16.0),
    "TALL_GEMM": (0.0, 0.25, 0.5, 1.0),
}
MAX_TERMS = 8
#: the prices before this fit (fitted with the old copy model, which charged transposed views)
BEFORE = {"COPY_FLOPS": 50.0, "CACHED_COPY_FLOPS": 2.0, "NARROW_GEMM": 8.0, "TALL_GEMM": 0.0}


def candidates(terms: list[str], output: str, sizes: dict[str, int]) -> dict[str, tuple]:
    """The pairwise paths the planner chooses among, by name."""
    n = len(terms)
    eq = ",".join(terms) + "->" + output
    shapes = [tuple(sizes[c] for c in t) for t in terms]
    found = {"opt_einsum auto": pairwise_path(opt_einsum.contract_path(eq, *shapes, shapes=True)[0], n)}
    if n <= _contract.MAX_TERMS_FOR_COPY_AWARE_PATHS:
        for k, (path, _) in enumerate(cheapest_paths(terms, output, sizes)):
            found[f"tree {k}"] = path
    else:
        for path, name in greedy_variants(terms, output, sizes, None):
            found[name] = pairwise_path(path, n)
    for path, name in star_paths(terms, output):
        found[name] = path
    unique: dict[tuple, str] = {}
    for name, path in found.items():
        unique.setdefault(tuple(path), name)
    return {name: path for path, name in unique.items()}


def priced_cost(path, terms, output, sizes, prices: dict[str, float]) -> float:
    saved = {k: getattr(_contract, k) for k in prices}
    try:
        for k, v in prices.items():
            setattr(_contract, k, v)
        return _contract._priced(path, terms, output, sizes).cost
    finally:
        for k, v in saved.items():
            setattr(_contract, k, v)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    grid = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    measured = []  # (split, row, backend, {candidate: seconds}, {grid index: chosen candidate})
    for case in cases(False):
        inputs, output = einsum_terms(case.eq, tuple(a.ndim for a in case.arrays))
        shapes = tuple(tuple(a.shape) for a in case.arrays)
        base = make_plan(tuple(inputs), output, shapes)
        terms = base._terms
        if not 2 < len(terms) <= MAX_TERMS:
            continue
        sizes = base._sizes
        cands = candidates(terms, output, sizes)
        if len(cands) < 2:
            continue
        plans = {name: make_plan(tuple(inputs), output, shapes, tuple(path)) for name, path in cands.items()}
        choice = {}
        for g, prices in enumerate(grid):
            costs = {name: priced_cost(path, terms, output, sizes, prices) for name, path in cands.items()}
            choice[g] = min(costs, key=costs.__getitem__)
        for backend in ("numpy", "torch"):
            be = get_backend(backend)
            ops = case.arrays if backend == "numpy" else [torch.from_numpy(a) for a in case.arrays]
            funcs = {name: (lambda p=plan, ops=ops, be=be: be.contiguous(_contract.execute(p, ops, be)))
                     for name, plan in plans.items()}
            times = time_batched(funcs, repeats=args.repeats)
            measured.append((case.split, case.name, backend, times, choice))
            print(case.split, case.name, backend, {k: f"{v * 1e3:.3g}" for k, v in times.items()}, flush=True)

    def slowdowns(g: int, split: str) -> list[float]:
        return [times[choice[g]] / min(times.values()) for s, _, _, times, choice in measured if s == split]

    current_g = next((g for g, p in enumerate(grid) if p == BEFORE), None)

    def changed(g: int) -> int:  # among equally good prices, the fewest departures from before
        return sum(grid[g][k] != BEFORE[k] for k in GRID)

    scored = sorted(range(len(grid)), key=lambda g: (round(max(slowdowns(g, "tuning")), 2),
                                                     round(statistics.mean(slowdowns(g, "tuning")), 3), changed(g)))
    best = scored[0]
    summary = []
    for g in dict.fromkeys([best, *([current_g] if current_g is not None else []), *scored[1:6]]):
        tune, held = slowdowns(g, "tuning"), slowdowns(g, "held-out")
        label = ", ".join(f"{k}={v:g}" for k, v in grid[g].items())
        tag = " (chosen)" if g == best else (" (before this fit)" if g == current_g else "")
        summary.append([label + tag, f"{max(tune):.2f}", f"{statistics.mean(tune):.3f}",
                        f"{max(held):.2f}" if held else "n/a", f"{statistics.mean(held):.3f}" if held else "n/a"])
    rows = []
    for split, name, backend, times, choice in measured:
        fastest = min(times, key=times.__getitem__)
        rows.append([split, name, backend, len(times), fastest, f"{times[fastest] * 1e3:.3g}", choice[best],
                     f"{times[choice[best]] / times[fastest]:.2f}",
                     f"{times[choice[current_g]] / times[fastest]:.2f}" if current_g is not None else "n/a"])
    text = (
        "# Memory-traffic prices of the contraction planner, fitted on measured paths\n\n"
        f"Command: `python benchmarks/contraction_prices.py --repeats {args.repeats}`  \n"
        f"Measured: {machine_line()}; one BLAS/torch thread; torch {torch.__version__}, numpy {np.__version__}. "
        "CPU time of the process, median of interleaved repeats; the machine was shared with other work.\n\n"
        "Slowdown: time of the path the planner picks at those prices over the fastest candidate path of the row, "
        "worst and mean over the rows and both backends.\n\n"
        + markdown_table(["prices", "tuning worst", "tuning mean", "held-out worst", "held-out mean"], summary)
        + "\n\nPer row (prices chosen above; the last column: at the prices before this fit):\n\n"
        + markdown_table(["split", "row", "backend", "candidates", "fastest", "fastest ms", "chosen", "chosen / fastest",
                          "before / fastest"], rows)
        + "\n"
    )
    print(text)
    write_result("contraction_prices.md", text)


if __name__ == "__main__":
    main()
