"""tnmars.fit's ``min_rank`` and ``dtype`` options: every returned bond at least ``min_rank``
where the data allow it (a loud warning naming the bond where they do not), and one rule
for the result's dtype whatever form ``dtype`` or the data's precision takes."""
import warnings

import numpy as np
import pytest

import tnmars
from tnmars.fitting.graph import feasible_ranks

TT_DATA = np.asarray(tnmars.Network.tt((6, 7, 8), (2, 3), seed=0).to_tensor())
CP_DATA = np.asarray(tnmars.Network.cp((6, 7, 8), 2, seed=0).to_tensor())


def quiet_fit(*args, **kwargs):
    return tnmars.fit(*args, progress=False, **{"seed": 0, **kwargs})


# ---------------------------------------------------------------------------- min_rank
@pytest.mark.parametrize("fmt, max_rank", [("tt", 5), ("tucker", 6), ("cp", 4), ("tr", 4)])
@pytest.mark.parametrize("proposal", ["auto", "greedy"])
def test_every_returned_bond_is_at_least_min_rank(fmt, max_rank, proposal):
    """The data have TT ranks (2, 3) (CP rank 2 for CP): the criterion alone returns bonds
    below 3, so every bond of the result at 3 or more shows that the floor held (before: the
    starting proposal was never raised to it, and TT came back at (2, 3), TR greedy at
    (2, 3, 1))."""
    x = CP_DATA if fmt == "cp" else TT_DATA
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every bond can take rank 3 here: no warning
        res = quiet_fit(x, fmt, max_rank=max_rank, min_rank=3, proposal=proposal)
    assert min(res.ranks) >= 3, res.ranks
    assert all(res.network.bonds[b] == r for b, r in zip(res.bonds, res.ranks))  # physically there
    assert res.relative_error < 1e-4  # the extra indices cost nothing on exact data
    assert res.settings["min_rank"] == 3


def test_min_rank_also_raises_a_warm_start_and_the_mars_proposal():
    low = quiet_fit(TT_DATA, "tt", max_rank=5)
    assert low.ranks == (2, 3)
    warm = quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=4, proposal=low.network)
    assert min(warm.ranks) >= 4 and warm.proposal == "start"
    mars = quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=4, proposal="mars", relaxation=dict(steps=30))
    assert min(mars.ranks) >= 4 and mars.proposal == "mars"


@pytest.mark.parametrize("size", [1e200, 1e-200])
def test_a_warm_start_of_the_wrong_size_is_scaled_to_the_data(size):
    """A Network proposal 1e200 times too large raised 'SVD did not converge' from the refits:
    a start more than 1,000 times off the data's size is scaled to it first."""
    first = quiet_fit(TUCKER, "tucker", max_rank=5)
    net = first.network
    start = net.with_cores([net.cores[0] * size, *net.cores[1:]])
    again = quiet_fit(TUCKER, "tucker", max_rank=5, proposal=start)
    assert again.ranks == first.ranks and again.relative_error < 2 * first.relative_error + 1e-12


def test_min_rank_holds_within_a_budget():
    res = quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=3, budget=200)
    assert min(res.ranks) >= 3 and res.num_params <= 200


@pytest.mark.parametrize("max_rank, words", [
    (2, r"min_rank=4 is above max_rank=2"),
    ((5, 3), r"min_rank=4 is above the maximal rank of bond 'B' \(3\)"),
])
def test_min_rank_above_max_rank_is_refused_at_the_call(max_rank, words):
    with pytest.raises(ValueError, match=words):
        quiet_fit(TT_DATA, "tt", max_rank=max_rank, min_rank=4)


def test_min_rank_above_the_default_max_rank_raises_the_default():
    """Found by an outside probe: on a 3^5 TT, ``min_rank=6`` raised "min_rank=6 is above
    max_rank=5 (the default ...)" although the middle bonds can hold 9 and the user asked for no
    max_rank; the default cap now rises to min_rank (with the warnings a fit at min_rank gives)."""
    x = np.asarray(tnmars.Network.tt((3,) * 5, (3, 6, 6, 3), seed=0).to_tensor())
    with pytest.warns(UserWarning, match="degrees of freedom"):
        res = quiet_fit(x, "tt", min_rank=6)
    assert res.ranks == (3, 6, 6, 3) and res.relative_error < 1e-6


