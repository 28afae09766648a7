"""tnmars.nn.occam_prune: BIC backward elimination of MARS-kept rank indices after training."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tnmars.nn as tnn
from tnmars.nn.masks import hard_concrete_sample
from tnmars.nn.occam import CLOSED_LOGIT, OccamReport

D, C, N, TRUE, SURPLUS = 16, 5, 2000, (0, 1), (2, 3, 4)


def teacher_problem(fit_steps: int = 100, seed: int = 0):
    """A LowRankLinear (rank 6) on labels from a rank-2 teacher: MAP masks open on the 2 true
    indices (0, 1, which hold the teacher) and 3 surplus ones (2, 3, 4: small random columns),
    index 5 closed; then ``fit_steps`` Adam steps on the cores at the MAP masks."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(D, 2, generator=g), torch.randn(2, C, generator=g)
    X = torch.randn(N, D, generator=g)
    y = (X @ u @ v).argmax(1)
    torch.manual_seed(seed)
    layer = tnn.LowRankLinear(D, C, rank=6, bias=False)
    with torch.no_grad():
        layer.masks.logits.copy_(torch.tensor([3.0, 2.0, 1.0, 1.5, 0.5, -3.0]))
        layer.cores[0].copy_(torch.cat([u, 0.1 * torch.randn(D, 4, generator=g)], 1))
        layer.cores[1].copy_(torch.cat([3 * v, 0.1 * torch.randn(4, C, generator=g)], 0))
    model = nn.Sequential(layer)
    model.eval()
    opt = torch.optim.Adam(layer.cores.parameters(), lr=0.01)
    for _ in range(fit_steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    model.train()
    return model, X, y


def closing_raises_nll(model, nll, layer, index) -> float:
    """nll(with ``index`` closed) - nll(now), measured directly."""
    model.eval()
    base = nll(model)
    with torch.no_grad():
        old = layer.masks.logits[index].item()
        layer.masks.logits[index] = CLOSED_LOGIT
        closed = nll(model)
        layer.masks.logits[index] = old
    return closed - base


def test_removes_the_surplus_and_keeps_the_true_indices():
    model, X, y = teacher_problem()
    layer = model[0]
    before = layer.masks.logits.detach().clone()
    nll = tnn.classification_nll(X, y)
    report = tnn.occam_prune(model, nll, N, gauge="as trained")  # (the indices as the teacher placed them)
    assert isinstance(report, OccamReport)
    assert report.ranks_before == {"0": {"A": 5}} and report.ranks_after == {"0": {"A": 2}}
    assert sorted(report.bonds[0].closed) == list(SURPLUS)
    logits = layer.masks.logits.detach()
    assert torch.equal(logits[list(TRUE)], before[list(TRUE)])  # kept ones untouched
    assert logits[5] == before[5]  # a closed index is not a candidate
    assert torch.all(logits[list(SURPLUS)] == CLOSED_LOGIT)
    # the surplus indices help the fit a little (positive delta) but not by (1/2) ln N (D + C)
    penalty = 0.5 * math.log(N) * (D + C)
    assert all(0 < c.delta < penalty and c.penalty == pytest.approx(penalty) for c in report.closures)
    assert min(report.bonds[0].kept_deltas.values()) > penalty
    first = report.bonds[0].first_deltas  # every index kept at the start, closed alone
    assert sorted(first) == [0, 1, 2, 3, 4] and first[report.closures[0].index] == report.closures[0].delta
    assert min(first[i] for i in TRUE) > penalty > max(first[i] for i in SURPLUS)
    model.eval()
    assert report.nll_after == pytest.approx(nll(model), rel=1e-6)
    assert report.nll_after == pytest.approx(report.nll_before + sum(c.delta for c in report.closures), rel=1e-6)
    assert report.bic_after == pytest.approx(report.nll_after + penalty * 2)
    assert report.bic_before == pytest.approx(report.nll_before + penalty * 5)
    # one base evaluation, then 5 + 4 + 3 candidates in the closing rounds and 2 in the final one
    assert report.evaluations == 1 + 5 + 4 + 3 + 2
    assert not report.interrupted and report.skipped == []


def test_strength_zero_closes_only_indices_whose_closure_does_not_raise_the_nll():
    model, X, y = teacher_problem(fit_steps=100)
    with torch.no_grad():
        model[0].cores[0][:, 4] = 0.0  # a dead index: closing it leaves the nll exactly as it is
    nll = tnn.classification_nll(X, y)
    report = tnn.occam_prune(model, nll, N, strength=0.0)
    # the dead index goes; surplus indices 2 and 3 help the fit a bit: kept without a penalty
    assert [(c.index, c.delta) for c in report.closures] == [(4, 0.0)]
    assert report.ranks_after == {"0": {"A": 4}}
    # without the fit, the surplus columns are noise: closing them lowers the nll
    model, X, y = teacher_problem(fit_steps=0)
    nll = tnn.classification_nll(X, y)
    report = tnn.occam_prune(model, nll, N, strength=0.0)
    assert report.closures and all(c.delta <= 0 and c.penalty == 0 for c in report.closures)
    layer = model[0]
    kept = torch.nonzero(layer.masks.logits.detach() > 0).flatten().tolist()
    assert set(TRUE) <= set(kept)
    assert all(closing_raises_nll(model, nll, layer, i) > 0 for i in kept)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("min_rank", [0, 1])
def test_larger_strength_prunes_at_least_as_much_down_to_min_rank(min_rank):
    ranks = []
    for strength in (0.0, 1.0, 1e6):
        model, X, y = teacher_problem()
        model[0].masks.min_rank = min_rank
        report = tnn.occam_prune(model, tnn.classification_nll(X, y), N, strength=strength, max_nll_rise=None)
        ranks.append(report.ranks_after["0"]["A"])
    assert ranks == sorted(ranks, reverse=True) and ranks[0] == 5 and ranks[-1] == min_rank
    model.eval()
    if min_rank == 0:
        assert torch.count_nonzero(model(X[:10])) == 0  # rank 0: the output is the (absent) bias
    else:
        assert torch.count_nonzero(model(X[:10])) > 0


def test_training_flags_are_restored():
    model, X, y = teacher_problem(fit_steps=0)
    model = nn.Sequential(model[0], nn.Dropout(0.5))
    model.train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    seen = []

    def nll(m):
        seen.append([x.training for x in m.modules()])
        return tnn.classification_nll(X, y)(m)

    tnn.occam_prune(model, nll, N)
    assert [m.training for m in model.modules()] == flags
    assert seen and all(not any(s) for s in seen)  # every evaluation ran in eval mode (MAP masks)


def test_an_error_restores_logits_and_flags():
    model, X, y = teacher_problem(fit_steps=0)
    layer = model[0]
    before = layer.masks.logits.detach().clone()
    inner = tnn.classification_nll(X, y)
    calls = []

    def nll(m):
        calls.append(1)
        if len(calls) == 9:  # in the second round, after one closure
            return float("nan")
        return inner(m)

    with pytest.raises(ValueError, match="non-finite"):
        tnn.occam_prune(model, nll, N)
    assert torch.equal(layer.masks.logits.detach(), before)
    assert model.training and layer.training


def test_ctrl_c_keeps_what_was_closed():
    model, X, y = teacher_problem()
    layer = model[0]
    inner = tnn.classification_nll(X, y)
    calls = []

    def nll(m):
        calls.append(1)
        if len(calls) == 1 + 5 + 2:  # second round, second candidate
            raise KeyboardInterrupt
        return inner(m)

    report = tnn.occam_prune(model, nll, N)
    assert report.interrupted and len(report.closures) == 1
    assert layer.selected_ranks() == {"A": 4}  # the first closure is kept, the tested index restored
    assert model.training
    model.eval()
    assert report.nll_after == pytest.approx(inner(model), rel=1e-6)
    assert "interrupted" in str(report)


def test_report_text_names_layers_bonds_and_deltas():
    model, X, y = teacher_problem()
    model = nn.Sequential(model[0], nn.Identity(), tnn.LowRankLinear(C, 3, rank=2, bias=True, alpha=-3.0, min_rank=0))
    report = tnn.occam_prune(model, tnn.classification_nll(X, y % 3), N)
    assert report.ranks_before == {"0": {"A": 5}, "2": {"A": 0}}  # the closed second layer only gets rows
    text = str(report)
    assert "| 0 | A | 5 |" in text and "| 2 | A | 0 | 0 |" in text
    for c in report.closures:
        assert f"{c.index}: {c.delta:+.1f}" in text
    assert f"{report.evaluations} nll evaluations" in text
    assert report.table() in text


def test_invalid_arguments_are_named():
    model, X, y = teacher_problem(fit_steps=0)
    nll = tnn.classification_nll(X, y)
    for bad in (0, 0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="num_train"):
            tnn.occam_prune(model, nll, bad)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="strength"):
            tnn.occam_prune(model, nll, N, strength=bad)
    with pytest.raises(TypeError, match="num_train"):
        tnn.occam_prune(model, nll, "2000")
    with pytest.raises(ValueError, match="non-finite"):
        tnn.occam_prune(model, lambda m: float("inf"), N)
    with pytest.raises(TypeError, match="nll"):
        tnn.occam_prune(model, "nll", N)
    with pytest.raises(ValueError, match="no MARS layers"):
        tnn.occam_prune(nn.Linear(3, 2), nll, N)
    with pytest.raises(ValueError, match="no MARS layers"):
        tnn.occam_prune(nn.Sequential(tnn.LowRankLinear(4, 3, rank=2, mars=False)), nll, N)
    tnn.set_warmup(model, True)
    with pytest.raises(ValueError, match="warm-up"):
        tnn.occam_prune(model, nll, N)


