"""Ecephys NWB writer on synthetic sessions with ground truth (data_fixtures.ecephys)."""

from __future__ import annotations

import datetime as dt
import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.ecephys import EcephysParams, generate_ecephys_session
from data_fixtures.spec import corrupt_file
from release_platform.ecephys import units as U
from release_platform.errors import InputError
from release_platform.modules import write_ecephys_nwb as module
from release_platform.ecephys import probes as P
from release_platform.nwb import ecephys as E
from release_platform.nwb import readers as R
from release_platform.nwb.inspection import inspect_nwb
from release_platform.nwb.protocol import H5DatasetIterator, NwbWriteError, read_provenance

SESSION_ID = 7001
START = "2021-03-04T10:00:00+00:00"
METADATA = dict(
    specimen_name="Vip-IRES-Cre;Ai32-512345",
    age_in_days=110,
    full_genotype="Vip-IRES-Cre/wt;Ai32/wt",
    strain="C57BL/6J",
    sex="M",
    stimulus_name="brain_observatory_1.1",
    species="Mus musculus",
    donor_id=512345,
)


def _inputs(spec, output_path, **overrides) -> E.EcephysNwbInputs:
    probes = [
        dict(
            id=p.probe_id,
            name=p.name,
            sorting_dir=os.fspath(p.sorting_dir),
            sampling_rate=p.sampling_rate_hz,
            lfp_sampling_rate=p.lfp_sampling_rate_hz,
            amplitude_scale_factor=p.amplitude_scale_factor,
            channels=list(p.channels),
            units=list(p.units),
            lfp=None if p.lfp_path is None else dict(input_data_path=os.fspath(p.lfp_path)),
        )
        for p in spec.probes
    ]
    raw = dict(
        output_path=os.fspath(output_path),
        session_id=spec.ecephys_session_id,
        session_start_time=START,
        stimulus_table_path=os.fspath(spec.stimulus_table_path),
        running_speed_path=os.fspath(spec.running_speed_path),
        optotagging_table_path=os.fspath(spec.optotagging_table_path),
        invalid_epochs=[dict(id=1, type="EcephysProbe", label="probeA", start_time=10.0, end_time=12.5)],
        session_metadata=METADATA,
        probes=probes,
    )
    raw.update(overrides)
    return E.EcephysNwbInputs.model_validate(raw)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecephys")
    spec = generate_ecephys_session(root / "data", ecephys_session_id=SESSION_ID, probe_ids=(11, 12),
                                    channel_id_start=1000, unit_id_start=2000, seed=3)
    inputs = _inputs(spec, root / "out" / "session.nwb")
    outputs = E.write_ecephys_nwb(inputs)
    return spec, inputs, outputs


def _expected(probe):
    with h5py.File(probe.truth_path, "r") as t:
        truth = {k: t[k][()] for k in ("unit_ids", "unit_cluster_ids", "orphan_cluster_ids", "cluster_spike_counts",
                                       "spike_amplitudes_v", "template_amplitude")}
    samples = np.load(probe.sorting_dir / "spike_times.npy").reshape(-1)
    clusters = np.load(probe.sorting_dir / "spike_clusters.npy").reshape(-1)
    return truth, samples, clusters


def test_every_spike_train_and_amplitude_reads_back_as_generated(session):
    spec, _, outputs = session
    units = R.read_units(outputs.nwb_path)
    for probe in spec.probes:
        truth, samples, clusters = _expected(probe)
        for uid, c in zip(truth["unit_ids"], truth["unit_cluster_ids"]):
            sel = np.flatnonzero(clusters == c)
            order = np.argsort(samples[sel], kind="stable")
            np.testing.assert_array_equal(units.loc[uid, "spike_times"], samples[sel][order] / probe.sampling_rate_hz)
            assert len(units.loc[uid, "spike_times"]) == truth["cluster_spike_counts"][c]
            np.testing.assert_allclose(units.loc[uid, "spike_amplitudes"], truth["spike_amplitudes_v"][sel][order], rtol=1e-6)
            assert units.loc[uid, "cluster_id"] == c and units.loc[uid, "probe_id"] == probe.probe_id
        assert all(np.all(np.diff(units.loc[uid, "spike_times"]) >= 0) for uid in truth["unit_ids"])


