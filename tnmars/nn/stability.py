"""Stability tools for recurrent models: power iteration, spectral projection, effective stability.

A recurrent model ``s_t = phi(s_{t-1}, x_t)`` is *lambda-stable* when its state map is
lambda-contractive in the state, ``||phi(s, x) - phi(s', x)|| <= lambda ||s - s'||`` with
``lambda < 1`` (Miller & Hardt, "Stable recurrent models"). For ``h_t = rho(h_{t-1} W + x_t U)``
with a 1-Lipschitz ``rho`` (identity, tanh) this holds when ``||W||_2 <= lambda``, which is
what :func:`project_spectral` enforces after an optimiser step. Stable models forget: the
truncated model restarted from zero ``k`` steps back differs by ``O(lambda^k)``.

This module holds the pieces that do not depend on a particular cell:

- :func:`power_iteration` and :func:`subspace_iteration` — largest singular value of a linear
  map given only as two callables (``v -> v @ W`` and its transpose), so a tensor-network
  matrix never has to be materialised (see :class:`tnmars.nn.recurrent.TTRecurrentMatrix`);
  the recurrent modules use the block method, which survives the top singular values
  crossing between two warm-started calls;
- :func:`spectral_norm` / :func:`project_spectral` for dense matrices, by subspace iteration
  or by an exact SVD (the reference the power mode is checked against);
- :func:`rescale_columns_l1` — the column l1 condition the authors use for the LSTM;
- :func:`state_jacobian_norms`, :func:`trajectory_ratios` and :func:`effective_stability` —
  the *effective* contraction factor of a trained model on data, to test the claim that
  "real-world RNNs are effectively stable".

>>> import torch
>>> W = torch.diag(torch.tensor([3.0, 0.5], dtype=torch.float64))
>>> P, sigma = project_spectral(W, 0.9, method="svd")
>>> round(sigma, 6), torch.linalg.matrix_norm(P, 2).item()
(3.0, 0.9)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import torch

from .._checks import positive_int

__all__ = [
    "check_lambda",
    "check_k",
    "working_dtype",
    "PowerIterationResult",
    "power_iteration",
    "subspace_iteration",
    "fixed_block",
    "spectral_norm",
    "project_spectral",
    "rescale_columns_l1",
    "state_jacobian_norms",
    "trajectory_ratios",
    "StabilityReport",
    "effective_stability",
]


# ---------------------------------------------------------------------------- argument checks
def check_lambda(lam: Any, name: str = "lam") -> float:
    """Return ``lam`` as a float in ``(0, 1]`` or raise a ``ValueError`` naming the problem.

    ``lambda = 1`` is allowed (non-expansive, the authors' singular-value clip at 1); the
    truncation bounds need ``lambda < 1``.
    """
    if isinstance(lam, bool) or not (isinstance(lam, Real) or (isinstance(lam, torch.Tensor) and lam.numel() == 1)):
        raise TypeError(f"{name} must be a real number in (0, 1]; got {lam!r}")
    value = float(lam)
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} (the stability bound ||W||_2 <= {name}) must lie in (0, 1]; got {value}")
    return value


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_k(k: Any, name: str = "k") -> int:
    """Return the truncation length ``k`` as an int ``>= 1`` or raise a clear error (a
    one-element integer tensor counts as its value, as NumPy's integers do)."""
    if isinstance(k, torch.Tensor) and k.numel() == 1 and k.dtype in _INTEGER_DTYPES:
        k = int(k.item())
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"{name} (the truncation length) must be an integer >= 1; got {k!r}")
    value = int(k)
    if value < 1:
        raise ValueError(f"{name} (the truncation length) must be >= 1; got {value}")
    return value


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms are computed in for weights stored in ``dtype``: float32 for the half
    types, else ``dtype`` itself.

    In bfloat16 a power iteration cannot settle below a few ulps (3%) and each product rounds
    at 2^-8, so its estimate of ``||W||_2`` is off by percents; torch's SVD and matrix norms do
    not accept half types at all.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ---------------------------------------------------------------------------- power iteration
@dataclass
class PowerIterationResult:
    """Largest singular value ``sigma`` with its unit vectors: ``v @ W ~ sigma u``.

    ``sigma`` is a lower bound of ``||W||_2`` (a Rayleigh quotient), tight at convergence.
    """

    sigma: float
    u: torch.Tensor
    v: torch.Tensor
    iterations: int
    converged: bool
    #: the final block of :func:`subspace_iteration` (rows: right singular vectors, largest first)
    vectors: torch.Tensor | None = None


def _settle_tolerance(iters: int, tol: float, start: torch.Tensor) -> float:
    """The relative change below which an iteration stops: ``tol``, but at least a few ulps of
    the start's dtype (below that the estimate cannot settle); ``iters`` and ``tol`` checked."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1; got {iters}")
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    return max(tol, 4 * torch.finfo(start.dtype).eps) if start.is_floating_point() else tol


def power_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rmatvec: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    *,
    iters: int = 500,
    tol: float = 1e-9,
) -> PowerIterationResult:
    """Largest singular value of a linear map given by ``matvec(v) = v @ W`` and
    ``rmatvec(u) = W @ u`` (``W`` of shape ``(n, m)``, ``v`` of length ``n``).

    Iterates ``v <- normalise(W (v W))`` (power iteration on ``W W^T``) from ``v0`` until the
    estimate changes by less than ``tol`` relative (at least a few ulps of the dtype), or
    ``iters`` rounds. The recurrent modules warm-start it with the previous call's ``v`` after
    each optimiser step; measured (hidden 64, Adam at lr 1e-3 and 1e-2, dense and TT, float32
    and float64) that takes a median of 5 to 59 rounds per call, and up to the 500-round cap.
    A small change per round is not a bound on the error: when the two largest singular
    values cross during training, the warm start lies near the second one and the iteration
    can stop below ``||W||_2`` (float32 TT RNN trained with SGD at lr 2: up to 0.59% above
    ``lam`` after the projection, in 40 of 120 seeds). The recurrent modules therefore use
    :func:`subspace_iteration`. Runs without autograd.

    >>> W = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> r = power_iteration(lambda v: v @ W, lambda u: W @ u, torch.ones(2, dtype=torch.float64))
    >>> round(r.sigma, 6)
    2.0
    """
    tol = _settle_tolerance(iters, tol, v0)
    with torch.no_grad():
        v = v0.detach().clone()
        norm = torch.linalg.vector_norm(v)
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError("power iteration needs a finite, non-zero start vector")
        v = v / norm
        sigma = 0.0
        u = matvec(v)
        for it in range(1, iters + 1):
            u = matvec(v)
            su = float(torch.linalg.vector_norm(u))
            if not math.isfinite(su):
                raise ValueError("power iteration met a non-finite value: the matrix has NaN or infinite entries")
            if su == 0.0:  # v lies in the null space (W = 0, e.g. every mask closed)
                return PowerIterationResult(0.0, u, v, it, True)
            u = u / su
            w = rmatvec(u)
            new = float(torch.linalg.vector_norm(w))
            if new == 0.0:
                return PowerIterationResult(0.0, u, v, it, True)
            v = w / new
            done = abs(new - sigma) <= tol * new
            sigma = new
            if done:
                return PowerIterationResult(sigma, u, v, it, True)
        return PowerIterationResult(sigma, u, v, iters, False)


#: vectors the recurrent modules iterate together (:func:`subspace_iteration`): the two largest
#: singular values may cross during training, and a single warm-started vector then sits on the
#: second one and can stop below ``||W||_2`` (float32 TT RNN, SGD at lr 2: up to 0.59% above
#: ``lam`` after the projection in 40 of 120 seeds, none with this block); a block that holds
#: the top few keeps both
SUBSPACE_BLOCK = 3


def fixed_block(b: int, n: int, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """``b`` fixed start vectors of length ``n`` for :func:`subspace_iteration` (independent
    for ``b <= n``; no random numbers drawn, so no generator's stream moves). The first is
    nearly constant, the others cosines of different frequencies."""
    steps = torch.arange(n, dtype=dtype, device=device)
    rows = [torch.ones_like(steps) + 0.01 * steps] + [torch.cos((i + 1) * 0.7 * steps + i) for i in range(1, b)]
    return torch.stack(rows)


def subspace_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rmatvec: Callable[[torch.Tensor], torch.Tensor],
    block: torch.Tensor,
    *,
    iters: int = 500,
    tol: float = 1e-9,
) -> PowerIterationResult:
    """Largest singular value of ``W`` (``n x m``) by subspace iteration with Rayleigh-Ritz,
    from the rows of ``block`` (``b x n``); ``matvec(V) = V @ W`` and ``rmatvec(U) = U @ W^T``
    act on row blocks.

    Each round maps the block through ``W`` and back and takes the singular value
    decomposition of the ``b x n`` result: its largest singular value is a lower bound of
    ``||W||_2`` that converges at the rate of ``sigma_{b+1} / sigma_1``, not ``sigma_2 /
    sigma_1``, and its right singular vectors (largest first) are the next block, so warm
    starts carry the top ``b`` directions. Stops when the two largest Ritz values change by
    less than ``tol`` relative to the first (at least a few ulps), or after ``iters`` rounds:
    while a block vector turns towards a larger direction the second value moves, even where
    the first barely does. The result's ``vectors`` is the final block. Runs without autograd.

    >>> W = torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    >>> start = torch.tensor([[1.0, 0.001, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # nearly off the top
    >>> r = subspace_iteration(lambda V: V @ W, lambda U: U @ W.T, start)
    >>> round(r.sigma, 6), tuple(r.vectors.shape)
    (2.0, (2, 3))
    """
    if block.ndim != 2 or block.shape[0] < 1:
        raise ValueError(f"block must be a (b, n) matrix of start vectors; got shape {tuple(block.shape)}")
    tol = _settle_tolerance(iters, tol, block)
    with torch.no_grad():
        if not torch.isfinite(block).all() or not bool(block.any()):
            raise ValueError("subspace iteration needs finite start vectors, not all zero")
        V = torch.linalg.qr(block.detach().T).Q.T  # orthonormal rows
        before: list[float] = []
        for it in range(1, iters + 1):
            try:
                U = torch.linalg.qr(matvec(V).T).Q.T  # an orthonormal basis of the image's rows
                P, S, Vh = torch.linalg.svd(rmatvec(U), full_matrices=False)
            except torch.linalg.LinAlgError:  # raised for non-finite input
                S = torch.full((1,), math.nan)
            ritz = S[:2].tolist()  # the two largest: a direction turning into the top one moves the second
            sigma = ritz[0]
            if not math.isfinite(sigma):
                raise ValueError("subspace iteration met a non-finite value: the matrix has NaN or infinite entries")
            if sigma == 0.0:  # the block lies in the null space (W = 0, e.g. every mask closed)
                return PowerIterationResult(0.0, U[0], V[0], it, True, V)
            V = Vh
            done = len(before) == len(ritz) and max(abs(a - b) for a, b in zip(ritz, before)) <= tol * sigma
            before = ritz
            if done:
                break
        u = P[:, 0] @ U  # rmatvec(U) = P S Vh: W^T maps P[:, 0] @ U to S[0] Vh[0]
        return PowerIterationResult(sigma, u, V[0], it, done, V)


def _check_matrix(W: torch.Tensor, name: str = "W") -> None:
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(W).__name__}")
    if W.ndim != 2:
        raise ValueError(f"{name} must be a matrix (2-D); got shape {tuple(W.shape)}")
    if not W.is_floating_point():
        raise TypeError(f"{name} must hold real floating-point numbers; got {W.dtype}")
    if not torch.isfinite(W).all():
        raise ValueError(f"{name} has NaN or infinite entries")


#: round limits from which a subspace iteration that stops without converging gives way to the
#: exact norm; a smaller limit (a cheap per-step projection, the power method's point: warm starts
#: converge over the steps) keeps its estimate, a lower bound of the norm
EXACT_FALLBACK_ROUNDS = 100


def exact_unless_converged(result: PowerIterationResult, dense: Callable[[], torch.Tensor], iters: int) -> float:
    """``result.sigma``, or the exact norm of ``dense()`` when the iteration stopped at its round
    limit ``iters`` (at least :data:`EXACT_FALLBACK_ROUNDS`) without converging: with several
    singular values close to the top the estimate is low (a 256 x 256 matrix with singular
    values 2.0 ... 1.98: 1.99939 after 500 rounds), and a projection that trusted it left the
    matrix above its bound."""
    if result.converged or iters < EXACT_FALLBACK_ROUNDS:
        return result.sigma
    return float(torch.linalg.matrix_norm(dense(), 2))


def spectral_norm(
    W: torch.Tensor, method: str = "power", *, v0: torch.Tensor | None = None, iters: int = 500, tol: float = 1e-9
) -> float:
    """``||W||_2`` by subspace iteration (``method="power"``, from ``v0`` and fixed vectors) or
    an exact SVD (``"svd"``), in :func:`working_dtype` (float32 for half-precision ``W``)."""
    _check_matrix(W)
    if method not in ("power", "svd"):
        raise ValueError(f"method must be 'power' or 'svd'; got {method!r}")
    W = W.detach().to(working_dtype(W.dtype))
    if W.numel() == 0:  # an empty map: norm 0
        return 0.0
    if method == "svd":
        return float(torch.linalg.matrix_norm(W, 2))
    block = fixed_block(min(SUBSPACE_BLOCK, W.shape[0]), W.shape[0], W.dtype, W.device)
    if v0 is not None:
        block[0] = v0.to(W)
    result = subspace_iteration(lambda V: V @ W, lambda U: U @ W.T, block, iters=iters, tol=tol)
    return exact_unless_converged(result, lambda: W, iters)


def project_spectral(
    W: torch.Tensor,
    lam: float,
    method: str = "power",
    *,
    v0: torch.Tensor | None = None,
    iters: int = 500,
    tol: float = 1e-9,
) -> tuple[torch.Tensor, float]:
    """Put ``W`` inside the spectral-norm ball ``||W||_2 <= lam``; return ``(W', sigma_before)``.

    - ``method="svd"``: the exact Euclidean (Frobenius) projection — clip every singular value
      at ``lam`` (what the authors' public code does after each step).
    - ``method="power"``: estimate ``sigma = ||W||_2`` by subspace iteration and rescale
      ``W * lam / sigma`` when ``sigma > lam`` (the faster variant they suggest). ``W'`` lies
      on the ball up to the iteration's relative tolerance (an iteration that does not
      converge within ``iters`` rounds, from :data:`EXACT_FALLBACK_ROUNDS` up, is replaced by
      the exact norm; with fewer rounds the estimate is a lower bound); the direction of ``W``
      is kept.

    Matrices already inside the ball are returned unchanged (the same tensor object). Half-
    precision matrices are measured and clipped in float32 and returned in their dtype, whose
    rounding can leave ``||W'||_2`` a few units of 2^-8 above ``lam`` (the recurrent modules
    re-measure and shrink them).

    >>> W = torch.eye(3, dtype=torch.float64) * 0.5
    >>> project_spectral(W, 0.9)[0] is W
    True
    """
    lam = check_lambda(lam)
    _check_matrix(W)
    with torch.no_grad():
        if W.numel() == 0:
            return W, 0.0
        if method == "svd":
            U, S, Vh = torch.linalg.svd(W.to(working_dtype(W.dtype)), full_matrices=False)
            sigma = float(S.max()) if S.numel() else 0.0
            if sigma <= lam:
                return W, sigma
            return ((U * S.clamp(max=lam)) @ Vh).to(W.dtype), sigma
        if method != "power":
            raise ValueError(f"method must be 'power' or 'svd'; got {method!r}")
        sigma = spectral_norm(W, "power", v0=v0, iters=iters, tol=tol)
        if sigma <= lam:
            return W, sigma
        return W * (lam / sigma), sigma


def rescale_columns_l1(W: torch.Tensor, bound: float) -> torch.Tensor:
    """Shrink every column of ``W`` whose l1 norm exceeds ``bound`` to l1 norm ``bound``.

    For ``y = h @ W`` a column's l1 mass bounds how much one output unit can move per unit of
    ``||Delta h||_inf``, so this bounds ``||W||_{inf -> inf}`` — the LSTM stability condition of
    the authors' code (with per-gate constants, see :data:`tnmars.nn.recurrent.LSTM_L1_BOUNDS`).
    Columns already inside are left as they are.

    >>> rescale_columns_l1(torch.tensor([[3.0, 0.1], [1.0, 0.1]]), 1.0)
    tensor([[0.7500, 0.1000],
            [0.2500, 0.1000]])
    """
    if not 0 < bound < math.inf:
        raise ValueError(f"the l1 bound must be positive and finite; got {bound}")
    _check_matrix(W)
    with torch.no_grad():
        work = W.to(working_dtype(W.dtype))  # half-precision sums and factors in float32
        mass = work.abs().sum(dim=0, keepdim=True)
        factor = torch.where(mass > bound, bound / mass.clamp_min(1e-30), torch.ones_like(mass))
        out = (work * factor).to(W.dtype)
        if out.dtype != work.dtype:  # the rounding to the storage type can leave a column above: shrink it
            eps = torch.finfo(out.dtype).eps
            for attempt in range(1, 9):
                mass = out.to(work.dtype).abs().sum(dim=0, keepdim=True)
                if not bool((mass > bound).any()):
                    break
                shrink = torch.where(mass > bound, bound / mass * (1.0 - attempt * eps), torch.ones_like(mass))
                out = (out.to(work.dtype) * shrink).to(W.dtype)
        return out


# ---------------------------------------------------------------------------- effective stability
def _check_model(model: Any) -> None:
    for attr in ("step", "states", "state_size"):
        if not hasattr(model, attr):
            raise TypeError(
                f"{type(model).__name__} is not a tnmars recurrent model (no .{attr}); use LinearRNN, TanhRNN or LSTM"
            )


def _check_data(x: Any, model: Any) -> torch.Tensor:
    """``x`` checked, as ``(batch, time, features)`` whatever the model's layout (its
    ``batch_first``; the measures' ``(B, T)`` results go back through :func:`_in_layout`)."""
    first = getattr(model, "batch_first", True)
    layout = "(batch, time, features)" if first else "(time, batch, features)"
    if isinstance(x, torch.nn.utils.rnn.PackedSequence):
        raise TypeError(f"x is a PackedSequence: pass the padded {layout} tensor "
                        "(torch.nn.utils.rnn.pad_packed_sequence) and, to effective_stability, lengths= (the "
                        "padded steps are then not measured)")
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"x must have shape {layout}; got {tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] * x.shape[1] == 0:
        raise ValueError(f"x has no steps to measure (shape {tuple(x.shape)})")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("the Jacobians are computed by autograd, which torch.inference_mode() turns off: "
                           "call this outside inference_mode (torch.no_grad() is fine)")
    check = getattr(model, "_check_x", None)  # the model's own checks: features, dtype, NaN (torch's
    if callable(check):                       # "mat1 and mat2 shapes cannot be multiplied" before)
        return check(x)
    return x if first else x.transpose(0, 1)


def _in_layout(y: torch.Tensor, model: Any) -> torch.Tensor:
    """A ``(B, T)`` measure in the model's layout: ``(T, B)`` for ``batch_first=False``."""
    return y if getattr(model, "batch_first", True) else y.transpose(0, 1)




@contextmanager
def _measured_in_eval_mode(model: Any) -> Iterator[None]:
    """Evaluate ``model`` in eval mode and restore every submodule's mode afterwards.

    The measures below call the state map many times (the trajectory, then one call per
    chunk or per step for each of two trajectories). In train mode a MARS recurrent matrix
    draws new hard-concrete masks at every call, so those calls would see different matrices
    and the measures would mix them (a 0.9-contractive TT RNN gave trajectory ratios up to
    8.6, different on every run). The deterministic eval-mode model (MAP masks) is measured.
    """
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    modes = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


def _trajectory(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """States entering each step, ``s_{t-1}`` (N, S), and the inputs ``x_t`` (N, D)."""
    with torch.no_grad():  # (x is batch-major here: a tnmars model's own states of it)
        states = model._states(x) if hasattr(model, "_states") else model.states(x)  # (B, T, S)
    B, T, S = states.shape
    prev = torch.cat([model.initial_state(B).to(states)[:, None, :], states[:, :-1]], dim=1)
    return prev.reshape(B * T, S), x.reshape(B * T, x.shape[-1])


def state_jacobian_norms(model: Any, x: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """``||d s_t / d s_{t-1}||_2`` at every step of the data trajectory, shape ``(B, T)``
    (``(T, B)`` for a model with ``batch_first=False``).

    The state map's Jacobian is evaluated at the states the model actually visits on ``x``
    (from a zero initial state). Its largest value over the data is the model's *effective*
    contraction factor: below 1 means the model is contractive where it is used, whatever
    its weights' worst case. Computed exactly (one vector-Jacobian product per state
    coordinate, batched over all steps) and then an exact matrix 2-norm. The model is
    evaluated in eval mode (MAP masks for a MARS recurrent matrix; its modes are restored).
    """
    _check_model(model)
    x = _check_data(x, model)
    chunk = positive_int(chunk, "chunk (steps per batch of Jacobians)")
    with _measured_in_eval_mode(model):
        return _in_layout(_state_jacobian_norms(model, x, chunk), model)


def _state_jacobian_norms(model: Any, x: torch.Tensor, chunk: int) -> torch.Tensor:
    B, T = x.shape[:2]
    prev, inputs = _trajectory(model, x)
    S = prev.shape[1]
    out = []
    eye = torch.eye(S, dtype=prev.dtype, device=prev.device)
    with torch.enable_grad():
        for lo in range(0, prev.shape[0], chunk):
            s = prev[lo : lo + chunk].detach().clone().requires_grad_(True)
            xs = inputs[lo : lo + chunk].detach()
            new = model.step(s, xs)
            n = s.shape[0]
            J = torch.empty(n, S, S, dtype=prev.dtype, device=prev.device)
            for i in range(S):
                (g,) = torch.autograd.grad(new, s, grad_outputs=eye[i].expand(n, S), retain_graph=i < S - 1)
                J[:, i, :] = g
            out.append(torch.linalg.matrix_norm(J.to(working_dtype(J.dtype)), 2))  # (no half-precision SVD)
    return torch.cat(out).reshape(B, T).detach()


def trajectory_ratios(model: Any, x: torch.Tensor, *, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Per-step ratios ``||s_t - s'_t|| / ||s_{t-1} - s'_{t-1}||`` of two trajectories on ``x``.

    One trajectory starts from zero, the other from a random state of norm ``scale`` per
    coordinate; both see the same inputs. After each step the second state is moved back to
    the first one's initial distance along their difference (Benettin's renormalisation, as
    for Lyapunov exponents), so the difference stays far above rounding on any length: left to
    shrink at a contractive model's rate it reached float32's resolution within about 25 steps,
    and ratios of rounding noise reported a 0.9-contractive RNN expanding by up to 5.7. A ratio
    above 1 is a step where the state map expanded a finite difference of that size. Ratios
    are ``NaN`` after the difference vanishes exactly (the map merged the two states). Shape
    ``(B, T)`` (``(T, B)`` with ``batch_first=False``). The model is evaluated in eval mode (its
    modes are restored).
    """
    _check_model(model)
    x = _check_data(x, model)
    if isinstance(scale, bool) or not isinstance(scale, Real) or not 0 < scale < math.inf:
        raise ValueError(f"scale (the second trajectory's start distance per coordinate) must be a positive finite "
                         f"number; got {scale!r}")
    with _measured_in_eval_mode(model):
        return _in_layout(_trajectory_ratios(model, x, scale, seed), model)


def _trajectory_ratios(model: Any, x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    B, T = x.shape[:2]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        s = model.initial_state(B).to(x)
        s2 = s + scale * torch.randn(s.shape, generator=gen, dtype=s.dtype).to(s.device)
        ratios = torch.empty(B, T, dtype=x.dtype, device=x.device)
        d0 = torch.linalg.vector_norm(s - s2, dim=-1)  # the distance kept (per sequence)
        d_prev = d0
        for t in range(T):
            s = model.step(s, x[:, t])
            s2 = model.step(s2, x[:, t])
            diff = s2 - s
            d = torch.linalg.vector_norm(diff, dim=-1)
            ratios[:, t] = torch.where(d_prev > 0, d / d_prev.clamp_min(1e-300), torch.full_like(d, float("nan")))
            live = d > 0  # renormalised; a difference that vanished stays 0 (NaN ratios from then on)
            s2 = torch.where(live[:, None], s + diff * (d0 / d.clamp_min(1e-300))[:, None], s)
            d_prev = torch.where(live, d0, d)
    return ratios


def _counted_steps(norms: torch.Tensor, lengths: Any, batch_first: bool) -> torch.Tensor:
    """Which entries of a ``(B, T)`` (``(T, B)``) measure fall within each sequence's length."""
    if lengths is None:
        return torch.ones_like(norms, dtype=torch.bool)
    batch, steps = norms.shape if batch_first else norms.shape[::-1]
    lengths = torch.as_tensor(lengths).reshape(-1)
    if lengths.is_floating_point() or lengths.dtype == torch.bool or lengths.numel() != batch:
        raise ValueError(f"lengths must hold one integer per sequence ({batch}); got {lengths.tolist()}")
    if bool((lengths < 1).any()) or bool((lengths > steps).any()):
        raise ValueError(f"lengths must lie in [1, {steps}] (the padded length); got {lengths.tolist()}")
    valid = torch.arange(steps)[None, :] < lengths.cpu()[:, None]  # (B, T)
    return (valid if batch_first else valid.T).to(norms.device)


@dataclass
class StabilityReport:
    """Summary of a model's effective contraction on data (see :func:`effective_stability`)."""

    #: largest ||ds_t/ds_{t-1}||_2 over the data: the effective contraction factor
    max_jacobian: float
    mean_jacobian: float
    #: quantiles (50%, 90%, 99%) of the Jacobian norms
    quantiles: dict[str, float]
    #: fraction of steps with a Jacobian norm below 1
    fraction_contractive: float
    #: largest finite-difference ratio between two trajectories (a lower bound on the
    #: worst-case expansion, measured on non-infinitesimal differences)
    max_trajectory_ratio: float
    #: geometric-mean per-step ratio of the two trajectories' gap (their forgetting rate)
    mean_trajectory_rate: float
    steps: int
    norms: torch.Tensor = field(repr=False)

    @property
    def effectively_stable(self) -> bool:
        """True when every measured step is a contraction."""
        return self.max_jacobian < 1.0


def effective_stability(model: Any, x: torch.Tensor, *, chunk: int = 1024, seed: int = 0,
                        lengths: Any = None) -> StabilityReport:
    """Measure how contractive a (trained) recurrent model is on data ``x`` ``(B, T, D)``
    (``(T, B, D)`` for a model with ``batch_first=False``). ``lengths``: each sequence's true
    length (padded batches, as ``pack_padded_sequence`` takes them): the steps past it are run
    but not counted (padding measured as data changed the statistics).

    Returns the largest, mean and quantiles of the state-map Jacobian's spectral norm along
    the data trajectory, plus finite-difference ratios of two trajectories started apart
    (:func:`trajectory_ratios`). Miller & Hardt claim trained, unconstrained RNNs are
    "effectively stable": this measures it, on the eval-mode model (MAP masks for a MARS
    recurrent matrix, whose train-mode samples change at every call; the modes are restored).

    >>> from tnmars.nn import TanhRNN
    >>> m = TanhRNN(3, 5, lam=0.8).double()
    >>> r = effective_stability(m, torch.randn(2, 6, 3, dtype=torch.float64))
    >>> r.max_jacobian <= 0.8 + 1e-6
    True
    """
    norms = state_jacobian_norms(model, x, chunk=chunk)
    counted = _counted_steps(norms, lengths, getattr(model, "batch_first", True))
    flat = norms[counted]
    q = torch.quantile(flat, torch.tensor([0.5, 0.9, 0.99], dtype=flat.dtype, device=flat.device))
    ratios = trajectory_ratios(model, x, seed=seed)[counted]
    # a ratio of 0 is a step that merged the two states (a model that forgets at once, W = 0):
    # it counts, and makes the geometric-mean rate 0; NaN ratios follow such a merge
    finite = ratios[torch.isfinite(ratios)]
    max_ratio = float(finite.max()) if finite.numel() else float("nan")
    rate = float(torch.exp(torch.log(finite.cpu().double()).mean())) if finite.numel() else float("nan")
    return StabilityReport(
        max_jacobian=float(flat.max()),
        mean_jacobian=float(flat.mean()),
        quantiles={"50%": float(q[0]), "90%": float(q[1]), "99%": float(q[2])},
        fraction_contractive=float((flat < 1.0).double().mean()),
        max_trajectory_ratio=max_ratio,
        mean_trajectory_rate=rate,
        steps=int(flat.numel()),
        norms=norms,
    )