def test_min_rank_above_a_networks_bond_size_is_refused():
    net = tnmars.Network.tt((6, 7, 8), (4, 2), seed=0)
    with pytest.raises(ValueError, match=r"bond 'B' \(2\)"):
        quiet_fit(TT_DATA, net, min_rank=3)


def test_min_rank_a_bond_cannot_take_is_a_warning_naming_the_bond():
    """A TT bond next to a mode of size 2 can use at most rank 2: min_rank=3 cannot hold
    there, and the fit says so instead of returning less silently; the other bond keeps 3."""
    x = np.asarray(tnmars.Network.tt((2, 8, 9), (1, 2), seed=0).to_tensor())
    assert feasible_ranks("aA,AbB,Bc->abc", {"a": 2, "b": 8, "c": 9, "A": 5, "B": 5}) == {"A": 2, "B": 5}
    with pytest.warns(UserWarning, match=r"min_rank=3.*bond 'A'.*at most 2") as seen:
        res = quiet_fit(x, "tt", max_rank=5, min_rank=3)
    assert not any("'B'" in str(w.message) for w in seen)
    assert res.ranks == (2, 3)


def test_min_rank_above_what_the_data_can_determine_is_a_warning():
    """A network at min_rank with more degrees of freedom than half the observations: the
    criterion cannot judge it; the floor holds, with a warning."""
    x = np.random.default_rng(0).standard_normal((4, 4, 4))
    with pytest.warns(UserWarning, match="degrees of freedom"):
        res = quiet_fit(x, "tucker", max_rank=4, min_rank=4)
    assert res.ranks == (4, 4, 4)


def test_min_rank_zero_with_the_occam_search_does_not_crash():
    """min_rank=0 let the search try to remove a bond's last index, which raised
    'cannot shrink further' as soon as a bond reached rank 1."""
    x = np.asarray(tnmars.Network.tt((5, 6, 7), (1, 3), seed=0).to_tensor())
    for proposal in ("auto", "greedy"):
        res = quiet_fit(x, "tt", max_rank=4, min_rank=0, proposal=proposal)
        assert res.ranks == (1, 3) and res.relative_error < 1e-8


# ------------------------------------------------------------------- per-bond min_rank
NOISY_TT = TT_DATA + 0.01 * TT_DATA.std() * np.random.default_rng(1).standard_normal(TT_DATA.shape)


