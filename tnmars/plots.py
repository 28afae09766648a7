"""Figures for rank selection: mask probabilities, training curves and error-vs-size sweeps.

matplotlib is an optional dependency (``pip install 'tnmars[plot]'``), imported only when a
function here is called. Every function builds a :class:`matplotlib.figure.Figure` without
pyplot (so nothing opens a window or touches global state), returns it, and also writes it
to ``path`` when given, in the format the extension names (``fig.pdf`` is a PDF, ``fig.svg``
an SVG, no extension a PNG).

>>> import numpy as np
>>> from tnmars.plots import plot_mask_probabilities
>>> fig = plot_mask_probabilities({"A": np.array([0.99, 0.97, 0.02, 0.01])})
>>> len(fig.axes)
1
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_mask_probabilities", "plot_training", "plot_sweep", "plot_topology"]

_KEPT = "#1f77b4"
_PRUNED = "#c7c7c7"


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("tnmars.plots needs matplotlib: pip install 'tnmars[plot]'") from err
    return Figure(figsize=(width, height), layout="constrained")


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _step_axis(ax, steps: np.ndarray) -> None:
    """Integer step ticks on the x axis, also for a phase of one or two steps: matplotlib
    widens a single point's axis to +-0.05 and then labels it -0.060 ... 0.060, which its integer
    locator does not prevent (too few integers in range)."""
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(_integer_ticks())
    finite = steps[np.isfinite(steps)] if steps.size else steps
    if finite.size and float(finite.max() - finite.min()) < 2:
        lo, hi = int(np.floor(finite.min())), int(np.ceil(finite.max()))
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_xticks(range(lo, hi + 1))


def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2 and 5 per decade, written as plain numbers (``2,000``, not ``2x10^3``),
    no minor labels: matplotlib's default labels minor ticks of a short log axis too, and
    they collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _finish(fig, path: str | os.PathLike | None, dpi: int):
    """Write ``fig`` to ``path`` in the format its extension names (``.png``, ``.pdf``,
    ``.svg``, ...; PNG when there is none); an unknown extension is a ``ValueError``."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a string or a path; got {type(path).__name__}")
        path = os.fspath(path)
        extension = os.path.splitext(path)[1].lstrip(".").lower()
        if extension and extension not in fig.canvas.get_supported_filetypes():
            raise ValueError(
                f"cannot write a figure as {path!r}: matplotlib writes "
                + ", ".join(sorted(fig.canvas.get_supported_filetypes()))
            )
        fig.savefig(path, dpi=dpi, format=extension or "png")
    return fig


