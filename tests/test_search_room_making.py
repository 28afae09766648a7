"""A walk at the observations' degrees-of-freedom limit: growth made room for by a removal."""
import warnings

import numpy as np

import tnmars
from tnmars.fitting.criterion import Occam
from tnmars.fitting.graph import degrees_of_freedom
from tnmars.fitting.search import RankSearch
from tnmars.fitting.solvers import FitData


def _search_at(n_obs: int, max_rank: int = 10) -> RankSearch:
    y = np.zeros((18, 16, 14))
    return RankSearch(FitData.from_arrays(y), Occam(n_obs), max_ranks=dict.fromkeys("ABC", max_rank))


def test_growth_the_cap_refuses_is_offered_with_one_index_fewer_elsewhere():
    """At (3, 4, 4) on 18x16x14 with 415 observations (at most 207.5 degrees of freedom), one
    more index on the first bond makes 208: refused alone, offered with one index fewer on each
    other bond that has one to give; nothing is offered where the growth fits alone."""
    net = tnmars.Network.tucker((18, 16, 14), (3, 4, 4), seed=0)
    search = _search_at(415)
    assert degrees_of_freedom(net.spec, {**net.dims, "A": 4}) > search.criterion.max_dof
    moves = dict(search._room_making(net))
    assert moves == {"+A-B": {"A": 4, "B": 3}, "+A-C": {"A": 4, "C": 3}}
    for grown in moves.values():
        assert degrees_of_freedom(net.spec, {**net.dims, **grown}) <= search.criterion.max_dof
    assert _search_at(4032)._room_making(net) == []  # complete data: every growth fits
    assert _search_at(415, max_rank=3)._room_making(net) == []  # the growth is past max_rank, not the cap


def test_a_completion_started_at_the_limit_reaches_its_exact_ranks():
    """A noiseless Tucker (4, 2, 3) on 18x16x14, 10% observed (the held-out completion of
    ``benchmarks/rank_selectors.py``, seed 100): the spectral start (3, 4, 4) sits at the
    degrees-of-freedom limit, where the first bond cannot grow alone, and the walk ended at
    (3, 4, 5), 1.76 from the truth, warning; every rank vector with 4 on the first bond fits
    it exactly, and (4, 3, 4), grown with one index fewer on the second bond, leads there."""
    rng = np.random.default_rng(100)
    shape, ranks = (18, 16, 14), (4, 2, 3)
    cores = [rng.standard_normal(ranks)] + [rng.standard_normal((n, r)) for n, r in zip(shape, ranks)]
    x = tnmars.Network.tucker(shape, ranks).with_cores(cores).to_tensor()
    rng = np.random.default_rng(100 + 7919)
    rng.standard_normal(x.shape)  # (the benchmark's noise draw, unused here: noiseless)
    observed = rng.random(x.shape) < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exact fit warns of nothing
        res = tnmars.fit(x, "tucker", max_rank=10, observed=observed, seed=0, progress=False)
    assert res.ranks == ranks
    assert np.linalg.norm(np.asarray(res.network.to_tensor()) - x) < 1e-6 * np.linalg.norm(x)
