"""Every coded concept in the reports agrees with pydicom's concept dictionary, or says its source."""

from __future__ import annotations

from functools import cache

import pytest
from pydicom.sr.codedict import codes as dictionary

from osteonode.bone import WHO_CATEGORIES, Category, Laterality
from osteonode.pipelines.base import FindingSite
from osteonode.reports import codes


@cache
def _meanings(scheme: str) -> dict[str, set[str]]:
    collection = getattr(dictionary, scheme)
    meanings: dict[str, set[str]] = {}
    for keyword in collection.dir():
        concept = getattr(collection, keyword)
        meanings.setdefault(concept.value, set()).add(concept.meaning)
    return meanings


@pytest.mark.parametrize("name", sorted(codes.all_codes()))
def test_every_code_is_in_the_dictionary_with_its_meaning_or_cites_a_source(name: str) -> None:
    code = codes.all_codes()[name]
    in_dictionary = _meanings(code.scheme_designator).get(code.value)
    if code in codes.OUTSIDE_DICTIONARY:
        assert in_dictionary is None, f"{name} is in the dictionary now; drop it from the list"
        assert code.value in codes.OUTSIDE_DICTIONARY[code], "the source must name the code"
    else:
        assert in_dictionary is not None, f"{name} ({code.value}) is not in pydicom's dictionary"
        assert code.meaning in in_dictionary


def test_the_codes_outside_the_dictionary_are_few_and_named() -> None:
    assert {code.value for code in codes.OUTSIDE_DICTIONARY} == {
        "24966-4",
        "24701-5",
        "38267-1",
        "38263-0",
        "64859006",
        "312894000",
        "g/cm2",
        "{T-score}",
        "24972-2",
        "30745-4",
        "24762-7",
        "C0034375",
    }


def test_codes_used_by_highdicom_templates_are_the_dictionary_concepts() -> None:
    assert codes.CERTAINTY_OF_FINDING == dictionary.DCM.CertaintyOfFinding
    assert codes.ESTIMATED == dictionary.SCT.Estimated
    assert codes.PERCENT == dictionary.UCUM.Percent
    assert codes.L1_VERTEBRA == dictionary.cid7151.L1Vertebra


def test_every_finding_site_side_and_category_has_a_code() -> None:
    assert {codes.finding_site_code(site).value for site in FindingSite} == {
        "66794005",
        "14293000",
        "36470004",
        "11994002",
        "122496007",
        "816094009",
        "29836001",
    }
    assert codes.laterality_code(Laterality.LEFT) == codes.LEFT
    assert codes.laterality_code(Laterality.RIGHT) == codes.RIGHT
    assert codes.category_code(Category.OSTEOPOROSIS).value == "64859006"
    assert codes.category_code(Category.LOW_BONE_MASS).value == "312894000"
    assert codes.category_code(Category.NORMAL).value == "17621005"


def test_not_osteoporosis_is_encoded_as_osteoporosis_absent_never_as_a_who_code() -> None:
    assert codes.category_evaluation(Category.NOT_OSTEOPOROSIS) == (codes.OSTEOPOROSIS, codes.ABSENT)
    with pytest.raises(ValueError, match="no WHO category"):
        codes.category_code(Category.NOT_OSTEOPOROSIS)
    for who in WHO_CATEGORIES:
        assert codes.category_evaluation((who)) == (
            codes.CLASSIFICATION,
            codes.category_code((who)),
        )


def test_vertebrae_use_lumbar_and_hips_use_femur_observables() -> None:
    for site in (FindingSite.L1, FindingSite.L4, FindingSite.LUMBAR_SPINE):
        assert codes.bmd_concept(site) == codes.BMD_LUMBAR_SPINE
        assert codes.t_score_concept(site) == codes.T_SCORE_LUMBAR_SPINE
    assert codes.bmd_concept(FindingSite.HIP) == codes.BMD_FEMUR
    assert codes.t_score_concept(FindingSite.HIP) == codes.T_SCORE_FEMUR


def test_the_chest_has_no_dxa_observable() -> None:
    with pytest.raises(ValueError, match="chest"):
        codes.bmd_concept(FindingSite.CHEST)
    with pytest.raises(ValueError, match="chest"):
        codes.t_score_concept(FindingSite.CHEST)
