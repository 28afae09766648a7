"""Cost of comparing the exchanges' candidates with a converged incumbent (issue 15).

Within a budget, :class:`~tnmars.fitting.search.RankSearch` refits its incumbent by
``final_sweeps`` sweeps before the exchanges compare candidates with it
(``RankSearch._converged``). This script runs every TT/TR/Tucker budget case of
``structure_search.py`` twice, side by side in one process (the order alternates per case so
that load from other processes falls on both alike): once as shipped, once with that refit
switched off (the behaviour before it), and prints the selection's time, refits and error.
A first, untimed run of each case fills the contraction-plan cache for both.

    python benchmarks/structure_search_refit_cost.py [--methods tr] [--seeds 101]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import structure_search as ss

import tnmars
from tnmars.fitting.search import RankSearch

OUT = Path(__file__).resolve().parent / "results" / "structure_search_refit_cost.md"


def _run(y: np.ndarray, fmt: str, limit: int, converge: bool) -> tuple[float, int, float, int]:
    shipped = RankSearch._converged
    if not converge:
        RankSearch._converged = lambda self, best: best
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = tnmars.fit(y, fmt, max_rank=8, budget=limit, seed=0, progress=False)
        return time.perf_counter() - t0, res.evaluations, float(res.relative_error), int(res.num_params)
    finally:
        RankSearch._converged = shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="tt,tr,tucker")
    parser.add_argument("--seeds", default=None, help="e.g. 0,101 (default: all budget seeds)")
    args = parser.parse_args()
    import subprocess

    # read now: a commit made while the run goes on must not relabel it
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    methods = args.methods.split(",")
    seeds = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    rows = []
    k = 0
    for split, group in ss.BUDGET_SEEDS.items():
        for seed in group:
            if seeds is not None and seed not in seeds:
                continue
            truth, _ = ss.random_topology(4, ss.ORDERS[4], seed)
            x = np.asarray(truth.to_tensor())
            for snr in (None, 20):
                y = ss.noisy(x, snr, seed)
                for fmt in methods:
                    for share in (0.5, 1.0):
                        limit = int(share * truth.num_params)
                        order = (False, True) if k % 2 == 0 else (True, False)
                        k += 1
                        _run(y, fmt, limit, True)  # warm-up: contraction plans cached, so neither pays planning
                        got = {c: _run(y, fmt, limit, c) for c in order}
                        rows.append((fmt, f"{split} {seed}", "none" if snr is None else f"{snr} dB", limit,
                                     got[False], got[True]))
                        print(rows[-1], flush=True)
    head = "| network | split | noise | budget | error before | error after | after / before | " \
           "refits before | refits after | time before s | time after s | time after / before |"
    lines = [head, "|" + "---|" * 12]
    for fmt, split, noise, limit, old, new in rows:
        lines.append(f"| {fmt} | {split} | {noise} | {limit} | {old[2]:.3g} | {new[2]:.3g} | {new[2] / old[2]:.3f} | "
                     f"{old[1]} | {new[1]} | {old[0]:.1f} | {new[0]:.1f} | {new[0] / old[0]:.2f} |")
    total_old = sum(r[4][0] for r in rows)
    total_new = sum(r[5][0] for r in rows)
    ratios = [r[5][0] / r[4][0] for r in rows]
    text = "\n".join([
        "# Budgets: cost of refitting the incumbent before the exchanges compare (issue 15)",
        "",
        f"Command: `python benchmarks/structure_search_refit_cost.py {' '.join(sys.argv[1:])}`; "
        f"commit {commit}; {datetime.date.today().isoformat()}; {platform.machine()}, {platform.processor() or 'cpu'}; "
        "one thread; **shared machine** (2 cores, other jobs running): both variants of a case run back to back "
        "in one process after an untimed warm-up run, alternating which goes first. Refits: networks refitted "
        "by ALS during the selection (`FitResult.evaluations`).",
        "",
        f"Selection time, all {len(rows)} cases: {total_old:.0f} s before, {total_new:.0f} s after "
        f"({total_new / total_old:.2f}x); median per-case ratio {statistics.median(ratios):.2f}, "
        f"largest {max(ratios):.2f}. Refits: {sum(r[4][1] for r in rows)} before, {sum(r[5][1] for r in rows)} after.",
        "",
        *lines, ""])
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
