"""The icephys assets on the seeded demo cells: tables, blocking checks, LIMS write-back, bad input."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pandas as pd
import pytest

from release_platform.lims import LimsClient

CELLS = ("5001", "5002")


@pytest.fixture(scope="module")
def materialized(seeded_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("icephys_assets")
    shutil.copyfile(seeded_demo / "lims.sqlite", root / "lims.sqlite")
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEASE_PLATFORM_LIMS_URL", f"sqlite:///{root / 'lims.sqlite'}")
    mp.setenv("RELEASE_PLATFORM_STORAGE", str(root / "storage"))
    client = LimsClient()
    from release_platform.definitions import defs

    job = defs.resolve_job_def("icephys_cell_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("icephys_cell", list(CELLS))
        results = {cell: job.execute_in_process(partition_key=cell, instance=instance) for cell in CELLS}
        rerun = job.execute_in_process(partition_key=CELLS[0], instance=instance)
        yield results, rerun, root / "storage", client, job, instance, root
    client.dispose()
    mp.undo()


def _truth(client, cell):
    return json.loads(client.well_known_file("IcephysCell", int(cell), "GroundTruth").read_text())


def test_every_cell_materializes_with_passing_blocking_checks(materialized):
    results, rerun, storage, *_ = materialized
    for cell, result in {**results, "rerun": rerun}.items():
        assert result.success, cell
        keys = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
        assert keys == {"icephys_cell_inputs", "icephys_sweep_table", "icephys_cell_qc", "icephys_cell_features", "icephys_cell_nwb",
                        "icephys_cell_metadata", "icephys_cell_release_files", "icephys_cell_qc_report"}
        # QC pictures: the sweeps by stimulus type and the f-I curve of the cell's long squares
        qc = json.loads(open(result.output_for_node("icephys_cell_qc_report")["index"]).read())
        (figures,) = qc["groups"].values()
        assert [f["name"] for f in figures] == ["sweeps_by_stimulus_type", "fi_curve"]
        sweeps = pd.read_parquet(result.output_for_node("icephys_extraction", "icephys_sweep_table")["file"])
        long_squares = ((sweeps["stimulus_type"] == "Long Square") & (sweeps["clamp_mode"] == "current")).sum()
        assert figures[1]["caption"].startswith(f"{long_squares} sweeps"), figures[1]
        checks = {c.check_name: c.passed for c in (e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")}
        assert checks == {"icephys_sweep_table_schema": True, "icephys_cell_qc_schema": True, "icephys_cell_features_schema": True,
                          "icephys_cell_metadata_schema": True}
    assert not list(storage.rglob("*.inprogress"))


@pytest.mark.parametrize("cell", CELLS)
def test_tables_recover_the_demo_cells(materialized, cell):
    _, _, storage, client, *_ = materialized
    truth = _truth(client, cell)
    sweeps = pd.read_parquet(storage / "icephys_sweep_table" / cell / "icephys_sweep_table.parquet")
    assert sweeps["sweep_number"].tolist() == [s["sweep_number"] for s in truth["sweeps"]]
    assert sweeps["spike_count"].tolist() == [s["spike_count"] for s in truth["sweeps"]]
    assert sweeps["stimulus_type"].tolist() == [s["stimulus_type"] for s in truth["sweeps"]]
    assert sweeps["passed"].all() and (sweeps["icephys_cell_id"] == int(cell)).all()
    qc = pd.read_parquet(storage / "icephys_cell_qc" / cell / "icephys_cell_qc.parquet").iloc[0]
    assert qc["initial_access_resistance_mohm"] == pytest.approx(truth["access_resistance_mohm"], rel=0.02)
    assert qc["blowout_mv"] == pytest.approx(truth["blowout_mv"], rel=0.02)
    assert qc["passed"] and qc["layout"] == "icephys_tables"
    features = pd.read_parquet(storage / "icephys_cell_features" / cell / "icephys_cell_features.parquet").iloc[0]
    assert features["input_resistance_mohm"] == pytest.approx(truth["input_resistance_mohm"], rel=0.05)
    assert features["tau_ms"] == pytest.approx(truth["tau_ms"], rel=0.05)
    assert features["rheobase_pa"] == pytest.approx(truth["rheobase_sweep_amplitude_pa"], abs=1e-3)
    out = json.loads((storage / "icephys_cell_qc" / cell / "extract_nwb_data.json").read_text())
    assert set(out) >= {"experiment_data", "sweep_data", "cell_features"}


def test_cell_qc_is_written_back_to_lims_once(materialized):
    _, _, storage, client, *_ = materialized
    for cell in CELLS:
        row = client.icephys_cell_qc(cell)
        qc = pd.read_parquet(storage / "icephys_cell_qc" / cell / "icephys_cell_qc.parquet").iloc[0]
        assert row["seal_gohm"] == pytest.approx(qc["seal_gohm"]) and row["passed"] is True
        assert row["input_resistance_mohm"] == pytest.approx(qc["input_resistance_mohm"])
        assert row["cell_tags"] == [] and row["fail_reasons"] == []
    assert client.exists("icephys_cell_qc_results", icephys_cell_id=int(CELLS[0]))
    # the re-run replaced the row instead of adding one
    import sqlalchemy as sa

    from release_platform.lims import schema

    with client.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.icephys_cell_qc_results)).scalar()
    assert n == len(CELLS)


def test_a_file_without_current_clamp_fails_only_its_partition(materialized, tmp_path):
    """A valid NWB file with only test-pulse sweeps: one clear failure naming the cell and the file."""
    import warnings

    from data_fixtures.icephys import IcephysDefects, IcephysParams, generate_icephys_cell
    from data_fixtures.seed import register_icephys_cell

    _, _, storage, client, job, instance, _ = materialized
    p = IcephysParams()
    n_cc = len(p.long_square_amplitudes_pa) + len(p.short_square_amplitudes_pa) + 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = generate_icephys_cell(tmp_path, cell_specimen_id=5099, params=p, seed=1,
                                     defects=IcephysDefects(omit=tuple(range(3, 3 + n_cc))))
    specimen = client.session("icephys_cell", 5001)["specimen_id"]
    register_icephys_cell(client, spec, specimen_id=specimen, project="CellTypes", structure="VISp")
    instance.add_dynamic_partitions("icephys_cell", ["5099"])
    result = job.execute_in_process(partition_key="5099", instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    message = failures[0].event_specific_data.error.message
    assert "icephys_cell 5099" in message and "cell_5099.nwb" in message and "no current-clamp sweep" in message
    assert not (storage / "icephys_sweep_table" / "5099").exists()
    assert client.icephys_cell_qc(5099) is None


@pytest.fixture(scope="module")
def cells_table(materialized):
    """The release-level ``icephys_cells_table`` of the demo cells, materialized once for the release tests."""
    from release_platform.assets import icephys as ai
    from release_platform.assets import release as ar

    _, _, storage, _, _, instance, _ = materialized
    resources = {"storage": ar.StorageResource(root=str(storage))}
    table = dg.materialize([ai.icephys_cells_table, ai.icephys_cells_table_valid], instance=instance, resources=resources)
    return table, pd.read_parquet(storage / "icephys_cells_table" / "icephys_cells_table.parquet"), resources


def _sha256(path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


def test_release_ships_the_cells_table_and_dandi_named_nwb_files(materialized, cells_table):
    from release_platform.assets import release as ar
    from release_platform.release.manifest import load_manifest
    from release_platform.release.verify import verify_release

    _, _, storage, client, _, instance, _ = materialized
    table, cells, resources = cells_table
    assert table.success
    assert [c.passed for c in table.get_asset_check_evaluations()] == [True]
    assert cells["icephys_cell_id"].tolist() == [int(c) for c in CELLS]
    for row in cells.itertuples():
        truth = _truth(client, row.icephys_cell_id)
        assert row.cell_qc_passed and row.rheobase_pa == pytest.approx(truth["rheobase_sweep_amplitude_pa"], abs=1e-3)
        assert row.tau_ms == pytest.approx(truth["tau_ms"], rel=0.05)
        assert row.initial_access_resistance_mohm == pytest.approx(truth["access_resistance_mohm"], rel=0.02)

    instance.add_dynamic_partitions("release_version", ["1.0.0"])
    release = dg.materialize([ar.release_manifest, *ar.RELEASE_CHECKS], partition_key="1.0.0", instance=instance, resources=resources,
                             run_config={"ops": {"release_manifest": {"config": {"project": "cells", "layout": "dandi"}}}})
    assert release.success and all(c.passed for c in release.get_asset_check_evaluations())
    project = storage / "release_manifest" / "1.0.0" / "cells"
    manifest = load_manifest(project / "manifests" / "cells_manifest_v1.0.0.json")
    assert sorted(manifest["metadata_files"]) == ["icephys_cells_table"]
    assert len(manifest["data_files"]) == len(CELLS)
    from release_platform.release.dandi import nwb_organize_record, organize_names

    sources = [client.well_known_file("IcephysCell", int(cell), "IcephysNwb") for cell in cells["icephys_cell_id"]]
    names = organize_names([nwb_organize_record(source) for source in sources])  # as dandi organize names them
    assert all(name.endswith("_icephys.nwb") for name in names), names
    for name, source in zip(names, sources):
        assert _sha256(project / name) == _sha256(source)
    assert verify_release(project).ok


def test_allen_layout_release_ships_byte_identical_cell_files_and_verifies(materialized, cells_table, capsys):
    from release_platform.assets import release as ar
    from release_platform.cli import main
    from release_platform.release.manifest import load_manifest

    _, _, storage, client, _, instance, _ = materialized
    table, cells, resources = cells_table
    assert table.success
    instance.add_dynamic_partitions("release_version", ["1.0.0-allen"])
    release = dg.materialize([ar.release_manifest, *ar.RELEASE_CHECKS], partition_key="1.0.0-allen", instance=instance,
                             resources=resources,
                             run_config={"ops": {"release_manifest": {"config": {"project": "cells_allen", "layout": "allen"}}}})
    assert release.success and all(c.passed for c in release.get_asset_check_evaluations())
    project = storage / "release_manifest" / "1.0.0-allen" / "cells_allen"
    manifest = load_manifest(next((project / "manifests").glob("cells_allen_manifest_v*.json")))
    assert sorted(manifest["metadata_files"]) == ["icephys_cells_table"]
    assert len(manifest["data_files"]) == len(CELLS)
    shipped = sorted(p.relative_to(project).as_posix() for p in project.rglob("*.nwb"))
    assert shipped == sorted(f"icephys_cells/{cell}/icephys_cell_{cell}.nwb" for cell in cells["icephys_cell_id"])
    for cell in cells["icephys_cell_id"]:
        released = project / "icephys_cells" / str(cell) / f"icephys_cell_{cell}.nwb"
        assert _sha256(released) == _sha256(client.well_known_file("IcephysCell", int(cell), "IcephysNwb"))
    capsys.readouterr()
    assert main(["verify", str(project)]) == 0
    # the same command fails once a shipped cell file no longer matches its manifest entry
    released = project / "icephys_cells" / str(cells["icephys_cell_id"].iloc[0]) / f"icephys_cell_{cells['icephys_cell_id'].iloc[0]}.nwb"
    original = released.read_bytes()
    try:
        released.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        assert main(["verify", str(project)]) == 1
        assert released.name in capsys.readouterr().out
    finally:
        released.write_bytes(original)
    assert main(["verify", str(project)]) == 0
