"""What the ring restart's error threshold costs and gains: ``tnmars.fit(x, "tr")`` on the random
TR truths of ``heldout_random.py`` with ``RING_RESTART_FROM`` at each of two levels, side by side
in one process (same data, same seed, alternating), at one noise level.

The threshold (a ring fit above it walks again from random cores whatever its residual) was
chosen at 0.3 on noiseless held-out rings; noise near 10 dB puts a fit's error right at it,
which is where the second walk runs on noise and costs most. Reported: total time, the fits that
moved (closer to or farther from the noiseless truth), the slowest ratios.

Usage: python benchmarks/ring_restart_threshold.py [--snr 10] [--seeds 0-40] [--levels 0.5,0.3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_line, markdown_table, write_result  # noqa: E402
from heldout_random import _commit, noisy, truth_of  # noqa: E402

import tnmars  # noqa: E402
import tnmars.fitting.api as api  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snr", type=float, default=10.0)
    ap.add_argument("--seeds", default="0-40", help="a range lo-hi (hi excluded)")
    ap.add_argument("--levels", default="0.5,0.3", help="two thresholds: before, after")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.seeds.split("-"))
    levels = [float(v) for v in args.levels.split(",")]
    default = api.RING_RESTART_FROM
    rows = []
    try:
        for seed in range(lo, hi):
            truth = truth_of("tr", seed)
            x = np.asarray(truth.to_tensor())
            y = noisy(x, args.snr, seed)
            row = {"seed": seed, "shape": list(truth.shape), "true": list(truth.ranks)}
            for level in levels:
                api.RING_RESTART_FROM = level
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = tnmars.fit(y, "tr", seed=0, progress=False)
                est = np.asarray(res.network.to_tensor())
                row[str(level)] = {"seconds": time.perf_counter() - t0, "ranks": list(res.ranks),
                                   "error": float(res.relative_error),
                                   "truth_error": float(np.linalg.norm(est - x) / np.linalg.norm(x))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        api.RING_RESTART_FROM = default
    before, after = (str(v) for v in levels)
    moved, same = [], 0
    for r in rows:
        a, b = r[before], r[after]
        if a["ranks"] == b["ranks"] and abs(a["truth_error"] - b["truth_error"]) <= 1e-3 * a["truth_error"] + 1e-12:
            same += 1
            continue
        moved.append([r["seed"], ",".join(map(str, r["true"])), ",".join(map(str, a["ranks"])), f"{a['truth_error']:.3g}",
                      ",".join(map(str, b["ranks"])), f"{b['truth_error']:.3g}",
                      "closer" if b["truth_error"] < a["truth_error"] else "farther",
                      f"{a['seconds']:.1f} -> {b['seconds']:.1f}"])
    t_a = sum(r[before]["seconds"] for r in rows)
    t_b = sum(r[after]["seconds"] for r in rows)
    ratios = sorted((r[after]["seconds"] / r[before]["seconds"] for r in rows), reverse=True)
    errors = sorted(r[before]["error"] for r in rows)
    command = "python benchmarks/ring_restart_threshold.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        "# The ring restart's error threshold at one noise level", "",
        f"Command: `{command}`  ", f"Code: tnmars at commit {_commit()}  ", f"Machine: {machine_line()}", "",
        (__doc__ or "").split("\n\n")[0].replace("\n", " "), "",
        f"{len(rows)} TR truths (heldout_random seeds {lo}-{hi - 1}) at {args.snr:g} dB; median relative error of "
        f"the fits {errors[len(errors) // 2]:.3f}. Threshold {before} -> {after}: {same} fits the same, "
        f"{sum(m[6] == 'closer' for m in moved)} closer to the truth, {sum(m[6] == 'farther' for m in moved)} farther; "
        f"total time {t_a:.1f} s -> {t_b:.1f} s ({t_b / t_a:.2f}x); the largest per-fit ratios "
        + ", ".join(f"{v:.2f}x" for v in ratios[:5]) + ".", "",
        markdown_table(["seed", "true ranks", f"ranks at {before}", "error to the truth", f"ranks at {after}",
                        "error to the truth", "", "seconds"], moved) if moved else "No fit moved.", ""])
    write_result("ring_restart_threshold.md", text)
    (Path(RESULTS) / "ring_restart_threshold.json").write_text(json.dumps(rows, indent=0))
    print(text)


if __name__ == "__main__":
    main()
