"""What the second walk from random cores costs and gains for fits grown from rank 1 (CP and the
specs of other graphs, the greedy proposal): ``tnmars.fit`` with ``selection={"random_restart":
False}`` (the search before it) and the default, side by side in one process on the same data.

A walk from rank 1 stops where no single index pays. Data whose components are all about as
strong are the worst case: one more component explains 1/R of the data, and pays only once most
are in. Cases:

- ``tune``: the outside probe's three (2026-12-02) that showed it, looked at while the change
  was made: an 80x60 matrix of rank 10 and a 40x40 of rank 8 (orthonormal factors), an orthogonal
  CP of rank 8 on 10^3, all at 40 dB; and a CP of rank 8 on 10^3 at 30 dB fitted at that rank
  (``min_rank = max_rank``: ``cp-fixed``), stopped in a poor minimum of ALS (a refit of such fixed
  ranks from random cores, tried as the ladder's first rung, rescued it but took a held-out
  ``cp-fixed`` fit from 0.013 to 0.10 from the truth, into a swamp: not kept; ranks at their caps
  climb no rung). Since f8cf3a5 a CP at ranks given also polishes a start from the unfoldings'
  leading singular vectors (tensorly's ``init="svd"``), kept where it fits closer and its
  components cancel no more (``random_restart`` turns it off too);
- ``heldout``: shapes, ranks, factor kinds (Gaussian: components of unequal strength; orthonormal:
  equal), seeds and noise levels (none, 30, 20, 10 dB) never looked at before this script ran;
  CP tensors of orders 3 and 4, matrices as ``"iA,jA->ij"``, a three-way CP spec, a chain spec,
  CP completions (40% observed) and CPs fitted at their true rank (``cp-fixed``, 6 seeds).

Errors are against the noiseless truth (every entry); "moved" counts fits whose error changed by
more than 1e-3 of itself (both under 1e-8: the same). Then the cost on pure noise, where the
second walk (which runs there: most of the data is unexplained) finds nothing.

Usage: python benchmarks/greedy_restart.py [--split both|tune|heldout]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_line, markdown_table, write_result  # noqa: E402

import tnmars  # noqa: E402

SNRS = (None, 30, 20, 10)
METHODS = {"before (random_restart=False)": {"random_restart": False}, "default": {}}


def _orthonormal(n: int, r: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return q


def truth_of(kind: str, shape: tuple[int, ...], rank: int, factors: str, seed: int) -> tuple[np.ndarray, str]:
    """The noiseless tensor and the network spec to fit it with."""
    rng = np.random.default_rng(seed)
    f = [(_orthonormal(n, rank, rng) if factors == "orth" else rng.standard_normal((n, rank))) for n in shape]
    if kind == "chain":  # a TT-like chain of two bonds, both at ``rank``, random cores
        net = tnmars.Network("iA,jAB,kB->ijk", shape=shape, ranks={"A": rank, "B": rank}, seed=seed)
        return np.asarray(net.to_tensor()), "iA,jAB,kB->ijk"
    x = np.einsum(",".join(f"{m}r" for m in "ijkl"[:len(shape)]) + "->" + "ijkl"[:len(shape)], *f)
    spec = {"cp": "cp", "cp-completion": "cp", "cp-fixed": "cp", "matrix": "iA,jA->ij", "cp-spec": "iA,jA,kA->ijk"}[kind]
    return x, spec


CASES = [
    # (split, kind, shape, rank, factors, seeds, snrs)
    ("tune", "matrix", (80, 60), 10, "orth", (7,), (40,)),
    ("tune", "matrix", (40, 40), 8, "orth", (7,), (40,)),
    ("tune", "cp", (10, 10, 10), 8, "orth", (7,), (40,)),
    ("tune", "cp-fixed", (10, 10, 10), 8, "gauss", (3,), (30,)),
    *[("heldout", kind, shape, rank, fac, (21, 22), SNRS)
      for kind, shape, rank in [("cp", (12, 13, 14), 6), ("cp", (9, 10, 11), 5), ("cp", (8, 9, 10, 7), 4),
                                ("cp", (20, 18, 16), 10), ("matrix", (50, 40), 7), ("matrix", (60, 60), 5),
                                ("cp-spec", (6, 7, 40), 6), ("cp-completion", (14, 15, 16), 5)]
      for fac in ("gauss", "orth")],
    *[("heldout", "chain", (7, 8, 9), rank, "gauss", (21, 22), SNRS) for rank in (3, 5)],
    *[("heldout", "cp-fixed", shape, rank, "gauss", tuple(range(21, 27)), (None, 30, 20))
      for shape, rank in [((10, 11, 12), 7), ((9, 9, 9), 6), ((12, 12, 12), 9)]],
]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(split: str) -> list[dict]:
    rows = []
    for case_split, kind, shape, rank, factors, seeds, snrs in CASES:
        if split not in ("both", case_split):
            continue
        for seed in seeds:
            x, spec = truth_of(kind, shape, rank, factors, seed)
            for snr in snrs:
                rng = np.random.default_rng([seed, 7919])
                noise = rng.standard_normal(x.shape)
                scale = 0.0 if snr is None else np.linalg.norm(x) / np.linalg.norm(noise) * 10 ** (-snr / 20)
                y = x + scale * noise
                observed = rng.random(x.shape) < 0.4 if kind == "cp-completion" else None
                row = {"split": case_split, "case": f"{kind} {'x'.join(map(str, shape))} R{rank} {factors}",
                       "seed": seed, "snr": snr, "true": rank}
                for name, selection in METHODS.items():
                    t0 = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        fixed = {"max_rank": rank, "min_rank": rank} if kind == "cp-fixed" else {}
                        res = tnmars.fit(y, spec, observed=observed, seed=0, progress=False, selection=selection,
                                         **fixed)
                    est = np.asarray(res.network.to_tensor())
                    row[name] = {"seconds": time.perf_counter() - t0, "ranks": list(res.ranks),
                                 "error": float(np.linalg.norm(est - x) / np.linalg.norm(x)),
                                 "warned": len(caught)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


NOISE_CASES = [("cp", (60, 60, 60)), ("iA,jA->ij", (400, 400)), ("cp", (30, 30, 30))]


def noise_cost(repeats: int = 3) -> list[dict]:
    """Pure noise, where the second walk finds nothing and only costs: the median of ``repeats``
    fits of each method, alternating."""
    out = []
    for spec, shape in NOISE_CASES:
        y = np.random.default_rng(0).standard_normal(shape)
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        ranks = {}
        for _ in range(repeats):
            for name, selection in METHODS.items():
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = tnmars.fit(y, spec, seed=0, progress=False, selection=selection)
                times[name].append(time.perf_counter() - t0)
                ranks[name] = list(res.ranks)
        out.append({"case": f"{spec} {'x'.join(map(str, shape))} noise", "ranks": ranks,
                    "seconds": {name: statistics.median(t) for name, t in times.items()}})
        print(json.dumps(out[-1]), flush=True)
    return out


def closer_farther(rows: list[dict], before: str, after: str) -> tuple[int, int]:
    """Fits whose error against the truth the method ``after`` took down (up) by more than 1e-3
    of itself against ``before`` (both under 1e-8: the same)."""
    closer = sum(r[after]["error"] < r[before]["error"] * (1 - 1e-3) and r[before]["error"] > 1e-8 for r in rows)
    farther = sum(r[after]["error"] > r[before]["error"] * (1 + 1e-3) and r[after]["error"] > 1e-8 for r in rows)
    return closer, farther


def moved_fits(rows: list[dict], before: str, after: str) -> list[dict]:
    """The rows whose error moved by more than 1e-3 of itself between the two methods."""
    return [r for r in rows if abs(r[after]["error"] - r[before]["error"]) > 1e-3 * max(r[before]["error"], 1e-8)
            and max(r[after]["error"], r[before]["error"]) > 1e-8]


def time_line(rows: list[dict], before: str, after: str) -> str:
    """The time of ``after`` against ``before``: per fit (median, largest) and in all."""
    ratios = [r[after]["seconds"] / r[before]["seconds"] for r in rows]
    return (f"Time of the default against before, per fit: median {statistics.median(ratios):.2f}x, "
            f"largest {max(ratios):.2f}x; in all "
            f"{sum(r[after]['seconds'] for r in rows) / sum(r[before]['seconds'] for r in rows):.2f}x.")


def report(rows: list[dict], command: str, noise: list[dict]) -> str:
    before, after = METHODS
    lines = [f"# Second walk for fits grown from rank 1\n\nCommand: `{command}` at {_commit()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  \nMachine: {machine_line()}\n",
             __doc__.split("\n\n", 1)[1].split("Usage:")[0].strip(), ""]
    table = []
    for split in ("tune", "heldout"):
        sub = [r for r in rows if r["split"] == split]
        if not sub:
            continue
        closer, farther = closer_farther(sub, before, after)
        for name in METHODS:
            exact = sum(all(k == r["true"] for k in r[name]["ranks"]) for r in sub)
            poor = sum(r[name]["error"] > 0.3 for r in sub)
            table.append([split, name, len(sub), f"{exact}/{len(sub)}", poor,
                          f"{statistics.median(r[name]['error'] for r in sub):.3g}",
                          f"{sum(r[name]['seconds'] for r in sub):.1f}",
                          f"{closer} closer, {farther} farther" if name == after else ""])
    lines.append(markdown_table(["split", "method", "fits", "true ranks", "error > 0.3", "median error",
                                 "total seconds", "against before"], table))
    moved = moved_fits(rows, before, after)
    if moved:
        lines += ["", "## Fits that moved", "",
                  markdown_table(["split", "case", "seed", "snr", "ranks before", "error before", "ranks after",
                                  "error after", "time ratio"],
                                 [[r["split"], r["case"], r["seed"], "none" if r["snr"] is None else r["snr"],
                                   r[before]["ranks"], f"{r[before]['error']:.3g}", r[after]["ranks"],
                                   f"{r[after]['error']:.3g}",
                                   f"{r[after]['seconds'] / r[before]['seconds']:.2f}"] for r in moved])]
    lines += ["", "## Pure noise (the second walk's cost where it finds nothing; medians of 3, alternating)", "",
              markdown_table(["data", "ranks before", "ranks after", "seconds before", "seconds after", "ratio"],
                             [[n["case"], n["ranks"][before], n["ranks"][after], f"{n['seconds'][before]:.2f}",
                               f"{n['seconds'][after]:.2f}", f"{n['seconds'][after] / n['seconds'][before]:.2f}x"]
                              for n in noise])]
    lines += ["", time_line(rows, before, after)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="both", choices=("both", "tune", "heldout"))
    args = ap.parse_args()
    rows = run(args.split)
    noise = noise_cost()
    (Path(RESULTS) / "greedy_restart_rows.json").write_text(json.dumps({"rows": rows, "noise": noise}, indent=1))
    text = report(rows, "python benchmarks/greedy_restart.py" + ("" if args.split == "both" else f" --split {args.split}"),
                  noise)
    print(text)
    print("written:", write_result("greedy_restart.md", text))


if __name__ == "__main__":
    main()
