"""tnmars.fit end to end: input checking, rank recovery on every family, safety rails,
backends, progress, Ctrl-C and the paper's recipe."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tnmars
from tnmars.fitting import Adam, FitResult, Relaxation
from tnmars.fitting.graph import feasible_ranks
from tnmars.spec import parse_spec
from tnmars.testing.strategies import networks


def tucker_tensor(shape, ranks, seed=0):
    """The paper's construction: core and factors i.i.d. N(0, 1)."""
    ranks = (ranks,) * len(shape) if isinstance(ranks, int) else tuple(ranks)
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal(ranks)] + [rng.standard_normal((n, r)) for n, r in zip(shape, ranks)]
    return tnmars.Network.tucker(shape, ranks).with_cores(cores).to_tensor()


def with_noise(x, snr_db, seed=0):
    noise = np.random.default_rng(seed).standard_normal(x.shape)
    return x + noise * np.linalg.norm(x) / np.linalg.norm(noise) / 10 ** (snr_db / 20)


def quiet_fit(*args, **kwargs):
    return tnmars.fit(*args, progress=False, **{"seed": 0, **kwargs})


# ------------------------------------------------------------------------- bad input
GOOD = tucker_tensor((4, 5, 6), 2)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(data=np.array([])), ValueError, "empty"),
        (dict(data=np.zeros((0, 3))), ValueError, "empty"),
        (dict(data=np.where(np.eye(4, dtype=bool)[:, :, None], np.nan, np.ones((4, 4, 2)))), ValueError, "NaN"),
        (dict(data=np.full((3, 3), np.inf)), ValueError, "NaN/Inf"),
        (dict(data=np.full((3, 3), np.nan)), ValueError, r"np\.ma\.masked_invalid\(data\)"),  # (a way to say so)
        (dict(data=GOOD, network=tnmars.Network.tucker((4, 5, 7), 2)), ValueError, "shape"),
        (dict(data=GOOD, relaxation=dict(pi=0.0)), ValueError, "pi"),
        (dict(data=GOOD, relaxation=dict(pi=0.6)), ValueError, "pi"),
        (dict(data=GOOD, relaxation=dict(steps=0)), ValueError, "steps"),
        (dict(data=GOOD, relaxation=dict(steps=2.5)), TypeError, "steps"),
        (dict(data=GOOD, relaxation=dict(lr=0.0)), ValueError, "lr"),
        (dict(data=GOOD, relaxation=dict(alpha=float("nan"))), ValueError, "alpha"),
        (dict(data=GOOD, relaxation=dict(noise_variance="loud")), ValueError, "noise_variance"),
        (dict(data=GOOD, relaxation=dict(colour="red")), TypeError, "relaxation"),
        (dict(data=GOOD, relaxation="fast"), TypeError, "relaxation"),
        (dict(data=GOOD, observed=np.ones((4, 5), dtype=bool)), ValueError, "observed has shape"),
        (dict(data=GOOD, observed=np.zeros(GOOD.shape, dtype=bool)), ValueError, "no entry"),
        (dict(data=GOOD, network="hierarchical"), ValueError, "format"),
        (dict(data=GOOD, network=3), TypeError, "network"),
        (dict(data=GOOD, prior="occam"), ValueError, "prior must be one of"),
        (dict(data=GOOD, prior=None), ValueError, "prior must be one of"),
        (dict(data=GOOD, proposal="magic"), ValueError, "proposal must be one of"),
        (dict(data=GOOD, prior_strength=-1.0), ValueError, "prior_strength"),
        (dict(data=GOOD, max_rank=2.5), TypeError, "max_rank"),
        (dict(data=GOOD, max_rank=True), TypeError, "max_rank"),
        (dict(data=GOOD, max_rank=0), ValueError, "max_rank"),
        (dict(data=GOOD, max_rank=(2, 2)), ValueError, "one value per bond"),
        (dict(data=GOOD, seed="zero"), TypeError, "seed"),
        (dict(data=GOOD, dtype="int64"), ValueError, "float32 or float64"),
        (dict(data=GOOD, dtype="float16"), ValueError, "float32 or float64"),
        (dict(data=GOOD, min_rank=-1), ValueError, "min_rank"),
        (dict(data=GOOD, network="cp", proposal="spectral"), ValueError, "spectral"),
        (dict(data=np.array(["a", "b"])), TypeError, "numeric"),
        (dict(data=np.ones(4, dtype=complex)), TypeError, "complex"),
        (dict(data=None), TypeError, "data"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, error, words):
    kwargs = {"network": "tucker", "progress": False, **kwargs}
    with pytest.raises(error, match=words):
        tnmars.fit(**kwargs)


def test_nan_outside_the_observed_entries_is_allowed_and_inside_is_not():
    x = GOOD.copy()
    observed = np.ones(x.shape, dtype=bool)
    observed[0, 0, 0] = False
    x[0, 0, 0] = np.nan
    res = quiet_fit(x, "tucker", observed=observed)
    assert np.isfinite(res.relative_error)
    assert res.heldout_error is None  # the only unobserved entry holds no value
    observed[0, 0, 0] = True
    with pytest.raises(ValueError, match="observed positions"):
        quiet_fit(x, "tucker", observed=observed)


