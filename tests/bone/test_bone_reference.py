"""The reference file: the shipped copies load, look-ups work, and bad files list every problem."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from osteonode.bone import (
    DxaManufacturer,
    MeasurementSite,
    Sex,
    standardized_bmd_calibration,
)
from osteonode.config import ConfigError
from osteonode.reference import MissingReferenceError, check_reference, load_reference

REPO = Path(__file__).resolve().parents[2]
SITE_FILE = REPO / "node_config" / "reference.toml"
GE, HOLOGIC = DxaManufacturer.GE_LUNAR, DxaManufacturer.HOLOGIC
SPINE, NECK, TOTAL_HIP = MeasurementSite

MINIMAL = """
[lumbar]
site_manufacturer = "hologic"

[[young_adult]]
manufacturer = "hologic"
site = "lumbar_l1_l4"
sex = "F"
mean = 1.047
sd = 0.110
source = "test"

[[calibration]]
from = "ge_lunar"
to = "hologic"
site = "lumbar_l1_l4"
slope = 0.856
intercept = -0.016
source = "test"
"""


def shipped_text() -> str:
    return resources.files("osteonode").joinpath("defaults/reference.toml").read_text("utf-8")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reference.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> dict[str, str]:
    problems = check_reference(write(tmp_path, text))
    return {problem.key: problem.reason for problem in problems}


def test_site_copy_is_identical_to_the_shipped_default():
    assert SITE_FILE.read_text("utf-8") == shipped_text()


def test_shipped_reference_loads_without_a_site_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_reference() == []
    data = load_reference()
    neck = data.young_adult(HOLOGIC, NECK, Sex.FEMALE)
    assert (neck.mean, neck.sd) == (0.858, 0.120)
    assert "NHANES III" in neck.source and "not re-checked" in neck.source
    hip = data.young_adult("hologic", "total_hip", "F")
    assert (hip.mean, hip.sd) == (0.942, 0.122)
    spine = data.young_adult(HOLOGIC, SPINE, Sex.FEMALE)
    assert (spine.mean, spine.sd) == (1.047, 0.110)
    assert "NOT confirmed" in spine.source


def test_site_file_in_the_working_directory_is_read(tmp_path, monkeypatch):
    (tmp_path / "node_config").mkdir()
    (tmp_path / "node_config" / "reference.toml").write_text(MINIMAL.replace("1.047", "1.050"))
    monkeypatch.chdir(tmp_path)
    assert load_reference().young_adult(HOLOGIC, SPINE, Sex.FEMALE).mean == 1.050


def test_repository_site_file_loads():
    assert check_reference(SITE_FILE) == []
    assert load_reference(SITE_FILE).lumbar.site_manufacturer is HOLOGIC


def test_lumbar_calibration_of_a_ge_lunar_model_is_the_study_equation_by_default():
    calibration = load_reference(SITE_FILE).lumbar_calibration(GE)
    assert (calibration.slope, calibration.intercept) == (0.856, -0.016)
    assert (calibration.from_manufacturer, calibration.to_manufacturer) == (GE, HOLOGIC)
    assert "Yan" in calibration.source and "Inamori" in calibration.source


def test_reverse_spine_calibration_is_genants_published_equation():
    calibration = load_reference(SITE_FILE).calibration(HOLOGIC, GE, SPINE)
    assert (calibration.slope, calibration.intercept) == (1.074, 0.054)


def test_same_manufacturer_needs_no_entry():
    assert load_reference(SITE_FILE).calibration(HOLOGIC, HOLOGIC, SPINE).is_identity


@pytest.mark.parametrize("site", [NECK, TOTAL_HIP])
@pytest.mark.parametrize(("source", "target"), [(GE, HOLOGIC), (HOLOGIC, GE)])
def test_shipped_hip_calibrations_agree_with_standardized_bmd(site, source, target):
    shipped = load_reference(SITE_FILE).calibration(source, target, site)
    derived = standardized_bmd_calibration(site, source, target)
    assert shipped.slope == pytest.approx(derived.slope, abs=5e-6)
    assert shipped.intercept == pytest.approx(derived.intercept, abs=5e-6)


def test_missing_young_adult_reference_says_what_is_missing(tmp_path):
    data = load_reference(write(tmp_path, MINIMAL))
    expected = "manufacturer=hologic, site=femoral_neck, sex=M"
    with pytest.raises(MissingReferenceError, match=expected):
        data.young_adult(HOLOGIC, NECK, Sex.MALE)


def test_missing_calibration_says_what_is_missing(tmp_path):
    data = load_reference(write(tmp_path, MINIMAL))
    expected = "no calibration from hologic to ge_lunar at lumbar_l1_l4"
    with pytest.raises(MissingReferenceError, match=expected):
        data.calibration(HOLOGIC, GE, SPINE)


def test_every_bad_value_is_reported_with_its_key(tmp_path):
    text = MINIMAL + """
