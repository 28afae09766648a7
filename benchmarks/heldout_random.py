"""Held-out random truths: the default ``tnmars.fit`` on TR, TT and Tucker networks drawn at
random (orders, mode sizes and ranks), noiseless and at 20 dB, none of them used for tuning.

What it is for: a change to the fit engine (ALS, the walk, restarts) is judged on many cases it
was not made on. Every fit's ranks and error against the noiseless truth are saved, so that two
codes (or two machines) can be compared fit by fit with ``--compare``::

    python benchmarks/heldout_random.py                            # all formats, default seeds
    python benchmarks/heldout_random.py --formats tr --seeds 0-30  # a subset
    python benchmarks/heldout_random.py --report --compare other_rows.json

The truths: TR of order 3-5, modes 4-7, ranks 2-5; TT of order 4-8, modes 2-5, ranks 2-5
(clipped to what each bond can use); Tucker of order 3-5, modes 5-11, ranks 2-5; ``trc``: TR
completions, TR truths of order 3-4, modes 6-11 and ranks 2-4 with 30-90% of their entries observed;
``tuc``: Tucker completions, Tucker truths of order 3-4, modes 8-18 and ranks 2-5 with 10-50% of their
entries observed; ``ttc``: TT completions, TT truths of order 4-6 (modes 5-9 at order 4, 4-7 at 5,
3-6 at 6) and ranks 2-5 with 15-50% of their entries observed (for all three, the error is against
the truth over every entry). Noise at 20 dB is Gaussian with that
signal-to-noise ratio per entry.
"""
from __future__ import annotations

import argparse
import json
import math
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

ROWS = Path(RESULTS) / "heldout_random_rows.json"
FORMATS = ("tr", "tt", "tucker", "trc", "tuc", "ttc")
DEFAULT_SEEDS = {"tr": range(0, 130), "tt": range(0, 100), "tucker": range(0, 100), "trc": range(0, 60),
                 "tuc": range(0, 60), "ttc": range(0, 60)}
SNRS = (None, 20)
#: two fits are the same when their ranks agree and their errors differ by less than this share
SAME = 1e-3


def truth_of(fmt: str, seed: int) -> tnmars.Network:
    rng = np.random.default_rng({"tr": 10_000, "tt": 20_000, "tucker": 30_000, "trc": 40_000, "tuc": 60_000,
                                 "ttc": 80_000}[fmt]
                                + seed)
    if fmt == "tuc":
        order = int(rng.integers(3, 5))
        shape = tuple(int(n) for n in rng.integers(8, 19, size=order))
        ranks = tuple(int(r) for r in rng.integers(2, 6, size=order))
        with warnings.catch_warnings():  # (a Tucker rank past the product of the others is clipped)
            warnings.simplefilter("ignore")
            return tnmars.Network.tucker(shape, ranks, seed=seed)
    if fmt == "ttc":
        order = int(rng.integers(4, 7))
        low, high = {4: (5, 9), 5: (4, 7), 6: (3, 6)}[order]
        shape = tuple(int(n) for n in rng.integers(low, high + 1, size=order))
        ranks = tuple(int(r) for r in rng.integers(2, 6, size=order - 1))
        with warnings.catch_warnings():  # (ranks past what a bond can use are clipped)
            warnings.simplefilter("ignore")
            return tnmars.Network.tt(shape, ranks, seed=seed)
    if fmt == "trc":
        order = int(rng.integers(3, 5))
        shape = tuple(int(n) for n in rng.integers(6, 12, size=order))
        return tnmars.Network.tr(shape, tuple(int(r) for r in rng.integers(2, 5, size=order)), seed=seed)
    if fmt == "tr":
        order = int(rng.integers(3, 6))
        shape = tuple(int(n) for n in rng.integers(4, 8, size=order))
        return tnmars.Network.tr(shape, tuple(int(r) for r in rng.integers(2, 6, size=order)), seed=seed)
    if fmt == "tt":
        order = int(rng.integers(4, 9))
        shape = tuple(int(n) for n in rng.integers(2, 6, size=order))
        ranks = tuple(int(r) for r in rng.integers(2, 6, size=order - 1))
    else:
        order = int(rng.integers(3, 6))
        shape = tuple(int(n) for n in rng.integers(5, 12, size=order))
        ranks = tuple(int(r) for r in rng.integers(2, 6, size=order))
    with warnings.catch_warnings():  # ranks past what a bond can use are clipped (the truth is not padded)
        warnings.simplefilter("ignore")
        return (tnmars.Network.tt if fmt == "tt" else tnmars.Network.tucker)(shape, ranks, seed=seed)


