"""The checks registry: one definition of blocking, pure checks recovering known faults, and their asset-check form."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from release_platform.assets.checks import asset_check_result
from release_platform.nwb.inspection import InspectionReport
from release_platform.qc import BLOCKING, CHECKS, Importance, is_blocking
from release_platform.qc import nwb as qc_nwb
from release_platform.qc import ophys as qc_ophys


def test_blocking_is_every_level_but_the_suggestion():
    assert {level.name for level in BLOCKING} == {"ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION"}
    assert is_blocking("BEST_PRACTICE_VIOLATION") and not is_blocking(Importance.BEST_PRACTICE_SUGGESTION)


def test_every_registered_check_has_a_unique_id_and_a_description():
    import release_platform.qc.stimulus  # noqa: F401  (registers its check)

    assert {"nwb.pynwb_validation", "nwb.inspector", "nwb.units_content", "ophys.neuropil_r_distribution",
            "ophys.dff_finite_for_valid_rois", "stimulus.responsive_fraction"} <= set(CHECKS)
    for check_id, spec in CHECKS.items():
        assert spec.check_id == check_id and spec.description and spec.function.check_id == check_id


def test_dff_check_names_exactly_the_valid_rois_with_nonfinite_values():
    rng = np.random.default_rng(0)
    dff = rng.normal(size=(6, 50))
    dff[1, 10] = np.nan      # valid: reported
    dff[3, :] = np.inf       # valid: reported
    dff[4, 0] = np.nan       # not valid: ignored
    ids = ["10", "11", "12", "13", "14", "15"]
    plane = qc_ophys.PlaneDff("ophys_experiment 7", "/x/dff.h5", dff, ids, ["10", "11", "12", "13", "15"])
    result = qc_ophys.check_dff_finite({"7": plane})
    assert not result.passed and result.blocking
    assert result.metadata["rois_with_nonfinite_dff"] == {"7": ["11", "13"]}
    assert result.metadata["valid_rois_checked"] == 5
    assert "ophys_experiment 7: /x/dff.h5" in result.message and "11, 13" in result.message
    dff[[1, 3]] = 0.0
    assert qc_ophys.check_dff_finite({"7": plane}).passed


def test_neuropil_check_warns_above_the_unconverged_fraction():
    status = np.array(["fit"] * 8 + ["unconverged", "negative_baseline", "skipped"])
    r = np.linspace(0.3, 0.9, len(status))
    result = qc_ophys.check_neuropil_r_distribution({"7": qc_ophys.PlaneRatios("plane 7", r, status)})
    # 2 of the 10 ROIs that were fit needed the fallback: 20% > 10%
    assert not result.passed and not result.blocking
    assert result.metadata["worst_unconverged_fraction"] == pytest.approx(0.2)
    assert "plane 7: 2 of 10 ROIs" in result.message
    assert qc_ophys.check_neuropil_r_distribution({"7": qc_ophys.PlaneRatios("plane 7", r, status)}, max_fraction=0.25).passed


def _report(path: str, *importances: str) -> InspectionReport:
    messages = [{"importance": imp, "check_function_name": f"check_{i}", "message": f"problem {i}", "location": "/"}
                for i, imp in enumerate(importances)]
    counts = {level: sum(m["importance"] == level for m in messages) for level in
              ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION", "BEST_PRACTICE_SUGGESTION")}
    return InspectionReport(path=path, config="dandi", counts=counts, messages=messages)


def test_inspector_check_blocks_on_the_registry_levels_only():
    assert qc_nwb.inspector_result({"a.nwb": _report("a.nwb", "BEST_PRACTICE_SUGGESTION")}).passed
    for level in ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION"):
        result = qc_nwb.inspector_result({"a.nwb": _report("a.nwb", "BEST_PRACTICE_SUGGESTION", level)})
        assert not result.passed, level
        assert list(result.metadata["blocking_messages"]["a.nwb"][0].values())[0] == level
        assert result.metadata["best_practice_suggestions"] == 1


def test_asset_check_result_carries_outcome_severity_and_metadata():
    failed = asset_check_result(qc_nwb.inspector_result({"a.nwb": _report("a.nwb", "CRITICAL")}))
    assert isinstance(failed, dg.AssetCheckResult)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "NWB Inspector failed for a.nwb: 1 problem(s)" in failed.description
    assert failed.metadata["check_id"].value == "nwb.inspector"
    status = np.array(["unconverged"] * 5 + ["fit"] * 5)
    warned = asset_check_result(qc_ophys.check_neuropil_r_distribution(
        {"1": qc_ophys.PlaneRatios("p", np.full(10, 0.7), status)}))
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
