"""MARS mask maths: the hard-concrete sampler, MAP read-out and pruning laws."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tnmars import masks as mars
from tnmars.backends import get_backend
from tnmars.testing.strategies import networks

NP = get_backend("numpy")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("logit,temperature", [(-1.75, 0.1), (0.0, 0.1), (-1.75, 0.01), (0.8, 0.05), (2.5, 0.1)])
def test_sampler_matches_closed_form_endpoint_probabilities(backend, logit, temperature):
    be = get_backend(backend)
    n = 200_000
    rng = be.rng(1234)
    logits = be.asarray(np.full(n, logit))
    s = be.to_numpy(mars.hard_concrete(logits, temperature, be.uniform(rng, (n,), "float64"), be))
    p0, p1 = mars.sample_probabilities(logit, temperature)
    # the closed forms of the notes: sigmoid(-l - T ln 11) and sigmoid(l - T ln 11)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert p0 == pytest.approx(sig(-logit - temperature * math.log(11)))
    assert p1 == pytest.approx(sig(logit - temperature * math.log(11)))
    for emp, exact in ((np.mean(s == 0.0), p0), (np.mean(s == 1.0), p1)):
        se = math.sqrt(exact * (1 - exact) / n)
        assert abs(emp - exact) < 5 * se + 1e-12, (emp, exact)
    assert np.all((s >= 0) & (s <= 1))


def test_hard_concrete_grad_agrees_with_the_sample_and_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, 400)
    noise = rng.random(400)
    temp = 0.2
    s, ds = mars.hard_concrete_grad(logits, temp, noise, NP)
    np.testing.assert_array_equal(s, mars.hard_concrete(logits, temp, noise, NP))
    h = 1e-6
    fd = (mars.hard_concrete(logits + h, temp, noise, NP) - mars.hard_concrete(logits - h, temp, noise, NP)) / (2 * h)
    inside = (s > 1e-4) & (s < 1 - 1e-4)  # away from the clamp's kinks
    np.testing.assert_allclose(ds[inside], fd[inside], rtol=1e-5, atol=1e-8)
    assert np.all(ds[(s == 0) | (s == 1)] == 0)


def test_map_mask_is_phi_above_one_half():
    logits = np.array([-2.0, -1e-9, 0.0, 1e-9, 3.0])
    np.testing.assert_array_equal(mars.map_mask(logits, NP), [0, 0, 0, 1, 1])
    phi = mars.probabilities(logits, NP)
    np.testing.assert_array_equal(mars.map_mask(logits, NP) == 1, phi > 0.5)


def test_init_logits_have_the_papers_distribution():
    out = mars.init_logits({"A": 20000}, -0.5, NP, seed=0)
    assert out["A"].mean() == pytest.approx(-0.5, abs=1e-3)
    assert out["A"].std() == pytest.approx(0.01, rel=0.05)


def test_priors_have_their_closed_forms():
    logits = np.array([0.0, 0.0])
    # phi = 1/2: sum of 0.5 log pi + 0.5 log(1 - pi) over two entries
    assert mars.bernoulli_log_prior(logits, 0.01, NP) == pytest.approx(math.log(0.01) + math.log(0.99))
    cores = [np.ones((2, 3)), 2 * np.ones(4)]
    assert mars.gaussian_log_prior(cores, NP) == pytest.approx(-(6 + 16) / 200)


@pytest.mark.parametrize("pi", [0.0, -0.1, 0.51, 1.0, float("nan")])
def test_bad_pi_is_refused(pi):
    with pytest.raises(ValueError, match="pi"):
        mars.check_pi(pi)


def test_temperature_schedule_is_exponential_from_start_to_end():
    sched = mars.TemperatureSchedule(0.1, 0.01, 10)
    values = [sched(k) for k in range(11)]
    ratios = np.array(values[1:]) / np.array(values[:-1])
    np.testing.assert_allclose(ratios, ratios[0])
    assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(0.01)


@given(st.data())
def test_map_masks_from_logits_contract_like_the_pruned_network(data):
    """The MARS read-out: masking with MAP masks equals pruning by phi > 0.5 (numpy, torch)."""
    backend = data.draw(st.sampled_from(["numpy", "torch"]))
    net = data.draw(networks(backend=backend, max_cores=5))
    be = net.backend_impl
    logits = {b: be.asarray(np.array(data.draw(st.lists(st.floats(-3, 3).filter(lambda v: v != 0), min_size=n,
                                                                   max_size=n)))) for b, n in net.bonds.items()}
    masks = {b: mars.map_mask(lg, be) for b, lg in logits.items()}
    keep = {b: be.to_numpy(lg) > 0 for b, lg in logits.items()}
    pruned = net.prune(keep)
    assert pruned.ranks == tuple(int(keep[b].sum()) for b in net.bonds)
    np.testing.assert_allclose(be.to_numpy(pruned.to_tensor()), be.to_numpy(net.to_tensor(masks)),
                               rtol=1e-10, atol=1e-12)


def test_all_closed_masks_give_a_zero_network_without_crashing():
    import tnmars

    net = tnmars.Network.tucker((3, 4, 5), 2, seed=0)
    pruned = net.prune({b: np.zeros(n, dtype=bool) for b, n in net.bonds.items()})
    assert pruned.ranks == (0, 0, 0)
    assert pruned.num_params == 3 * 0 + 4 * 0 + 5 * 0
    np.testing.assert_array_equal(pruned.to_tensor(), np.zeros((3, 4, 5)))
    assert "0" in pruned.summary()


# ------------------------------------------------------------------------- the Occam (BIC) prior
def _enumerated_expected_params(net, phi):
    """E_q[P(r(m))] by brute force: every 0/1 mask configuration, weighted by its probability."""
    import itertools

    bonds = list(net.bonds)
    sizes = [net.bonds[b] for b in bonds]
    flat_phi = np.concatenate([phi[b] for b in bonds])
    total = 0.0
    for bits in itertools.product((0, 1), repeat=int(sum(sizes))):
        bits = np.array(bits)
        weight = float(np.prod(np.where(bits == 1, flat_phi, 1 - flat_phi)))
        ranks, start = {}, 0
        for b, n in zip(bonds, sizes):
            ranks[b] = int(bits[start:start + n].sum())
            start += n
        total += weight * net.num_params_at(ranks)
    return total


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_expected_parameter_count_is_exact_for_independent_masks(data):
    """E_q[P(r(m))] = P(E[r]) with E[r_b] = sum_j phi_bj, checked by enumerating every mask
    configuration on small random networks (all strategy kinds, CP's hyperedge included)."""
    import tnmars

    if data.draw(st.booleans()):
        net = data.draw(networks(max_cores=4))
    else:  # CP: one bond shared by every factor
        net = tnmars.Network.cp(tuple(data.draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))),
                                data.draw(st.integers(1, 4)))
    assume(0 < sum(net.bonds.values()) <= 10)
    logits = {b: np.array(data.draw(st.lists(st.floats(-4, 4), min_size=n, max_size=n))) for b, n in net.bonds.items()}
    phi = {b: 1 / (1 + np.exp(-lg)) for b, lg in logits.items()}
    want = _enumerated_expected_params(net, phi)
    got = float(mars.expected_num_params(net, logits, NP))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    # and at 0/1 masks it is the parameter count of the pruned network
    keep = {b: lg > 0 for b, lg in logits.items()}
    hard = {b: np.where(k, 50.0, -50.0) for b, k in keep.items()}
    assert float(mars.expected_num_params(net, hard, NP)) == pytest.approx(net.prune(keep).num_params, abs=1e-9)


