"""Size budgets for tensorized models: the ranks of several layers chosen together.

``tensorize(model, budget=...)`` gives the converted layers together at most a parameter
count (or at least a compression ratio of their dense weights). A uniform share per layer
wastes it: a layer whose weight is nearly low-rank needs few parameters, another many. So
every layer is decomposed at a ladder of uniform ranks (:data:`RANK_LADDER`), and the budget
is spent greedily, one step of one layer at a time, where the weights' relative squared
error falls most per parameter added, from rank 1 everywhere (the multiple-choice knapsack
by marginal gains, as for the rank budgets of :func:`tnmars.fit`). MARS fine-tuning afterwards
only closes indices, so the model stays within the budget.

>>> import torch.nn as nn
>>> from tnmars.nn.convert import from_linear
>>> layers = {"a": nn.Linear(64, 64), "b": nn.Linear(64, 16)}
>>> ranks = allocate_ranks(layers, lambda m, r: from_linear(m, "tt", rank=r), limit=1200)
>>> sum(from_linear(layers[n], "tt", rank=r).num_params for n, r in ranks.items()) <= 1200
True
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

__all__ = ["RANK_LADDER", "allocate_ranks", "weight_error"]

#: the uniform ranks tried per layer (up to the rank at which the layer is as large as the dense one)
RANK_LADDER = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)


def weight_error(source: nn.Module, layer: nn.Module) -> float:
    """``||W_layer - W||^2 / ||W||^2`` for a decomposed ``layer`` of ``source``'s weight (0 for
    a zero weight that the layer reproduces). The layer's weight at its MAP masks (eval mode),
    not a training draw: the same layer always gets the same error."""
    was_training = layer.training
    with warnings.catch_warnings():  # (eval() of fresh masks that start closed warns of a training that never ran)
        warnings.filterwarnings("ignore", message=".*(MARS closed every index|every mask of bond)")
        layer.eval()
        try:
            with torch.no_grad():
                approx = layer.dense_weight().detach().to(torch.float64)
        finally:
            layer.train(was_training)
    with torch.no_grad():
        w = source.weight.detach().to(torch.float64)
        approx = approx.reshape(w.shape)
        total = float(w.pow(2).sum())
        return float((approx - w).pow(2).sum()) / total if total > 0 else float(approx.abs().max() > 0)


def _ladder(source: nn.Module, build: Callable[[nn.Module, int], nn.Module]) -> list[tuple[int, int, float]]:
    """``(rank, parameters, relative squared error)`` at each rank of the ladder while the
    layer stays smaller than the dense one (at least rank 1); parameters strictly grow."""
    out: list[tuple[int, int, float]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ranks clipped to what a bond can use; sizes above dense
        for rank in RANK_LADDER:
            layer = build(source, rank)
            if out and (layer.num_params >= layer.dense_size or layer.num_params <= out[-1][1]):
                break  # as large as the dense layer, or clipped: no larger rank helps
            error = getattr(layer, "conversion_error", None)  # (a conversion records it: not computed twice)
            out.append((rank, int(layer.num_params), error * error if error is not None else weight_error(source, layer)))
    return out


def allocate_ranks(layers: Mapping[str, nn.Module], build: Callable[[nn.Module, int], nn.Module],
                   limit: int) -> dict[str, int]:
    """The uniform rank of every layer (``build(module, rank)`` decomposes one) such that the
    decomposed layers together have at most ``limit`` parameters and the sum of their
    weights' relative squared errors is small: greedy by error reduction per parameter.
    A ``ValueError`` when even rank 1 everywhere exceeds ``limit``."""
    ladders = {name: _ladder(module, build) for name, module in layers.items()}
    step = dict.fromkeys(ladders, 0)
    used = sum(ladder[0][1] for ladder in ladders.values())
    if used > limit:
        raise ValueError(f"the budget allows {limit:,} parameters but the {len(layers)} layers need {used:,} "
                         "at rank 1: raise the budget or convert fewer layers")
    while True:
        best, best_gain = None, 0.0
        for name, ladder in ladders.items():
            k = step[name]
            if k + 1 >= len(ladder):
                continue
            added = ladder[k + 1][1] - ladder[k][1]
            if used + added > limit:
                continue
            gain = (ladder[k][2] - ladder[k + 1][2]) / added
            if best is None or gain > best_gain:
                best, best_gain = name, gain
        if best is None:
            break
        k = step[best]
        used += ladders[best][k + 1][1] - ladders[best][k][1]
        step[best] = k + 1
    return {name: ladders[name][step[name]][0] for name in ladders}
