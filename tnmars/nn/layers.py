"""Tensorized PyTorch layers whose ranks are selected by MARS.

Every layer's weight is a :class:`tnmars.Network` (TT, TR, CP, Tucker or a user spec) whose
cores are ``nn.Parameter`` s. With ``mars=True`` (the default) each bond carries a learned
mask (:class:`tnmars.nn.BondMasks`): a hard-concrete sample in training mode, the MAP mask
(``phi > 0.5``) in eval mode. ``mars=False`` gives the plain fixed-rank layer.
``layer.compressed()`` (or :func:`tnmars.nn.compress` for a whole model) slices the cores
to the selected ranks.

>>> import torch
>>> from tnmars.nn import TensorizedLinear
>>> layer = TensorizedLinear(784, 625, rank=20, in_shape=(7, 4, 7, 4), out_shape=(5, 5, 5, 5))
>>> layer.max_ranks
{'A': 20, 'B': 20, 'C': 20}
>>> layer(torch.randn(3, 784)).shape
torch.Size([3, 625])
"""
from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Mapping, Sequence
from math import prod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import positive_int
from ..contract import execute, make_plan
from ..network import Network
from .base import (
    _BE,
    _MATMULS,
    WEIGHT_PATH_ADVANTAGE,
    NetworkMatmul,
    TensorizedLayer,
    _autocast,
    _static,
    at_expected_scale,
    autocast_dtype,
    check_dtype,
    check_features,
    check_mode,
    core_list,
    glorot_std,
    torch_seed,
    warn_user,
    zero_anchor,
)
from .masks import DEFAULT_ALPHA
from .program import Program, is_recording, run

FORMATS = ("tt", "tr", "cp", "tucker")
_LOW = "abcdefghijklmnopqrstuvwxyz"
_UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ------------------------------------------------------------------------------ helpers
def prime_factors(n: int) -> list[int]:
    """Prime factors of ``n`` with multiplicity, ascending: ``prime_factors(12) == [2, 2, 3]``."""
    primes = []
    m, p = int(n), 2
    while p * p <= m:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    if m > 1:
        primes.append(m)
    return primes


def factorize(n: int, d: int) -> tuple[int, ...]:
    """Split ``n`` into ``d`` balanced integer factors (ascending; 1s pad when ``n`` has
    fewer than ``d`` prime factors).

    Rule: the prime factors of ``n``, largest first, are each multiplied into the group
    whose product is currently smallest (greedy balancing of ``log`` sizes, close to the
    maximum-entropy ``auto_shape`` of tt-pytorch).

    >>> factorize(784, 4), factorize(625, 4), factorize(10, 2), factorize(7, 3)
    ((4, 4, 7, 7), (5, 5, 5, 5), (2, 5), (1, 1, 7))
    """
    n, d = int(n), int(d)
    if n < 1:
        raise ValueError(f"cannot factorize {n}: sizes must be positive")
    if d < 1:
        raise ValueError(f"the number of factors d must be >= 1; got {d}")
    groups = [1] * d
    for q in sorted(prime_factors(n), reverse=True):
        groups[int(np.argmin(groups))] *= q
    return tuple(sorted(groups))


def suggest_shape(n: int, d: int) -> tuple[int, ...]:
    """A factorization of some ``n' >= n`` into ``d`` balanced factors, for vocabularies.

    Candidates are ``n`` and ``n`` rounded up to multiples of 10, 100, ... (below ``n``);
    the one whose largest factor is smallest wins (ties: the smaller ``n'``).

    >>> suggest_shape(1000, 3), suggest_shape(997, 3)
    ((10, 10, 10), (10, 10, 10))
    """
    n = int(n)
    cands = [n] + [-(-n // 10**i) * 10**i for i in range(1, len(str(n)))]
    best = min(cands, key=lambda m: (max(factorize(m, d)), m))
    return factorize(best, d)


def _check_rank(rank: Any) -> None:
    if isinstance(rank, str):  # (iterated, "Full" gave "rank must hold integers; got 'F'")
        raise TypeError(f"rank must be an int or a sequence of ints (one per bond); got {rank!r}")
    if isinstance(rank, Mapping):
        raise TypeError(f"rank must be an int or a sequence of ints (one per bond); got a mapping {dict(rank)!r}: give "
                        "its values as a list, in the order of the layer's bonds (layer.ranks)")
    values = [rank] if isinstance(rank, (int, np.integer)) else rank
    if isinstance(rank, float) and 0.0 < rank <= 1.0:
        raise TypeError(f"rank must be an int or a sequence of ints; got {rank!r} (a share of the dense layer's "
                        "parameters is a rank of the conversions of a trained layer: from_linear, from_conv, "
                        "from_embedding and tnmars.nn.tensorize)")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"rank must be an int or a sequence of ints; got {rank!r}") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"rank must hold integers; got {v!r}")
        if v < 1:
            raise ValueError(f"rank must be >= 1; got {v} (in {rank!r})")


def _dtype_name(dtype: torch.dtype | None, format: Any = None) -> str:
    """The layer's dtype: ``dtype``; else a ``format`` network's real floating dtype (a
    float64 network gave a float32 layer); else torch's default."""
    if dtype is None and isinstance(format, Network) and format.dtype in ("float16", "bfloat16", "float32", "float64"):
        return format.dtype
    return str(dtype or torch.get_default_dtype()).replace("torch.", "")


def _check_shape(shape: Sequence[int] | None, features: int, name: str, feature_name: str) -> tuple[int, ...] | None:
    if shape is None:
        return None
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints; got {shape}")
    if prod(shape) != features:
        raise ValueError(f"{name} {shape} multiplies to {prod(shape)}, but {feature_name} is {features}")
    return shape


def _per(rank: Any, count: int) -> tuple[int, ...]:
    if isinstance(rank, (int, np.integer)):
        return (int(rank),) * count
    rank = tuple(int(r) for r in rank)
    if len(rank) == 1:
        return rank * count
    if len(rank) != count:
        raise ValueError(f"this format needs {count} ranks (or one int); got {len(rank)}: {rank}")
    return rank


#: the starting rank of every bond of a matrix layer built without ``rank`` (clipped without a
#: warning to what each bond can use, and to the dense layer's size: the caller did not ask for it)
DEFAULT_MATRIX_RANK = 8


def default_matrix_rank(fmt: str, in_shape: Sequence[int], out_shape: Sequence[int], dense: int) -> int:
    """The uniform rank a matrix layer built without ``rank`` starts at: the largest ``r <=``
    :data:`DEFAULT_MATRIX_RANK` whose layer has at most ``dense`` parameters (the dense
    layer's), 1 when none has (the layer then warns that it is larger than the dense one).
    Rank 8 on every bond of a ring gave ``TensorizedLinear(96, 10, format="tr")`` 2,688
    parameters for a 960-entry weight, and a TT, CP or Tucker layer of a small or prime-sized
    weight was larger than it too.

    >>> default_matrix_rank("tr", (4, 4, 6), (1, 2, 5), 960), default_matrix_rank("tt", (4, 8, 8), (4, 8, 8), 65536)
    (4, 8)
    """
    for r in range(DEFAULT_MATRIX_RANK, 1, -1):
        if matrix_params(fmt, in_shape, out_shape, r) <= dense:
            return r
    return 1


