"""Contraction: tnmars against a reused opt_einsum expression, cotengra, quimb, torch.einsum
and tensorly, on NumPy and torch, over chains, combs, loops, PEPS, a MERA and a layer.

    python benchmarks/contraction.py [--repeats 9] [--quick] [--only SUBSTRING]

Every method contracts the same arrays and returns a contiguous array (views are copied), so
a transposed result costs what it costs the user. Timings are medians of interleaved repeats
(round robin after a warm-up), each repeat a batch of calls lasting about 20 ms of the
process's CPU time (:func:`time_batched`: every method is single-threaded, and on a shared,
oversubscribed machine the wall clock mostly measures waiting for a core). Contenders get
their best settings: opt_einsum's expression is built once with ``optimize="auto-hq"`` and
reused; cotengra's expression uses a path from its hyper-optimizer (128 trials, minimizing
FLOPs plus writes) and is reused; quimb contracts a prebuilt network with the same cached
cotengra optimizer; torch.einsum uses opt_einsum's path search (it re-plans every call, which
is part of what it costs); tensorly uses its own ``*_to_tensor`` / ``tt_matrix_to_matrix``.
Planning (the first call's path search) is timed separately, once per row, on NumPy.

Target (issue 13): tnmars at most 1.1x the best contender in every row on NumPy and torch.
The "tuning" rows are the issue's, plus five rows first run as held out and then looked at
while tuning (see ``cases``); the "held-out" rows (other shapes, ranks, batch sizes and
topologies) were not looked at while tuning the planner and are reported the same way.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

# one BLAS thread for every library: on a shared machine, multi-threaded BLAS makes
# timings depend on whatever else runs; one thread keeps the comparison about the code
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import opt_einsum  # noqa: E402
import tensorly as tl  # noqa: E402
import torch  # noqa: E402
from opt_einsum.parser import convert_to_valid_einsum_chars  # noqa: E402
from tensorly.cp_tensor import cp_to_tensor  # noqa: E402
from tensorly.tr_tensor import tr_to_tensor  # noqa: E402
from tensorly.tt_matrix import tt_matrix_to_matrix  # noqa: E402
from tensorly.tt_tensor import tt_to_tensor  # noqa: E402
from tensorly.tucker_tensor import tucker_to_tensor  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_line, markdown_table, write_result  # noqa: E402

import tnmars  # noqa: E402
from tnmars.contract import make_plan  # noqa: E402
from tnmars.spec import einsum_terms, symbol  # noqa: E402

try:
    import cotengra as ctg
    import quimb
    import quimb.tensor as qtn
except ImportError:  # pragma: no cover - the dev extra installs them
    ctg = qtn = quimb = None


# ----------------------------------------------------------------------------- the networks
class Case:
    """One row: an einsum over fixed arrays (and, for the built-in formats, the Network)."""

    def __init__(self, name: str, eq: str, arrays: list[np.ndarray], split: str, net: tnmars.Network | None = None,
                 tensorly=None) -> None:
        self.name, self.eq, self.arrays, self.split, self.net, self.tensorly = name, eq, arrays, split, net, tensorly


def _rand(shape, rng, scale=None):
    a = rng.standard_normal(shape)
    return a / np.sqrt(a.size) if scale is None else a * scale


def peps(L: int, D: int, d: int = 0, open_sites=None, seed: int = 0) -> tuple[str, list[np.ndarray]]:
    """An L x L grid with bonds of size D; sites in ``open_sites`` (default: all when d > 0)
    carry an open leg of size d. Each tensor is scaled so the contraction stays O(1)."""
    rng = np.random.default_rng(seed)
    k = iter(symbol(i) for i in range(10**6))
    horizontal = {(i, j): next(k) for i in range(L) for j in range(L - 1)}
    vertical = {(i, j): next(k) for i in range(L - 1) for j in range(L)}
    sites = set(open_sites) if open_sites is not None else ({(i, j) for i in range(L) for j in range(L)} if d else set())
    terms, arrays, out = [], [], ""
    for i in range(L):
        for j in range(L):
            legs = []
            if j > 0:
                legs.append(horizontal[i, j - 1])
            if j < L - 1:
                legs.append(horizontal[i, j])
            if i > 0:
                legs.append(vertical[i - 1, j])
            if i < L - 1:
                legs.append(vertical[i, j])
            shape = [D] * len(legs)
            if (i, j) in sites:
                p = next(k)
                legs.append(p)
                shape.append(d)
                out += p
            terms.append("".join(legs))
            arrays.append(_rand(shape, rng, 1.0 / np.sqrt(D) ** (len(legs) / 2)))
    return ",".join(terms) + "->" + out, arrays


def mera(d: int, chi: int, seed: int = 0) -> tuple[str, list[np.ndarray]]:
    """An open-boundary binary MERA on 8 sites of size d, bonds chi: 4 disentanglers, 6
    isometries, 1 top tensor (11 tensors); the result is the 8-site state (d**8 entries)."""
    rng = np.random.default_rng(seed)
    s = "abcdefgh"  # physical legs
    # layer 1: disentanglers on (1,2), (3,4), (5,6); isometries on (0,1), (2,3), (4,5), (6,7)
    u1 = [("bc", "ij"), ("de", "kl"), ("fg", "mn")]
    w1 = [("ai", "A"), ("jk", "B"), ("lm", "C"), ("nh", "D")]
    # layer 2: a disentangler on (B, C); isometries on (A, .) and (., D); the top tensor
    u2 = [("BC", "EF")]
    w2 = [("AE", "G"), ("FD", "H")]
    terms, arrays = [], []
    for lower, upper in u1:
        terms.append(lower + upper)
        arrays.append(_rand((d,) * 4, rng, 1 / d))
    for lower, upper in w1:
        terms.append(lower + upper)
        arrays.append(_rand((d, d, chi), rng, 1 / d))
    for lower, upper in u2:
        terms.append(lower + upper)
        arrays.append(_rand((chi,) * 4, rng, 1 / chi))
    for lower, upper in w2:
        terms.append(lower + upper)
        arrays.append(_rand((chi, chi, chi), rng, 1 / chi))
    terms.append("GH")
    arrays.append(_rand((chi, chi), rng, 1 / chi))
    return ",".join(terms) + "->" + s, arrays


def with_vectors(net: tnmars.Network, seed: int = 1) -> tuple[str, list[np.ndarray]]:
    """The network contracted with one vector per open mode: a scalar."""
    rng = np.random.default_rng(seed)
    vectors = [rng.standard_normal(n) / np.sqrt(n) for n in net.shape]
    return net.spec.split("->")[0] + "," + ",".join(net.output) + "->", list(net.cores) + vectors


def tt_matrix_batch(batch: int, in_shape, out_shape, rank: int, seed: int = 0) -> tuple[str, list[np.ndarray], tnmars.Network]:
    """``y = x @ W`` for a batch of ``batch`` rows and a TT-matrix ``W``, as one einsum."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = tnmars.Network.tt_matrix(in_shape, out_shape, rank, seed=seed)
    d = len(in_shape)
    z = symbol(60)  # any symbol not in the network
    x = np.random.default_rng(seed + 1).standard_normal((batch, *in_shape))
    eq = net.spec.split("->")[0] + "," + z + net.output[:d] + "->" + z + net.output[d:]
    return eq, list(net.cores) + [x], net