def noisy(x: np.ndarray, snr: float | None, seed: int) -> np.ndarray:
    if snr is None:
        return x
    noise = np.random.default_rng(seed + 7).standard_normal(x.shape)
    return x + noise * (np.linalg.norm(x) / math.sqrt(x.size) / 10 ** (snr / 20))


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "tnmars"],
                               capture_output=True, text=True, cwd=root, check=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def observed_of(fmt: str, seed: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The observed entries of a completion: a share drawn in [0.3, 0.9] (``trc``), [0.1, 0.5] (``tuc``),
    [0.15, 0.5] (``ttc``)."""
    if fmt == "trc":
        rng = np.random.default_rng(50_000 + seed)
        return rng.random(shape) < rng.uniform(0.3, 0.9)
    if fmt == "tuc":
        rng = np.random.default_rng(70_000 + seed)
        return rng.random(shape) < rng.uniform(0.1, 0.5)
    if fmt == "ttc":
        rng = np.random.default_rng(90_000 + seed)
        return rng.random(shape) < rng.uniform(0.15, 0.5)
    return None


def run(fmt: str, seed: int, snr: float | None) -> dict:
    truth = truth_of(fmt, seed)
    x = np.asarray(truth.to_tensor())
    observed = observed_of(fmt, seed, x.shape)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = tnmars.fit(noisy(x, snr, seed), {"trc": "tr", "tuc": "tucker", "ttc": "tt"}.get(fmt, fmt), observed=observed, seed=0,
                         progress=False)
    seconds = time.perf_counter() - t0
    est = np.asarray(res.network.to_tensor())
    return {"format": fmt, "seed": seed, "snr": snr, "shape": list(truth.shape), "true": list(truth.ranks),
            "ranks": list(res.ranks), "truth_error": float(np.linalg.norm(est - x) / np.linalg.norm(x)),
            "error": float(res.relative_error), "params": int(res.num_params), "true_params": int(truth.num_params),
            "warnings": len(caught), "seconds": seconds, "commit": _commit()}


def _key(r: dict) -> tuple:
    return r["format"], r["seed"], r["snr"]


#: errors to the truth below this are exact for the comparison (noiseless fits reach 1e-10 to 1e-6)
EXACT = 1e-6


def compare(rows: list[dict], other: list[dict]) -> str:
    """Fit by fit: the same (ranks equal, errors within 0.1% or both under ``EXACT``: a noiseless
    fit's last digits move with any change of its refits), closer to the truth, or farther."""
    theirs = {_key(r): r for r in other}
    counts: dict[tuple, list[int]] = {}
    moved = []
    for r in rows:
        o = theirs.get(_key(r))
        if o is None:
            continue
        a, b = o["truth_error"], r["truth_error"]
        same = o["ranks"] == r["ranks"] and (abs(a - b) <= SAME * a + 1e-12 or max(a, b) < EXACT)
        verdict = 0 if same else 1 if b < a else 2
        counts.setdefault((r["format"], r["snr"]), [0, 0, 0])[verdict] += 1
        if not same:
            moved.append([r["format"], r["seed"], "none" if r["snr"] is None else f"{r['snr']} dB",
                          ",".join(map(str, r["true"])), ",".join(map(str, o["ranks"])), f"{a:.3g}",
                          ",".join(map(str, r["ranks"])), f"{b:.3g}", "closer" if verdict == 1 else "farther"])
    table = markdown_table(["format", "noise", "fits", "same", "closer to the truth", "farther"],
                           [[f, "none" if s is None else f"{s} dB", sum(c), *c]
                            for (f, s), c in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))])
    parts = [table]
    if moved:
        parts += ["", markdown_table(["format", "seed", "noise", "true ranks", "other ranks", "other error",
                                      "ranks", "error", ""], moved)]
    return "\n".join(parts)


#: a fit "far from the truth": its error against the truth above this, noiseless / at 20 dB (twice the noise)
FAR = {None: 0.01, 20: 0.2}


def determined(r: dict) -> bool:
    """Whether the truth has at most half as many degrees of freedom (parameters less each bond's
    ``r^2`` gauge) as there are observed entries: what the fit's criterion allows at most."""
    observed = observed_of(r["format"], r["seed"], tuple(r["shape"]))
    entries = math.prod(r["shape"]) if observed is None else int(observed.sum())
    return r["true_params"] - sum(k * k for k in r["true"]) <= entries / 2


