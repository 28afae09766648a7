"""Full-tensor reconstruction: tnmars vs raw opt_einsum vs torch.einsum vs tensorly.

    python benchmarks/contraction.py [--repeats 7] [--quick]

Every method contracts the same cores; timings are medians of interleaved repeats, so a
busy machine slows all methods alike. Target (issue 2): tnmars within 1.1x of a reused
``opt_einsum.contract_expression`` and no slower than tensorly's ``*_to_tensor``.
"""
from __future__ import annotations

import argparse
import os
import sys

# one BLAS thread for every library: on a shared machine, multi-threaded BLAS makes
# timings depend on whatever else runs; one thread keeps the comparison about the code
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import opt_einsum  # noqa: E402
import tensorly as tl  # noqa: E402
import torch  # noqa: E402
from tensorly.cp_tensor import cp_to_tensor  # noqa: E402
from tensorly.tr_tensor import tr_to_tensor  # noqa: E402
from tensorly.tt_tensor import tt_to_tensor  # noqa: E402
from tensorly.tucker_tensor import tucker_to_tensor  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_line, markdown_table, time_interleaved, write_result  # noqa: E402

import tnmars  # noqa: E402


def cases(quick: bool):
    s = 2 if quick else 1
    return [
        ("CP 64^3, rank 32", tnmars.Network.cp((64 // s,) * 3, 32, seed=0)),
        ("Tucker 32^4, rank 8", tnmars.Network.tucker((32 // s,) * 4, 8, seed=0)),
        ("TT 8 cores of 8, rank 16", tnmars.Network.tt((8,) * (8 - 2 * (s - 1)), 16, seed=0)),
        ("TR 6 cores of 8, rank 8", tnmars.Network.tr((8,) * 6, 8, seed=0)),
    ]


def tensorly_call(name: str, net: tnmars.Network):
    """tensorly's own reconstruction from the same cores, in its native layouts."""
    c = net.cores
    if name.startswith("CP"):
        obj = (tl.ones(net.ranks[0], **tl.context(c[0])), c)
        return lambda: cp_to_tensor(obj)
    if name.startswith("Tucker"):
        obj = (c[0], c[1:])
        return lambda: tucker_to_tensor(obj)
    if name.startswith("TT"):
        factors = [c[0][None]] + list(c[1:-1]) + [c[-1][..., None]]
        return lambda: tt_to_tensor(factors)
    if name.startswith("TR"):
        return lambda: tr_to_tensor(list(c))
    raise ValueError(name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller tensors (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    verdicts = []
    for name, net in cases(args.quick):
        for backend in ("numpy", "torch"):
            bnet = net if backend == "numpy" else net.to("torch")
            tl.set_backend("numpy" if backend == "numpy" else "pytorch")
            cores = bnet.cores
            expr = opt_einsum.contract_expression(net.spec, *[c.shape for c in cores])
            # sanity: every method computes the same tensor
            ref = np.asarray(tnmars.get_backend(backend).to_numpy(bnet.to_tensor()))
            funcs = {
                "tnmars to_tensor()": bnet.to_tensor,
                "opt_einsum expression (reused)": lambda e=expr, c=cores: e(*c),
                "tensorly *_to_tensor": tensorly_call(name, bnet),
            }
            if backend == "torch":
                funcs["torch.einsum"] = lambda s=net.spec, c=cores: torch.einsum(s, *c)
            for label, f in funcs.items():
                got = tnmars.get_backend(backend).to_numpy(f())
                np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max(), err_msg=label)
            times = time_interleaved(funcs, repeats=args.repeats)
            base = times["opt_einsum expression (reused)"]
            ours, theirs = times["tnmars to_tensor()"], times["tensorly *_to_tensor"]
            verdicts.append(
                f"- {name}, {backend}: {ours / base:.2f}x the reused expression "
                f"({'met' if ours <= 1.1 * base else 'NOT met'}), {ours / theirs:.2f}x tensorly "
                f"({'met' if ours <= theirs else 'NOT met'})"
            )
            for label, t in times.items():
                rows.append([name, backend, label, f"{t * 1e3:.2f}", f"{t / base:.2f}"])
    tl.set_backend("numpy")
    header = ["network", "backend", "method", "median ms", "time / reused opt_einsum"]
    table = markdown_table(header, rows)
    text = (
        "# Full-tensor reconstruction (issue 2 benchmark)\n\n"
        f"Command: `python benchmarks/contraction.py --repeats {args.repeats}{' --quick' if args.quick else ''}`  \n"
        f"Measured: {machine_line()}; one BLAS/torch thread, torch {torch.__version__}, numpy {np.__version__}, "
        f"tensorly {tl.__version__}, opt_einsum {opt_einsum.__version__}.  \n"
        f"Median of {args.repeats} interleaved repeats after one warm-up, float64. The TT case's "
        "boundary ranks are clipped to what an 8x8x... train can use, (8, 16, 16, 16, 16, 16, 8).\n\n"
        + table
        + "\n\nTargets: tnmars within 1.1x of the reused expression, and no slower than tensorly.\n\n"
        + "\n".join(verdicts)
        + "\n"
    )
    print(table)
    print("\n".join(verdicts))
    if not args.quick:
        write_result("contraction.md", text)


if __name__ == "__main__":
    main()
