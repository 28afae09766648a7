"""Stable and truncated recurrent models: the experiments of issue 5 (Miller & Hardt).

Parts (each writes ``benchmarks/results/stable_rnn_<part>.md`` and a PNG):

1. ``outputs``   — ||h_T - h_T^k|| against k for lambda in {0.5, 0.8, 0.9, 0.99}; fitted slope
   of log gap vs k against log lambda.
2. ``gradients`` — ||grad p_T - grad p_T^k|| against k on random Gaussian linear-system
   instances, against the k lambda^k shape of Lemma 2.
3. ``weights``   — projected gradient descent on the recurrent and the truncated model from
   the same start, step alpha/t and a constant step: ||w_recurr - w_trunc|| over steps.
4. ``music``     — next-frame prediction on the Bach chorales shipped with music21 (offline):
   tanh RNN and LSTM, stable vs unstable, full vs truncated; test NLL, effective stability
   of the trained models, speed of truncated parallel vs sequential evaluation.
5. ``tt``        — the same task with a TT-matrix recurrent matrix with MARS masks: selected
   ranks, compression, test NLL against the dense stable model.

Usage::

    nice python benchmarks/stable_rnn.py                 # all parts
    nice python benchmarks/stable_rnn.py --part outputs --part gradients
    nice python benchmarks/stable_rnn.py --quick         # small smoke run (not for the record)

The music data is parsed once from music21's corpus and cached in
``$TNMARS_CACHE`` (default ``~/.cache/tnmars``) as an ``.npz`` (no pickle).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time

import matplotlib
import numpy as np
import torch
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, cpu_model, markdown_table, time_interleaved, write_result  # noqa: E402

from tnmars.nn import LSTM, LinearRNN, TanhRNN, effective_stability, register_stability_hook  # noqa: E402
from tnmars.nn.recurrent import LSTM_FORGET_BIAS  # noqa: E402

D64 = torch.float64
PARTS = ("outputs", "gradients", "weights", "music", "tt")


def header(title: str, command: str, notes: str = "") -> str:
    machine = (
        f"{platform.machine()} {os.cpu_count()}-core CPU ({cpu_model()}) shared with other jobs (timings are noisy), "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread"
    )
    text = (
        f"# {title}\n\nCommand: `{command}`\n\nDate: {datetime.date.today().isoformat()} (run at {datetime.datetime.now():%H:%M} UTC)\n\n"
        f"Machine: {machine}\n"
    )
    if notes:
        text += "\n" + notes.strip() + "\n"
    return text


def orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(n, n, dtype=D64, generator=gen))
    return Q * torch.sign(torch.diagonal(R))


def fmt(x: float, digits: int = 3) -> str:
    if x == 0 or not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}"


# ==================================================================================== part 1
def part_outputs(args) -> str:
    """Gap between the full and the truncated final state, as a function of k."""
    H, D, B = 32, 8, 16
    T = 300 if args.quick else 800
    lams = [0.5, 0.8, 0.9, 0.99]
    ks = sorted({int(k) for k in np.unique(np.round(np.geomspace(1, T - 1, 60)))} | set(range(1, 30)))
    gen = torch.Generator().manual_seed(0)
    results = {}
    rows = []
    for kind in ("orthogonal", "gaussian"):
        for lam in lams:
            model = LinearRNN(D, H, lam=lam, projection="svd", bias=False, seed=1).double()
            with torch.no_grad():
                if kind == "orthogonal":  # every singular value = lam: the bound's worst case
                    model.weight.copy_(lam * orthogonal(H, gen))
                else:  # Gaussian scaled to ||W||_2 = lam: spectral radius well below lam
                    G = torch.randn(H, H, dtype=D64, generator=gen)
                    model.weight.copy_(G * lam / torch.linalg.matrix_norm(G, 2))
                rho = float(torch.linalg.eigvals(model.weight).abs().max())
                x = torch.randn(B, T, D, dtype=D64, generator=gen)
                hT = model(x)[:, -1]
                gaps = []
                for k in ks:  # h_T^k: the recurrence from zero over the last k inputs
                    hk = model(x[:, -k:])[:, -1]
                    gaps.append(float(torch.linalg.vector_norm(hT - hk, dim=-1).mean()))
            gaps = np.array(gaps)
            scale = float(torch.linalg.vector_norm(hT, dim=-1).mean())
            # k <= T/2: near k = T the finite sum's tail is cut short and the gap drops faster
            use = (gaps > 1e-11 * scale) & (np.array(ks) >= 3) & (np.array(ks) <= T // 2)
            slope = np.polyfit(np.array(ks)[use], np.log(gaps[use]), 1)[0] if use.sum() >= 3 else float("nan")
            results[(kind, lam)] = (np.array(ks), gaps, slope, rho)
            rows.append([kind, lam, fmt(math.log(lam), 4), fmt(rho, 4), fmt(math.log(rho), 4), fmt(slope, 4),
                         fmt(slope / math.log(lam), 3), int(use.sum()), f"{int(np.array(ks)[use].min())}-{int(np.array(ks)[use].max())}"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ("orthogonal", "gaussian")):
        for lam in lams:
            k, g, slope, rho = results[(kind, lam)]
            (line,) = ax.semilogy(k, g, label=f"λ={lam} (fit slope {slope:.3f}, log λ={math.log(lam):.3f})")
            ax.semilogy(k, g[0] * lam ** (k - k[0]), "--", color=line.get_color(), alpha=0.5)
        ax.set_xlabel("k")
        ax.set_title(f"W = {'λ·orthogonal' if kind == 'orthogonal' else 'Gaussian scaled to ||W||₂=λ'}")
        ax.set_ylim(1e-14, 10 * max(float(results[(kind, lam)][1].max()) for lam in lams))
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean ||h_T − h_T^k||")
    fig.suptitle("Experiment 1: outputs close (dashed: λ^k through the first point)")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"stable_rnn_outputs{args.suffix}.png"), dpi=110)
    plt.close(fig)
    notes = f"""