@pytest.mark.parametrize("known", [(2, 3), (4, 2), (3, 5)])
def test_max_rank_and_min_rank_at_the_same_ranks_fit_those_ranks(known):
    """Fitting at known ranks (the advice of several warnings: ``max_rank=... with
    min_rank=...``) needed one int for every bond: ranks (4, 2) could not be asked. A per-bond
    ``min_rank`` equal to ``max_rank`` returns exactly those ranks, with the error of ALS at them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every bond can take these ranks: no warning
        res = quiet_fit(NOISY_TT, "tt", max_rank=known, min_rank=known)
    assert res.ranks == known
    assert res.settings["min_rank"] == dict(zip(res.bonds, known))
    direct = tnmars.fit(NOISY_TT, "tt", max_rank=known, min_rank=known, progress=False, prior_strength=1e6)
    assert direct.ranks == known  # (no prior strength moves a fixed rank)
    if known == (2, 3):  # the truth: the noise's level
        assert res.relative_error < 0.02


def test_a_per_bond_floor_holds_on_its_bond_only():
    """(4, 1): the first bond kept at 4 or more, the second selected (the truth's 3)."""
    res = quiet_fit(NOISY_TT, "tt", max_rank=5, min_rank=(4, 1))
    assert res.ranks[0] >= 4 and res.ranks[1] == 3, res.ranks


def test_a_max_rank_mapping_that_names_some_bonds_caps_those_only():
    """As a min_rank mapping leaves the bonds it does not name at 1, a max_rank mapping leaves
    them at the default cap (it was refused: 'max_rank gives no rank for bond(s) 'B'')."""
    capped = quiet_fit(NOISY_TT, "iA,AjB,Bk->ijk", max_rank={"A": 1})
    assert capped.ranks == (1, 3), capped.ranks
    assert capped.settings["max_ranks"]["B"] >= 3
    whole = quiet_fit(NOISY_TT, "iA,AjB,Bk->ijk", max_rank={"A": 1, "B": 2})
    assert whole.ranks == (1, 2), whole.ranks
    with pytest.raises(ValueError, match="'Z', which is not a bond"):
        quiet_fit(NOISY_TT, "iA,AjB,Bk->ijk", max_rank={"Z": 2})


def test_a_format_takes_a_max_rank_mapping_by_the_bond_names_of_its_result():
    # (as a spec does, and as min_rank took them: the mapping was refused, 'max_rank must be a
    # positive int, one per bond', an outside probe's first try)
    capped = quiet_fit(NOISY_TT, "tt", max_rank={"A": 1})
    assert capped.bonds == ("A", "B") and capped.ranks == (1, 3), capped.ranks
    assert quiet_fit(NOISY_TT, "tt", max_rank={"A": 1, "B": 2}).ranks == (1, 2)
    with pytest.raises(ValueError, match="'Z', which is not a bond of the tt format"):
        quiet_fit(NOISY_TT, "tt", max_rank={"Z": 2})


def test_a_spec_or_a_network_takes_floors_by_bond_name_or_label():
    spec = quiet_fit(NOISY_TT, "iA,AjB,Bk->ijk", max_rank=5, min_rank={"B": 5})
    assert spec.ranks == (2, 5), spec.ranks
    labelled = tnmars.Network([("i", "left"), ("left", "j", "right"), ("right", "k")],
                              dims={"i": 6, "j": 7, "k": 8, "left": 5, "right": 5}, output=["i", "j", "k"])
    by_label = quiet_fit(NOISY_TT, labelled, min_rank={"left": 4})
    assert by_label.ranks == (4, 3), by_label.ranks
    assert quiet_fit(NOISY_TT, labelled, min_rank=(4, 1)).ranks == by_label.ranks  # (the order of Network.bonds)


def test_a_floor_message_names_a_labelled_bond_by_its_label():
    """The caller named the bond 'left'; the error must not speak of its internal symbol."""
    labelled = tnmars.Network([("i", "left"), ("left", "j", "right"), ("right", "k")],
                              dims={"i": 6, "j": 7, "k": 8, "left": 3, "right": 3}, output=["i", "j", "k"])
    with pytest.raises(ValueError, match=r"min_rank 4 on bond 'left' is above the maximal rank of bond 'left' \(3\)"):
        quiet_fit(NOISY_TT, labelled, min_rank={"left": 4})
    narrow = tnmars.Network([("i", "left"), ("left", "j", "right"), ("right", "k")],
                            dims={"i": 2, "j": 7, "k": 8, "left": 2, "right": 3}, output=["i", "j", "k"])
    with pytest.warns(UserWarning, match=r"at min_rank 2 on bond 'left', 3 on bond 'right' the network has"):
        tnmars.fit(NOISY_TT[:2], narrow, min_rank={"left": 2, "right": 3}, progress=False)


@pytest.mark.parametrize("min_rank, error, words", [
    ((3,), ValueError, r"one value per bond \(2: A, B"),
    ((3, 2, 1), ValueError, "one value per bond"),
    ({"Z": 3}, ValueError, r"min_rank names 'Z', which is not a bond of 'tt' \(bonds: A, B\)"),
    ((3, -1), ValueError, "every entry of min_rank must be a non-negative integer; got -1"),
    ((3, 2.5), ValueError, "non-negative integer; got 2.5"),
    ("3", ValueError, "must be a non-negative integer; got '3'"),
    ((6, 1), ValueError, r"min_rank 6 on bond 'A' is above max_rank=5"),
])
def test_bad_per_bond_floors_are_refused_naming_what_is_wrong(min_rank, error, words):
    with pytest.raises(error, match=words):
        quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=min_rank)