def test_occam_refuses_a_tensorized_recurrent_matrix_in_warm_up():
    """In warm-up the recurrent matrix's masks are not applied: closing an index would leave the
    nll unchanged and every index would close; refused, as for layers."""
    torch.manual_seed(0)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = tnn.TanhRNN(3, 16, recurrent="tt", tt_rank=4, seed=0)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[:, -1])

    model = Classifier()
    X = torch.randn(50, 5, 3)
    y = (X.sum((1, 2)) > 0).long()
    tnn.set_warmup(model, True)
    before = dict(model.rnn.weight_tt.ranks)
    with pytest.raises(ValueError, match="'rnn.weight_tt' is in warm-up"):
        tnn.occam_prune(model, tnn.classification_nll(X, y), 50)
    assert dict(model.rnn.weight_tt.ranks) == before


def test_classification_nll_sums_cross_entropy_in_batches():
    torch.manual_seed(1)
    X, y = torch.randn(37, 6), torch.randint(0, 4, (37,))
    model = nn.Linear(6, 4)
    expected = F.cross_entropy(model(X), y, reduction="sum").item()
    for batch in (1, 5, 37, 4096):
        assert tnn.classification_nll(X, y, batch_size=batch)(model) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="same number of rows"):
        tnn.classification_nll(X, y[:-1])
    with pytest.raises(ValueError, match="batch_size"):
        tnn.classification_nll(X, y, batch_size=0)
    with pytest.raises(TypeError, match="torch tensors"):
        tnn.classification_nll(X.numpy(), y)