def test_template_amplitudes_match_the_truth(session):
    spec, _, _ = session
    for probe in spec.probes:
        truth, _, _ = _expected(probe)
        s = U.load_sorting(probe.sorting_dir)
        np.testing.assert_allclose(U.template_amplitudes(s.templates, s.whitening_mat_inv), truth["template_amplitude"], rtol=1e-6)


def test_orphan_clusters_are_reported_not_lost(session):
    spec, _, outputs = session
    for probe in spec.probes:
        truth, _, clusters = _expected(probe)
        assert len(truth["orphan_cluster_ids"]) >= 1
        reported = {int(k): v for k, v in outputs.unknown_clusters[probe.name].items()}
        assert reported == {int(c): int(truth["cluster_spike_counts"][c]) for c in truth["orphan_cluster_ids"]}
        assert any(probe.name in w and "no unit claims" in w for w in outputs.warnings)
    assert outputs.n_spikes + sum(sum(d.values()) for d in outputs.unknown_clusters.values()) == sum(
        len(np.load(p.sorting_dir / "spike_times.npy")) for p in spec.probes
    )


def test_units_table_metrics_waveforms_and_electrodes(session):
    spec, _, outputs = session
    units = R.read_units(outputs.nwb_path)
    electrodes = R.read_electrodes(outputs.nwb_path)
    assert set(P.UNIT_METRICS) <= set(units.columns)
    for probe in spec.probes:
        mw = np.load(probe.sorting_dir / "mean_waveforms.npy")
        channel_ids = [c["id"] for c in sorted(probe.channels, key=lambda c: c["probe_channel_number"])]
        for rec in probe.units:
            row = units.loc[rec["id"]]
            assert row["firing_rate"] == pytest.approx(rec["firing_rate"])
            assert row["snr"] == pytest.approx(rec["snr"])
            assert np.isnan(row["l_ratio"])
            assert row["peak_channel_id"] == rec["peak_channel_id"] and row["quality"] == "good"
            np.testing.assert_allclose(row["waveform_mean"], mw[rec["cluster_id"]])
            np.testing.assert_array_equal(electrodes.index[row["electrodes"]], channel_ids)
        for ch in probe.channels:
            e = electrodes.loc[ch["id"]]
            assert (e["x"], e["y"], e["z"]) == (ch["anterior_posterior_ccf_coordinate"], ch["dorsal_ventral_ccf_coordinate"],
                                                ch["left_right_ccf_coordinate"])
            assert e["location"] == ch["structure_acronym"]
            assert bool(e["valid_data"]) == ch["valid_data"]
            assert e["probe_channel_number"] == ch["probe_channel_number"] and e["probe_id"] == probe.probe_id
            assert e["probe_vertical_position"] == ch["probe_vertical_position"]
            assert e["group_name"] == probe.name
    assert list(electrodes["group_name"].unique()) == sorted(p.name for p in spec.probes)


def test_lfp_reads_back_equal_to_the_input(session):
    spec, _, outputs = session
    for probe, out in zip(spec.probes, outputs.probe_outputs):
        assert out.id == probe.probe_id and out.error is None
        assert os.path.basename(out.nwb_path) == f"lfp_probe_{probe.probe_id}.nwb"
        lfp = R.read_lfp(out.nwb_path)
        with h5py.File(probe.lfp_path, "r") as f:
            np.testing.assert_array_equal(lfp.data, f["data"][()])
            assert lfp.data.dtype == f["data"].dtype
            np.testing.assert_allclose(lfp.timestamps, f["timestamps"][()], rtol=0, atol=1e-9)
            np.testing.assert_array_equal(lfp.electrode_ids, f["channel_ids"][()])
            assert lfp.conversion == pytest.approx(f["data"].attrs["conversion"])
        with h5py.File(out.nwb_path, "r") as f:
            assert list(f["acquisition"]) == [f"probe_{probe.probe_id}_lfp"]  # the LFP is there once
            assert list(f[f"acquisition/probe_{probe.probe_id}_lfp"]) == [f"probe_{probe.probe_id}_lfp_data"]
            assert f[f"acquisition/probe_{probe.probe_id}_lfp/probe_{probe.probe_id}_lfp_data/data"].compression == "gzip"
        assert read_provenance(out.nwb_path)["inputs"]["lfp_data"]["file"] == probe.lfp_path.name
        with h5py.File(out.nwb_path, "r") as f:  # the CSD module is inspected with the LFP below
            assert "current_source_density" in f["processing"]