def test_a_format_floor_names_its_bonds_as_the_result_does():
    """An outside probe: ``min_rank={"A": 4}`` was refused for a format whose result names its
    bonds A, B, C; it floors that bond, and the others stay free."""
    free = quiet_fit(TT_DATA, "tt", max_rank=5)
    floored = quiet_fit(TT_DATA, "tt", max_rank=5, min_rank={free.bonds[0]: 5})
    assert floored.bonds == free.bonds
    assert floored.ranks_by_bond[free.bonds[0]] == 5 and free.ranks_by_bond[free.bonds[0]] < 5


def test_a_spec_floor_on_a_name_that_is_no_bond_is_refused():
    with pytest.raises(ValueError, match=r"min_rank names 'C', which is not a bond of .* \(bonds: A, B\)"):
        quiet_fit(TT_DATA, "iA,AjB,Bk->ijk", max_rank=5, min_rank={"C": 2})
    with pytest.raises(ValueError, match="^min_rank: .*(names no bond|not a bond)"):
        quiet_fit(TT_DATA, tnmars.Network("iA,AjB,Bk->ijk", {"i": 6, "j": 7, "k": 8, "A": 5, "B": 5}),
                  min_rank={"k": 2})


def test_a_per_bond_floor_a_bond_cannot_take_is_a_warning_naming_it():
    x = np.asarray(tnmars.Network.tt((2, 12, 12), (2, 3), seed=0).to_tensor())
    with pytest.warns(UserWarning, match=r"min_rank cannot hold for bond 'A' \(at most 2, asked 3\)") as seen:
        res = quiet_fit(x, "tt", max_rank=5, min_rank=(3, 4))
    assert len(seen) == 1, [str(w.message) for w in seen]
    assert res.ranks == (2, 4)


def test_per_bond_floors_reach_the_relaxation_and_the_fit_without_the_mean():
    """The MARS relaxation's MAP masks keep each bond's own floor (0 lets it close one bond
    alone); data far from zero are fitted twice (as given, and without their mean with every
    floor one lower): both keep the floors."""
    mars = quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=(4, 0), prior="bernoulli", relaxation=dict(steps=30))
    assert mars.ranks[0] >= 4, mars.ranks
    offset = quiet_fit(TT_DATA + 1e5 * TT_DATA.std(), "tt", max_rank=5, min_rank=(1, 5))
    assert "offset" in offset.settings and offset.ranks[1] == 5, (offset.ranks, offset.settings.get("offset"))


def test_a_per_bond_floor_raises_the_neighbours_it_needs():
    """A floor of 4 on a Tucker bond beside floors of 1 is no rank (at most 1 x 1): it was cut
    to 1 with a warning that it "adds no expressive power", and the fit came back at (2, 2, 2);
    a TT bond of 6 on 2^8 data needs both neighbours at 3 (an outside review)."""
    tucker = np.asarray(tnmars.Network.tucker((6, 7, 8), (2, 2, 2), seed=0).to_tensor())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = quiet_fit(tucker, "tucker", max_rank=5, min_rank=(1, 4, 1))
    assert res.ranks[1] >= 4 and res.ranks[0] * res.ranks[2] >= 4, res.ranks
    train = np.asarray(tnmars.Network.tt((2,) * 8, (2, 3, 3, 3, 3, 3, 2), seed=0).to_tensor())
    res = quiet_fit(train, "tt", max_rank=8, min_rank=(1, 1, 1, 6, 1, 1, 1))
    assert res.ranks[3] >= 6, res.ranks


def test_fixed_ranks_hold_on_a_ring_far_from_zero():
    """Far from zero the fit without the mean has every floor one lower, and the mean's index
    reaches every ring bond but its smallest: max_rank = min_rank = (4, 5, 4) came back at
    (4, 5, 3) (an outside review). Such a fit is not kept where it breaks a floor."""
    ring = np.asarray(tnmars.Network.tr((8, 9, 10), (3, 4, 3), seed=0).to_tensor())
    ring = ring + 0.01 * ring.std() * np.random.default_rng(1).standard_normal(ring.shape)
    res = quiet_fit(ring + 1e5 * ring.std(), "tr", max_rank=(4, 5, 4), min_rank=(4, 5, 4))
    assert res.ranks == (4, 5, 4) and "offset" in res.settings


