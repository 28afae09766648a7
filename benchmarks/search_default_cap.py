"""The default edge cap of ``tnmars.search``: the largest mode size alone, against the default
(that cap, then, where it binds, a second search up to the largest unfolding rank).

Three variants per case, each one ``tnmars.search(y, seed=0)``:

* ``cap``: ``max_rank=max(shape)``, the only default before 2026-12-01;
* ``wider``: ``max_rank=largest_unfolding_rank(shape)`` from the start (the wider cap alone);
* ``default``: no ``max_rank``: the ``cap`` walks, and where an edge ends at that cap the
  ``wider`` walks too, the lowest objective of all winning. Its result is therefore the
  better of the two rows above where ``cap`` binds, ``cap`` otherwise (the report derives it
  so when a case has no ``default`` row, and checks that a measured one agrees).

Cases (truths noiseless unless said):

* ``recovery``: the 30 random topologies of ``structure_search.py --part recovery`` (orders
  4 / 5 / 6 at mode sizes 6 / 5 / 4, ranks 2-4, seeds 0, 1, 2, 100, 101, without noise and at
  20 dB): the benchmark's own distribution, where true ranks do not exceed the mode size
  (there that benchmark passes ``max_rank=6``; here the defaults are compared);
* ``small modes``: TT and TR truths with ranks above their mode sizes, two seeds each: TT 4^6 at
  (3, 5, 5, 5, 3), TT 2^8 at (2, 3, 4, 4, 4, 3, 2), TR 3^6 at rank 4, TT 2^7 at (2, 4, 6, 6, 4, 2)
  (more parameters than entries: no search can find it; a control);
* ``design``: seed 0 of TT 4^6 and TT 2^8, the two cases the change was made on (reported apart).

Usage:
  python benchmarks/search_default_cap.py --cases small --variants cap,default
  python benchmarks/search_default_cap.py --cases tt46:1,rec:4:0:none --variants default
  python benchmarks/search_default_cap.py --report

Rows: benchmarks/results/search_default_cap_rows.json (a row replaces one of the same case and
variant); report: search_default_cap.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine_line, markdown_table, write_result
from structure_search import noisy, random_topology, relative

import tnmars
from tnmars.fitting.structure import largest_unfolding_rank

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = RESULTS / "search_default_cap_rows.json"
RECOVERY = [f"rec:{order}:{seed}:{snr}" for order in (4, 5, 6) for seed in (0, 1, 2, 100, 101)
            for snr in ("none", "20")]
SMALL = [f"{kind}:{seed}" for seed in (1, 2) for kind in ("tt46", "q28", "tr36", "q27")]
DESIGN = ["tt46:0", "q28:0"]
#: kind -> (ranks of the chain or ring, mode size, ring)
SMALL_TRUTHS = {"tt46": ([1, 3, 5, 5, 5, 3, 1], 4, False), "q28": ([1, 2, 3, 4, 4, 4, 3, 2, 1], 2, False),
                "tr36": ([4] * 7, 3, True), "q27": ([1, 2, 4, 6, 6, 4, 2, 1], 2, False)}
VARIANTS = ("cap", "wider", "default")


def case_data(case: str) -> tuple[np.ndarray, np.ndarray, int, dict | None]:
    """(data, noiseless truth, the truth's parameters, its edges when it is a random topology)."""
    kind, *rest = case.split(":")
    if kind == "rec":
        order, seed = int(rest[0]), int(rest[1])
        snr = None if rest[2] == "none" else float(rest[2])
        truth, edges = random_topology(order, {4: 6, 5: 5, 6: 4}[order], seed)
        x = np.asarray(truth.to_tensor())
        return noisy(x, snr, seed), x, truth.num_params, edges
    ranks, n, ring = SMALL_TRUTHS[kind]
    rng = np.random.default_rng(int(rest[0]) + 5000)
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k in range(len(ranks) - 1)]
    x = cores[0]
    for core in cores[1:]:
        x = np.tensordot(x, core, axes=(-1, 0))
    if ring:
        x = np.trace(x, axis1=0, axis2=-1)
    x = x.reshape((n,) * (len(ranks) - 1))
    return x, x, sum(c.size for c in cores), None