def test_a_masked_arrays_masked_entries_are_missing_not_data():
    """``np.ma`` input: the masked entries (here a -999 sentinel) were fitted as data, silently
    (CP rank 1 at 83% error for an exact rank-2 tensor)."""
    rng = np.random.default_rng(0)
    x = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((n, 2)) for n in (6, 7, 8)))
    missing = rng.random(x.shape) < 0.3
    sentinel = np.where(missing, -999.0, x)
    res = quiet_fit(np.ma.masked_equal(sentinel, -999.0), "cp", max_rank=5, seed=0)
    assert res.ranks == (2,) and res.relative_error < 1e-6
    # the masked entries are not held out either: their sentinels made a perfect completion report
    # heldout_error=1 ("1 held out")
    assert res.heldout_error is None and "held out" not in res.summary()
    also = rng.random(x.shape) < 0.9  # observed= as well: the entries observed in both
    both = quiet_fit(np.ma.masked_equal(sentinel, -999.0), "cp", max_rank=5, seed=0, observed=also)
    assert both.ranks == (2,) and both.relative_error < 1e-6
    held = ~also & ~missing  # held out by observed=, with known values: measured there only
    est = both.network.to_tensor()
    want = np.linalg.norm(est[held] - x[held]) / np.linalg.norm(x[held])
    assert both.heldout_error == pytest.approx(want, rel=1e-6, abs=1e-12) and both.heldout_error < 1e-6
    with pytest.raises(ValueError, match="NaN"):  # a NaN left unmasked is still data
        quiet_fit(np.ma.masked_array(np.where(missing, np.nan, x), mask=np.zeros(x.shape, bool)), "cp")


# ------------------------------------------------------------------------- small clean problems
def test_an_exact_tucker_tensor_is_recovered_to_machine_precision():
    x = tucker_tensor((8, 8, 8), (2, 3, 4), seed=1)
    res = quiet_fit(x, "tucker", max_rank=6)
    assert isinstance(res, FitResult)
    assert res.ranks == (2, 3, 4) and res.network.ranks == (2, 3, 4)  # physically pruned
    assert res.relative_error < 1e-8
    assert res.criterion == "bic" and res.proposal == "spectral"


@pytest.mark.parametrize("seed", range(3))
def test_an_exact_rank_one_cp_tensor_keeps_rank_one(seed):
    x = tnmars.Network.cp((5, 5, 6), 1, seed=seed).to_tensor()
    res = quiet_fit(x, "cp", max_rank=2, seed=seed)
    assert res.ranks == (1,) and res.relative_error < 1e-10


def test_an_exact_tucker_222_is_exact_at_max_rank_2():
    x = tnmars.Network.tucker((6, 6, 6), 2, seed=3).to_tensor()
    res = quiet_fit(x, "tucker", max_rank=2)
    assert res.ranks == (2, 2, 2) and res.relative_error < 1e-10


def test_a_kronecker_product_has_tt_ranks_4_1_3():
    rng = np.random.default_rng(0)
    m1 = rng.standard_normal((5, 4)) @ rng.standard_normal((4, 6))
    m2 = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 7))
    res = quiet_fit(np.einsum("ij,kl->ijkl", m1, m2), "tt")
    assert res.ranks == (4, 1, 3) and res.relative_error < 1e-10


@pytest.mark.parametrize("spec, shape, true", [
    ("aA,AbB,BcC,Cd->abcd", (6, 7, 5, 6), {"A": 2, "B": 3, "C": 2}),            # the CLI's example chain
    ("aA,AbB,Bc,AdC,Ce->abcde", (6, 7, 5, 6, 4), {"A": 3, "B": 2, "C": 2}),     # a tree
    ("aAD,AbB,BcC,CdD->abcd", (6, 7, 5, 6), {"A": 2, "B": 3, "C": 2, "D": 3}),  # a loop
])
def test_custom_networks_select_their_ranks_instead_of_collapsing(spec, shape, true):
    x = with_noise(tnmars.Network(spec, shape=shape, ranks=true, seed=1).to_tensor(), 30)
    res = quiet_fit(x, tnmars.Network(spec, shape=shape, ranks=5, seed=0))
    assert res.ranks_by_bond == true
    assert res.relative_error < 0.05 and 0 not in res.ranks


def test_an_einsum_spec_is_fitted_like_the_network_it_declares():
    spec, true = "aAD,AbB,BcC,CdD->abcd", {"A": 2, "B": 3, "C": 2, "D": 3}
    x = with_noise(tnmars.Network(spec, shape=(6, 7, 5, 6), ranks=true, seed=1).to_tensor(), 30)
    by_spec = quiet_fit(x, spec, max_rank=5, seed=0)
    by_network = quiet_fit(x, tnmars.Network(spec, shape=(6, 7, 5, 6), ranks=5, seed=0), seed=0)
    assert by_spec.ranks_by_bond == by_network.ranks_by_bond == true
    assert by_spec.network.spec == parse_spec(spec).spec
    per_bond = quiet_fit(x, spec, max_rank={"A": 2, "B": 2, "C": 2, "D": 2}, seed=0)
    assert per_bond.ranks_by_bond == {"A": 2, "B": 2, "C": 2, "D": 2}  # capped where asked


