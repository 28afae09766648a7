"""Data far from zero are also fitted without their mean (tnmars.fitting.centring), and the
canonical form that lets a tree drop an index of its bond without the rest of it weighing in."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnmars
from tnmars.fitting.centring import CENTRE_FROM, centred_caps
from tnmars.fitting.moves import canonical_towards, plus_constant, shrink


def _tucker_data(seed: int = 0) -> np.ndarray:
    truth = np.asarray(tnmars.Network.tucker((12, 14, 10), (3, 4, 2), seed=seed).to_tensor())
    truth = truth / truth.std()
    return truth + 0.01 * np.random.default_rng(seed).standard_normal(truth.shape)


def _error_on_deviations(net: tnmars.Network, x: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(net.to_tensor()) - x) / np.linalg.norm(x - x.mean()))


@pytest.mark.parametrize("fmt, ranks", [("tucker", (4, 5, 3)), ("tt", (4, 3))])
def test_data_far_from_zero_keep_the_ranks_and_error_they_have_near_it(fmt, ranks):
    """Outside probe (event times in Unix seconds): a Tucker (3, 4, 2) with 1% noise plus 1e6
    came back at (4, 4, 3), 10% off its deviations, and plus 1e7 at (1, 1, 1), with only a
    warning to centre the data. They are now also fitted without their mean, plus it: the
    ranks of the data plus 1e3 (the truth's, one index more for the constant) at every offset,
    at the noise's error, without a word."""
    y = _tucker_data()
    assert tnmars.fit(y + 1e3, fmt, progress=False).ranks == ranks
    for offset in (1e6, 1e7, 1e9):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = tnmars.fit(y + offset, fmt, progress=False)
        assert res.ranks == ranks, offset
        assert _error_on_deviations(res.network, y + offset) < 0.0105
        # (at 1e6 a TT fitted as given is as good: the criterion may keep either)
        assert res.settings["offset"]["fitted_without_mean"] or offset < 1e7
        assert res.settings["offset"]["mean"] == pytest.approx(offset + y.mean())
        # the result's figures are those of the network returned, on the data as given
        x = y + offset
        residual = np.asarray(res.network.to_tensor()) - x
        assert res.relative_error == pytest.approx(np.linalg.norm(residual) / np.linalg.norm(x), rel=1e-3)
        assert res.log_likelihood == pytest.approx(-np.mean(residual**2), rel=1e-3)
        assert res.num_params == res.network.num_params
        assert tuple(res.network.bonds[b] for b in res.bonds) == res.ranks
        assert all(res.probabilities[b].sum() == r for b, r in zip(res.bonds, res.ranks))
        assert all(r <= m for r, m in zip(res.ranks, res.max_ranks))


def test_data_whose_mean_is_a_factor_keep_their_fit_as_given():
    """Near a large mean, a product ``m (1 + e a)(1 + e b)(1 + e c)`` is of rank 1 as it is,
    while its deviations need more indices, plus the constant's: the criterion keeps the fit
    of the data as given."""
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(n) for n in (12, 14, 10))
    for offset in (1e5, 1e7):
        x = offset * np.einsum("i,j,k->ijk", 1 + a / offset, 1 + b / offset, 1 + c / offset)
        x = x + 0.01 * rng.standard_normal(x.shape)
        res = tnmars.fit(x, "tucker", progress=False)
        assert res.ranks == (1, 1, 1)
        assert not res.settings["offset"]["fitted_without_mean"]
        assert _error_on_deviations(res.network, x) < 0.01


def test_centring_keeps_the_callers_caps_and_says_why_it_could_not():
    """The fit without the mean runs one index below every cap the caller gave, so that the
    mean's index keeps the result within it; a cap of 1, a budget or a warm start leave no
    room for it (or hold the mean already): then the data are fitted as given, with the
    warning to centre them."""
    y = _tucker_data() + 1e7
    res = tnmars.fit(y, "tucker", max_rank=4, progress=False)
    assert res.ranks == (4, 4, 3) and res.settings["offset"]["fitted_without_mean"]
    capped = tnmars.fit(y, tnmars.Network.tucker((12, 14, 10), (5, 3, 5), seed=0), progress=False)
    assert all(r <= m for r, m in zip(capped.ranks, (5, 3, 5))) and capped.ranks[1] == 3
    assert centred_caps("tucker", [5, 1, 3]) is None and centred_caps("tucker", {"a": 2}) == ("tucker", {"a": 1})
    for kwargs in ({"max_rank": [5, 1, 3]}, {"budget": 300},
                   {"proposal": tnmars.fit(y - y.mean(), "tucker", progress=False).network}):
        with pytest.warns(RuntimeWarning, match="sit far from zero.*could not"):
            result = tnmars.fit(y, "tucker", progress=False, **kwargs)
        assert "offset" not in result.settings