def test_lfp_is_streamed_not_loaded(session):
    spec, inputs, _ = session
    nwb = E.build_lfp_nwbfile(inputs, inputs.probes[0])
    series = nwb.acquisition[f"probe_{inputs.probes[0].id}_lfp"].electrical_series[f"probe_{inputs.probes[0].id}_lfp_data"]
    assert isinstance(series.data, H5DatasetIterator)
    series.data.close()


def test_inspector_dandi_config_finds_nothing_blocking(session):
    _, _, outputs = session
    for path in [outputs.nwb_path] + [p.nwb_path for p in outputs.probe_outputs]:
        report = inspect_nwb(path, config="dandi")
        bad = report.at("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")
        assert bad == [], f"{path}: {bad}"


def test_stimulus_optotagging_running_and_invalid_times(session):
    spec, _, outputs = session
    stim = pd.read_csv(spec.stimulus_table_path)
    for name, group in stim.groupby("stimulus_name"):
        table = R.read_intervals(outputs.nwb_path, f"{name}_presentations")
        assert len(table) == len(group)
        np.testing.assert_allclose(table["start_time"], np.sort(group["start_time"].to_numpy()))
        for col in group.columns:
            if group[col].isna().all():
                assert col not in table.columns
    opto = pd.read_csv(spec.optotagging_table_path)
    table = R.read_intervals(outputs.nwb_path, "processing/optotagging/optogenetic_stimulation")
    assert len(table) == len(opto)
    assert {"condition", "level", "duration", "stimulus_name"} <= set(table.columns)
    invalid = R.read_intervals(outputs.nwb_path, "invalid_times")
    assert list(invalid["tags"].iloc[0]) == ["EcephysProbe", "1", "probeA"]
    running = pd.read_csv(spec.running_speed_path)
    with h5py.File(outputs.nwb_path, "r") as f:
        np.testing.assert_allclose(f["processing/running/running_speed/data"][()], running["speed"].to_numpy())
        assert f["general/subject/age"][()].decode() == "P110D"
        assert f["general/subject/sex"][()].decode() == "M"
        assert f["general/session_id"][()].decode() == str(SESSION_ID)