def _host(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch; float() first: NumPy has no bfloat16 (.numpy() raised for it)
        x = x.detach().resolve_conj().resolve_neg().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()
    elif hasattr(x, "get"):  # cupy
        x = x.get()
    return np.asarray(x)


def _as_numpy(x: Any) -> np.ndarray:
    return np.asarray(_host(x), dtype=float).reshape(-1)


def _phi_vector(bond: Any, x: Any) -> np.ndarray:
    """One bond's keep-probabilities as a 1-D float array, or a ValueError naming the bond:
    a 2-D array, a scalar or complex values were flattened or cast and drawn as a rank."""
    try:
        phi = _host(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"probabilities of bond {bond!r} must be a 1-D array of numbers in [0, 1]: {err}") from err
    if phi.ndim != 1:
        raise ValueError(f"probabilities of bond {bond!r} must be a 1-D array (one phi per rank index); got shape "
                         f"{phi.shape}")
    if np.iscomplexobj(phi) or not (np.issubdtype(phi.dtype, np.number) or phi.dtype == bool):
        raise ValueError(f"probabilities of bond {bond!r} must be real numbers in [0, 1]; got dtype {phi.dtype}")
    phi = phi.astype(float)
    if not np.isfinite(phi).all():
        raise ValueError(f"probabilities of bond {bond!r} hold NaN or Inf")
    if phi.size and (phi.min() < 0 or phi.max() > 1):
        raise ValueError(f"probabilities of bond {bond!r} must lie in [0, 1]")
    return phi


def plot_mask_probabilities(
    probabilities: Mapping[str, Any] | Any,
    *,
    threshold: float = 0.5,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    ncols: int = 4,
    dpi: int = 120,
):
    """Bar plot of the keep-probabilities ``phi`` of every bond's mask (the paper's Figure 2).

    One panel per bond; bars above ``threshold`` (kept rank indices) are coloured, the rest
    grey, with the threshold drawn as a dashed line. The panel title gives the selected
    rank out of the maximal one.

    Parameters
    ----------
    probabilities
        ``{bond: phi}`` with one 1-D array per bond, any object with a ``.probabilities``
        attribute such as :class:`tnmars.FitResult`, a :class:`tnmars.nn` layer with masks or
        its ``BondMasks``.
    threshold
        The MAP threshold (0.5: keep where ``phi > 0.5``).
    title
        Figure title.
    path
        If given, the figure is written there (format from the extension; PNG without one).
    ncols
        Panels per row.
    dpi
        Resolution of raster formats such as PNG.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_mask_probabilities({"A": [0.9, 0.1], "B": [0.6, 0.7, 0.2]}, title="phi")
    >>> [ax.get_title() for ax in fig.axes]
    ['bond A: rank 1/2', 'bond B: rank 2/3']
    """
    if not 0.0 <= float(threshold) <= 1.0:  # (threshold=2 drew its line out of the panels, unseen)
        raise ValueError(f"threshold must lie in [0, 1], as the probabilities do; got {threshold}")
    probs = _keep_probabilities(probabilities)
    if isinstance(probabilities, Mapping) and not probabilities:
        # (an outside probe passed result.relaxation_probabilities of a default fit: empty, no relaxation ran)
        raise ValueError("probabilities is empty; it must be non-empty. A fit's relaxation_probabilities are filled only when the MARS "
                         "relaxation ran (prior='bernoulli' or proposal='mars'); the default prior='bic' selects "
                         "without it. Pass the fit result itself to plot its selected masks")
    if not isinstance(probs, Mapping) or not probs:
        raise ValueError("probabilities must be a non-empty mapping {bond: array of phi}, a fit result, a "
                         "tnmars.nn layer with masks or its BondMasks")
    bonds = list(probs)
    phis = {b: _phi_vector(b, probs[b]) for b in bonds}  # (every bond checked before a figure exists)
    # a fit's selection is 0/1 (kept or not), not probabilities: said so on the axis (the
    # relaxation's phi is result.relaxation_probabilities)
    binary = all(np.isin(phis[b], (0.0, 1.0)).all() for b in bonds)
    ncols = max(1, min(int(ncols), len(bonds)))
    nrows = -(-len(bonds) // ncols)
    fig = _figure(3.2 * ncols, 2.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, bond in enumerate(bonds):
        ax = axes[k // ncols][k % ncols]
        phi = phis[bond]
        kept = phi > threshold
        ax.bar(np.arange(phi.size), phi, color=np.where(kept, _KEPT, _PRUNED), width=0.8)
        ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(-0.7, max(phi.size, 1) - 0.3)
        ax.xaxis.set_major_locator(_integer_ticks())
        name = bond if str(bond).startswith("edge ") else f"bond {bond}"
        ax.set_title(f"{name}: rank {int(kept.sum())}/{phi.size}")
        ax.set_xlabel("rank index")
        if k % ncols == 0:
            ax.set_ylabel("selected (1: kept)" if binary else r"$\phi$ (keep probability)")
    for k in range(len(bonds), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def _keep_probabilities(source: Any) -> Any:
    """``{bond: phi}`` from a mapping, a fit result (``.probabilities``), a ``BondMasks``
    (``.probabilities()``), a layer holding one (``.masks``), or a :func:`tnmars.search` result
    (``{"edge i-j": phi}`` for its edges)."""
    pairs = getattr(source, "bond_pairs", None)
    if pairs and hasattr(source, "fit"):  # a tnmars.search result: its edges, not the fully connected bonds' letters
        return {"edge {}-{}".format(*pairs[b]): phi for b, phi in source.fit.probabilities.items()
                if pairs.get(b) in source.edges}
    masks = getattr(source, "masks", None)
    if masks is not None and not isinstance(source, Mapping) and hasattr(masks, "probabilities"):
        source = masks
    elif hasattr(source, "masks") and masks is None and not hasattr(source, "probabilities"):
        raise ValueError(f"this {type(source).__name__} has no MARS masks (masks is None): no keep probabilities")
    if isinstance(source, Mapping) or not hasattr(source, "probabilities"):
        named = getattr(source, "named_modules", None)
        if not isinstance(source, Mapping) and callable(named):  # a whole model: its forward was called
            layers = [name for name, m in named() if hasattr(getattr(m, "masks", None), "probabilities")]
            raise ValueError(f"this {type(source).__name__} has no keep probabilities of its own; "
                             + (f"its MARS layers are {', '.join(map(repr, layers))}: pass one "
                                f"(model.get_submodule({layers[0]!r}))" if layers else "it holds no MARS layer"))
        return source
    probs = source.probabilities
    return probs() if callable(probs) and not isinstance(probs, Mapping) else probs


def _history_columns(history: Any) -> dict[str, list]:
    """Accept ``{"step": [...], "loss": [...], ...}`` or ``[{"step": .., "loss": ..}, ...]``."""
    owner, history = history, getattr(history, "history", history)
    if isinstance(history, Mapping):
        cols = {k: list(v) for k, v in history.items()}
    elif isinstance(history, Sequence) and history and all(isinstance(h, Mapping) for h in history):
        keys = list(dict.fromkeys(k for h in history for k in h))
        cols = {k: [h.get(k) for h in history] for k in keys}
    else:
        raise ValueError("history must be a dict of lists, a list of dicts, or a fit result with .history")
    lengths = {len(v) for v in cols.values()}
    if not cols or lengths == {0}:
        raise ValueError(_empty_history(owner))
    if len(lengths) != 1:
        raise ValueError(f"history columns have different lengths {sorted(lengths)}")
    if "step" not in cols:
        cols["step"] = list(range(lengths.pop()))
    return cols


def _empty_history(owner: Any) -> str:
    """Why there is nothing to plot: for a fit result, that it trained nothing (and why, when
    its network says so) rather than a bare "empty"."""
    if not hasattr(owner, "history") or not hasattr(owner, "network"):
        return "history is empty: nothing to plot"
    ranks = getattr(owner, "ranks", None)
    ranks = list(ranks.values()) if isinstance(ranks, Mapping) else list(ranks or ())
    why = " (its network is the zero tensor: the data were all zero)" if ranks and not any(ranks) else ""
    return (f"the fit result's history is empty: the fit ran no relaxation step and no search evaluation{why}, "
            "so there is no training curve to plot")


def plot_training(
    history: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | Any,
    *,
    bonds: Sequence[str] | None = None,
    loss_keys: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
):
    """Loss and selected ranks over training, from a fit or training history.

    Left: every loss-like column present (``loss``, ``nll``, ``map_loss``, ``val_loss`` ...,
    or ``loss_keys``) against ``step``, on a log scale when positive; one panel per ``phase``
    when the history has several (a fit's relaxation loss and its search's criterion are
    different quantities). Right panel: the MAP rank of each bond against ``step``.

    Parameters
    ----------
    history
        ``{"step": [...], "loss": [...], "ranks": [(r_A, r_B, ...), ...]}`` (the format of
        :attr:`tnmars.FitResult.history`), a list of per-record dicts, or an object with
        ``.history``. ``ranks`` entries may be tuples or ``{bond: rank}`` dicts.
    bonds
        Names for the rank curves when ``ranks`` holds tuples (default ``bond 0, 1, ...``,
        or the fit result's ``.bonds``).
    loss_keys
        Which columns to draw on the loss panel.
    title, path, dpi
        Figure title; destination file (format from its extension); resolution of raster formats.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> h = {"step": [0, 10, 20], "loss": [3.0, 1.0, 0.5], "ranks": [(4, 4), (3, 2), (2, 2)]}
    >>> fig = plot_training(h, bonds=["A", "B"])
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['loss', 'selected rank']
    """
    pairs = getattr(history, "bond_pairs", None)
    if pairs and hasattr(history, "fit"):  # a tnmars.search result: its fit's history, bonds named as edges
        history = history.fit
        if bonds is None:
            bonds = ["edge {}-{}".format(*pairs[b]) if b in pairs else b for b in history.bonds]
    if bonds is None:
        names = getattr(history, "bonds", None)
        bonds = list(names) if names is not None else None
    cols = _history_columns(history)
    steps = np.asarray(cols["step"], dtype=float)
    if loss_keys is None:
        loss_keys = [k for k in cols if ("loss" in k or k in ("nll", "error", "relative_error")) and k != "step"]
    for key in loss_keys:
        if key not in cols:
            raise ValueError(f"history has no column {key!r}; it has {sorted(cols)}")
    has_ranks = "ranks" in cols and any(r is not None for r in cols["ranks"])
    # a fit's phases log different quantities as "loss" (the relaxation's objective, about 1; the
    # criterion, -18,000 on the same fit): one panel each, or the relaxation reads as a flat line
    phases = [p for p in dict.fromkeys(cols.get("phase", ())) if p is not None]
    groups = ([(p, np.array([q == p for q in cols["phase"]])) for p in phases] if len(phases) > 1 else
              [(None, np.ones(len(steps), dtype=bool))])
    if not loss_keys and not has_ranks:
        raise ValueError(f"history has neither a loss column nor ranks to draw; it has {sorted(cols)}")
    if not loss_keys:  # ranks only: no empty loss panel
        groups = []
    fig = _figure(4.6 * len(groups) + (4.6 if has_ranks else 0.9), 3.6)
    axes = fig.subplots(1, len(groups) + has_ranks, squeeze=False)[0]
    for ax, (phase, rows) in zip(axes, groups):
        positive = True
        for key in loss_keys:
            values = np.asarray([np.nan if v is None else float(v) for v in cols[key]])[rows]
            ax.plot(steps[rows], values, label=key, marker="o" if rows.sum() < 3 else None)
            positive &= bool(np.all(values[np.isfinite(values)] > 0))
        if loss_keys and positive:
            ax.set_yscale("log")
        _step_axis(ax, np.asarray(steps[rows], dtype=float))
        ax.set_ylabel("loss")
        if phase is not None:
            ax.set_title(str(phase))
        if loss_keys:
            ax.legend(frameon=False)
    if has_ranks:
        ax = axes[-1]
        rows = cols["ranks"]  # (None where a record has no ranks: a gap in the curves)
        known = [r for r in rows if r is not None]
        if isinstance(known[0], Mapping):
            names = list(dict.fromkeys(k for r in known for k in r))
            table = np.array([[np.nan] * len(names) if r is None else [r.get(n, np.nan) for n in names]
                              for r in rows], dtype=float)
        else:
            width = len(list(known[0]))
            if any(len(list(r)) != width for r in known):
                raise ValueError("every record's ranks must list the same bonds")
            table = np.array([[np.nan] * width if r is None else list(r) for r in rows], dtype=float)
            names = list(bonds) if bonds is not None else [str(k) for k in range(table.shape[1])]
            if len(names) != table.shape[1]:
                raise ValueError(f"{len(names)} bond names given for {table.shape[1]} rank columns")
        styles = ("-", "--", ":", "-.")  # (matplotlib cycles ten colours: bonds A and K were one blue line)
        for j, name in enumerate(names):
            ax.step(steps, table[:, j], where="post", linestyle=styles[(j // 10) % len(styles)],
                    label=name if str(name).startswith("edge ") else f"bond {name}")
        _step_axis(ax, np.asarray(steps, dtype=float))
        ax.set_ylabel("selected rank")
        ax.yaxis.set_major_locator(_integer_ticks())
        ax.legend(frameon=False, ncols=2 if len(names) > 4 else 1)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def _is_sweep_result(obj: Any) -> bool:
    """A :class:`tnmars.fitting.sweep.SweepResult` (or anything shaped like one)."""
    return all(hasattr(obj, name) for name in ("params", "errors", "ranks", "limits"))


def _sweep_series(params: Any, errors: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (params, errors)}`` as checked float arrays, from either calling form."""
    if isinstance(params, Mapping):
        if errors is not None:
            raise ValueError("give either a mapping {name: (params, errors)} or two sequences, not both")
        series = {str(k): v for k, v in params.items()}
    else:
        if errors is None:
            if not hasattr(params, "__len__") and not hasattr(params, "__array__"):  # (not a series of numbers)
                # (a fit or search result here read "errors are missing", which hid the real mistake)
                raise TypeError(f"plot_sweep takes a SweepResult (tnmars.sweep), a mapping {{name: (params, errors)}} "
                                f"or two sequences params, errors; got a {type(params).__name__} (for a fit's "
                                "history use plot_training, for a search result plot_topology)")
            raise ValueError("errors are missing: plot_sweep(params, errors), or plot_sweep(sweep_result)")
        series = {"": (params, errors)}
    if not series:
        raise ValueError("nothing to plot: the sweep is empty")
    out = {}
    for name, pair in series.items():
        try:
            xs, ys = pair
        except (TypeError, ValueError):
            raise ValueError(f"series {name!r} must be a pair (params, errors)") from None
        xs, ys = _as_numpy(xs), _as_numpy(ys)
        if xs.shape != ys.shape or xs.size == 0:
            raise ValueError(f"series {name!r}: params and errors must be non-empty and of equal length")
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise ValueError(f"series {name!r}: params and errors must be finite numbers (no NaN or Inf)")
        out[name] = (xs, ys)
    return out


def plot_sweep(
    params: Sequence[float] | Mapping[str, tuple[Sequence[float], Sequence[float]]] | Any,
    errors: Sequence[float] | None = None,
    *,
    labels: Sequence[str] | None = None,
    xlabel: str = "parameters",
    ylabel: str = "relative error",
    logx: bool | None = None,
    logy: bool = False,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
    heldout: Sequence[float] | None = None,
):
    """Error against model size for a sweep (e.g. fixed ranks vs MARS-selected ranks).

    Parameters
    ----------
    params, errors
        Either two equal-length sequences (one series), or ``params`` a mapping
        ``{series name: (params, errors)}`` with ``errors`` left out, or ``params`` the
        :class:`~tnmars.fitting.sweep.SweepResult` of :func:`tnmars.sweep` (its points are
        labelled with their ranks, as ``result.plot()`` does).
    labels
        Text next to each point of a single series (e.g. the ranks).
    xlabel, ylabel, logx, logy, title
        Axis labels and scales; figure title. ``logx`` defaults to a log scale unless a
        point has 0 parameters (a zero network, as the sweep of all-zero data gives), where
        a log scale has no place for it: then the scale is linear.
    path, dpi
        Destination file (format from its extension) and resolution of raster formats.
    heldout
        For one series (a completion's sweep), each point's cross-validated error, drawn
        dashed beside it (:attr:`SweepResult.heldout_errors`, which a sweep result brings
        itself where every point has one): the fitted entries' error always falls with the
        size, the held-out one tells when a larger network predicts worse.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_sweep({"fixed rank": ([100, 400, 900], [0.5, 0.2, 0.1]), "MARS": ([350], [0.12])})
    >>> sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    ['MARS', 'fixed rank']
    """
    if _is_sweep_result(params) and not isinstance(params, Mapping):
        if errors is not None:
            raise ValueError("give a sweep result alone: plot_sweep(result), or result.plot()")
        from .fitting.sweep import _label

        if labels is None:  # (its own where it has them: "zero network", "(interrupted)")
            labels = params.labels() if hasattr(params, "labels") else [_label(r) for r in params.ranks]
        if heldout is None and hasattr(params, "heldout_errors"):
            held = list(params.heldout_errors)
            heldout = held if held and all(h is not None for h in held) else None
        params, errors = params.params, params.errors
    series = _sweep_series(params, errors)
    if heldout is not None:
        if len(series) != 1:
            raise ValueError("heldout goes with one series (a sweep's points)")
        ((name, (xs, _)),) = series.items()
        held_errors = np.asarray(heldout, dtype=float)
        if held_errors.shape != xs.shape or not np.isfinite(held_errors).all() or (held_errors < 0).any():
            raise ValueError(f"heldout needs one finite error >= 0 per point ({xs.size}); got {list(heldout)}")
        if logy and (held_errors <= 0).any():
            raise ValueError("heldout errors must be positive on a log scale (pass logy=False)")
    if logx is None:
        logx = all((xs > 0).all() for xs, _ in series.values())
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    for name, (xs, ys) in series.items():
        if (ys < 0).any() or (xs < 0).any():  # (on linear axes too: no relative error or size is negative)
            axis = "params" if (xs < 0).any() else "relative errors"
            raise ValueError(f"series {name!r}: {axis} cannot be negative; got {(xs if axis == 'params' else ys).min():g}")
        if (logx and (xs <= 0).any()) or (logy and (ys <= 0).any()):
            axis = "params" if logx and (xs <= 0).any() else "errors"
            raise ValueError(f"series {name!r}: {axis} must be positive on a log scale (pass logx=False / logy=False)")
        order = np.argsort(xs)
        ax.plot(xs[order], ys[order], marker="o", label=name or None)
        if labels is not None and len(series) == 1:
            if len(labels) != xs.size:
                raise ValueError(f"{len(labels)} labels for {xs.size} points")
            for x, y, text in zip(xs, ys, labels):
                ax.annotate(str(text), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if heldout is not None:
        if not name:
            ax.lines[0].set_label("entries fitted")
        ax.plot(xs[order], held_errors[order], marker="s", linestyle="--",
                label="held out (cross-validated, against the deviations from the mean)")
    if logx:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if any(series) or heldout is not None:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def _circle_order(order: int, pairs: Mapping[tuple[int, int], int]) -> list[int]:
    """The cores in depth-first order, each part from its smallest end (a node of least
    degree), neighbours by number; lone cores last.

    >>> _circle_order(4, {(0, 2): 2, (1, 2): 3, (1, 3): 2})
    [0, 2, 1, 3]
    """
    adj: dict[int, list[int]] = {k: [] for k in range(order)}
    for i, j in pairs:
        adj[i].append(j)
        adj[j].append(i)
    seen: set[int] = set()
    out: list[int] = []
    linked = [k for k in range(order) if adj[k]]
    for root in sorted(linked, key=lambda k: (len(adj[k]), k)) + [k for k in range(order) if not adj[k]]:
        if root in seen:
            continue
        stack = [root]
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            out.append(k)
            stack.extend(sorted((m for m in adj[k] if m not in seen), reverse=True))
    return out


def plot_topology(
    edges: Mapping[tuple[int, int], int] | Any,
    order: int | None = None,
    *,
    names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
):
    """Draw a tensor network's graph: one node per core (its mode), one line per edge,
    thicker for higher ranks and labelled with the rank.

    Parameters
    ----------
    edges
        ``{(i, j): rank}`` between cores ``i`` and ``j``, or a structure-search result
        (:class:`tnmars.fitting.structure.StructureResult`, which also gives ``order`` and
        the mode sizes).
    order
        Number of cores (default: the result's, or one more than the largest core named).
    names
        Node labels (default: ``"k"``, or ``"k (n)"`` with the mode size for a result).
    title, path, dpi
        Figure title; PNG destination and resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_topology({(0, 1): 3, (1, 2): 2, (2, 3): 4, (0, 3): 2})
    >>> len(fig.axes[0].lines), [t.get_text() for t in fig.axes[0].texts][:4]
    (4, ['3', '2', '4', '2'])
    """
    if hasattr(edges, "edges") and hasattr(edges, "order"):
        result = edges
        edges, order = result.edges, order or result.order
        if names is None:
            names = [f"{k} ({n})" for k, n in enumerate(result.network.shape)]
        if title is None:
            title = result.topology + (" (interrupted: not final)" if result.fit.interrupted else "")
    if not isinstance(edges, Mapping):
        raise TypeError("edges must be a mapping {(i, j): rank} or a tnmars.search result")
    pairs = {}
    for key, rank in edges.items():
        try:
            if isinstance(key, (str, bytes)):  # ("01" read as the edge (0, 1); "1-12" as three digits)
                raise TypeError
            i, j = (int(v) for v in key)
        except (TypeError, ValueError):
            raise ValueError(f"edge {key!r} must be a pair of core numbers (i, j)") from None
        if i == j or min(i, j) < 0:
            raise ValueError(f"edge {key!r} must join two different cores numbered from 0")
        if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer, float, np.floating)) \
                or not float(rank).is_integer() or rank < 1:
            raise ValueError(f"edge {key!r} has rank {rank!r}: a rank is a whole number >= 1 (an edge of rank 0 "
                             "is no edge; leave it out)")
        edge = (min(i, j), max(i, j))
        if edge in pairs and pairs[edge] != int(rank):  # ((0, 1) and (1, 0): one edge, two ranks)
            raise ValueError(f"edge {edge} is given twice, with ranks {pairs[edge]} and {int(rank)}")
        pairs[edge] = int(rank)
    if order is None:
        if not pairs:
            raise ValueError("no edges and no order: give order= (the number of cores) to draw cores without edges")
        order = 1 + max(max(e) for e in pairs)
    if order < 1 or any(max(e) >= order for e in pairs):
        raise ValueError(f"order={order} does not cover the cores the edges join")
    if names is not None and len(names) != order:
        raise ValueError(f"{len(names)} names for {order} cores")
    # nodes on a circle in depth-first order of the graph: a chain or a ring is drawn as
    # one, whatever its mode order (modes in index order made a chain 0-2-1-3 a cross)
    slot = np.empty(order, dtype=int)
    slot[_circle_order(order, pairs)] = np.arange(order)
    angles = np.pi / 2 - 2 * np.pi * slot / order
    xy = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    fig = _figure(4.2, 4.2)
    ax = fig.subplots()
    top = max(pairs.values(), default=1)
    for (i, j), rank in pairs.items():
        (x0, y0), (x1, y1) = xy[i], xy[j]
        ax.plot([x0, x1], [y0, y1], color=_KEPT, linewidth=1.0 + 4.0 * np.log(rank) / np.log(max(top, 2)),
                solid_capstyle="round", zorder=1)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(rank), ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"}, zorder=3)
    ax.scatter(xy[:, 0], xy[:, 1], s=500, color="white", edgecolors="black", zorder=2)
    for k in range(order):
        label = names[k] if names is not None else str(k)
        ax.annotate(label, xy[k], xytext=xy[k] * 1.28, ha="center", va="center", fontsize=9)
    ax.set_xlim(-1.55, 1.55)
    ax.set_ylim(-1.55, 1.55)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)