def test_data_near_zero_are_fitted_once():
    y = _tucker_data() + 0.5 * CENTRE_FROM * 0.01  # far below the threshold
    assert "offset" not in tnmars.fit(y, "tucker", progress=False).settings


def test_a_far_from_zero_completion_predicts_its_missing_entries():
    rng = np.random.default_rng(3)
    y = _tucker_data()
    observed = rng.random(y.shape) < 0.4
    for offset in (1e6, 1e8):
        res = tnmars.fit(y + offset, "tucker", observed=observed, progress=False)
        missing = ~observed
        error = np.linalg.norm((np.asarray(res.network.to_tensor()) - y - offset)[missing])
        assert error / np.linalg.norm(y[missing] - y.mean()) < 0.013
        assert res.heldout_error == pytest.approx(error / np.linalg.norm((y + offset)[missing]), rel=1e-3)


def test_centred_fits_return_on_the_datas_backend_and_dtype_with_warnings_said_of_the_callers_line():
    torch = pytest.importorskip("torch")
    y = _tucker_data()
    res = tnmars.fit(torch.tensor(y + 1e7), "tt", progress=False)
    assert isinstance(res.network.cores[0], torch.Tensor) and res.network.cores[0].dtype == torch.float64
    assert res.ranks == (4, 3) and res.settings["offset"]["fitted_without_mean"]
    # the warnings of the fit kept are said of the caller's call, as any fit's, and those of the
    # arguments once, of the caller's arguments (not of the centred fit's min_rank=2)
    x = y[:3, :3, :3] + 1e7
    with pytest.warns(UserWarning) as heard:
        tnmars.fit(x, "tucker", min_rank=3, progress=False)
    assert heard and all(w.filename == __file__ for w in heard)
    said = [str(w.message) for w in heard]
    assert sum("at min_rank=3" in m for m in said) == 1 and not any("min_rank=2" in m for m in said)


def test_a_callbacks_stop_in_the_first_fit_returns_it():
    calls = []

    def stop(step, info):
        calls.append(step)
        return True

    with pytest.warns(UserWarning, match="callback returned True"):
        res = tnmars.fit(_tucker_data() + 1e7, "tucker", progress=False, callback=stop)
    assert res.interrupted and len(calls) == 1


def test_a_callback_hears_which_of_the_two_fits_a_record_is_of():
    """Outside probe: the records of the two fits looked alike; only the bars said which."""
    labels = []
    tnmars.fit(_tucker_data() + 1e7, "tucker", progress=False, callback=lambda step, info: labels.append(info["label"]))
    assert labels[0] == "tnmars.fit, as given" and labels[-1] == "tnmars.fit, without the mean"
    assert set(labels) == {"tnmars.fit, as given", "tnmars.fit, without the mean"}
    labels.clear()
    tnmars.fit(_tucker_data(), "tucker", progress=False, callback=lambda step, info: labels.append(info["label"]))
    assert set(labels) == {"tnmars.fit"}