def _default_network(fmt: str, in_shape: Sequence[int], out_shape: Sequence[int], rank: Any, dense: int,
                     **kwargs: Any) -> Network:
    """:func:`matrix_network` at ``rank``, or for ``rank=None`` at :func:`default_matrix_rank`
    (at most :data:`DEFAULT_MATRIX_RANK`, and no larger than the ``dense`` layer when it can),
    whose clipping to the feasible ranks is then silent; its entries at exactly the standard
    deviation ``kwargs["scale"]`` (:func:`at_expected_scale`: small layers' draws ranged 0.37-2.4
    times it over 100 seeds)."""
    if rank is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*clipped to the feasible")
            network = matrix_network(fmt, in_shape, out_shape, default_matrix_rank(fmt, in_shape, out_shape, dense),
                                     **kwargs)
    else:
        network = matrix_network(fmt, in_shape, out_shape, rank, **kwargs)
    scaled = at_expected_scale(network.cores, network.spec, kwargs.get("scale", 1.0))
    with torch.no_grad():
        for core, value in zip(network.cores, scaled):
            if value is not core:
                core.copy_(value)
    return network


def matrix_network(fmt: str, in_shape: Sequence[int], out_shape: Sequence[int], rank: Any, *,
                   scale: float = 1.0, seed: int | None = None, dtype: str = "float32",
                   device: str | None = None) -> Network:
    """A network for a matrix reshaped as ``in_shape + out_shape`` in one of :data:`FORMATS`.

    Open modes are the input modes then the output modes (``W = T.reshape(N_in, N_out)``);
    mode ``k`` of the input and of the output share core ``k`` (TT/TR/CP) or factor ``k``
    (Tucker). Entries of ``W`` start with standard deviation ``scale``.

    * ``tt``: TT-matrix, cores ``(r_{k-1}, i_k, o_k, r_k)``, ``d - 1`` bonds;
    * ``tr``: tensor ring, like TT with ``r_0 = r_d`` (``d`` bonds, all masked; ``rank[k]``
      is core ``k``'s left rank, ``rank[0]`` closing the ring);
    * ``cp``: factors ``(i_k, o_k, R)`` sharing one hyperedge ``R``;
    * ``tucker``: a core ``(R_1..R_d)`` and factors ``(i_k, o_k, R_k)``.

    >>> matrix_network("tr", (2, 3), (4, 5), 2).spec
    'BacA,AbdB->abcd'
    """
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    if len(in_shape) != len(out_shape):
        raise ValueError(f"in_shape {in_shape} and out_shape {out_shape} need the same number of factors")
    d = len(in_shape)
    if 2 * d > 26:
        raise ValueError(f"at most 13 factors are supported; got {d}")
    _check_rank(rank)
    kw: dict[str, Any] = {"backend": "torch", "dtype": dtype, "device": device, "seed": seed, "scale": scale}
    ins, outs = _LOW[:d], _LOW[d:2 * d]
    output = ins + outs
    if fmt == "tt":
        with warnings.catch_warnings(record=True) as caught:  # re-issued at the user's line
            warnings.simplefilter("always")
            network = Network.tt_matrix(in_shape, out_shape, rank, **kw)
        for w in caught:
            warn_user(str(w.message), w.category)
        return network
    if fmt == "tr":
        if d < 2:
            raise ValueError("a tensor-ring matrix needs at least 2 factors")
        ranks = _per(rank, d)
        terms = [_UP[(k - 1) % d] + ins[k] + outs[k] + _UP[k] for k in range(d)]
        # ranks[k]: core k's left rank, the order of the bonds' first appearances (as Network.tr)
        return Network(",".join(terms) + "->" + output, shape=in_shape + out_shape,
                       ranks={_UP[(k - 1) % d]: r for k, r in enumerate(ranks)}, **kw)
    if fmt == "cp":
        (r,) = _per(rank, 1)
        terms = [ins[k] + outs[k] + "A" for k in range(d)]
        return Network(",".join(terms) + "->" + output, shape=in_shape + out_shape, ranks=r, **kw)
    if fmt == "tucker":
        if d < 2:  # (one factor and a core: a low-rank matrix, which LowRankLinear is)
            raise ValueError("a Tucker matrix needs at least 2 factors (for one, use LowRankLinear)")
        ranks = list(_per(rank, d))
        sizes = [i * o for i, o in zip(in_shape, out_shape)]
        clipped = [min(r, n) for r, n in zip(ranks, sizes)]
        for k in range(d):
            others = prod(clipped[:k] + clipped[k + 1:]) if d > 1 else clipped[k]
            clipped[k] = min(clipped[k], others)
        if clipped != ranks:
            warn_user(f"Tucker ranks {tuple(ranks)} clipped to the feasible {tuple(clipped)}")
        bonds = _UP[:d]
        terms = [bonds] + [ins[k] + outs[k] + bonds[k] for k in range(d)]
        return Network(",".join(terms) + "->" + output, shape=in_shape + out_shape,
                       ranks=dict(zip(bonds, clipped)), **kw)
    raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS} or pass a tnmars.Network")


def matrix_params(fmt: str, in_shape: Sequence[int], out_shape: Sequence[int], rank: int) -> int:
    """Parameters of :func:`matrix_network` ``(fmt, in_shape, out_shape, rank)`` with one rank on
    every bond, after the same clipping, without building it.

    >>> matrix_params("tt", (7, 4, 7, 4), (5, 5, 5, 5), 20), matrix_params("cp", (2, 3), (4, 5), 3)
    (23100, 69)
    """
    sizes = [int(i) * int(o) for i, o in zip(in_shape, out_shape)]
    d, r = len(sizes), int(rank)
    if fmt == "tt":
        ranks = [1] + [min(r, prod(sizes[:k + 1]), prod(sizes[k + 1:])) for k in range(d - 1)] + [1]
        return sum(ranks[k] * sizes[k] * ranks[k + 1] for k in range(d))
    if fmt == "tr":
        return sum(r * n * r for n in sizes)
    if fmt == "cp":
        return r * sum(sizes)
    if fmt == "tucker":
        clipped = [min(r, n) for n in sizes]
        for k in range(d):
            others = prod(clipped[:k] + clipped[k + 1:]) if d > 1 else clipped[k]
            clipped[k] = min(clipped[k], others)
        return prod(clipped) + sum(n * c for n, c in zip(sizes, clipped))
    raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")


def _split_point(network: Network, in_features: int, out_features: int) -> int:
    shape = network.shape
    for k in range(1, len(shape)):
        if prod(shape[:k]) == in_features and prod(shape[k:]) == out_features:
            return k
    raise ValueError(
        f"the network's open modes {shape} do not split into input modes multiplying to {in_features} "
        f"followed by output modes multiplying to {out_features}"
    )


def _user_network(network: Network, dtype: str, device: str | None) -> Network:
    if network.dtype.startswith("complex"):
        raise TypeError(f"a tensorized layer's cores are real: the {network.dtype} network given as format would lose "
                        "its imaginary part")
    if network.backend != "torch" or network.dtype != dtype or (device is not None and network.device != str(device)):
        return network.to("torch", dtype=dtype, device=device)
    return network