def measure(case: str, variant: str) -> dict:
    y, x, true_params, true_edges = case_data(case)
    max_rank = {"cap": max(y.shape), "wider": largest_unfolding_rank(y.shape), "default": None}[variant]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = tnmars.search(y, max_rank=max_rank, seed=0, progress=False)
    return {"case": case, "variant": variant, "seconds": round(time.perf_counter() - t0, 1),
            "error": found.relative_error, "truth_error": relative(np.asarray(found.network.to_tensor()), x),
            "params": found.num_params, "true_params": true_params, "objective": found.fit.objective,
            "edges": [[i, j, r] for (i, j), r in found.edges.items()], "topology": found.topology,
            "max_edge": max(found.edges.values(), default=1), "cap": max(y.shape),
            "max_ranks_tried": found.fit.settings["search"]["max_ranks_tried"],
            "ranks_ok": None if true_edges is None else found.edges == true_edges}


def load_rows() -> list[dict]:
    return json.loads(ROWS.read_text()) if ROWS.exists() else []


def save_row(row: dict) -> None:
    rows = [r for r in load_rows() if (r["case"], r["variant"]) != (row["case"], row["variant"])]
    ROWS.write_text(json.dumps(rows + [row], indent=0) + "\n")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tnmars"], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------ report
def _group(case: str) -> str:
    return "design" if case in DESIGN else "recovery" if case.startswith("rec") else "small modes"


def _default_of(cap: dict, wider: dict) -> dict:
    """What the default computes from the two searches: ``wider`` where ``cap`` binds and wider
    has the lower objective (ties keep ``cap``, the first walks), ``cap`` otherwise."""
    binds = cap["max_edge"] >= cap["cap"]
    return wider if binds and wider["objective"] < cap["objective"] else cap


def _cell(r: dict) -> str:
    ok = "" if r.get("ranks_ok") is None else (" (true edges and ranks)" if r["ranks_ok"] else "")
    return f"{r['params']:,} p, error {r['error']:.2g}, to truth {r['truth_error']:.2g}{ok}"