Linear RNN h_t = h_(t-1) W + x_t U, hidden {H}, input {D}, T = {T}, {B} Gaussian sequences (float64),
h_T^k = the recurrence restarted from zero k steps back. The slope is a least-squares fit of
log(mean gap) against k over 3 <= k <= T/2 where the gap is above 1e-11 of ||h_T|| (float64 floor).
Two families of W with ||W||_2 = λ: λ times a random orthogonal matrix (all singular values and
eigenvalue moduli equal λ, where the O(λ^k) bound is attained) and a Gaussian matrix scaled to
||W||_2 = λ (its spectral radius ρ is smaller, and the gap decays at the faster rate ρ^k).
Scaled down from nothing in the paper (it reports no such sweep); sizes are modest for the shared CPU.
"""
    table = markdown_table(
        ["W", "λ", "log λ", "spectral radius ρ", "log ρ", "fitted slope", "slope / log λ", "points", "k range"], rows
    )
    return header("Stable RNNs: outputs close (experiment 1)", args.command, notes) + "\n" + table + f"\n\n![](stable_rnn_outputs{args.suffix}.png)\n"


# ==================================================================================== part 2/3 helpers
def lds_instance(n: int, D: int, T: int, S: int, rho_true: float, gen: torch.Generator):
    """A random Gaussian linear dynamical system and S sequences from it (inputs, targets)."""
    A = rho_true * orthogonal(n, gen)
    Bm = torch.randn(D, n, dtype=D64, generator=gen) / math.sqrt(D)
    C = torch.randn(n, dtype=D64, generator=gen) / math.sqrt(n)
    x = torch.randn(S, T, D, dtype=D64, generator=gen)
    h = torch.zeros(S, n, dtype=D64)
    ys = []
    for t in range(T):
        h = h @ A + x[:, t] @ Bm
        ys.append(h @ C)
    y = torch.stack(ys, 1) + 0.1 * torch.randn(S, T, dtype=D64, generator=gen)
    return x, y


class Regressor(nn.Module):
    """A linear RNN with a linear scalar readout: y_t = h_t c."""

    def __init__(self, D: int, H: int, lam: float, seed: int):
        super().__init__()
        self.rnn = LinearRNN(D, H, lam=lam, projection="svd", bias=False, seed=seed)
        self.c = nn.Parameter(torch.randn(H, generator=torch.Generator().manual_seed(seed + 1)) / math.sqrt(H))

    def forward(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        return self.rnn(x, k=k) @ self.c


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().reshape(-1) for p in model.parameters()])


# ==================================================================================== part 2
def part_gradients(args) -> str:
    """Lemma 2: gradient of the last-step loss, full vs truncated, at the same weights."""
    H, D, T, S = 16, 4, 200, 32
    lams = [0.5, 0.8, 0.9]
    n_inst = 3 if args.quick else 5
    ks = list(range(1, 61)) + [70, 80, 100, 120, 150]
    curves = {}
    rows = []
    for lam in lams:
        gaps = np.zeros((n_inst, len(ks)))
        for inst in range(n_inst):
            gen = torch.Generator().manual_seed(100 * inst + 7)
            x, y = lds_instance(H, D, T, S, 0.9, gen)
            model = Regressor(D, H, lam, seed=inst).double()
            with torch.no_grad():
                model.rnn.weight.copy_(lam * orthogonal(H, gen))  # ||W|| = lam, the bound's worst case

            def grad(k: int | None, model=model, x=x, y=y) -> torch.Tensor:
                model.zero_grad()
                xs = x if k is None else x[:, -k:]  # p_T^k only needs the last k inputs
                pred = model(xs)[:, -1]
                (0.5 * (pred - y[:, -1]) ** 2).mean().backward()
                return flat_grads(model)

            g_full = grad(None)
            for j, k in enumerate(ks):
                gaps[inst, j] = float(torch.linalg.vector_norm(g_full - grad(k)))
        mean = gaps.mean(0)
        karr = np.array(ks, dtype=float)
        floor = 1e-12 * float(torch.linalg.vector_norm(g_full))
        use = (mean > floor) & (karr >= 3)
        slope_gap = np.polyfit(karr[use], np.log(mean[use]), 1)[0]
        slope_over_k = np.polyfit(karr[use], np.log(mean[use] / karr[use]), 1)[0]
        shape = karr * lam**karr
        ratio = mean / shape
        curves[lam] = (karr, mean, shape, use)
        rows.append([lam, fmt(math.log(lam), 4), fmt(slope_gap, 4), fmt(slope_over_k, 4),
                     fmt(float(ratio[use].min()), 3), fmt(float(ratio[use].max()), 3),
                     fmt(float(ratio[use][-1] / ratio[use][0]), 3), f"{int(karr[use].min())}-{int(karr[use].max())}"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for lam, (karr, mean, shape, use) in curves.items():
        (line,) = ax.semilogy(karr[use], mean[use], label=f"λ={lam}: ||∇p_T − ∇p_T^k||")
        c = mean[use][0] / shape[use][0]
        ax.semilogy(karr[use], c * shape[use], "--", color=line.get_color(), alpha=0.6, label=f"γ·k·λ^k (λ={lam})")
    ax.set_xlabel("k")
    ax.set_ylabel("gradient gap (mean over instances)")
    ax.set_title("Experiment 2: gradients close (Lemma 2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"stable_rnn_gradients{args.suffix}.png"), dpi=110)
    plt.close(fig)
    notes = f"""
