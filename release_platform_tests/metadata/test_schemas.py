"""The pandera models reject a wrong dtype, a duplicate id, a dangling reference and a missing file, and report
which column and which rows; Parquet round trips keep tables valid; the data dictionary is up to date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from release_platform.errors import InputError
from release_platform.metadata import FileLinks, LimsRows, TABLES, build_tables, columns_of, validate_table, validate_tables
from release_platform.metadata import dictionary
from release_platform.metadata.io import read_parquet, write_csv, write_parquet
from release_platform.metadata.schemas import empty_table
from release_platform_tests.metadata import touch

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 9, 1, 9, 30)


def rows() -> LimsRows:
    """A tiny in-memory LIMS: one mouse, a training session, an ophys session with two planes, an ecephys session."""
    return LimsRows(
        donors=pd.DataFrame({"donor_id": [1], "mouse_id": ["m1"], "full_genotype": ["Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt"],
                             "date_of_birth": [dt.datetime(2026, 3, 1)], "sex": ["F"]}),
        genotypes=pd.DataFrame({"donor_id": [1, 1], "genotype": ["Sst-IRES-Cre", "Ai148(TIT2L-GC6f-ICL-tTA2)"],
                                "genotype_type": ["driver", "reporter"]}),
        behavior_sessions=pd.DataFrame({
            "behavior_session_id": [11, 12], "ophys_session_id": [None, 21], "ecephys_session_id": [None, None], "donor_id": [1, 1],
            "session_type": ["TRAINING_1_gratings", "OPHYS_1_images_A"], "date_of_acquisition": [T0, T0 + dt.timedelta(days=1)],
            "project_code": ["VisualBehavior"] * 2, "equipment_name": ["BEH.1"] * 2, "foraging_id": [None, None],
            "workflow_state": ["passed"] * 2}),
        ophys_sessions=pd.DataFrame({
            "ophys_session_id": [21], "donor_id": [1], "session_type": ["OPHYS_1_images_A"], "date_of_acquisition": [T0 + dt.timedelta(days=1)],
            "project_code": ["VisualBehavior"], "equipment_name": ["CAM2P.4"], "name": ["s"], "workflow_state": ["passed"]}),
        ophys_experiments=pd.DataFrame({
            "ophys_experiment_id": [211, 212], "ophys_session_id": [21, 21], "imaging_depth": [175, 275],
            "targeted_structure": ["VISp", "VISp"], "imaging_plane_group": [None, None], "workflow_state": ["passed"] * 2}),
        cell_rois=pd.DataFrame({"cell_roi_id": [1, 2, 3], "cell_specimen_id": [None, 7, None], "ophys_experiment_id": [211, 211, 212]}),
        ecephys_sessions=pd.DataFrame({
            "ecephys_session_id": [31], "donor_id": [1], "session_type": ["EPHYS_1_images_G"], "date_of_acquisition": [T0 + dt.timedelta(days=2)],
            "project_code": ["VBN"], "equipment_name": ["NP.1"], "name": ["e"], "workflow_state": ["passed"]}),
        probes=pd.DataFrame({"ecephys_probe_id": [311], "ecephys_session_id": [31], "name": ["probeA"], "sampling_rate_hz": [30000.0],
                             "lfp_sampling_rate_hz": [2500.0], "phase": ["1.0"]}),
        channels=pd.DataFrame({"ecephys_channel_id": [3111, 3112], "ecephys_probe_id": [311, 311], "probe_channel_number": [0, 1],
                               "probe_vertical_position": [0.0, 20.0], "probe_horizontal_position": [43.0, 11.0],
                               "anterior_posterior_ccf_coordinate": [None, None], "dorsal_ventral_ccf_coordinate": [None, None],
                               "left_right_ccf_coordinate": [None, None], "structure_acronym": ["VISp", None], "valid_data": [True, False]}),
        units=pd.DataFrame({"unit_id": [1], "ecephys_channel_id": [3111], "cluster_id": [0], "local_index": [0], "quality": ["good"],
                            "metrics": [{"firing_rate": 2.0}]}),
    )


@pytest.fixture
def tables():
    return build_tables(rows()).tables


def failures_of(report):
    return {(f["column"], f["check"]): f for f in report.failures}


def test_built_tables_are_valid(tables):
    reports = validate_tables(tables, require_parents=True)
    assert all(r.passed for r in reports.values()), [r.summary() for r in reports.values()]


def test_wrong_dtype_is_rejected(tables):
    bad = tables["ophys_experiment_table"].copy()
    bad["imaging_depth"] = bad["imaging_depth"].astype("float64")
    report = validate_table("ophys_experiment_table", bad)
    assert not report.passed
    f = failures_of(report)[("imaging_depth", "dtype('Int64')")]
    assert f["failure_values"] == ["float64"]
    bad = tables["behavior_session_table"].copy()
    bad.loc[0, "ophys_experiment_id"] = "[1, 2]"  # a string where a list belongs
    f = failures_of(validate_table("behavior_session_table", bad))[("ophys_experiment_id", "list_of_ids")]
    assert f["row_ids"] == [11] and f["n_rows"] == 1


def test_duplicate_id_is_rejected_naming_the_rows(tables):
    cells = tables["ophys_cells_table"].copy()
    cells.loc[2, "cell_roi_id"] = 1
    report = validate_table("ophys_cells_table", cells)
    f = failures_of(report)[("cell_roi_id", "field_uniqueness")]
    assert f["n_rows"] == 2 and f["row_ids"] == [1, 1]
    assert "cell_roi_id fails field_uniqueness in 2 row(s)" in report.summary()
    with pytest.raises(InputError, match="invalid release table ophys_cells_table"):
        report.raise_if_failed()


def test_dangling_references_are_rejected(tables):
    cells = tables["ophys_cells_table"].copy()
    cells.loc[0, "ophys_experiment_id"] = 999
    report = validate_table("ophys_cells_table", cells, parents={"ophys_experiment_table": tables["ophys_experiment_table"]})
    f = failures_of(report)[("<table>", "references_ophys_experiment_table:ophys_experiment_id")]
    assert f["row_ids"] == [1]
    units = tables["units"].copy()
    units["ecephys_probe_id"] = pd.array([999], dtype="Int64")  # the channel exists, but not on that probe
    failed = {k[1] for k in failures_of(validate_table("units", units, parents=tables))}
    assert failed == {"references_channels:ecephys_channel_id,ecephys_probe_id,ecephys_session_id",
                      "references_probes:ecephys_probe_id,ecephys_session_id"}
    exps = tables["ophys_experiment_table"].copy()
    exps.loc[1, "ophys_session_id"] = 22
    assert not validate_table("ophys_experiment_table", exps, parents=tables).passed
    # A parent that is required but absent fails rather than passing silently.
    report = validate_table("ophys_cells_table", tables["ophys_cells_table"], parents={}, require_parents=True)
    assert report.missing_parents == ["ophys_experiment_table"] and not report.passed


def test_missing_file_is_rejected_in_every_mode(tables, tmp_path):
    files = {211: str(touch(tmp_path / "e211.nwb")), 212: str(touch(tmp_path / "e212.nwb"))}
    for mode in ("error", "warn", "skip"):
        built = build_tables(rows(), files=FileLinks(paths={"behavior_ophys_nwb": files}), on_missing_file=mode,
                             tables=["ophys_experiment_table"]).tables["ophys_experiment_table"]
        assert validate_table("ophys_experiment_table", built, check_files=True).passed
        Path(files[212]).unlink()  # the file disappears after the table was built
        report = validate_table("ophys_experiment_table", built, check_files=True)
        f = failures_of(report)[("<table>", "file_exists")]
        assert f["row_ids"] == [212], mode
        touch(Path(files[212]))


def test_file_id_must_follow_the_scheme(tables, tmp_path):
    built = build_tables(rows(), files=FileLinks(paths={"behavior_nwb": {11: str(touch(tmp_path / "b.nwb"))}}),
                         tables=["behavior_session_table"]).tables["behavior_session_table"]
    assert validate_table("behavior_session_table", built).passed
    built.loc[0, "file_id"] = 5
    assert ("<table>", "file_id_scheme") in failures_of(validate_table("behavior_session_table", built))
    built.loc[0, "file_id"] = pd.NA  # a path without an id
    assert ("<table>", "file_id_scheme") in failures_of(validate_table("behavior_session_table", built))


def test_allowed_values_and_nullability(tables):
    b = tables["behavior_session_table"].copy()
    b["sex"] = pd.array(["X", "F"], dtype="string")
    b["experience_level"] = pd.array(["Novel", "Familiar"], dtype="string")
    b.loc[1, "mouse_id"] = pd.NA
    f = failures_of(validate_table("behavior_session_table", b))
    assert f[("sex", "isin(['M', 'F', 'unknown'])")]["row_ids"] == [11]
    assert ("experience_level", "isin(['Training', 'Familiar', 'Novel 1', 'Novel >1', 'None'])") in f
    assert f[("mouse_id", "not_nullable")]["row_ids"] == [12]


def test_parquet_round_trip_keeps_tables_valid_and_csv_is_allen_like(tables, tmp_path):
    for name, frame in tables.items():
        back = read_parquet(name, write_parquet(name, frame, tmp_path / f"{name}.parquet"))
        pd.testing.assert_frame_equal(back, frame)
        assert validate_table(name, back).passed
        assert validate_table(name, empty_table(name)).passed
        assert list(empty_table(name).columns) == columns_of(name)
    csv = write_csv("behavior_session_table", tables["behavior_session_table"], tmp_path / "b.csv").read_text().splitlines()
    assert csv[0].split(",")[:3] == ["behavior_session_id", "ophys_session_id", "ecephys_session_id"]
    assert '"[211, 212]"' in csv[2] and "2026-09-02 09:30:00+00:00" in csv[2]
    with pytest.raises(InputError, match="Parquet file is missing"):
        read_parquet("units", tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="unreadable"):
        read_parquet("units", tmp_path / "bad.parquet")


def test_every_table_has_a_model_with_descriptions():
    for name, spec in TABLES.items():
        schema = spec.model.to_schema()
        assert schema.strict and schema.ordered and not schema.coerce
        assert all(col.description for col in schema.columns.values()), name
        assert spec.id_column == columns_of(name)[0]


def test_data_dictionary_is_up_to_date():
    committed = (REPO / "docs" / "data_dictionary.md").read_text()
    assert committed == dictionary.render(), "run: python -m release_platform.metadata.dictionary"
    assert dictionary.main(["--check", str(REPO / "docs" / "data_dictionary.md")]) == 0
