"""Banner lines, summary and series descriptions say the answer, the numbers and the caveats."""

from __future__ import annotations

import dataclasses

import pytest
from reports_cases import DIAGNOSTIC_MODEL, SYNTHETIC_MODEL, Case

from osteonode.pipelines.base import Finding, FindingSite
from osteonode.reports import banner_lines, summary_text
from osteonode.reports.text import series_description


def test_lumbar_banner_gives_the_answer_each_vertebra_and_the_caveats(
    cases: dict[str, Case],
) -> None:
    lines = banner_lines(cases["lumbar"].result)
    text = "\n".join(lines)
    assert lines[0] == "Osteoporosis, T-score -2.5"
    assert "L1 0.812 g/cm2 T -2.1" in text
    assert "L3 0.951 g/cm2 T -0.9 excluded (T-score differs by more than 1.0" in text
    assert "L1-L4 0.772 g/cm2 T -2.5" in text
    assert "lumbar-demo 1.2.0 - Preliminary, unverified AI result" in lines
    assert lines[-1] == "Synthetic demonstration model - not for diagnostic use"
    assert all(len(line) <= 90 for line in lines)


def test_chest_banner_gives_each_stage_probability_and_cut_off(cases: dict[str, Case]) -> None:
    text = "\n".join(banner_lines(cases["chest"].result))
    assert "Low bone mass (osteopenia)" in text
    assert "Stage 1: osteoporosis p 31% (cut-off 50%) no osteoporosis" in text
    assert "Stage 2: low bone mass p 72% (cut-off 50%) low bone mass (osteopenia)" in text
    assert "No heat-map computed" in text
    assert "Research model - not for diagnostic use" in text


def test_hip_banner_says_which_side_could_not_be_assessed(cases: dict[str, Case]) -> None:
    lines = banner_lines(cases["hip"].result)
    assert "Left hip not evaluable (hip prosthesis)" in "\n".join(lines)
    assert not any("diagnostic use" in line for line in lines)


def test_hip_banner_without_osteoporosis_says_not_osteoporosis_and_no_who_category(
    cases: dict[str, Case],
) -> None:
    result = cases["hip_negative"].result
    lines = banner_lines(result)
    text = "\n".join(lines)
    assert lines[0] == "Not osteoporosis"
    assert "Right hip p 23% (cut-off 50%) not osteoporosis" in text
    assert "Left hip p 41% (cut-off 50%) not osteoporosis" in text
    assert "osteopenia" not in text.lower() and "normal" not in text.lower()
    assert "Result: Not osteoporosis" in summary_text(result)


def test_not_evaluable_banner_and_summary_give_the_reason(cases: dict[str, Case]) -> None:
    result = cases["not_evaluable"].result
    lines = banner_lines(result)
    # Said once, large, then why: never "not evaluable: not evaluable: ...".
    assert lines[:2] == ["Not evaluable", "Reason: fewer than two of L1-L4 could be measured"]
    assert "\n".join(lines).lower().count("not evaluable") == 2  # the film, and L2's own line
    assert "Result: Not evaluable: fewer than two of L1-L4 could be measured" in summary_text(
        result
    )


def test_sites_refused_for_the_films_own_reason_do_not_repeat_it(cases: dict[str, Case]) -> None:
    refused = cases["not_evaluable"].result
    reason = refused.reason
    sites = tuple(
        Finding(name, FindingSite(name), evaluable=False, included=False, reason=reason)
        for name in ("L1", "L2", "L3", "L4")
    )
    lines = banner_lines(dataclasses.replace(refused, findings=sites))
    assert "\n".join(lines).count(reason) == 1
    assert "L1 not evaluable | L2 not evaluable | L3 not evaluable" in "\n".join(lines)


def test_summary_lists_findings_notes_model_and_disclaimer(cases: dict[str, Case]) -> None:
    summary = summary_text(cases["lumbar"].result)
    assert summary.startswith("osteonode lumbar result (preliminary, unverified ai result)")
    assert "  L2 0.745 g/cm2 T -2.7" in summary
    assert "Notes:\n  WHO categories assume" in summary
    assert "Model: lumbar-demo 1.2.0 (resnet18-regressor)" in summary
    assert summary.endswith("Synthetic demonstration model - not for diagnostic use\n")


def test_series_description_fits_a_long_string_and_keeps_the_disclaimer() -> None:
    assert series_description(DIAGNOSTIC_MODEL, "SR") == "hip-vgg-nl 2.0 SR"
    long_model = dataclasses.replace(SYNTHETIC_MODEL, name="a-very-long-model-name-" * 3)
    description = series_description(long_model, "SC")
    assert len(description) == 64 and description.endswith(" - NOT FOR DIAGNOSTIC USE")


def test_text_functions_refuse_what_is_not_a_result() -> None:
    with pytest.raises(TypeError, match="Result"):
        banner_lines({"category": "normal"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Result"):
        summary_text(None)  # type: ignore[arg-type]
