import pytest

from core.labels import (LABELS, TRAITS, UnknownLabel, check_label_space, label_space,
                              normalize_label)


def test_vocabularies_match_the_paper_tables():
    assert TRAITS == ("gender", "location", "occupation")
    assert [len(LABELS[t]) for t in TRAITS] == [2, 6, 8]
    assert LABELS["location"] == ("center", "southeast", "northwest", "north", "northeast", "west")
    assert LABELS["occupation"][0] == "others" and LABELS["occupation"][-1] == "health"


@pytest.mark.parametrize("trait,value,expected", [
    ("gender", "Mujer", "female"), ("gender", " HOMBRE ", "male"), ("gender", "female", "female"),
    ("location", "centro", "center"), ("location", "Sureste", "southeast"),
    ("location", "noroeste", "northwest"), ("location", "norte", "north"),
    ("location", "noreste", "northeast"), ("location", "occidente", "west"),
    ("occupation", "otros", "others"), ("occupation", "arte", "arts"),
    ("occupation", "estudiante", "student"), ("occupation", "social", "social"),
    ("occupation", "ciencias", "sciences"), ("occupation", "deportes", "sports"),
    ("occupation", "administrativo", "administrative"), ("occupation", "SALUD", "health"),
    ("occupation", "Salúd", "health"),
])
def test_aliases_and_case(trait, value, expected):
    assert normalize_label(trait, value) == expected


def test_unknown_label_suggests():
    with pytest.raises(UnknownLabel) as info:
        normalize_label("location", "nort")
    assert str(info.value) == (
        "unknown location label 'nort' (did you mean 'north'?); expected one of: "
        "center, southeast, northwest, north, northeast, west")


def test_unknown_label_without_suggestion():
    with pytest.raises(UnknownLabel, match=r"unknown gender label 'xyz'; expected one of: female, male"):
        normalize_label("gender", "xyz")


def test_label_space_round_trip():
    space = label_space()
    check_label_space(space)
    space["gender"] = ["male", "female"]
    with pytest.raises(ValueError, match="label vocabularies differ"):
        check_label_space(space)
