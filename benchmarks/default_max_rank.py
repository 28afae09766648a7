"""The default ``max_rank`` of ``tnmars.fit`` against the former default ``max(data.shape)``.

The Occam search's default cap is the largest uniform rank at which the network has at most
half as many degrees of freedom as observed entries (``tnmars.fitting.graph.judged_rank``), at
least ``max(shape)``; ``max(shape)`` alone capped tensors with small modes (a TT of 2^10 at rank
2). Each case is fitted twice with ``seed=0``: with ``max_rank=max(shape)`` (the former default,
passed explicitly) and with the default. Cases none of the change was tuned on: random TT and TR
networks on quantized shapes (2^8, 2^10, 3^6, 4^5), TT with a middle rank above the mode size
(10^4, 8^4), a tree spec, smooth functions on 2^10 grids, pure noise; noiseless and 20 dB.

Reported per case: ranks, relative error to the noiseless truth (to the data for pure noise),
parameters, seconds, warnings. Summary: how many fits are closer to the truth by 10% or more,
how many farther, and the total time of each.

Usage: python benchmarks/default_max_rank.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, markdown_table, write_result  # noqa: E402

import tnmars  # noqa: E402

TREE = "aA,AbB,BcCE,Cd,EeF,FfG,Gg"  # a tree over 7 modes (a chain with a branch)


def _network(kind: str, shape: tuple[int, ...], ranks, seed: int) -> tnmars.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ranks clipped to the feasible ones
        if kind == "tree":
            return tnmars.Network(TREE, shape=shape, ranks=dict(zip("ABCEFG", ranks)), seed=seed)
        return (tnmars.Network.tt if kind == "tt" else tnmars.Network.tr)(shape, ranks, seed=seed)


def cases():
    """(label, format or spec, data, truth or None)."""
    rng = np.random.default_rng(0)
    out = []
    for kind, shape, rank in [("tt", (2,) * 8, 4), ("tt", (2,) * 10, 4), ("tt", (2,) * 10, 6), ("tt", (3,) * 6, 6),
                              ("tt", (4,) * 5, 6), ("tr", (2,) * 8, 3), ("tr", (4,) * 5, 3),
                              ("tt", (10,) * 4, (5, 15, 5)), ("tt", (8,) * 4, (4, 12, 4)),
                              ("tree", (2, 3, 2, 4, 2, 3, 2), (2, 4, 3, 5, 4, 2))]:
        net = _network(kind, shape, rank, seed=0)
        truth = np.asarray(net.to_tensor(), dtype=np.float64)
        fmt = TREE if kind == "tree" else kind
        name = "x".join(map(str, shape)) if len(set(shape)) > 1 else f"{shape[0]}^{len(shape)}"
        for snr in (None, 20):
            noise = rng.standard_normal(truth.shape)
            data = truth if snr is None else truth + noise * np.linalg.norm(truth) / np.linalg.norm(noise) / 10 ** (snr / 20)
            out.append((f"{kind} {name} at {tuple(net.ranks)}, {'noiseless' if snr is None else f'{snr} dB'}",
                        fmt, data, truth))
    x = np.linspace(0, 1, 2**10)
    for label, f in [("3 Gaussians", sum(np.exp(-((x - c) / 0.05) ** 2) for c in (0.2, 0.5, 0.8))),
                     ("1/(1+x)", 1 / (1 + x))]:
        out.append((f"tt of {label} on 2^10 points, noiseless", "tt", f.reshape((2,) * 10), f.reshape((2,) * 10)))
    for shape, fmt in [((2,) * 10, "tt"), ((2,) * 10, "tr"), ((10,) * 4, "tt")]:
        name = f"{shape[0]}^{len(shape)}"
        out.append((f"{fmt} of pure noise {name}", fmt, rng.standard_normal(shape), None))
    return out


def _commit() -> str:
    """The checkout's commit, ``+changes`` when tnmars/ differs from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=root, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "tnmars"],
                               capture_output=True, text=True, cwd=root, check=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fit(data, fmt, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        res = tnmars.fit(data, fmt, seed=0, progress=False, **kw)
        seconds = time.perf_counter() - t
    return res, seconds, len(caught)


def main() -> None:
    rows, closer, farther, total = [], 0, 0, {"old": 0.0, "new": 0.0}
    for label, fmt, data, truth in cases():
        out = {}
        for tag, kw in (("old", {"max_rank": max(data.shape)}), ("new", {})):
            res, seconds, n_warn = fit(data, fmt, **kw)
            ref = data if truth is None else truth
            err = float(np.linalg.norm(np.asarray(res.network.to_tensor()) - ref) / np.linalg.norm(ref))
            out[tag] = (res, seconds, n_warn, err)
            total[tag] += seconds
        (r0, s0, w0, e0), (r1, s1, w1, e1) = out["old"], out["new"]
        closer += e1 < 0.9 * e0 - 1e-9
        farther += e1 > 1.1 * e0 + 1e-9
        rows.append([label, r0.ranks, f"{e0:.3g}", r0.network.num_params, f"{s0:.1f}", w0,
                     r1.ranks, f"{e1:.3g}", r1.network.num_params, f"{s1:.1f}", w1])
        print(label, r0.ranks, f"{e0:.3g}", "->", r1.ranks, f"{e1:.3g}", f"{s0:.1f}s -> {s1:.1f}s", flush=True)
    head = ["case", "former default: ranks", "error", "params", "s", "warnings",
            "default: ranks", "error", "params", "s", "warnings"]
    text = "\n".join([
        "# The default max_rank against max(shape)",
        "",
        "Command: `python benchmarks/default_max_rank.py`  ",
        f"Code: tnmars at commit {_commit()}, run at {time.strftime('%H:%M', time.gmtime())} UTC  ",
        f"Machine: {machine_line()}",
        "",
        __doc__.split("Usage:")[0].strip(),
        "",
        f"Closer to the truth by 10% or more: {closer} of {len(rows)}; farther: {farther}. "
        f"Total time: {total['old']:.0f} s with max(shape), {total['new']:.0f} s with the default.",
        "",
        markdown_table(head, rows),
    ])
    print(text.splitlines()[-len(rows) - 4])
    write_result("default_max_rank.md", text)


if __name__ == "__main__":
    main()