# ------------------------------------------------------------------------------ linear
class _MatrixLayer(TensorizedLayer):
    """A layer whose weight is a matrix network: its open modes are the input modes, then the
    output modes (TensorizedLinear, TensorizedConv2d)."""

    def _init_matrix(self, format: str | Network, rank: Any, in_shape, out_shape, rows: tuple[int, str],
                     cols: tuple[int, str], default_shapes, *, dtype: str, device, mars: bool | str, pi: float,
                     alpha: float, temperature: float, min_rank: int, mode: str) -> None:
        (n_rows, rows_name), (n_cols, cols_name) = rows, cols
        dev = None if device is None else str(device)
        if isinstance(format, Network):
            network = _user_network(format, dtype, dev)
            n_in = _split_point(network, n_rows, n_cols)
            self.format = "network"
        else:
            if format not in FORMATS:
                raise ValueError(f"unknown format {format!r}; use one of {FORMATS} or pass a tnmars.Network")
            if rank is not None:
                _check_rank(rank)
            in_shape = _check_shape(in_shape, n_rows, "in_shape", rows_name)
            out_shape = _check_shape(out_shape, n_cols, "out_shape", cols_name)
            in_shape, out_shape = default_shapes(in_shape, out_shape)
            network = _default_network(format, in_shape, out_shape, rank, n_rows * n_cols,
                                       scale=glorot_std(n_rows, n_cols),
                                       seed=torch_seed(), dtype=dtype, device=dev)
            n_in = len(in_shape)
            self.format = format
        self._n_in = n_in
        self._setup(network, mars=mars, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank, mode=mode)
        self._mm = NetworkMatmul(network, n_in)

    def _after_compress(self, network: Network) -> None:
        self._mm = NetworkMatmul(network, self._n_in)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self._mm.in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self._mm.out_shape


class _LinearForward:
    """The ``forward`` of the linear layers whose weight is a matrix network behind
    ``self._mm`` (TensorizedLinear, LowRankLinear); a closed bond short-circuits to the bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self.inference_key(x)
        if key is not None:  # no gradients: the cores merged into two cached blocks, when that pays
            y = self._mm.frozen(x, key, self.mars_cores)
            if y is not None:
                return _add_bias(y, self.bias)
        cores = self.mars_cores()
        if any(0 in c.shape for c in cores):  # a closed bond: W is zero, the output is the bias
            check_features(x, self.in_features, cores[0].dtype)
            y = x.new_zeros(x.shape[:-1] + (self.out_features,), dtype=autocast_dtype(x))
            anchor = zero_anchor([x, *cores])
            y = y if anchor is None else y + anchor.to(y.dtype)
        else:
            y = self._mm(x, cores, None, self.mode)
        return _add_bias(y, self.bias)


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y + bias`` in ``y``'s dtype: under autocast the product comes out in the lower precision,
    as ``nn.Linear``'s output does, and a float32 bias would promote it back."""
    if bias is None:
        return y
    return y + (bias if bias.dtype == y.dtype else bias.to(y.dtype))


