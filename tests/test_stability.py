"""Power iteration, spectral projection and the effective-stability measure."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnmars.nn import LSTM, LinearRNN, TanhRNN, effective_stability, power_iteration, project_spectral, spectral_norm
from tnmars.nn.recurrent import LSTM_FORGET_BIAS
from tnmars.nn.stability import (
    check_k,
    check_lambda,
    rescale_columns_l1,
    state_jacobian_norms,
    subspace_iteration,
    trajectory_ratios,
)

D64 = torch.float64


def _matrix(seed: int, n: int, m: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(n, m, dtype=D64, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), m=st.integers(1, 12), scale=st.floats(0.01, 5.0))
def test_power_iteration_matches_svd(seed, n, m, scale):
    W = _matrix(seed, n, m, scale)
    exact = float(torch.linalg.matrix_norm(W, 2))
    r = power_iteration(lambda v: v @ W, lambda u: W @ u, torch.randn(n, dtype=D64), iters=5000, tol=1e-13)
    assert r.sigma == pytest.approx(exact, rel=1e-6)
    assert r.sigma <= exact * (1 + 1e-12)  # a Rayleigh quotient: never above the true norm
    torch.testing.assert_close(r.v @ W, r.sigma * r.u, rtol=1e-4, atol=1e-6 * exact)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), m=st.integers(1, 12), b=st.integers(1, 4),
       scale=st.floats(0.01, 5.0))
def test_subspace_iteration_matches_svd_and_returns_the_top_singular_pair(seed, n, m, b, scale):
    W = _matrix(seed, n, m, scale)
    exact = torch.linalg.svdvals(W)
    start = torch.randn(b, n, dtype=D64, generator=torch.Generator().manual_seed(seed + 1))
    r = subspace_iteration(lambda V: V @ W, lambda U: U @ W.T, start, iters=5000, tol=1e-13)
    assert r.sigma == pytest.approx(float(exact[0]), rel=1e-6)
    assert r.sigma <= float(exact[0]) * (1 + 1e-12)  # a Ritz value: never above the true norm
    k = r.vectors.shape[0]
    assert r.vectors.shape[1] == n and k == min(b, n, m)  # the warm start of the next call: orthonormal rows
    torch.testing.assert_close(r.vectors @ r.vectors.T, torch.eye(k, dtype=D64), atol=1e-10, rtol=0)
    torch.testing.assert_close(r.v @ W, r.sigma * r.u, rtol=1e-4, atol=1e-6 * float(exact[0]))


def test_subspace_iteration_finds_the_top_value_a_warm_vector_sits_beside():
    """A single vector started on the second singular direction, with the top one a hair
    away (0.1% larger), moves off it slowly: each round changes the estimate by little, and the
    change test stops below the norm. The block's Rayleigh-Ritz step sees both at once."""
    W = torch.diag(torch.tensor([1.001, 1.0, 0.2], dtype=D64))
    near_second = torch.tensor([1e-3, 1.0, 0.0], dtype=D64)
    single = power_iteration(lambda v: v @ W, lambda u: W @ u, near_second, tol=1e-6)
    assert single.sigma < 1.0005  # stopped next to the second value
    block = torch.stack([near_second, torch.tensor([0.0, 0.3, 1.0], dtype=D64)])
    r = subspace_iteration(lambda V: V @ W, lambda U: U @ W.T, block, tol=1e-6)
    assert r.sigma == pytest.approx(1.001, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 10), lam=st.floats(0.05, 1.0), scale=st.floats(0.01, 3.0),
       method=st.sampled_from(["power", "svd"]))
def test_projection_leaves_inside_unchanged_and_puts_outside_on_the_ball(seed, n, lam, scale, method):
    W = _matrix(seed, n, n, scale)
    sigma = float(torch.linalg.matrix_norm(W, 2))
    P, reported = project_spectral(W, lam, method, iters=5000, tol=1e-13)
    assert reported == pytest.approx(sigma, rel=1e-6)
    if sigma <= lam * (1 - 1e-6):
        assert P is W
    elif sigma > lam * (1 + 1e-6):
        assert float(torch.linalg.matrix_norm(P, 2)) == pytest.approx(lam, rel=1e-6)
        S_before = torch.linalg.svdvals(W)
        S_after = torch.linalg.svdvals(P)
        if method == "svd":  # clip: small singular values untouched, large ones at lam
            torch.testing.assert_close(S_after, S_before.clamp(max=lam))
        else:  # rescale: every singular value scaled by lam / sigma
            torch.testing.assert_close(S_after, S_before * lam / sigma, rtol=1e-6, atol=1e-12)