# ------------------------------------------------------------------------- canonical form
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["tt", "tucker", "tree"]), data=st.data())
def test_a_shrink_in_canonical_form_is_the_optimal_truncation_of_its_cut(seed, kind, data):
    """Law: in the canonical form towards a bond that cuts a tree in two, dropping the bond's
    smallest singular value loses exactly the cut's smallest singular value (Eckart-Young),
    and the form itself leaves the tensor unchanged; a plain shrink loses at least that."""
    rng = np.random.default_rng(seed)
    if kind == "tt":
        dims = tuple(data.draw(st.lists(st.integers(2, 4), min_size=3, max_size=4)))
        net = tnmars.Network.tt(dims, tuple([2] * (len(dims) - 1)), seed=seed)
    elif kind == "tucker":
        net = tnmars.Network.tucker((3, 4, 3), (2, 3, 2), seed=seed)
    else:  # a tree that is neither: one core with three neighbours, one of them inner
        net = tnmars.Network("iab,ja,kbc,lc", {"i": 3, "j": 3, "k": 3, "l": 3, "a": 2, "b": 3, "c": 2}, seed=seed)
    net = tnmars.Network(net.spec, cores=[c * rng.uniform(0.1, 10.0) for c in (np.asarray(c) for c in net.cores)])
    bond = data.draw(st.sampled_from(sorted(net.bonds)))
    same = canonical_towards(net, bond)
    full = np.asarray(net.to_tensor())
    assert np.allclose(np.asarray(same.to_tensor()), full, atol=1e-10 * np.abs(full).max())
    # the cut: the open modes on one side of the bond
    side = _side(net, bond)
    modes = net.output
    rows = [modes.index(m) for m in modes if m in side]
    cols = [modes.index(m) for m in modes if m not in side]
    matrix = np.transpose(full, rows + cols).reshape(int(np.prod([full.shape[i] for i in rows])), -1)
    sigma = np.linalg.svd(matrix, compute_uv=False)
    r = net.bonds[bond]
    best = np.sqrt(np.sum(sigma[r - 1:] ** 2))
    lost = np.linalg.norm(np.asarray(shrink(same, bond).to_tensor()) - full)
    assert lost == pytest.approx(best, rel=1e-6, abs=1e-9 * np.linalg.norm(full))
    assert np.linalg.norm(np.asarray(shrink(net, bond).to_tensor()) - full) >= lost * (1 - 1e-6)


def _side(net: tnmars.Network, bond: str) -> set[str]:
    """The open modes on the side of ``bond``'s first core."""
    first = net.terms_with(bond)[0]
    seen, frontier = {first}, [first]
    while frontier:
        k = frontier.pop()
        for b in net.inputs[k]:
            if b in net.bonds and b != bond:
                for other in net.terms_with(b):
                    if other not in seen:
                        seen.add(other)
                        frontier.append(other)
    return {c for k in seen for c in net.inputs[k] if c in net.output}


def test_canonical_form_leaves_a_ring_or_a_hyperedge_as_it_is():
    ring = tnmars.Network.tr((3, 4, 5), (2, 2, 2), seed=0)
    cp = tnmars.Network.cp((3, 4, 5), 2, seed=0)
    assert canonical_towards(ring, next(iter(ring.bonds))) is ring
    assert canonical_towards(cp, next(iter(cp.bonds))) is cp


def test_a_tt_plus_a_large_constant_drops_an_index_at_the_cost_of_its_cut():
    """What the centred fit needs: a TT plus 1e7 (the constant in the first core) lost 2.4e7
    of squared error to a plain shrink of its second bond; in canonical form it costs the
    cut's smallest singular value, as without the constant."""
    net = tnmars.Network.tt((6, 7, 8), (2, 2), seed=0)
    both = plus_constant(net, 1e7)
    full = np.asarray(both.to_tensor())
    for bond, shape in (("A", (6, 56)), ("B", (42, 8))):
        sigma = np.linalg.svd(full.reshape(shape), compute_uv=False)
        lost = np.linalg.norm(np.asarray(shrink(canonical_towards(both, bond), bond).to_tensor()) - full)
        assert lost == pytest.approx(sigma[2], rel=1e-4)
        assert sigma[2] < 10 * np.linalg.norm(np.asarray(net.to_tensor()))
    plain = np.linalg.norm(np.asarray(shrink(both, "B").to_tensor()) - full)
    assert plain > 1e3 * np.linalg.norm(np.asarray(net.to_tensor()))


def test_a_structure_search_far_from_zero_finds_the_structure_it_finds_near_it():
    """A TT 6x7x8x5 (2, 3, 2) plus 1e7 gave no edge at all (rank 1 everywhere, warned), then,
    fitted without its mean with the constant on every bond, the fully connected network (492
    parameters); the constant on a spanning tree keeps the chain: (3, 4, 3), 213 parameters."""
    truth = np.asarray(tnmars.Network.tt((6, 7, 8, 5), (2, 3, 2), seed=1).to_tensor())
    truth = truth / truth.std()
    y = truth + 0.01 * np.random.default_rng(2).standard_normal(truth.shape) + 1e7
    found = tnmars.search(y, progress=False)
    assert found.topology == tnmars.search(y - y.mean(), progress=False).topology
    assert sorted(found.edges.values()) == [3, 3, 4]
    assert _error_on_deviations(found.network, y) < 0.011