def test_a_spec_of_a_built_in_format_is_that_format():
    """The same ranks in the format's order, and its spectral proposal, as the format name gives."""
    x = with_noise(tnmars.Network.tr((5, 6, 7), (2, 3, 2), seed=1).to_tensor(), 40)
    spec = tnmars.Network.tr((5, 6, 7), 2).spec
    assert quiet_fit(x, spec, max_rank=4, seed=0).ranks == quiet_fit(x, "tr", max_rank=4, seed=0).ranks == (2, 3, 2)
    t = tucker_tensor((6, 7, 8), (2, 3, 2))
    assert quiet_fit(t, tnmars.Network.tucker((6, 7, 8), 4).spec, max_rank=4, proposal="spectral").ranks == (2, 3, 2)


@pytest.mark.parametrize("observed", [False, True])
def test_size_1_dangling_legs_are_fitted(observed):
    """A chain with boundary legs of size 1 (``xaA,...,Cdy``): the solver plans each core's
    right-hand side with the leg that no other operand carries."""
    spec = "xaA,AbB,BcC,Cdy->abcd"
    x = tnmars.Network(spec, shape=(5, 6, 5, 6), ranks=2, seed=2).to_tensor()
    mask = np.random.default_rng(1).random(x.shape) < 0.3 if observed else None
    res = quiet_fit(x, spec, max_rank=4, observed=mask, seed=0)
    assert res.ranks_by_bond == {"A": 2, "B": 2, "C": 2} and res.relative_error < 1e-4
    assert quiet_fit(x, tnmars.Network(spec, shape=x.shape, ranks=4, seed=0)).ranks_by_bond == res.ranks_by_bond


@pytest.mark.parametrize("spec, max_rank, words", [
    ("ia,ab,bj", 3, "open modes"),                          # 2 open modes for 3-mode data
    ("ia,ab,bjk", {"a": 2, "z": 2}, "not a bond"),            # (a mapping naming some bonds is accepted)
    ("ia,ab,bjk", {"a": 2, "b": 2, "z": 2}, "not a bond"),
    ("ia,ab,bjk", (2, 2, 2), "one value per bond"),
    ("i,j,k", 3, "no bond"),
    ("ia,ab,bjk", 0, "max_rank"),
])
def test_a_spec_that_does_not_fit_the_data_is_refused_with_the_reason(spec, max_rank, words):
    with pytest.raises(ValueError, match=words):
        tnmars.fit(np.ones((3, 4, 5)), spec, max_rank=max_rank, progress=False)


def test_an_unknown_format_name_lists_the_formats_and_the_spec_form():
    with pytest.raises(ValueError, match="einsum spec"):
        tnmars.fit(np.ones((3, 4, 5)), "mps", progress=False)


def test_tr_works_for_any_max_rank_even_above_the_mode_sizes():
    x = with_noise(tnmars.Network.tr((4, 6, 5, 6), (2, 3, 2, 3), seed=2).to_tensor(), 40)
    res = quiet_fit(x, "tr", max_rank=8)
    assert res.ranks == (2, 3, 2, 3)  # ranks[k]: core k's left rank (tensorly's r_k)
    assert res.bonds == ("D", "A", "B", "C") == tuple(res.network.bonds) and res.network.ranks == res.ranks


def test_a_tr_networks_ranks_are_those_it_was_built_with_and_refit_with():
    """``Network.tr(shape, r).ranks`` was ``r`` rotated by one (ranks were taken around the ring,
    bond k joining cores k and k + 1, and listed in spec order, core k's left rank first); a TR
    fit's ``ranks`` and its network's ``ranks`` disagreed, and refitting at the network's ranks
    (``max_rank=result.network.ranks``) turned an exact fit into a 44% error."""
    net = tnmars.Network.tr((6, 7, 8, 5), (1, 2, 3, 4), seed=0)
    assert net.ranks == (1, 2, 3, 4) and [c.shape for c in net.cores] == [(1, 6, 2), (2, 7, 3), (3, 8, 4), (4, 5, 1)]
    assert net.num_params_at(net.ranks) == net.num_params
    x = net.to_tensor()
    res = quiet_fit(x, "tr", max_rank=6)
    assert res.ranks == res.network.ranks == (1, 2, 3, 4) and res.relative_error < 1e-9
    again = quiet_fit(x, "tr", max_rank=res.network.ranks)
    assert again.ranks == (1, 2, 3, 4) and again.relative_error < 1e-9


# ------------------------------------------------------------------------- noise and completion
def test_the_occam_criterion_selects_the_true_ranks_under_noise_where_the_papers_prior_keeps_more():
    x = tucker_tensor((10, 10, 10), (2, 3, 2), seed=0)
    noisy = with_noise(x, 10)
    paper = quiet_fit(noisy, "tucker", max_rank=5, prior="bernoulli", relaxation=Relaxation(steps=600))
    bic = quiet_fit(noisy, "tucker", max_rank=5)
    assert bic.ranks == (2, 3, 2)
    assert paper.ranks != (2, 3, 2) and paper.num_params > bic.num_params
    assert paper.criterion == "bernoulli" and paper.steps_run == 600 and paper.relaxation_probabilities
    err = lambda r: np.linalg.norm(r.network.to_tensor() - x)  # noqa: E731
    assert err(bic) < err(paper)
    # the noise variance implied by the selected fit is the residual's (true: ||noise||^2 / N)
    assert 0.5 < bic.noise_variance / np.mean((noisy - x) ** 2) < 2.0


