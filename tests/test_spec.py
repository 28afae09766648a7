import pytest

from tnmars.spec import parse_spec


def test_implicit_output_follows_numpy_rule():
    p = parse_spec("ij,jkl,lm")
    assert p.inputs == ("ij", "jkl", "lm")
    assert p.output == "ikm"
    assert p.bonds == ("j", "l")


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


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", "empty spec"),
        ("   ", "empty spec"),
        ("ij,,jk", "term 1 is empty"),
        ("i1,1k", "non-letter index '1'"),
        ("ij,jk->iz", "output index 'z' is absent"),
        ("iij,jk", "repeated inside term 'iij'"),
        ("ij,jk->ii", "repeated in the output"),
        ("ij,jk->i", "summed away"),
        ("ij->i->j", "more than one '->'"),
        ("->ij", "no input terms"),
    ],
)
def test_bad_specs_name_the_problem(spec, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(spec)


def test_non_string_spec_is_a_type_error():
    with pytest.raises(TypeError):
        parse_spec(["ij", "jk"])