def test_two_writes_give_identical_dataset_contents(session, tmp_path):
    spec, inputs, outputs = session
    full = E.write_ecephys_nwb(inputs.model_copy(update={"output_path": os.fspath(tmp_path / "session.nwb")}))
    assert full.nwb_path != outputs.nwb_path

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) and
                         h5py.check_dtype(ref=obj.dtype) is None else None)
        return out

    for a, b in [(outputs.nwb_path, full.nwb_path)] + [(x.nwb_path, y.nwb_path) for x, y in zip(outputs.probe_outputs, full.probe_outputs)]:
        da, db = datasets(a), datasets(b)
        assert da.keys() == db.keys()
        for k in da:
            va, vb = np.asarray(da[k]), np.asarray(db[k])
            assert va.shape == vb.shape and (np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")), k


def test_missing_lfp_file_fails_that_probe_only(tmp_path):
    spec = generate_ecephys_session(tmp_path / "data", ecephys_session_id=SESSION_ID + 1, probe_ids=(21, 22),
                                    channel_id_start=3000, unit_id_start=4000, seed=5)
    os.remove(spec.probes[1].lfp_path)
    out_dir = tmp_path / "out"
    outputs = E.write_ecephys_nwb(_inputs(spec, out_dir / "session.nwb"))
    assert os.path.exists(outputs.nwb_path)
    ok, failed = outputs.probe_outputs
    assert ok.error is None and os.path.exists(ok.nwb_path)
    assert failed.nwb_path == "" and failed.error is not None
    assert spec.probes[1].name in failed.error and os.fspath(spec.probes[1].lfp_path) in failed.error
    assert "missing" in failed.error
    assert outputs.errors == [failed.error]
    assert not (out_dir / "lfp_probe_22.nwb").exists()
    assert (out_dir / "lfp_probe_22.nwb.error").exists()


def test_missing_optional_inputs_give_a_valid_file(tmp_path):
    spec = generate_ecephys_session(tmp_path / "data", ecephys_session_id=SESSION_ID + 2, probe_ids=(31,),
                                    channel_id_start=5000, unit_id_start=6000, params=EcephysParams(write_lfp=False), seed=6)
    inputs = _inputs(spec, tmp_path / "out" / "session.nwb", optotagging_table_path=None, running_speed_path=None,
                     stimulus_table_path=None, invalid_epochs=[])
    outputs = E.write_ecephys_nwb(inputs)
    assert [p.nwb_path for p in outputs.probe_outputs] == [""]
    report = inspect_nwb(outputs.nwb_path)
    assert report.at("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION") == []
    with h5py.File(outputs.nwb_path, "r") as f:
        assert "processing" not in f or "optotagging" not in f["processing"]
    assert len(R.read_units(outputs.nwb_path)) == len(spec.probes[0].units)


def test_skip_probes(session, tmp_path):
    spec, inputs, _ = session
    with pytest.raises(InputError, match=r"skip_probes names unknown probes \['probeZ'\]"):
        E.write_ecephys_nwb(inputs.model_copy(update={"skip_probes": ["probeZ"], "output_path": os.fspath(tmp_path / "s.nwb")}))
    assert list(tmp_path.iterdir()) == []
    out = E.write_ecephys_nwb(inputs.model_copy(update={"skip_probes": [spec.probes[0].name],
                                                        "output_path": os.fspath(tmp_path / "s.nwb")}))
    units = R.read_units(out.nwb_path)
    assert set(units.index) == {u["id"] for u in spec.probes[1].units}
    assert [p.name for p in out.probe_outputs] == [spec.probes[1].name]
    assert not (tmp_path / f"lfp_probe_{spec.probes[0].probe_id}.nwb").exists()


def test_corrupt_sorter_output_leaves_only_the_error_file(tmp_path):
    spec = generate_ecephys_session(tmp_path / "data", ecephys_session_id=SESSION_ID + 3, probe_ids=(41,),
                                    channel_id_start=7000, unit_id_start=8000, params=EcephysParams(write_lfp=False), seed=7)
    corrupt_file(spec.probes[0].sorting_dir / "spike_times.npy")
    out = tmp_path / "out" / "session.nwb"
    with pytest.raises(NwbWriteError) as exc:
        E.write_ecephys_nwb(_inputs(spec, out))
    assert f"ecephys_session {SESSION_ID + 3}" in str(exc.value) and "spike_times.npy" in str(exc.value)
    assert sorted(p.name for p in out.parent.iterdir()) == ["session.nwb.error"]


def test_module_writes_output_json(session, tmp_path):
    spec, inputs, _ = session
    raw = json.loads(inputs.model_dump_json())
    raw["output_path"] = os.fspath(tmp_path / "session.nwb")
    raw["probes"] = [{**p, "lfp": None} for p in raw["probes"]]
    (tmp_path / "in.json").write_text(json.dumps(raw))
    status = module.main_for(module.Inputs, module.run, "test",
                             ["--input_json", os.fspath(tmp_path / "in.json"), "--output_json", os.fspath(tmp_path / "out.json")])
    assert status == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["nwb_path"] == raw["output_path"]
    assert [p["id"] for p in out["probe_outputs"]] == [p.probe_id for p in spec.probes]
    assert all(p["nwb_path"] == "" for p in out["probe_outputs"])
    raw["eye_gaze_mapping_path"] = "x"  # an AllenSDK input this writer does not take
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    assert module.main_for(module.Inputs, module.run, "test",
                           ["--input_json", os.fspath(tmp_path / "bad.json"), "--output_json", os.fspath(tmp_path / "o2.json")]) == 2


def test_inputs_from_lims_records(lims, tmp_path):
    from data_fixtures import seed
    from release_platform.inputs import resolve_session

    spec = generate_ecephys_session(tmp_path / "data", ecephys_session_id=SESSION_ID + 4, probe_ids=(51, 52),
                                    channel_id_start=9000, unit_id_start=9500, params=EcephysParams(lfp_duration_s=1.0), seed=8)
    donor = seed.Donor("512399", "F", dt.datetime(2020, 11, 1), driver_line=("Vip-IRES-Cre",), reporter_line=("Ai32",))
    _, specimen_id = seed.register_donor(lims, donor)
    seed.register_ecephys_session(lims, spec, specimen_id=specimen_id, project="VisualBehaviorNeuropixels", equipment="NP.1",
                                  date_of_acquisition=dt.datetime(2021, 3, 4, 10, 0, 0))
    session = resolve_session(lims, "ecephys_session", SESSION_ID + 4)
    inputs = E.EcephysNwbInputs.from_session(session, lims.ecephys_probes(SESSION_ID + 4), output_path=tmp_path / "out" / "s.nwb")
    assert inputs.session_metadata.age_in_days == (dt.datetime(2021, 3, 4) - dt.datetime(2020, 11, 1)).days
    outputs = E.write_ecephys_nwb(inputs)
    units = R.read_units(outputs.nwb_path)
    for probe in spec.probes:
        truth, samples, clusters = _expected(probe)
        uid, c = truth["unit_ids"][0], truth["unit_cluster_ids"][0]
        np.testing.assert_array_equal(units.loc[uid, "spike_times"], np.sort(samples[clusters == c]) / probe.sampling_rate_hz)
    assert all(p.error is None and p.nwb_path for p in outputs.probe_outputs)
    assert inspect_nwb(outputs.nwb_path).at("CRITICAL", "BEST_PRACTICE_VIOLATION") == []


def _with_units_files(inputs, tmp_path, output_path):
    """``inputs`` writing to ``output_path`` with every probe's grouping precomputed into a units file."""
    probes = []
    for probe in inputs.probes:
        path = U.write_grouping(tmp_path / "units" / f"units_{probe.name}.h5", P.probe_units(probe, entity=E.probe_entity(inputs, probe)).grouping)
        probes.append(probe.model_copy(update={"units_file": os.fspath(path)}))
    return inputs.model_copy(update={"probes": probes, "output_path": os.fspath(output_path)})


def test_session_file_from_units_files_is_identical_and_does_not_regroup(session, tmp_path, monkeypatch):
    _, inputs, _ = session
    plain = inputs.model_copy(update={"output_path": os.fspath(tmp_path / "plain" / "session.nwb")})
    cached = _with_units_files(inputs, tmp_path, tmp_path / "cached" / "session.nwb")
    result_plain, report_plain = E.write_session_nwb(plain)

    def no_regrouping(*args, **kwargs):
        raise AssertionError("spikes were grouped again although a units file was given")

    monkeypatch.setattr(U, "units_from_sorting", no_regrouping)
    monkeypatch.setattr(U, "group_spikes", no_regrouping)
    result_cached, report_cached = E.write_session_nwb(cached)

    assert result_cached.path.read_bytes() == result_plain.path.read_bytes()
    assert report_cached == report_plain and report_cached.unknown_clusters and any(report_cached.unknown_clusters.values())


def test_units_file_that_does_not_match_the_probe_is_an_input_error_naming_it(session, tmp_path):
    _, inputs, _ = session
    probe = inputs.probes[0]
    g = P.probe_units(probe, entity=E.probe_entity(inputs, probe)).grouping
    order = np.arange(len(g.unit_ids))[::-1]  # same units, other order
    reordered = U.SpikeGrouping(g.unit_ids[order], g.spike_times, g.ends, g.values, g.unknown_clusters, g.n_dropped_negative)
    fewer = U.SpikeGrouping(g.unit_ids[:-1], g.spike_times[: g.ends[-2]], g.ends[:-1],
                            {k: v[: g.ends[-2]] for k, v in g.values.items()}, g.unknown_clusters, g.n_dropped_negative)
    no_amplitudes = U.SpikeGrouping(g.unit_ids, g.spike_times, g.ends, {}, g.unknown_clusters, g.n_dropped_negative)
    for name, bad, expected in [("reordered", reordered, "in another order"),
                                ("fewer", fewer, f"units not in the file \\[{int(g.unit_ids[-1])}\\]"),
                                ("no_amplitudes", no_amplitudes, "no spike_amplitudes")]:
        path = U.write_grouping(tmp_path / f"{name}.h5", bad)
        broken = probe.model_copy(update={"units_file": os.fspath(path)})
        with pytest.raises(InputError, match=expected) as exc:
            P.probe_units(broken, entity=E.probe_entity(inputs, broken))
        assert f"{name}.h5" in str(exc.value) and probe.name in str(exc.value)
    with pytest.raises(InputError, match="grouped-units file is missing") as exc:
        P.probe_units(probe.model_copy(update={"units_file": os.fspath(tmp_path / "absent.h5")}), entity=E.probe_entity(inputs, probe))
    assert "absent.h5" in str(exc.value)


def test_units_file_is_accepted_in_the_input_json(session, tmp_path):
    _, inputs, _ = session
    raw = inputs.model_dump(mode="json")
    raw["probes"][0]["units_file"] = "/some/units_probeA.h5"
    assert E.EcephysNwbInputs.model_validate(raw).probes[0].units_file == "/some/units_probeA.h5"
    assert all(p.units_file is None for p in inputs.probes)  # the module's inputs recompute by default
