"""tnmars.fit: input checking, end-to-end rank recovery, backends, Ctrl-C and edge cases."""
import numpy as np
import pytest

import tnmars
from tnmars.fitting import Adam, FitResult


def tucker_tensor(shape, ranks, seed=0):
    """The paper's construction: core and factors i.i.d. N(0, 1)."""
    ranks = (ranks,) * len(shape) if isinstance(ranks, int) else tuple(ranks)
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal(ranks)] + [rng.standard_normal((n, r)) for n, r in zip(shape, ranks)]
    return tnmars.Network.tucker(shape, ranks).with_cores(cores).to_tensor()


def smallest_mode_energy(x, ranks):
    """Share of the energy in the weakest true component of each mode (HOSVD)."""
    out = []
    for k, r in enumerate(ranks):
        s = np.linalg.svd(np.moveaxis(x, k, 0).reshape(x.shape[k], -1), compute_uv=False)
        out.append((s**2 / np.sum(s**2))[r - 1])
    return min(out)


def cp_tensor(shape, rank, seed=0):
    return tnmars.Network.cp(shape, rank, seed=seed).to_tensor()


# ------------------------------------------------------------------------- bad input
GOOD = tucker_tensor((4, 5, 6), 2)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(data=np.array([])), ValueError, "empty"),
        (dict(data=np.zeros((0, 3))), ValueError, "empty"),
        (dict(data=np.where(np.eye(4, dtype=bool)[:, :, None], np.nan, np.ones((4, 4, 2)))), ValueError, "NaN"),
        (dict(data=np.full((3, 3), np.inf)), ValueError, "NaN/Inf"),
        (dict(data=GOOD, network=tnmars.Network.tucker((4, 5, 7), 2)), ValueError, "shape"),
        (dict(data=GOOD, pi=0.0), ValueError, "pi"),
        (dict(data=GOOD, pi=0.6), ValueError, "pi"),
        (dict(data=GOOD, pi=-1), ValueError, "pi"),
        (dict(data=GOOD, steps=0), ValueError, "steps"),
        (dict(data=GOOD, steps=-5), ValueError, "steps"),
        (dict(data=GOOD, steps=2.5), TypeError, "steps"),
        (dict(data=GOOD, lr=0.0), ValueError, "lr"),
        (dict(data=GOOD, lr=-1e-3), ValueError, "lr"),
        (dict(data=GOOD, observed=np.ones((4, 5), dtype=bool)), ValueError, "observed has shape"),
        (dict(data=GOOD, observed=np.zeros(GOOD.shape, dtype=bool)), ValueError, "no entry"),
        (dict(data=GOOD, network="hierarchical"), ValueError, "format"),
        (dict(data=GOOD, network=3), TypeError, "network"),
        (dict(data=GOOD, init="magic"), ValueError, "init"),
        (dict(data=GOOD, noise_variance=-1.0), ValueError, "noise_variance"),
        (dict(data=GOOD, noise_variance="loud"), ValueError, "noise_variance"),
        (dict(data=GOOD, prior="occam"), ValueError, "prior must be one of"),
        (dict(data=GOOD, prior=None), ValueError, "prior must be one of"),
        (dict(data=GOOD, prior="bic", prior_strength=0.0), ValueError, "prior_strength"),
        (dict(data=GOOD, prior="bic", refine_steps=0), ValueError, "refine_steps"),
        (dict(data=np.array(["a", "b"])), TypeError, "numeric"),
        (dict(data=None), TypeError, "data"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, error, words):
    kwargs = {"network": "tucker", "steps": 2, "progress": False, **kwargs}
    with pytest.raises(error, match=words):
        tnmars.fit(**kwargs)


def test_nan_outside_the_observed_entries_is_allowed_and_inside_is_not():
    x = GOOD.copy()
    observed = np.ones(x.shape, dtype=bool)
    observed[0, 0, 0] = False
    x[0, 0, 0] = np.nan
    res = tnmars.fit(x, "tucker", observed=observed, steps=3, progress=False, seed=0)
    assert np.isfinite(res.relative_error)
    assert res.heldout_error is None  # the only unobserved entry holds no value
    observed[0, 0, 0] = True
    with pytest.raises(ValueError, match="observed positions"):
        tnmars.fit(x, "tucker", observed=observed, steps=3, progress=False)


