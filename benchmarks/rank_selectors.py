# ruff: noqa: E402, I001  (the import path is set up first: see below)
"""tnmars.fit's rank selection against the classical selectors, family by family.

A seeded suite: Tucker (orders 3-5), TT (orders 4-7), TR (orders 4-5), CP with correlated
factors (congruence 0.6-0.9), Tucker completion (10/30/50% observed) and custom topologies
(trees, a loop, a 2x3 grid), each at no noise and 30 / 20 / 10 dB, 3 seeds. Every case
belongs to a split: ``tune`` (shapes, ranks and seeds looked at while tnmars's selection was
developed) or ``heldout`` (new shapes, ranks, orders, topologies and seeds, never looked at
before this benchmark ran). Both are reported.

Methods: ``tnmars`` (the default ``fit``), ``tnmars paper`` (``prior="bernoulli"``, the MARS
paper's objective; seed 0 of each case only, for time), the classical selectors of
``_baselines.py`` followed by the best tensorly fit at the ranks they choose, and the
``oracle``: the same fit at the true ranks. Errors are against the noiseless truth (over every
entry, the missing ones included); the ratio to the oracle's error floors both at 1e-6
(noiseless fits are exact to rounding). Times include selection and fit.

Usage:
  python benchmarks/rank_selectors.py --family all            # the whole suite (about an hour here)
  python benchmarks/rank_selectors.py --family tucker --quick # one seed, two noise levels
  python benchmarks/rank_selectors.py --report                # rebuild the tables from the saved rows
  python benchmarks/rank_selectors.py --speed                 # the time and memory section
  python benchmarks/rank_selectors.py --family tt --snr none  # only the noiseless cases

Rows are saved to benchmarks/results/rank_selectors_rows.json; the tables to rank_selectors.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

# this file's name is also the standard library's `selectors` (used by subprocess): keep its
# folder off the front of the import path, and reach the helpers beside it from the back
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(_HERE)] + [_HERE]

import argparse
import functools
import json
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import _baselines as B  # noqa: E402
from _common import machine_line, markdown_table, time_interleaved, write_result  # noqa: E402

import tnmars  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = RESULTS / "rank_selectors_rows.json"
SNRS = (None, 30, 20, 10)
SEEDS = {"tune": (0, 1, 2), "heldout": (100, 101, 102)}
FAMILIES = ("tucker", "tt", "tr", "cp", "completion", "custom")
#: the method name of the paper-objective rows (prior="bernoulli")
PAPER = "tnmars paper (bernoulli)"


@dataclass
class Case:
    family: str
    split: str
    name: str
    shape: tuple[int, ...]
    ranks: tuple[int, ...]
    max_rank: int
    spec: str | None = None            # custom topologies
    bonds: tuple[str, ...] = ()        # custom: bond names in the order of ``ranks``
    congruence: float = 0.0            # cp
    observed: float | None = None      # completion: observed fraction
    extra: dict = field(default_factory=dict)


CASES = [
    # ---- Tucker
    Case("tucker", "tune", "12x10x9x8 (2,3,4,5)", (12, 10, 9, 8), (2, 3, 4, 5), 8),
    Case("tucker", "tune", "20x18x16 (2,4,3)", (20, 18, 16), (2, 4, 3), 8),
    Case("tucker", "heldout", "16x15x14x13 (3,2,5,4)", (16, 15, 14, 13), (3, 2, 5, 4), 8),
    Case("tucker", "heldout", "10x9x8x8x7 (2,3,2,4,3)", (10, 9, 8, 8, 7), (2, 3, 2, 4, 3), 6),
    Case("tucker", "heldout", "24x20x18 (5,3,4)", (24, 20, 18), (5, 3, 4), 10),
    # ---- TT
    Case("tt", "tune", "6x7x8x7x6 (2,3,4,3)", (6, 7, 8, 7, 6), (2, 3, 4, 3), 8),
    Case("tt", "tune", "8x8x8x8 (2,4,3)", (8, 8, 8, 8), (2, 4, 3), 8),
    Case("tt", "heldout", "5x6x5x6x5x6 (2,3,3,4,2)", (5, 6, 5, 6, 5, 6), (2, 3, 3, 4, 2), 8),
    Case("tt", "heldout", "4x5x4x5x4x5x4 (2,3,4,4,3,2)", (4, 5, 4, 5, 4, 5, 4), (2, 3, 4, 4, 3, 2), 8),
    Case("tt", "heldout", "9x8x7x8 (3,5,2)", (9, 8, 7, 8), (3, 5, 2), 8),
    # ---- TR (ranks[k]: core k's left rank, as Network.tr reads them since a78eee4; before, the same tuples
    # were read around the ring, bond k joining cores k and k+1: the tune cases' data changed with it)
    Case("tr", "tune", "6x7x8x7 (2,3,4,3)", (6, 7, 8, 7), (2, 3, 4, 3), 6),
    Case("tr", "tune", "8x8x8x8 (2,3,4,3)", (8, 8, 8, 8), (2, 3, 4, 3), 6),
    Case("tr", "heldout", "6x7x6x7x6 (2,3,2,3,2)", (6, 7, 6, 7, 6), (2, 3, 2, 3, 2), 6),
    # looked at after its first run (a 30 dB miss: fresh starts added): tuning since
    Case("tr", "tune", "7x8x9x8 (3,2,3,4)", (7, 8, 9, 8), (3, 2, 3, 4), 6),
    # looked at after its first run (TR-SVD starts in a poor minimum: random restarts added)
    Case("tr", "tune", "9x7x8x6 (2,4,3,3)", (9, 7, 8, 6), (2, 4, 3, 3), 6),
    Case("tr", "heldout", "10x8x9x7 (3,3,2,4)", (10, 8, 9, 7), (3, 3, 2, 4), 6),
    Case("tr", "heldout", "5x6x7x6x5 (3,2,4,3,2)", (5, 6, 7, 6, 5), (3, 2, 4, 3, 2), 6),
    # ---- CP with correlated factors
    Case("cp", "tune", "15x16x17 R4 congruence 0.7", (15, 16, 17), (4,), 8, congruence=0.7),
    Case("cp", "tune", "15x16x17 R4 congruence 0.9", (15, 16, 17), (4,), 8, congruence=0.9),
    Case("cp", "heldout", "20x18x16 R3 congruence 0.6", (20, 18, 16), (3,), 8, congruence=0.6),
    Case("cp", "heldout", "12x13x14x11 R5 congruence 0.8", (12, 13, 14, 11), (5,), 8, congruence=0.8),
    # ---- Tucker completion
    *[Case("completion", "tune", f"20^3 (3,4,5) {int(f * 100)}% observed", (20, 20, 20), (3, 4, 5), 10, observed=f)
      for f in (0.1, 0.3, 0.5)],
    *[Case("completion", "heldout", f"18x16x14 (4,2,3) {int(f * 100)}% observed", (18, 16, 14), (4, 2, 3), 10,
           observed=f) for f in (0.1, 0.3, 0.5)],
    # ---- custom topologies
    Case("custom", "tune", "tree aA,AbB,Bc,AdC,Ce", (6, 7, 5, 6, 4), (3, 2, 2), 5, spec="aA,AbB,Bc,AdC,Ce->abcde",
         bonds=("A", "B", "C")),
    Case("custom", "tune", "loop aAD,AbB,BcC,CdD", (6, 7, 5, 6), (2, 3, 2, 3), 5, spec="aAD,AbB,BcC,CdD->abcd",
         bonds=("A", "B", "C", "D")),
    Case("custom", "heldout", "tree aA,AbBC,Bc,CdD,De", (5, 6, 7, 5, 6), (2, 3, 2, 3), 5,
         spec="aA,AbBC,Bc,CdD,De->abcde", bonds=("A", "B", "C", "D")),
    Case("custom", "heldout", "2x3 grid (PEPS-like)", (4, 5, 4, 4, 5, 4), (2, 3, 2, 2, 2, 3, 2), 4,
         spec="aAC,AbBD,BcE,CdF,DFeG,EGf->abcdef", bonds=("A", "B", "C", "D", "E", "F", "G")),
]


# ------------------------------------------------------------------------------ data
def truth_of(case: Case, seed: int) -> np.ndarray:
    if case.family in ("tucker", "completion"):
        rng = np.random.default_rng(seed)  # the paper's construction: core and factors N(0, 1)
        cores = [rng.standard_normal(case.ranks)] + [rng.standard_normal((n, r)) for n, r in zip(case.shape, case.ranks)]
        return tnmars.Network.tucker(case.shape, case.ranks).with_cores(cores).to_tensor()
    if case.family == "tt":
        return tnmars.Network.tt(case.shape, case.ranks, seed=seed).to_tensor()
    if case.family == "tr":
        return tnmars.Network.tr(case.shape, case.ranks, seed=seed).to_tensor()
    if case.family == "cp":
        rng = np.random.default_rng(seed)
        r = case.ranks[0]
        corr = (1 - case.congruence) * np.eye(r) + case.congruence * np.ones((r, r))
        chol = np.linalg.cholesky(corr)
        factors = [rng.standard_normal((n, r)) @ chol.T for n in case.shape]
        return tnmars.Network.cp(case.shape, r).with_cores(factors).to_tensor()
    return tnmars.Network(case.spec, shape=case.shape, ranks=dict(zip(case.bonds, case.ranks)), seed=seed).to_tensor()


def problem(case: Case, seed: int, snr: float | None):
    x = truth_of(case, seed)
    rng = np.random.default_rng(seed + 7919)
    noise = rng.standard_normal(x.shape)
    scale = 0.0 if snr is None else np.linalg.norm(x) / np.linalg.norm(noise) / 10 ** (snr / 20)
    y = x + scale * noise
    observed = None if case.observed is None else rng.random(x.shape) < case.observed
    sigma2 = float(scale**2)  # the true noise variance per entry
    return x, y, observed, sigma2


# ------------------------------------------------------------------------------ methods
def oracle(case: Case, y, observed, ranks):
    fam = case.family
    if fam in ("tucker", "completion"):
        return B.fit_tucker(y, ranks, observed)
    if fam == "tt":
        return B.fit_tt(y, ranks)
    if fam == "tr":
        return B.fit_tr(y, ranks)
    if fam == "cp":
        return B.fit_cp(y, ranks[0], observed)
    return B.fit_network(y, case.spec, case.shape, dict(zip(case.bonds, ranks)), observed)


def tnmars_method(case: Case, y, observed, **kw):
    network = case.family if case.family != "completion" else "tucker"
    if case.family == "custom":
        network = tnmars.Network(case.spec, shape=case.shape, ranks=case.max_rank, seed=0)
        res = tnmars.fit(y, network, observed=observed, progress=False, seed=0, **kw)
        ranks = tuple(res.ranks_by_bond[b] for b in case.bonds)
    else:
        res = tnmars.fit(y, network, max_rank=case.max_rank, observed=observed, progress=False, seed=0, **kw)
        ranks = tuple(res.ranks)
    return ranks, np.asarray(res.network.to_tensor())


def selectors_for(case: Case) -> dict[str, Callable]:
    """Classical selectors of this family: (y, observed, sigma2) -> ranks."""
    m = case.max_rank
    fam = case.family
    if fam == "tucker":
        return {"EVBMF per mode": lambda y, o, s2: B.tucker_evbmf(y, m),
                "MDL per mode": lambda y, o, s2: B.tucker_mdl(y, m),
                "HOSVD, true noise edge": lambda y, o, s2: B.tucker_noise_truncation(y, m, s2)}
    if fam == "tt":
        return {"EVBMF on TT-SVD": lambda y, o, s2: B.tt_evbmf(y, m),
                "MDL on TT-SVD": lambda y, o, s2: B.tt_mdl(y, m),
                "TT-SVD, true noise edge": lambda y, o, s2: B.tt_noise_truncation(y, m, s2)}
    if fam == "tr":
        return {"EVBMF on cuts": lambda y, o, s2: B.tr_evbmf(y, m),
                "MDL on cuts": lambda y, o, s2: B.tr_mdl(y, m)}
    if fam == "cp":
        return {"CV grid (parafac)": lambda y, o, s2: B.cp_cv_grid(y, m),
                "BCPF-style ARD": lambda y, o, s2: B.cp_ard(y, m)}
    if fam == "completion":
        return {"CV greedy (masked HOOI)": lambda y, o, s2: B.tucker_cv_greedy(y, o, m)}
    return {}


def run_case(case: Case, seed: int, snr, with_paper: bool) -> list[dict]:
    x, y, observed, sigma2 = problem(case, seed, snr)
    rows = []

    def record(method, ranks, est, seconds, **extra):
        rows.append({"family": case.family, "split": case.split, "case": case.name, "snr": snr, "seed": seed,
                     "method": method, "ranks": list(map(int, ranks)), "true": list(case.ranks),
                     "exact": tuple(ranks) == tuple(case.ranks), "rank_error": B.rank_error(ranks, case.ranks),
                     "error": B.relative(est, x), "seconds": seconds, "commit": _commit(), **extra})

    t0 = time.perf_counter()
    est = oracle(case, y, observed, case.ranks)
    record("oracle", case.ranks, est, time.perf_counter() - t0)
    t0 = time.perf_counter()
    ranks, est = tnmars_method(case, y, observed)
    seconds = time.perf_counter() - t0
    # the same ranks fitted by the reference fitter: tnmars's fit to the data must be as good
    ref = oracle(case, y, observed, ranks)
    record("tnmars", ranks, est, seconds, data_error=B.relative(est, y, observed),
           reference_data_error=B.relative(ref, y, observed))
    if with_paper:
        t0 = time.perf_counter()
        ranks, est = tnmars_method(case, y, observed, prior="bernoulli")
        record(PAPER, ranks, est, time.perf_counter() - t0)
    for name, select in selectors_for(case).items():
        t0 = time.perf_counter()
        ranks = select(y, observed, sigma2)
        est = oracle(case, y, observed, ranks)
        record(name, ranks, est, time.perf_counter() - t0)
    return rows


# ------------------------------------------------------------------------------ tables
def _ratio(a: float, b: float) -> float:
    return max(a, 1e-6) / max(b, 1e-6)


def summarise(rows: list[dict]) -> str:
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["family"], r["split"], r["case"], r["snr"], r["seed"]), {})[r["method"]] = r
    table = {}
    for key, methods in by_key.items():
        if "oracle" not in methods:
            continue
        o = methods["oracle"]
        for name, r in methods.items():
            if name == "oracle":
                continue
            t = table.setdefault((key[0], key[1], name), {"exact": [], "rank_error": [], "ratio": [], "time": []})
            t["exact"].append(r["exact"])
            t["rank_error"].append(r["rank_error"])
            t["ratio"].append(_ratio(r["error"], o["error"]))
            t["time"].append(r["seconds"] / max(o["seconds"], 1e-9))
    out = []
    header = ["family", "split", "method", "exact ranks", "mean rank error", "error / oracle (median)",
              "error <= 1.05x oracle", "time / oracle (median)"]
    body = []
    for fam in FAMILIES:
        for split in ("tune", "heldout"):
            names = sorted((k[2] for k in table if k[0] == fam and k[1] == split),
                           key=lambda n: (not n.startswith("tnmars"), n))
            for name in names:
                t = table[(fam, split, name)]
                n = len(t["exact"])
                body.append([fam, split, name, f"{sum(t['exact'])}/{n}", f"{np.mean(t['rank_error']):.2f}",
                             f"{statistics.median(t['ratio']):.3f}",
                             f"{sum(r <= 1.05 for r in t['ratio'])}/{n}", f"{statistics.median(t['time']):.1f}x"])
    out.append(markdown_table(header, body))
    fits = [r for r in rows if r["method"] == "tnmars" and "reference_data_error" in r]
    if fits:
        worst = max(_ratio(r["data_error"], r["reference_data_error"]) for r in fits)
        zero = sum(1 for r in fits if 0 in r["ranks"])
        out += ["", f"Every tnmars fit against the reference fitter at **tnmars's own ranks** (its error to the data, "
                    f"over the observed entries): worst ratio {worst:.4f} over {len(fits)} fits "
                    f"(1 = as good; errors floored at 1e-6); fits with a zero-rank bond: {zero}."]
    return "\n".join(out)


def per_noise(rows: list[dict]) -> str:
    """Exact-rank counts per family, method and noise level (both splits together)."""
    counts: dict[tuple, list] = {}
    for r in rows:
        if r["method"] == "oracle":
            continue
        counts.setdefault((r["family"], r["method"]), {}).setdefault(str(r["snr"]), []).append(r["exact"])
    header = ["family", "method"] + [("noiseless" if s is None else f"{s} dB") for s in SNRS]
    body = []
    for (fam, name), by in sorted(counts.items(), key=lambda kv: (FAMILIES.index(kv[0][0]),
                                                                   not kv[0][1].startswith("tnmars"), kv[0][1])):
        body.append([fam, name] + [f"{sum(by.get(str(s), []))}/{len(by.get(str(s), []))}" for s in SNRS])
    return markdown_table(header, body)


def report(rows: list[dict], command: str, speed: str | None, machine: str) -> str:
    text = [
        "# Rank selection against the classical selectors",
        "",
        f"Command: `{command}`  ",
        f"Code: {_code_line(rows)}  ",
        f"Machine: {machine}",
        "",
        __doc__.split("Usage:")[0].strip(),
        "",
        "## Exact ranks, rank error, error and time, per family and split",
        "",
        summarise(rows),
        "",
        "## Exact ranks per noise level (both splits)",
        "",
        per_noise(rows),
    ]
    if speed:
        text += ["", speed]
    return "\n".join(text)


def _code_line(rows: list[dict]) -> str:
    """Which commit ran each family (families may be re-run on later code)."""
    by_commit: dict[str, list[str]] = {}
    for fam in FAMILIES:
        for commit in sorted({r.get("commit", "unknown") for r in rows if r["family"] == fam}):
            by_commit.setdefault(commit, []).append(fam)
    return "tnmars at commit " + "; ".join(f"{c} ({', '.join(f)})" for c, f in by_commit.items())


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        # (from the repository's root: run from benchmarks/, the path "tnmars" matched nothing)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "tnmars"],
                               capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=10)
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------------------ speed and memory
def speed_section(repeats: int = 3) -> str:
    """Default fits of a noisy 32^4 Tucker (max rank 10) and an order-6 TT (size 8, max rank
    8) against tensorly at the true ranks, interleaved; peak memory by tracemalloc."""
    rng = np.random.default_rng(0)
    rows = []
    cases = []
    core = rng.standard_normal((3, 4, 5, 6))
    factors = [rng.standard_normal((32, r)) for r in (3, 4, 5, 6)]
    x = tnmars.Network.tucker((32,) * 4, (3, 4, 5, 6)).with_cores([core, *factors]).to_tensor()
    x = x + 0.1 * x.std() * rng.standard_normal(x.shape)
    cases.append(("Tucker 32^4, true (3,4,5,6), 20 dB, max rank 10", x, "tucker", 10, (3, 4, 5, 6),
                  lambda: B.fit_tucker(x, (3, 4, 5, 6))))
    t = tnmars.Network.tt((8,) * 6, (3, 5, 6, 5, 3), seed=1).to_tensor()
    t = t + 0.1 * t.std() * rng.standard_normal(t.shape)
    cases.append(("TT 8^6, true (3,5,6,5,3), 20 dB, max rank 8", t, "tt", 8, (3, 5, 6, 5, 3),
                  lambda: B.fit_tt(t, (3, 5, 6, 5, 3))))
    for name, data, fmt, m, _true, oracle_fit in cases:
        times = time_interleaved({
            "tnmars": lambda data=data, fmt=fmt, m=m: tnmars.fit(data, fmt, max_rank=m, progress=False, seed=0),
            "oracle": oracle_fit,
        }, repeats=repeats, warmup=1)
        res = tnmars.fit(data, fmt, max_rank=m, progress=False, seed=0)
        tracemalloc.start()
        tnmars.fit(data, fmt, max_rank=m, progress=False, seed=0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tracemalloc.start()
        oracle_fit()
        _, opeak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append([name, str(res.ranks), f"{times['tnmars']:.2f} s", f"{times['oracle']:.2f} s",
                     f"{times['tnmars'] / times['oracle']:.1f}x", f"{peak / data.nbytes:.2f}x",
                     f"{opeak / data.nbytes:.2f}x"])
    header = ["problem", "tnmars ranks", "tnmars (median)", "tensorly at the true ranks", "ratio",
              "tnmars peak memory / data", "tensorly peak memory / data"]
    return "\n".join([
        "## Time and memory of a default fit",
        "",
        f"Medians of {repeats} interleaved runs (after one warm-up) of `tnmars.fit(data, format, max_rank=...)` and of "
        "the tensorly fit at the true ranks (HOOI with SVD start; TT-SVD). Peak memory: the largest "
        "amount of memory allocated at once during the call (Python's tracemalloc, which sees NumPy's "
        "array buffers), over the data tensor's size; the data themselves are not counted.",
        "",
        markdown_table(header, rows),
    ])


# ------------------------------------------------------------------------------ main
def _snr_value(text: str) -> int | None:
    """A ``--snr`` entry: ``none`` (noiseless) or one of the suite's dB values."""
    value = None if text.strip().lower() == "none" else int(text)
    if value not in SNRS:
        raise SystemExit(f"--snr: {text!r} is not one of the suite's levels {['none' if v is None else v for v in SNRS]}")
    return value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="all", help="a family name, a comma list, or all")
    ap.add_argument("--split", default="both", choices=("tune", "heldout", "both"))
    ap.add_argument("--quick", action="store_true", help="one seed, noiseless and 20 dB only")
    ap.add_argument("--report", action="store_true", help="rebuild the tables from the saved rows")
    ap.add_argument("--speed", action="store_true", help="run the time and memory section too")
    ap.add_argument("--no-paper", action="store_true", help="skip the prior='bernoulli' rows")
    ap.add_argument("--snr", default=None, help="noise levels to run, a comma list of dB values and 'none' "
                    "(noiseless); default all")
    args = ap.parse_args(argv)
    chosen_snrs = None if args.snr is None else tuple(_snr_value(v) for v in args.snr.split(","))
    families = FAMILIES if args.family == "all" else tuple(args.family.split(","))
    saved = json.loads(ROWS.read_text()) if ROWS.exists() else {"rows": [], "speed": None, "commands": []}
    rows = saved["rows"]
    command = "python benchmarks/rank_selectors.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report:
        warnings.simplefilter("ignore")
        for case in CASES:
            if case.family not in families or (args.split != "both" and case.split != args.split):
                continue
            seeds = SEEDS[case.split][:1] if args.quick else SEEDS[case.split]
            snrs = (None, 20) if args.quick else SNRS
            if chosen_snrs is not None:
                snrs = tuple(v for v in snrs if v in chosen_snrs)
            # (--no-paper keeps the saved paper-objective rows: it re-runs the other methods only)
            rows = [r for r in rows if not (r["case"] == case.name and r["seed"] in seeds and r["snr"] in snrs
                                            and not (args.no_paper and r["method"] == PAPER))]
            for seed in seeds:
                for snr in snrs:
                    new = run_case(case, seed, snr, with_paper=not args.no_paper and seed == seeds[0])
                    rows += new
                    tn = next(r for r in new if r["method"] == "tnmars")
                    print(f"{case.family:10s} {case.name:34s} snr={snr} seed={seed}: tnmars {tuple(tn['ranks'])} "
                          f"(true {case.ranks}) err {tn['error']:.3g} in {tn['seconds']:.1f} s", flush=True)
                    saved["rows"] = rows
                    ROWS.write_text(json.dumps(saved, indent=0))
        saved["commands"] = sorted(set(saved.get("commands", [])) | {command})
    if args.speed:
        saved["speed"] = speed_section()
    if not args.report or args.speed:  # the machine of the last measurement, not of a --report
        saved["machine"] = machine_line()
        ROWS.write_text(json.dumps(saved, indent=0))
    text = report(rows, "; ".join(saved.get("commands", [command])), saved.get("speed"),
                  saved.get("machine", "(not recorded)"))
    print(text)
    write_result("rank_selectors.md", text)


if __name__ == "__main__":
    main()
