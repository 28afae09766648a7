"""How far a completion's cross-validated error is from its error at the missing entries.

``tnmars.fit`` cross-validates a completion (``settings["cross_validation"]``, the
``cross-validated`` line of its summary): refits without a random tenth of the observed
entries, scored on them (:func:`tnmars.fitting.diagnostics.held_out_errors`). The refits start
from the fit, which saw those entries, so the figure can lean optimistic. This benchmark
measures by how much, against the error at the entries that were never observed (``T``:
against the noisy data there; ``T0``: against the noiseless truth), and compares the refits'
start with others that do not know the left-out entries:

- ``W``: from the fit (what ``tnmars.fit`` does);
- ``P3``, ``P10``: from the fit's cores times ``1 + eps N(0, 1)`` entry by entry, eps 0.3 and 1;
- ``F``, ``F5``: from fresh random cores at the fit's ranks, with as many ALS sweeps and 5x.

Every method uses the same left-out entries. Cases: the held-out completions of
``heldout_random.py`` (TT, Tucker and TR, seeds 0-7, noiseless and 20 dB), the seeds whose
stored fits ended far from their truth, and a tree ``"ia,jb,kc,ld,abe,cdf,ef"`` on 8^4 at 10%
observed and 20 dB (an outside probe's case, 2026-12-04: its fit ended above the true ranks,
0.24 held out for 1.64 at its missing entries), with three other masks and at fixed true ranks.

    python benchmarks/completion_cv.py            # every case (about 6 minutes)
    python benchmarks/completion_cv.py --report   # the tables again from the saved rows
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout_random as held  # noqa: E402
from _common import RESULTS, machine_line, markdown_table, write_result  # noqa: E402

import tnmars  # noqa: E402
from tnmars.fitting.diagnostics import HOLDOUT_SHARE, HOLDOUT_SWEEPS, holdout_folds  # noqa: E402
from tnmars.fitting.solvers import FitData, als  # noqa: E402

ROWS = Path(RESULTS) / "completion_cv_rows.json"
FORMATS = {"ttc": "tt", "tuc": "tucker", "trc": "tr"}
#: seeds of heldout_random_rows.json whose completions ended far from the truth (poor fits)
FAR = {"tuc": (26, 28, 37, 41, 43, 51), "trc": (10, 15, 18, 25, 30, 37, 41, 56), "ttc": (46,)}
TREE_SPEC, TREE_SHAPE = "ia,jb,kc,ld,abe,cdf,ef", (8, 8, 8, 8)
TREE_RANKS = {"a": 2, "b": 3, "c": 3, "d": 2, "e": 3, "f": 3}
METHODS = ("W", "P3", "P10", "F", "F5")


def cases() -> list[tuple[str, int, float | None]]:
    out = [(fmt, seed, snr) for fmt in FORMATS for seed in range(8) for snr in (None, 20)]
    out += [(fmt, seed, snr) for fmt, seeds in FAR.items() for seed in seeds for snr in (None, 20)]
    out += [("tree", 0, 20), ("tree fixed", 0, 20)] + [("tree", s, 20) for s in (7, 8, 9)] + [("tree fixed", 9, 20)]
    return out


def build(name: str, seed: int, snr: float | None):
    """(truth, data, observed, network, fit options, true ranks) of a case."""
    if name in FORMATS:
        truth = held.truth_of(name, seed)
        x = np.asarray(truth.to_tensor(), dtype=np.float64)
        return x, held.noisy(x, snr, seed), held.observed_of(name, seed, x.shape), FORMATS[name], {}, truth.ranks
    x = np.asarray(tnmars.Network(TREE_SPEC, shape=TREE_SHAPE, ranks=TREE_RANKS, seed=1).to_tensor(), dtype=np.float64)
    noise = np.random.default_rng(101).standard_normal(x.shape)
    y = x + x.std() * 10 ** (-snr / 20) * noise
    if seed == 0:  # the probe's mask: the fourth draw of default_rng(7), after three of its other cases
        rng = np.random.default_rng(7)
        for shape in ((5, 6, 5, 5, 6, 5), (5, 6, 5, 5, 6, 5), TREE_SHAPE):
            rng.random(shape)
        observed = rng.random(TREE_SHAPE) < 0.1
    else:
        observed = np.random.default_rng(seed).random(TREE_SHAPE) < 0.1
    options = {"max_rank": TREE_RANKS, "min_rank": TREE_RANKS} if name == "tree fixed" else {"max_rank": 6}
    return x, y, observed, TREE_SPEC, options, tuple(TREE_RANKS.values())


def _relative(estimate, target, where, centre) -> float:
    den = float(np.linalg.norm(target[where] - centre))
    return float(np.linalg.norm(estimate[where] - target[where])) / den if den > 0 else float("nan")


def refit_errors(net: tnmars.Network, y: np.ndarray, observed: np.ndarray, start, sweeps: int) -> list[float]:
    """``held_out_errors``'s folds (the same left-out entries, seed 0), each refit from
    ``start(fold, net)``."""
    data = FitData.from_arrays(y, observed)
    where = np.flatnonzero(observed)
    values = np.asarray(data.y)
    rng = np.random.default_rng(0)
    errors = []
    for fold in range(holdout_folds(data.n_obs, HOLDOUT_SHARE)):
        left_out = np.zeros(observed.shape, dtype=bool)
        left_out.flat[rng.choice(where, int(HOLDOUT_SHARE * where.size), replace=False)] = True
        refit, _ = als(start(fold, net), FitData.from_arrays(data.y, observed & ~left_out), sweeps=sweeps)
        seen = values[observed & ~left_out]
        errors.append(_relative(np.asarray(refit.to_tensor()), values, left_out, seen.mean() if seen.size else 0.0))
    return errors


def _perturbed(eps: float):
    def start(fold: int, net: tnmars.Network) -> tnmars.Network:
        rng = np.random.default_rng(2000 + 97 * fold)
        return tnmars.Network(net.spec, cores=[np.asarray(c) * (1.0 + eps * rng.standard_normal(np.shape(c)))
                                               for c in net.cores])
    return start


def _fresh(fold: int, net: tnmars.Network) -> tnmars.Network:
    return tnmars.Network(net.spec, {**dict(zip(net.output, net.shape)), **net.bonds},
                          seed=np.random.default_rng(1000 + fold))


STARTS = {"W": (lambda fold, net: net, 1), "P3": (_perturbed(0.3), 1), "P10": (_perturbed(1.0), 1),
          "F": (_fresh, 1), "F5": (_fresh, 5)}


def run(name: str, seed: int, snr: float | None) -> dict:
    x, y, observed, network, options, true_ranks = build(name, seed, snr)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tnmars.fit(y, network, observed=observed, seed=0, progress=False, **options)
    net = result.network
    estimate = np.asarray(net.to_tensor(), dtype=np.float64)
    centre = float(y[observed].mean())
    checked = result.settings.get("cross_validation") or {}
    row = {"case": name, "seed": seed, "snr": snr, "observed": float(observed.mean()), "ranks": list(net.ranks),
           "true": list(true_ranks), "fitted": _relative(estimate, y, observed, centre),
           "reported": checked.get("median_error"), "warnings": len(caught),
           "T": _relative(estimate, y, ~observed, centre), "T0": _relative(estimate, x, ~observed, centre),
           "fit_seconds": time.perf_counter() - t0}
    for method, (start, factor) in STARTS.items():
        t1 = time.perf_counter()
        errors = refit_errors(net, y, observed, start, factor * HOLDOUT_SWEEPS)
        row[method], row[method + "_worst"] = float(np.median(errors)), float(max(errors))
        row[method + "_seconds"] = time.perf_counter() - t1
    return row


def _group_rows(rows: list[dict]) -> list[list]:
    groups = (("good: T0 < 0.1", lambda r: r["T0"] < 0.1 and r["T"] > 1e-3),
              ("middling: 0.1 <= T0 < 0.6", lambda r: 0.1 <= r["T0"] < 0.6),
              ("poor: T0 >= 0.6", lambda r: r["T0"] >= 0.6))
    out = []
    for label, keep in groups:
        chosen = [r for r in rows if keep(r)]
        if not chosen:
            continue
        base = sum(r["W_seconds"] for r in chosen)
        for method in METHODS:
            ratios = [r[method] / r["T"] for r in chosen]
            out.append([label, len(chosen), method, f"{statistics.median(ratios):.2f}",
                        f"{min(ratios):.2g}-{max(ratios):.3g}", sum(q < 0.5 for q in ratios), sum(q > 2 for q in ratios),
                        sum(r[method] > 0.6 for r in chosen), sum(r["warnings"] > 0 for r in chosen),
                        f"{sum(r[method + '_seconds'] for r in chosen) / base:.1f}x"])
    return out


def report(rows: list[dict], command: str, note: str) -> str:
    exact = [r for r in rows if r["T"] <= 1e-3]
    lines = ["# Cross-validated error of a completion against its missing entries", "",
             f"Command: `{command}`  ", f"Code: tnmars at commit {held._commit()}  ", f"Machine: {machine_line()}", "",
             (__doc__ or "").split("\n\n")[0].replace("\n", " "), "", *([note, ""] if note else []),
             "Ratios are each method's median refit error over T, the error at the never-observed entries "
             "(against the noisy data there, as the refits score the observed ones); groups by T0, the same "
             f"error against the noiseless truth. {len(exact)} noiseless fits exact at their missing entries "
             "(T <= 1e-3; tnmars.fit skips their cross-validation) are left out of the ratios: on them "
             + ", ".join(f"{m} reads at most {max(r[m] for r in exact):.2g}" for m in METHODS) + ".", "",
             markdown_table(["completions", "fits", "refits from", "median ratio to T", "range", "below 0.5x",
                             "above 2x", "reading above 0.6", "fits that warned", "time / W"], _group_rows(rows)),
             "", "## Fit by fit", "",
             markdown_table(["case", "seed", "noise", "observed", "ranks (true)", "fitted", *METHODS, "T", "T0",
                             "tnmars.fit warned"],
                            [[r["case"], r["seed"], "none" if r["snr"] is None else f"{r['snr']} dB",
                              f"{r['observed']:.2f}", f"{tuple(r['ranks'])} ({tuple(r['true'])})", f"{r['fitted']:.3g}",
                              *(f"{r[m]:.3g}" for m in METHODS), f"{r['T']:.3g}", f"{r['T0']:.3g}", r["warnings"]]
                             for r in rows])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", action="store_true", help="rebuild the report from the saved rows")
    ap.add_argument("--note", default="", help="a paragraph for the report: how the rows were made")
    args = ap.parse_args()
    command = "python benchmarks/completion_cv.py" + (" --report" if args.report else "")
    if args.report:
        rows = json.loads(ROWS.read_text())
    else:
        rows = []
        for case in cases():
            row = run(*case)
            print(json.dumps(row), flush=True)
            rows.append(row)
        ROWS.write_text(json.dumps(rows, indent=1))
    print(write_result("completion_cv.md", report(rows, command, args.note)))


if __name__ == "__main__":
    main()