def _quiet(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build()


def cases(quick: bool) -> list[Case]:
    s = 2 if quick else 1
    out: list[Case] = []

    def full(name, net, split, tensorly=None):
        out.append(Case(name, net.spec, list(net.cores), split, net=net, tensorly=tensorly))

    full("CP 64^3, rank 32", tnmars.Network.cp((64 // s,) * 3, 32, seed=0), "tuning", "cp")
    full("Tucker 32^4, rank 8", tnmars.Network.tucker((32 // s,) * 4, 8, seed=0), "tuning", "tucker")
    full("TT 8^8, rank 16", _quiet(lambda: tnmars.Network.tt((8,) * (8 - 2 * (s - 1)), 16, seed=0)), "tuning", "tt")
    full("TR 8^6, rank 8", tnmars.Network.tr((8,) * 6, 8, seed=0), "tuning", "tr")
    eq, arrays = with_vectors(_quiet(lambda: tnmars.Network.tt((4,) * 12, 64 // s, seed=0)))
    out.append(Case("TT order 12 (4^12, rank 64) with vectors", eq, arrays, "tuning"))
    eq, arrays = with_vectors(_quiet(lambda: tnmars.Network.tt((2,) * 40, 16, seed=0)))
    out.append(Case("QTT order 40 (rank 16) with vectors", eq, arrays, "tuning"))
    out.append(Case("PEPS 3x3, D=8, closed", *peps(3, 8), "tuning"))
    out.append(Case("PEPS 3x3, D=4, open legs d=2", *peps(3, 4, 2), "tuning"))
    out.append(Case("PEPS 5x5, D=4, closed", *peps(5, 4 if not quick else 3), "tuning"))
    centre = [(i, j) for i in (1, 2, 3) for j in (1, 2, 3)]
    out.append(Case("PEPS 5x5, D=4, open legs d=2 on the 3x3 centre", *peps(5, 4 if not quick else 3, 2, centre),
                    "tuning"))
    out.append(Case("MERA, 11 tensors, d=4, chi=8", *mera(4, 8), "tuning"))
    eq, arrays = with_vectors(tnmars.Network.tr((4,) * 8, 32 // s, seed=0))
    out.append(Case("ring of 8 (TR 4^8, rank 32) to a scalar", eq, arrays, "tuning"))
    for batch in (1, 32, 1024 // s):
        eq, arrays, net = tt_matrix_batch(batch, (7, 4, 7, 4), (5, 5, 5, 5), 20)
        out.append(Case(f"TT-matrix 784x625 rank 20, batch {batch}", eq, arrays, "tuning", net=net,
                        tensorly="tt_matrix"))
    # rows first run as held out that were then looked at while tuning, so they count as tuning:
    # batch 256 showed narrow matrix products to be slow per FLOP, the 512x512 layer led to
    # refitting the copy prices (on the tuning rows), Tucker 12^6 to MAX_FUSED_ENTRIES
    eq, arrays, net = tt_matrix_batch(256 // s, (4, 8, 8, 4), (4, 4, 4, 4), 8, seed=1)
    out.append(Case(f"TT-matrix 1024x256 rank 8, batch {256 // s}", eq, arrays, "tuning", net=net,
                    tensorly="tt_matrix"))
    eq, arrays, net = tt_matrix_batch(64, (8, 8, 8), (8, 8, 8), 12, seed=2)
    out.append(Case("TT-matrix 512x512 rank 12, batch 64", eq, arrays, "tuning", net=net, tensorly="tt_matrix"))
    full("Tucker 12^6, ranks 4", tnmars.Network.tucker((12,) * 6, 4, seed=2), "tuning", "tucker")
    # likewise looked at while tuning (the tall-skinny rule of torch's matmul, TALL_SKINNY_RATIO)
    full("Tucker 10^6, ranks 5", tnmars.Network.tucker((10,) * 6, 5, seed=3), "tuning", "tucker")
    eq, arrays, net = tt_matrix_batch(128, (9, 9, 9), (9, 9, 9), 10, seed=3)
    out.append(Case("TT-matrix 729x729 rank 10, batch 128", eq, arrays, "tuning", net=net, tensorly="tt_matrix"))
    # held out: other shapes, ranks, batches and topologies, never looked at while tuning
    full("Tucker 16^5, ranks 6 (held out)", tnmars.Network.tucker((16,) * 5, 6, seed=1), "held-out", "tucker")
    eq, arrays = with_vectors(_quiet(lambda: tnmars.Network.tt((3,) * 30, 24, seed=1)))
    out.append(Case("TT order 30 (3^30, rank 24) with vectors", eq, arrays, "held-out"))
    out.append(Case("PEPS 4x4, D=5, closed", *peps(4, 5, seed=1), "held-out"))
    out.append(Case("PEPS 3x3, D=3, open legs d=3", *peps(3, 3, 3, [(i, j) for i in range(3) for j in range(3)],
                                                         seed=1), "held-out"))
    out.append(Case("MERA, 11 tensors, d=3, chi=12", *mera(3, 12, seed=1), "held-out"))
    eq, arrays = with_vectors(tnmars.Network.tr((3,) * 12, 16, seed=1))
    out.append(Case("ring of 12 (TR 3^12, rank 16) to a scalar", eq, arrays, "held-out"))
    eq, arrays, net = tt_matrix_batch(8, (4, 8, 8, 4), (4, 4, 4, 4), 8, seed=1)
    out.append(Case("TT-matrix 1024x256 rank 8, batch 8", eq, arrays, "held-out", net=net, tensorly="tt_matrix"))
    eq, arrays, net = tt_matrix_batch(2048 // s, (8, 8, 8), (8, 8, 8), 12, seed=2)
    out.append(Case(f"TT-matrix 512x512 rank 12, batch {2048 // s}", eq, arrays, "held-out", net=net,
                    tensorly="tt_matrix"))
    eq, arrays, net = tt_matrix_batch(16, (9, 9, 9), (9, 9, 9), 10, seed=3)
    out.append(Case("TT-matrix 729x729 rank 10, batch 16", eq, arrays, "held-out", net=net, tensorly="tt_matrix"))
    eq, arrays = with_vectors(_quiet(lambda: tnmars.Network.tt((5,) * 20, 32, seed=2)))
    out.append(Case("TT order 20 (5^20, rank 32) with vectors", eq, arrays, "held-out"))
    out.append(Case("PEPS 4x4, D=3, open legs d=2", *peps(4, 3, 2, seed=2), "held-out"))
    out.append(Case("MERA, 11 tensors, d=2, chi=16", *mera(2, 16, seed=2), "held-out"))
    # added when the two rows above moved to tuning, and not looked at before the full run
    full("Tucker 9^6, ranks 6", tnmars.Network.tucker((9,) * 6, 6, seed=4), "held-out", "tucker")
    eq, arrays, net = tt_matrix_batch(96, (10, 10, 10), (10, 10, 10), 6, seed=4)
    out.append(Case("TT-matrix 1000x1000 rank 6, batch 96", eq, arrays, "held-out", net=net, tensorly="tt_matrix"))
    return out


# ----------------------------------------------------------------------------- timing
def time_batched(funcs: dict, repeats: int, sample_s: float = 0.02, clock=time.process_time) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin in samples of about
    ``sample_s`` seconds. The clock is the process's CPU time: every method runs on one
    thread, and on a shared machine with four times more runnable processes than cores the
    wall clock mostly measures how long the process waited for a core (wall-clock medians of
    the same row moved 3x between runs); CPU time still includes what sharing caches and
    memory bandwidth costs, and interleaving spreads that over every method alike."""
    number = {}
    for name, f in funcs.items():
        f()  # warm-up
        t0 = clock()
        f()
        once = max(clock() - t0, 1e-6)
        number[name] = max(1, int(sample_s / once))
    samples: dict[str, list[float]] = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            f, n = funcs[name], number[name]
            t0 = clock()
            for _ in range(n):
                f()
            samples[name].append((clock() - t0) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


# ----------------------------------------------------------------------------- the contenders
def _contiguous(x):
    if isinstance(x, torch.Tensor):
        return x.contiguous()
    return np.ascontiguousarray(x) if np.ndim(x) else x


def _tensorly_call(case: Case, ops):
    kind, net = case.tensorly, case.net
    if kind is None:
        return None
    if kind == "cp":
        obj = (tl.ones(net.ranks[0], **tl.context(ops[0])), list(ops))
        return lambda: cp_to_tensor(obj)
    if kind == "tucker":
        obj = (ops[0], list(ops[1:]))
        return lambda: tucker_to_tensor(obj)
    if kind == "tt":
        factors = [ops[0][None]] + list(ops[1:-1]) + [ops[-1][..., None]]
        return lambda: tt_to_tensor(factors)
    if kind == "tr":
        return lambda: tr_to_tensor(list(ops))
    if kind == "tt_matrix":  # W from its cores (r, i, o, r), then the GEMM
        cores, x = list(ops[:-1]), ops[-1]
        factors = [cores[0][None]] + cores[1:-1] + [cores[-1][..., None]]
        batch = x.shape[0]
        return lambda: x.reshape(batch, -1) @ tt_matrix_to_matrix(factors)
    raise ValueError(kind)


def _cotengra_optimizer():
    return ctg.HyperOptimizer(max_repeats=128, minimize="combo", parallel=False, progbar=False,
                              methods=["greedy", "labels"])


def methods_for(case: Case, backend: str, ops, planned) -> dict:
    """name -> zero-argument callable, all computing the same tensor."""
    funcs = {}
    if case.net is not None and case.tensorly != "tt_matrix":
        net = case.net if backend == "numpy" else case.net.to("torch")
        funcs["tnmars"] = net.to_tensor
    else:
        funcs["tnmars"] = lambda: tnmars.contract(case.eq, *ops)
    expr = planned["opt_einsum"]
    funcs["opt_einsum expression"] = lambda: _contiguous(expr(*ops))
    if ctg is not None:
        cexpr = planned["cotengra"]
        funcs["cotengra"] = lambda: _contiguous(cexpr(*ops))
        inputs, output = einsum_terms(case.eq, tuple(len(a.shape) for a in ops))
        tn = qtn.TensorNetwork([qtn.Tensor(a, inds=tuple(t)) for a, t in zip(ops, inputs)])
        qopt = planned["quimb optimizer"]
        if output:
            funcs["quimb"] = lambda: _contiguous(tn.contract(..., output_inds=tuple(output), optimize=qopt).data)
        else:
            funcs["quimb"] = lambda: tn.contract(..., output_inds=(), optimize=qopt)
    if backend == "torch":
        letters = planned["ascii eq"]
        if letters is not None:
            funcs["torch.einsum"] = lambda: _contiguous(torch.einsum(letters, *ops))
    tl.set_backend("numpy" if backend == "numpy" else "pytorch")
    tly = _tensorly_call(case, ops)
    if tly is not None:
        funcs["tensorly"] = lambda: _contiguous(tly())
    return funcs


def plan_everything(case: Case) -> tuple[dict, dict]:
    """Build each contender's reusable plan once (on shapes), timing the planning."""
    shapes = [a.shape for a in case.arrays]
    planned, seconds = {}, {}
    inputs, output = einsum_terms(case.eq, tuple(len(s) for s in shapes))
    make_plan.cache_clear()
    t0 = time.perf_counter()
    plan = make_plan(tuple(inputs), output, tuple(tuple(s) for s in shapes))
    seconds["tnmars"] = time.perf_counter() - t0
    planned["tnmars plan"] = plan
    make_plan.cache_clear()  # the timed run plans again through its own entry point
    t0 = time.perf_counter()
    planned["opt_einsum"] = opt_einsum.contract_expression(case.eq, *shapes, optimize="auto-hq")
    seconds["opt_einsum (auto-hq)"] = time.perf_counter() - t0
    if ctg is not None:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ctg.array_contract_tree(inputs, output, {c: n for t, s in zip(inputs, shapes) for c, n in zip(t, s)},
                                           optimize=_cotengra_optimizer())
        planned["cotengra"] = ctg.contract_expression(case.eq, *shapes, optimize=tree)
        seconds["cotengra"] = time.perf_counter() - t0
        planned["quimb optimizer"] = tree.get_path()
        planned["cotengra flops"] = float(tree.contraction_cost()) * 2
    letters = set("".join(inputs))
    planned["ascii eq"] = convert_to_valid_einsum_chars(",".join(inputs) + "->" + output) if len(letters) <= 52 else None
    return planned, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run; nothing is written)")
    parser.add_argument("--only", default=None,
                        help="run the rows whose name contains this text (several: separated by '|')")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, plan_rows, verdicts = [], [], []
    for case in cases(args.quick):
        if args.only and not any(part in case.name for part in args.only.split("|")):
            continue
        planned, seconds = plan_everything(case)
        plan = planned["tnmars plan"]
        plan_rows.append([case.name, f"{plan.flops:.3g}", f"{planned.get('cotengra flops', float('nan')):.3g}",
                          *(f"{seconds.get(k, float('nan')) * 1e3:.1f}" for k in ("tnmars", "opt_einsum (auto-hq)", "cotengra"))])
        for backend in ("numpy", "torch"):
            ops = case.arrays if backend == "numpy" else [torch.from_numpy(a) for a in case.arrays]
            funcs = methods_for(case, backend, ops, planned)
            ref = np.asarray(tnmars.get_backend(backend).to_numpy(funcs["tnmars"]()))
            scale = max(np.abs(ref).max(), 1e-300)
            for label, f in funcs.items():
                got = f()
                got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
                np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-7, atol=1e-9 * scale,
                                           err_msg=f"{case.name} {backend} {label}")
            times = time_batched(funcs, repeats=args.repeats)
            ours = times["tnmars"]
            best_label = min((k for k in times if k != "tnmars"), key=times.__getitem__)
            best = times[best_label]
            ratio = ours / best
            verdicts.append((case.split, f"- {case.name}, {backend}: {ratio:.2f}x the best contender ({best_label}) "
                                         f"-> {'met' if ratio <= 1.1 else 'NOT met'}"))
            cells = {k: f"{v * 1e3:.3g}" for k, v in times.items()}
            rows.append([case.split, case.name, backend, *(cells.get(k, "n/a") for k in COLUMNS), f"{ratio:.2f}"])
            print(rows[-1], flush=True)
    tl.set_backend("numpy")
    header = ["split", "network", "backend", *(f"{c} ms" for c in COLUMNS), "tnmars / best"]
    table = markdown_table(header, rows)
    plan_table = markdown_table(["network", "tnmars path FLOPs", "cotengra path FLOPs", "tnmars planning ms",
                                 "opt_einsum auto-hq planning ms", "cotengra planning ms"], plan_rows)
    met = {split: sum("-> met" in v for s, v in verdicts if s == split) for split in ("tuning", "held-out")}
    total = {split: sum(1 for s, _ in verdicts if s == split) for split in ("tuning", "held-out")}
    versions = (f"torch {torch.__version__}, numpy {np.__version__}, opt_einsum {opt_einsum.__version__}, "
                f"tensorly {tl.__version__}"
                + (f", cotengra {ctg.__version__}, quimb {quimb.__version__}" if ctg is not None else ""))
    text = (
        "# Contraction benchmark (issue 13)\n\n"
        f"Command: `python benchmarks/contraction.py --repeats {args.repeats}{' --quick' if args.quick else ''}`  \n"
        f"Measured: {machine_line()}; one BLAS/torch thread; {versions}.  \n"
        f"Median of {args.repeats} interleaved repeats after one warm-up, each repeat a batch of calls of about "
        "20 ms, timed with the process's CPU time (every method runs on one thread; the machine was shared and "
        "oversubscribed, where wall-clock medians of one row moved 3x between runs); the time per call is "
        "reported, float64, every result made contiguous. "
        "opt_einsum: a reused `contract_expression(optimize=\"auto-hq\")`; cotengra: a reused expression on its "
        "hyper-optimizer's path (128 trials, `minimize=\"combo\"`, methods greedy and labels: kahypar is not "
        "installed); quimb: a prebuilt TensorNetwork contracted on that same path; torch.einsum: letters only, so "
        "n/a past 52 indices; tensorly where it has the format. n/a: the method does not apply.\n\n"
        + table
        + "\n\nPlanning, once per row (NumPy shapes; cotengra's includes its 128 trials):\n\n"
        + plan_table
        + f"\n\nTarget: tnmars at most 1.1x the best contender in every row and backend. Met in "
        f"{met['tuning']}/{total['tuning']} tuning rows and {met['held-out']}/{total['held-out']} held-out rows.\n\n"
        + "\n".join(v for _, v in verdicts)
        + "\n"
    )
    print(table)
    print(plan_table)
    print("\n".join(v for _, v in verdicts))
    if not args.quick and not args.only:
        write_result("contraction.md", text)


COLUMNS = ["tnmars", "opt_einsum expression", "cotengra", "quimb", "torch.einsum", "tensorly"]

if __name__ == "__main__":
    main()