Random Gaussian linear-system instances: a teacher h*_t = h*_(t-1) A + x_t B, y_t = h*_t C + 0.1 noise
(A = 0.9 x orthogonal, x_t ~ N(0, I)); {S} sequences of length T = {T}, input {D}, hidden {H}.
The model is a linear RNN with readout y_t = h_t c and W = λ x a random orthogonal matrix
(||W||_2 = λ). p_T = mean over sequences of (y_T - ŷ_T)^2 / 2; the gradient is over all of
(W, U, c), full model vs the truncated model at the same weights. Mean over {n_inst} instances per λ.
Lemma 2 bounds the gap by γ k λ^k: if that shape is right, log(gap) - log(k) is linear in k with
slope log λ, and gap / (k λ^k) stays bounded (columns "ratio").
"""
    table = markdown_table(
        ["λ", "log λ", "slope of log gap", "slope of log(gap/k)", "min gap/(kλ^k)", "max gap/(kλ^k)",
         "last/first ratio", "k range"], rows)
    return header("Stable RNNs: gradients close (experiment 2, Lemma 2)", args.command, notes) + "\n" + table + \
        f"\n\n![](stable_rnn_gradients{args.suffix}.png)\n"


# ==================================================================================== part 3
def part_weights(args) -> str:
    """Proposition 2: projected GD on recurrent vs truncated models, alpha/t vs constant step."""
    H, D, T, S, lam = 10, 4, 40, 64, 0.8
    steps = 200 if args.quick else 1500
    ks = [1, 2, 4, 8, 16]
    alpha = 0.5
    const = 0.05
    gen = torch.Generator().manual_seed(3)
    x, y = lds_instance(H, D, T, S, 0.8, gen)
    record = sorted({int(s) for s in np.unique(np.round(np.geomspace(1, steps, 40)))})

    def run(k: int | None, schedule: str) -> dict[int, torch.Tensor]:
        model = Regressor(D, H, lam, seed=0).double()
        opt = torch.optim.SGD(model.parameters(), lr=alpha if schedule == "1/t" else const)
        if schedule == "1/t":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
        register_stability_hook(opt, model)  # projection after every step: ||W||_2 <= lam
        out = {0: flat_params(model)}
        for s in range(1, steps + 1):
            opt.zero_grad()
            loss = (0.5 * (model(x, k=k) - y) ** 2).mean()
            loss.backward()
            opt.step()
            if schedule == "1/t":
                sched.step()
            if s in record:
                out[s] = flat_params(model)
        out["loss"] = float((0.5 * (model(x) - y) ** 2).mean().detach())
        return out

    dist = {}
    losses = {}
    travel = {}
    for schedule in ("1/t", "constant"):
        full = run(None, schedule)
        losses[(schedule, "full")] = full["loss"]
        travel[schedule] = float(torch.linalg.vector_norm(full[steps] - full[0]))
        for k in ks:
            tr = run(k, schedule)
            losses[(schedule, k)] = tr["loss"]
            dist[(schedule, k)] = np.array([float(torch.linalg.vector_norm(full[s] - tr[s])) for s in record])
    rows = []
    rec = np.array(record, dtype=float)
    late = rec >= steps / 10

    def growth(d: np.ndarray) -> str:  # slope of log dist vs log N over the last decade of steps
        ok = late & (d > 0)
        return fmt(float(np.polyfit(np.log(rec[ok]), np.log(d[ok]), 1)[0]), 3) if ok.sum() >= 3 else "-"

    for k in ks:
        d1, d2 = dist[("1/t", k)], dist[("constant", k)]
        rows.append([k, fmt(lam**k * k, 3), fmt(d1[-1], 3), fmt(d1[-1] / travel["1/t"], 3), growth(d1),
                     fmt(d2[-1], 3), fmt(d2[-1] / travel["constant"], 3), growth(d2),
                     fmt(losses[("1/t", k)], 4), fmt(losses[("constant", k)], 4)])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, schedule in zip(axes, ("1/t", "constant")):
        for k in ks:
            ax.loglog(record, np.maximum(dist[(schedule, k)], 1e-16), label=f"k={k}")
        ax.set_xlabel("gradient step N")
        ax.set_title(f"step {'α/t, α=' + str(alpha) if schedule == '1/t' else 'constant ' + str(const)}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("||w_recurr − w_trunc||")
    fig.suptitle("Experiment 3: weights close (Proposition 2), projected GD, ||W||₂ ≤ 0.8")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"stable_rnn_weights{args.suffix}.png"), dpi=110)
    plt.close(fig)
    notes = f"""
