"""Output UIDs are the same for the same analysis and differ when anything about it changes."""

from __future__ import annotations

import dataclasses

import pytest
from pydicom.uid import UID
from reports_cases import DIAGNOSTIC_MODEL, SYNTHETIC_MODEL

from osteonode.reports.uids import OutputKind, device_uid, output_uids, tracking_uid

SOURCE = "1.2.3.4.5.6"


def test_the_same_analysis_gets_the_same_uids() -> None:
    first = output_uids(SOURCE, SYNTHETIC_MODEL, OutputKind.COMPREHENSIVE_3D_SR)
    again = output_uids(
        SOURCE, dataclasses.replace(SYNTHETIC_MODEL), OutputKind.COMPREHENSIVE_3D_SR
    )
    assert first == again


@pytest.mark.parametrize(
    "changed",
    [
        {"source": "1.2.3.4.5.7"},
        {"model": dataclasses.replace(SYNTHETIC_MODEL, name="lumbar-demo2")},
        {"model": dataclasses.replace(SYNTHETIC_MODEL, version="1.2.1")},
        {"kind": OutputKind.COMPREHENSIVE_SR},
        {"kind": OutputKind.SECONDARY_CAPTURE},
    ],
    ids=["source", "model-name", "model-version", "sr-class", "capture"],
)
def test_any_changed_input_gives_different_uids(changed: dict[str, object]) -> None:
    base = {"source": SOURCE, "model": SYNTHETIC_MODEL, "kind": OutputKind.COMPREHENSIVE_3D_SR}
    before = output_uids(base["source"], base["model"], base["kind"])  # type: ignore[arg-type]
    base.update(changed)
    after = output_uids(base["source"], base["model"], base["kind"])  # type: ignore[arg-type]
    assert before.series_instance_uid != after.series_instance_uid
    assert before.sop_instance_uid != after.sop_instance_uid


def test_output_uids_are_valid_and_series_differs_from_instance() -> None:
    for kind in OutputKind:
        uids = output_uids(SOURCE, DIAGNOSTIC_MODEL, kind)
        for uid in (uids.series_instance_uid, uids.sop_instance_uid):
            assert UID(uid).is_valid and len(uid) <= 64 and uid.startswith("2.25.")
        assert uids.series_instance_uid != uids.sop_instance_uid


def test_tracking_uids_name_one_finding_of_one_analysis() -> None:
    l1 = tracking_uid(SOURCE, SYNTHETIC_MODEL, "L1")
    assert l1 == tracking_uid(SOURCE, SYNTHETIC_MODEL, "L1")
    assert l1 != tracking_uid(SOURCE, SYNTHETIC_MODEL, "L2")
    assert l1 != tracking_uid("1.2.3.4.5.7", SYNTHETIC_MODEL, "L1")
    assert UID(l1).is_valid


def test_device_uid_is_stable_per_node_name() -> None:
    assert device_uid("node-a") == device_uid("node-a") != device_uid("node-b")


def test_empty_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="source_sop_instance_uid"):
        output_uids("", SYNTHETIC_MODEL, OutputKind.SECONDARY_CAPTURE)
    with pytest.raises(ValueError, match="finding_name"):
        tracking_uid(SOURCE, SYNTHETIC_MODEL, "")
    with pytest.raises(TypeError, match="ModelIdentity"):
        output_uids(SOURCE, "lumbar-demo", OutputKind.SECONDARY_CAPTURE)  # type: ignore[arg-type]
