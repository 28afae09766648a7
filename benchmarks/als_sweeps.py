"""ALS sweeps: the two routes to the right-hand sides, and the solvers' planning (issue 15).

A full-data ALS sweep (``tnmars.fitting.solvers``) needs every core's right-hand side
``E_k^T y``. It can contract a growing prefix (the data times the cores already visited) or
the data with every other core, each time. ``_prefix_pays`` picks the prefix unless a prefix
would exceed ``PREFIX_MAX_GROWTH`` times the data, which happens on graphs with loops. This
script times one sweep by each route on standard formats, random fully connected networks
and the camera image's structure-search networks (interleaved medians), and says which route
the rule picks. A second table times the solvers' planning: ``"auto"`` (which prices several
paths) against opt_einsum's greedy path, which the solvers keep below ``CAREFUL_PLAN_FROM``,
with the run time of each plan.

    python benchmarks/als_sweeps.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, time_interleaved, write_result  # noqa: E402

import tnmars  # noqa: E402
from tnmars.backends import get_backend  # noqa: E402
from tnmars.fitting import solvers  # noqa: E402
from tnmars.fitting.graph import pieces_without  # noqa: E402
from tnmars.fitting.structure import fctn_spec  # noqa: E402

contract_module = importlib.import_module("tnmars.contract")  # (tnmars.contract is also a function)
ROWS = Path(__file__).resolve().parent / "results" / "structure_search_rows.json"


def fctn(order: int, n: int, edges: dict[tuple[int, int], int], seed: int = 0) -> tnmars.Network:
    spec, pairs = fctn_spec(order)
    opens = spec.split("->")[1]
    ranks = {b: edges.get(pair, 1) for b, pair in pairs.items()}
    return tnmars.Network(spec, {**dict(zip(opens, (n,) * order)), **ranks}, seed=seed)


def random_fctn(order: int, n: int, rng: np.random.Generator) -> tnmars.Network:
    _, pairs = fctn_spec(order)
    edges = {pair: int(rng.integers(2, 5)) for pair in pairs.values() if rng.random() < 0.5}
    return fctn(order, n, edges)


def image_networks() -> dict[str, tnmars.Network]:
    """The structure search's networks of the camera image (``structure_search.py``'s saved
    rows), at their edges and ranks, random cores."""
    if not ROWS.exists():
        return {}
    out = {}
    for row in json.loads(ROWS.read_text()):
        if row.get("part") == "image" and row.get("method") == "sweep fctn" and row["budget"] in (500, 2000):
            out[f"camera 4^8, search within {row['budget']:,}"] = fctn(8, 4, {(i, j): r for i, j, r in row["ranks"]})
    return dict(sorted(out.items()))


def cases() -> dict[str, tnmars.Network]:
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (clipped TT ranks)
        out = {
            "TT 8^6, rank 6": tnmars.Network.tt((8,) * 6, 6, seed=0),
            "TT 4^10, rank 8": tnmars.Network.tt((4,) * 10, 8, seed=0),
            "TT 16^5, rank 12": tnmars.Network.tt((16,) * 5, 12, seed=0),
            "TR 12^4, rank 8": tnmars.Network.tr((12,) * 4, 8, seed=0),
            "Tucker 60^3, rank 10": tnmars.Network.tucker((60,) * 3, 10, seed=0),
            "Tucker 8^6, rank 3": tnmars.Network.tucker((8,) * 6, 3, seed=0),
            "CP 100^3, rank 10": tnmars.Network.cp((100,) * 3, 10, seed=0),
        }
    for order, n in ((5, 6), (6, 4), (7, 4)):
        for k in range(2):
            out[f"fully connected {n}^{order}, random edges ({k + 1})"] = random_fctn(order, n, rng)
    out.update(image_networks())
    return out


def prefix_growth(net: tnmars.Network, order: list[int], data_shape: tuple[int, ...]) -> float:
    sizes = dict(net.dims)
    term, largest = net.output, 0
    for pos, k in enumerate(order[:-1]):
        term = solvers._prefix_term(term, net.inputs[k], [net.inputs[c] for c in order[pos + 1:]])
        largest = max(largest, int(np.prod([sizes[c] for c in term])))
    return largest / int(np.prod(data_shape))


def _sweep(inputs, output, order, cores, pieces, data, prefixed: bool) -> None:
    solvers._exact_sweep(inputs, output, order, list(cores), pieces, data, (), np.inf, prefixed)


def sweep_rows(repeats: int) -> list[list[object]]:
    rows = []
    for name, net in cases().items():
        y = tnmars.Network(net.spec, net.dims, seed=1).to_tensor()
        data = solvers.FitData.from_arrays(np.asarray(y))
        cores = [np.asarray(c, dtype=np.float64) for c in net.cores]
        layouts = pieces_without(net.inputs, net.output)
        pieces = [solvers._CoreSolver(net.inputs, net.output, lay, data) for lay in layouts]
        if not all(p.small_grams(cores) for p in pieces):
            continue
        order = solvers._sweep_order(net.inputs, net.output)
        picked = solvers._prefix_pays(net.inputs, net.output, order, [c.shape for c in cores], data.shape)

        args = (net.inputs, net.output, order, cores, pieces, data)
        t = time_interleaved({"prefix": partial(_sweep, *args, True), "data": partial(_sweep, *args, False)},
                             repeats=repeats)
        rows.append([name, f"{y.size:,}", f"{net.num_params:,}", f"{prefix_growth(net, order, data.shape):.1f}x",
                     f"{t['prefix'] * 1e3:.2f}", f"{t['data'] * 1e3:.2f}", f"{t['data'] / t['prefix']:.2f}",
                     "prefix" if picked else "from the data",
                     "yes" if (t["prefix"] <= t["data"]) == picked else "no"])
        print(rows[-1], flush=True)
    return rows


def planning_rows(repeats: int) -> list[list[object]]:
    """Right-hand sides and Grams of the camera networks and a random order-7 one: planning
    time of each kind of plan (cache cleared) and the run time of the plan it gives."""
    be = get_backend("numpy")
    nets = {**image_networks(), "fully connected 4^7, random edges": random_fctn(7, 4, np.random.default_rng(3))}
    rows = []
    for name, net in nets.items():
        shapes = [tuple(c.shape) for c in net.cores]
        k = 3
        jobs = {"right-hand side of core 3": (tuple(t for c, t in enumerate(net.inputs) if c != k) + (net.output,),
                                              net.inputs[k],
                                              [s for c, s in enumerate(shapes) if c != k] + [net.shape])}
        piece = pieces_without(net.inputs, net.output)[k].pieces[0]
        jobs["Gram of core 3's environment"] = (piece.gram_inputs, piece.gram_output,
                                                [shapes[c] for c in piece.cores] * 2)
        for what, (terms, out, shp) in jobs.items():
            kept = tuple("".join(ch for ch, n in zip(t, s) if n != 1) for t, s in zip(terms, shp))
            kept_shapes = tuple(tuple(int(n) for n in s if n != 1) for s in shp)
            sizes = {ch: n for t, s in zip(kept, kept_shapes) for ch, n in zip(t, s)}
            kept_out = "".join(ch for ch in out if ch in sizes)
            ops = [np.random.default_rng(0).standard_normal(s) for s in kept_shapes]
            result = []
            for optimize in ("auto", "greedy"):
                plan_times = []
                for _ in range(repeats):
                    contract_module.make_plan.cache_clear()
                    solvers._planned_for.cache_clear()
                    contract_module._STEPS.clear()  # (cold: no step remembered from an earlier run)
                    t0 = time.perf_counter()
                    plan = contract_module.make_plan(kept, kept_out, kept_shapes, optimize,
                                                     escalate_from=solvers.ESCALATE_FROM)
                    plan_times.append(time.perf_counter() - t0)
                run = time_interleaved({"run": partial(contract_module.execute, plan, ops, be)},
                                       repeats=repeats)["run"]
                result.append((float(np.median(plan_times)), run, plan.cost))
            (pa, ra, ca), (pg, rg, cg) = result
            rows.append([name, what, f"{pa * 1e3:.1f}", f"{ra * 1e3:.2f}", f"{pg * 1e3:.1f}", f"{rg * 1e3:.2f}",
                         f"{cg:.3g}", "greedy" if cg < solvers.CAREFUL_PLAN_FROM else "auto"])
            print(rows[-1], flush=True)
    return rows


def _grams(net: tnmars.Network, data: solvers.FitData, cores: list) -> None:
    for lay in pieces_without(net.inputs, net.output):
        solvers._CoreSolver(net.inputs, net.output, lay, data).grams(cores)


def grown_at_random(net: tnmars.Network, params: int, seed: int) -> tnmars.Network:
    """``net`` with one bond at a time (drawn at random) one rank up while it stays within
    ``params`` parameters: the kind of network a search's walk passes through."""
    rng = np.random.default_rng(seed)
    ranks = dict(net.bonds)
    while True:
        bond = list(ranks)[rng.integers(len(ranks))]
        trial = {**ranks, bond: min(6, ranks[bond] + 1)}
        if tnmars.Network(net.spec, {**net.dims, **trial}).num_params > params:
            return tnmars.Network(net.spec, {**net.dims, **ranks}, seed=0)
        ranks = trial


