"""Data far from zero: ``tnmars.fit`` fitting them both ways (as given and without their mean,
``tnmars.fitting.centring``) against the fit of the data as given alone, side by side in one
process on the same data.

The design was worked out on one case (a Tucker (3, 4, 2) on 12x14x10 with 1% noise, the
outside probe's); it is judged here on the random truths of ``heldout_random.py`` (TT, Tucker,
TR: random orders, shapes and ranks it never saw) plus each truth's mean times an offset, the
offset a multiple of the truth's spread (its standard deviation), at 20 dB and noiseless. The
reference for each truth is the fit of the same data plus an offset of 10 spreads (close to
zero, where the data as given lose nothing): its error against the noiseless truth, and its
ranks. Reported per format and offset: the median error against the truth's deviations from
their mean of each way, how many fits stay within 1.5x the reference's error (plus 1e-3), how
many select the reference's ranks, and the time ratio.

Usage: python benchmarks/far_from_zero.py [--seeds 0-12] [--offsets 1e3,1e5,1e7,1e9]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_line, markdown_table, write_result  # noqa: E402
from heldout_random import _commit, noisy, truth_of  # noqa: E402

import tnmars  # noqa: E402
from tnmars.fitting import centring  # noqa: E402

NEAR = 10.0  # the reference's offset, in spreads


def fit(y: np.ndarray, fmt: str, both_ways: bool, observed: np.ndarray | None = None
        ) -> tuple[tnmars.FitResult, float]:
    token = centring.CENTRING.set(both_ways)
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = tnmars.fit(y, fmt, seed=0, progress=False, observed=observed)
        return res, time.perf_counter() - t0
    finally:
        centring.CENTRING.reset(token)


def error(res: tnmars.FitResult, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """Against the truth's deviations from its mean (a completion: on its missing entries)."""
    diff = np.asarray(res.network.to_tensor()) - truth
    deviations = truth - truth.mean()
    if where is not None:
        diff, deviations = diff[where], deviations[where]
    return float(np.linalg.norm(diff) / np.linalg.norm(deviations))


