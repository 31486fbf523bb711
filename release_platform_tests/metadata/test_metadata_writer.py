"""The metadata_writer module: release selection by publication date, the four CSVs, §7.2 output JSON,
clobber protection and on_missing_file."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from release_platform.metadata import file_id
from release_platform.modules import metadata_writer
from release_platform.modules._harness import main_for
from release_platform_tests.metadata import LimsWorld, day, touch

RELEASE = dt.datetime(2026, 10, 1, 12, 0)


@pytest.fixture
def release_dirs(lims, tmp_path):
    w = LimsWorld(lims)
    w.donor("m1")
    w.behavior(1, "m1", "TRAINING_1_gratings", day(0))
    w.behavior(3, "m1", "TRAINING_3_images_A_10uL_reward", day(1))
    w.ophys(101, "m1", "OPHYS_1_images_A", day(2), [(1011, 175, "VISp", None, "passed", [(1, True, 5)])])
    w.behavior(2, "m1", "OPHYS_1_images_A", day(2), ophys_session_id=101)
    behavior_dir, ophys_dir = tmp_path / "behavior", tmp_path / "ophys"
    b1 = touch(behavior_dir / "1" / "behavior_session_1.nwb")
    b3 = touch(behavior_dir / "3" / "behavior_session_3.nwb")
    e = touch(ophys_dir / "1011" / "behavior_ophys_experiment_1011.nwb")
    w.publish("BehaviorSession", 1, "BehaviorNwb", b1, RELEASE)
    w.publish("BehaviorSession", 3, "BehaviorNwb", b3, RELEASE + dt.timedelta(days=30))  # a later release
    w.publish("OphysExperiment", 1011, "BehaviorOphysNwb", e, RELEASE)
    return behavior_dir, ophys_dir, tmp_path / "out"


def _run(tmp_path, lims_url, dirs, **over):
    behavior_dir, ophys_dir, out = dirs
    inputs = {"behavior_nwb_dir": str(behavior_dir), "ophys_nwb_dir": str(ophys_dir), "output_dir": str(out),
              "data_release_date": ["2026-10-01"], "lims_url": lims_url, **over}
    (tmp_path / "in.json").write_text(json.dumps(inputs))
    code = main_for(metadata_writer.Inputs, metadata_writer.run, "t",
                    ["--input_json", str(tmp_path / "in.json"), "--output_json", str(tmp_path / "out.json")])
    return code, (json.loads((tmp_path / "out.json").read_text()) if code == 0 else None)


def test_writes_the_release_tables_and_output_json(lims_url, release_dirs, tmp_path):
    code, output = _run(tmp_path, lims_url, release_dirs)
    assert code == 0
    out = release_dirs[2]
    names = ["behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table"]
    assert output["metadata_files"] == [str(out / f"{n}.csv") for n in names]
    assert output["project_name"] == "visual-behavior-ophys" and output["log_level"] == "INFO"
    assert output["data_pipeline_metadata"][0]["name"] == "release_platform"
    b = pd.read_csv(out / "behavior_session_table.csv").set_index("behavior_session_id")
    assert sorted(b.index) == [1, 2]  # 3 is published later; 2 comes with its released ophys session
    assert b.loc[1, "file_id"] == file_id("behavior_nwb", 1) and b.loc[1, "file_path"].endswith("/1/behavior_session_1.nwb")
    assert pd.isna(b.loc[2, "file_id"]) and b.loc[2, "ophys_experiment_id"] == "[1011]"
    e = pd.read_csv(out / "ophys_experiment_table.csv")
    assert e["file_id"].tolist() == [file_id("behavior_ophys_nwb", 1011)]
    assert pd.read_csv(out / "ophys_cells_table.csv")["cell_roi_id"].tolist() == [1]


def test_clobber_false_refuses_to_overwrite(lims_url, release_dirs, tmp_path, capsys):
    assert _run(tmp_path, lims_url, release_dirs)[0] == 0
    before = (release_dirs[2] / "ophys_session_table.csv").stat().st_mtime_ns
    code, _ = _run(tmp_path, lims_url, release_dirs)
    assert code == 1
    err = capsys.readouterr().err
    assert "output files already exist and clobber is false" in err and "ophys_session_table.csv" in err
    assert (release_dirs[2] / "ophys_session_table.csv").stat().st_mtime_ns == before
    assert _run(tmp_path, lims_url, release_dirs, clobber=True)[0] == 0


def test_on_missing_file(lims_url, release_dirs, tmp_path, capsys):
    (release_dirs[0] / "1" / "behavior_session_1.nwb").unlink()
    code, _ = _run(tmp_path, lims_url, release_dirs)
    assert code == 1 and "behavior_session 1:" in capsys.readouterr().err
    assert not (release_dirs[2] / "behavior_session_table.csv").exists()
    assert _run(tmp_path, lims_url, release_dirs, on_missing_file="warn", clobber=True)[0] == 0
    assert pd.isna(pd.read_csv(release_dirs[2] / "behavior_session_table.csv").set_index("behavior_session_id").loc[1, "file_id"])
    assert _run(tmp_path, lims_url, release_dirs, on_missing_file="skip", clobber=True)[0] == 0
    assert pd.read_csv(release_dirs[2] / "behavior_session_table.csv")["behavior_session_id"].tolist() == [2]


def test_bad_inputs_and_empty_release(lims_url, release_dirs, tmp_path, capsys):
    code, _ = _run(tmp_path, lims_url, release_dirs, data_release_date=["2020-01-01"])
    assert code == 1 and "no NWB files were published" in capsys.readouterr().err
    assert _run(tmp_path, lims_url, release_dirs, data_release_date=[])[0] == 2
    assert _run(tmp_path, lims_url, release_dirs, behavior_nwb_dir=str(tmp_path / "nope"))[0] == 2
    assert "not an existing directory" in capsys.readouterr().err
    # A null NWB dir: the table is written without file columns filled and nothing is "missing".
    code, _ = _run(tmp_path, lims_url, release_dirs, behavior_nwb_dir=None, clobber=True)
    assert code == 0
    assert pd.read_csv(release_dirs[2] / "behavior_session_table.csv")["file_id"].isna().all()


def test_a_full_disk_leaves_no_table_and_a_rerun_succeeds(lims_url, release_dirs, tmp_path, capsys, monkeypatch):
    import errno

    from release_platform.metadata import io as metadata_io

    out = release_dirs[2]
    real = metadata_io.write_csv
    calls = []

    def fill_up(name, frame, path):
        calls.append(name)
        if len(calls) == 3:  # the disk fills while the third table is written
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(name, frame, path)

    monkeypatch.setattr(metadata_writer, "write_csv", fill_up)
    code, _ = _run(tmp_path, lims_url, release_dirs)
    err = capsys.readouterr().err
    assert code == 1 and len(calls) == 3
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == []  # no table under a final name, no temporary file left
    monkeypatch.setattr(metadata_writer, "write_csv", real)
    code, output = _run(tmp_path, lims_url, release_dirs)  # clobber stays false: nothing was left to refuse
    assert code == 0 and sorted(p.name for p in out.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in output["metadata_files"])
    assert pd.read_csv(out / "behavior_session_table.csv")["behavior_session_id"].tolist() == [1, 2]


def test_a_failed_rename_rolls_back_the_tables_already_renamed(lims_url, release_dirs, tmp_path, capsys, monkeypatch):
    import errno

    out = release_dirs[2]
    real = metadata_writer._rename
    renames = []

    def flaky(src, dst):
        renames.append(dst)
        if len(renames) == 3:
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst)

    monkeypatch.setattr(metadata_writer, "_rename", flaky)
    code, _ = _run(tmp_path, lims_url, release_dirs)
    monkeypatch.undo()
    assert code == 1 and "Input/output error" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []
    assert _run(tmp_path, lims_url, release_dirs)[0] == 0