def test_a_completion_a_thousand_spreads_from_zero_is_not_left_where_masked_refits_stall():
    """A Tucker (3, 4, 2) on 20^3 with 1% noise plus 1e3 times its spread, 40% observed, walked
    down from the spectral start to (6, 9, 8) and stopped (objective -34,356; held-out error
    0.0137 against the deviations), silently, where (4, 5, 3) is better by 1,334 nats (0.0105):
    masked refits converge slowly that far from zero. Completions are fitted both ways from
    COMPLETION_CENTRE_FROM spreads. (Since the masked updates are solved slice by slice, not by
    CG, the fit as given reaches (4, 5, 3) too, at the same error: which of the two the criterion
    keeps is no longer asserted.)"""
    truth = np.asarray(tnmars.Network.tucker((20, 20, 20), (3, 4, 2), seed=2).to_tensor())
    truth = truth / truth.std()
    y = truth + 0.01 * np.random.default_rng(2).standard_normal(truth.shape)
    observed = np.random.default_rng(102).random(y.shape) < 0.4
    res = tnmars.fit(y + 1e3, "tucker", observed=observed, progress=False)
    assert res.ranks == (4, 5, 3) and "fitted_without_mean" in res.settings["offset"]
    missing = ~observed
    error = np.linalg.norm((np.asarray(res.network.to_tensor()) - y - 1e3)[missing])
    assert error / np.linalg.norm(y[missing] - y.mean()) < 0.011


def test_a_failure_of_the_fit_without_the_mean_leaves_the_fit_as_given_with_a_warning(monkeypatch):
    from tnmars.fitting import api

    real = api.fit
    calls = []

    def failing_second(data, network="tucker", **options):
        calls.append(options.get("max_rank"))
        if len(calls) == 3:  # (the caller's fit, the fit as given, then the fit without the mean)
            raise MemoryError("no room")
        return real(data, network, **options)

    monkeypatch.setattr(api, "fit", failing_second)
    with pytest.warns(RuntimeWarning, match=r"fit without their mean failed \(MemoryError: no room\)"):
        res = failing_second(_tucker_data() + 1e7, "tucker", progress=False)
    assert not res.settings["offset"]["fitted_without_mean"] and len(calls) == 3


def test_a_completion_that_extrapolates_loses_to_one_that_does_not():
    """Held-out check: a noiseless TT (3, 3, 3) on 3x3x2x4 plus 2 spreads, 25% observed: both fits
    poor, the criterion on the observed entries kept the fit without the mean, 436 times the
    deviations off at the missing entries, over the fit as given at 1.6. As in the walks, a
    completion that extrapolates loses to one that does not."""
    import warnings as _warnings

    x = np.asarray(tnmars.Network.tt((3, 3, 2, 4), (3, 3, 3), seed=32).to_tensor())
    observed = np.random.default_rng(60_032).random(x.shape) < 0.25
    y = x + 2 * x.std()
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        res = tnmars.fit(y, "tt", observed=observed, seed=0, progress=False)
    missing = ~observed
    error = np.linalg.norm((np.asarray(res.network.to_tensor()) - y)[missing])
    assert error / np.linalg.norm((x - x.mean())[missing]) < 2.0
    assert not res.settings["offset"]["fitted_without_mean"]


def test_data_a_trillion_spreads_from_zero_are_not_read_as_a_constant():
    """Outside probe: data 1e13 times their spread from zero (float64 still holds their
    deviations to 1e-3) were read as a constant, rank 1, no warning, 99.8% of the deviations off.
    They are fitted without their mean now, at the noise's error; past what float64 holds (1e15
    spreads: each entry rounded to 0.1 of the spread) the fit says so."""
    y = _tucker_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = tnmars.fit(100 * y + 1e15, "tucker", progress=False)
    assert res.settings["offset"]["fitted_without_mean"]
    assert _error_on_deviations(res.network, 100 * y + 1e15) < 0.015
    with pytest.warns(RuntimeWarning, match=r"float64 storage rounds their deviations.*about 0.1\d of that spread"):
        tnmars.fit(y + 1e15, "tucker", progress=False)
    with warnings.catch_warnings():  # (a constant, however far from zero, has nothing to resolve)
        warnings.simplefilter("error")
        assert tnmars.fit(np.full((5, 6, 7), 1e15), "tucker", progress=False).ranks == (1, 1, 1)