def test_a_zero_dimensional_array_is_one_floor():
    assert quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=np.array(3)).ranks == (3, 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        quiet_fit(TT_DATA, "tt", max_rank=5, min_rank=np.array(2.5))


# ---------------------------------------------------------------------------- dtype
TUCKER = np.asarray(tnmars.Network.tucker((8, 9, 10), (2, 3, 4), seed=1).to_tensor())


def _dtype_forms():
    forms = [(np.float32, "float32"), (np.dtype("float32"), "float32"), ("float32", "float32"),
             (np.float64, "float64"), (float, "float64"), ("float64", "float64")]
    try:
        import torch
    except ImportError:
        return forms
    return forms + [(torch.float32, "float32"), (torch.float64, "float64")]


@pytest.mark.parametrize("dtype, name", _dtype_forms())
def test_dtype_may_be_a_string_a_numpy_dtype_or_scalar_type_float_or_a_torch_dtype(dtype, name):
    res = quiet_fit(TUCKER, "tucker", max_rank=5, dtype=dtype)
    assert res.network.dtype == name and res.settings["dtype"] == name
    assert res.ranks == (2, 3, 4)


@pytest.mark.parametrize("dtype", [np.float16, "float16", "bfloat16", np.int64, "int32"])
def test_a_dtype_fits_cannot_run_in_is_refused(dtype):
    with pytest.raises(ValueError, match="float32 or float64"):
        quiet_fit(TUCKER, "tucker", max_rank=5, dtype=dtype)


@pytest.mark.parametrize("scale", [1e-50, 1e50])
def test_a_result_dtype_narrower_than_the_data_s_range_is_refused(scale):
    """float64 data near 1e50 (or 1e-50) fitted into float32: the network came back full of
    infinities (or zeros) with a relative error of 1e-16; refused now, and in range it works."""
    with pytest.raises(ValueError, match="does not fit float32"):
        quiet_fit(TUCKER * scale, "tucker", max_rank=5, dtype="float32")
    res = quiet_fit(TUCKER * 1e30, "tucker", max_rank=5, dtype="float32")
    assert np.isfinite(res.network.to_tensor()).all() and res.ranks == (2, 3, 4)
    small = quiet_fit((TUCKER * (1e-37 if scale < 1 else 1e36)).astype(np.float32), "tucker",
                      max_rank=5)  # data already float32 near its limits: fitted as they are
    assert small.network.dtype == "float32" and np.isfinite(small.network.to_tensor()).all()
    assert small.relative_error < 1e-5 and small.ranks == (2, 3, 4)


def test_a_float32_result_reports_the_error_of_the_float32_network():
    """The error was computed on the float64 working cores: 1e-16 for a float32 result whose
    own error is about 1e-7."""
    rng = np.random.default_rng(0)
    x = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((6, 2)) for _ in range(3)])
    res = quiet_fit(x, "tucker", dtype="float32")
    actual = np.linalg.norm(res.network.to_tensor().astype(np.float64) - x) / np.linalg.norm(x)
    assert 1e-9 < res.relative_error and actual / 10 < res.relative_error < actual * 10


def test_a_dtype_that_is_not_a_type_is_a_type_error():
    with pytest.raises(TypeError, match="dtype"):
        quiet_fit(TUCKER, "tucker", max_rank=5, dtype="floaty")


def test_half_precision_numpy_data_are_fitted_in_float32():
    """float16 data gave float64 results while float32 data stay float32: half precision
    data now give float32, as the fit's docstring says."""
    half = TUCKER.astype(np.float16)
    res = quiet_fit(half, "tucker", max_rank=5)
    assert res.network.dtype == "float32" and res.settings["dtype"] == "float32"
    assert res.ranks == (2, 3, 4) and res.relative_error < 1e-3
    assert quiet_fit(half, "tucker", max_rank=5, dtype="float64").network.dtype == "float64"


@pytest.mark.parametrize("fmt, ranks, expected", [("tucker", (1, 1, 1), (1, 1, 1)), ("tucker", (2, 3, 4), (2, 3, 4)),
                                                  ("cp", 3, (3,))])