def gram_rows(repeats: int) -> list[list[object]]:
    """Every core's Gram matrices of the camera networks (and ones grown to about 4,000 and
    6,000 parameters) and a random order-7 network: the doubled contraction with the plans the
    solvers make for it against what ``_piece_gram`` does; planning timed apart (first call,
    cache cleared) from the runs (interleaved medians)."""
    nets = {**image_networks(), "fully connected 4^7, random edges": random_fctn(7, 4, np.random.default_rng(3))}
    if "camera 4^8, search within 2,000" in nets:
        big = nets["camera 4^8, search within 2,000"]
        grown = {b: min(4, r + 1) if k % 3 == 0 else r for k, (b, r) in enumerate(big.bonds.items())}
        nets["camera 4^8, 2,000 network with 10 bonds one rank up"] = tnmars.Network(big.spec, {**big.dims, **grown},
                                                                                     seed=0)
        for seed in (0, 2):
            nets[f"camera 4^8, 2,000 network grown at random to 4,000 ({seed})"] = grown_at_random(big, 4000, seed)
    rows = []
    for name, net in nets.items():
        y = tnmars.Network(net.spec, net.dims, seed=1).to_tensor()
        data = solvers.FitData.from_arrays(np.asarray(y))
        cores = [np.asarray(c, dtype=np.float64) for c in net.cores]
        first, runs = {}, {}
        for route, limit in (("doubled", 0), ("shipped", solvers.ENV_MAX_ENTRIES)):
            shipped = solvers.ENV_MAX_ENTRIES
            solvers.ENV_MAX_ENTRIES = limit
            try:
                contract_module.make_plan.cache_clear()
                solvers._planned_for.cache_clear()
                contract_module._STEPS.clear()  # (cold: no step remembered from an earlier run)
                t0 = time.perf_counter()
                _grams(net, data, cores)
                first[route] = time.perf_counter() - t0
                runs[route] = time_interleaved({"run": partial(_grams, net, data, cores)}, repeats=repeats,
                                               warmup=0)["run"]
            finally:
                solvers.ENV_MAX_ENTRIES = shipped
        rows.append([name, f"{net.num_params:,}", f"{first['doubled']:.2f}", f"{runs['doubled'] * 1e3:.0f}",
                     f"{first['shipped']:.2f}", f"{runs['shipped'] * 1e3:.0f}",
                     f"{runs['shipped'] / runs['doubled']:.2f}"])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sweeps = sweep_rows(args.repeats)
    plans = planning_rows(args.repeats)
    grams = gram_rows(args.repeats)
    agree = sum(r[-1] == "yes" for r in sweeps)
    text = "\n\n".join([
        "# ALS sweeps: right-hand sides by the prefix or from the data, and planning",
        f"Command: `python benchmarks/als_sweeps.py --repeats {args.repeats}`; {machine_line()}; one thread "
        "(`OMP_NUM_THREADS=1` recommended); times are interleaved medians, so load from other jobs falls on both "
        "routes alike.",
        "## One sweep by each route",
        "`prefix growth`: the largest prefix of the sweep against the data's entries. The rule "
        f"(`_prefix_pays`) keeps the prefix up to {solvers.PREFIX_MAX_GROWTH}x. `rule right`: whether it "
        f"picked the faster route in this run ({agree} of {len(sweeps)}; where it did not, the ratio says "
        "what it cost).",
        markdown_table(["network", "entries", "parameters", "prefix growth", "ms / sweep, prefix",
                        "ms / sweep, from the data", "from the data / prefix", "rule picks", "rule right"], sweeps),
        "## Planning one contraction",
        "Cache cleared before each plan; `ms to run` is the plan's contraction. The solvers keep the greedy plan "
        f"when its cost is below {solvers.CAREFUL_PLAN_FROM:.0e} (`CAREFUL_PLAN_FROM`) and plan again with "
        "`auto` otherwise: a structure search tries a new rank vector at every step, and each plan then runs "
        "only for the few sweeps of one refit.",
        markdown_table(["network", "contraction", "auto: ms to plan", "auto: ms to run", "greedy: ms to plan",
                        "greedy: ms to run", "greedy cost", "solvers use"], plans),
        "## Gram matrices: the doubled contraction or the environment matrix",
        "All of a sweep's Gram matrices (every core). `doubled`: each piece's cores contracted with a copy of "
        "themselves, planned as the solvers plan other contractions (greedy, or `auto` with its dynamic programming "
        f"from {solvers.CAREFUL_PLAN_FROM:.0e}). `shipped`: what `_piece_gram` does: `E^T E` from the environment "
        f"matrix when `E` has at most {solvers.ENV_MAX_ENTRIES:,} entries and that costs fewer FLOPs than the doubled "
        "contraction's greedy path; where `E` fits but the greedy path is cheaper, that path as it is (no dynamic "
        "programming); the doubled contraction planned as above only where `E` does not fit. `first call`: with the "
        "plan cache cleared, planning included. The networks grown at random from the 2,000 one stand for what a "
        "search's walk meets on its way to 4,000 parameters.",
        markdown_table(["network", "parameters", "doubled: first call s", "doubled: ms / sweep's Grams",
                        "shipped: first call s", "shipped: ms / sweep's Grams", "shipped / doubled"],
                       grams),
    ])
    print(write_result("als_sweeps.md", text))


if __name__ == "__main__":
    main()