def test_float32_data_far_from_zero_come_back_as_well_as_float32_holds_them():
    """Outside probe: float32 data 1e6 times their spread from zero came back 6.7% off their
    deviations, where the fit of their deviations plus the mean, stored in float32, is 2.4% off:
    the repeat of the mean was dropped in float64, in a canonical form whose cores float32
    rounds more coarsely. Each network is now judged as returned; the data's own rounding (0.06
    of their spread) is said."""
    y = _tucker_data()
    x = (y + 1e6).astype(np.float32)
    x64 = x.astype(np.float64)
    with pytest.warns(RuntimeWarning, match=r"float32 storage rounds their deviations.*keep them in float64"):
        res = tnmars.fit(x, "tucker", progress=False)
    assert res.network.dtype == "float32"
    centred = tnmars.fit(x64 - x64.mean(), "tucker", progress=False)
    by_hand = plus_constant(centred.network, x64.mean()).to(dtype="float32")
    error, floor = _error_on_deviations(res.network, x64), _error_on_deviations(by_hand, x64)
    assert error < 1.1 * floor, (error, floor)


def test_a_kept_fit_without_the_mean_reports_the_callers_settings_and_says_whose_warnings_it_gives():
    """Outside probe: with the fit without the mean kept, ``settings`` held that fit's caps and
    ``min_rank`` (one lower: max_ranks {A: 3, ...} for a call with max_rank=4, a result at 4),
    and its warnings spoke of those caps ("one more index on bond 'B' (at 3)") and of errors
    against the deviations, unmarked. The settings are the caller's now, and those warnings and
    diagnostics say which fit they are of."""
    y = _tucker_data() + 1e6
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        res = tnmars.fit(y, "tucker", max_rank=(4, 5, 3), min_rank=2, progress=False)
    assert res.settings["offset"]["fitted_without_mean"]
    assert res.settings["max_ranks"] == {"A": 4, "B": 5, "C": 3} and res.settings["min_rank"] == 2
    assert res.ranks == (4, 5, 3)
    capped = [str(w.message) for w in heard if "stopped by max_rank" in str(w.message)]
    assert capped and all("said of the fit of the data without their mean" in m for m in capped)
    assert res.diagnostics and all("said of the fit of the data without their mean" in d for d in res.diagnostics)


@pytest.mark.parametrize("shape", [(5, 1, 1, 4), (1, 6, 1, 5), (4, 1, 3)])
def test_bonds_of_a_fit_far_from_zero_stay_feasible(shape):
    """Outside probe: a TT on (5, 1, 1, 4) plus 1e6 came back with a bond of 2 between two modes
    of size 1 (its cores (1, 1, 2) and (2, 1, 1)): dropping the mean's repeat on one bond left
    its neighbour useless, and nothing shrank it."""
    rng = np.random.default_rng(2)
    x = np.sin(np.linspace(0, 3, int(np.prod(shape)))).reshape(shape) + 1e-3 * rng.standard_normal(shape)
    from tnmars.fitting.search import feasible_ranks
    for offset in (1e6, 1e8):
        net = tnmars.fit(x + offset, "tt", progress=False).network
        caps = feasible_ranks(net.spec, net.dims)
        assert all(r <= caps[b] for b, r in net.bonds.items()), (offset, net.bonds, caps)


def test_the_full_network_of_a_fit_without_the_mean_stays_within_the_caps():
    """Outside probe: ``full_network`` (the relaxation's network at its caps) plus the mean had
    bonds of 13 on 12x12x12 data, one past what its cores can use."""
    truth = np.asarray(tnmars.Network.tucker((8, 9, 7), (3, 4, 2), seed=0).to_tensor())
    x = truth / truth.std() + 0.01 * np.random.default_rng(0).standard_normal(truth.shape) + 1e6
    res = tnmars.fit(x, "tucker", prior="bernoulli", relaxation={"steps": 200}, progress=False)
    assert res.settings["offset"]["fitted_without_mean"]
    full = res.full_network
    assert all(full.bonds[b] <= m for b, m in zip(res.bonds, res.max_ranks)), (full.bonds, res.max_ranks)
    assert all(full.bonds[b] <= full.dims[i] for b, i in zip("ABC", "abc"))