@settings(max_examples=20, deadline=None)
@given(temperature=st.floats(0.01, 2.5))
def test_a_closed_index_samples_exactly_zero(temperature):
    """Why further MARS training does not reopen a closed index: its hard-concrete sample is 0."""
    torch.manual_seed(0)
    logits = torch.full((20000,), CLOSED_LOGIT, requires_grad=True)
    sample = hard_concrete_sample(logits, temperature)
    assert torch.count_nonzero(sample) == 0
    sample.sum().backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_closed_indices_stay_closed_under_mars_training():
    model, X, y = teacher_problem()
    tnn.occam_prune(model, tnn.classification_nll(X, y), N)
    layer = model[0]
    loss_fn = tnn.MarsLoss(model, N)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        loss_fn(model(X[:256]), y[:256]).backward()
        opt.step()
    assert torch.all(layer.masks.logits.detach()[list(SURPLUS)] <= CLOSED_LOGIT)
    assert layer.selected_ranks() == {"A": 2}


def test_tt_recurrent_matrix_is_pruned_with_its_network_parameter_count():
    torch.manual_seed(0)
    W = tnn.TTRecurrentMatrix(16, rank=4, shape=(4, 4), alpha=3.0, seed=0)
    with torch.no_grad():
        target = W.matrix({"A": torch.tensor([1.0, 1.0, 0.0, 0.0])}).detach()
    model = nn.ModuleDict({"rec": W})

    def nll(m):  # a Gaussian nll (up to a constant) of observing the rank-2 target, noise 0.01
        return float(((m["rec"].matrix(m["rec"].current_masks()) - target) ** 2).sum() / (2 * 1e-4))

    # W's indices 2, 3 add error: closing them lowers the nll, so they go; 0 and 1 carry the target
    report = tnn.occam_prune(model, nll, num_train=256, gauge="as trained")
    assert report.ranks_before == {"rec": {"A": 4}} and report.ranks_after == {"rec": {"A": 2}}
    assert sorted(report.bonds[0].closed) == [2, 3]
    params = W.network().num_params_at
    assert report.bonds[0].penalty_before == pytest.approx(0.5 * math.log(256) * (params({"A": 4}) - params({"A": 3})))
    assert W.ranks == {"A": 2}


