import pytest
from hypothesis import given
from hypothesis import strategies as st

from tnmars.spec import RESERVED, Symbols, einsum_terms, labels_to_spec, parse_spec, symbol


def test_implicit_output_follows_numpy_rule():
    p = parse_spec("ij,jkl,lm")
    assert p.inputs == ("ij", "jkl", "lm")
    assert p.output == "ikm"
    assert p.bonds == ("j", "l")
    assert p.summed == ()


def test_explicit_output_and_whitespace():
    p = parse_spec(" ij, jkl ,lm -> mki ")
    assert p.output == "mki"
    assert p.spec == "ij,jkl,lm->mki"


def test_hyperedge_is_a_bond():
    p = parse_spec("ar,br,cr")
    assert p.bonds == ("r",)
    assert p.terms_with("r") == (0, 1, 2)


def test_shared_index_kept_in_output_is_open_not_bond():
    p = parse_spec("ia,ib->iab")
    assert p.bonds == ()
    assert p.output == "iab"


def test_an_index_on_one_core_outside_the_output_is_summed():
    p = parse_spec("xaA,AbB,Bcy->abc")
    assert p.bonds == ("A", "B") and p.summed == ("x", "y")
    assert parse_spec("ij,jk->i").summed == ("k",)


def test_any_non_ascii_character_is_an_index():
    p = parse_spec("αβ,βγ×,×δ")
    assert p.bonds == ("β", "×") and p.output == "αγδ"
    # unicode spaces are indices too (opt_einsum's get_symbol produces them); ASCII space is not
    assert parse_spec("a\u2000,\u2000b").bonds == ("\u2000",)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", "empty spec"),
        ("   ", "empty spec"),
        ("ij,,jk", "term 1 is empty"),
        ("ij,jk->iz", "output index 'z' is absent"),
        ("iij,jk", "repeated inside term 'iij'"),
        ("ij,jk->ii", "repeated in the output"),
        ("ij->i->j", "more than one '->'"),
        ("->ij", "no input terms"),
        ("i-j,jk", "may only appear together"),
        ("ij,j>k", "may only appear together"),
        ("...i,i", "ellipsis"),
        ("i1,1k", "index '1': ASCII indices are letters"),
        ("aA,Ab!", "index '!'"),
    ],
)
def test_bad_specs_name_the_problem(spec, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(spec)


def test_non_string_spec_is_a_type_error():
    with pytest.raises(TypeError):
        parse_spec(["ij", "jk"])


def test_symbols_start_with_the_52_letters():
    assert "".join(symbol(i) for i in range(52)) == "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    with pytest.raises(ValueError):
        symbol(-1)


@given(st.integers(0, 20_000), st.integers(0, 20_000))
def test_symbols_are_distinct_printable_letters(i, j):
    a, b = symbol(i), symbol(j)
    assert (a == b) == (i == j)
    assert len(a) == 1 and a.isalpha() and a.isprintable() and a not in RESERVED


def test_open_and_bond_symbol_sequences_never_meet():
    opens = Symbols("abcdefghijklmnopqrstuvwxyz", offset=52, step=2)
    bonds = Symbols("ABCDEFGHIJKLMNOPQRSTUVWXYZ", offset=53, step=2)
    a, b = opens[:3000], bonds[:3000]
    assert len(set(a)) == len(set(b)) == 3000 and not set(a) & set(b)
    assert a[:26] == "abcdefghijklmnopqrstuvwxyz" and b[:26] == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.parametrize(
    "spec, ndims, inputs, output",
    [
        ("ij,jk", (2, 2), ("ij", "jk"), "ik"),
        ("...ij,...jk", (4, 2), ("abij", "jk"), "abik"),
        ("...ij,...jk->...ik", (3, 4), ("bij", "abjk"), "abik"),
        ("...a->...", (3,), ("bca",), "bc"),
        ("...a->a", (3,), ("bca",), "a"),  # opt_einsum sums the broadcast dimensions
        ("a,->a", (1, 0), ("a", ""), "a"),
        (",,->", (0, 0, 0), ("", "", ""), ""),
        ("ii->i", (2,), ("ii",), "i"),
        ("ii", (2,), ("ii",), ""),
        ("...", (0,), ("",), ""),
    ],
)
def test_einsum_terms(spec, ndims, inputs, output):
    assert einsum_terms(spec, ndims) == (inputs, output)


@pytest.mark.parametrize(
    "spec, ndims, words",
    [
        ("ij,jk", (2,), "2 terms but 1 operands"),
        ("ij", (1,), "names 2 indices but operand 0 has 1"),
        ("i", (2,), "use '...' to broadcast"),
        ("i..", (2,), "not one '...'"),
        (".i...", (2,), "not one '...'"),
        ("j->..j", (1,), "not one '...'"),
        ("i->ij", (1,), "output index 'j' is absent"),
        ("ij->jij", (2,), "repeated in the output"),
        ("i->&", (1,), "index '&'"),
        ("i%...", (2,), "index '%'"),
    ],
)
def test_einsum_terms_errors_name_the_problem(spec, ndims, words):
    with pytest.raises(ValueError, match=words):
        einsum_terms(spec, ndims)


def test_labels_to_spec_orders_sortable_labels_like_numpy():
    spec, mapping = labels_to_spec([[30, 1], [1, 0]])
    assert spec == "cb,ba->ac" and mapping == {0: "a", 1: "b", 30: "c"}
    assert labels_to_spec([[Ellipsis, 0], [Ellipsis, 0]])[0] == "...a,...a->..."
    big, _ = labels_to_spec([[k, k + 1] for k in range(100)])
    assert len(set(big.replace(",", "").replace("->", ""))) == 101


def test_labels_to_spec_takes_unsortable_labels_in_order_of_appearance():
    spec, mapping = labels_to_spec([[("site", 0), "b"], ["b", 7]], [7, ("site", 0)])
    assert spec == "ab,bc->ca" and mapping == {("site", 0): "a", "b": "b", 7: "c"}


def test_labels_to_spec_errors():
    with pytest.raises(TypeError, match="unhashable label"):
        labels_to_spec([[0, []]])
    with pytest.raises(TypeError, match="list or tuple"):
        labels_to_spec(["ab"])
    with pytest.raises(ValueError, match="output label 9"):
        labels_to_spec([[0, 1]], [9])