Full-batch projected gradient descent (torch SGD + `register_stability_hook`, exact SVD clip to
||W||_2 <= {lam}) on a random Gaussian linear-system instance ({S} sequences, T = {T}, input {D},
hidden {H}; teacher A = 0.8 x orthogonal). Loss = mean over sequences and time steps of
(y_t - ŷ_t)^2 / 2, with ŷ from h_t (recurrent) or h_t^k (truncated). Both models start from the same
weights. Step α/t with α = {alpha}, and a constant step {const} (chosen by hand, not tuned). {steps} steps. Distances over all parameters (W, U, c). Final training loss
of the full model: α/t {fmt(losses[("1/t", "full")], 4)}, constant {fmt(losses[("constant", "full")], 4)}.
"travel" = ||w_N - w_0|| of the recurrent model ({fmt(travel["1/t"], 3)} with α/t, {fmt(travel["constant"], 3)}
with the constant step): the α/t schedule moves the weights less in total, so "dist / travel" is the
fairer comparison. "growth exponent" = slope of log dist vs log N over N >= {steps // 10} (Proposition 2
allows polynomial growth N^(αβ+1) with α/t). "trunc weights, full loss" = training loss of the full
recurrent model evaluated at the truncated model's final weights.
"""
    table = markdown_table(
        ["k", "k·λ^k", "α/t: final dist", "α/t: dist / travel", "α/t: growth exponent", "const: final dist",
         "const: dist / travel", "const: growth exponent", "α/t: trunc weights, full loss",
         "const: trunc weights, full loss"], rows)
    return header("Stable RNNs: weights close (experiment 3, Proposition 2)", args.command, notes) + "\n" + table + \
        f"\n\n![](stable_rnn_weights{args.suffix}.png)\n"


# ==================================================================================== music data
def load_chorales(resolution: float = 1.0) -> tuple[list[np.ndarray], list[str], int]:
    """Bach chorales from music21's bundled corpus as binary piano rolls (frames x pitches).

    Frame i is the set of MIDI pitches sounding at quarter-length offset i * resolution (all
    voices). Cached as .npz. Returns (rolls, names, lowest MIDI pitch).
    """
    cache_dir = os.environ.get("TNMARS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tnmars"))
    path = os.path.join(cache_dir, f"bach_chorales_music21_r{resolution}.npz")
    if os.path.exists(path):
        z = np.load(path, allow_pickle=False)
        rolls = np.split(z["frames"], np.cumsum(z["lengths"])[:-1])
        return rolls, [str(n) for n in z["names"]], int(z["low"])
    from music21 import corpus

    names = list(corpus.chorales.Iterator(numberingSystem="riemenschneider", returnType="filename"))
    events = []
    for name in names:
        score = corpus.parse(name)
        notes = []
        for part in score.parts:
            for n in part.flatten().notes:
                on, dur = float(n.offset), float(n.quarterLength)
                for p in n.pitches:
                    notes.append((on, on + dur, p.midi))
        end = max(b for _, b, _ in notes)
        events.append((name, notes, end))
    low = min(p for _, ns, _ in events for *_, p in ns)
    high = max(p for _, ns, _ in events for *_, p in ns)
    rolls, kept = [], []
    for name, notes, end in events:
        T = int(math.floor(end / resolution))
        roll = np.zeros((T, high - low + 1), dtype=np.uint8)
        for a, b, p in notes:
            i0, i1 = int(math.ceil(a / resolution - 1e-9)), int(math.ceil(b / resolution - 1e-9))
            roll[max(i0, 0) : min(i1, T), p - low] = 1
        if T >= 8:
            rolls.append(roll)
            kept.append(name)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path, frames=np.concatenate(rolls), lengths=np.array([len(r) for r in rolls]), names=np.array(kept),
             low=np.array(low))
    return rolls, kept, low


def split_chorales(rolls: list[np.ndarray], names: list[str]):
    """Deterministic split by a hash-free rule: every 5th chorale (sorted by name) is test."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    test = [rolls[i] for j, i in enumerate(order) if j % 5 == 0]
    train = [rolls[i] for j, i in enumerate(order) if j % 5 != 0]
    return train, test