def test_tt_layer_penalties_follow_the_structure_and_no_kept_index_pays_at_the_end():
    torch.manual_seed(3)
    layer = tnn.TensorizedLinear(24, 12, format="tt", rank=3, in_shape=(2, 3, 4), out_shape=(2, 3, 2), alpha=2.0)
    model = nn.Sequential(layer, nn.Linear(12, 4))
    X, y = torch.randn(300, 24), torch.randint(0, 4, (300,))
    start = layer.selected_ranks()
    report = tnn.occam_prune(model, tnn.classification_nll(X, y), 300, strength=0.05, progress=True)
    unit = 0.05 * 0.5 * math.log(300)
    assert report.ranks_before == {"0": start} and len(report.bonds) == len(start) == 2
    for b in report.bonds:
        ranks = {bb.bond: bb.rank_before for bb in report.bonds}
        freed = layer.num_params_at(ranks) - layer.num_params_at({**ranks, b.bond: ranks[b.bond] - 1})
        assert b.penalty_before == pytest.approx(unit * freed)
        # the stopping rule: in the last round no kept index paid for its closure
        assert all(d > 0 and d - b.penalty_after >= 0 for d in b.kept_deltas.values())
        assert b.rank_after == b.rank_before - len(b.closures) == layer.selected_ranks()[b.bond]
    # the bonds of a TT-matrix touch cores of different sizes: their indices cost different amounts
    assert len({round(b.penalty_before, 6) for b in report.bonds}) == 2


def _costly_prune_problem():
    # N = 60 and 74 parameters per index: the BIC charges 151 nats an index, more than the fit
    # each index carries, and closes indices that hold most of the fit
    torch.manual_seed(0)
    model = torch.nn.Sequential(tnn.LowRankLinear(64, 10, rank=6, bias=False, alpha=3.0))
    X = torch.randn(60, 64)
    with torch.no_grad():
        model[0].cores[0].mul_(3.0)
        y = model(X).argmax(1)
    return model, tnn.classification_nll(X, y)