[[young_adult]]
manufacturer = "norland"
site = "femoral_neck"
sex = "O"
mean = 2.5
sd = 0.0
source = ""
colour = "blue"
"""
    problems = problems_of(tmp_path, text)
    assert set(problems) == {
        "young_adult.1.manufacturer", "young_adult.1.sex", "young_adult.1.mean",
        "young_adult.1.sd", "young_adult.1.source", "young_adult.1.colour",
    }
    assert "norland" in problems["young_adult.1.manufacturer"]
    assert problems["young_adult.1.sex"] == "a reference population is 'F' or 'M'"
    assert "less than or equal to 2" in problems["young_adult.1.mean"]
    assert "greater than 0" in problems["young_adult.1.sd"]
    assert problems["young_adult.1.colour"] == "unknown key"


def test_mean_below_the_physical_range_is_refused(tmp_path):
    problems = problems_of(tmp_path, MINIMAL.replace("mean = 1.047", "mean = 0.1"))
    assert "greater than or equal to 0.2" in problems["young_adult.0.mean"]


def test_duplicate_entries_are_reported(tmp_path):
    young = MINIMAL[MINIMAL.index("[[young_adult]]"):MINIMAL.index("[[calibration]]")]
    calibration = MINIMAL[MINIMAL.index("[[calibration]]"):]
    problems = problems_of(tmp_path, MINIMAL + young + calibration)
    assert problems == {
        "young_adult.1": "duplicate of young_adult.0 (hologic, lumbar_l1_l4, F)",
        "calibration.1": "duplicate of calibration.0 (ge_lunar -> hologic, lumbar_l1_l4)",
    }


def test_calibration_to_the_same_manufacturer_is_refused(tmp_path):
    text = MINIMAL + '[[calibration]]\nfrom = "hologic"\nto = "hologic"\nsite = "total_hip"\n' \
        'slope = 1.0\nintercept = 0.0\nsource = "x"\n'
    assert "identity is implied" in problems_of(tmp_path, text)["calibration.1"]


def test_site_manufacturer_without_a_reference_is_reported(tmp_path):
    text = MINIMAL.replace('site_manufacturer = "hologic"', 'site_manufacturer = "ge_lunar"')
    problems = problems_of(tmp_path, text)
    assert problems == {
        "lumbar.site_manufacturer": "no [[young_adult]] reference for ge_lunar at lumbar_l1_l4",
    }


def test_model_on_the_site_scale_needs_no_calibration(tmp_path):
    data = load_reference(write(tmp_path, MINIMAL))
    assert data.lumbar_calibration(HOLOGIC).is_identity


def test_model_scale_without_a_conversion_to_the_site_is_a_clear_error(tmp_path):
    text = MINIMAL.replace('site_manufacturer = "hologic"', 'site_manufacturer = "ge_lunar"')
    text = text.replace('manufacturer = "hologic"\nsite = "lumbar_l1_l4"', 'manufacturer = "ge_lunar"\nsite = "lumbar_l1_l4"')
    data = load_reference(write(tmp_path, text))
    with pytest.raises(MissingReferenceError, match="no calibration from hologic to ge_lunar"):
        data.lumbar_calibration(HOLOGIC)


def test_calibration_coefficients_are_checked(tmp_path):
    problems = problems_of(tmp_path, MINIMAL.replace("slope = 0.856", "slope = -0.856"))
    assert "greater than 0" in problems["calibration.0.slope"]
    problems = problems_of(tmp_path, MINIMAL.replace("intercept = -0.016", "intercept = nan"))
    assert "calibration.0.intercept" in problems


def test_missing_sections_are_reported(tmp_path):
    assert problems_of(tmp_path, "") == {
        "lumbar": "Field required", "young_adult": "Field required"
    }


def test_load_raises_one_error_listing_every_problem(tmp_path):
    text = MINIMAL.replace("sd = 0.110", "sd = 0").replace("slope = 0.856", "slope = 0")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_reference(path)
    assert raised.value.source == str(path)
    assert [p.key for p in raised.value.problems] == ["young_adult.0.sd", "calibration.0.slope"]
    assert "young_adult.0.sd: " in str(raised.value)


def test_unreadable_and_malformed_files_are_reported(tmp_path):
    (problem,) = check_reference(tmp_path / "absent.toml")
    assert problem.key == "(file)" and "cannot read" in problem.reason
    (problem,) = check_reference(write(tmp_path, "[lumbar\n"))
    assert problem.key == "(file)" and "not valid TOML" in problem.reason
