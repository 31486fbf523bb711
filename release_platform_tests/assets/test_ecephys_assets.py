"""Ecephys assets on the demo session: units, session NWB, per-probe LFP NWB and their blocking checks."""

from __future__ import annotations

import json

import dagster as dg
import h5py
import numpy as np
import pytest

from release_platform.nwb.readers import read_units


def _run(demo_lims, instance, key="4001"):
    from release_platform.definitions import defs

    instance.add_dynamic_partitions("ecephys_session", [key])
    return defs.resolve_job_def("ecephys_session_job").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )


@pytest.fixture
def instance(monkeypatch, demo_lims):
    monkeypatch.setenv("RELEASE_PLATFORM_LIMS_URL", demo_lims.url)
    with dg.instance_for_test() as inst:
        yield inst


def _checks(result):
    return {c.check_name: c.passed for c in (e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}


def test_session_and_lfp_nwb_pass_validation_and_inspector(demo_lims, instance, home, monkeypatch):
    from release_platform.ecephys import units as U

    grouped = []
    real = U.units_from_sorting
    monkeypatch.setattr(U, "units_from_sorting", lambda *a, **k: grouped.append(k.get("entity")) or real(*a, **k))
    result = _run(demo_lims, instance)
    assert result.success
    # spikes are grouped once per probe (by ecephys_units); the session NWB reads the grouped-units files
    probes = result.output_for_node("ecephys_units")["probes"]
    assert len(grouped) == len(probes) == len(demo_lims.ecephys_probes(4001))
    checks = _checks(result)
    for name in ("ecephys_session_nwb_pynwb_valid", "ecephys_session_nwb_inspector", "ecephys_session_nwb_units_content",
                 "ecephys_probe_lfp_nwb_pynwb_valid", "ecephys_probe_lfp_nwb_inspector"):
        assert checks[name] is True, name
    nwb = result.output_for_node("ecephys_session_nwb").paths[4001]
    assert demo_lims.well_known_file("EcephysSession", 4001, "EcephysNwb") == home / "storage/ecephys_session_nwb/4001/ecephys_session_4001.nwb"
    assert str(demo_lims.well_known_file("EcephysSession", 4001, "EcephysNwb")) == nwb

    # every unit's spike train equals the generated one (grouped from the sorter output by cluster)
    units = read_units(nwb)
    for probe in demo_lims.ecephys_probes(4001):
        sorting = probe["well_known_files"]["EcephysSortingDirectory"]
        times = np.load(sorting / "spike_times.npy") / probe["sampling_rate_hz"]
        clusters = np.load(sorting / "spike_clusters.npy")
        for unit in probe["units"]:
            expected = np.sort(times[clusters == unit["cluster_id"]])
            got = np.asarray(units.loc[units.index == unit["id"], "spike_times"].iloc[0])
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)

    # QC pictures per probe: every unit of the probe on the firing-rate-vs-depth figure; an LFP snippet per probe file
    qc = result.output_for_node("ecephys_session_qc_report")
    figures = {f["file"]: f for g in json.loads(open(qc["index"]).read())["groups"].values() for f in g}
    for probe in demo_lims.ecephys_probes(4001):
        n_units = int((units["probe_id"] == probe["id"]).sum())
        assert figures[f"probe_{probe['id']}_firing_rate_vs_depth.png"]["caption"] == f"{n_units} units"
        assert f"probe_{probe['id']}_spike_raster.png" in figures and f"probe_{probe['id']}_mean_waveforms.png" in figures
    assert sum(name.endswith("_lfp.png") for name in figures) == len(probes)

    # the orphan cluster of each probe is reported, not silently lost
    unknown = result.output_for_node("ecephys_units")["unknown_clusters"]
    with h5py.File(demo_lims.ecephys_probes(4001)[0]["well_known_files"]["GroundTruth"], "r") as truth:
        orphans = {str(int(c)) for c in truth["orphan_cluster_ids"][()]}
    assert set(unknown["probeA"]) == orphans

    # the units files hold the same grouping as the NWB, with the dropped clusters recorded
    for name, rec in probes.items():
        assert rec["file"] == str(home / f"storage/ecephys_units/4001/units_{name}.h5")
        g = U.read_grouping(rec["file"])
        assert {str(k): v for k, v in g.unknown_clusters.items()} == unknown.get(name, {})
        assert g.spike_times.size == rec["n_spikes"]
        for unit_id, times in g.split().items():
            np.testing.assert_array_equal(np.asarray(units.loc[unit_id, "spike_times"]), times)


def test_missing_lfp_fails_only_the_lfp_asset(demo_lims, instance, home, tmp_path):
    probe = demo_lims.ecephys_probes(4001)[1]
    demo_lims.register_file("EcephysProbe", probe["id"], "EcephysLfp", tmp_path / "absent_lfp.h5")
    result = _run(demo_lims, instance)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [f.step_key for f in failures] == ["ecephys_probe_lfp_nwb"]
    message = failures[0].event_specific_data.error.message
    assert "ecephys_session 4001: LFP NWB failed for ['probeB']" in message and "absent_lfp.h5" in message
    materialized = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert {"ecephys_session_nwb", "ecephys_units"} <= materialized
    # the session metadata links every probe's LFP file, so it waits for the LFP asset: skipped, not failed
    assert "ecephys_session_metadata" not in materialized
    assert (home / "storage/ecephys_probe_lfp_nwb/4001/lfp_probe_4101.nwb").exists()
    assert not (home / "storage/ecephys_probe_lfp_nwb/4001/lfp_probe_4102.nwb").exists()