class TensorizedLinear(_LinearForward, _MatrixLayer):
    """``y = x @ W + b`` with ``W`` (``in_features x out_features``) stored as a tensor network.

    Parameters
    ----------
    in_features, out_features:
        Sizes of the dense layer this replaces.
    format:
        ``"tt"`` (TT-matrix, default), ``"tr"``, ``"cp"``, ``"tucker"`` (see
        :func:`matrix_network`), or a :class:`tnmars.Network` whose open modes are input
        modes followed by output modes (its cores are used as the initial values).
    rank:
        An int (every bond) or one value per bond. ``None`` (default): :data:`DEFAULT_MATRIX_RANK`
        on every bond, clipped without a warning to what each bond can use (a rank you give
        and the layer cannot use is clipped with one), and lowered for a small layer to the
        largest uniform rank with at most the dense layer's parameters
        (:func:`default_matrix_rank`; where even rank 1 is larger, a warning says so, as it
        does for a rank you give that makes the layer larger than the dense one).
    in_shape, out_shape:
        Factorizations of the feature sizes (same length ``d``). When missing, both are
        :func:`factorize` d (default ``d = 3``, or ``len`` of the shape given).
    bias:
        Add a bias (initialised ``1e-3 * randn`` like the MARS reference).
    mars, pi, alpha, temperature, min_rank:
        MARS masks on every bond: ``mars`` is True (the defaults: ``pi=0.01``, ``alpha=6``,
        masks open at the start), False (a fixed-rank layer) or a preset name
        (:data:`tnmars.nn.masks.PRESETS`: ``"soft"`` is the paper's ``pi=0.1, alpha=-1.5``,
        ``"hard"`` its ``pi=0.01, alpha=-1.75``; it replaces ``pi`` / ``alpha`` left at their
        defaults, other values win). ``pi`` is the Bernoulli prior, ``alpha`` the initial
        logit mean, ``temperature`` the hard-concrete temperature; every bond keeps at least
        ``min_rank`` indices (0: the paper's objective, a bond may close whole).
    mode:
        ``"auto"`` picks per batch size the cheaper of "reconstruct W then GEMM" and
        "contract x through the cores"; ``"weight"`` / ``"cores"`` force one.

    Initialisation (built-in formats): Glorot-like, every entry of ``W`` has standard
    deviation ``sqrt(2 / (in_features + out_features))``, spread equally over the cores
    (the tt-pytorch ``glorot_initializer`` rule, for any topology).

    >>> layer = TensorizedLinear(12, 20, format="tr", rank=2, in_shape=(3, 4), out_shape=(4, 5))
    >>> layer.dense_size, layer.num_params
    (240, 128)
    """

    def __init__(self, in_features: int, out_features: int, format: str | Network = "tt", rank: Any = None,
                 in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None, *,
                 d: int | None = None, bias: bool = True, mars: bool | str = True, pi: float = 1e-2,
                 alpha: float = DEFAULT_ALPHA, temperature: float = 0.1, min_rank: int = 1, mode: str = "auto",
                 dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = positive_int(in_features, "in_features"), positive_int(out_features, "out_features")
        dt = _dtype_name(dtype, format)
        if d is not None:  # (d=0 read as "not given", d=2.5 as 2, d="3" as 3)
            d = positive_int(d, "d (the number of factors)")

        def default_shapes(in_shape, out_shape):
            nd = d or (len(in_shape) if in_shape else len(out_shape) if out_shape else 3)
            return in_shape or factorize(self.in_features, nd), out_shape or factorize(self.out_features, nd)

        self._init_matrix(format, rank, in_shape, out_shape, (self.in_features, "in_features"),
                          (self.out_features, "out_features"), default_shapes, dtype=dt, device=device,
                          mars=mars, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank, mode=mode)
        if bias:
            self.bias = nn.Parameter(1e-3 * torch.randn(self.out_features, dtype=getattr(torch, dt), device=device))
        else:
            self.register_parameter("bias", None)

    def _initial_values(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        bias = None if self.bias is None else 1e-3 * torch.randn_like(self.bias)
        return self._gaussian_cores(glorot_std(self.in_features, self.out_features)), bias

    @classmethod
    def from_linear(cls, linear: nn.Linear, format: str = "tt", rank: Any = None,
                    in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None, *,
                    d: int | None = None, **options: Any) -> TensorizedLinear:
        """The layer whose weight is ``linear``'s trained weight decomposed in ``format`` (TT-SVD,
        TR-SVD, HOSVD, or a hierarchical SVD refined by CP-ALS), with its bias.

        ``rank``: ``None`` (default) the largest uniform rank with at most the dense layer's
        parameter count, a float ``f`` in ``(0, 1]`` at most ``f`` times it, ``"full"``, or
        the ranks. ``options``: ``mars``, ``pi``, ``alpha``, ``temperature``, ``min_rank``,
        ``mode``, and ``progress`` (a bar for a CP fit that runs past a second).
        At ``rank="full"`` (every format), or where the ranks suffice (TT, TR, Tucker; for CP
        at least the number of terms of the weight's hierarchical SVD), it computes
        ``linear``'s function to float rounding; below that CP is an ALS fit within a work
        budget. MARS fine-tuning then selects the ranks (see :mod:`tnmars.nn.convert`). The
        weight's relative error is kept in ``conversion_error``; past 10% a warning says so.
        """
        from .convert import from_linear

        return from_linear(linear, format, rank, in_shape, out_shape, d=d, **options)

    @property
    def dense_size(self) -> int:
        return self.in_features * self.out_features

    def dense_weight(self) -> torch.Tensor:
        """The weight in ``nn.Linear`` layout ``(out_features, in_features)`` with the current masks
        (MAP masks in eval mode), so ``F.linear(x, layer.dense_weight(), layer.bias)``."""
        return self._mm.weight(self.mars_cores(), owned=True).t()

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, format={self.format!r}, in_shape={self.in_shape}, "
                f"out_shape={self.out_shape}, {self.extra_mars_repr()}, bias={self.bias is not None}")


def _scaled_uniform(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """``t`` filled from ``U(-1, 1) / sqrt(fan_in)``, the MARS reference's factor initialisation."""
    return t.uniform_(-1, 1) / math.sqrt(max(1, fan_in))


#: the low-rank weight's network: ``U`` then ``V``
LOWRANK_SPEC = "aA,Ab->ab"

#: the default rank of a :class:`LowRankLinear` whose dense layer can afford it
DEFAULT_LOWRANK = 32


class LowRankLinear(_LinearForward, TensorizedLayer):
    """``y = x @ U @ V + b`` with ``U`` (``in x r``) and ``V`` (``r x out``): one bond, one mask.

    Initialised like the MARS reference ``FactorizedLinear`` (PyTorch's default
    kaiming-uniform bounds ``1/sqrt(fan_in)`` on both factors and the bias), the factors then
    scaled together to the weight variance that draw has in expectation. ``rank=None``
    (default): :data:`DEFAULT_LOWRANK` or, where that would make the layer larger than the
    dense one, the largest rank that does not (9 for 512 x 10); a rank given larger than
    that is kept, with a warning (as is one above ``min(in_features, out_features)``, the
    largest rank ``U V`` can have: always larger than the dense layer).

    >>> layer = LowRankLinear(800, 500, rank=100)
    >>> layer.num_params, layer.dense_size
    (130000, 400000)
    >>> LowRankLinear(512, 10).max_ranks, LowRankLinear(256, 256).max_ranks
    ({'A': 9}, {'A': 32})
    """

    def __init__(self, in_features: int, out_features: int, rank: int | None = None, *, bias: bool = True,
                 mars: bool | str = True, pi: float = 1e-2, alpha: float = DEFAULT_ALPHA, temperature: float = 0.1,
                 min_rank: int = 1, mode: str = "auto", dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = positive_int(in_features, "in_features"), positive_int(out_features, "out_features")
        if rank is None:  # at most the dense layer's parameters: in * out >= r * (in + out)
            n_in, n_out = self.in_features, self.out_features
            rank = max(1, min(DEFAULT_LOWRANK, n_in * n_out // (n_in + n_out)))
        _check_rank(rank)
        if not isinstance(rank, (int, np.integer)):
            raise TypeError(f"LowRankLinear has one bond: rank must be an int; got {rank!r}")
        tdt = getattr(torch, _dtype_name(dtype))
        u, v = self._factor_draw(torch.empty(self.in_features, int(rank), dtype=tdt, device=device),
                                 torch.empty(int(rank), self.out_features, dtype=tdt, device=device))
        network = Network(LOWRANK_SPEC, cores=[u, v])
        self._setup(network, mars=mars, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank, mode=mode)
        self._mm = NetworkMatmul(network, 1)
        if bias:
            bound = 1.0 / math.sqrt(self.in_features)
            self.bias = nn.Parameter(torch.empty(self.out_features, dtype=tdt, device=device).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def _factor_draw(self, u: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        """``u`` and ``v`` filled as the reference's factors, then scaled together to the
        variance that draw has in expectation, ``1 / (9 in_features)`` per weight entry
        (:func:`at_expected_scale`: at rank 1 or with one output, a few entries set the scale)."""
        drawn = [_scaled_uniform(u, self.in_features), _scaled_uniform(v, u.shape[1])]
        return at_expected_scale(drawn, LOWRANK_SPEC, 1.0 / (3.0 * math.sqrt(self.in_features)))

    def _initial_values(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        u, v = core_list(self.cores)
        bound = 1.0 / math.sqrt(self.in_features)
        return (self._factor_draw(torch.empty_like(u), torch.empty_like(v)),
                None if self.bias is None else torch.empty_like(self.bias).uniform_(-bound, bound))

    def _after_compress(self, network: Network) -> None:
        self._mm = NetworkMatmul(network, 1)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: Any = None, **options: Any) -> LowRankLinear:
        """The layer with ``U V`` from the truncated SVD of ``linear``'s trained weight (singular
        values split evenly) and its bias; exact at ``rank = min(in, out)``. ``rank=None``: the
        largest rank with at most the dense parameter count (a float: that share of it)."""
        from .convert import lowrank_from_linear

        return lowrank_from_linear(linear, rank, **options)

    @property
    def rank(self) -> int:
        """The size of the factors' shared index: the maximal rank while MARS masks are on (the
        rank MARS selected is ``ranks["A"]``, what ``compress`` keeps); the rank itself without
        masks or after ``compress``."""
        return self.dims["A"]

    @property
    def dense_size(self) -> int:
        return self.in_features * self.out_features

    def dense_weight(self) -> torch.Tensor:
        """``(out_features, in_features)`` weight with the current masks (``nn.Linear`` layout)."""
        return self._mm.weight(self.mars_cores(), owned=True).t()

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.extra_mars_repr()}, bias={self.bias is not None}"


# ------------------------------------------------------------------------------ convolutions
def _pair(v: Any, name: str) -> tuple[int, int]:
    """``v`` as two ints; a float (``1.5``), a string or a third entry is an error, not truncated."""
    try:
        pair = (operator.index(v),) * 2 if isinstance(v, (int, np.integer)) else tuple(operator.index(t) for t in v)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints; got {v!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {v!r}")
    return pair


def _conv_geometry(kernel_size: Any, stride: Any, padding: Any, dilation: Any) -> tuple[tuple[int, int], ...]:
    """Checked ``(kernel_size, stride, padding, dilation)`` pairs, as ``nn.Conv2d`` takes them:
    ``padding`` may be ``"valid"`` (none) or ``"same"`` (stride 1; the layer pads in whole
    pixels on both sides, so each ``dilation * (kernel - 1)`` must be even)."""
    kernel, stride_, dilation_ = _pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(dilation, "dilation")
    for name, pair in (("kernel_size", kernel), ("stride", stride_), ("dilation", dilation_)):
        if min(pair) < 1:
            raise ValueError(f"{name} must be at least 1; got {pair}")
    if isinstance(padding, str):
        if padding == "valid":
            return kernel, stride_, (0, 0), dilation_
        if padding != "same":
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair of ints; got {padding!r}")
        spans = tuple(d * (k - 1) for k, d in zip(kernel, dilation_))
        if stride_ != (1, 1) or any(span % 2 for span in spans):
            raise ValueError(f"padding='same' needs stride 1 and an even dilation * (kernel_size - 1) on both axes "
                             f"here (stride {stride_}, kernel_size {kernel}, dilation {dilation_}): the layer pads "
                             "the same whole number of pixels on both sides. Give the padding in pixels.")
        return kernel, stride_, (spans[0] // 2, spans[1] // 2), dilation_
    padding_ = _pair(padding, "padding")
    if min(padding_) < 0:
        raise ValueError(f"padding must be at least 0; got {padding_}")
    return kernel, stride_, padding_, dilation_


def _out_size(n: int, k: int, s: int, p: int, dil: int) -> int:
    return (n + 2 * p - dil * (k - 1) - 1) // s + 1


def _conv_out_hw(x: torch.Tensor, conv: Any) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    ho, wo = _out_size(x.shape[2], kh, sh, ph, dh), _out_size(x.shape[3], kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise ValueError(f"input of spatial size {tuple(x.shape[2:])} is smaller than the kernel {conv.kernel_size} "
                         f"(padding {conv.padding}, dilation {conv.dilation})")
    return ho, wo


def _unbatched(x: Any) -> bool:
    """A single image ``(C, H, W)``, which ``nn.Conv2d`` takes as a batch of one."""
    return isinstance(x, torch.Tensor) and x.ndim == 3


def _check_image(x: Any, channels: int, dtype: torch.dtype) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of shape (B, {channels}, H, W); got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected input (B, {channels}, H, W) or ({channels}, H, W); got {tuple(x.shape)}")
    if 0 in x.shape[2:]:
        raise ValueError(f"input images are empty: spatial size {tuple(x.shape[2:])}")
    check_dtype(x, dtype)


def _bias_only(x: torch.Tensor, channels: int, hw: tuple[int, int], bias: torch.Tensor | None,
               cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The output of a convolution whose kernel is zero (a closed bond), without building it."""
    y = x.new_zeros((x.shape[0], channels) + tuple(hw), dtype=autocast_dtype(x))
    anchor = zero_anchor([x, *cores])
    if anchor is not None:
        y = y + anchor.to(y.dtype)
    return y if bias is None else y + bias[:, None, None].to(y.dtype)


#: the starting rank of both bonds of a :class:`Tucker2Conv2d` whose dense kernel can afford it
DEFAULT_TUCKER2_RANK = 32


def _default_tucker2_ranks(c_in: int, c_out: int, window: int) -> tuple[int, int]:
    """Equal ranks ``r <=`` :data:`DEFAULT_TUCKER2_RANK`, each clipped to its channel count, the
    largest whose layer has at most the dense kernel's parameters (at least 1), as
    :class:`LowRankLinear`'s default: at 32 a 16 -> 32 convolution had 5,888 parameters for the
    dense 4,608, and warned of ranks the user never gave."""
    def size(r: int) -> int:
        r1, r2 = min(r, c_in), min(r, c_out)
        return c_in * r1 + r1 * r2 * window + c_out * r2
    r = DEFAULT_TUCKER2_RANK
    while r > 1 and size(r) > c_in * c_out * window:
        r -= 1
    return min(r, c_in), min(r, c_out)


def _tucker2_draw(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """The Tucker-2 kernel's factors ``(C_in, r1)``, ``(r1, r2, kh, kw)``, ``(C_out, r2)`` filled
    so that the kernel's entries get ``nn.Conv2d``'s default variance, ``1 / (3 C_in kh kw)``
    (kaiming_uniform with ``a = sqrt(5)``), whatever the ranks: the factors' variances multiply,
    summed over ``r1 r2`` terms, and exactly that variance for every draw (:func:`at_expected_scale`:
    with one channel on either side, one factor entry set the kernel's scale). (Each factor
    scaled by its own fan-in gave a ninth of it: in a conv autoencoder of four such layers the
    signal started 81x smaller, and after 6 epochs the reconstruction error was 2.3x the dense
    model's.)"""
    u_in, core, u_out = cores
    c_in, (r1, r2, kh, kw) = u_in.shape[0], core.shape
    variances = (1.0 / c_in, 1.0 / (3.0 * max(1, r1) * kh * kw), 1.0 / max(1, r2))
    drawn = [t.uniform_(-1, 1) * math.sqrt(3.0 * v) for t, v in zip(cores, variances)]
    return at_expected_scale(drawn, TUCKER2_SPEC, 1.0 / math.sqrt(3.0 * c_in * kh * kw))


#: the Tucker-2 kernel's network: input factor, core, output factor
TUCKER2_SPEC = "iA,ABhw,oB->oihw"


class Tucker2Conv2d(TensorizedLayer):
    """A convolution whose kernel is a Tucker-2 network over its channel modes.

    ``K[o, i, h, w] = sum_{A,B} U_in[i, A] G[A, B, h, w] U_out[o, B]`` (spec
    ``"iA,ABhw,oB->oihw"``): evaluated either as one ``k x k`` convolution with the
    reconstructed kernel or as ``1x1 (C_in -> r1)``, ``k x k (r1 -> r2)``, ``1x1 (r2 -> C_out)``,
    whichever costs fewer FLOPs for the input size. Two bonds, two masks. ``rank=None``
    (default): :data:`DEFAULT_TUCKER2_RANK` on both bonds or, where that would make the layer
    larger than the dense one, the largest equal ranks that do not (clipped to the channel
    counts). Initialised so that the kernel's entries have ``nn.Conv2d``'s default variance, whatever
    the ranks. (The MARS reference ``TuckerConv2d`` gives each of the three factor convolutions
    PyTorch's conv default, a ninth of that variance: divide ``cores[0]`` and ``cores[2]`` by
    ``sqrt(3)`` to reproduce it, as ``benchmarks/nn_lenet5.py`` does.)

    >>> conv = Tucker2Conv2d(20, 50, 5, rank=(20, 20))
    >>> conv.num_params, conv.dense_size
    (11400, 25000)
    >>> Tucker2Conv2d(16, 32, 3).max_ranks
    {'A': 16, 'B': 24}
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, rank: Any = None, *,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, bias: bool = True,
                 mars: bool | str = True, pi: float = 1e-2, alpha: float = DEFAULT_ALPHA, temperature: float = 0.1,
                 min_rank: int = 1, mode: str = "auto", dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = positive_int(in_channels, "in_channels"), positive_int(out_channels, "out_channels")
        self.kernel_size, self.stride, self.padding, self.dilation = _conv_geometry(kernel_size, stride, padding, dilation)
        kh, kw = self.kernel_size
        if rank is None:
            r1, r2 = _default_tucker2_ranks(self.in_channels, self.out_channels, kh * kw)
        else:
            _check_rank(rank)
            r1, r2 = _pair(rank, "rank")
        if r1 > in_channels or r2 > out_channels:
            warn_user(f"Tucker-2 ranks ({r1}, {r2}) clipped to the channel counts ({in_channels}, {out_channels})")
            r1, r2 = min(r1, in_channels), min(r2, out_channels)
        tdt = getattr(torch, _dtype_name(dtype))

        cores = _tucker2_draw([torch.empty(shape, dtype=tdt, device=device)
                               for shape in ((in_channels, r1), (r1, r2, kh, kw), (out_channels, r2))])
        network = Network(TUCKER2_SPEC, cores=cores)
        self._setup(network, mars=mars, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank, mode=mode)
        self._choice: dict[tuple, str] = {}
        #: (parameter key, cores in use, factored kernels) of the last no-grad call
        self._frozen: tuple | None = None
        if bias:
            self.bias = nn.Parameter(self._bias_draw(torch.empty(out_channels, dtype=tdt, device=device)))
        else:
            self.register_parameter("bias", None)

    def _bias_draw(self, t: torch.Tensor) -> torch.Tensor:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        return t.uniform_(-bound, bound)

    def _initial_values(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        return (_tucker2_draw([torch.empty_like(c) for c in core_list(self.cores)]),
                None if self.bias is None else self._bias_draw(torch.empty_like(self.bias)))

    def _after_compress(self, network: Network) -> None:
        self._choice = {}
        self._frozen = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: Any = None, **options: Any) -> Tucker2Conv2d:
        """The layer with the Tucker-2 (HOSVD) decomposition of ``conv``'s trained kernel over its
        channel modes, with its bias, stride, padding and dilation; exact at ranks
        ``(C_in, C_out)``. ``rank=None``: the largest equal ranks with at most the dense
        parameter count (a float: that share of it)."""
        from .convert import tucker2_from_conv

        return tucker2_from_conv(conv, rank, **options)

    @property
    def dense_size(self) -> int:
        return self.in_channels * self.out_channels * self.kernel_size[0] * self.kernel_size[1]

    def _kernel(self, cores: list[torch.Tensor]) -> torch.Tensor:
        terms, shapes = tuple(self.spec.split("->")[0].split(",")), tuple(tuple(c.shape) for c in cores)
        if is_recording():  # opt_einsum's path search cannot be traced: the plan is a constant of the graph
            return run(_constant_kernel_code(terms, shapes), cores)
        plan = make_plan(terms, "oihw", shapes)
        if _autocast(cores[0]):  # the plan's tensordots would mix autocast's dtype with the cores'; the
            # kernel is core-sized: built in the cores' dtype, and the convolution casts it as autocast says
            with torch.autocast(cores[0].device.type, enabled=False):
                return execute(plan, cores, _BE)
        return execute(plan, cores, _BE)

    def dense_weight(self) -> torch.Tensor:
        """The ``(C_out, C_in, kh, kw)`` kernel with the current masks."""
        return self._kernel(self.mars_cores())

    def costs(self, x_shape: Sequence[int], ranks: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(kernel_path_flops, factored_path_flops)`` for an input of shape ``x_shape`` at
        ``ranks`` ``(A, B)`` (default: the layer's sizes)."""
        b, _, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        out_hw = _out_size(h, kh, sh, ph, dh) * _out_size(w, kw, sw, pw, dw)
        r1, r2 = ranks if ranks is not None else (self.dims["A"], self.dims["B"])
        cin, cout = self.in_channels, self.out_channels
        kernel = 2 * cout * cin * kh * kw * (r1 + 1) + 2 * b * out_hw * cout * cin * kh * kw
        factored = 2 * b * (h * w * cin * r1 + out_hw * r1 * r2 * kh * kw + out_hw * r2 * cout)
        return kernel, factored

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else dict(self.__dict__)
        state = dict(state)
        state["_frozen"] = None  # derived from the parameters: rebuilt on the first no-grad call
        return state

    def _factors(self, cores: Sequence[torch.Tensor], contiguous: bool) -> tuple[torch.Tensor, ...]:
        """The three kernels of the factored path: 1x1 in, the ``kh x kw`` core, 1x1 out."""
        u_in, g, u_out = cores
        kernels = (u_in.t()[:, :, None, None], g.permute(1, 0, 2, 3), u_out[:, :, None, None])
        return tuple(k.contiguous() for k in kernels) if contiguous else kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _unbatched(x):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        _check_image(x, self.in_channels, self.cores[0].dtype)
        hw = _conv_out_hw(x, self)
        frozen_key = self.inference_key(x)
        if frozen_key is None:
            cores = self.mars_cores()
        else:  # no gradients: the cores in use and the factored kernels are kept while the parameters stay
            frozen = getattr(self, "_frozen", None)  # None too in a module pickled before it existed
            if frozen is None or frozen[0] != frozen_key:
                cores = self.mars_cores()
                frozen = self._frozen = (frozen_key, cores, self._factors(cores, contiguous=True))
            cores = frozen[1]
        ranks = (cores[1].shape[0], cores[1].shape[1])  # the ranks in use (closed indices may be sliced out)
        closed = 0 in ranks
        if closed:  # the kernel is zero: the output is the bias
            return _bias_only(x, self.out_channels, hw, self.bias, cores)
        mode = self.mode
        if mode == "auto":
            if is_recording():  # traced: plain arithmetic on the (specialised, see base._static) sizes, and
                # no cache (dynamo guards on one); a symbolic batch (torch.export's dynamic batch dimension) is
                # judged at batch 1 rather than specialised: both paths hold for any batch
                batch = 1 if isinstance(x.shape[0], torch.SymInt) else _static(x.shape[0])
                k, f = self.costs((batch, *(_static(n) for n in x.shape[1:])), ranks)
                mode = "cores" if f * WEIGHT_PATH_ADVANTAGE < k else "weight"
            else:
                key = (tuple(x.shape), ranks)
                mode = self._choice.get(key)
                if mode is None:
                    k, f = self.costs(x.shape, ranks)
                    mode = "cores" if f * WEIGHT_PATH_ADVANTAGE < k else "weight"
                    if len(self._choice) > 4096:
                        self._choice.clear()
                    self._choice[key] = mode
        if mode == "weight":
            return F.conv2d(x, self._kernel(cores), self.bias, self.stride, self.padding, self.dilation)
        k_in, k_core, k_out = self._factors(cores, contiguous=False) if frozen_key is None else frozen[2]
        h = F.conv2d(x, k_in)
        h = F.conv2d(h, k_core, None, self.stride, self.padding, self.dilation)
        return F.conv2d(h, k_out, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, {self.extra_mars_repr()}, "
                f"bias={self.bias is not None}")


class TensorizedConv2d(_MatrixLayer):
    """A convolution whose ``(kh*kw*C_in) x C_out`` kernel matrix is a tensor network
    (the "proper" scheme of Garipov et al., 2016).

    Rows of the matrix are ordered ``(kh, kw, C_in)`` row-major, so with the default shapes
    ``in_shape = (kh*kw, *factorize(C_in, d-1))`` and ``out_shape = (1, *factorize(C_out, d-1))``
    the first core carries the spatial window and the others the channels. Forward either
    rebuilds the kernel and calls ``conv2d``, or unfolds the input (im2col) and contracts
    the patches through the cores, whichever costs fewer FLOPs.

    >>> conv = TensorizedConv2d(16, 32, 3, rank=4, padding=1)
    >>> conv.in_shape, conv.out_shape
    ((9, 4, 4), (1, 4, 8))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, rank: Any = None,
                 in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None, *,
                 format: str | Network = "tt", d: int = 3, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 bias: bool = True, mars: bool | str = True, pi: float = 1e-2,
                 alpha: float = DEFAULT_ALPHA, temperature: float = 0.1, min_rank: int = 1, mode: str = "auto",
                 dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = positive_int(in_channels, "in_channels"), positive_int(out_channels, "out_channels")
        self.kernel_size, self.stride, self.padding, self.dilation = _conv_geometry(kernel_size, stride, padding, dilation)
        kh, kw = self.kernel_size
        rows = kh * kw * in_channels
        dt = _dtype_name(dtype, format)
        if not isinstance(format, Network) and positive_int(d, "d (the number of cores)") < 2:
            raise ValueError(f"d (number of cores) must be >= 2 for a convolution; got {d}")

        def default_shapes(in_shape, out_shape):
            return (in_shape or (kh * kw, *factorize(in_channels, d - 1)),
                    out_shape or (1, *factorize(out_channels, d - 1)))

        self._init_matrix(format, rank, in_shape, out_shape, (rows, "kh*kw*in_channels"),
                          (out_channels, "out_channels"), default_shapes, dtype=dt, device=device,
                          mars=mars, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank, mode=mode)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels, dtype=getattr(torch, dt), device=device))
        else:
            self.register_parameter("bias", None)

    def _initial_values(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        rows = self.kernel_size[0] * self.kernel_size[1] * self.in_channels
        return (self._gaussian_cores(glorot_std(rows, self.out_channels)),
                None if self.bias is None else torch.zeros_like(self.bias))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, format: str = "tt", rank: Any = None,
                  in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None, *, d: int = 3,
                  **options: Any) -> TensorizedConv2d:
        """The layer whose kernel matrix is ``conv``'s trained kernel decomposed in ``format``,
        with its bias, stride, padding and dilation (see :meth:`TensorizedLinear.from_linear`)."""
        from .convert import from_conv

        return from_conv(conv, format, rank, in_shape, out_shape, d=d, **options)

    @property
    def dense_size(self) -> int:
        return self.in_channels * self.out_channels * self.kernel_size[0] * self.kernel_size[1]

    def _kernel(self, cores: list[torch.Tensor]) -> torch.Tensor:
        kh, kw = self.kernel_size
        return self._dense_kernel(cores)

    def _dense_kernel(self, cores: list[torch.Tensor], owned: bool = False) -> torch.Tensor:
        kh, kw = self.kernel_size
        w = self._mm.weight(cores, owned=owned)
        return w.reshape(kh, kw, self.in_channels, self.out_channels).permute(3, 2, 0, 1)

    def dense_weight(self) -> torch.Tensor:
        """The ``(C_out, C_in, kh, kw)`` kernel with the current masks."""
        return self._dense_kernel(self.mars_cores(), owned=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _unbatched(x):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        _check_image(x, self.in_channels, self.cores[0].dtype)
        cores = self.mars_cores()
        b = x.shape[0]
        kh, kw = self.kernel_size
        ho, wo = _conv_out_hw(x, self)
        if any(0 in c.shape for c in cores):  # a closed bond: the kernel is zero, the output is the bias
            return _bias_only(x, self.out_channels, (ho, wo), self.bias, cores)
        mode = self.mode
        if mode == "auto":
            mode = self._mm.choose(tuple(tuple(c.shape) for c in cores), b * ho * wo)
        if mode == "weight" or b * ho * wo == 0:
            return F.conv2d(x, self._kernel(cores), self.bias, self.stride, self.padding, self.dilation)
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, C_in*kh*kw, L)
        cols = cols.reshape(b, self.in_channels, kh * kw, ho * wo).permute(0, 3, 2, 1)
        cols = cols.reshape(b * ho * wo, kh * kw * self.in_channels)
        y = self._mm(cols, cores, None, "cores").reshape(b, ho * wo, self.out_channels)
        y = _add_bias(y, self.bias)
        return y.permute(0, 2, 1).reshape(b, self.out_channels, ho, wo)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, in_shape={self.in_shape}, "
                f"out_shape={self.out_shape}, {self.extra_mars_repr()}, bias={self.bias is not None}")


# ------------------------------------------------------------------------------ embedding
class TensorizedEmbedding(TensorizedLayer):
    """An embedding table (``num_embeddings x embedding_dim``) stored as a tensor network.

    Rows are looked up without building the table: the digits of each index (in
    ``voc_shape``) select slices of the cores, and the gathered slices are contracted with a
    batch index. When a batch asks for more rows than it is worth, the table is rebuilt
    once instead (chosen by FLOPs). ``voc_shape`` may multiply to more than
    ``num_embeddings`` (padded vocabulary, :func:`suggest_shape`); compression counts the
    real ``num_embeddings x embedding_dim`` table, as the reference does.

    >>> emb = TensorizedEmbedding(1000, 64, rank=8)
    >>> emb.voc_shape, emb.emb_shape
    ((10, 10, 10), (4, 4, 4))
    >>> emb(torch.tensor([[1, 2], [3, 999]])).shape
    torch.Size([2, 2, 64])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, format: str | Network = "tt", rank: Any = None,
                 voc_shape: Sequence[int] | None = None, emb_shape: Sequence[int] | None = None, *, d: int = 3,
                 padding_idx: int | None = None, mars: bool | str = True, pi: float = 1e-2,
                 alpha: float = DEFAULT_ALPHA, temperature: float = 0.1, min_rank: int = 1, mode: str = "auto",
                 dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim")
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx {padding_idx} is outside [0, {num_embeddings})")
        self.padding_idx = None if padding_idx is None else int(padding_idx) % num_embeddings
        dt = _dtype_name(dtype, format)
        dev = None if device is None else str(device)
        if isinstance(format, Network):
            network = _user_network(format, dt, dev)
            shape = network.shape
            n_in = next((k for k in range(1, len(shape)) if prod(shape[:k]) >= num_embeddings
                         and prod(shape[k:]) == embedding_dim), None)
            if n_in is None:
                raise ValueError(f"the network's open modes {shape} do not split into vocabulary modes "
                                 f"(>= {num_embeddings} rows) and embedding modes (= {embedding_dim})")
            self.format = "network"
        else:
            if format not in FORMATS:
                raise ValueError(f"unknown format {format!r}; use one of {FORMATS} or pass a tnmars.Network")
            if rank is not None:
                _check_rank(rank)
            if voc_shape is not None:
                voc_shape = tuple(int(v) for v in voc_shape)
                if any(v < 1 for v in voc_shape) or prod(voc_shape) < num_embeddings:
                    raise ValueError(f"voc_shape {voc_shape} multiplies to {prod(voc_shape)}, fewer than "
                                     f"num_embeddings = {num_embeddings}")
            emb_shape = _check_shape(emb_shape, embedding_dim, "emb_shape", "embedding_dim")
            nd = len(voc_shape) if voc_shape else len(emb_shape) if emb_shape else positive_int(d, "d (the number of cores)")
            voc_shape = voc_shape or suggest_shape(num_embeddings, nd)
            emb_shape = emb_shape or factorize(embedding_dim, nd)
            network = _default_network(format, voc_shape, emb_shape, rank, num_embeddings * embedding_dim,
                                       scale=glorot_std(num_embeddings, embedding_dim), seed=torch_seed(), dtype=dt,
                                       device=dev)
            n_in = len(voc_shape)
            self.format = format
        self._n_in = n_in
        self._setup(network, mars=mars, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank, mode=mode)
        self._build(network)

    def _build(self, network: Network) -> None:
        self._mm = NetworkMatmul(network, self._n_in)
        self._choice: dict[int, str] = {}

    def _initial_values(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        return self._gaussian_cores(glorot_std(self.num_embeddings, self.embedding_dim)), None

    def _after_compress(self, network: Network) -> None:
        self._build(network)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, format: str = "tt", rank: Any = None,
                       voc_shape: Sequence[int] | None = None, emb_shape: Sequence[int] | None = None, *, d: int = 3,
                       **options: Any) -> TensorizedEmbedding:
        """The layer whose table is ``embedding``'s trained table decomposed in ``format`` (rows
        past ``num_embeddings`` are zero), with its ``padding_idx``."""
        from .convert import from_embedding

        return from_embedding(embedding, format, rank, voc_shape, emb_shape, d=d, **options)

    @property
    def voc_shape(self) -> tuple[int, ...]:
        return self._mm.in_shape

    @property
    def emb_shape(self) -> tuple[int, ...]:
        return self._mm.out_shape

    @property
    def dense_size(self) -> int:
        return self.num_embeddings * self.embedding_dim

    def dense_weight(self) -> torch.Tensor:
        """The ``(num_embeddings, embedding_dim)`` table with the current masks."""
        w = self._mm.weight(self.mars_cores(), owned=True)[: self.num_embeddings]
        if self.padding_idx is not None:
            keep = torch.ones(self.num_embeddings, 1, dtype=w.dtype, device=w.device)
            keep[self.padding_idx] = 0
            w = w * keep
        return w

    def _gather_plan(self, shapes, batch: int):
        return gather_plan(self._mm, shapes, batch)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"embedding indices must be an integer torch.Tensor; got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"embedding indices must be an integer tensor; got {idx.dtype}")
        flat = idx.reshape(-1).long()
        if is_recording():  # traced: the values are not known here, the compiled code checks them
            torch._assert_async(((flat >= 0) & (flat < self.num_embeddings)).all(),
                                f"embedding index out of range [0, {self.num_embeddings})")
        elif flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise ValueError(f"embedding index out of range [0, {self.num_embeddings})")
        first = self.cores[0]
        if _autocast(first):
            # nn.Embedding returns its weight's dtype under autocast (a lookup is not cast):
            # the table's contraction runs in the cores' dtype, not autocast's lower precision
            with torch.autocast(first.device.type, enabled=False):
                return self._embed(idx, flat)
        return self._embed(idx, flat)

    def _embed(self, idx: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        cores = self.mars_cores()
        shapes = tuple(tuple(c.shape) for c in cores)
        batch = flat.numel()
        symbolic = isinstance(batch, torch.SymInt)  # (torch.export's dynamic batch: the table holds for any)
        if is_recording() and not symbolic:  # the choice and the gather plan depend on the batch (see base._static)
            batch = _static(batch)
        if any(0 in c for c in shapes):  # a closed bond: the table is zero
            out = cores[0].new_zeros(tuple(idx.shape) + (self.embedding_dim,))
            anchor = zero_anchor(cores)
            return out if anchor is None else out + anchor
        mode = self.mode
        traced = None
        if symbolic:
            mode = "weight"
        elif is_recording():  # the plans are made outside the traced graph
            mode, *traced = _constant_gather(self._mm._compile_key, shapes, batch, mode)
        elif mode == "auto":
            key = (shapes, batch)
            mode = self._choice.get(key)
            if mode is None:
                mode = embedding_choice(self._mm, shapes, batch)
                if len(self._choice) > 4096:
                    self._choice.clear()
                self._choice[key] = mode
        if mode == "weight":
            table = self._mm.program(shapes, None)(cores).reshape(self._mm.in_features, -1)
            out = table.index_select(0, flat)
        else:
            digits = []
            rem = flat
            for v in reversed(self.voc_shape):
                digits.append(rem % v)
                rem = rem // v
            digits = digits[::-1]
            plan, perms, keys = traced if traced else self._gather_plan(shapes, batch)  # (traced: program code)
            ops = []
            for core, perm, key in zip(cores, perms, keys):
                if key:
                    core = core.permute(*perm)[tuple(digits[k] for k in key)]
                ops.append(core)
            out = run(plan, ops) if traced else execute(plan, ops, _BE)
            out = out.reshape(batch, self.embedding_dim)
        if self.padding_idx is not None:
            out = out * (flat != self.padding_idx).unsqueeze(-1).to(out.dtype)
        return out.reshape(*idx.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, voc_shape={self.voc_shape}, "
                f"emb_shape={self.emb_shape}, {self.extra_mars_repr()}, padding_idx={self.padding_idx}")


def gather_plan(mm: NetworkMatmul, shapes: tuple, batch: int) -> tuple:
    """The plan of :class:`TensorizedEmbedding`'s lookup through the cores (each core carrying
    vocabulary indices gathered at the ``batch`` indices' digits), and per core the permutation
    that puts those indices first and which digits index it."""
    z = mm.batch_letter
    terms, perms, keys = [], [], []
    for term in mm.inputs:
        here = [c for c in term if c in mm.in_letters]
        rest = [c for c in term if c not in mm.in_letters]
        perms.append(tuple(term.index(c) for c in here + rest))
        keys.append(tuple(mm.in_letters.index(c) for c in here))
        terms.append((z if here else "") + "".join(rest))
    gshapes = []
    for orig, gterm, shape, key in zip(mm.inputs, terms, shapes, keys):
        sizes = dict(zip(orig, shape))
        gshapes.append(((batch,) if key else ()) + tuple(sizes[c] for c in gterm if c != z))
    plan = make_plan(tuple(terms), z + mm.out_letters, tuple(gshapes), mm.optimize)
    return plan, perms, keys


def embedding_choice(mm: NetworkMatmul, shapes: tuple, batch: int) -> str:
    """``"cores"`` (gather through the cores) or ``"weight"`` (build the table, then index it)."""
    if any(n == 0 for s in shapes for n in s) or batch == 0:
        return "weight"
    wflops = mm.weight_plan(shapes).flops
    gflops = gather_plan(mm, shapes, batch)[0].flops
    return "cores" if gflops * WEIGHT_PATH_ADVANTAGE < wflops else "weight"


@torch.compiler.assume_constant_result
def _constant_kernel_code(terms: tuple, shapes: tuple) -> tuple:
    """Under ``torch.compile``: :class:`Tucker2Conv2d`'s kernel program, made outside the traced graph."""
    return Program(make_plan(terms, "oihw", shapes)).code


@torch.compiler.assume_constant_result
def _constant_gather(key: int, shapes: tuple, batch: int, mode: str) -> tuple:
    """Under ``torch.compile``: the embedding's path for ``mode`` and, for the cores path, the
    program code and per-core permutations and digit keys (plain tuples), computed outside the
    traced graph as the matrix layers' plans are (opt_einsum cannot be traced)."""
    mm = _MATMULS[key]
    if mode == "auto":
        mode = embedding_choice(mm, shapes, batch)
    if mode == "weight":
        return mode, None, None, None
    plan, perms, keys = gather_plan(mm, shapes, batch)
    return mode, Program(plan).code, tuple(perms), tuple(keys)


__all__ = ["TensorizedLinear", "LowRankLinear", "Tucker2Conv2d", "TensorizedConv2d", "TensorizedEmbedding",
           "factorize", "suggest_shape", "matrix_network", "check_mode"]