# ------------------------------------------------------------------------- end to end
def test_noiseless_tucker_tensor_of_known_rank_is_recovered_exactly():
    x = tucker_tensor((8, 8, 8), (2, 3, 4), seed=1)
    # every true component matters at the MAP: its energy share beats the prior's cost log(1/pi)/N
    assert smallest_mode_energy(x, (2, 3, 4)) > 0.02
    res = tnmars.fit(x, "tucker", max_rank=6, seed=0, progress=False)
    assert isinstance(res, FitResult)
    assert res.ranks == (2, 3, 4)
    assert res.network.ranks == (2, 3, 4)  # physically pruned
    assert res.full_network.ranks == (6, 6, 6)
    assert res.relative_error < 1e-2
    np.testing.assert_allclose(res.network.to_tensor(), x, atol=5e-2 * np.abs(x).max())


def test_bic_prior_removes_the_over_selection_of_the_papers_prior_under_noise():
    """10 dB noise: the paper's prior keeps noise-fitting rank indices (each costs only
    log((1-pi)/pi)); the Occam prior charges (1/2) log N per parameter and recovers the truth."""
    x = tucker_tensor((10, 10, 10), (2, 3, 2), seed=0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(x.shape)
    noise *= np.linalg.norm(x) / np.linalg.norm(noise) / 10 ** (10 / 20)
    kw = dict(max_rank=5, steps=600, seed=0, progress=False)
    paper = tnmars.fit(x + noise, "tucker", prior="bernoulli", **kw)
    bic = tnmars.fit(x + noise, "tucker", prior="bic", **kw)
    assert paper.ranks != (2, 3, 2) and paper.num_params > bic.num_params
    assert bic.ranks == (2, 3, 2)
    assert bic.settings["prior"] == "bic"
    # the noise variance it used is the residual's, corrected for the parameters (true: ||noise||^2 / N)
    assert 0.5 < bic.noise_variance / np.mean(noise**2) < 2.0
    # the clean tensor is closer to the BIC fit than to the over-selected one
    err = lambda r: np.linalg.norm(r.network.to_tensor() - x)  # noqa: E731
    assert err(bic) < err(paper)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_relaxed_bic_prior_trains_on_every_backend(backend):
    """prior='bic-relaxed' puts the Occam prior into the relaxed MAP (explicit gradient on NumPy,
    autograd on torch); on a noiseless rank-(2, 2, 2) Tucker it keeps the true ranks."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a thread pool only adds contention on a shared CI machine
    try:
        x = tucker_tensor((6, 6, 6), (2, 2, 2), seed=3)
        res = tnmars.fit(x, "tucker", max_rank=4, steps=400, seed=0, progress=False, prior="bic-relaxed",
                         refine_steps=20, backend=backend)
    finally:
        torch.set_num_threads(threads)
    assert res.ranks == (2, 2, 2)
    assert res.settings["noise_variance"] == "residual"


def test_cp_completion_recovers_its_rank():
    rng = np.random.default_rng(1)
    x = cp_tensor((15, 15, 15), 3, seed=4)
    observed = rng.random(x.shape) < 0.3
    noisy = np.where(observed, x + 0.05 * x.std() * rng.standard_normal(x.shape), np.nan)
    res = tnmars.fit(noisy, "cp", max_rank=10, observed=observed, seed=0, progress=False)
    assert res.ranks == (3,)
    assert res.heldout_error is None  # the unobserved entries hold NaN: nothing to score there
    est = res.network.to_tensor()
    held = ~observed
    assert np.linalg.norm(est[held] - x[held]) / np.linalg.norm(x[held]) < 0.2


def test_torch_backend_trains_by_autograd_and_returns_torch_networks():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a thread pool only adds contention on a shared CI machine
    try:
        x = tucker_tensor((8, 8, 8), (2, 3, 4), seed=1)
        res = tnmars.fit(torch.tensor(x), "tucker", max_rank=5, steps=1500, seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert res.network.backend == "torch" and res.settings["backend"] == "torch"
    assert isinstance(res.network.cores[0], torch.Tensor) and not res.network.cores[0].requires_grad
    assert res.ranks == (2, 3, 4)
    assert res.relative_error < 1e-2


def test_numpy_data_can_train_on_torch_and_back():
    res = tnmars.fit(GOOD, "tt", max_rank=3, steps=5, backend="torch", progress=False, seed=0)
    assert res.network.backend == "torch"
    res2 = tnmars.fit(GOOD, "tt", max_rank=3, steps=5, progress=False, seed=0)
    assert res2.network.backend == "numpy"


@pytest.mark.parametrize("fmt", ["cp", "tucker", "tt", "tr"])
@pytest.mark.parametrize("init", ["random", "svd"])
def test_every_format_and_init_runs_and_reports(fmt, init):
    res = tnmars.fit(GOOD, fmt, max_rank=3, steps=20, init=init, progress=False, seed=1)
    assert len(res.ranks) == len(res.bonds) == len(res.max_ranks) == len(res.probabilities)
    assert res.network.shape == GOOD.shape
    assert res.steps_run == 20 and not res.interrupted
    assert len(res.history["loss"]) == len(res.history["ranks"]) >= 2
    assert all(np.all((p >= 0) & (p <= 1)) for p in res.probabilities.values())
    assert "ranks" in res.summary()


def test_any_network_spec_can_be_fitted():
    net = tnmars.Network("aAB,bBC,cCA,ABC->abc", dims=dict(a=4, b=5, c=6, A=3, B=3, C=3), seed=0)
    res = tnmars.fit(GOOD, net, steps=10, progress=False, seed=0)
    assert res.network.spec == net.spec
    with pytest.raises(ValueError, match="svd"):
        tnmars.fit(GOOD, net, steps=2, init="svd", progress=False)


def test_a_bond_whose_mask_closes_entirely_does_not_crash_anything():
    # strongly negative logits: every mask closes, the network is legitimately zero
    res = tnmars.fit(GOOD, "tucker", max_rank=3, steps=3, alpha=-30.0, progress=False, seed=0)
    assert res.ranks == (0, 0, 0)
    assert res.network.ranks == (0, 0, 0)
    np.testing.assert_array_equal(res.network.to_tensor(), 0.0)
    assert res.relative_error == pytest.approx(1.0)
    assert res.num_params == 0 and res.compression == GOOD.size
    assert "0/3" in res.summary()


def test_keyboard_interrupt_returns_the_best_state_flagged_interrupted():
    x = tucker_tensor((6, 6, 6), 2, seed=2)
    seen = []

    def callback(step, info):
        seen.append(info["loss"])
        if step >= 200:
            raise KeyboardInterrupt

    res = tnmars.fit(x, "tucker", max_rank=4, steps=1000, record_every=50, callback=callback,
                     progress=False, seed=0)
    assert res.interrupted
    assert res.steps_run == 200
    assert res.history["step"][-1] == 200
    # the returned state is the recorded state with the best MAP objective
    assert res.relative_error <= 1.0 and np.isfinite(res.relative_error)
    assert len(seen) == 5


def test_callback_returning_true_stops_early_without_interrupt_flag():
    res = tnmars.fit(GOOD, "tucker", steps=100, record_every=10, callback=lambda s, i: s >= 30,
                     progress=False, seed=0)
    assert res.steps_run == 31 and not res.interrupted


def test_same_seed_same_result_on_numpy():
    a = tnmars.fit(GOOD, "tt", max_rank=3, steps=30, seed=7, progress=False)
    b = tnmars.fit(GOOD, "tt", max_rank=3, steps=30, seed=7, progress=False)
    assert a.history["loss"] == b.history["loss"]


def test_results_are_in_data_units_whatever_the_scale():
    x = tucker_tensor((8, 8, 8), (2, 3, 4), seed=1)
    small = tnmars.fit(x, "tucker", max_rank=5, seed=0, steps=1500, progress=False)
    big = tnmars.fit(1000 * x, "tucker", max_rank=5, seed=0, steps=1500, progress=False)
    # data are scaled to unit RMS internally, so the selection does not depend on units
    assert small.ranks == big.ranks
    assert big.network.to_tensor() == pytest.approx(1000 * small.network.to_tensor(), abs=1e-2 * 1000 * np.abs(x).max())
    assert big.relative_error < 1e-2 and small.relative_error < 1e-2
    assert big.noise_variance == pytest.approx(1e6 * small.noise_variance, rel=1e-9)


def test_adam_matches_torch_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(5)
    mine = [p.copy()]
    opt = Adam(mine, lr=0.05)
    tp = torch.tensor(p, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.05)
    for k in range(20):
        g = np.cos(mine[0] * (k + 1))
        opt.step([g])
        topt.zero_grad()
        tp.grad = torch.cos(tp.detach() * (k + 1))
        topt.step()
        np.testing.assert_allclose(mine[0], tp.detach().numpy(), rtol=1e-10, atol=1e-12)