def batches(rolls: list[np.ndarray], size: int, gen: np.random.Generator | None):
    """Length-bucketed, padded batches: (X (B,T-1,P), Y (B,T-1,P), mask (B,T-1))."""
    order = np.argsort([len(r) for r in rolls], kind="stable")
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    if gen is not None:
        gen.shuffle(groups)
    for g in groups:
        T = max(len(rolls[i]) for i in g)
        P = rolls[g[0]].shape[1]
        arr = np.zeros((len(g), T, P), dtype=np.float32)
        mask = np.zeros((len(g), T - 1), dtype=np.float32)
        for b, i in enumerate(g):
            arr[b, : len(rolls[i])] = rolls[i]
            mask[b, : len(rolls[i]) - 1] = 1
        a = torch.from_numpy(arr)
        yield a[:, :-1], a[:, 1:], torch.from_numpy(mask)


class Sequencer(nn.Module):
    """Recurrent model + linear readout to per-pitch logits (independent Bernoulli outputs)."""

    def __init__(self, rnn: nn.Module, P: int):
        super().__init__()
        self.rnn = rnn
        self.out = nn.Linear(rnn.hidden_size, P)

    def forward(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        return self.out(self.rnn(x, k=k))


def frame_nll(logits: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-frame NLL in nats, number of frames): BCE summed over pitches."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, Y, reduction="none").sum(-1)
    return (bce * mask).sum(), mask.sum()


def evaluate(model: Sequencer, rolls, k: int | None) -> float:
    model.eval()
    tot, n = 0.0, 0.0
    with torch.no_grad():
        for X, Y, M in batches(rolls, 64, None):
            s, c = frame_nll(model(X, k=k), Y, M)
            tot += float(s)
            n += float(c)
    return tot / n


def mars_terms(model: nn.Module) -> torch.Tensor:
    """Sum of log_prior() over the TT recurrent matrices (the MARS layers) of a model."""
    from tnmars.nn import TTRecurrentMatrix

    terms = [m.log_prior() for m in model.modules() if isinstance(m, TTRecurrentMatrix) and m.mars]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def train_music(model: Sequencer, train, *, k: int | None, epochs: int, lr: float, seed: int,
                temperature: tuple[float, float] | None = None) -> dict:
    """Adam, clip 1.0, projection hook; MARS prior / N (N = training frames) when present."""
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    register_stability_hook(opt, model)
    N = sum(len(r) - 1 for r in train)
    from tnmars.nn import TTRecurrentMatrix

    tts = [m for m in model.modules() if isinstance(m, TTRecurrentMatrix) and m.mars]
    n_batches = math.ceil(len(train) / 16)
    total_steps = epochs * n_batches
    step = 0
    t0 = time.perf_counter()
    try:
        for _ in range(epochs):
            model.train()
            for X, Y, M in batches(train, 16, gen):
                if temperature is not None:
                    t_start, t_end = temperature
                    for m in tts:
                        m.masks.temperature = t_start * (t_end / t_start) ** min(step / total_steps, 1.0)
                opt.zero_grad()
                s, c = frame_nll(model(X, k=k), Y, M)
                loss = s / c
                if tts:
                    loss = loss - mars_terms(model) / N
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                step += 1
    except KeyboardInterrupt:  # keep what was trained
        print("interrupted: keeping the model trained so far", file=sys.stderr)
    return {"seconds": time.perf_counter() - t0, "steps": step}


def make_rnn(cell: str, stable: bool, H: int, P: int, seed: int) -> nn.Module:
    if cell == "tanh":
        return TanhRNN(P, H, lam=1.0 if stable else None, projection="power", seed=seed)
    # the paper's stable LSTM: the authors' forget bias of 10 (tnmars's default is 1 since 2026-12-02;
    # the unconstrained LSTM had bias 1 before and after)
    return LSTM(P, H, stable=stable, seed=seed, forget_bias=LSTM_FORGET_BIAS if stable else None)


def concat_test(test) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(test).astype(np.float32))[None]


