"""The ophys processing assets end to end on a synthetic session with ground truth."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import h5py
import numpy as np
import pytest

from data_fixtures.ophys import OphysParams, generate_ophys_session
from data_fixtures.seed import Donor, register_donor, register_ophys_session
from release_platform.lims import LimsClient
from release_platform.ophys.io import read_traces

SESSION = "2001"
PLANE = "2101"


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """One 100 s plane (20 ROIs, overlapping pairs, one unconverged-like ROI) through the ophys job."""
    root = tmp_path_factory.mktemp("ophys_assets")
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEASE_PLATFORM_LIMS_URL", f"sqlite:///{root / 'lims.sqlite'}")
    mp.setenv("RELEASE_PLATFORM_STORAGE", str(root / "storage"))
    client = LimsClient()
    client.upgrade()
    _, specimen = register_donor(client, Donor("m-ophys", "F", dt.datetime(2026, 1, 1), ("Slc17a7-IRES2-Cre",), ("Ai93(TITL-GCaMP6f)",)))
    params = OphysParams(n_frames=3000, n_rois=20, neuropil_slow_amplitude=0.3, neuropil_event_amplitude=0.15)
    spec = generate_ophys_session(root / "raw", ophys_session_id=int(SESSION), ophys_experiment_ids=(int(PLANE),), params=params, seed=3)
    register_ophys_session(client, spec, specimen_id=specimen, project="VisualBehavior", equipment="CAM2P.4",
                           date_of_acquisition=dt.datetime(2026, 9, 1))
    from release_platform.definitions import defs

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("ophys_session", [SESSION])
        result = defs.resolve_job_def("ophys_session_job").execute_in_process(partition_key=SESSION, instance=instance)
        yield result, spec, root / "storage"
    client.dispose()
    mp.undo()


def _truth_rows(spec, roi_ids):
    with h5py.File(spec.planes[0].truth_path, "r") as t:
        order = [list(t["roi_ids"][()]).index(int(i)) for i in roi_ids]
        return {k: t[k][()][order] for k in ("expected_roi_traces", "expected_demixed_traces", "cell_traces", "r")}, [tuple(p) for p in t["overlap_pairs"][()]]


def test_every_asset_and_check_materializes(processed):
    result, _, storage = processed
    assert result.success
    keys = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert keys >= {"ophys_session_inputs", "roi_traces", "neuropil_traces", "demixed_traces", "neuropil_corrected_traces", "dff_traces"}
    checks = {c.check_name: c.passed for c in (e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}
    assert checks["neuropil_r_distribution"] is True and checks["dff_finite_for_valid_rois"] is True
    assert all(checks.values()), checks
    for name in ("roi_traces/2001/2101/roi_traces.h5", "demixed_traces/2001/2101/demixed_traces.h5",
                 "neuropil_corrected_traces/2001/2101/neuropil_correction.h5", "dff_traces/2001/2101/dff.h5"):
        assert (storage / name).is_file()
    assert not list(storage.rglob("*.inprogress"))


def test_extracted_traces_match_the_simulated_mean_fluorescence(processed):
    _, spec, storage = processed
    roi = read_traces(storage / "roi_traces/2001/2101/roi_traces.h5")
    truth, _ = _truth_rows(spec, roi.roi_ids)
    kept = np.isfinite(roi.traces).all(axis=1)
    assert kept.sum() >= 18  # the motion-border ROI is excluded
    rel = np.abs(roi.traces[kept] - truth["expected_roi_traces"][kept]) / truth["expected_roi_traces"][kept]
    assert np.median(rel) < 0.01 and rel.max() < 0.05  # shot noise only


def test_demixing_improves_overlapping_rois(processed):
    _, spec, storage = processed
    raw = read_traces(storage / "roi_traces/2001/2101/roi_traces.h5")
    demixed = read_traces(storage / "demixed_traces/2001/2101/demixed_traces.h5")
    truth, pairs = _truth_rows(spec, raw.roi_ids)
    ids = [int(i) for i in raw.roi_ids]
    gains = []
    for a, b in pairs:
        for rid in (a, b):
            i = ids.index(int(rid))
            if not np.isfinite(demixed.traces[i]).all():
                continue
            # the true demixed signal: this cell's fluorescence plus the neuropil inside its own mask
            target = truth["expected_demixed_traces"][i]
            before = np.corrcoef(raw.traces[i], target)[0, 1]
            after = np.corrcoef(demixed.traces[i], target)[0, 1]
            gains.append((round(before, 4), round(after, 4)))
    print("overlapping ROIs, correlation with the true demixed trace (raw, demixed):", gains)
    assert len(gains) >= 3, "too few overlapping ROIs survived demixing"
    assert all(after > before for before, after in gains), gains


def test_neuropil_ratio_recovered(processed):
    _, spec, storage = processed
    with h5py.File(storage / "neuropil_corrected_traces/2001/2101/neuropil_correction.h5", "r") as fh:
        r, status = fh["r"][()], fh["status"][()].astype(str)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in fh["roi_names"][()]]
    truth, _ = _truth_rows(spec, ids)
    clean = (truth["r"] <= 1.0) & (status == "fit")
    assert clean.sum() >= 15
    within = np.abs(r[clean] - truth["r"][clean]) <= 0.1
    assert within.mean() >= 0.9, np.round(r - truth["r"], 2)


def test_dff_finite_for_valid_rois_and_estimator_recorded(processed):
    result, _, storage = processed
    dff = read_traces(storage / "dff_traces/2001/2101/dff.h5")
    record = result.output_for_node("dff_traces")[PLANE]
    assert record["method"] == "allen_inactive" and record["baseline_window_clipped"] is True
    valid = np.isin([str(i) for i in dff.roi_ids], record["valid_roi_ids"])
    assert valid.sum() >= 15 and np.isfinite(dff.traces[valid]).all()