def test_a_prune_that_costs_much_of_the_fit_warns():
    model, nll = _costly_prune_problem()
    with pytest.warns(UserWarning, match="occam_prune raised the training nll"):
        report = tnn.occam_prune(model, nll, num_train=60, max_nll_rise=None)
    assert (report.nll_after - report.nll_before) / 60 > 0.05 and not report.limited


@pytest.mark.parametrize("limit", [0.05, 0.5])
def test_max_nll_rise_stops_the_bic_before_it_costs_the_fit_and_says_so(limit):
    model, nll = _costly_prune_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bic_alone = tnn.occam_prune(copy.deepcopy(model), nll, num_train=60, max_nll_rise=None)
    with pytest.warns(UserWarning, match=f"stopped at max_nll_rise={limit:g} nats per example") as caught:
        report = tnn.occam_prune(model, nll, num_train=60, max_nll_rise=limit)
    loud = [w for w in caught if "raised the training nll" in str(w.message)]
    assert bool(loud) == ((report.nll_after - report.nll_before) / 60 > 0.05)  # the default limit: never loud
    assert report.limited and "(stopped by max_nll_rise)" in str(report)
    assert (report.nll_after - report.nll_before) / 60 <= limit
    assert len(report.closures) < len(bic_alone.closures)
    assert report.ranks_after["0"]["A"] > bic_alone.ranks_after["0"]["A"]


@pytest.mark.parametrize("bad, error", [(-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError),
                                        (True, TypeError)])
def test_a_bad_max_nll_rise_is_refused(bad, error):
    model, nll = _costly_prune_problem()
    with pytest.raises(error, match="max_nll_rise"):
        tnn.occam_prune(model, nll, num_train=60, max_nll_rise=bad)


def test_a_prune_that_keeps_the_fit_is_quiet():
    torch.manual_seed(0)
    model = torch.nn.Sequential(tnn.LowRankLinear(8, 3, rank=4, bias=False))
    layer = model[0]
    with torch.no_grad():
        layer.masks.logits.fill_(3.0)
        layer.cores[0][:, 1:] = 0.0  # only index 0 carries the weight
        layer.cores[0].mul_(20.0)
    X = torch.randn(500, 8)
    y = (X @ layer.cores[0] @ layer.cores[1]).argmax(1).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tnn.occam_prune(model, tnn.classification_nll(X, y), num_train=500)
    assert report.ranks_after == {"0": {"A": 1}}


def _regression_teacher(scale: float = 1.0):
    """y = X W + noise with W of rank 2, fitted by a rank-5 layer whose surplus indices carry a
    little noise-fitting weight."""
    torch.manual_seed(0)
    layer = tnn.LowRankLinear(16, 8, rank=5, bias=False, alpha=3.0)
    X = torch.randn(2000, 16)
    with torch.no_grad():
        layer.cores[0][:, 2:] *= 0.01  # the surplus indices: almost no weight
        y = X @ layer.cores[0][:, :2] @ layer.cores[1][:2] + 0.1 * torch.randn(2000, 8)
    return torch.nn.Sequential(layer).eval(), X, y * scale


def test_regression_nll_is_the_gaussian_nll_at_the_mle_variance_and_prunes_to_the_true_rank():
    model, X, y = _regression_teacher()
    nll = tnn.regression_nll(X, y, batch_size=300)
    sse = float(((model(X) - y) ** 2).sum())
    n = y.numel()
    sigma2 = sse / n
    expected = float(-torch.distributions.Normal(model(X).detach(), math.sqrt(sigma2)).log_prob(y).sum())
    assert nll(model) == pytest.approx(expected, rel=1e-5)
    report = tnn.occam_prune(model, nll, num_train=len(X))
    assert report.ranks_after == {"0": {"A": 2}} and not report.limited


