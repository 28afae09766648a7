"""What :func:`tnmars.fit` returns."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network import Network, compression_text

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """The selected network and how it was selected.

    Attributes
    ----------
    network: the **pruned** network at the selected ranks, in the data's units, backend and dtype.
    bonds, ranks, max_ranks: bond names, the selected rank of each, the largest rank allowed.
    probabilities: bond -> the selected binary mask over ``max_ranks`` (1.0 for the kept
        indices, first, then 0.0): it always agrees with ``ranks``.
    relaxation_probabilities: bond -> ``phi = sigmoid(logit)`` of the MARS relaxation when it
        ran (``prior="bernoulli"`` or ``proposal="mars"``), else empty. With the default
        Occam criterion the selection may differ from the relaxation's MAP masks.
    full_network: the relaxation's trained network at the maximal ranks (masks not
        applied), or ``None`` when no relaxation ran.
    relative_error: ``||T - data|| / ||data||`` over the observed entries.
    heldout_error: the same over the unobserved entries that hold finite values; ``None`` when
        there are none, or when they are all zero (no relative error against a zero reference).
    log_likelihood: ``-mean((T - data)^2)`` over the observed entries (data units).
    noise_variance: the noise variance the selected fit implies, ``SSE / (N - D)`` (data units;
        ``inf`` where float64 cannot hold it, for data of magnitude near 1e160 and above), at
        least the criterion's floor, ``settings["noise_floor"]`` (an exact fit reads the floor).
    criterion: what decided the ranks (``"bic"`` or ``"bernoulli"``); objective: its value at
        the selected ranks (nats; lower is better; ``nan`` for ``"bernoulli"``).
    proposal: where the selection started (``"spectral"``, ``"greedy"``, ``"mars"``, or
        ``"start"``: a network given as the proposal).
    selection: the accepted steps of the search, ``{"move", "ranks", "objective",
        "relative_error"}`` each (the first is the proposal).
    compression, num_params: dense size / parameters, and parameters, of ``network``
        (``compression`` is ``nan`` for the zero network: see :attr:`Network.compression`).
    history: one record per relaxation record (``"relaxation"``), per accepted step of the
        selection (``"selection"``: the proposal, then each move the search took; the networks
        it evaluated and rejected are counted in ``evaluations``, not recorded), and the polish
        (``"polish"``; ``"result"`` for the last record of an interrupted fit, which skips it):
        columns ``step`` (the record's position), ``phase``, ``loss`` (the phase's objective per
        observation), ``ranks``. ``callback`` sees every evaluation, numbered apart.
    interrupted: ``True`` when Ctrl-C (or a callback) stopped the fit: the best state so far
        is returned. steps_run: Adam steps of the relaxation; evaluations: networks refitted by
        the selection; seconds: wall time; settings: what was used, and for a completion
        ``settings["cross_validation"]``: the median relative error of refits without a random
        tenth of the observed entries on those entries (``worst_error``: the worst refit),
        against the fit's own (both against the deviations from the mean), which :meth:`summary`
        shows: the quality to expect at unobserved entries, which a noise variance cannot tell
        from structure the observations do not pin down. The refits start from the fit, so it
        leans optimistic, and far where the fit warned (``diagnostics``): there read it as a
        lower bound (:func:`~tnmars.fitting.result.cross_validation_text` has the measurements).
        Absent for a completion exact on its observed entries.
    diagnostics: what the fit found wrong with its own answer, one message each (a completion
        whose unobserved values the observed entries do not determine:
        :mod:`tnmars.fitting.diagnostics`); the fit also warned with each. Empty when nothing
        was found, which does not prove the answer right.
    """

    network: Network
    bonds: tuple[str, ...]
    ranks: tuple[int, ...]
    max_ranks: tuple[int, ...]
    probabilities: dict[str, np.ndarray]
    relative_error: float
    heldout_error: float | None
    log_likelihood: float
    noise_variance: float
    compression: float
    num_params: int
    criterion: str = "bic"
    objective: float = float("nan")
    proposal: str = "spectral"
    selection: list[dict[str, Any]] = field(default_factory=list)
    relaxation_probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    full_network: Network | None = None
    history: dict[str, list] = field(default_factory=dict)
    interrupted: bool = False
    steps_run: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)

    @property
    def ranks_by_bond(self) -> dict[str, int]:
        """Bond symbol -> selected rank (the symbols of :attr:`Network.bonds`)."""
        return dict(zip(self.bonds, self.ranks))

    @property
    def ranks_by_label(self) -> dict[Any, int]:
        """Bond label -> selected rank, for a fitted :class:`~tnmars.Network` built from label
        lists (its bonds keep their index symbols; ``min_rank`` takes the labels); a bond
        without a label is keyed by its symbol.

        >>> import numpy as np, tnmars
        >>> net = tnmars.Network([("row", "inner"), ("inner", "col")], dims={"row": 6, "col": 5, "inner": 3},
        ...                      output=["row", "col"])
        >>> x = np.outer(np.arange(1.0, 7.0), np.arange(1.0, 6.0))
        >>> tnmars.fit(x, net, progress=False).ranks_by_label
        {'inner': 1}
        """
        label_of = {symbol: label for label, symbol in (self.network.labels or {}).items()}
        return {label_of.get(b, b): r for b, r in zip(self.bonds, self.ranks)}

    def to_tensor(self) -> Any:
        """The fitted tensor (the completion, for missing data): ``network.to_tensor()``, in the
        data's units, backend and dtype (a mean fitted apart is in the network's ranks), as
        tensorly's decompositions give theirs.

        >>> import numpy as np, tnmars
        >>> x = np.outer(np.arange(1.0, 7.0), np.arange(1.0, 6.0))
        >>> bool(np.allclose(tnmars.fit(x, "iA,Aj", progress=False).to_tensor(), x))
        True
        """
        return self.network.to_tensor()

    def summary(self) -> str:
        """A short human-readable report."""
        how = f"{self.criterion} criterion from the {self.proposal} proposal"
        lines = [
            f"tnmars.fit: {self.network.spec}  ({self.settings.get('backend')}, {how}, "
            f"{self.evaluations} refits, {self.seconds:.1f} s{', interrupted' if self.interrupted else ''})",
            "  ranks     " + ", ".join(f"{b}={r}/{m}" for b, r, m in zip(self.ranks_by_label, self.ranks,
                                                                           self.max_ranks)),
            f"  relative error {self.relative_error:.4g} on observed entries"
            + (f", {self.heldout_error:.4g} held out" if self.heldout_error is not None else ""),
            f"  noise variance {self.noise_variance:.4g} (data units)"
            + (", the criterion's floor: the fit is exact to the precision it resolves"
               if math.isfinite(self.noise_variance)  # (past float64, both are inf: no floor is read)
               and self.noise_variance <= self.settings.get("noise_floor", -1.0) * (1 + 1e-9) else ""),
            f"  {self.num_params:,} parameters for {self.network.dense_size:,} entries: "
            + compression_text(self.network),
        ]
        checked = cross_validation_text(self.settings, warned=bool(self.diagnostics))
        if checked:
            lines.append(f"  cross-validated  {checked}")
        centred = centring_text(self.settings)
        if centred:
            lines.append(f"  centred   {centred}")
        lines += [f"  WARNING   {message}" for message in self.diagnostics]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"FitResult(ranks={self.ranks}, relative_error={self.relative_error:.4g}, "
                f"compression={_compression_repr(self.network)}, interrupted={self.interrupted})")


def cross_validation_text(settings: Mapping[str, Any] | None, warned: bool = False) -> str | None:
    """A completion's held-out refits (``settings["cross_validation"]``) in words: what the
    observed entries let a user expect at the unobserved ones. A fit's own error cannot tell
    noise from structure the observations do not pin down, and both read as a noise variance.

    The refits start from the fit, which saw the entries they leave out, so the figure leans
    optimistic, and far where the fit is poor (``warned``: the fit warned about itself).
    Measured (``benchmarks/completion_cv.py``, 2026-12-04) on 84 completions (TT, Tucker, TR and
    tree networks, 9-80% observed; the refits' median against the error at the truly missing
    entries): 0.68-1.43 times it on the 27 good completions, 0.78-1.89 on 10 middling ones,
    and 0.02-1.3 on 24 poor ones (below half of it on 6: extrapolating Tucker completions as
    low as 0.02 of it, a tree at 0.24 for 1.64), every one of which warned. Refits from
    perturbed cores (each entry times 1 + N(0, 1)) or fresh random starts were tried and not
    kept: they read good completions at 10-20% observed up to 9 and 39 times too high (such
    refits land in other minima)."""
    checked = (settings or {}).get("cross_validation")
    if not checked:
        return None
    worst = checked.get("worst_error")
    text = (f"median error {checked['median_error']:.3g} on the observed entries left out of "
            f"{checked['refits']} refits ({checked['left_out_share']:.0%} each"
            + (f"; the worst {worst:.3g}" if worst is not None else "") + "), against "
            f"{checked['fitted_error']:.3g} on the entries fitted (both against the deviations from the mean, "
            "where 1 is no better than the mean; the refits start from this fit, so it leans optimistic")
    if warned:
        return text + ", and where the fit warns, as here, the missing entries may be far worse off)"
    return text + ")"


def centring_text(settings: Mapping[str, Any] | None) -> str | None:
    """What a fit of data far from zero did with their mean, when it fitted them without it
    (:mod:`tnmars.fitting.centring`): its ranks hold the mean's index."""
    offset = (settings or {}).get("offset")
    if not offset or not offset.get("fitted_without_mean"):
        return None
    return (f"fitted without the data's mean ({offset['mean']:.6g}), then plus it: one more index on the bonds "
            "of a spanning tree of the cores, where the deviations' fit did not hold it already")


def _compression_repr(network: Network) -> str:
    """``12.5`` for a repr, or ``'zero tensor'`` for a network with a bond of rank 0 (whose
    ratio of dense size to parameters would read as a compression)."""
    if not compression_text(network).startswith("compression "):
        return "'zero tensor'"
    return f"{network.compression:.3g}"