def report() -> str:
    rows = {(r["case"], r["variant"]): r for r in load_rows()}
    cases = [c for c in DESIGN + SMALL + RECOVERY if (c, "cap") in rows and (c, "wider") in rows]
    lines = ["# `tnmars.search`: the default edge cap", "",
             "Command: `python benchmarks/search_default_cap.py --report` (rows from the commands listed below)", "",
             f"Report built: {machine_line()}. Times are wall-clock seconds of one thread on a shared machine, two "
             "searches at a time: compare them within this report only.", "",
             "What is compared: `tnmars.search(y, seed=0)` with every edge capped at the largest mode size (`cap`, "
             "the only default before 2026-12-01), with every edge capped at the largest unfolding rank from the start "
             "(`wider`), and the default since (the `cap` walks, then, where the network found has an edge at that "
             "cap, the `wider` walks; the lowest objective of all wins). Where a case has no measured `default` row, "
             "the default's result is read off the two others (the better objective where `cap` binds); measured "
             "`default` rows are compared with that reading in the last table.", ""]
    made = sorted({(r.get("command", ""), r.get("commit", ""), r.get("date", "")) for r in rows.values()})
    lines += ["Rows made by:", ""] + [f"- `{c}` at {m}, {d}" for c, m, d in made] + [""]
    summary = []
    for group in ("small modes", "recovery", "design"):
        cs = [c for c in cases if _group(c) == group]
        if not cs:
            continue
        binds = won = closer = farther = exact_cap = exact_default = true_cap = true_default = 0
        lower_wider = higher_wider = 0
        t_cap = t_default = t_wider = 0.0
        table = []
        for c in cs:
            cap, wider = rows[(c, "cap")], rows[(c, "wider")]
            default = _default_of(cap, wider)
            b = cap["max_edge"] >= cap["cap"]
            binds += b
            won += default is wider
            closer += default is wider and default["truth_error"] < 0.9 * cap["truth_error"]
            farther += default is wider and default["truth_error"] > 1.1 * cap["truth_error"]
            exact_cap += cap["truth_error"] < 1e-4
            exact_default += default["truth_error"] < 1e-4
            true_cap += bool(cap.get("ranks_ok"))
            true_default += bool(default.get("ranks_ok"))
            lower_wider += wider["objective"] < cap["objective"] - 1e-6
            higher_wider += wider["objective"] > cap["objective"] + 1e-6
            t_cap += cap["seconds"]
            t_wider += wider["seconds"]
            t_default += cap["seconds"] + (wider["seconds"] if b else 0.0)
            table.append([c, f"{cap['true_params']:,}", f"{cap['cap']} / {largest_unfolding_rank(_shape(c))}",
                          _cell(cap) + f", {cap['seconds']:.0f} s", "yes" if b else "no",
                          _cell(wider) + f", {wider['seconds']:.0f} s",
                          ("wider" if default is wider else "cap") + (f", {cap['seconds'] + wider['seconds']:.0f} s"
                                                                      if b else "")])
        n = len(cs)
        trues = f"; true edges and ranks {true_cap} -> {true_default}" if group == "recovery" else ""
        summary.append([group, n, binds, f"{won} ({closer} closer to the truth, {farther} farther)",
                        f"{exact_cap} -> {exact_default}{trues}", f"{lower_wider} / {higher_wider}",
                        f"{t_default / t_cap:.2f}x", f"{t_wider / t_cap:.2f}x"])
        lines += [f"## {group} ({n} cases)", "",
                  markdown_table(["case", "truth's parameters", "caps (mode size / unfolding)", "cap",
                                  "cap binds", "wider", "default takes"], table), ""]
    head = ["## Summary", "",
            "Closer / farther: error to the noiseless truth below 0.9x / above 1.1x that of `cap`. Exact: error to the "
            "truth below 1e-4. Lower / higher: how often `wider` alone ends at a lower / higher objective than `cap` "
            "(why the wider cap is a second search, not the default itself). Time: the 'default' column sums the two "
            "searches where `cap` binds.", "",
            markdown_table(["cases", "n", "cap binds", "default takes the wider walk", "exact fits, cap -> default",
                            "wider alone: lower / higher objective", "time, default / cap", "time, wider / cap"],
                           summary), ""]
    checks = []
    for c in DESIGN + SMALL + RECOVERY:
        if (c, "default") in rows and (c, "cap") in rows and (c, "wider") in rows:
            measured, read = rows[(c, "default")], _default_of(rows[(c, "cap")], rows[(c, "wider")])
            same = measured["edges"] == read["edges"] and abs(measured["objective"] - read["objective"]) <= 1e-6 * abs(
                read["objective"])
            checks.append([c, _cell(measured) + f", {measured['seconds']:.0f} s", _cell(read),
                           "yes" if same else "**no**"])
    tail = []
    if checks:
        tail = ["## Measured `default` rows against the reading", "",
                markdown_table(["case", "default, measured", "read off cap and wider", "same network"], checks), ""]
    i = lines.index(next(line for line in lines if line.startswith("## ")))
    return "\n".join(lines[:i] + head + lines[i:] + tail)


def _shape(case: str) -> tuple[int, ...]:
    kind, *rest = case.split(":")
    if kind == "rec":
        order = int(rest[0])
        return ({4: 6, 5: 5, 6: 4}[order],) * order
    ranks, n, _ = SMALL_TRUTHS[kind]
    return (n,) * (len(ranks) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="small", help="small, recovery, design, all, or a comma list of cases")
    parser.add_argument("--variants", default="cap,wider,default")
    parser.add_argument("--report", action="store_true", help="rebuild the report from the saved rows only")
    args = parser.parse_args()
    if not args.report:
        named = {"small": SMALL, "recovery": RECOVERY, "design": DESIGN, "all": DESIGN + SMALL + RECOVERY}
        cases = named.get(args.cases) or args.cases.split(",")
        variants = args.variants.split(",")
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            parser.error(f"unknown variant(s) {bad}; choose from {VARIANTS}")
        command = "python benchmarks/search_default_cap.py " + " ".join(sys.argv[1:])
        for case in cases:
            for variant in variants:
                row = measure(case, variant)
                row.update(command=command, commit=commit(), date=datetime.date.today().isoformat())
                print(json.dumps(row), flush=True)
                save_row(row)
    print("wrote", write_result("search_default_cap.md", report()))


if __name__ == "__main__":
    main()