def table_of(rows: list[dict], formats: list[str], offsets: list[float]) -> tuple[list[list[str]], list[str]]:
    """Per format and offset: each way's median error, fits within 1.5x the reference's error,
    fits at the reference's ranks; how many fits the two ways put more than 10% apart (closer
    or farther both ways), how many kept the fit without the mean, and the median time ratio."""
    table = []
    for fmt in formats:
        mine = [r for r in rows if r["format"] == fmt]
        if not mine:
            continue
        for offset in offsets:
            cells = [f"{fmt}", f"{offset:g}", str(len(mine))]
            for name in ("as_given", "both_ways"):
                runs = [r[f"{offset:g}/{name}"] for r in mine]
                close = sum(run["error"] <= 1.5 * r["reference"]["error"] + 1e-3 for run, r in zip(runs, mine))
                same = sum(run["ranks"] == r["reference"]["ranks"] for run, r in zip(runs, mine))
                cells += [f"{statistics.median(run['error'] for run in runs):.3g}", f"{close}", f"{same}"]
            pairs = [(r[f"{offset:g}/as_given"]["error"], r[f"{offset:g}/both_ways"]["error"]) for r in mine]
            closer = sum(b < a / 1.1 - 1e-4 for a, b in pairs)
            farther = sum(b > a * 1.1 + 1e-4 for a, b in pairs)
            kept = sum(r[f"{offset:g}/both_ways"]["without_mean"] for r in mine)
            ratio = statistics.median(r[f"{offset:g}/both_ways"]["seconds"] / r[f"{offset:g}/as_given"]["seconds"]
                                      for r in mine)
            cells += [f"{closer} / {farther}", str(kept), f"{ratio:.2f}x"]
            table.append(cells)
    header = ["format", "offset (spreads)", "fits", "as given: median error", "within 1.5x ref", "ref ranks",
              "both ways: median error", "within 1.5x ref", "ref ranks", "both ways closer / farther (10%)",
              "kept without mean", "time ratio"]
    return table, header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-12", help="a range lo-hi (hi excluded) of heldout_random's truths")
    ap.add_argument("--offsets", default="1e3,1e5,1e7,1e9", help="offsets in spreads of the truth")
    ap.add_argument("--formats", default="tucker,tt,tr")
    ap.add_argument("--observed", type=float, default=None,
                    help="completions: the share of entries observed (errors on the missing ones)")
    ap.add_argument("--centre-from", type=float, default=None,
                    help="the threshold of fitting both ways (CENTRE_FROM, or COMPLETION_CENTRE_FROM with "
                         "--observed), to tune it")
    ap.add_argument("--max-entries", type=int, default=None,
                    help="skip truths with more entries (completions of tens of thousands take minutes a fit)")
    ap.add_argument("--from-rows", default=None,
                    help="only the table, from the JSON lines a run printed (one row per line)")
    args = ap.parse_args()
    if args.centre_from is not None:
        name = "COMPLETION_CENTRE_FROM" if args.observed else "CENTRE_FROM"
        setattr(centring, name, args.centre_from)
    lo, hi = (int(v) for v in args.seeds.split("-"))
    offsets = [float(v) for v in args.offsets.split(",")]
    rows = [] if args.from_rows is None else [json.loads(line) for line in Path(args.from_rows).read_text().splitlines()
                                              if line.startswith("{")]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for fmt in args.formats.split(",") if args.from_rows is None else ():
        for seed in range(lo, hi):
            x = np.asarray(truth_of(fmt, seed).to_tensor(), dtype=np.float64)
            if args.max_entries is not None and x.size > args.max_entries:
                continue
            spread = float(x.std())
            for snr in (20.0, None):
                y = noisy(x, snr, seed)
                observed = missing = None
                if args.observed is not None:
                    observed = np.random.default_rng(60_000 + seed).random(x.shape) < args.observed
                    missing = ~observed
                near, _ = fit(y + NEAR * spread, fmt, False, observed)
                row = {"format": fmt, "seed": seed, "snr": snr, "shape": list(x.shape),
                       "reference": {"ranks": list(near.ranks), "error": error(near, x + NEAR * spread, missing)}}
                for offset in offsets:
                    shift = offset * spread
                    for name, both in (("as_given", False), ("both_ways", True)):
                        res, seconds = fit(y + shift, fmt, both, observed)
                        row[f"{offset:g}/{name}"] = {
                            "ranks": list(res.ranks), "error": error(res, x + shift, missing), "seconds": seconds,
                            "without_mean": bool(res.settings.get("offset", {}).get("fitted_without_mean", False))}
                rows.append(row)
                print(json.dumps(row), flush=True)
    stem = "far_from_zero" if args.observed is None else f"far_from_zero_completion{args.observed:g}"
    if args.centre_from is not None:
        stem += f"_from{args.centre_from:g}"
    if args.from_rows is None:
        (Path(RESULTS) / f"{stem}_rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    table, header = table_of(rows, args.formats.split(","), offsets)
    text = (f"# Data far from zero: fitted both ways against as given\n\n"
            f"Command: `python benchmarks/far_from_zero.py {' '.join(sys.argv[1:])}`\n\n"
            f"Date: {started}; code: {_commit()}\n\nMachine: {machine_line()}\n\n"
            f"{__doc__.split(chr(10) + chr(10), 1)[1].split('Usage:')[0].strip()}\n\n"
            f"Each format: seeds {lo}-{hi - 1} of `heldout_random.truth_of`, at 20 dB and noiseless "
            f"(two fits per seed and offset). Errors: against the noiseless truth plus the offset, over the "
            f"truth's deviations from its mean"
            + ("" if args.observed is None else
               f"; completions: {args.observed:.0%} of the entries observed (drawn per seed), errors on the "
               "missing entries")
            + ("" if args.centre_from is None else f"; fitted both ways from {args.centre_from:g} spreads")
            + ("" if args.max_entries is None else f"; truths of at most {args.max_entries:,} entries")
            + ".\n\n" + markdown_table(header, table))
    print(text)
    write_result(f"{stem}.md", text)


if __name__ == "__main__":
    main()
