"""DANDI releases: dandiset.yaml from LIMS project metadata, ``dandi organize`` names from the NWB files, and
``dandi validate`` in the release check when the optional ``dandi`` package is installed."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from release_platform.errors import InputError
from release_platform.lims import LimsClient, migrations
from release_platform.metadata import file_id
from release_platform.release.build import make_release
from release_platform.release.dandi import (
    dandi_available,
    dandiset_from_lims,
    dandiset_metadata,
    nwb_modalities,
    nwb_organize_record,
    organize_names,
    short_object_id,
)
from release_platform.release.manifest import load_manifest
from release_platform.release.verify import verify_release

PROJECT = {"code": "vbo", "name": "Visual behavior ophys", "description": "Two-photon imaging during a task.",
           "license": "CC-BY-4.0", "dandiset_identifier": "000123", "keywords": ["mouse", "two-photon"],
           "contributors": [{"name": "Doe, Jane", "roles": ["Author", "ContactPerson"], "email": "jane@example.org"}]}


def tiny_nwb(path, *, subject: str, session: str, kind: str, probe_id: int | None = None):
    """A small valid NWB file: ``kind`` ecephys (an ElectricalSeries) or behavior (a Position series)."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import Position
    from pynwb.file import Subject

    nwb = NWBFile(session_description="synthetic", identifier=str(uuid.uuid4()), session_id=session,
                  session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), institution="Allen Institute",
                  subject=Subject(subject_id=subject, species="Mus musculus", sex="F", age="P90D",
                                  description="synthetic mouse"))
    if kind == "ecephys":
        from pynwb.ecephys import ElectricalSeries

        device = nwb.create_device(name=f"probe{probe_id}", description="Neuropixels 1.0")
        group = nwb.create_electrode_group(name=f"probe{probe_id}", description="shank", location="VISp", device=device)
        for _ in range(2):
            nwb.add_electrode(group=group, location="VISp")
        region = nwb.create_electrode_table_region(region=[0, 1], description="all")
        nwb.add_acquisition(ElectricalSeries(name="lfp", data=np.zeros((20, 2), dtype=np.int16), electrodes=region,
                                             rate=2500.0, conversion=1e-6))
    else:
        module = nwb.create_processing_module("behavior", "running")
        position = Position(name="position")
        position.create_spatial_series(name="wheel", data=np.arange(10.0), reference_frame="start", rate=60.0,
                                       unit="meters")
        module.add(position)
        nwb.add_acquisition(TimeSeries(name="raw", data=np.arange(10.0), unit="V", rate=60.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dandi_nwb")
    return {
        "ece_a": tiny_nwb(root / "ecephys_session_nwb/301/a.nwb", subject="m 2", session="301", kind="ecephys", probe_id=1),
        "ece_b": tiny_nwb(root / "ecephys_session_nwb/301/b.nwb", subject="m 2", session="301", kind="ecephys", probe_id=2),
        "beh": tiny_nwb(root / "behavior_session_nwb/1/c.nwb", subject="m1", session="1", kind="behavior"),
    }


def test_dandiset_metadata_from_a_lims_project(tmp_path):
    url = f"sqlite:///{tmp_path / 'lims.sqlite'}"
    engine = sa.create_engine(url)
    migrations.upgrade(engine, 3)
    with engine.begin() as conn:  # a LIMS from before migration 4: projects has only its code
        for column in ("name", "description", "license", "contributors", "keywords", "dandiset_identifier"):
            conn.execute(sa.text(f"ALTER TABLE projects DROP COLUMN {column}"))
    assert migrations.upgrade(engine)[0] == 4  # the later migrations follow it
    engine.dispose()
    client = LimsClient(url)
    try:
        client.lookup_id("projects", "code", "vbo")
        meta, why = dandiset_from_lims(client, "vbo")
        assert meta is None and "lacks dandiset_identifier, name, description" in why
        client.set_project_metadata("vbo", **{k: v for k, v in PROJECT.items() if k != "code"})
        meta, why = dandiset_from_lims(client, "vbo")
        with pytest.raises(InputError, match="unknown project fields"):
            client.set_project_metadata("vbo", title="x")
    finally:
        client.dispose()
    assert why == "" and meta["identifier"] == "DANDI:000123" and meta["license"] == ["spdx:CC-BY-4.0"]
    assert meta["contributor"][0]["roleName"] == ["dcite:Author", "dcite:ContactPerson"]
    assert meta["keywords"] == ["mouse", "two-photon"]
    with pytest.raises(InputError, match="not a six-digit DANDI number"):
        dandiset_metadata({**PROJECT, "dandiset_identifier": "12"})


def test_modalities_and_organize_names_from_the_files(files):
    assert nwb_modalities(files["ece_a"]) == ("ecephys",)
    assert nwb_modalities(files["beh"]) == ("behavior",)
    records = [nwb_organize_record(files[k]) for k in ("ece_a", "ece_b", "beh")]
    assert records[0]["subject_id"] == "m-2" and records[0]["session_id"] == "301" and records[0]["probe_ids"] == []
    names = organize_names(records)
    # three sessions in the set differ -> _ses-; the two ecephys files of one session clash -> _obj-<crc32 base 36>
    obj = [short_object_id(r["object_id"]) for r in records[:2]]
    assert names == [f"sub-m-2/sub-m-2_ses-301_obj-{obj[0]}_ecephys.nwb",
                     f"sub-m-2/sub-m-2_ses-301_obj-{obj[1]}_ecephys.nwb",
                     "sub-m1/sub-m1_ses-1_behavior.nwb"]
    # one file alone: nothing but subject and modality; probe ids disambiguate before object ids
    assert organize_names(records[2:]) == ["sub-m1/sub-m1_behavior.nwb"]
    probes = [{**records[0], "probe_ids": [1]}, {**records[1], "probe_ids": [2]}]
    assert organize_names(probes) == ["sub-m-2/sub-m-2_probe-1_ecephys.nwb", "sub-m-2/sub-m-2_probe-2_ecephys.nwb"]
    assert short_object_id("0") == np.base_repr(0xF4DBDF21, 36).lower()
    if dandi_available():  # the same names as dandi organize's own naming on the same files
        from dandi.organize import create_unique_filenames_from_metadata
        from dandi.pynwb_utils import get_neurodata_types

        theirs = [{"path": str(files[k]), "subject_id": r["subject_id"], "session_id": r["session_id"],
                   "nd_types": get_neurodata_types(files[k])} for k, r in zip(("ece_a", "ece_b", "beh"), records)]
        assert [m["dandi_path"] for m in create_unique_filenames_from_metadata(theirs)] == names


def _tables(files, extra_behavior=None):
    ecephys = pd.DataFrame({
        "ecephys_session_id": pd.array([301, 302], dtype="Int64"),
        "mouse_id": pd.array(["m 2", "m 2"], dtype="string"),
        "file_id": pd.array([file_id("ecephys_nwb", 301), file_id("ecephys_nwb", 302)], dtype="Int64"),
        "file_path": pd.array([str(files["ece_a"]), str(files["ece_b"])], dtype="string"),
    })
    paths = [str(files["beh"])] + ([str(extra_behavior)] if extra_behavior else [])
    behavior = pd.DataFrame({
        "behavior_session_id": pd.array(range(1, len(paths) + 1), dtype="Int64"),
        "mouse_id": pd.array(["m1"] * len(paths), dtype="string"),
        "file_id": pd.array([file_id("behavior_nwb", i) for i in range(1, len(paths) + 1)], dtype="Int64"),
        "file_path": pd.array(paths, dtype="string"),
    })
    return {"ecephys_session_table": ecephys, "behavior_session_table": behavior}


def test_dandi_release_writes_dandiset_yaml_with_organize_names(files, tmp_path):
    storage = files["beh"].parents[2]
    result = make_release(tmp_path / "rel", "vbo", "1.0.0", layout="dandi", frames=_tables(files),
                          storage_root=storage, dandiset=dandiset_metadata(PROJECT))
    manifest = load_manifest(result.manifest_path)
    assert manifest["metadata_files"]["dandiset"]["url"].endswith("/vbo/dandiset.yaml")
    written = yaml.safe_load((result.project_dir / "dandiset.yaml").read_text())
    assert written["identifier"] == "DANDI:000123" and written["name"] == PROJECT["name"]
    released = sorted(p.relative_to(result.project_dir).as_posix() for p in result.project_dir.rglob("*.nwb"))
    records = [nwb_organize_record(files[k]) for k in ("ece_a", "ece_b", "beh")]
    assert released == sorted(organize_names(records))
    report = verify_release(result.project_dir, dandi_validate=False)
    assert report.ok, report.describe()


@pytest.mark.skipif(not dandi_available(), reason="the optional dandi package is not installed")
def test_release_check_runs_dandi_validate(files, tmp_path):
    """One file that is not NWB (so named from its table row) fails dandi validate; the good files do not."""
    storage = files["beh"].parents[2]
    broken = storage / "behavior_session_nwb" / "2" / "broken.nwb"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not an HDF5 file" * 64)
    result = make_release(tmp_path / "rel", "vbo", "1.0.0", layout="dandi", frames=_tables(files, broken),
                          storage_root=storage, dandiset=dandiset_metadata(PROJECT))
    report = verify_release(result.project_dir)
    assert report.dandi_validated
    problems = report.by_kind("dandi-validate")
    assert problems and all("sub-m1_ses-2_behavior.nwb" in p.detail for p in problems), report.describe()
    assert [p for p in report.problems if p.kind != "dandi-validate"] == []