def test_cp_completion_recovers_its_rank_and_predicts_the_missing_entries():
    rng = np.random.default_rng(1)
    x = tnmars.Network.cp((15, 15, 15), 3, seed=4).to_tensor()
    observed = rng.random(x.shape) < 0.3
    noisy = np.where(observed, x + 0.05 * x.std() * rng.standard_normal(x.shape), np.nan)
    res = quiet_fit(noisy, "cp", max_rank=10, observed=observed)
    assert res.ranks == (3,) and res.proposal == "greedy"
    assert res.heldout_error is None  # the unobserved entries hold NaN: nothing to score there
    est = res.network.to_tensor()
    assert np.linalg.norm(est[~observed] - x[~observed]) / np.linalg.norm(x[~observed]) < 0.1


def test_tucker_completion_at_ten_percent_observed():
    rng = np.random.default_rng(0)
    x = tnmars.Network.tucker((20, 20, 20), (3, 4, 5), seed=1).to_tensor()
    noisy = x + 0.1 * x.std() * rng.standard_normal(x.shape)
    observed = rng.random(x.shape) < 0.1
    res = quiet_fit(noisy, "tucker", max_rank=10, observed=observed)
    assert res.ranks == (3, 4, 5)
    held = ~observed
    assert np.linalg.norm(res.network.to_tensor()[held] - x[held]) / np.linalg.norm(x[held]) < 0.12
    assert res.heldout_error is not None


# ------------------------------------------------------------------------- safety rails
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_fit_of_nonzero_data_returns_a_zero_network_or_an_infeasible_rank(data):
    net = data.draw(networks(max_cores=4, max_dim=3, max_rank=3, kinds=("chain", "loop", "star", "hyperedge")))
    assume(len(net.shape) >= 1)  # a scalar is not a tensor to fit
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    x = net.to_tensor() + 0.1 * rng.standard_normal(net.shape)
    if not np.any(x):  # pragma: no cover - continuous noise
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quiet_fit(x, net)
    assert 0 not in res.ranks
    assert res.relative_error < 1.0
    caps = feasible_ranks(res.network.spec, res.network.dims)
    assert all(res.network.bonds[b] <= caps[b] for b in caps)
    assert all(r <= m for r, m in zip(res.ranks, res.max_ranks))


def test_zero_data_is_the_only_way_to_rank_zero_and_it_says_so():
    with pytest.warns(RuntimeWarning, match="the data are all zero"):
        res = quiet_fit(np.zeros((4, 5, 6)), "tucker", max_rank=3)
    assert res.ranks == (0, 0, 0) and res.num_params == 0
    np.testing.assert_array_equal(res.network.to_tensor(), 0.0)
    assert math.isnan(res.compression) and res.heldout_error is None  # the zero tensor is not a compression


def test_a_completion_whose_observed_entries_are_all_zero_says_so_and_reports_its_heldout_error():
    """It warned "the data are all zero" and reported heldout_error=None, hiding that the
    held-out entries (finite, nonzero) are not predicted at all."""
    x = tucker_tensor((6, 7, 8), (2, 2, 2), seed=1)
    observed = np.zeros(x.shape, bool)
    observed[0] = True
    data = x.copy()
    data[0] = 0.0
    with pytest.warns(RuntimeWarning, match="the observed entries are all zero.*heldout_error=1"):
        res = quiet_fit(data, "tucker", observed=observed)
    assert res.ranks == (0, 0, 0) and res.heldout_error == 1.0 and math.isnan(res.compression)  # (not a compression)


def test_probabilities_and_history_agree_with_the_selected_ranks():
    res = quiet_fit(with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 20), "tucker", max_rank=6)
    for bond, r in res.ranks_by_bond.items():
        p = res.probabilities[bond]
        assert len(p) == 6 and p.sum() == r and set(np.unique(p)) <= {0.0, 1.0}
    assert res.history["phase"][-1] == "polish" and res.history["ranks"][-1] == res.ranks
    assert set(res.history["phase"]) == {"selection", "polish"}
    assert res.selection[0]["move"] == "start" and tuple(res.selection[-1]["ranks"]) == res.ranks
    objectives = [s["objective"] for s in res.selection]
    assert objectives == sorted(objectives, reverse=True)  # every accepted move lowers the objective
    assert res.relaxation_probabilities == {} and res.full_network is None


@pytest.mark.parametrize("factor", [1e-200, 1e-100, 1.0, 1e100, 1e160])
def test_ranks_and_errors_do_not_depend_on_the_data_scale(factor):
    x = with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 30)
    ref = quiet_fit(x, "tucker", max_rank=5)
    res = quiet_fit(x * factor, "tucker", max_rank=5)
    assert res.ranks == ref.ranks
    assert res.relative_error == pytest.approx(ref.relative_error, rel=1e-6)
    assert not np.isnan(res.noise_variance) and not np.isnan(res.log_likelihood)
    if 1e-100 <= factor <= 1e100:  # variances of 1e-200 and 1e160-scale data leave float64's range
        assert res.noise_variance / factor**2 == pytest.approx(ref.noise_variance, rel=1e-6)


def test_a_relaxation_that_keeps_more_than_the_data_determine_says_so():
    """Found by an outside probe: ``prior="bernoulli"`` on a Tucker (2, 3, 4) at 10 dB kept
    (7, 9, 10), 919 parameters for 1,320 entries, and a short relaxation every index (1,685
    parameters), both with empty diagnostics. Within half the entries it stays quiet."""
    rng = np.random.default_rng(0)
    x = tucker_tensor((10, 11, 12), (2, 3, 4), seed=0)
    noisy = x + 10 ** (-10 / 20) * x.std() * rng.standard_normal(x.shape)
    with pytest.warns(RuntimeWarning, match=r"no criterion judged them"):
        res = tnmars.fit(noisy, "tucker", prior="bernoulli", relaxation=dict(steps=10), progress=False)
    assert res.num_params > noisy.size // 2 and any("no criterion judged" in d for d in res.diagnostics)
    small = quiet_fit(noisy, "tucker", max_rank=3, prior="bernoulli", relaxation=dict(steps=10))
    assert not any("no criterion judged" in d for d in small.diagnostics)


