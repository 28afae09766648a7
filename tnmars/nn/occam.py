"""Occam (BIC) pruning after MARS training: close the rank indices that do not pay for their parameters.

Why
---
MARS selects ranks by a relaxed MAP under a Bernoulli prior on each mask entry. That prior
charges the same ``log(pi)`` for every kept index, whatever the index costs in parameters, so
on problems where one more index improves the training fit a little (a surplus component
fitted to noise, or to the labels' fine structure) MARS keeps it: on the paper's toy
problem (Table 1, ``benchmarks/nn_toy_linear.py``) it keeps 18 indices on average for a
true rank of 16, as in the paper. :func:`tnmars.fit` met the same over-selection and follows
its MARS phase by an Occam step (``prior="bic"``): a MAP search under the Bayesian
information criterion, which charges ``(1/2) log N`` nats per *parameter*.

:func:`occam_prune` is that step for any model with MARS layers. After training, it closes
kept indices one at a time, greedily (backward elimination): each round it measures, for
every kept index of every bond, how much the summed training negative log-likelihood rises
when that index alone is closed (``delta``), and closes the one with the most negative
``delta - penalty``, where ``penalty = strength * (1/2) ln(N) * (parameters the index
frees)``; it stops when no closure pays, or when every closure that would pay takes the
training nll past ``max_nll_rise`` nats per example over the start (0.05 by default: on
small data the BIC alone can cost a classifier most of its accuracy). The parameters an index frees are read from the
layer's structure (:meth:`~tnmars.nn.TensorizedLayer.num_params_at`), so a TT bond between
two big cores costs more than a bond next to a small one, exactly as in ``fit``'s
``prior="bic"``.

The masks stay MAP masks: closing an index sets its logit to :data:`CLOSED_LOGIT`; the cores
are not changed (no refit). Slice the model afterwards with :func:`tnmars.nn.compress`.

Cost: one ``nll`` evaluation per kept index per round, with one round per closed index plus
a final one, so about ``(closed + 1) * kept`` full passes over the data given to ``nll``.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..network import Network
from .base import warn_user
from .gauge import svd_gauge_
from .masks import BondMasks
from .training import _inner, mars_modules

#: Logit given to an index that :func:`occam_prune` closes. A hard-concrete sample is
#: ``clamp(-0.1 + 1.2 sigmoid((logit + logit(u)) / T), 0, 1)`` with ``u`` clamped to
#: ``[1e-6, 1 - 1e-6]`` (so ``|logit(u)| <= 13.82``); it is positive only when
#: ``logit + logit(u) > -2.40 T``. At -20 that cannot happen for any temperature up to 2.5
#: (MARS anneals 0.1 -> 0.01): the sample is exactly 0, no data gradient reaches the logit,
#: and the Bernoulli prior (``pi < 0.5``) only pushes it further down. Further MARS training
#: therefore never reopens a closed index.
CLOSED_LOGIT = -20.0


@dataclass
class OccamClosure:
    """One index closed by :func:`occam_prune`, in the order they were closed."""

    layer: str
    bond: str
    index: int
    #: rise of the summed training nll when the index was closed (negative: the fit improved)
    delta: float
    #: ``strength * (1/2) ln N * parameters freed`` at the ranks the model had then
    penalty: float
    #: summed training nll after this closure
    nll: float


@dataclass
class OccamBond:
    """One bond of one MARS layer, before and after :func:`occam_prune`."""

    layer: str
    bond: str
    rank_before: int
    rank_after: int
    #: penalty of one index of this bond at the starting ranks
    penalty_before: float
    #: penalty of one index of this bond at the final ranks (what one more index would cost)
    penalty_after: float
    #: the closures of this bond, in order
    closures: list[OccamClosure] = field(default_factory=list)
    #: index -> delta nll of closing it, measured in the last round, for every index still kept
    kept_deltas: dict[int, float] = field(default_factory=dict)
    #: index -> delta nll of closing it alone, measured in the first round, for every index kept at the start
    first_deltas: dict[int, float] = field(default_factory=dict)

    @property
    def closed(self) -> list[int]:
        """Indices closed, in order."""
        return [c.index for c in self.closures]


@dataclass
class OccamReport:
    """What :func:`occam_prune` did. ``str(report)`` is a readable table.

    ``bonds``: one :class:`OccamBond` per bond of every MARS layer that was considered;
    ``closures``: every closure in order; ``nll_before`` / ``nll_after``: the summed training
    nll; ``bic_before`` / ``bic_after``: ``nll + strength (1/2) ln N * (parameters of the
    considered layers at their ranks)``; ``evaluations``: calls of ``nll`` (the cost);
    ``skipped``: MARS modules whose parameter count is unknown, left as they were;
    ``interrupted``: Ctrl-C stopped the search (the closures so far are kept);
    ``limited``: ``max_nll_rise`` refused a closure the BIC would have taken (the search
    stopped short of the BIC's answer, with the fit kept within the limit).
    """

    num_train: float
    strength: float
    nll_before: float
    nll_after: float
    bic_before: float
    bic_after: float
    evaluations: int
    bonds: list[OccamBond]
    closures: list[OccamClosure]
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    limited: bool = False
    #: the gauge the closures were judged in (``"svd"`` or ``"as trained"``)
    gauge: str = "as trained"

    @property
    def ranks_before(self) -> dict[str, dict[str, int]]:
        """Layer name -> bond -> MAP rank before pruning."""
        return self._ranks("rank_before")

    @property
    def ranks_after(self) -> dict[str, dict[str, int]]:
        """Layer name -> bond -> MAP rank after pruning."""
        return self._ranks("rank_after")

    def _ranks(self, attr: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for b in self.bonds:
            out.setdefault(b.layer, {})[b.bond] = getattr(b, attr)
        return out

    def table(self) -> str:
        """Markdown table, one row per bond."""
        rows = ["| layer | bond | rank before | rank after | penalty / index | closed (index: delta nll) "
                "| smallest delta nll kept |", "|---|---|---|---|---|---|---|"]
        for b in self.bonds:
            closed = ", ".join(f"{c.index}: {c.delta:+.1f}" for c in b.closures) or "-"
            kept = f"{min(b.kept_deltas.values()):.1f}" if b.kept_deltas else "-"
            pen = (f"{b.penalty_before:.1f}" if b.penalty_before == b.penalty_after
                   else f"{b.penalty_before:.1f} -> {b.penalty_after:.1f}")
            rows.append(f"| {b.layer or '(model)'} | {b.bond} | {b.rank_before} | {b.rank_after} | {pen} | {closed} "
                        f"| {kept} |")
        return "\n".join(rows)

    def __str__(self) -> str:
        head = (f"Occam pruning (BIC, strength {self.strength:g}, N = {self.num_train:g}): "
                f"{len(self.closures)} indices closed, nll {self.nll_before:.1f} -> {self.nll_after:.1f}, "
                f"nll + penalty {self.bic_before:.1f} -> {self.bic_after:.1f}, {self.evaluations} nll evaluations, "
                f"{self.gauge} gauge")
        tail = " (interrupted)" if self.interrupted else " (stopped by max_nll_rise)" if self.limited else ""
        lines = [head + tail, "", self.table()]
        if self.skipped:
            lines += ["", "skipped (no parameter count): " + ", ".join(self.skipped)]
        return "\n".join(lines)


@dataclass
class _Unit:
    name: str
    masks: BondMasks
    count: Callable[[Mapping[str, int]], int]
    module: nn.Module | None = None


#: what ``occam_prune(gauge=...)`` accepts
GAUGES = ("both", "svd", "as trained")


def _shared_cores(model: nn.Module, units: list[_Unit]) -> dict[str, str]:
    """Unit name -> where else one of its cores is held, for the units whose cores another module
    also holds (weight tying, ``b.cores = a.cores``): re-gauging them would change the other
    holder's function (its masks differ), so the SVD gauge skips them."""
    model = _inner(model)  # (the names mars_modules gives)
    paths: dict[int, list[str]] = {}
    for path, p in model.named_parameters(remove_duplicate=False):
        paths.setdefault(id(p), []).append(path)
    aliases: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(mod), []).append(name + "." if name else "")
    out = {}
    for u in units:
        own = aliases.get(id(u.module), [])
        for p in getattr(u.module, "cores", None) or ():
            other = [q for q in paths.get(id(p), []) if not any(q.startswith(a) for a in own)]
            if other:
                out[u.name] = other[0]
                break
    return out