def test_svd_projection_is_the_nearest_matrix_in_the_ball():
    """Clipping singular values is the Frobenius projection; rescaling is farther (or equal)."""
    W = _matrix(0, 6, 6, 1.0)
    P_svd, _ = project_spectral(W, 0.5, "svd")
    P_pow, _ = project_spectral(W, 0.5, "power", iters=5000, tol=1e-13)
    gen = torch.Generator().manual_seed(1)
    d_svd = float(torch.linalg.matrix_norm(W - P_svd))
    assert d_svd <= float(torch.linalg.matrix_norm(W - P_pow)) + 1e-9
    for _ in range(20):  # random feasible matrices are never closer
        Q = torch.randn(6, 6, dtype=D64, generator=gen)
        Q, _ = project_spectral(Q, 0.5, "svd")
        assert float(torch.linalg.matrix_norm(W - Q)) >= d_svd - 1e-9


def test_spectral_norm_modes_agree():
    W = _matrix(3, 9, 5, 1.0)
    assert spectral_norm(W, "power", iters=5000, tol=1e-13) == pytest.approx(spectral_norm(W, "svd"), rel=1e-6)


def test_bad_arguments():
    W = torch.eye(3)
    for lam in (0.0, -1.0, 1.0001, float("nan")):
        with pytest.raises(ValueError, match="lam"):
            project_spectral(W, lam)
    with pytest.raises(TypeError):
        check_lambda(None)
    with pytest.raises(ValueError, match="method"):
        project_spectral(W, 0.5, "eig")
    with pytest.raises(ValueError, match="2-D"):
        project_spectral(torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        spectral_norm(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="truncation"):
        check_k(0)
    with pytest.raises(TypeError, match="truncation"):
        check_k(1.0)
    with pytest.raises(TypeError, match="truncation"):
        check_k(torch.tensor(5.0))
    with pytest.raises(ValueError, match="truncation"):
        check_k(torch.tensor(0))
    assert check_k(torch.tensor(5)) == 5 and check_k(torch.tensor([7], dtype=torch.int32)) == 7  # (refused before)
    with pytest.raises(ValueError, match="non-zero"):
        power_iteration(lambda v: v, lambda u: u, torch.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        power_iteration(lambda v: v * float("inf"), lambda u: u, torch.ones(3))
    with pytest.raises(ValueError, match="not all zero"):
        subspace_iteration(lambda v: v, lambda u: u, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        subspace_iteration(lambda v: v * float("inf"), lambda u: u, torch.ones(2, 3))
    with pytest.raises(ValueError, match="block"):
        subspace_iteration(lambda v: v, lambda u: u, torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        rescale_columns_l1(W, 0.0)
    with pytest.raises(TypeError, match="recurrent model"):
        effective_stability(torch.nn.Linear(2, 2), torch.zeros(1, 2, 2))
    assert check_lambda(1) == 1.0 and check_k(3) == 3


def test_rescale_columns_l1():
    W = torch.tensor([[3.0, 0.1, -2.0], [1.0, 0.1, 2.0]], dtype=D64)
    R = rescale_columns_l1(W, 1.0)
    torch.testing.assert_close(R.abs().sum(0), torch.tensor([1.0, 0.2, 1.0], dtype=D64))
    torch.testing.assert_close(R[:, 1], W[:, 1])
    torch.testing.assert_close(R[:, 0] / R[:, 0].abs().sum(), W[:, 0] / W[:, 0].abs().sum())


# ------------------------------------------------------------------ effective stability
def test_jacobian_norms_of_linear_rnn_equal_the_spectral_norm():
    model = LinearRNN(3, 5, seed=0).double()
    x = torch.randn(2, 4, 3, dtype=D64)
    norms = state_jacobian_norms(model, x)
    assert norms.shape == (2, 4)
    torch.testing.assert_close(norms, torch.full_like(norms, model.spectral_norm("svd")))


def test_jacobian_norms_of_tanh_rnn_match_the_closed_form():
    model = TanhRNN(3, 5, seed=1).double()
    x = torch.randn(2, 6, 3, dtype=D64)
    norms = state_jacobian_norms(model, x, chunk=5)
    with torch.no_grad():
        h = model(x)
        W = model.weight
        for b in range(2):
            for t in range(6):
                J = W.T * (1 - h[b, t] ** 2)[:, None]  # d h_t / d h_{t-1} = diag(1 - h_t^2) W^T
                assert float(norms[b, t]) == pytest.approx(float(torch.linalg.matrix_norm(J, 2)), rel=1e-9)


def test_stable_models_are_measured_contractive_and_unstable_ones_are_not():
    x = torch.randn(3, 25, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    stable = TanhRNN(3, 6, lam=0.7, seed=0).double()
    stable.project_()
    rep = effective_stability(stable, x)
    assert rep.effectively_stable and rep.max_jacobian <= 0.7 * (1 + 1e-6)
    assert rep.max_trajectory_ratio <= 0.7 * (1 + 1e-6)
    assert rep.steps == 75 and 0 < rep.mean_trajectory_rate <= 0.7
    assert rep.fraction_contractive == 1.0
    unstable = LinearRNN(3, 6, seed=0).double()
    with torch.no_grad():
        unstable.weight.mul_(3.0 / unstable.spectral_norm("svd"))
    rep = effective_stability(unstable, x)
    assert not rep.effectively_stable and rep.max_jacobian == pytest.approx(3.0, rel=1e-9)
    assert rep.max_trajectory_ratio > 1.0


def test_effective_stability_of_lstm_runs_on_the_full_state():
    lstm = LSTM(3, 4, stable=True, forget_bias=LSTM_FORGET_BIAS, seed=0).double()
    x = torch.randn(2, 5, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    rep = effective_stability(lstm, x)
    assert rep.norms.shape == (2, 5)
    # with the authors' forget bias the c -> c block of the Jacobian is diag(f) with
    # f = sigmoid(~10), so its 2-norm is at least max f ~ 0.9999, and the c <-> h coupling adds
    # to it: their l1 bounds do not make the LSTM contractive (the docs say so)
    assert rep.max_jacobian > 1.0 and not rep.effectively_stable and torch.isfinite(rep.norms).all()
    # the default bias 1 leaves forget gates near sigmoid(1) = 0.73: contractive on these data
    assert effective_stability(LSTM(3, 4, stable=True, seed=0).double(), x).max_jacobian < 1.0
    r = trajectory_ratios(lstm, x)
    assert r.shape == (2, 5)


@pytest.mark.filterwarnings("ignore:.*MARS closed every index")  # alpha=0: MAP masks keep about half
def test_effective_stability_measures_a_train_mode_mars_model_in_eval_mode():
    # a 0.9-stable TT RNN whose masks draw hard-concrete samples in train mode: every call of
    # the state map used to draw new masks, so the two trajectories ran under different
    # matrices (ratios up to 8.6 for a 0.9-contractive model, and different on every call)
    model = TanhRNN(3, 16, lam=0.9, recurrent="tt", tt_rank=4, alpha=0.0, seed=0).double()
    x = torch.randn(2, 20, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    assert model.training
    first = effective_stability(model, x)
    assert model.training  # the mode is restored
    again = effective_stability(model, x)
    reference = effective_stability(model.eval(), x)
    for rep in (first, again):
        assert rep.max_jacobian == reference.max_jacobian
        assert rep.max_trajectory_ratio == reference.max_trajectory_ratio
        assert rep.max_jacobian <= 0.9 * (1 + 1e-6) and rep.max_trajectory_ratio <= 0.9 * (1 + 1e-6)


def test_effective_stability_refuses_empty_data():
    model = TanhRNN(3, 4, lam=0.9, seed=0)
    with pytest.raises(ValueError, match="no steps"):
        effective_stability(model, torch.randn(0, 5, 3))
    with pytest.raises(ValueError, match="no steps"):
        trajectory_ratios(model, torch.randn(2, 0, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_ratios_stay_within_the_contraction_on_long_sequences(dtype):
    """The two trajectories' difference shrank at the model's rate to rounding level within
    about 25 steps (float32; 60 in float64), and its ratios, rounding noise over rounding noise,
    reported a 0.9-contractive RNN expanding by up to 5.7 (``effective_stability``'s
    ``max_trajectory_ratio``). The difference is now renormalised after each step."""
    from tnmars.nn import LinearRNN, TanhRNN
    from tnmars.nn.stability import effective_stability, trajectory_ratios
    torch.manual_seed(0)
    x = torch.randn(4, 200, 3, dtype=dtype)
    for model in (TanhRNN(input_size=3, hidden_size=16, lam=0.9, seed=0), LinearRNN(3, 16, lam=0.9, seed=0)):
        model = model.to(dtype)
        ratios = trajectory_ratios(model, x)
        assert torch.isfinite(ratios).all() and float(ratios.max()) <= 0.9 * (1 + 1e-4)
        report = effective_stability(model, x)
        assert report.max_trajectory_ratio <= 0.9 * (1 + 1e-4) and report.effectively_stable


def _clustered_top(n: int = 256) -> torch.Tensor:
    """A matrix whose top singular values are 2.0 ... 1.98: subspace iteration converges slowly."""
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    return (U * torch.linspace(2.0, 1.98, n, dtype=torch.float64)) @ V.T


def test_an_iteration_that_does_not_converge_gives_way_to_the_exact_norm():
    """Found by review: with clustered top singular values the subspace iteration stopped at its
    round limit at 1.99939 for 2.0 and said so (converged=False), but the projections trusted
    it: the projected matrix stayed 3e-4 above its bound, silently."""
    W = _clustered_top()
    P, sigma = project_spectral(W, 0.9)
    assert sigma == pytest.approx(2.0, rel=1e-12)
    assert torch.linalg.matrix_norm(P, 2) <= 0.9 * (1 + 1e-12)
    rnn = LinearRNN(3, 256, lam=0.9).double()
    with torch.no_grad():
        rnn.weight.copy_(W)
    rnn.project_()
    assert torch.linalg.matrix_norm(rnn.weight, 2) <= 0.9 * (1 + 1e-12)


def test_attributes_set_after_construction_are_checked_when_projecting():
    """``lam = 0`` wiped a dense RNN's W and ``lam = 5`` bounded it at 5 (the TT RNN refused
    both); ``projection = "SVD"`` fell back to the power method."""
    for lam in (0.0, 5.0):
        rnn = LinearRNN(3, 8, lam=0.9)
        rnn.lam = lam
        with pytest.raises(ValueError, match="lam"):
            rnn.project_()
    rnn = LinearRNN(3, 8, lam=0.9)
    rnn.projection = "SVD"
    with pytest.raises(ValueError, match="projection must be 'power' or 'svd'"):
        rnn.project_()


def test_a_half_precision_stable_lstm_ends_inside_its_column_bounds():
    """The l1 rescaling summed and scaled in bfloat16: columns ended up to 0.8% above their bounds."""
    from tnmars.nn import LSTM_L1_BOUNDS
    for seed in range(5):
        lstm = LSTM(3, 16, stable=True, seed=seed).bfloat16()
        with torch.no_grad():
            lstm.weight.mul_(5)
        lstm.project_()
        for n, gate in enumerate("ifzo"):
            mass = lstm.weight[:, n * 16:(n + 1) * 16].float().abs().sum(0)
            assert float(mass.max()) <= LSTM_L1_BOUNDS[gate] * (1 + 1e-6)


def test_stability_measures_of_a_model_that_forgets_at_once_and_of_half_precision_models():
    """W = 0 merges the two trajectories: their ratios are 0, which were dropped, leaving NaN
    statistics; a bfloat16 model failed in the Jacobians' norms (no half-precision SVD)."""
    rnn = LinearRNN(3, 8)
    torch.nn.init.zeros_(rnn.weight)
    report = effective_stability(rnn, torch.randn(2, 4, 3))
    assert report.max_jacobian == 0 and report.max_trajectory_ratio == 0 and report.mean_trajectory_rate == 0
    report = effective_stability(TanhRNN(3, 8, lam=0.9).bfloat16(), torch.randn(2, 5, 3).bfloat16())
    assert 0 < report.max_jacobian <= 0.9 * 1.02


def test_bad_arguments_of_the_stability_tools_are_clear_errors():
    from tnmars.nn.stability import rescale_columns_l1, trajectory_ratios
    rnn = TanhRNN(3, 8, lam=0.9)
    x = torch.randn(2, 4, 3)
    for scale in (0.0, float("nan"), -1.0):
        with pytest.raises(ValueError, match="scale"):
            trajectory_ratios(rnn, x, scale=scale)
    for chunk in (0, -1, 2.5):
        with pytest.raises((ValueError, TypeError), match="chunk"):
            effective_stability(rnn, x, chunk=chunk)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        effective_stability(rnn, x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [4, 3], batch_first=True)
    with pytest.raises(TypeError, match="PackedSequence"):
        effective_stability(rnn, packed)
    assert spectral_norm(torch.zeros(3, 0)) == spectral_norm(torch.zeros(0, 3)) == 0.0
    with pytest.raises(TypeError, match="floating"):
        spectral_norm(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        rescale_columns_l1(torch.tensor([[float("inf"), 1.0]]), 1.0)
    tt = TanhRNN(3, 16, lam=0.9, recurrent="tt", tt_rank=4, projection="svd")
    with torch.no_grad():
        tt.weight_tt.cores[0].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tt.project_()


def test_a_small_round_limit_keeps_its_estimate_instead_of_an_exact_norm_every_step():
    """Found by review: with the exact fallback at any round limit, power_iters=2 (a cheap
    per-step projection) did one or two full SVDs per step (25-120x slower at hidden 1024)."""
    from tnmars.nn.stability import EXACT_FALLBACK_ROUNDS, exact_unless_converged, fixed_block, subspace_iteration
    W = _clustered_top(64)

    def exact():
        raise AssertionError("no exact norm below the fallback's round limit")

    quick = subspace_iteration(lambda V: V @ W, lambda U: U @ W.T, fixed_block(3, 64, torch.float64), iters=2)
    assert not quick.converged and exact_unless_converged(quick, exact, 2) == quick.sigma
    slow = subspace_iteration(lambda V: V @ W, lambda U: U @ W.T, fixed_block(3, 64, torch.float64),
                              iters=EXACT_FALLBACK_ROUNDS)
    if not slow.converged:
        assert exact_unless_converged(slow, lambda: W, EXACT_FALLBACK_ROUNDS) == pytest.approx(2.0, rel=1e-12)
    rnn = LinearRNN(3, 64, lam=0.9, power_iters=2).double()
    with torch.no_grad():
        rnn.weight.copy_(W)
    assert rnn.project_() <= 2.0  # a lower bound, no exact norm


def test_effective_stability_counts_only_the_steps_within_each_sequences_length():
    """A padded batch was measured padding and all (the PackedSequence message said to measure
    sequences of one length together); ``lengths=`` counts each sequence's own steps only: the
    same figures as its steps measured alone (the state map is causal)."""
    from tnmars.nn import TanhRNN
    from tnmars.nn.stability import effective_stability, state_jacobian_norms

    model = TanhRNN(3, 5, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, dtype=torch.float64, generator=g)
    x[1, 4:] = 50.0  # padding far from the data: it would change the statistics if measured
    report = effective_stability(model, x, lengths=[7, 4])
    alone = torch.cat([state_jacobian_norms(model, x[:1, :7]).reshape(-1),
                       state_jacobian_norms(model, x[1:, :4]).reshape(-1)])
    assert report.steps == 11
    assert report.max_jacobian == pytest.approx(float(alone.max()))
    assert report.mean_jacobian == pytest.approx(float(alone.mean()))
    timed = TanhRNN(3, 5, seed=0, batch_first=False).double()
    assert effective_stability(timed, x.transpose(0, 1), lengths=[7, 4]).mean_jacobian == pytest.approx(
        report.mean_jacobian)
    for bad in ([7], [0, 4], [8, 4], [7.0, 4.0]):
        with pytest.raises(ValueError, match="lengths must"):
            effective_stability(model, x, lengths=bad)