def test_half_precision_rounding_is_not_taken_for_structure(fmt, ranks, expected):
    """Rounding to float16 leaves an error of about 1e-4 of the values, above the criterion's
    1e-8 MSE floor and shaped by the values: a rank-1 Tucker tensor of 12x10x9 stored in float16
    selected (4, 4, 4), and every case here selected larger ranks. The floor is now the storage's
    unit roundoff squared; the same values handed over in float32 keep the 1e-8 floor."""
    truth = np.asarray(getattr(tnmars.Network, fmt)((8, 9, 10), ranks, seed=1).to_tensor())
    res = quiet_fit(truth.astype(np.float16), fmt, max_rank=5)
    assert res.ranks == expected and res.relative_error < 1e-3


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_half_precision_torch_data_are_fitted_in_float32(name):
    """A bfloat16 tensor crashed in torch's .numpy() ('Got unsupported ScalarType BFloat16')."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(TUCKER, dtype=getattr(torch, name))
    res = quiet_fit(x, "tucker", max_rank=5)
    assert res.network.backend == "torch" and res.network.dtype == "float32"
    assert res.settings["dtype"] == "float32" and res.relative_error < 1e-2  # bfloat16 keeps ~3 digits
    assert res.ranks == (2, 3, 4)  # its rounding is not fitted as structure (the storage floor)


def test_the_torch_backend_widens_dtypes_numpy_lacks():
    torch = pytest.importorskip("torch")
    from tnmars.backends import get_backend

    x = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    out = get_backend("torch").to_numpy(x)
    assert out.dtype == np.float32 and out.tolist() == [1.5, -2.25]


def test_a_ring_on_a_matrix_does_not_repeat_tensorlys_warning():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tnmars.fit(x, "tr", seed=0, progress=False)
    assert sorted(result.ranks) == [1, 3]
    assert not [w for w in caught if "trivial case" in str(w.message)]


def test_a_structure_search_of_zero_data_warns_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tnmars.search(np.zeros((4, 5, 6)), progress=False)
    assert result.num_params == 0
    assert len([w for w in caught if "all zero" in str(w.message)]) == 1


def test_options_a_fit_never_reads_are_named_in_a_warning():
    """``relaxation=`` with the default prior (no relaxation runs), or ``proposal=`` /
    ``prior_strength=`` / ``selection=`` with ``prior="bernoulli"`` (no search runs), changed
    nothing and said nothing: a user tuning them saw the same result whatever the values."""
    x = tnmars.Network.tucker((5, 6, 7), (2, 2, 3), seed=0).to_tensor()
    with pytest.warns(UserWarning, match=r"no effect here and are ignored: relaxation="):
        plain = quiet_fit(x, "tucker", relaxation={"pi": 0.001, "steps": 7})
    assert plain.ranks == quiet_fit(x, "tucker").ranks
    with pytest.warns(UserWarning, match=r"proposal='greedy'.*prior_strength=.*selection="):
        quiet_fit(x, "tucker", prior="bernoulli", relaxation={"steps": 30}, proposal="greedy", prior_strength=5.0,
                  selection={"exchanges": False})
    with warnings.catch_warnings():  # (30 steps keep every index: that is said, as a RuntimeWarning)
        warnings.simplefilter("error", UserWarning)
        quiet_fit(x, "tucker", prior="bernoulli", relaxation={"steps": 30})
        quiet_fit(x, "tucker", proposal="mars", relaxation={"steps": 30})


def test_a_diverging_relaxation_says_so():
    """Outside probe: ``prior="bernoulli"`` at ``lr=1e6`` rose from a loss of 0.88 to 6.9e8 and
    closed every mask; the fit came back at rank 1 with only NumPy's overflow warnings to say
    why. The relaxation now says it diverged, with the learning rate to lower."""
    x = np.asarray(tnmars.Network.tucker((10, 11, 12), (2, 3, 2), seed=0).to_tensor())
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        tnmars.fit(x, "tucker", prior="bernoulli", relaxation={"lr": 1e6}, progress=False)
    said = [str(w.message) for w in heard if "relaxation diverged" in str(w.message)]
    assert len(said) == 1 and "it was 1e+06" in said[0] and "from 0.876 to" in said[0]
    assert all(w.filename == __file__ for w in heard if "relaxation diverged" in str(w.message))
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        tnmars.fit(x, "tucker", prior="bernoulli", progress=False)
    assert not any("diverged" in str(w.message) for w in heard)