# ==================================================================================== part 4
def part_music(args) -> str:
    torch.manual_seed(0)
    rolls, names, low = load_chorales()
    train, test = split_chorales(rolls, names)
    P = rolls[0].shape[1]
    H = 32 if args.quick else 64
    epochs = 3 if args.quick else 40
    ks = [2, 8] if args.quick else [1, 2, 4, 8, 16]
    seeds = [0] if args.quick else [0, 1, 2]
    lr = 5e-3
    res: dict = {}
    trained = {}
    for seed in seeds:
        for cell in ("tanh", "lstm"):
            for stable in (True, False):
                for k in [None, *ks]:
                    model = Sequencer(make_rnn(cell, stable, H, P, seed=seed), P)
                    info = train_music(model, train, k=k, epochs=epochs, lr=lr, seed=seed)
                    r = res.setdefault((cell, stable, k), {"loss": [], "sec": [], "as_k": []})
                    r["loss"].append(evaluate(model, test, k))
                    r["sec"].append(info["seconds"])
                    if k is None:
                        r["as_k"].append([evaluate(model, test, kk) for kk in ks])
                        if seed == seeds[0]:
                            trained[(cell, stable)] = model
                    print(seed, cell, stable, k, r["loss"][-1], round(info["seconds"], 1), flush=True)

    def ms(v) -> str:
        v = np.asarray(v, dtype=float)
        return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"

    rows = []
    for (cell, stable, k), r in res.items():
        extra = " / ".join(f"{m:.3f}" for m in np.mean(r["as_k"], axis=0)) if k is None else ""
        rows.append([cell, "stable" if stable else "unstable", "full" if k is None else f"k={k}", ms(r["loss"]),
                     extra, fmt(float(np.median(r["sec"])), 3)])
    # effective stability of the trained full models on the test stream
    xs = concat_test(test)[:, :-1]
    stab_rows = []
    for (cell, stable), model in trained.items():
        model.eval()
        rep = effective_stability(model.rnn, xs, chunk=512)
        stab_rows.append([cell, "stable" if stable else "unstable", fmt(rep.max_jacobian, 4), fmt(rep.mean_jacobian, 4),
                          fmt(rep.quantiles["99%"], 4), fmt(rep.fraction_contractive, 3),
                          fmt(rep.max_trajectory_ratio, 4), fmt(rep.mean_trajectory_rate, 4)])
    # speed: truncated parallel vs sequential evaluation, side by side
    speed_rows = []
    settings_ = [("test set, padded batch", None), ("test set as one stream (B=1)", xs)]
    for cell in ("tanh", "lstm"):
        model = trained[(cell, True)]
        model.eval()
        batch = next(batches(test, len(test), None))[0]
        for label, x in settings_:
            x = batch if x is None else x
            for k in (4, 16):
                with torch.no_grad():
                    funcs = {"sequential": lambda x=x, m=model: m.rnn(x),
                             "truncated": lambda x=x, k=k, m=model: m.rnn(x, k=k)}
                    t = time_interleaved(funcs, repeats=3 if args.quick else 7)
                speed_rows.append([cell, label, f"{tuple(x.shape[:2])}", k, fmt(1e3 * t["sequential"], 4),
                                   fmt(1e3 * t["truncated"], 4), fmt(t["sequential"] / t["truncated"], 3)])
    # plot
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, cell in zip(axes, ("tanh", "lstm")):
        for stable in (True, False):
            name = "stable" if stable else "unstable"
            full = np.mean(res[(cell, stable, None)]["loss"])
            mean = [np.mean(res[(cell, stable, k)]["loss"]) for k in ks]
            std = [np.std(res[(cell, stable, k)]["loss"]) for k in ks]
            (line,) = ax.semilogx(ks, mean, "o-", label=f"{name}: trained & tested truncated")
            ax.fill_between(ks, np.array(mean) - std, np.array(mean) + std, color=line.get_color(), alpha=0.2)
            ax.axhline(full, color=line.get_color(), ls="--", label=f"{name}: full")
            as_k = np.mean(res[(cell, stable, None)]["as_k"], axis=0)
            ax.semilogx(ks, as_k, "x:", color=line.get_color(), label=f"{name}: full model tested at k")
        ax.set_xlabel("truncation k")
        ax.set_title(f"{cell} RNN" if cell == "tanh" else "LSTM")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test NLL per frame (nats)")
    fig.suptitle("Experiment 4: Bach chorales (music21), next-frame prediction")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"stable_rnn_music{args.suffix}.png"), dpi=110)
    plt.close(fig)
    n_frames = sum(len(r) for r in train)
    notes = f"""
Data: the {len(rolls)} Bach chorales bundled with music21 ({names[0]} ...; Riemenschneider numbering,
parsed offline from the package), all voices, sampled at quarter-note resolution into binary piano
rolls over MIDI {low}-{low + P - 1} ({P} pitches). Every 5th chorale (sorted by name) is test:
{len(train)} train ({n_frames} frames) / {len(test)} test. Task: predict frame t+1 from frames <= t;
loss = binary cross-entropy summed over pitches, averaged over frames (NLL per frame, nats), as in
the polyphonic-music benchmarks. Hidden {H}, readout Linear(H, {P}); Adam lr {lr}, batch 16 chorales,
gradient-norm clip 1.0, {epochs} epochs (about where the test NLL stopped improving in a probe run),
seeds {seeds} (mean ± std over seeds; the stability and speed tables use seed {seeds[0]}), float32. Stable tanh RNN: ||W||_2 <= 1 by power
iteration after every step (the authors clip singular values at 1); stable LSTM: the authors' l1
column rescaling and forget bias 10. A truncated model is trained and tested with h_t^k (all t in
parallel); the full models are also evaluated truncated (last column, k = {ks}).
Scaled down vs the paper (hidden 64 instead of ~1000 units, {epochs} epochs, one seed, no tuning) for
the shared 2-core CPU: losses are not comparable to published JSB numbers.
"""
    out = header("Stable vs unstable, full vs truncated on the Bach chorales (experiment 4)", args.command, notes)
    out += "\n## Test NLL per frame\n\n" + markdown_table(
        ["cell", "constraint", "trained/evaluated", "test NLL", f"full model evaluated at k={ks} (mean)",
         "train s (median)"], rows)
    out += f"\n\n![](stable_rnn_music{args.suffix}.png)\n"
    out += ("\n## Effective stability of the trained full models (test set as one stream)\n\n"
            "Jacobian = ||d s_t / d s_(t-1)||_2 of the state map along the data (LSTM state = (c, h));"
            " trajectory ratio = ||s_t - s'_t|| / ||s_(t-1) - s'_(t-1)|| for two runs started 1 apart per"
            " coordinate; rate = its geometric mean.\n\n")
    out += markdown_table(["cell", "constraint", "max Jacobian", "mean Jacobian", "99% Jacobian", "fraction < 1",
                           "max trajectory ratio", "mean trajectory rate"], stab_rows)
    out += ("\n\n## Speed: truncated parallel vs sequential evaluation (trained stable models, no grad)\n\n"
            "Median of repeats, measured interleaved in one run. Sequential = T cell steps on B rows; truncated ="
            " k cell steps on B*T rows.\n\n")
    out += markdown_table(["cell", "input", "(B, T)", "k", "sequential ms", "truncated ms", "speed-up"], speed_rows)
    return out + "\n"