def determined_table(rows: list[dict]) -> str:
    """The truths the data determine, alone: how many fits end far from them, and how many of those warned."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["format"], r["snr"]), []).append(r)
    body = []
    for (fmt, snr), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        sure = [r for r in rs if determined(r)]
        far = [r for r in sure if r["truth_error"] > FAR.get(snr, 0.2)]
        body.append([fmt, "none" if snr is None else f"{snr} dB", f"{len(sure)} of {len(rs)}",
                     sum(r["ranks"] == r["true"] for r in sure), len(far), sum(r["warnings"] == 0 for r in far),
                     ", ".join(f"{r['seed']} ({r['truth_error']:.2g})" for r in far) or "-"])
    return markdown_table(["format", "noise", "determined truths", "at the true ranks",
                           "far from the truth (error > 0.01 noiseless, > 0.2 at 20 dB)", "of them silent (no warning)",
                           "far: seed (error)"], body)


def report(rows: list[dict], command: str, other: list[dict] | None, other_name: str, note: str = "") -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["format"], r["snr"]), []).append(r)
    body = []
    for (fmt, snr), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        errors = [r["truth_error"] for r in rs]
        body.append([fmt, "none" if snr is None else f"{snr} dB", len(rs),
                     sum(r["ranks"] == r["true"] for r in rs), sum(r["params"] > r["true_params"] for r in rs),
                     sum(r["params"] < r["true_params"] for r in rs), f"{statistics.median(errors):.3g}",
                     f"{max(errors):.3g}", sum(r["warnings"] > 0 for r in rs),
                     f"{statistics.median(r['seconds'] for r in rs):.2f}"])
    commits = sorted({r["commit"] for r in rows})
    text = ["# Held-out random truths", "",
            f"Command: `{command}`  ", f"Code: tnmars at commit {', '.join(commits)}  ", f"Machine: {machine_line()}", "",
            (__doc__ or "").split("\n\n")[0].replace("\n", " "), "", *([note, ""] if note else []),
            markdown_table(["format", "noise", "fits", "true ranks", "larger than the truth", "smaller",
                            "median error to the truth", "worst", "fits that warned", "median seconds"], body),
            "", "### Truths the data determine", "",
            "Many drawn truths have more degrees of freedom than half their (observed) entries, the most the "
            "criterion allows, so no selector can be asked for them; among the others:", "", determined_table(rows)]
    if other is not None:
        text += ["", f"## Fit by fit against `{other_name}`", "",
                 f"Code there: {', '.join(sorted({r['commit'] for r in other}))}.", "", compare(rows, other)]
    return "\n".join(text) + "\n"


def _seeds(text: str | None, fmt: str) -> range:
    if not text:
        return DEFAULT_SEEDS[fmt]
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi) if hi else int(lo) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--seeds", help="a range such as 0-30 (default: TR 0-130, TT and Tucker 0-100, completions 0-60)")
    ap.add_argument("--report", action="store_true", help="rebuild the report from the saved rows")
    ap.add_argument("--compare", type=Path, help="rows of another run (another code or machine) to compare with")
    ap.add_argument("--note", default="", help="a paragraph for the report: how the rows were made")
    args = ap.parse_args()
    given = sys.argv[1:]
    shown = ["..." if k and given[k - 1] == "--note" else a for k, a in enumerate(given)]  # (the note is below)
    command = "python benchmarks/heldout_random.py " + " ".join(shown)
    saved = json.loads(ROWS.read_text()) if ROWS.exists() else []
    if not args.report:
        fresh = []
        for fmt in args.formats.split(","):
            if fmt not in FORMATS:
                raise SystemExit(f"unknown format {fmt!r}; choose among {FORMATS}")
            for seed in _seeds(args.seeds, fmt):
                for snr in SNRS:
                    row = run(fmt, seed, snr)
                    print(json.dumps(row), flush=True)
                    fresh.append(row)
        keys = {_key(r) for r in fresh}
        saved = [r for r in saved if _key(r) not in keys] + fresh
        ROWS.write_text(json.dumps(saved, indent=1))
    other = json.loads(args.compare.read_text()) if args.compare else None
    print(write_result("heldout_random.md", report(saved, command, other, args.compare.name if args.compare else "",
                                                   args.note)))


if __name__ == "__main__":
    main()