def test_a_relaxation_that_closes_nothing_says_its_ranks_were_set_not_selected():
    """Found by an outside probe: ``prior="bernoulli"`` on a CP rank-5 30^3 tensor at 20 dB
    kept rank 30 of 30 (relative error 0.089 for noise at 0.10: fitting the noise), silently:
    its 2,640 degrees of freedom are far within half the entries."""
    rng = np.random.default_rng(0)
    x = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((30, 5)) for _ in range(3)])
    x += 0.1 * x.std() * rng.standard_normal(x.shape)
    with pytest.warns(RuntimeWarning, match=r"closed no index: every bond stays at its maximal rank"):
        res = tnmars.fit(x, "cp", prior="bernoulli", progress=False)
    assert res.ranks == (30,)


# ------------------------------------------------------------------------- backends, seeds, dtypes
def test_torch_data_come_back_as_torch_networks_and_the_relaxation_trains_by_autograd():
    torch = pytest.importorskip("torch")
    x = torch.tensor(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1))
    res = quiet_fit(x, "tucker", max_rank=5)
    assert res.network.backend == "torch" and res.settings["backend"] == "torch"
    assert isinstance(res.network.cores[0], torch.Tensor) and not res.network.cores[0].requires_grad
    assert res.ranks == (2, 3, 4) and res.relative_error < 1e-8
    paper = quiet_fit(x, "tucker", max_rank=5, prior="bernoulli", relaxation=dict(steps=300),
                      dtype=torch.float32)
    assert paper.network.dtype == "float32" and paper.full_network.backend == "torch"
    assert paper.steps_run == 300


