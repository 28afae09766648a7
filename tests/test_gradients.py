"""Environment gradients (NumPy/CuPy training) against torch autograd and finite differences."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnmars
from tnmars import masks as mars
from tnmars.backends import get_backend
from tnmars.gradients import environment, logit_gradients, vjp
from tnmars.testing.strategies import networks

NP = get_backend("numpy")


def _problem(data, net):
    """A random target, optional observed mask and optional soft masks for ``net``."""
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    target = rng.standard_normal(net.shape)
    weights = (rng.random(net.shape) < 0.6).astype(float) if data.draw(st.booleans()) else np.ones(net.shape)
    masks = {b: rng.random(n) for b, n in net.bonds.items()} if data.draw(st.booleans()) else None
    return target, weights, masks


def _loss(t, target, weights):
    r = (t - target) * weights
    return 0.5 * (r * r).sum()


@settings(max_examples=40)
@given(st.data())
def test_environment_gradients_equal_torch_autograd(data):
    net = data.draw(networks(max_cores=6))
    target, weights, masks = _problem(data, net)
    out, grads, mask_grads = vjp(net, lambda t: (t - target) * weights, masks)
    np.testing.assert_allclose(out, net.to_tensor(masks), rtol=1e-12, atol=1e-12)

    cores = [torch.tensor(c, requires_grad=True) for c in net.cores]
    tmasks = None if masks is None else {b: torch.tensor(m, requires_grad=True) for b, m in masks.items()}
    t = tnmars.Network(net.spec, cores=cores).to_tensor(tmasks)
    _loss(t, torch.tensor(target), torch.tensor(weights)).backward()
    for g, c in zip(grads, cores):
        np.testing.assert_allclose(g, c.grad.numpy(), rtol=1e-9, atol=1e-10)
    if masks is None:
        assert mask_grads == {}
    else:
        for b in masks:
            np.testing.assert_allclose(mask_grads[b], tmasks[b].grad.numpy(), rtol=1e-9, atol=1e-10)


@settings(max_examples=25)
@given(st.data())
def test_environment_gradients_equal_central_finite_differences(data):
    net = data.draw(networks(max_cores=5, max_dim=2, max_rank=2))
    target, weights, masks = _problem(data, net)
    _, grads, mask_grads = vjp(net, lambda t: (t - target) * weights, masks)
    h = 1e-6

    def loss_with(cores, m):
        return _loss(net.with_cores(cores).to_tensor(m), target, weights)

    for k, core in enumerate(net.cores):
        flat = core.reshape(-1)
        for i in range(flat.size):
            plus, minus = [c.copy() for c in net.cores], [c.copy() for c in net.cores]
            plus[k].reshape(-1)[i] += h
            minus[k].reshape(-1)[i] -= h
            fd = (loss_with(plus, masks) - loss_with(minus, masks)) / (2 * h)
            assert grads[k].reshape(-1)[i] == pytest.approx(fd, rel=1e-5, abs=1e-6)
    for b, m in (masks or {}).items():
        for i in range(m.size):
            mp = {**masks, b: m.copy()}
            mm = {**masks, b: m.copy()}
            mp[b][i] += h
            mm[b][i] -= h
            fd = (loss_with(net.cores, mp) - loss_with(net.cores, mm)) / (2 * h)
            assert mask_grads[b][i] == pytest.approx(fd, rel=1e-5, abs=1e-6)


@settings(max_examples=30)
@given(st.data())
def test_literal_environment_equals_the_reverse_sweep(data):
    """dL/dM_k = contraction of the rest of the (masked) network with dL/dT, for every core."""
    net = data.draw(networks(max_cores=6))
    target, weights, masks = _problem(data, net)
    out, grads, _ = vjp(net, lambda t: (t - target) * weights, masks)
    g_out = (out - target) * weights
    masked = net.masked_cores(masks)
    for k in range(net.num_cores):
        env = environment(net, k, g_out, masks)
        # un-mask the reverse-sweep gradient: dL/dG_k = dL/dM_k * (masks on core k)
        expected = env
        for b in (masks or {}):
            core, axis = net.mask_site(b)
            if core == k:
                view = [1] * env.ndim
                view[axis] = -1
                expected = expected * masks[b].reshape(view)
        np.testing.assert_allclose(grads[k], expected, rtol=1e-9, atol=1e-10)
        assert env.shape == masked[k].shape


def test_logit_gradients_equal_torch_autograd_through_the_sampler():
    net = tnmars.Network.cp((3, 4, 5), 4, seed=1)
    rng = np.random.default_rng(2)
    target = rng.standard_normal(net.shape)
    logits = {"A": rng.normal(0, 1, 4)}
    noise = {"A": rng.random(4)}
    temp = 0.5
    samples, ds = {}, {}
    samples["A"], ds["A"] = mars.hard_concrete_grad(logits["A"], temp, noise["A"], NP)
    _, _, gm = vjp(net, lambda t: t - target, samples)
    g_logits = logit_gradients(gm, ds)

    tb = get_backend("torch")
    tl = torch.tensor(logits["A"], requires_grad=True)
    s = mars.hard_concrete(tl, temp, torch.tensor(noise["A"]), tb)
    t = tnmars.Network(net.spec, cores=[torch.tensor(c) for c in net.cores]).to_tensor({"A": s})
    (0.5 * ((t - torch.tensor(target)) ** 2).sum()).backward()
    np.testing.assert_allclose(g_logits["A"], tl.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_gradients_through_a_closed_bond_are_finite_zeros_for_its_neighbours():
    net = tnmars.Network.tt((3, 4, 5), 2, seed=0).prune({"A": []})
    out, grads, _ = vjp(net, lambda t: t - 1.0)
    assert net.ranks == (0, 2)
    np.testing.assert_array_equal(out, 0.0)
    assert [g.shape for g in grads] == [tuple(c.shape) for c in net.cores]
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_array_equal(grads[2], 0.0)  # the last core only sees the zero network


def test_environment_rejects_a_bad_core_index():
    net = tnmars.Network.cp((3, 4), 2, seed=0)
    with pytest.raises(ValueError, match="core"):
        environment(net, 5, np.ones(net.shape))


def test_environment_of_a_core_with_a_leg_summed_in_it_alone_is_broadcast_along_it():
    """Found by a fuzzer: a core carrying a summed size-1 leg (tntorch's TT boundary ranks,
    ``'xaA,AbB,Bcy->abc'``) made ``environment`` fail inside the planner ("output 'xaA' must
    name distinct indices"); the environment is constant along such a leg."""
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(s) for s in [(1, 3, 2), (2, 4, 2), (2, 5, 1)]]
    net = tnmars.Network("xaA,AbB,Bcy->abc", cores=cores)
    g = rng.standard_normal(net.shape)
    leaves = [torch.tensor(c, requires_grad=True) for c in cores]
    (torch.einsum("xaA,AbB,Bcy->abc", *leaves) * torch.tensor(g)).sum().backward()
    for k, leaf in enumerate(leaves):
        np.testing.assert_allclose(environment(net, k, g), leaf.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert environment(net.to("torch"), 0, torch.tensor(g)).shape == (1, 3, 2)
