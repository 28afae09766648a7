"""Masked ALS updates: slice-by-slice direct solves against conjugate gradients (completions).

With missing entries every ALS core update is a masked least-squares problem. tnmars solved it
by preconditioned CG (about ten products with the whole tensor and a hundred array calls per
update); where a core's open modes are on no other core the problem splits into one small
problem per index of those modes, which ``_CoreSolver.solve_direct`` solves by one batched
eigendecomposition (``tnmars.fitting.solvers``). This script fits the same completions both
ways (CG alone: the direct solve's thresholds set to 0) and prints, side by side:

1. held-out completions drawn at random (Tucker, TT, TR, CP; orders 3-4, modes 5-9, 20% and
   50% observed, noiseless, 30 and 15 dB): ranks, error to the truth, warnings and CPU seconds
   of each way, fitted one after the other for each case;
2. single core updates on larger tensors at the bond volumes around ``DIRECT_MAX_BONDS``:
   interleaved median milliseconds of one direct update and one CG update (the fits'
   ``cg_iters``/``cg_tol``), which is where the thresholds come from.

    python benchmarks/masked_als.py [--cases 48] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, time_interleaved, write_result  # noqa: E402

import tnmars  # noqa: E402
from tnmars.fitting import solvers  # noqa: E402
from tnmars.fitting.graph import pieces_without  # noqa: E402

FORMATS = ("tucker", "tt", "tr", "cp")


class cg_only:
    """Within it, every masked update runs CG (the direct solve's thresholds at 0)."""

    def __enter__(self):
        self.saved = solvers.DIRECT_MAX_BONDS, solvers.DIRECT_MAX_WORK
        solvers.DIRECT_MAX_BONDS = solvers.DIRECT_MAX_WORK = 0

    def __exit__(self, *exc):
        solvers.DIRECT_MAX_BONDS, solvers.DIRECT_MAX_WORK = self.saved


def draw_case(case: int):
    """A random truth of the case's format (by ``case % 4``), noise (by ``case // 4 % 3``) and
    observed share (by ``case // 12 % 2``); seeds 1000 + case."""
    rng = np.random.default_rng(1000 + case)
    fmt = FORMATS[case % 4]
    order = int(rng.integers(3, 5))
    shape = tuple(int(n) for n in rng.integers(5, 10, size=order))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Tucker ranks clipped to the feasible)
        if fmt == "tucker":
            net = tnmars.Network.tucker(shape, [int(rng.integers(1, 4)) for _ in shape], seed=case)
        elif fmt == "tt":
            net = tnmars.Network.tt(shape, [int(rng.integers(1, 4)) for _ in shape[1:]], seed=case)
        elif fmt == "tr":
            net = tnmars.Network.tr(shape, [int(rng.integers(2, 4)) for _ in shape], seed=case)
        else:
            net = tnmars.Network.cp(shape, int(rng.integers(2, 5)), seed=case)
    truth = np.asarray(net.to_tensor())
    truth = truth / np.linalg.norm(truth)
    snr = (None, 30, 15)[(case // 4) % 3]
    share = (0.2, 0.5)[(case // 12) % 2]
    x = truth if snr is None else truth + 10 ** (-snr / 20) * rng.standard_normal(shape) / np.sqrt(truth.size)
    return fmt, net, truth, x, rng.random(shape) < share, snr, share


def fit_case(fmt, truth, x, observed):
    t = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = tnmars.fit(x, fmt, observed=observed, seed=0, progress=False)
    seconds = time.process_time() - t
    err = float(np.linalg.norm(np.asarray(res.network.to_tensor()) - truth))
    return res.ranks, err, len(caught), seconds


def completions(cases: int) -> tuple[str, str]:
    rows, same, close, times = [], 0, 0, {"cg": [], "direct": []}
    for case in range(cases):
        fmt, net, truth, x, observed, snr, share = draw_case(case)
        with cg_only():
            cg = fit_case(fmt, truth, x, observed)
        direct = fit_case(fmt, truth, x, observed)
        times["cg"].append(cg[3])
        times["direct"].append(direct[3])
        same += cg[0] == direct[0]
        close += abs(cg[1] - direct[1]) <= 0.01 * max(cg[1], 1e-3)
        rows.append([case, fmt, "x".join(map(str, x.shape)), tuple(net.ranks), "none" if snr is None else f"{snr} dB",
                     f"{share:.0%}", cg[0], f"{cg[1]:.3g}", cg[2], f"{cg[3]:.2f}", direct[0], f"{direct[1]:.3g}",
                     direct[2], f"{direct[3]:.2f}", f"**{cg[3] / max(direct[3], 1e-9):.1f}x**"])
        print(rows[-1], flush=True)
    table = markdown_table(["case", "format", "shape", "true ranks", "noise", "observed", "CG: ranks",
                            "error to truth", "warnings", "CPU s", "direct: ranks", "error to truth", "warnings",
                            "CPU s", "speed-up"], rows)
    ratios = sorted(a / max(b, 1e-9) for a, b in zip(times["cg"], times["direct"]))
    summary = (f"{cases} completions: the same ranks in **{same} of {cases}**, errors to the truth within 1% "
               f"(or 1e-5) in {close} of {cases}; CPU seconds in all {sum(times['cg']):.1f} (CG) against "
               f"{sum(times['direct']):.1f} (direct), **{sum(times['cg']) / max(sum(times['direct']), 1e-9):.1f}x**; "
               f"per fit median speed-up {statistics.median(ratios):.1f}x (range {ratios[0]:.1f}-{ratios[-1]:.1f}x).")
    return table, summary


def single_updates(repeats: int) -> str:
    """One core update of a ring completion at 30% observed, by both routes."""
    rows = []
    for shape, rank in (((30, 30, 30), 2), ((30, 30, 30), 4), ((30, 30, 30), 5), ((60, 60, 60), 4),
                        ((60, 60, 60), 6), ((12, 12, 12, 12), 4)):
        rng = np.random.default_rng(0)
        net = tnmars.Network.tr(shape, rank, seed=1)
        y = np.asarray(net.to_tensor()) + 0.01 * rng.standard_normal(shape)
        data = solvers.FitData.from_arrays(y, rng.random(shape) < 0.3)
        cores = [np.array(c) for c in tnmars.Network.tr(shape, rank, seed=2).cores]
        solver = solvers._CoreSolver(net.inputs, net.output, pieces_without(net.inputs, net.output)[0], data)
        t = time_interleaved({"direct": lambda s=solver, c=cores: s.solve_direct(c),
                              "cg": lambda s=solver, c=cores: s.solve_cg(c, 25, 1e-6)}, repeats=repeats)
        bonds = rank * rank
        chosen = "direct" if solver.direct_pays(cores) else "CG"
        rows.append(["x".join(map(str, shape)), rank, bonds, f"{y.size * bonds**2:.2g}", f"{t['direct'] * 1e3:.2f}",
                     f"{t['cg'] * 1e3:.2f}", f"**{t['cg'] / t['direct']:.2f}x**", chosen])
        print(rows[-1], flush=True)
    return markdown_table(["ring", "rank", "bond volume B", "entries x B^2", "direct ms", "CG ms",
                           "CG / direct", "the fits use"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    updates = single_updates(args.repeats)
    table, summary = completions(args.cases)
    text = (f"# Masked ALS: direct slice solves against CG\n\n"
            f"Command: `python benchmarks/masked_als.py --cases {args.cases} --repeats {args.repeats}` "
            f"(started {started})\n\nMachine: {machine_line()}\n\n"
            f"{__doc__.split(chr(10) + chr(10), 1)[1].split('    python')[0].strip()}\n\n"
            f"## Held-out completions, fitted both ways\n\n{summary}\n\n{table}\n\n"
            f"## One core update (the first core of a ring, 30% observed)\n\n"
            f"Thresholds: direct where the bond volume is at most {solvers.DIRECT_MAX_BONDS} or entries x B^2 at "
            f"most {solvers.DIRECT_MAX_WORK:.3g}.\n\n{updates}\n")
    print(summary)
    print("wrote", write_result("masked_als.md", text))


if __name__ == "__main__":
    main()