def test_a_torch_masked_tensor_is_a_completion_of_its_specified_entries():
    """Its unspecified entries are missing, as a NumPy masked array's masked ones (it failed
    in torch's .numpy(): "not supported for tensor subclasses")."""
    torch = pytest.importorskip("torch")
    masked_tensor = pytest.importorskip("torch.masked").masked_tensor
    x = torch.tensor(tucker_tensor((8, 9, 10), (2, 3, 2), seed=1))
    specified = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (torch: "the masked API is in prototype stage")
        data = masked_tensor(x.clone(), specified)
    res = quiet_fit(data, "tucker", max_rank=4)
    same = quiet_fit(x, "tucker", max_rank=4, observed=specified)
    assert res.ranks == same.ranks == (2, 3, 2) and res.network.backend == "torch"
    assert res.relative_error == pytest.approx(same.relative_error)
    fewer = specified & (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.8)
    both = quiet_fit(data, "tucker", max_rank=4, observed=fewer)  # (entries observed in both)
    assert res.heldout_error is None  # unspecified entries are not data, not even held out
    assert both.heldout_error < 1e-6  # the specified entries observed= leaves out are


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_the_torch_relaxation_trains_under_a_callers_no_grad_or_inference_mode(mode):
    """A fit called in an evaluation block failed at the relaxation's first backward
    ("element 0 of tensors does not require grad"), while NumPy data fitted there fine."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(tucker_tensor((6, 7, 8), (2, 2, 2), seed=1))
    with getattr(torch, mode)():
        paper = quiet_fit(x.clone(), "tucker", max_rank=4, prior="bernoulli", relaxation=dict(steps=50))
        proposed = quiet_fit(x.clone(), "tucker", max_rank=4, proposal="mars", relaxation=dict(steps=50))
        assert not torch.is_grad_enabled()  # the caller's mode is left as it was
    assert paper.steps_run == 50 and paper.network.backend == "torch"
    assert proposed.ranks == (2, 2, 2) and proposed.relative_error < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_papers_recipe_is_available_on_every_backend(backend):
    pytest.importorskip("torch")
    x = tucker_tensor((8, 8, 8), (2, 3, 4), seed=1)
    res = quiet_fit(x, "tucker", max_rank=6, prior="bernoulli", backend=backend, relaxation=dict(steps=1500))
    assert res.ranks == (2, 3, 4)
    assert res.network.backend == backend
    assert set(res.relaxation_probabilities) == set(res.bonds)
    assert res.history["phase"][0] == "relaxation"


def test_the_mars_proposal_starts_the_search_from_the_relaxation():
    x = with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 30)
    res = quiet_fit(x, "tucker", max_rank=6, proposal="mars", relaxation=dict(steps=500))
    assert res.ranks == (2, 3, 4) and res.proposal == "mars" and res.steps_run == 500
    assert res.history["phase"][0] == "relaxation" and "selection" in res.history["phase"]


def test_a_numpy_generator_is_a_seed_and_equal_seeds_give_equal_results():
    a = quiet_fit(GOOD, "cp", max_rank=3, seed=7)
    b = quiet_fit(GOOD, "cp", max_rank=3, seed=7)
    assert a.history["loss"] == b.history["loss"]
    c = quiet_fit(GOOD, "cp", max_rank=3, seed=np.random.default_rng(0))
    assert c.ranks == a.ranks


def test_float32_data_give_a_float32_network():
    res = quiet_fit(GOOD.astype(np.float32), "tt", max_rank=3)
    assert res.network.dtype == "float32"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tucker_forced_to_its_full_ranks_is_exact(seed):
    """``min_rank`` raising the spectral proposal to the full ranks: HOSVD is exact there, but
    the start grown by small random slices left ALS near a saddle at 11-27% error."""
    x = np.random.default_rng(seed).standard_normal((4, 5, 6))
    res = quiet_fit(x, "tucker", max_rank=6, min_rank=6)
    assert res.ranks == (4, 5, 6) and res.relative_error < 1e-8


def test_fitting_a_labelled_network_keeps_its_labels():
    """A Network declared with labels came back without them (``labels`` None): the caller
    could no longer find their bond by its name."""
    net = tnmars.Network([("x", "bond"), ("bond", "y")], dims={"x": 20, "y": 30, "bond": 4})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 2)) @ rng.standard_normal((2, 30))
    res = quiet_fit(x, net)
    assert res.network.labels == net.labels
    assert res.ranks_by_bond[res.network.labels["bond"]] == 2


# ------------------------------------------------------------------------- progress, callback, Ctrl-C
def test_every_phase_reports_to_the_callback():
    seen = []
    quiet_fit(GOOD, "tucker", max_rank=3, callback=lambda step, info: seen.append(info["phase"]))
    assert {"selection", "polish"} <= set(seen)
    seen.clear()
    quiet_fit(GOOD, "tucker", max_rank=3, prior="bernoulli", relaxation=dict(steps=50),
              callback=lambda step, info: seen.append(info["phase"]))
    assert seen[0] == "relaxation" and "polish" in seen


def test_a_callback_returning_true_stops_and_keeps_the_best_state():
    x = with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 30)
    with pytest.warns(UserWarning, match="callback returned True at step 3"):
        res = quiet_fit(x, "tucker", max_rank=6, callback=lambda step, info: step >= 3)
    assert res.interrupted
    assert res.evaluations == 3
    assert 0 not in res.ranks and res.relative_error < 1.0


def test_a_logging_callback_that_returns_a_count_does_not_stop_the_fit():
    """``callback=lambda s, i: log.write(...)`` returns the number of characters written: a
    truthy int stopped the fit after its first step, silently (only ``interrupted=True``)."""
    import io
    x = tucker_tensor((8, 8, 8), (2, 3, 2), seed=1)
    log = io.StringIO()
    with pytest.warns(UserWarning, match="returned 7, an int: only True stops"):
        res = quiet_fit(x, "tucker", max_rank=5, callback=lambda step, info: log.write("a step\n"))
    assert not res.interrupted and res.ranks == quiet_fit(x, "tucker", max_rank=5).ranks == (2, 3, 2)
    assert log.getvalue().count("\n") >= res.evaluations > 1  # (every step was logged)


def test_progress_and_callback_are_checked():
    """``progress="no"`` showed bars (a truthy string), a callback returning ``"no"`` stopped
    the fit, and ``callback=5`` failed deep inside with "'int' object is not callable"."""
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        tnmars.fit(GOOD, "tucker", max_rank=3, progress="no")
    with pytest.raises(TypeError, match="callback must be a function"):
        quiet_fit(GOOD, "tucker", max_rank=3, callback=5)
    with pytest.raises(TypeError, match="return True to stop"):
        quiet_fit(GOOD, "tucker", max_rank=3, callback=lambda step, info: "no")
    with pytest.warns(UserWarning, match="callback returned True"):
        res = quiet_fit(GOOD, "tucker", max_rank=3, callback=lambda step, info: np.bool_(step >= 2))
    assert res.interrupted


def test_ctrl_c_in_the_search_returns_the_best_state_flagged_interrupted():
    x = with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 30)

    def callback(step, info):
        if step >= 4:
            raise KeyboardInterrupt

    res = quiet_fit(x, "tucker", max_rank=6, callback=callback)
    assert res.interrupted and np.isfinite(res.relative_error)
    # said, not only flagged (an outside probe: a Ctrl-C'd fit came back at error 0.76 in silence)
    with pytest.warns(RuntimeWarning, match=r"interrupted \(Ctrl-C\) in its selection phase: the best state so far"):
        tnmars.fit(x, "tucker", max_rank=6, callback=callback, progress=False)


def test_ctrl_c_in_the_relaxation_keeps_the_best_record():
    def callback(step, info):
        if info["phase"] == "relaxation" and step >= 5:
            raise KeyboardInterrupt

    res = quiet_fit(GOOD, "tucker", max_rank=3, prior="bernoulli", relaxation=dict(steps=1000), callback=callback)
    assert res.interrupted and res.steps_run < 1000


def test_long_refits_report_their_sweeps_between_steps_and_every_step_shows_the_best_error(monkeypatch, capsys):
    # a refit of final_sweeps ALS sweeps on a large network runs for many minutes between two
    # evaluations: its sweeps go to the bar (not to the callback: they are not steps), and every
    # step shows the relative error of the best candidate so far, not only the last probe's
    from tnmars.fitting import progress as progress_module
    from tnmars.fitting.search import RankSearch

    refits = []
    original = RankSearch.evaluate

    def spy(self, net, sweeps, move):
        on_refit = self.on_refit
        self.on_refit = lambda *args: (refits.append((args, sweeps, self.full_sweeps)), on_refit(*args))
        try:
            return original(self, net, sweeps, move)
        finally:
            self.on_refit = on_refit

    monkeypatch.setattr(RankSearch, "evaluate", spy)
    monkeypatch.setattr(progress_module, "NOTE_INTERVAL", 0.0)  # redraw at every sweep
    x = with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 30)
    seen = []
    res = tnmars.fit(x, "tucker", max_rank=6, budget=300, seed=0, progress=True,  # exchanges: long refits
                     callback=lambda step, info: seen.append(info))
    err = capsys.readouterr().err
    assert refits, "no long refit reported its sweeps"
    assert all(sweeps > full for _, sweeps, full in refits)
    sweeps_seen = [args[1] for args, _, _ in refits]
    assert sweeps_seen[0] == 1 and all(1 <= s <= total for (_, s, total, _), _, _ in refits)
    assert "refit=" in err and "sweep 1/" in err
    # the callback saw evaluations only (one per candidate), each with the error of the candidate
    # of lowest objective so far (in the data's units: the first candidate gives the norm)
    selection = [info for info in seen if info["phase"] == "selection"]
    assert len(selection) == res.evaluations
    sq_norm = selection[0]["sse"] / selection[0]["best_error"] ** 2
    lowest = selection[0]
    for info in selection:
        lowest = info if info["objective"] < lowest["objective"] else lowest
        assert info["best_error"] == pytest.approx(math.sqrt(lowest["sse"] / sq_norm), rel=1e-9)
    assert len({info["best_error"] for info in selection}) > 1  # it moved with the search
    assert "best_error=" in err


def test_reporter_notes_are_rate_limited_and_are_not_steps(monkeypatch):
    from tnmars.fitting import progress as progress_module

    calls = []
    reporter = progress_module.Reporter(progress=False, callback=lambda step, info: calls.append(step))
    reporter.start("selection")
    reporter.note({"refit": "x"})  # no bar: only the log
    assert calls == [] and reporter.step == 0

    class Bar:
        def __init__(self):
            self.drawn = []

        def set_postfix(self, shown, refresh):
            self.drawn.append((dict(shown), refresh))

        def update(self, n):
            pass

        def close(self):
            pass

    bar = reporter._bar = Bar()
    clock = iter([100.0, 100.5, 101.2, 101.7, 102.3])  # the step, then four sweeps of a refit
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    reporter.record({"objective": 2.0, "ranks": (1, 2), "move": "+A", "sse": 3.0})
    for sweep in (1, 2, 3, 4):
        reporter.note({"refit": f"sweep {sweep}"})
    assert calls == [1] and reporter.step == 1
    notes = [shown for shown, refresh in bar.drawn if refresh]
    # nothing within a second of the step (a short refit never shows), then once a second
    assert [n["refit"] for n in notes] == ["sweep 2", "sweep 4"]
    assert notes[0]["ranks"] == "1,2" and notes[0]["move"] == "+A" and "sse" not in notes[0]


def test_tqdm_disable_turns_the_bars_off(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    tnmars.fit(GOOD, "tucker", max_rank=3, seed=0)
    assert "tnmars.fit" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    tnmars.fit(GOOD, "tucker", max_rank=3, seed=0, progress=True)
    assert "tnmars.fit [selection]" in capsys.readouterr().err


def test_the_bars_name_the_proposals_and_the_checks(capsys):
    """Outside probe: a 3000 x 3000 matrix spent 39 s in the proposals' SVDs before any bar
    showed, and 28 s in the checks after the polish's bar closed, with nothing on screen."""
    tnmars.fit(GOOD, "tucker", max_rank=3, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "tnmars.fit [proposals]" in err and "tnmars.fit [checks]" in err
    assert err.index("[proposals]") < err.index("[selection]") < err.index("[checks]")
    tnmars.fit(GOOD, "tucker", max_rank=3, seed=0, progress=False)
    assert "tnmars.fit" not in capsys.readouterr().err


# ------------------------------------------------------------------------- the relaxation's optimiser
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


def test_results_report_compression_and_summary():
    res = quiet_fit(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), "tucker", max_rank=6)
    assert res.compression == pytest.approx(512 / res.num_params)
    assert "A=2/6" in res.summary() and math.isfinite(res.objective)
    # an exact fit's noise variance is the criterion's floor, and the summary says so (it read as noise of 3e-9)
    assert res.noise_variance == pytest.approx(res.settings["noise_floor"]) and "criterion's floor" in res.summary()
    x = tucker_tensor((8, 8, 8), (2, 3, 4), seed=1)
    noisy = quiet_fit(x + 0.05 * x.std() * np.random.default_rng(0).standard_normal(x.shape), "tucker", max_rank=6)
    assert noisy.noise_variance > 10 * noisy.settings["noise_floor"] and "floor" not in noisy.summary()
    huge = quiet_fit(np.random.default_rng(0).standard_normal((8, 9, 10)) * 1e170, "tt")  # (both inf past float64)
    assert math.isinf(huge.noise_variance) and "floor" not in huge.summary()


