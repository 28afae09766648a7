"""Stable and truncated recurrent models (Miller & Hardt), with tensorized recurrent weights.

Three cells share one interface: :class:`LinearRNN` (``h_t = h_{t-1} W + x_t U + b``),
:class:`TanhRNN` (``h_t = tanh(h_{t-1} W + x_t U + b)``) and :class:`LSTM`. Row vectors are used
throughout, as in ``torch.nn.Linear`` and :meth:`tnmars.Network.tt_matrix` (``y = x @ W``);
the talk's ``W h`` is our ``h @ W`` with ``W`` transposed, which changes no norm.

Each model evaluates a sequence ``x`` of shape ``(batch, time, features)`` (``(time, batch,
features)``, ``torch.nn.RNN``'s default, with ``batch_first=False``) two ways:

- ``model(x)`` / :meth:`~_RecurrentModel.sequential`: the ordinary recurrence from a zero state;
- ``model(x, k=k)`` / :meth:`~_RecurrentModel.truncated`: the *truncated* model ``h_t^k``, whose
  state restarts from zero ``k`` steps back (``h_{t-k}^k = 0``). It is feed-forward, so all
  ``T`` outputs are computed together: ``k`` cell applications on a batch of ``B*T`` windows
  instead of ``T`` applications on ``B`` sequences. Windows that reach before the start of
  the sequence begin at the start (so ``h_t^k = h_t`` for ``t <= k``).

Stability (the state map is ``lambda``-contractive) is an optional constraint enforced after
each optimiser step by :meth:`~_RecurrentModel.project_`, :func:`enforce_stability` or the
optimiser hook from :func:`register_stability_hook`:

- RNNs: ``||W||_2 <= lam`` by subspace iteration on the top
  :data:`~tnmars.nn.stability.SUBSPACE_BLOCK` directions (warm-started from the previous
  step's, :func:`~tnmars.nn.stability.subspace_iteration`) and rescaling, or by an exact SVD clip of the singular values (``projection="svd"``; for a
  TT matrix: the exact norm, then the same rescaling of the cores). Half-precision weights
  are measured in float32 and re-measured after the rescale rounds them;
- LSTM: the authors' l1 condition — every column of each gate's recurrent matrix is shrunk
  to l1 mass at most ``i 0.395, f 0.155, z 0.099, o 0.395`` and the input-to-forget weights
  to ``0.25``. ``stable=True`` does not set the authors' forget-gate bias of 10
  (:data:`LSTM_FORGET_BIAS`, ``forget_bias=``): the recipe is not a contraction, and with the
  forget gate near 1 the state map of a fresh stable LSTM at that bias measured Jacobian
  2-norms of 1.18 to 1.30 (hidden 4 to 64, the recurrent guide's runs), so tnmars's LSTM
  starts its forget bias at 1 (:class:`LSTM`; :func:`~tnmars.nn.stability.effective_stability`
  measures a model).

The RNN's recurrent matrix may be a TT-matrix :class:`tnmars.Network` with MARS masks
(``recurrent="tt"``, :class:`TTRecurrentMatrix`): its spectral norm is estimated by subspace
iteration through network contractions (the dense matrix is never formed for that), and the
projection rescales the cores.

>>> import torch
>>> from tnmars.nn import TanhRNN
>>> rnn = TanhRNN(input_size=3, hidden_size=8, lam=0.9)
>>> x = torch.randn(2, 20, 3)
>>> rnn(x).shape, rnn(x, k=5).shape
(torch.Size([2, 20, 8]), torch.Size([2, 20, 8]))
>>> opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
>>> handle = register_stability_hook(opt, rnn)  # ||W||_2 <= 0.9 after every opt.step()
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import Any

import torch
from torch import nn

from .. import masks as mars
from .._checks import positive_int
from ..backends import get_backend
from ..contract import execute
from ..network import Network, gaussian_core_std
from .base import (
    WARMUP,
    NetworkMatmul,
    at_expected_scale,
    first_indices,
    fold_masks,
    pruned_parameters,
    torch_seed,
    train_masked,
    warn_user,
)
from .layers import prime_factors
from .masks import DEFAULT_ALPHA, BondMasks, resolve_preset
from .program import is_recording
from .stability import (
    SUBSPACE_BLOCK,
    _check_matrix,
    check_k,
    check_lambda,
    exact_unless_converged,
    fixed_block,
    project_spectral,
    rescale_columns_l1,
    subspace_iteration,
    working_dtype,
)

__all__ = [
    "LSTM_L1_BOUNDS",
    "LSTM_INPUT_FORGET_L1",
    "LSTM_FORGET_BIAS",
    "LSTM_DEFAULT_FORGET_BIAS",
    "TTRecurrentMatrix",
    "LinearRNN",
    "TanhRNN",
    "LSTM",
    "enforce_stability",
    "register_stability_hook",
    "balanced_factors",
]

#: per-gate l1 bound on every column of the LSTM recurrent matrices (authors' public code)
LSTM_L1_BOUNDS: dict[str, float] = {"i": 0.395, "f": 0.155, "z": 0.099, "o": 0.395}
#: l1 bound on the input-to-forget-gate weights of each forget unit (authors' public code)
LSTM_INPUT_FORGET_L1: float = 0.25
#: forget-gate bias initialisation of the stable LSTM in the authors' public code; not the
#: default here (``forget_bias=LSTM_FORGET_BIAS`` asks for it): with forget gates at
#: sigmoid(10) the cell state barely decays, and a fresh LSTM under the l1 bounds measured
#: state-Jacobian 2-norms of 1.18-1.30 and truncation errors max |h_t - h_t^50| of 0.3-1.3
#: (hidden 4, 16, 64, three seeds each, T = 200, float64; 2026-12-02), against 0.94-1.04
#: and 6e-8 to 2e-7 with bias 1 (:data:`LSTM_DEFAULT_FORGET_BIAS`)
LSTM_FORGET_BIAS: float = 10.0
#: forget-gate bias initialisation of every :class:`LSTM` by default, stable or not
LSTM_DEFAULT_FORGET_BIAS: float = 1.0

_BATCH = "Z"  # batch letter for contractions with a TT-matrix (its bonds use A, B, ...)


def _torch_backend():
    return get_backend("torch")


def _usable_block(block: torch.Tensor) -> torch.Tensor:
    """A warm-start block for :func:`subspace_iteration`, or fixed start vectors where it holds
    a non-finite value or nothing (set by hand: the iteration only stores finite, orthonormal
    blocks)."""
    if torch.isfinite(block).all() and bool(block.any()):
        return block
    return fixed_block(block.shape[0], block.shape[1], block.dtype, block.device)


def _shrink_into_ball(
    measure: Callable[[], float], scale: Callable[[float], None], lam: float, dtype: torch.dtype
) -> None:
    """After a projection of weights stored in a half type, re-measure and shrink until inside.

    Rescaling rounds every entry (by up to 2^-8 in bfloat16, per core for a TT matrix), which
    can leave ``||W||_2`` percents above ``lam`` (up to 1.11 for ``lam = 0.9`` in a TT RNN trained in
    bfloat16). Each round aims a few units of the storage's roundoff below ``lam``. Float32 and
    float64 weights are left as projected (their rounding is below the estimate's tolerance).
    """
    if working_dtype(dtype) == dtype:
        return
    eps = torch.finfo(dtype).eps
    for attempt in range(1, 9):
        sigma = measure()
        if sigma <= lam:
            return
        scale(lam / sigma * (1.0 - attempt * eps))


def balanced_factors(n: int, d: int | None = None) -> tuple[int, ...]:
    """Split ``n`` into ``d`` factors as equal as possible (largest first).

    With ``d=None`` three factors are used when every factor can be at least 2, else two,
    and one for a prime ``n`` (a TT-matrix of that shape is the dense matrix).
    Used for the TT-matrix shape of a hidden size: ``64 -> (4, 4, 4)``, ``48 -> (4, 4, 3)``.

    >>> balanced_factors(64), balanced_factors(48), balanced_factors(10)
    ((4, 4, 4), (4, 4, 3), (5, 2))
    """
    n = positive_int(n, "n")
    primes = prime_factors(n)
    if d is None:
        d = 3 if len(primes) >= 3 else max(len(primes), 1)
        d = min(d, 3) if len(primes) >= 2 else 1
        d = max(d, 1)
    if d < 1:
        raise ValueError(f"the number of factors must be >= 1; got {d}")
    buckets = [1] * d
    for q in sorted(primes, reverse=True):
        buckets[buckets.index(min(buckets))] *= q
    return tuple(sorted(buckets, reverse=True))


# ================================================================================ TT-matrix weight
#: the starting rank of every bond of a :class:`TTRecurrentMatrix` built without ``rank``
DEFAULT_TT_RANK = 8


class TTRecurrentMatrix(nn.Module):
    """A square recurrent matrix ``W`` (``size x size``) stored as a TT-matrix with MARS masks.

    The cores of :meth:`tnmars.Network.tt_matrix` ``(shape, shape, rank)`` are ``nn.Parameter``\\ s;
    ``masks`` is a :class:`~tnmars.nn.BondMasks` over its internal bonds (``mars=False``:
    fixed ranks, no masks). This is the *MARS layer* a loss finds: it exposes :attr:`cores`,
    :attr:`masks` and :meth:`log_prior`, the names ``tnmars.nn``'s tensorized layers use
    (Bernoulli prior of the masks plus the Gaussian ``N(0, 100)`` prior of the cores, a
    quantity to maximise; divide by the number of observations and subtract from the data
    loss).

    ``h @ W`` is applied either by reconstructing ``W`` once per sequence and multiplying, or
    by contracting ``h`` through the cores at every step, whichever costs fewer FLOPs for the
    batch and length at hand (:meth:`operator`). The spectral norm, however, is always
    computed through contractions (:meth:`spectral_norm`): subspace iteration with
    ``V -> V @ W`` and ``U -> U @ W^T`` as two network contractions with a few vectors.

    ``rank=None`` (default): :data:`DEFAULT_TT_RANK` on every bond, clipped without a warning
    to what each can use (a warning about a rank the user never gave came with every hidden size
    from 8 to 32).

    >>> W = TTRecurrentMatrix(64, rank=4, seed=0).double()
    >>> W.shape, W.ranks
    ((4, 4, 4), {'A': 4, 'B': 4})
    >>> TTRecurrentMatrix(16).ranks
    {'A': 8, 'B': 4}
    >>> W.project_(0.9) >= 0.0
    True
    """

    warmup = WARMUP  # (see tnmars.nn.base.WARMUP)

    def reset_parameters(self) -> None:
        """Draw the cores and the mask logits afresh as the constructor does (W's entries at
        standard deviation ``init_scale``, seeded by ``torch.manual_seed``), at the current
        ranks. A model's stability constraint (``lam``) then holds again after its next
        projection (``model.project_()``, or the training hook's). Without this, a
        ``reset_parameters()`` loop over a model's modules re-drew the masks' logits and left
        the cores as they were."""
        cores = list(self.cores)
        scale = self.__dict__.get("init_scale", 1.0 / math.sqrt(3.0 * self.size))  # (pickled before it was kept)
        std = gaussian_core_std(scale, [c.shape[-1] for c in cores[:-1]], len(cores))  # (bonds: (r, i, o, r') cores)
        drawn = at_expected_scale([torch.randn(c.shape, dtype=c.dtype, device=c.device) * std for c in cores],
                                  self.spec, scale)
        with torch.no_grad():
            for core, value in zip(cores, drawn):
                core.copy_(value)
        if self.masks is not None:
            self.masks.reset_parameters()

    def train(self, mode: bool = True) -> TTRecurrentMatrix:
        return train_masked(self, mode, super().train)  # type: ignore[return-value]

    def __init__(
        self,
        size: int,
        rank: int | Sequence[int] | None = None,
        *,
        shape: Sequence[int] | None = None,
        mars: bool | str = True,
        pi: float = 1e-2,
        alpha: float = DEFAULT_ALPHA,
        temperature: float = 0.1,
        min_rank: int = 1,
        scale: float | None = None,
        seed: int | None = None,
        apply: str = "auto",
    ) -> None:
        super().__init__()
        size = positive_int(size, "size")
        shape = balanced_factors(size) if shape is None else tuple(int(s) for s in shape)
        if prod(shape) != size:
            raise ValueError(f"the TT shape {shape} has product {prod(shape)}, not the matrix size {size}")
        if apply not in ("auto", "dense", "contract"):
            raise ValueError(f"apply must be 'auto', 'dense' or 'contract'; got {apply!r}")
        if len(shape) > 12:
            raise ValueError(f"at most 12 TT factors are supported; got {len(shape)}")
        if len(shape) == 1:
            warn_user(
                f"TTRecurrentMatrix({size}): the TT shape {shape} has a single factor, so W is one dense "
                f"core: no bonds, no MARS masks, {'' if rank is None else f'rank {rank} ignored, '}no compression"
                + (f" ({size} is prime)" if size > 1 and len(prime_factors(size)) == 1 else "")
                + "; pass tt_shape= with two or more factors, or choose a hidden size that factorizes"
            )
        dtype = str(torch.get_default_dtype()).replace("torch.", "")
        # entries of W have std `scale`; default matches torch's U(-1/sqrt(n), 1/sqrt(n)) init
        scale = 1.0 / math.sqrt(3.0 * size) if scale is None else float(scale)
        # without seed=, a seed from torch's generator: torch.manual_seed fixes this init as it does every
        # other layer's (Network's own default seed is fresh entropy)
        with warnings.catch_warnings():  # the default rank is clipped to what each bond can use in silence
            if rank is None:
                warnings.filterwarnings("ignore", message=".*clipped to the feasible")
            net = Network.tt_matrix(shape, shape, DEFAULT_TT_RANK if rank is None else rank, backend="torch",
                                    dtype=dtype, seed=torch_seed() if seed is None else seed, scale=scale)
        self.size = size
        self.shape = shape
        self.spec = net.spec
        self.init_scale = scale  # (the standard deviation reset_parameters draws W's entries at)
        self.apply_mode = apply
        d = len(shape)
        out = net.output
        self._in_letters, self._out_letters = out[:d], out[d:]
        # (W's entries at exactly that scale, not only in expectation: see at_expected_scale)
        self.cores = nn.ParameterList([nn.Parameter(c.detach().clone())
                                       for c in at_expected_scale(net.cores, net.spec, scale)])
        # h @ W without building a Network at every call: the path under torch.compile / jit.trace,
        # where a Network's spec parsing is Python the tracer cannot follow
        self._mm = NetworkMatmul(net, d)
        enabled, pi, alpha = resolve_preset(mars, pi, alpha)
        # seed= covers the logits' initial noise too (it came from the global RNG: two models built
        # with one seed kept different indices at the paper's negative alpha)
        mask_gen = None if seed is None else torch.Generator().manual_seed(int(seed) + 2)
        self.masks = (BondMasks(net.bonds, pi=pi, alpha=alpha, temperature=temperature, min_rank=min_rank,
                                generator=mask_gen) if enabled and net.bonds else None)
        if self.masks is not None:
            self.masks.owner = f"TTRecurrentMatrix({size})"
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed) + 1)
        start = torch.randn(min(SUBSPACE_BLOCK, size), size, generator=gen)
        # warm starts of the spectral norm's subspace iteration, of the full and of the MAP-masked matrix
        self.register_buffer("_v_full", start, persistent=False)
        self.register_buffer("_v_map", start.clone(), persistent=False)

    # -------------------------------------------------------------- compression
    @property
    def bond_names(self) -> tuple[str, ...]:
        return tuple(self.bonds)

    def compressed(self) -> TTRecurrentMatrix:
        """A copy with every core sliced to the MAP-kept indices and no masks: in eval mode it
        computes what this matrix computes (:func:`tnmars.nn.compress` calls it), except in
        warm-up, where this matrix applies no masks and the copy keeps only the selected
        indices (:func:`tnmars.nn.compress` warns then)."""
        if self.masks is None:
            return copy.deepcopy(self)
        return self._sliced({b: k.cpu().numpy() for b, k in self.masks.keep().items()})

    def at_ranks(self, ranks: Mapping[str, int]) -> TTRecurrentMatrix:
        """A mask-free copy with the first ``ranks[b]`` indices of each bond: the skeleton a
        compressed state loads into (:func:`tnmars.nn.load_compressed`)."""
        return self._sliced(first_indices(self.bonds, ranks, "matrix"))

    def _sliced(self, keep: Mapping[str, Any]) -> TTRecurrentMatrix:
        new = copy.deepcopy(self)
        net, new.cores = pruned_parameters(self.spec, self.cores, keep)
        new.masks = None
        new.warmup = False
        new._mm = NetworkMatmul(net, len(self.shape))
        return new

    # -------------------------------------------------------------- structure
    def network(self) -> Network:
        """The TT-matrix as a :class:`tnmars.Network` over the live parameters (autograd intact)."""
        return Network(self.spec, cores=list(self.cores))

    @property
    def bonds(self) -> dict[str, int]:
        return self.network().bonds

    @property
    def mars(self) -> bool:
        return self.masks is not None

    def current_masks(self) -> dict[str, torch.Tensor] | None:
        """Masks for one forward pass: a hard-concrete sample in train mode, MAP in eval mode;
        none during a warm-up (:func:`tnmars.nn.set_warmup`)."""
        if self.masks is None or self.warmup:
            return None
        return self.masks()

    def map_masks(self) -> dict[str, torch.Tensor] | None:
        """The MAP (0/1) masks, whatever the mode."""
        if self.masks is None:
            return None
        dtype = self.cores[0].dtype
        return {b: k.to(dtype) for b, k in self.masks.keep().items()}

    @property
    def ranks(self) -> dict[str, int]:
        """Selected rank per bond (MAP masks); the full ranks without MARS. An attribute, as
        :attr:`TensorizedLinear.ranks <tnmars.nn.TensorizedLinear.ranks>` is."""
        if self.masks is None:
            return self.bonds
        return self.masks.ranks()

    @property
    def num_params(self) -> int:
        """Core parameters at the full ranks."""
        return self.network().num_params

    @property
    def max_ranks(self) -> dict[str, int]:
        """Bond -> its full size (the accounting of :func:`tnmars.nn.summary`)."""
        return self.bonds

    def selected_ranks(self) -> dict[str, int]:
        """Bond -> rank kept by the MAP masks (same as :attr:`ranks`)."""
        return self.ranks

    def num_params_at(self, ranks: Mapping[str, int]) -> int:
        """Core parameters if the bonds had ``ranks``."""
        return self.network().num_params_at(dict(ranks))

    def num_params_selected(self) -> int:
        """Core parameters at the selected ranks (the paper's dof)."""
        return self.network().num_params_at(self.ranks)

    @property
    def dense_size(self) -> int:
        return self.size * self.size

    def compression(self) -> float:
        """Dense size over core parameters at the selected ranks (NaN if a bond has rank 0: the
        matrix is then zero, which is not a compression)."""
        if any(r == 0 for r in self.ranks.values()):
            return math.nan
        return self.dense_size / self.num_params_selected()

    def log_prior(self) -> torch.Tensor:
        """Log prior (to maximise): expected Bernoulli mask prior + Gaussian ``N(0, 100)`` core prior."""
        if self.masks is not None:
            return self.masks.log_prior(list(self.cores))
        return mars.gaussian_log_prior(list(self.cores), _torch_backend())

    # -------------------------------------------------------------- application
    def _plan_apply(self, batch: int, transpose: bool = False):
        net_in, net_out = (self._out_letters, self._in_letters) if transpose else (self._in_letters, self._out_letters)
        return self.network().plan((_BATCH + net_in,), [(batch, *self.shape)], _BATCH + net_out)

    def _contract(self, cores: list[torch.Tensor], h: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        lead = h.shape[:-1]
        flat = h.reshape(-1, *self.shape)
        plan = self._plan_apply(flat.shape[0], transpose)
        return execute(plan, cores + [flat], _torch_backend()).reshape(*lead, self.size)

    def matrix(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The dense ``W`` (``size x size``), for diagnostics and the "reconstruct" path."""
        return self.network().to_tensor(masks).reshape(self.size, self.size)

    def operator(
        self, masks: Mapping[str, torch.Tensor] | None = None, *, batch: int = 1, steps: int = 1
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function ``h -> h @ W`` for one forward pass (masks folded in once).

        Chooses "reconstruct then multiply" when ``reconstruct FLOPs + steps * batch * size^2``
        is below ``steps`` contractions through the cores (``apply=`` forces one).
        """
        if is_recording():  # torch.compile(fullgraph=True) broke on the spec parsing of self.network()
            cores = fold_masks(list(self.cores), masks, self._mm.sites)
            mode = {"dense": "weight", "contract": "cores"}.get(self.apply_mode, "auto")
            return lambda h: self._mm(h, cores, None, mode)
        net = self.network()
        cores = net.masked_cores(masks)
        mode = self.apply_mode
        if mode == "auto":
            dense = net.plan().flops + steps * batch * self.size * self.size
            through = steps * self._plan_apply(max(batch, 1)).flops
            mode = "dense" if dense <= through else "contract"
        if mode == "dense":
            W = execute(net.plan(), cores, _torch_backend()).reshape(self.size, self.size)
            return lambda h: h @ W
        return lambda h: self._contract(cores, h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h @ W`` with this pass's masks."""
        return self.operator(self.current_masks(), batch=int(prod(h.shape[:-1])))(h)

    # -------------------------------------------------------------- spectral norm and projection
    def spectral_norm(
        self, masks: Mapping[str, torch.Tensor] | None = None, *, method: str = "power", iters: int = 500, tol: float = 1e-9
    ) -> float:
        """``||W||_2`` (of the masked matrix when ``masks`` are given).

        ``method="power"``: subspace iteration (:func:`~tnmars.nn.stability.subspace_iteration`)
        through two network contractions per round (``V @ W`` and ``U @ W^T`` for a block of
        vectors), warm-started from the previous call's; the dense matrix is never formed. ``method="svd"``: exact, through the dense matrix (a check).
        """
        with torch.no_grad():
            dtype = working_dtype(self.cores[0].dtype)  # float32 for half-precision cores
            cores = [c.to(dtype) for c in self.network().masked_cores(masks)]
            if method not in ("power", "svd"):
                raise ValueError(f"method must be 'power' or 'svd'; got {method!r}")

            def dense() -> torch.Tensor:
                W = execute(self.network().plan(), cores, _torch_backend()).reshape(self.size, self.size)
                if not torch.isfinite(W).all():
                    raise ValueError("the recurrent matrix has NaN or infinite entries")
                return W

            if method == "svd":
                return float(torch.linalg.matrix_norm(dense(), 2))
            buf = self._v_full if masks is None else self._v_map
            res = subspace_iteration(
                lambda V: self._contract(cores, V),
                lambda U: self._contract(cores, U, transpose=True),
                _usable_block(buf).to(cores[0]),
                iters=iters,
                tol=tol,
            )
            if res.sigma > 0:
                buf.copy_(res.vectors)
            return exact_unless_converged(res, dense, iters)

    def scale_(self, factor: float) -> None:
        """Multiply ``W`` by ``factor`` by scaling every core by ``factor ** (1/d)`` (in place)."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive; got {factor}")
        per_core = factor ** (1.0 / len(self.cores))
        with torch.no_grad():
            for c in self.cores:
                c.mul_(per_core)

    def project_(self, lam: float, method: str = "power", *, iters: int = 500, tol: float = 1e-9) -> float:
        """Rescale the cores so that ``||W||_2 <= lam``; return the norm before.

        The bound is enforced on the unmasked matrix and, with MARS, on the MAP-masked one
        (the matrix used in eval mode); the larger of the two norms sets the scale. Hard-
        concrete samples in training (fractional mask values) are not individually bounded.
        Norms are computed in float32 for half-precision cores, and after the rescale such
        cores are re-measured and shrunk until the rounded matrix is inside the ball.
        """
        lam = check_lambda(lam)

        def measure() -> float:
            sigma = self.spectral_norm(None, method=method, iters=iters, tol=tol)
            if self.masks is not None:
                sigma = max(sigma, self.spectral_norm(self.map_masks(), method=method, iters=iters, tol=tol))
            return sigma

        sigma = measure()
        if sigma > lam:
            self.scale_(lam / sigma)
            _shrink_into_ball(measure, self.scale_, lam, self.cores[0].dtype)
        return sigma

    def pruned(self) -> Network:
        """A detached :class:`Network` physically at the selected ranks (no masks)."""
        net = Network(self.spec, cores=[c.detach().clone() for c in self.cores])
        if self.masks is None:
            return net
        return net.prune({b: k.cpu().numpy() for b, k in self.masks.keep().items()})

    def extra_repr(self) -> str:
        return f"size={self.size}, shape={self.shape}, ranks={self.bonds}, mars={self.mars}"


# ================================================================================ recurrent models
#: relative excess over the stability bound that :meth:`_RecurrentModel.check_constraint`
#: tolerates: the power projection's estimates converge over the steps (a few rounds each),
#: so a projected model can sit a little above its bound; an unprojected one was measured
#: 5 times above it after 50 Adam steps
CONSTRAINT_SLACK = 1e-2


def _autocasting(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device (then mixed dtypes are the point)."""
    try:
        return bool(torch.is_autocast_enabled(x.device.type))
    except TypeError:  # (older signature without a device type)
        return bool(torch.is_autocast_enabled())


def _check_after_load(module: _RecurrentModel, incompatible_keys: Any) -> None:
    """``load_state_dict``'s post hook: weights loaded from elsewhere may break the constraint."""
    if module.constrained:
        module.check_constraint("load_state_dict")


class _RecurrentModel(nn.Module):
    """Shared machinery: sequential and truncated evaluation, stability projection.

    Subclasses define ``state_size``, :meth:`_input_proj` (the input contribution of every
    step, computed for all steps at once), :meth:`_prepare` (per-pass context, e.g. the
    recurrent operator with this pass's masks), :meth:`_cell` and :meth:`hidden`.
    """

    input_size: int
    hidden_size: int
    state_size: int
    #: sequences are ``(batch, time, features)`` (True, the default) or ``(time, batch,
    #: features)`` (False: ``torch.nn.RNN``'s default layout), inputs and outputs alike
    batch_first: bool = True
    #: :func:`tnmars.nn.tensorize` leaves the layers inside such a module dense (with a
    #: warning; naming one raises): :meth:`project_` reads and writes ``input.weight`` (the
    #: LSTM's input-to-forget bound), which a tensorized layer only computes, so the projection
    #: would silently miss it
    tensorize_keeps_dense: bool = True

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be True or False; got {batch_first!r}")
        self.batch_first = batch_first
        self.register_load_state_dict_post_hook(_check_after_load)

    @property
    def _layout(self) -> str:
        return "(batch, time, features)" if self.batch_first else "(time, batch, features)"

    def _in_user_layout(self, y: torch.Tensor) -> torch.Tensor:
        """A ``(batch, time, ...)`` result in the model's layout (:attr:`batch_first`)."""
        return y if self.batch_first else y.transpose(0, 1)

    # -- to be provided by subclasses
    def _input_proj(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, batch: int, steps: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cell(self, ctx: Any, state: torch.Tensor, xin: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def hidden(self, states: torch.Tensor) -> torch.Tensor:
        """The hidden output ``h`` carried in full states (identity for RNNs, ``h`` of ``(c, h)``)."""
        return states

    @property
    def constrained(self) -> bool:  # pragma: no cover - overridden
        return False

    def project_(self) -> float | None:  # pragma: no cover - overridden
        return None

    def constraint_ratio(self) -> float | None:  # pragma: no cover - overridden
        """How far the weights are from the stability constraint, without changing them: the
        measured quantity over its bound (<= 1 inside); None without a constraint."""
        return None

    def check_constraint(self, when: str = "now") -> float | None:
        """:meth:`constraint_ratio`, with a warning when the weights are outside the constraint
        (by more than :data:`CONSTRAINT_SLACK`): the constraint is only held by
        :meth:`project_` after every optimiser step (:func:`register_stability_hook`), and a
        model trained without it, or loaded from weights that break it, computes an
        unconstrained model under its ``lam`` / ``stable`` label. Run at ``eval()`` and after
        ``load_state_dict``."""
        try:
            ratio = self.constraint_ratio()
        except ValueError as err:  # NaN or infinite weights: said, not raised (eval() must not fail)
            warn_user(f"{type(self).__name__} ({when}): {err}: the model computes NaN", RuntimeWarning)
            return None
        if ratio is not None and ratio > 1.0 + CONSTRAINT_SLACK:
            what = self._constraint_words(ratio)
            warn_user(f"{type(self).__name__} ({when}): {what}: the weights are outside the stability constraint "
                      "(it holds only where the model is projected after every optimiser step), so the model is not "
                      "the constrained one its settings name. Project after every step "
                      "(tnmars.nn.register_stability_hook(optimizer, model)), or now (tnmars.nn.enforce_stability(model)).",
                      RuntimeWarning)
        return ratio

    def _constraint_words(self, ratio: float) -> str:  # pragma: no cover - overridden
        return f"{ratio:.4g} times its bound"

    def train(self, mode: bool = True) -> _RecurrentModel:
        was_training = self.training
        out = super().train(mode)
        if was_training and not mode and self.constrained and not torch.compiler.is_compiling():
            self.check_constraint("eval()")
        return out

    # -- helpers
    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def initial_state(self, batch: int) -> torch.Tensor:
        """The zero state, ``(batch, state_size)``, on the parameters' dtype and device."""
        p = self._param()
        return torch.zeros(batch, self.state_size, dtype=p.dtype, device=p.device)

    def _check_x(self, x: Any) -> torch.Tensor:
        """``x`` checked, as ``(batch, time, features)`` whatever the model's layout."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {self._layout[:-9]}{self.input_size}); got "
                            f"{type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"x must have shape {self._layout} (batch_first={self.batch_first}); got "
                             f"{tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x has {x.shape[-1]} features but the model expects input_size={self.input_size}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[1] < 1:
            raise ValueError("x has no time steps")
        if not (x.is_floating_point() or x.is_complex()):  # (torch said "mat1 and mat2 must have the same dtype")
            raise TypeError(f"x is {x.dtype}: a recurrent model takes floating-point inputs (x.float(), or "
                            f"x.to({self._param().dtype}))")
        if x.is_floating_point() and not torch.compiler.is_compiling():
            p = self._param()
            if x.dtype != p.dtype and p.is_floating_point() and not _autocasting(x):
                raise TypeError(f"x is {x.dtype} but the model's parameters are {p.dtype}: convert one "
                                f"(x.to({p.dtype}) or model.to({x.dtype}))")
            tt = self.__dict__["_modules"].get("weight_tt")
            if tt is not None and tt.cores[0].dtype != p.dtype and not _autocasting(x):
                # (a ready TT matrix of another dtype: refused here, not when the model is built, where
                # TanhRNN(..., recurrent=W.double()).double() is fine; torch said "float != double")
                raise TypeError(f"the TT recurrent matrix is {tt.cores[0].dtype} but the model's other parameters "
                                f"are {p.dtype}: convert the model (model.to({p.dtype})) or the matrix")
            # a NaN spreads through every later step and, trained on, into the weights
            if not bool(torch.isfinite(x).all()):
                bad = int((~torch.isfinite(x)).sum())
                raise ValueError(f"x has {bad} NaN or infinite entries; a recurrence carries them into every later "
                                 "state (and a training step into the weights): clean or mask the data first")
        return x

    def step(self, state: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """One application of the state map ``s_t = phi(s_{t-1}, x_t)`` on ``(N, S)`` / ``(N, D)``.

        With a MARS recurrent matrix in training mode each call draws new masks, where
        :meth:`states` and ``forward`` draw once per sequence: a loop of ``step`` calls computes
        what ``states`` computes in eval mode (MAP masks), not in training mode."""
        return self._cell(self._prepare(state.shape[0], 1), state, self._input_proj(x_t))

    # -- evaluation
    def states(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Full states ``s_1..s_T`` of the recurrence, ``(B, T, state_size)`` (``(T, B, ...)`` with
        ``batch_first=False``; zero start by default)."""
        return self._in_user_layout(self._states(self._check_x(x), state))

    def _states(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`states` of a checked ``(batch, time, features)`` ``x``, ``(B, T, state_size)``."""
        B, T, _ = x.shape
        if state is None:
            state = self.initial_state(B)
        elif not isinstance(state, torch.Tensor):  # e.g. torch.nn.LSTM's (h0, c0)
            raise TypeError(f"state must be one tensor of shape ({B}, {self.state_size}) (an LSTM's cell and hidden "
                            f"states concatenated in that order: torch.cat([c0, h0], dim=-1)); got {type(state).__name__}")
        elif tuple(state.shape) != (B, self.state_size):
            raise ValueError(f"state must have shape ({B}, {self.state_size}); got {tuple(state.shape)}")
        elif not torch.compiler.is_compiling():  # checked as x is (a NaN state gave NaN outputs, silently)
            p = self._param()
            if state.dtype != p.dtype and p.is_floating_point() and not _autocasting(state):
                raise TypeError(f"state is {state.dtype} but the model's parameters are {p.dtype}: convert one "
                                f"(state.to({p.dtype}))")
            if not bool(torch.isfinite(state).all()):
                raise ValueError(f"state has {int((~torch.isfinite(state)).sum())} NaN or infinite entries; a "
                                 "recurrence carries them into every later state")
        xin = self._input_proj(x)
        ctx = self._prepare(B, T)
        out = []
        for t in range(T):
            state = self._cell(ctx, state, xin[:, t])
            out.append(state)
        return torch.stack(out, dim=1)

    def truncated_states(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Full states of the truncated model ``s_t^k`` for every ``t``, ``(B, T, state_size)``
        (``(T, B, ...)`` with ``batch_first=False``).

        ``k`` cell applications on ``B*T`` windows at once: at round ``j`` window ``t`` reads
        ``x_{t-k+1+j}``; rounds before the sequence start leave its state at zero.
        """
        k = check_k(k)
        return self._in_user_layout(self._truncated_states(self._check_x(x), k))

    def _truncated_states(self, x: torch.Tensor, k: int) -> torch.Tensor:
        B, T, _ = x.shape
        if k >= T:  # every window reaches the start: the truncated model is the full one
            return self._states(x)
        xin = self._input_proj(x)
        G = xin.shape[-1]
        pad = xin.new_zeros(B, k - 1, G)
        xpad = torch.cat([pad, xin], dim=1)
        ctx = self._prepare(B * T, k)
        state = self.initial_state(B * T)
        pos = torch.arange(T, device=x.device)
        for j in range(k):
            xj = xpad[:, j : j + T].reshape(B * T, G)
            new = self._cell(ctx, state, xj)
            first_valid = k - 1 - j  # windows t >= first_valid have started by round j
            if first_valid > 0:
                valid = (pos >= first_valid).repeat(B).unsqueeze(-1)
                new = torch.where(valid, new, state)
            state = new
        return state.reshape(B, T, self.state_size)

    def sequential(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden outputs ``h_1..h_T`` of the ordinary recurrence, ``(B, T, hidden_size)``
        (``(T, B, hidden_size)`` with ``batch_first=False``)."""
        return self.hidden(self.states(x, state))

    def truncated(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Hidden outputs ``h_t^k`` of the truncated model for every ``t``, computed in parallel."""
        return self.hidden(self.truncated_states(x, k))

    def forward(self, x: torch.Tensor, k: int | None = None, state: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, hidden_size)`` (``(T, B, ...)`` with ``batch_first=False``): sequential
        without ``k``, truncated ``h_t^k`` with it."""
        if k is None:
            return self.sequential(x, state)
        if state is not None:
            raise ValueError("the truncated model restarts from zero: do not pass state= together with k=")
        return self.truncated(x, k)

    def register_stability_hook(self, optimizer: torch.optim.Optimizer):
        """Enforce the constraint after every ``optimizer.step()``; returns the hook handle."""
        return register_stability_hook(optimizer, self)


#: the defaults of the options of :class:`_ElmanRNN` that only ``recurrent="tt"`` uses
_TT_OPTION_DEFAULTS = {"tt_rank": None, "tt_shape": None, "mars": True, "pi": 1e-2, "alpha": DEFAULT_ALPHA, "temperature": 0.1,
                       "min_rank": 1}


def _same_value(given: Any, default: Any) -> bool:
    """Whether an option was left at its default (``8`` and ``8.0`` alike; ``True`` is not ``1``)."""
    if isinstance(given, bool) or isinstance(default, bool) or given is None or default is None:
        return given is default
    try:
        return bool(given == default)
    except (TypeError, ValueError):  # an array or a list compared elementwise
        return False


class _ElmanRNN(_RecurrentModel):
    """``h_t = rho(h_{t-1} W + x_t U^T + b)`` with a dense or TT-matrix ``W``."""

    _rho: Callable[[torch.Tensor], torch.Tensor] = staticmethod(lambda z: z)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        lam: float | None = None,
        projection: str = "power",
        bias: bool = True,
        recurrent: str | TTRecurrentMatrix = "dense",
        tt_rank: int | Sequence[int] | None = None,
        tt_shape: Sequence[int] | None = None,
        mars: bool | str = True,
        pi: float = 1e-2,
        alpha: float = DEFAULT_ALPHA,
        temperature: float = 0.1,
        min_rank: int = 1,
        seed: int | None = None,
        power_iters: int = 500,
        power_tol: float = 1e-9,
        batch_first: bool = True,
    ) -> None:
        super().__init__(batch_first)
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.state_size = self.hidden_size
        self.lam = None if lam is None else check_lambda(lam)
        if projection not in ("power", "svd"):
            raise ValueError(f"projection must be 'power' or 'svd'; got {projection!r}")
        self.projection = projection
        self.power_iters = positive_int(power_iters, "power_iters")
        self.power_tol = float(power_tol)
        if not self.power_tol > 0 or not math.isfinite(self.power_tol):  # (said "tol must be positive", later)
            raise ValueError(f"power_tol must be a positive number; got {power_tol!r}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1.0 / math.sqrt(self.hidden_size)
        self.input = nn.Linear(self.input_size, self.hidden_size, bias=bias)
        with torch.no_grad():  # torch's default RNN init, reproducible with seed=
            self.input.weight.uniform_(-bound, bound, generator=gen)
            if bias:
                self.input.bias.uniform_(-bound, bound, generator=gen)
        given = {"tt_rank": tt_rank, "tt_shape": tt_shape, "mars": mars, "pi": pi, "alpha": alpha,
                 "temperature": temperature, "min_rank": min_rank}
        ignored = [k for k, v in given.items() if not _same_value(v, _TT_OPTION_DEFAULTS[k])]
        if ignored and not (isinstance(recurrent, str) and recurrent == "tt"):
            kind = "a ready TTRecurrentMatrix" if isinstance(recurrent, TTRecurrentMatrix) else f"recurrent={recurrent!r}"
            warn_user(f"{type(self).__name__}: {', '.join(ignored)} configure the TT recurrent matrix that "
                      f"recurrent='tt' builds; with {kind} they are ignored")
        if isinstance(recurrent, TTRecurrentMatrix):
            if recurrent.size != self.hidden_size:
                raise ValueError(f"the TT recurrent matrix has size {recurrent.size}, not hidden_size={self.hidden_size}")
            self.weight_tt: TTRecurrentMatrix | None = recurrent
            self.weight = None
        elif recurrent == "tt":
            self.weight_tt = TTRecurrentMatrix(
                self.hidden_size, tt_rank, shape=tt_shape, mars=mars, pi=pi, alpha=alpha, temperature=temperature,
                min_rank=min_rank, seed=seed,
            )
            self.weight = None
        elif recurrent == "dense":
            self.weight_tt = None
            W = torch.empty(self.hidden_size, self.hidden_size).uniform_(-bound, bound, generator=gen)
            self.weight = nn.Parameter(W)
        else:
            raise ValueError(f"recurrent must be 'dense', 'tt' or a TTRecurrentMatrix; got {recurrent!r}")
        start = torch.randn(min(SUBSPACE_BLOCK, self.hidden_size), self.hidden_size, generator=gen)
        self.register_buffer("_power_v", start, persistent=False)  # the spectral norm's warm start
        if self.lam is not None:
            self.project_()

    # -- structure
    @property
    def tensorized(self) -> bool:
        return self.weight_tt is not None

    def recurrent_matrix(self) -> torch.Tensor:
        """The dense recurrent matrix ``W`` (``h_{t-1} @ W``); a TT matrix with its MAP masks."""
        if self.weight_tt is None:
            return self.weight
        return self.weight_tt.matrix(self.weight_tt.map_masks())

    def _input_proj(self, x: torch.Tensor) -> torch.Tensor:
        return self.input(x)

    def _prepare(self, batch: int, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.weight_tt is None:
            W = self.weight
            return lambda h: h @ W
        return self.weight_tt.operator(self.weight_tt.current_masks(), batch=batch, steps=steps)

    def _cell(self, ctx, state, xin):
        return type(self)._rho(ctx(state) + xin)

    # -- stability
    @property
    def constrained(self) -> bool:
        return self.lam is not None

    def spectral_norm(self, method: str = "power") -> float:
        """``||W||_2`` of the recurrent matrix (through contractions for a TT matrix): for a MARS
        TT matrix the unmasked one (:meth:`project_` bounds it and the MAP-masked one, which
        eval mode uses: ``recurrent_matrix()``)."""
        if self.weight_tt is not None:
            return self.weight_tt.spectral_norm(None, method=method, iters=self.power_iters, tol=self.power_tol)
        if method not in ("power", "svd"):
            raise ValueError(f"method must be 'power' or 'svd'; got {method!r}")
        W = self.weight.detach()
        _check_matrix(W, "the recurrent matrix")
        W = W.to(working_dtype(W.dtype))  # float32 for half-precision weights
        if method == "svd":
            return float(torch.linalg.matrix_norm(W, 2))
        res = subspace_iteration(
            lambda V: V @ W, lambda U: U @ W.T, _usable_block(self._power_v).to(W.dtype), iters=self.power_iters,
            tol=self.power_tol,
        )
        if res.sigma > 0:
            self._power_v.copy_(res.vectors)
        return exact_unless_converged(res, lambda: W, self.power_iters)

    def project_(self) -> float | None:
        """Enforce ``||W||_2 <= lam`` now (no-op without ``lam``); return the norm before."""
        if self.lam is None:
            return None
        lam = check_lambda(self.lam)  # (an attribute: a value set after construction is checked here)
        if self.projection not in ("power", "svd"):
            raise ValueError(f"projection must be 'power' or 'svd'; got {self.projection!r}")
        if self.weight_tt is not None:
            return self.weight_tt.project_(lam, self.projection, iters=self.power_iters, tol=self.power_tol)
        with torch.no_grad():
            if self.projection == "svd":
                P, sigma = project_spectral(self.weight, lam, "svd")
                if P is not self.weight:
                    self.weight.copy_(P)
            else:
                sigma = self.spectral_norm("power")
                if sigma > lam:
                    self.weight.mul_(lam / sigma)
            if sigma > lam:
                _shrink_into_ball(lambda: self.spectral_norm(self.projection), self.weight.mul_, lam, self.weight.dtype)
            return sigma

    def constraint_ratio(self) -> float | None:
        """``||W||_2 / lam`` (measured as :meth:`project_` measures it: for a MARS TT matrix the
        larger of the unmasked norm and the MAP-masked one, which eval mode runs; the unmasked one
        alone read 0.23 for a model whose eval-mode matrix had norm 4.16 at ``lam=0.9``, found by an
        outside probe); None without ``lam``."""
        if self.lam is None:
            return None
        with torch.no_grad():
            sigma = self.spectral_norm(self.projection)
            tt = self.weight_tt
            if tt is not None and tt.masks is not None:
                sigma = max(sigma, tt.spectral_norm(tt.map_masks(), method=self.projection, iters=self.power_iters,
                                                    tol=self.power_tol))
            return sigma / self.lam

    def _constraint_words(self, ratio: float) -> str:
        return f"||W||_2 = {ratio * self.lam:.4g} > lam = {self.lam:g}"

    def extra_repr(self) -> str:
        rec = "tt" if self.tensorized else "dense"
        return (
            f"input_size={self.input_size}, hidden_size={self.hidden_size}, lam={self.lam}, "
            f"projection={self.projection!r}, recurrent={rec!r}"
        )


class LinearRNN(_ElmanRNN):
    """Linear RNN ``h_t = h_{t-1} W + x_t U^T + b``; stable (``lam``-contractive) iff ``||W||_2 <= lam``.

    Parameters
    ----------
    input_size, hidden_size: feature and state sizes.
    lam: stability bound in ``(0, 1]``; ``None`` leaves ``W`` unconstrained. With ``lam`` the
        constructor already projects ``W`` and :meth:`project_` re-projects (call it after
        every optimiser step, or use :func:`register_stability_hook`).
    projection: ``"power"`` (power iteration + rescale) or ``"svd"`` (exact singular-value clip;
        for a TT matrix the exact norm and the same rescale of the cores).
    power_iters, power_tol: the power projection's round limit and relative tolerance (its
        subspace iteration is warm-started from the previous call's vectors, so a few rounds a
        step converge over the steps). With fewer than
        :data:`~tnmars.nn.stability.EXACT_FALLBACK_ROUNDS` rounds an estimate that has not
        converged is used as it is (a lower bound: the projection is approximate); from there
        up, such an estimate gives way to the exact norm.
    recurrent: ``"dense"``, ``"tt"`` (a :class:`TTRecurrentMatrix` built from ``tt_rank``,
        ``tt_shape``, ``mars``, ``pi``, ``alpha``, ``temperature``, ``min_rank``, with the
        layers' defaults and presets: masks open at the start, at least one index per bond)
        or a ready :class:`TTRecurrentMatrix`.
    seed: reproducible initialisation (torch's default RNN init, ``U(-1/sqrt(H), 1/sqrt(H))``).
    batch_first: sequences ``(batch, time, features)`` (default) or, False, ``(time, batch,
        features)`` as ``torch.nn.RNN`` reads them by default; outputs follow.

    >>> rnn = LinearRNN(2, 4, lam=0.5, seed=0).double()
    >>> round(rnn.spectral_norm("svd"), 6) <= 0.5
    True
    """


class TanhRNN(_ElmanRNN):
    """Tanh RNN ``h_t = tanh(h_{t-1} W + x_t U^T + b)``; ``||W||_2 <= lam`` makes it
    ``lam``-contractive (tanh is 1-Lipschitz). Same arguments as :class:`LinearRNN`.

    >>> rnn = TanhRNN(2, 4, lam=0.9, recurrent="tt", tt_rank=2, tt_shape=(2, 2), alpha=1.0)
    >>> rnn(torch.randn(1, 5, 2)).shape
    torch.Size([1, 5, 4])
    """

    _rho = staticmethod(torch.tanh)


class LSTM(_RecurrentModel):
    """LSTM with gates ``(i, f, z, o)``; state ``s = (c, h)`` concatenated, ``state_size = 2H``.

    ``gates = x_t U^T + b + h_{t-1} W`` with ``W`` of shape ``(H, 4H)``; ``c_t = f c_{t-1} + i z``,
    ``h_t = o tanh(c_t)``.

    ``stable=True`` applies the authors' enforcement after every step (:meth:`project_`):
    every column of gate ``g``'s block of ``W`` is shrunk to l1 mass at most
    ``l1_bounds[g]`` (default :data:`LSTM_L1_BOUNDS`) and every forget unit's input weights to
    ``LSTM_INPUT_FORGET_L1``; the forget-gate bias is initialised to ``forget_bias``
    (default 1, :data:`LSTM_DEFAULT_FORGET_BIAS`). The bounds alone do not make the state map
    contractive: with the authors' bias of 10 (:data:`LSTM_FORGET_BIAS`) the forget gates sit
    near 1, a fresh ``stable=True`` LSTM measured state-Jacobian 2-norms of 1.18-1.30 and its
    truncated outputs stayed 0.3-1.3 away from the full ones 50 steps back; with bias 1,
    norms of 0.94-1.04 and truncation errors of about 1e-7. The bias is trained like any
    weight and not bounded: measure a trained model with
    :func:`~tnmars.nn.stability.effective_stability`. ``batch_first`` as in :class:`LinearRNN`.

    >>> lstm = LSTM(3, 4, stable=True, seed=0)
    >>> lstm(torch.randn(2, 7, 3), k=3).shape
    torch.Size([2, 7, 4])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        stable: bool = False,
        forget_bias: float | None = None,
        l1_bounds: Mapping[str, float] | None = None,
        input_forget_l1: float = LSTM_INPUT_FORGET_L1,
        seed: int | None = None,
        batch_first: bool = True,
    ) -> None:
        super().__init__(batch_first)
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = H = positive_int(hidden_size, "hidden_size")
        self.state_size = 2 * H
        self.stable = bool(stable)
        bounds = dict(LSTM_L1_BOUNDS if l1_bounds is None else l1_bounds)
        if set(bounds) != set("ifzo"):
            raise ValueError(f"l1_bounds needs one bound per gate 'i', 'f', 'z', 'o'; got {sorted(bounds)}")
        for g, b in bounds.items():
            if not b > 0:
                raise ValueError(f"l1 bound of gate {g!r} must be positive; got {b}")
        if not input_forget_l1 > 0:
            raise ValueError(f"input_forget_l1 must be positive; got {input_forget_l1}")
        self.l1_bounds = bounds
        self.input_forget_l1 = float(input_forget_l1)
        self.forget_bias = LSTM_DEFAULT_FORGET_BIAS if forget_bias is None else float(forget_bias)
        if not math.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias must be finite; got {self.forget_bias}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1.0 / math.sqrt(H)
        self.input = nn.Linear(self.input_size, 4 * H)
        self.weight = nn.Parameter(torch.empty(H, 4 * H).uniform_(-bound, bound, generator=gen))
        with torch.no_grad():
            self.input.weight.uniform_(-bound, bound, generator=gen)
            self.input.bias.uniform_(-bound, bound, generator=gen)
            self.input.bias[H : 2 * H] = self.forget_bias
        if self.stable:
            self.project_()

    def hidden(self, states: torch.Tensor) -> torch.Tensor:
        return states[..., self.hidden_size :]

    def _input_proj(self, x: torch.Tensor) -> torch.Tensor:
        return self.input(x)

    def _prepare(self, batch: int, steps: int) -> torch.Tensor:
        return self.weight

    def _cell(self, W, state, xin):
        H = self.hidden_size
        c, h = state[..., :H], state[..., H:]
        g = xin + h @ W
        i, f, z, o = g.split(H, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
        h = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([c, h], dim=-1)

    @property
    def constrained(self) -> bool:
        return self.stable

    def project_(self) -> float | None:
        """Apply the l1 column rescaling now (no-op unless ``stable``); return the largest
        column l1 mass relative to its bound before the rescaling (<= 1 means it was inside)."""
        if not self.stable:
            return None
        H = self.hidden_size
        worst = 0.0
        with torch.no_grad():
            # max() below would skip a NaN ratio and report the weights as inside their bounds
            for name, w in (("weight", self.weight), ("input.weight", self.input.weight)):
                if not torch.isfinite(w).all():
                    raise ValueError(f"the LSTM's {name} has NaN or infinite entries")
            for n, g in enumerate("ifzo"):
                block = self.weight[:, n * H : (n + 1) * H]
                worst = max(worst, float(block.abs().sum(0).max()) / self.l1_bounds[g])
                block.copy_(rescale_columns_l1(block, self.l1_bounds[g]))
            Uf = self.input.weight[H : 2 * H]  # (H, D): row j feeds forget unit j
            worst = max(worst, float(Uf.abs().sum(1).max()) / self.input_forget_l1)
            Uf.copy_(rescale_columns_l1(Uf.T, self.input_forget_l1).T)
        return worst

    def constraint_ratio(self) -> float | None:
        """The largest l1 mass of a gate's recurrent column, or of a forget unit's input
        weights, over its bound (as :meth:`project_` measures it); None unless ``stable``."""
        if not self.stable:
            return None
        H = self.hidden_size
        with torch.no_grad():
            worst = max(float(self.weight[:, n * H : (n + 1) * H].abs().sum(0).max()) / self.l1_bounds[g]
                        for n, g in enumerate("ifzo"))
            return max(worst, float(self.input.weight[H : 2 * H].abs().sum(1).max()) / self.input_forget_l1)

    def _constraint_words(self, ratio: float) -> str:
        return f"a column's l1 mass is {ratio:.4g} times its bound"

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, stable={self.stable}"


# ================================================================================ hooks
def enforce_stability(model: nn.Module) -> dict[str, float]:
    """Project every constrained recurrent submodule of ``model`` now.

    Returns ``{submodule name: value before}`` (the spectral norm for RNNs, the worst l1
    ratio for LSTMs).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    out = _project_constrained(model)
    if not out:
        warn_user(f"enforce_stability: {_NOTHING_CONSTRAINED.format(what='nothing was projected')}")
    return out


#: why a stability call on a model without constraints does nothing (``what`` says what it did not do)
_NOTHING_CONSTRAINED = ("the model has no constrained recurrent module (a tnmars.nn RNN built with lam=..., or an "
                        "LSTM with stable=True), so {what}; build the model with a stability constraint")


def _project_constrained(model: nn.Module) -> dict[str, float]:
    """:func:`enforce_stability` without its check (the hook's per-step call)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, _RecurrentModel) and m.constrained:
            out[name] = m.project_()
    return out


def register_stability_hook(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Call :func:`enforce_stability` on ``model`` after every ``optimizer.step()``.

    Returns the handle (``handle.remove()`` detaches it). This is projected gradient descent:
    the step, then the projection onto the stable set.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not any(isinstance(m, _RecurrentModel) and m.constrained for m in model.modules()):
        warn_user(f"register_stability_hook: {_NOTHING_CONSTRAINED.format(what='the hook projects nothing')}")

    def hook(opt, args, kwargs):
        try:
            _project_constrained(model)
        except ValueError as err:
            if "NaN or infinite" not in str(err):
                raise
            raise ValueError(f"{err}, after optimizer.step(): the step wrote them into the weights. A NaN or infinite "
                             "input, target or loss (or a diverging learning rate) reached the gradients; the weights "
                             "are lost from this step on: reload a checkpoint and check the data.") from err

    return optimizer.register_step_post_hook(hook)