def _to_svd_gauge(units: list[_Unit], skip: Mapping[str, str] = {}) -> None:  # noqa: B006 (read only)
    """Every unit's tree bonds in their SVD gauge among the MAP-kept indices
    (:func:`tnmars.nn.gauge.svd_gauge_`; the eval-mode function is unchanged), but those in
    ``skip`` (cores shared with another module, :func:`_shared_cores`)."""
    for u in units:
        if u.name in skip:
            continue
        mod = u.module
        spec, cores = getattr(mod, "spec", None), getattr(mod, "cores", None)
        sites = getattr(mod, "sites", None) or getattr(getattr(mod, "_mm", None), "sites", None)
        if isinstance(spec, str) and cores is not None and sites:
            svd_gauge_(spec, list(cores), u.masks.keep(), sites)


def _param_counter(mod: nn.Module) -> Callable[[Mapping[str, int]], int] | None:
    """``ranks -> parameters`` for a MARS module: tensorized layers have ``num_params_at``;
    the tensorized recurrent matrix has ``network()`` (a :class:`tnmars.Network`)."""
    counter = getattr(mod, "num_params_at", None)
    if callable(counter):
        return counter
    network = getattr(mod, "network", None)
    if callable(network):
        net = network()
        if isinstance(net, Network):
            return net.num_params_at
    return None