def test_regression_nll_judges_closures_whatever_the_targets_units():
    closed = []
    for scale in (1.0, 1000.0):
        model, X, y = _regression_teacher(scale)
        with torch.no_grad():
            model[0].cores[1].mul_(scale)
        closed.append(sorted(c.index for c in tnn.occam_prune(model, tnn.regression_nll(X, y), len(X)).closures))
    assert closed[0] == closed[1] == [2, 3, 4]  # (their order may differ: the surplus indices' deltas nearly tie)


def test_regression_nll_refuses_what_it_cannot_judge():
    model, X, y = _regression_teacher()
    with pytest.raises(TypeError, match="floating point"):
        tnn.regression_nll(X, torch.zeros(2000, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        tnn.regression_nll(X, y[:, :3])(model)
    with torch.no_grad():
        exact = model(X)
    with pytest.raises(ValueError, match="exactly"):
        tnn.regression_nll(X, exact)(model)


def test_classification_nll_of_a_one_logit_binary_classifier():
    """A one-logit model (BCEWithLogitsLoss) gave a raw "Target 1 is out of bounds", or with all
    labels 0 an nll of exactly 0, so that occam_prune pruned every bond to rank 1 silently."""
    torch.manual_seed(0)
    X, y = torch.randn(20, 4), torch.tensor([0, 1] * 10)
    model = torch.nn.Linear(4, 1)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(model(X).reshape(-1), y.float(), reduction="sum")
    assert tnn.classification_nll(X, y, batch_size=7)(model) == pytest.approx(float(expected), rel=1e-5)
    assert tnn.classification_nll(X, torch.zeros(20, dtype=torch.long))(model) > 0
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        tnn.classification_nll(X, torch.tensor([0, 2] * 10))(model)
    with pytest.raises(ValueError, match="label 3 but the model gives 3 class scores"):
        tnn.classification_nll(X, torch.tensor([0, 3] * 10))(torch.nn.Linear(4, 3))


# ------------------------------------------------------------------ the SVD gauge
def _tree_or_ring(kind: str, seed: int):
    from tnmars import Network

    if kind == "tt_matrix":
        return Network.tt_matrix((2, 3, 2), (3, 2, 2), 4, backend="torch", dtype="float64", seed=seed)
    if kind == "tucker":
        return Network.tucker((4, 5, 6), (3, 2, 4), backend="torch", dtype="float64", seed=seed)
    if kind == "tt":
        return Network.tt((3, 4, 5, 3), (3, 4, 3), backend="torch", dtype="float64", seed=seed)
    return Network.tr((4, 5, 6), 3, backend="torch", dtype="float64", seed=seed)


def _masked_tensor(spec, cores, keep, sites):
    from tnmars import Network

    cores = list(cores)
    for b, m in keep.items():
        k, axis = sites[b]
        shape = [1] * cores[k].ndim
        shape[axis] = -1
        cores[k] = cores[k] * m.double().view(shape)
    return Network(spec, cores=cores).to_tensor()


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["tt_matrix", "tucker", "tt", "tr"]), seed=st.integers(0, 10_000))
def test_the_svd_gauge_keeps_the_function_and_orders_each_bond_by_its_singular_values(kind, seed):
    """The laws of :func:`tnmars.nn.gauge.svd_gauge_`: the network with its MAP masks is unchanged;
    on a tree each bond's kept indices carry its singular values, largest first, and closing
    the last one removes exactly the smallest one's square from the squared norm (the best
    one-index cut); a ring is left as it was."""
    from tnmars.nn.gauge import svd_gauge_, tree_bonds

    net = _tree_or_ring(kind, seed)
    spec, cores = net.spec, [c.clone() for c in net.cores]
    sites = {b: net.mask_site(b) for b in net.bonds}
    gen = torch.Generator().manual_seed(seed)
    keep = {b: torch.rand(r, generator=gen) > 0.3 for b, r in net.bonds.items()}
    for mask in keep.values():
        mask[0] = True
    before = _masked_tensor(spec, cores, keep, sites)
    start = [c.clone() for c in cores]
    values = svd_gauge_(spec, cores, keep, sites)
    after = _masked_tensor(spec, cores, keep, sites)
    assert torch.allclose(before, after, atol=1e-10 * float(before.abs().max()))
    if kind == "tr":
        assert tree_bonds(spec) == [] and values == {}
        assert all(torch.equal(a, b) for a, b in zip(start, cores))
        return
    assert sorted(values) == sorted(net.bonds)
    for bond, sigma in values.items():
        assert torch.all(sigma[:-1] >= sigma[1:] - 1e-12)
        last = int(torch.nonzero(keep[bond]).flatten()[-1])
        cut = dict(keep)
        cut[bond] = keep[bond].clone()
        cut[bond][last] = False
        removed = float(((_masked_tensor(spec, cores, cut, sites) - after) ** 2).sum())
        assert removed == pytest.approx(float(sigma[-1] ** 2), rel=1e-6, abs=1e-9)