# ==================================================================================== part 5
def part_tt(args) -> str:
    torch.manual_seed(0)
    rolls, names, low = load_chorales()
    train, test = split_chorales(rolls, names)
    P = rolls[0].shape[1]
    H = 64
    epochs = 3 if args.quick else 150
    dense_epochs = 3 if args.quick else 40
    lr = 5e-3
    shape = (4, 4, 4)
    rank = 16
    pi = 1e-2
    alphas = [0.5] if args.quick else [0.5, 0.0, -0.5]

    def tt_rnn(ranks, mars: bool, alpha: float = 0.0) -> TanhRNN:
        return TanhRNN(P, H, lam=1.0, seed=0, recurrent="tt", tt_shape=shape, tt_rank=ranks, mars=mars, pi=pi,
                       alpha=alpha, min_rank=0)  # min_rank=0: the objective of the published table

    rows = []
    probs = {}

    def run(label: str, make, n_epochs: int):
        torch.manual_seed(0)  # same readout initialisation for every row
        model = Sequencer(make(), P)
        tt = model.rnn.weight_tt
        temperature = (0.1, 0.01) if tt is not None and tt.mars else None
        info = train_music(model, train, k=None, epochs=n_epochs, lr=lr, seed=0, temperature=temperature)
        loss = evaluate(model, test, None)
        loss_k = evaluate(model, test, 8)
        other = sum(p.numel() for n, p in model.named_parameters()
                    if "weight_tt" not in n and n != "rnn.weight")
        sel = None
        if tt is None:
            ranks, rec_params, rec_comp = "-", H * H, 1.0
        else:
            sel = tuple(tt.ranks.values())
            ranks = str(sel)
            rec_params = tt.num_params_selected()
            rec_comp = tt.compression()
            if tt.mars:
                probs[label] = {b: torch.sigmoid(v.detach()).numpy() for b, v in tt.masks.bond_logits().items()}
        model_comp = (other + H * H) / (other + rec_params)
        model.eval()
        sigma = model.rnn.spectral_norm("power") if tt is None else tt.spectral_norm(tt.map_masks())
        rows.append([label, n_epochs, ranks, rec_params, fmt(rec_comp, 3), fmt(model_comp, 3), fmt(sigma, 4),
                     fmt(loss, 4), fmt(loss_k, 4), fmt(info["seconds"], 3)])
        print(rows[-1], flush=True)
        return sel

    run("dense, stable", lambda: TanhRNN(P, H, lam=1.0, seed=0), dense_epochs)
    run("dense, stable", lambda: TanhRNN(P, H, lam=1.0, seed=0), epochs)
    run(f"TT rank {rank}, fixed (no MARS), stable", lambda: tt_rnn(rank, False), epochs)
    done = {(rank, rank)}
    for small in [] if args.quick else [4, 8]:  # the loss / size trade-off MARS could exploit
        run(f"TT rank {small}, fixed (no MARS), stable", lambda r=small: tt_rnn(r, False), epochs)
        done.add((small, small))
    for alpha in alphas:
        sel = run(f"TT rank {rank} + MARS (π={pi}, α={alpha}), stable", lambda a=alpha: tt_rnn(rank, True, a), epochs)
        if sel not in done and all(r > 0 for r in sel):
            done.add(sel)
            run(f"TT fixed at ranks {sel} (MARS α={alpha}), from scratch, stable", lambda s=sel: tt_rnn(s, False),
                epochs)
    if probs:
        fig, axes = plt.subplots(1, len(probs), figsize=(6 * len(probs), 3.6), squeeze=False)
        for ax, (label, pr) in zip(axes[0], probs.items()):
            off = 0
            for b, p in pr.items():
                ax.bar(np.arange(len(p)) + off, np.sort(p)[::-1], label=f"bond {b} (sorted)")
                off += len(p) + 2
            ax.axhline(0.5, color="k", ls="--", lw=0.8)
            ax.set_title(label, fontsize=9)
            ax.set_ylabel("mask probability φ")
            ax.legend(fontsize=8)
        fig.suptitle("Experiment 5: final MARS mask probabilities of the TT recurrent matrix")
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"stable_rnn_tt{args.suffix}.png"), dpi=110)
        plt.close(fig)
    notes = f"""
Same data, task and optimiser as experiment 4 (Adam lr {lr}, batch 16 chorales, clip 1.0, hidden {H},
seed 0, one run per row). The recurrent matrix W (64 x 64) is a TT-matrix `tnmars.Network` with shape
{shape} x {shape}, start rank {rank} on both bonds (4,608 core parameters, more than the 4,096 dense
entries), cores as nn.Parameters (`TanhRNN(..., recurrent="tt")`). MARS: hard-concrete masks on both
bonds (π = {pi}, α in {alphas}), temperature decayed exponentially 0.1 -> 0.01 over training, loss = mean
frame NLL - (log prior)/N with N = {sum(len(r) - 1 for r in train)} training frames (Bernoulli(π)
mask prior + N(0, 100) core prior), Adam on everything. MARS needs many steps with the 1/N prior,
so the TT rows train {epochs} epochs; the dense model is shown at {dense_epochs} epochs (where its test NLL
stopped improving in a probe) and at {epochs}. Stability ||W||_2 <= 1 is enforced after every step by
power iteration through network contractions (never the dense matrix) and rescaling the cores,
on both the unmasked and the MAP-masked matrix. Eval uses the MAP masks.
W compression = 4,096 / core parameters at the selected ranks; model compression = (other
parameters + 4,096) / (other parameters + selected core parameters) (the paper's rule; input and
readout weights count as "other"). ||W||_2: the trained eval-mode recurrent matrix by power
iteration. "TT fixed at ranks ..." rows retrain a fixed-rank TT at the ranks a MARS run selected, from
scratch (not run when MARS kept the full ranks, which is the fixed rank-16 row, or closed a bond).
Every row uses the same seed and initialisation of the input and readout weights.
"""
    out = header("TT-matrix recurrent weights with MARS on the Bach chorales (experiment 5)", args.command, notes)
    out += "\n" + markdown_table(["model", "epochs", "selected ranks", "W params", "W compression",
                                  "model compression", "||W||_2", "test NLL", "test NLL (k=8)", "train s"], rows)
    if probs:
        out += f"\n\n![](stable_rnn_tt{args.suffix}.png)\n"
    return out + "\n"


# ==================================================================================== main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", action="append", choices=PARTS, help="run only these parts (repeatable)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (results not for the record)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.command = "python benchmarks/stable_rnn.py" + "".join(" " + a for a in (argv if argv is not None else sys.argv[1:]))
    args.suffix = "_quick" if args.quick else ""
    os.makedirs(RESULTS, exist_ok=True)
    funcs = {"outputs": part_outputs, "gradients": part_gradients, "weights": part_weights, "music": part_music,
             "tt": part_tt}
    for part in args.part or PARTS:
        t0 = time.perf_counter()
        text = funcs[part](args)
        path = write_result(f"stable_rnn_{part}{args.suffix}.md", text)
        print(text)
        print(f"[{part}: {time.perf_counter() - t0:.0f} s -> {path}]", flush=True)


if __name__ == "__main__":
    main()