def _check_args(num_train: float, strength: float) -> tuple[float, float]:
    if isinstance(num_train, bool) or not isinstance(num_train, numbers.Real):
        raise TypeError(f"num_train (the number of training examples N) must be a number; got {num_train!r}")
    if not math.isfinite(num_train) or num_train < 1:
        raise ValueError(f"num_train (the number of training examples N) must be finite and >= 1; got {num_train}")
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise TypeError(f"strength must be a number; got {strength!r}")
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be finite and >= 0; got {strength}")
    return float(num_train), float(strength)


def _call_nll(nll: Callable[[nn.Module], float], model: nn.Module) -> float:
    value = nll(model)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"nll(model) must return one number (the summed nll); got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.detach().item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"nll(model) must return a number (the summed nll); got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"nll(model) returned a non-finite value ({value}); occam_prune needs the finite summed "
                         "negative log-likelihood of the training set")
    return value


#: rise of the summed training nll per example (nats) past which :func:`occam_prune` warns:
#: 0.05 nats of cross-entropy per example is a visible loss of accuracy for a classifier
LOUD_NLL_RISE = 0.05


def occam_prune(model: nn.Module, nll: Callable[[nn.Module], float], num_train: float, *, strength: float = 1.0,
                max_nll_rise: float | None = LOUD_NLL_RISE, gauge: str = "both", progress: bool = False) -> OccamReport:
    """Close MARS-kept rank indices that do not pay for their parameters under the BIC.

    Greedy backward elimination on the MAP masks (see the module docstring for why): each
    round closes the kept index with the most negative ``delta - penalty``, where ``delta`` is
    the rise of ``nll(model)`` when that index alone is closed and ``penalty = strength * 0.5
    * ln(num_train) * (parameters the index frees)``; it stops when no closure pays (a closure
    that does not raise the nll at all always pays). This is the criterion of
    :func:`tnmars.fit`'s ``prior="bic"``, applied to a trained network. A bond keeps at least
    its masks' ``min_rank`` indices (default 1); with ``min_rank=0`` it may lose every index
    (rank 0: the layer then outputs its bias only) if that pays too.

    Parameters
    ----------
    model:
        A model with MARS layers (:func:`tnmars.nn.mars_modules`; DDP and
        ``torch.compile``'s wrapper are unwrapped: layers are named as in the model itself). Every
        :class:`~tnmars.nn.TensorizedLayer` with masks and every
        :class:`~tnmars.nn.TTRecurrentMatrix` with masks takes part; another module with MARS
        masks but no parameter count (neither ``num_params_at`` nor ``network()``) is left as
        it is and listed in :attr:`OccamReport.skipped`.
    nll:
        ``nll(model) -> float``: the summed (not mean) negative log-likelihood of the training
        set under the model as it is. It is called in eval mode (MAP masks) under
        ``torch.no_grad``; :func:`classification_nll` builds one for a classifier,
        :func:`regression_nll` for a regression.
    num_train:
        ``N``, the number of training observations behind ``nll`` (>= 1).
    strength:
        Multiplies the penalty (>= 0): 1 is the BIC, larger prunes more, 0 closes only the
        indices whose closure does not raise the nll.
    max_nll_rise:
        The most the summed training nll may rise over this call, in nats per example
        (default :data:`LOUD_NLL_RISE`, 0.05): a closure past it is not taken, and when the BIC
        would have taken one, a warning says so and ``report.limited`` is True. The BIC counts
        every parameter as a degree of freedom, which a network's are not, so on small data
        it can close most of a classifier's indices (on 1,400 digits a default 64-256-256-10
        MLP fell from 97% test accuracy to chance with the limit off,
        ``benchmarks/results/nn_occam_limit.md``); ``None`` is the BIC alone. The limit is
        per call, measured from the nll at the start of the call: a second call may take the
        nll up to ``max_nll_rise`` further (to bound several calls, pass the remaining
        allowance, ``max_nll_rise - (report.nll_after - first_nll_before) / num_train``).
    gauge:
        ``"both"`` (default): the search below in each gauge, from the same start, keeping the
        one that ends at the lower ``nll + penalty`` (twice the ``nll`` evaluations). Neither
        gauge wins everywhere: on TT recurrent matrices trained to a rank-one ``W`` the SVD
        gauge closed 2 and 3 indices where the trained gauge closed 0 and 1, but that one
        index, closed in the trained gauge, lowered the nll by 71,000 nats and the test error
        22-fold (a component the MAP masks kept and the eval-mode model was better without),
        which no singular direction isolates.
        ``"svd"``: before the search and after every closure, every bond of a
        layer whose network is a tree (TT, TT-matrix, Tucker, low-rank; not a ring, nor CP's
        shared bond) is brought to its SVD gauge among its kept indices
        (:mod:`tnmars.nn.gauge`): each kept index one singular direction of the matrix the
        bond splits the network into, so closing an index removes that direction and no more.
        The eval-mode function is unchanged; the cores change. In the gauge training leaves, a
        low-rank weight is spread over every index and no single closure is cheap: a TT
        recurrent matrix trained to a numerically rank-one ``W`` kept 5-8 of 8 indices, each
        closure costing 18,000-28,000 nats. ``"as trained"`` judges the cores as they are.
        A layer whose cores another module also holds (tied weights, ``b.cores = a.cores``)
        is never re-gauged (a warning says so): its other holder, with other masks, would
        compute something else.
    progress:
        A tqdm bar over ``nll`` evaluations.

    Returns an :class:`OccamReport`. The model is changed in place: each closed index's logit
    is set to :data:`CLOSED_LOGIT` (further MARS training does not reopen it); with
    ``gauge="svd"`` the cores are re-gauged (same eval-mode function), otherwise not touched. Every module's ``training`` flag is restored afterwards. Ctrl-C stops the search
    and keeps what was closed so far (``report.interrupted``); any other error restores the
    logits as they were and re-raises.

    >>> import torch, tnmars.nn as tnn
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(tnn.LowRankLinear(8, 3, rank=4, bias=False))
    >>> layer = model[0]
    >>> with torch.no_grad():
    ...     _ = layer.masks.logits.fill_(3.0)    # MAP rank 4 ...
    ...     layer.cores[0][:, 1:] = 0.0          # ... but only index 0 carries the weight
    ...     _ = layer.cores[0].mul_(20.0)
    >>> X = torch.randn(500, 8)
    >>> y = (X @ layer.cores[0] @ layer.cores[1]).argmax(1).detach()
    >>> report = tnn.occam_prune(model, tnn.classification_nll(X, y), num_train=500)
    >>> report.ranks_before, report.ranks_after
    ({'0': {'A': 4}}, {'0': {'A': 1}})
    >>> layer.selected_ranks(), round(report.bonds[0].penalty_before, 2)   # (1/2) ln(500) * (8 + 3)
    ({'A': 1}, 34.18)
    """
    num_train, strength = _check_args(num_train, strength)
    if max_nll_rise is not None:
        if isinstance(max_nll_rise, bool) or not isinstance(max_nll_rise, numbers.Real):
            raise TypeError(f"max_nll_rise must be a number (nats per example) or None; got {max_nll_rise!r}")
        if not math.isfinite(max_nll_rise) or max_nll_rise < 0:
            raise ValueError(f"max_nll_rise must be finite and >= 0 (or None for the BIC alone); got {max_nll_rise}")
    if not callable(nll):
        raise TypeError(f"nll must be a callable nll(model) -> float; got {nll!r}")
    if gauge not in GAUGES:
        raise ValueError(f"gauge must be one of {GAUGES}; got {gauge!r}")
    if gauge == "both":
        return _better_gauge(model, nll, num_train, strength, max_nll_rise, progress)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    units: list[_Unit] = []
    skipped: list[str] = []
    for name, mod in mars_modules(model):
        if getattr(mod, "warmup", False):  # (a layer, or a tensorized recurrent matrix: set_warmup sets both)
            raise ValueError(f"MARS module {name or '(model)'!r} is in warm-up (its masks are not applied, so closing "
                             "an index would not change the output); call tnmars.nn.set_warmup(model, False) first")
        counter = _param_counter(mod)
        if counter is None:
            skipped.append(name or type(mod).__name__)
        else:
            units.append(_Unit(name, mod.masks, counter, mod))
    if not units:
        raise ValueError("the model has no MARS layers (tensorized layers with masks) that occam_prune can prune"
                         + (f"; skipped for lack of a parameter count: {skipped}" if skipped else ""))

    bic_unit = strength * 0.5 * math.log(num_train)
    shared = _shared_cores(model, units) if gauge == "svd" else {}
    if shared:
        warn_user("occam_prune(gauge='svd') leaves in the trained gauge the layers " + ", ".join(
            f"{n or '(model)'!r} (a core also held as {o!r})" for n, o in shared.items()) + ": their cores are shared "
            "with another module, whose function re-gauging them would change; they are judged as trained")

    def penalties(unit: _Unit, ranks: dict[str, int]) -> dict[str, float]:
        # the parameters of a bond's last kept index (of its first index at rank 0)
        return {b: bic_unit * (unit.count({**ranks, b: max(r, 1)}) - unit.count({**ranks, b: max(r, 1) - 1}))
                for b, r in ranks.items()}

    def total_params() -> int:
        return sum(u.count(u.masks.ranks()) for u in units)

    flags = {mod: mod.training for mod in model.modules()}
    saved = [u.masks.logits.detach().clone() for u in units]
    start_ranks = [u.masks.ranks() for u in units]
    start_pen = [penalties(u, r) for u, r in zip(units, start_ranks)]
    closures: list[OccamClosure] = []
    last_deltas: dict[tuple[int, str], dict[int, float]] = {}
    first_deltas: dict[tuple[int, str], dict[int, float]] | None = None
    evaluations = 0
    interrupted = False
    refused = None  # the best closure max_nll_rise refused in the last round: (unit, bond, index, nll)
    from tqdm.auto import tqdm

    bar = tqdm(total=0, disable=not progress, desc="occam_prune", unit="eval", leave=False)
    try:
        model.eval()
        with torch.no_grad():
            nll_now = nll_before = _call_nll(nll, model)  # before any change (the gauge's rounding included)
            evaluations += 1
            if gauge == "svd":
                _to_svd_gauge(units, shared)
                nll_now = _call_nll(nll, model)  # the deltas are judged from the gauged cores
                evaluations += 1
            bic_before = nll_before + bic_unit * total_params()
            # (from the untouched model; the gauge keeps the function, up to rounding, which is not a rise)
            ceiling = math.inf if max_nll_rise is None else max(nll_before, nll_now) + max_nll_rise * num_train
            while True:
                # every kept index of every bond: (unit, bond, index, penalty of closing it)
                candidates = []
                for ui, u in enumerate(units):
                    views = u.masks.bond_logits()
                    pen = penalties(u, u.masks.ranks())
                    for b, n in zip(u.masks.bonds, u.masks.sizes):
                        kept = torch.nonzero(views[b] > 0).flatten().tolist()
                        if len(kept) <= min(u.masks.min_rank, n):
                            continue  # at min_rank: the masks would keep another index in its place
                        for i in kept:
                            candidates.append((ui, b, i, pen[b]))
                bar.total += len(candidates)
                bar.refresh()
                round_deltas: dict[tuple[int, str], dict[int, float]] = {}
                best = over = None
                for ui, b, i, pen in candidates:
                    view = units[ui].masks.bond_logits()[b]
                    old = view[i].item()
                    view[i] = CLOSED_LOGIT
                    try:
                        value = _call_nll(nll, model)
                    finally:
                        view[i] = old
                    evaluations += 1
                    bar.update()
                    delta = value - nll_now
                    round_deltas.setdefault((ui, b), {})[i] = delta
                    key = (delta - pen, delta)
                    if value > ceiling:  # past max_nll_rise: not a candidate
                        if over is None or key < over[0]:
                            over = (key, ui, b, i, value)
                    elif best is None or key < best[0]:
                        best = (key, ui, b, i, pen, value)
                last_deltas = round_deltas
                if first_deltas is None:
                    first_deltas = round_deltas
                pays = best is not None and (best[0][0] < 0 or best[0][1] <= 0)
                if not pays:
                    if over is not None and (over[0][0] < 0 or over[0][1] <= 0):
                        refused = over[1:]
                    break
                (score, delta), ui, b, i, pen, value = best
                units[ui].masks.bond_logits()[b][i] = CLOSED_LOGIT
                if gauge == "svd":  # the closure moved the other bonds' singular directions
                    _to_svd_gauge([units[ui]], shared)
                    value = _call_nll(nll, model)
                    evaluations += 1
                nll_now = value
                closures.append(OccamClosure(units[ui].name, b, i, delta, pen, value))
                bar.set_postfix(closed=len(closures), nll=f"{nll_now:.4g}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        with torch.no_grad():
            for u, s in zip(units, saved):
                u.masks.logits.copy_(s)
        raise
    finally:
        bar.close()
        for mod, flag in flags.items():
            mod.training = flag
    if evaluations == 0:  # interrupted before the first nll: nothing measured, nothing changed
        raise KeyboardInterrupt
    if interrupted:
        last_deltas = {}

    bonds: list[OccamBond] = []
    for ui, u in enumerate(units):
        ranks = u.masks.ranks()
        pen_after = penalties(u, ranks)
        for b in u.masks.bonds:
            bonds.append(OccamBond(u.name, b, start_ranks[ui][b], ranks[b], start_pen[ui][b], pen_after[b],
                                   [c for c in closures if c.layer == u.name and c.bond == b],
                                   dict(last_deltas.get((ui, b), {})), dict((first_deltas or {}).get((ui, b), {}))))
    rise = (nll_now - nll_before) / num_train
    if refused is not None and not interrupted:
        ui, b, i, value = refused
        warn_user(f"occam_prune stopped at max_nll_rise={max_nll_rise:g} nats per example (training nll "
                  f"{nll_before:.4g} -> {nll_now:.4g}, {len(closures)} indices closed): the BIC would close more, "
                  f"next index {i} of bond {b!r} of layer {units[ui].name or '(model)'!r}, which would take the nll "
                  f"to {value:.4g} ({(value - nll_before) / num_train:.3g} nats per example over the start). A "
                  "network's parameters are rarely all effective degrees of freedom, so on small data the BIC "
                  "alone can cost a model most of its accuracy; pass max_nll_rise=None for it, or a larger limit.")
    if rise > LOUD_NLL_RISE:
        warn_user(f"occam_prune raised the training nll from {nll_before:.4g} to {nll_now:.4g} ({rise:.3g} nats per "
                  f"example) by closing {len(closures)} indices: the BIC's penalty ({strength:g} x ln(N)/2 = "
                  f"{bic_unit:.3g} nats per parameter, N = {num_train:g}) outweighed that much of the fit. A network's "
                  "parameters are rarely all effective degrees of freedom, so on small data the BIC can cost a "
                  "model most of its accuracy: check it, and use strength < 1 (or more data) if it fell. The "
                  "closed indices' logits can be restored from a copy of the model taken before.")
    return OccamReport(num_train=num_train, strength=strength, nll_before=nll_before, nll_after=nll_now,
                       bic_before=bic_before, bic_after=nll_now + bic_unit * total_params(), evaluations=evaluations,
                       bonds=bonds, closures=closures, skipped=skipped, interrupted=interrupted,
                       limited=refused is not None and not interrupted, gauge=gauge)


def _state(model: nn.Module) -> list[torch.Tensor]:
    """The tensors occam_prune changes: every MARS module's logits and cores."""
    out: list[torch.Tensor] = []
    for _, mod in mars_modules(model):
        out.append(mod.masks.logits)
        out.extend(getattr(mod, "cores", ()))
    return out


def _better_gauge(model: nn.Module, nll: Callable[[nn.Module], float], num_train: float, strength: float,
                  max_nll_rise: float | None, progress: bool) -> OccamReport:
    """``occam_prune(gauge="both")``: the search in the trained gauge, then from the same start
    in the SVD gauge; the model and report of the lower ``nll + penalty`` are kept, with the
    warnings of that search only and the evaluations of both."""
    tensors = _state(model)
    start = [t.detach().clone() for t in tensors]
    runs = []
    for gauge in ("as trained", "svd"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = occam_prune(model, nll, num_train, strength=strength, max_nll_rise=max_nll_rise, gauge=gauge,
                                 progress=progress)
        runs.append((report, caught, [t.detach().clone() for t in tensors]))
        if report.interrupted:  # Ctrl-C: what this search closed stands
            break
        if gauge == "as trained":
            with torch.no_grad():
                for t, s in zip(tensors, start):
                    t.copy_(s)
    report, caught, state = min(runs, key=lambda run: run[0].bic_after) if not runs[-1][0].interrupted else runs[-1]
    with torch.no_grad():
        for t, s in zip(tensors, state):
            t.copy_(s)
    report.evaluations = sum(run[0].evaluations for run in runs)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return report


def classification_nll(X: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> Callable[[nn.Module], float]:
    """``nll(model)`` for :func:`occam_prune`: the summed cross-entropy of ``model(X)`` against
    the class labels ``y``, in batches of ``batch_size`` rows, without gradients. A model with
    one logit per example is a binary classifier (labels 0 or 1, the loss of
    ``BCEWithLogitsLoss``); with one score per class, ``F.cross_entropy``.

    Batches are moved to the device of the model's first parameter. The sum (not the mean) is
    what the BIC compares with ``(1/2) ln N`` per parameter.

    >>> import torch
    >>> X, y = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    >>> nll = classification_nll(X, y, batch_size=3)
    >>> model = torch.nn.Linear(4, 2)
    >>> expected = torch.nn.functional.cross_entropy(model(X), y, reduction="sum").item()
    >>> abs(nll(model) - expected) < 1e-4
    True
    """
    batch_size = _check_data(X, y, batch_size, labels=True)

    def nll(model: nn.Module) -> float:
        total = 0.0
        for out, target in _batches(model, X, y, batch_size):
            if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):  # one logit: a binary classifier
                if bool(((target != 0) & (target != 1)).any()):
                    raise ValueError("classification_nll: the model gives one logit per example (a binary "
                                     "classifier, as for BCEWithLogitsLoss), so the labels must be 0 or 1")
                logits = out.reshape(-1)
                total += F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="sum").item()
                continue
            top = int(target.max()) if target.numel() else -1
            if top >= out.shape[-1]:
                raise ValueError(f"classification_nll: label {top} but the model gives {out.shape[-1]} class scores")
            total += F.cross_entropy(out, target, reduction="sum").item()
        return total

    return nll


def regression_nll(X: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> Callable[[nn.Module], float]:
    """``nll(model)`` for :func:`occam_prune` on a regression: the summed Gaussian negative
    log-likelihood of the targets ``y`` around ``model(X)`` with the noise variance at its
    maximum-likelihood value, ``SSE / n``: ``(n / 2) (ln(2 pi SSE / n) + 1)`` over the ``n``
    target values. A closure is then judged as ``tnmars.fit``'s ``prior="bic"`` judges a
    rank: by the log of the residual sum of squares it leaves, whatever the targets' units.

    Batches of ``batch_size`` rows, without gradients, on the device of the model's first
    parameter. An exact fit (``SSE = 0``) is refused: its nll is minus infinity.

    >>> import math, torch
    >>> X, y = torch.randn(10, 4), torch.randn(10, 2)
    >>> model = torch.nn.Linear(4, 2)
    >>> sse = ((model(X) - y) ** 2).sum().item()
    >>> abs(regression_nll(X, y, batch_size=3)(model) - 10 * (math.log(2 * math.pi * sse / 20) + 1)) < 1e-4
    True
    """
    batch_size = _check_data(X, y, batch_size, labels=False)
    count = y.numel()

    def nll(model: nn.Module) -> float:
        sse = 0.0
        for out, target in _batches(model, X, y, batch_size):
            if out.shape != target.shape:
                raise ValueError(f"model(X) has shape {tuple(out.shape)} per batch but y has {tuple(target.shape)}: "
                                 "regression_nll compares them entry by entry")
            sse += float(((out - target.to(out.dtype)) ** 2).sum())
        if not sse > 0.0:
            raise ValueError(f"the model fits the targets exactly (residual sum of squares {sse}): a Gaussian nll at "
                             "zero noise is minus infinity, and no rank index can be judged by it")
        return 0.5 * count * (math.log(2.0 * math.pi * sse / count) + 1.0)

    return nll


def _check_data(X: torch.Tensor, y: torch.Tensor, batch_size: int, labels: bool) -> int:
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"X and y must be torch tensors; got {type(X).__name__} and {type(y).__name__}")
    if X.ndim < 1 or (labels and y.ndim != 1) or (not labels and y.ndim < 1) or len(X) != len(y):
        what = "y (1-D labels)" if labels else "y (targets, rows first)"
        raise ValueError(f"X (rows first) and {what} must have the same number of rows; got shapes "
                         f"{tuple(X.shape)} and {tuple(y.shape)}")
    if len(X) == 0:
        raise ValueError("X and y are empty: the nll of no data carries no evidence")
    if not labels and not y.is_floating_point():
        raise TypeError(f"regression targets must be floating point; got {y.dtype} (class labels? use "
                        "classification_nll)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    return int(batch_size)


def _batches(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int):
    """``(model(X_batch), y_batch)`` pairs without gradients, on the model's device."""
    param = next(model.parameters(), None)
    device = X.device if param is None else param.device
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            yield model(X[s:s + batch_size].to(device)), y[s:s + batch_size].to(device)