def _spread_rank_one(seed: int = 0):
    """A LowRankLinear (rank 4) whose weight is rank one, spread over all four indices (the
    gauge training leaves), and its regression data."""
    g = torch.Generator().manual_seed(seed)
    layer = tnn.LowRankLinear(12, 10, rank=4, bias=False)
    u, v = torch.randn(12, 1, generator=g), torch.randn(1, 10, generator=g)
    mix = torch.linalg.qr(torch.randn(4, 4, generator=g))[0]  # an orthogonal change of the bond basis
    with torch.no_grad():
        layer.masks.logits.fill_(6.0)
        layer.cores[0].copy_(torch.cat([u, 0.5 * torch.randn(12, 3, generator=g)], 1) @ mix)
        layer.cores[1].copy_(mix.T @ torch.cat([v, torch.zeros(3, 10)], 0))
    X = torch.randn(400, 12, generator=g)
    y = X @ (u @ v) + 0.05 * torch.randn(400, 10, generator=g)
    return nn.Sequential(layer), X, y.detach()


def test_a_rank_one_weight_spread_over_the_indices_is_pruned_to_rank_one_in_the_svd_gauge():
    """Closures judged one index at a time in the trained gauge cannot reach a low rank spread
    over every index (a TT recurrent matrix trained to a rank-one W kept 5-8 of 8 indices); in
    the SVD gauge each kept index is one singular direction."""
    model, X, y = _spread_rank_one()
    nll = tnn.regression_nll(X, y)
    trained = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the trained gauge's closures cost the fit: it warns)
        as_trained = tnn.occam_prune(trained, nll, 400, gauge="as trained")
    assert as_trained.ranks_after["0"]["A"] > 1
    report = tnn.occam_prune(model, nll, 400)
    assert report.ranks_after == {"0": {"A": 1}} and report.gauge == "svd"
    assert report.bic_after < as_trained.bic_after
    assert report.evaluations > as_trained.evaluations  # both searches ran


@pytest.mark.parametrize("seed", [0, 1])
def test_both_gauges_end_no_worse_than_either_alone(seed):
    model, X, y = teacher_problem(seed=seed)
    nll = tnn.classification_nll(X, y)
    alone = {g: tnn.occam_prune(copy.deepcopy(model), nll, N, gauge=g) for g in ("as trained", "svd")}
    both = tnn.occam_prune(model, nll, N)  # (the default runs both searches)
    assert both.evaluations == sum(r.evaluations for r in alone.values())
    assert both.bic_after <= min(r.bic_after for r in alone.values()) + 1e-6 * abs(both.bic_after)
    model.eval()
    assert both.nll_after == pytest.approx(nll(model), rel=1e-6)  # the model is the chosen search's