@pytest.mark.parametrize("fmt", ["tucker", "tt"])
def test_peak_memory_of_a_fit_stays_within_three_times_the_data(fmt):
    """tracemalloc sees NumPy's buffers: the fit's largest live allocation, over the data
    size (the data themselves not counted). The same fit runs once before, so that the
    imports and the contraction-plan caches (bounded, integers and strings only) are filled
    and only the fit's arrays count: after a warm-up on a smaller tensor, the plans of this
    shape added about 0.5x the data to the TT fit's peak (3.01x, 2.61x after a full warm-up;
    AMD EPYC, 2026-12-01)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    truth = (tnmars.Network.tucker((32,) * 4, (2, 3, 4, 3), seed=1) if fmt == "tucker"
             else tnmars.Network.tt((8,) * 6, (2, 3, 3, 3, 2), seed=1)).to_tensor()  # 8 MiB, 2 MiB
    x = truth + 0.05 * truth.std() * rng.standard_normal(truth.shape)
    quiet_fit(x, fmt, max_rank=6)
    tracemalloc.start()
    try:
        quiet_fit(x, fmt, max_rank=6)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / x.nbytes <= 3.0


def test_a_structure_search_names_itself_and_its_start_on_the_bars(capsys):
    """tnmars.search ran its starts through tnmars.fit, whose bars said 'tnmars.fit'."""
    ring = tnmars.Network.tr((4, 5, 3), (2, 2, 2), seed=0).to_tensor()
    tnmars.search(ring, max_rank=2, starts=2, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "tnmars.search, start 1/2 [selection]" in err and "tnmars.search, start 2/2" in err
    assert "tnmars.fit [" not in err
    tnmars.fit(GOOD, "tucker", max_rank=3, seed=0, progress=True)  # the label does not outlive the search
    assert "tnmars.fit [selection]" in capsys.readouterr().err


def test_a_budget_under_the_bernoulli_prior_says_it_only_caps_the_ranks():
    """Found by review: with prior="bernoulli" no search runs, so a budget only shrinks an
    over-budget relaxation; under it the result was the one without a budget (error 0.081 where
    the default prior found 0.064 within the same budget), silently."""
    with pytest.warns(UserWarning, match="budget= only caps the relaxation's ranks"):
        res = tnmars.fit(GOOD, "tt", prior="bernoulli", budget=60, seed=0, progress=False,
                         relaxation={"steps": 50})
    assert res.num_params <= 60


def test_data_or_a_device_without_values_is_refused():
    torch = pytest.importorskip("torch")
    for call in (lambda: tnmars.fit(torch.empty((6, 7, 8), device="meta"), "tucker", max_rank=3, progress=False),
                 lambda: tnmars.search(torch.empty((6, 7, 8), device="meta"), progress=False)):
        with pytest.raises(ValueError, match="'meta' device"):
            call()
    with pytest.raises(ValueError, match="device='meta' holds no values"):
        tnmars.fit(torch.tensor(GOOD), "tucker", max_rank=3, progress=False, device="meta")


def test_ratio_budgets_are_read_exactly():
    """``"1.1x"`` of 110 entries allowed 99 parameters (float division), not 100."""
    from tnmars._checks import max_params
    assert (max_params("1.1x", 110), max_params("4.9x", 49), max_params("20x", 8000)) == (100, 10, 400)
    for bad in ("infx", "nanx", "0.5x", "x", "1/0x"):
        with pytest.raises(ValueError, match="compression-ratio budget"):
            max_params(bad, 10)


def test_an_interrupted_fit_history_ends_with_its_result_not_a_polish():
    res = quiet_fit(GOOD, "tucker", seed=0, callback=lambda step, info: step >= 2)
    assert res.interrupted and res.history["phase"][-1] == "result" and "polish" not in res.history["phase"]
    assert quiet_fit(GOOD, "tucker", seed=0).history["phase"][-1] == "polish"


def test_a_zero_network_is_named_in_reprs_and_refused_by_tensorly():
    from tnmars.interop import to_tensorly
    res = quiet_fit(np.zeros((4, 5, 6)), "tucker")
    assert "compression='zero tensor'" in repr(res)
    found = tnmars.search(np.zeros((3, 4, 5)), progress=False)
    assert "compression='zero tensor'" in repr(found) and "the zero tensor" in found.summary()
    # the number says so too (an outside probe: 60.0 for the 3x4x5 zero network, 0 parameters)
    assert math.isnan(res.compression) and math.isnan(found.compression) and math.isnan(res.network.compression)
    assert math.isnan(tnmars.Network.tt((3, 4, 5), 2, seed=0).prune({"A": []}).compression)
    with pytest.raises(ValueError, match="zero tensor"):
        to_tensorly(res.network)


@pytest.mark.parametrize("fmt, stop_at", [("cp", 3), ("cp", 6), ("tucker", 4), ("tucker", 9)])
def test_ctrl_c_keeps_the_best_candidate_evaluated_even_one_the_walk_had_not_taken(fmt, stop_at):
    """Ctrl-C in a CP fit's walk kept rank 11 (objective -1.491e6) after the progress line had
    shown rank 12 at -1.579e6: the neighbours a walk evaluates are not its path until it takes
    one. What the bar showed before the interrupt is what the result keeps."""
    x = with_noise(tucker_tensor((8, 8, 8), (2, 3, 4), seed=1), 30)
    seen = []

    def callback(step, info):
        if info["phase"] == "selection":
            seen.append(info["objective"])
        if step >= stop_at:
            raise KeyboardInterrupt

    res = quiet_fit(x, fmt, max_rank=6, callback=callback)
    assert res.interrupted and seen
    assert res.objective == pytest.approx(min(seen), rel=1e-12)