def test_a_non_multilinear_count_would_be_caught_by_the_enumeration():
    """The enumeration can tell: for a count quadratic in one rank, E[r^2] != E[r]^2."""
    phi = np.array([0.3, 0.6])
    configs = [(a, b) for a in (0, 1) for b in (0, 1)]
    weights = [(phi[0] if a else 1 - phi[0]) * (phi[1] if b else 1 - phi[1]) for a, b in configs]
    e_r2 = sum(w * (a + b) ** 2 for w, (a, b) in zip(weights, configs))
    assert e_r2 == pytest.approx(phi.sum() ** 2 + (phi * (1 - phi)).sum())
    assert e_r2 != pytest.approx(phi.sum() ** 2)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_bic_prior_gradient_matches_finite_differences_and_torch_autograd(data):
    import torch

    import tnmars

    net = data.draw(st.one_of(networks(max_cores=4), st.builds(
        lambda shape, r: tnmars.Network.cp(tuple(shape), r),
        st.lists(st.integers(1, 5), min_size=2, max_size=4), st.integers(1, 5))))
    logits = {b: np.array(data.draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n))) for b, n in net.bonds.items()}
    n_obs, strength = data.draw(st.integers(2, 10_000)), data.draw(st.floats(0.1, 3.0))
    grad = mars.bic_log_prior_grad(net, logits, n_obs, NP, strength)
    f = lambda lg: float(mars.bic_log_prior(net, lg, n_obs, NP, strength))  # noqa: E731
    h = 1e-6
    for b, lg in logits.items():
        for j in range(len(lg)):
            up = {k: v.copy() for k, v in logits.items()}
            dn = {k: v.copy() for k, v in logits.items()}
            up[b][j] += h
            dn[b][j] -= h
            fd = (f(up) - f(dn)) / (2 * h)
            assert grad[b][j] == pytest.approx(fd, rel=1e-5, abs=1e-6 * (1 + abs(fd)))
    tb = get_backend("torch")
    tl = {b: torch.tensor(lg, requires_grad=True) for b, lg in logits.items()}
    value = mars.bic_log_prior(net, tl, n_obs, tb, strength)
    assert float(value.detach()) == pytest.approx(f(logits), rel=1e-12)
    value.backward()
    for b in logits:
        np.testing.assert_allclose(tl[b].grad.numpy(), grad[b], rtol=1e-10, atol=1e-12)


def test_bic_prior_charges_half_log_n_per_parameter():
    import tnmars

    net = tnmars.Network.tucker((4, 5, 6), (2, 3, 2))
    open_ = {b: np.full(n, 40.0) for b, n in net.bonds.items()}
    assert float(mars.bic_log_prior(net, open_, 1000, NP)) == pytest.approx(-0.5 * math.log(1000) * net.num_params)
    assert float(mars.bic_log_prior(net, open_, 1000, NP, strength=2.0)) == pytest.approx(
        -math.log(1000) * net.num_params)
    with pytest.raises(ValueError, match="observation"):
        mars.bic_penalty(0)


def test_bernoulli_prior_gradient_matches_finite_differences():
    logits = np.array([-2.0, 0.3, 1.5])
    g = mars.bernoulli_log_prior_grad(logits, 0.01, NP)
    h = 1e-6
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        fd = (mars.bernoulli_log_prior(logits + e, 0.01, NP) - mars.bernoulli_log_prior(logits - e, 0.01, NP)) / (2 * h)
        assert g[j] == pytest.approx(fd, rel=1e-6)