@pytest.mark.parametrize("spec, bonds", [
    ("aA,AbB,BcC,Cd", ["A", "B", "C"]), ("aA,AbB,BcC,Cd->abcd", ["A", "B", "C"]), ("ABC,iA,jB,kC", ["A", "B", "C"]),
    ("CaA,AbB,BcC->abc", []),  # a ring
    ("iAB,jAB", []),           # two bonds between the same cores: cutting one splits nothing
    ("ia,ja,ka", []),          # CP's bond on three cores
])
def test_only_bonds_that_split_the_network_get_an_svd_gauge(spec, bonds):
    from tnmars.nn.gauge import tree_bonds

    assert tree_bonds(spec) == bonds


class _Tied(nn.Module):
    """Two MARS layers holding the same cores (weight tying) under different MAP masks."""

    def __init__(self):
        super().__init__()
        self.a = tnn.TensorizedLinear(32, 32, rank=6)
        self.b = tnn.TensorizedLinear(32, 32, rank=6)
        self.b.cores = self.a.cores
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


@pytest.mark.parametrize("gauge", ["svd", "both"])
def test_the_svd_gauge_leaves_shared_cores_alone_and_nll_before_is_the_untouched_model(gauge):
    """Re-gauging ``a``'s cores changed ``b``'s function (its masks differ): the model's nll moved
    from 511 to 520 before any closure, silently, and report.nll_before was the moved one."""
    torch.manual_seed(0)
    model = _Tied()
    with torch.no_grad():
        model.b.masks.logits[:3] = -5.0
    X = torch.randn(400, 32)
    y = model.eval()(X).argmax(1).detach()
    nll = tnn.classification_nll(X, y)
    before = nll(model)
    cores = [c.detach().clone() for c in model.a.cores]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = tnn.occam_prune(model, nll, num_train=400, gauge=gauge, strength=0.0, max_nll_rise=0.0)
    assert report.nll_before == pytest.approx(before, rel=1e-6)
    assert all(torch.equal(c, k) for c, k in zip(model.a.cores, cores))  # never re-gauged
    assert nll(model) == pytest.approx(report.nll_after, rel=1e-6)
    assert report.nll_after <= before * (1 + 1e-6)  # max_nll_rise=0 held from the untouched start
    if report.gauge == "svd":
        assert any("trained gauge" in str(w.message) and "'a'" in str(w.message) for w in caught)


def test_the_svd_gauge_still_applies_to_layers_that_share_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(tnn.TensorizedLinear(32, 32, rank=6), nn.Tanh(), nn.Linear(32, 4))
    X = torch.randn(200, 32)
    y = model.eval()(X).argmax(1).detach()
    cores = [c.detach().clone() for c in model[0].cores]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.occam_prune(model, tnn.classification_nll(X, y), num_train=200, gauge="svd", strength=0.0,
                        max_nll_rise=0.0)
    assert not any("trained gauge" in str(w.message) for w in caught)
    assert not all(torch.equal(c, k) for c, k in zip(model[0].cores, cores))


def test_a_compiled_model_is_named_as_the_model_itself():
    """``torch.compile`` wraps the model in ``_orig_mod``: summary and occam_prune named its
    layers ``_orig_mod.0``; they are unwrapped as DDP's ``module`` is."""
    torch.manual_seed(0)
    model = nn.Sequential(tnn.TensorizedLinear(16, 8, rank=3), nn.ReLU(), tnn.LowRankLinear(8, 3, rank=2))
    compiled = torch.compile(model, backend="eager")
    try:
        assert [n for n, _ in tnn.mars_layers(compiled)] == ["0", "2"]
        text = str(tnn.summary(compiled))
        assert "| 0 | TensorizedLinear" in text and "_orig_mod" not in text
        X, y = torch.randn(50, 16), torch.randint(0, 3, (50,))
        report = tnn.occam_prune(compiled, tnn.classification_nll(X, y), num_train=50, gauge="as trained",
                                 max_nll_rise=None)
        assert set(report.ranks_before) == {"0", "2"}
    finally:
        torch._dynamo.reset()
