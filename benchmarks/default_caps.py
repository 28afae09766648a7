"""What walking past the default caps costs and gains: ``tnmars.fit`` without ``max_rank`` with
``selection={"widen_caps": False}`` (the search before it) and the default, side by side in one
process on the same data.

Without ``max_rank`` every bond of a format or spec is capped at one rank: the largest at which
every bond at once stays within the degrees of freedom the observations determine. A bond that
needs more while the others stay small (a tree's inner bond, the middle of a quantized TT)
stopped there, and the fit told the user to raise a ``max_rank`` they never gave. The default now
raises the cap of a bond that ends at it, as far as that limit allows with the others at their
selected ranks, and walks on. Cases:

- ``tune``: the outside probe's tree ``"aA,bB,ABC,CcD,dD"`` on 6^4 at (5, 5, 16, 5), noiseless
  (2026-12-03), looked at while the change was made;
- ``heldout``: never looked at before this script ran: TT of 2^8 at (2, 4, 6, 6, 6, 4, 2) and of
  2^10 at (2, 4, 6, 8, 8, 8, 6, 4, 2), the tree on 4x5x6x7 at (4, 5, 14, 6) and on 8^4 at
  (3, 3, 9, 3), a three-core tree ``"abX,cdY,XYe"`` on 4^5 at (14, 4), a ring 2^8 at ranks 6
  (the approximation guide's example of a ring under its default caps);
- ``control``: fits whose bonds end below their caps (TT 6^4, Tucker 10^3, TR 6x7x8, a CP spec),
  where nothing may change.

Two seeds, noise none, 30 and 20 dB. Errors are against the noiseless truth (every entry, the
truth at unit norm); "moved" counts fits whose error changed by more than 1e-3 of itself (both
under 1e-8: the same).

Usage: python benchmarks/default_caps.py [--split both|tune|heldout|control]
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
from greedy_restart import _commit, closer_farther, moved_fits, time_line  # noqa: E402

import tnmars  # noqa: E402

SNRS = (None, 30, 20)
METHODS = {"before (widen_caps=False)": {"widen_caps": False}, "default": {}}
TREE = "aA,bB,ABC,CcD,dD->abcd"
BINARY = "abX,cdY,XYe->abcde"
CASES = [
    # (split, spec, shape, ranks, seeds, snrs)
    ("tune", TREE, (6, 6, 6, 6), {"A": 5, "B": 5, "C": 16, "D": 5}, (0,), (None,)),
    *[("heldout", spec, shape, ranks, (11, 12), SNRS) for spec, shape, ranks in [
        ("tt", (2,) * 8, (2, 4, 6, 6, 6, 4, 2)), ("tt", (2,) * 10, (2, 4, 6, 8, 8, 8, 6, 4, 2)),
        (TREE, (4, 5, 6, 7), {"A": 4, "B": 5, "C": 14, "D": 6}), (TREE, (8, 8, 8, 8), {"A": 3, "B": 3, "C": 9, "D": 3}),
        (BINARY, (4,) * 5, {"X": 14, "Y": 4}), ("tr", (2,) * 8, (6,) * 8)]],
    *[("control", spec, shape, ranks, (11, 12), SNRS) for spec, shape, ranks in [
        ("tt", (6, 6, 6, 6), (3, 4, 3)), ("tucker", (10, 10, 10), (3, 4, 5)), ("tr", (6, 7, 8), (2, 3, 4)),
        ("iA,jA,kA->ijk", (8, 9, 10), {"A": 5})]],
]


def truth_of(spec: str, shape: tuple[int, ...], ranks, seed: int) -> tuple[np.ndarray, tnmars.Network]:
    """The noiseless tensor at unit norm, and its network (ranks clipped to the feasible)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (ranks clipped to what the cuts allow: said by Network)
        if spec in ("tt", "tucker", "tr"):
            net = getattr(tnmars.Network, spec)(shape, ranks, seed=seed)
        else:
            net = tnmars.Network(spec, shape=shape, ranks=ranks, seed=seed)
    x = np.asarray(net.to_tensor())
    return x / np.linalg.norm(x), net


def run(split: str) -> list[dict]:
    rows = []
    for case_split, spec, shape, ranks, seeds, snrs in CASES:
        if split not in ("both", case_split) and not (split == "both" and case_split == "control"):
            continue
        for seed in seeds:
            x, truth = truth_of(spec, shape, ranks, seed)
            for snr in snrs:
                noise = np.random.default_rng([seed, 77]).standard_normal(x.shape)
                y = x if snr is None else x + noise / np.linalg.norm(noise) * 10 ** (-snr / 20)
                row = {"split": case_split, "case": f"{spec} {'x'.join(map(str, shape))}", "seed": seed, "snr": snr,
                       "true": list(truth.ranks)}
                for name, selection in METHODS.items():
                    t0 = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        res = tnmars.fit(y, spec, seed=0, progress=False, selection=selection)
                    row[name] = {"seconds": time.perf_counter() - t0, "ranks": list(res.ranks),
                                 "error": float(np.linalg.norm(np.asarray(res.network.to_tensor()) - x)),
                                 "warnings": sorted({str(w.message).split(":")[1].strip()[:40] for w in caught
                                                     if issubclass(w.category, RuntimeWarning)})}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def report(rows: list[dict], command: str) -> str:
    before, after = METHODS
    lines = [f"# Walking past the default caps\n\nCommand: `{command}` at {_commit()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  \nMachine: {machine_line()}\n",
             __doc__.split("\n\n", 1)[1].split("Usage:")[0].strip(), ""]
    table = []
    for split in ("tune", "heldout", "control"):
        sub = [r for r in rows if r["split"] == split]
        if not sub:
            continue
        closer, farther = closer_farther(sub, before, after)
        for name in METHODS:
            exact = sum(r[name]["ranks"] == r["true"] for r in sub)
            table.append([split, name, len(sub), f"{exact}/{len(sub)}",
                          f"{statistics.median(r[name]['error'] for r in sub):.3g}",
                          f"{sum(r[name]['seconds'] for r in sub):.1f}",
                          f"{closer} closer, {farther} farther" if name == after else ""])
    lines.append(markdown_table(["split", "method", "fits", "true ranks", "median error", "total seconds",
                                 "against before"], table))
    moved = moved_fits(rows, before, after)
    if moved:
        lines += ["", "## Fits that moved", "",
                  markdown_table(["split", "case", "seed", "snr", "true", "ranks before", "error before",
                                  "ranks after", "error after", "warnings after", "time ratio"],
                                 [[r["split"], r["case"], r["seed"], "none" if r["snr"] is None else r["snr"], r["true"],
                                   r[before]["ranks"], f"{r[before]['error']:.3g}", r[after]["ranks"],
                                   f"{r[after]['error']:.3g}", "; ".join(r[after]["warnings"]) or "-",
                                   f"{r[after]['seconds'] / r[before]['seconds']:.2f}"] for r in moved])]
    lines += ["", time_line(rows, before, after)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="both", choices=("both", "tune", "heldout", "control"))
    args = ap.parse_args()
    rows = run(args.split)
    (Path(RESULTS) / "default_caps_rows.json").write_text(json.dumps({"rows": rows}, indent=1))
    text = report(rows, "python benchmarks/default_caps.py" + ("" if args.split == "both" else f" --split {args.split}"))
    print(text)
    print("written:", write_result("default_caps.md", text))


if __name__ == "__main__":
    main()
