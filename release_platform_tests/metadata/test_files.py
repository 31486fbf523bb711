"""File ids: deterministic, order-independent, collision-checked; file columns under each on_missing_file mode."""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path

import pandas as pd
import pytest

from release_platform.errors import InputError
from release_platform.lims import LimsClient
from release_platform.metadata import (
    FileLinks,
    MetadataWarning,
    attach_files,
    build_tables,
    check_file_id_collisions,
    directory_resolver,
    file_id,
    gather_for,
    links_from,
    DataFiles,
)
from release_platform_tests.metadata import LimsWorld, day, touch


def test_file_id_is_a_pinned_deterministic_53_bit_integer():
    # Pinned: changing the scheme would change every released file id.
    assert file_id("behavior_nwb", 3001) == file_id("behavior_nwb", 3001)
    assert file_id("behavior_nwb", 3001) == 7682190383080658
    digest = hashlib.blake2b(b"release_platform/file_id/v1/behavior_nwb/3001", digest_size=8).digest()
    assert file_id("behavior_nwb", 3001) == int.from_bytes(digest, "big") >> 11  # the documented formula
    ids = {file_id(kind, i) for kind in ("behavior_nwb", "behavior_ophys_nwb", "ecephys_nwb") for i in range(1, 5001)}
    assert len(ids) == 15000 and all(0 < i < 2**53 for i in ids)
    assert file_id("behavior_nwb", 7) != file_id("behavior_ophys_nwb", 7)


def test_collisions_are_detected_across_tables():
    b = pd.DataFrame({"behavior_session_id": [1, 2], "file_id": pd.array([10, 11], dtype="Int64")})
    e = pd.DataFrame({"ophys_experiment_id": [5], "file_id": pd.array([11], dtype="Int64")})
    with pytest.raises(InputError, match="file id collision.*11: behavior_nwb:2, behavior_ophys_nwb:5"):
        check_file_id_collisions({"behavior_session_table": b, "ophys_experiment_table": e})
    same = pd.DataFrame({"ophys_experiment_id": [1], "file_id": pd.array([10], dtype="Int64")})
    with pytest.raises(InputError):
        check_file_id_collisions({"behavior_session_table": b, "ophys_experiment_table": same})
    check_file_id_collisions({"behavior_session_table": b})


def _frame(ids):
    return pd.DataFrame({"behavior_session_id": ids})


def test_attach_files_modes(tmp_path):
    present = touch(tmp_path / "behavior_session_1.nwb")
    links = FileLinks(paths={"behavior_nwb": {1: str(present), 2: str(tmp_path / "behavior_session_2.nwb")}})
    with pytest.raises(InputError, match=r"1 expected behavior_nwb file\(s\) missing: behavior_session 2: .*behavior_session_2.nwb"):
        attach_files(_frame([1, 2, 3]), "behavior_nwb", links, "error", expected=pd.Series([True, True, False]))
    with pytest.warns(MetadataWarning, match="missing"):
        warned = attach_files(_frame([1, 2, 3]), "behavior_nwb", links, "warn", expected=pd.Series([True, True, False]))
    assert warned.frame["file_id"].tolist()[0] == file_id("behavior_nwb", 1)
    assert warned.frame["file_id"].isna().tolist() == [False, True, True]
    assert warned.frame["file_path"].tolist()[0] == str(present) and [m["behavior_session_id"] for m in warned.missing] == [2]
    with pytest.warns(MetadataWarning, match="dropped"):
        skipped = attach_files(_frame([1, 2, 3]), "behavior_nwb", links, "skip", expected=pd.Series([True, True, False]))
    assert skipped.frame["behavior_session_id"].tolist() == [1, 3] and skipped.dropped == [2]
    # No links for the kind: null file columns, nothing missing.
    none = attach_files(_frame([1]), "behavior_nwb", None, "error")
    assert none.frame["file_id"].isna().all() and none.missing == []
    with pytest.raises(InputError, match="on_missing_file"):
        attach_files(_frame([1]), "behavior_nwb", links, "ignore")


def test_resolvers(tmp_path):
    nested = touch(tmp_path / "d" / "7" / "behavior_ophys_experiment_7.nwb")
    by_parent = touch(tmp_path / "d" / "70" / "behavior_ophys_experiment_8.nwb")
    flat = touch(tmp_path / "d" / "behavior_ophys_experiment_9.nwb")
    got = directory_resolver(tmp_path / "d", "behavior_ophys_nwb", [7, 8, 9, 10], parent_ids={8: 70})
    assert got[7] == str(nested) and got[8] == str(by_parent) and got[9] == str(flat)
    assert got[10] == str(tmp_path / "d" / "10" / "behavior_ophys_experiment_10.nwb")


def test_links_from_written_files():
    # What the NWB assets report becomes the links, several reports of one kind merged; ids are ints, paths strings.
    a = DataFiles("ecephys_lfp_nwb", {"41": Path("/x/lfp_probe_41.nwb")})
    b = DataFiles("ecephys_lfp_nwb", {42: "/x/lfp_probe_42.nwb"})
    links = links_from([a, b, DataFiles("ecephys_nwb", {4: "/x/ecephys_session_4.nwb"})])
    assert links.paths == {"ecephys_lfp_nwb": {41: "/x/lfp_probe_41.nwb", 42: "/x/lfp_probe_42.nwb"},
                           "ecephys_nwb": {4: "/x/ecephys_session_4.nwb"}}
    assert links.attaches("ecephys_nwb") and not links.attaches("behavior_nwb")
    with pytest.raises(ValueError, match="unknown file kind"):
        DataFiles("lfp", {})


def test_ids_are_stable_whatever_the_processing_order(lims: LimsClient, tmp_path):
    w = LimsWorld(lims)
    w.donor("m1")
    ids = list(range(11, 19))
    for i in ids:
        w.behavior(i, "m1", "TRAINING_1_gratings", day(i))
    paths = {i: str(touch(tmp_path / str(i) / f"behavior_session_{i}.nwb")) for i in ids}
    links = FileLinks(paths={"behavior_nwb": paths})

    def ids_in(order):
        out = {}
        for sid in order:
            rows, targets = gather_for(lims, "behavior_session", [sid], read_omissions=False)
            row = build_tables(rows, targets, files=links, tables=["behavior_session_table"]).tables["behavior_session_table"]
            out[sid] = int(row["file_id"].iloc[0])
        return out

    forward = ids_in(ids)
    shuffled = list(ids)
    random.Random(3).shuffle(shuffled)
    assert ids_in(shuffled) == forward
    assert forward == {i: file_id("behavior_nwb", i) for i in ids}


def test_build_modes_cascade_to_child_tables(lims: LimsClient, tmp_path):
    w = LimsWorld(lims)
    w.donor("m1")
    w.ophys(101, "m1", "OPHYS_1_images_A", day(0), [(1011, 175, "VISp", None, "passed", [(1, True, None)]),
                                                    (1012, 275, "VISp", None, "passed", [(2, True, None)])])
    present = touch(tmp_path / "101" / "behavior_ophys_experiment_1011.nwb")
    links = FileLinks(paths={"behavior_ophys_nwb": {1011: str(present), 1012: str(tmp_path / "101" / "behavior_ophys_experiment_1012.nwb")}})
    rows, targets = gather_for(lims, "ophys_session", [101], read_omissions=False)
    with pytest.raises(InputError, match="ophys_experiment 1012"):
        build_tables(rows, targets, files=links, on_missing_file="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataWarning)
        warned = build_tables(rows, targets, files=links, on_missing_file="warn")
        skipped = build_tables(rows, targets, files=links, on_missing_file="skip")
    assert warned.tables["ophys_experiment_table"]["file_id"].isna().tolist() == [False, True]
    assert warned.tables["ophys_cells_table"]["cell_roi_id"].tolist() == [1, 2]
    assert skipped.tables["ophys_experiment_table"]["ophys_experiment_id"].tolist() == [1011]
    assert skipped.tables["ophys_cells_table"]["cell_roi_id"].tolist() == [1]
    assert skipped.dropped == {"ophys_experiment_table": [1012]}


def test_probe_lfp_file_ids_are_deterministic_and_their_own_kind():
    assert file_id("ecephys_lfp_nwb", 4101) == file_id("ecephys_lfp_nwb", 4101)
    digest = hashlib.blake2b(b"release_platform/file_id/v1/ecephys_lfp_nwb/4101", digest_size=8).digest()
    assert file_id("ecephys_lfp_nwb", 4101) == int.from_bytes(digest, "big") >> 11
    assert file_id("ecephys_lfp_nwb", 4101) not in {file_id(k, 4101) for k in ("behavior_nwb", "behavior_ophys_nwb", "ecephys_nwb")}
    probes = pd.DataFrame({"ecephys_probe_id": [7], "file_id": pd.array([file_id("ecephys_nwb", 7)], dtype="Int64")})
    sessions = pd.DataFrame({"ecephys_session_id": [8], "file_id": pd.array([file_id("ecephys_nwb", 7)], dtype="Int64")})
    with pytest.raises(InputError, match="ecephys_lfp_nwb:7"):
        check_file_id_collisions({"probes": probes, "ecephys_session_table": sessions})


def test_probe_lfp_files_follow_has_lfp_data_and_on_missing_file(lims: LimsClient, tmp_path):
    from release_platform.metadata import validate_tables

    def valid(tables):
        reports = validate_tables({k: tables[k] for k in ("ecephys_session_table", "probes", "channels", "units")}, check_files=True)
        return all(r.passed for r in reports.values())

    w = LimsWorld(lims)
    w.donor("m1")
    w.ecephys(301, "m1", "EPHYS_1_images_G", day(0), [
        dict(id=3011, name="probeA", channels=[(30110, 0, "VISp", True)], units=[(1, 30110, {"firing_rate": 2.0})],
             lfp=tmp_path / "raw_a.h5"),
        dict(id=3012, name="probeB", channels=[(30120, 0, "LP", True)], units=[(2, 30120, {"firing_rate": 1.0})],
             lfp=tmp_path / "raw_b.h5"),
        dict(id=3013, name="probeC", channels=[(30130, 0, "CA1", True)], units=[]),  # no LFP: no file expected
    ])
    session = touch(tmp_path / "301" / "ecephys_session_301.nwb")
    lfp_a = touch(tmp_path / "301" / "lfp_probe_3011.nwb")
    links = FileLinks(paths={"ecephys_nwb": {301: str(session)},
                             "ecephys_lfp_nwb": {i: str(tmp_path / "301" / f"lfp_probe_{i}.nwb") for i in (3011, 3012, 3013)}})
    rows, targets = gather_for(lims, "ecephys_session", [301])
    with pytest.raises(InputError, match=r"1 expected ecephys_lfp_nwb file\(s\) missing: ecephys_probe 3012: .*lfp_probe_3012.nwb"):
        build_tables(rows, targets, files=links, on_missing_file="error")

    with pytest.warns(MetadataWarning, match="ecephys_probe 3012"):
        warned = build_tables(rows, targets, files=links, on_missing_file="warn")
    p = warned.tables["probes"]
    assert p["ecephys_probe_id"].tolist() == [3011, 3012, 3013] and p["has_lfp_data"].tolist() == [True, True, False]
    assert p["file_id"].tolist()[0] == file_id("ecephys_lfp_nwb", 3011) and p["file_id"].isna().tolist() == [False, True, True]
    assert p["file_path"].tolist()[0] == str(lfp_a)
    assert [m.get("ecephys_probe_id") for m in warned.missing_files] == [3012]
    assert valid(warned.tables)

    with pytest.warns(MetadataWarning, match="dropped"):
        skipped = build_tables(rows, targets, files=links, on_missing_file="skip")
    t = skipped.tables
    assert skipped.dropped == {"probes": [3012]}
    assert t["probes"]["ecephys_probe_id"].tolist() == [3011, 3013]
    assert t["channels"]["ecephys_channel_id"].tolist() == [30110, 30130] and t["units"]["unit_id"].tolist() == [1]
    s = t["ecephys_session_table"].iloc[0]  # the session kept, its counts describe the released probes
    assert (s["probe_count"], s["channel_count"], s["unit_count"]) == (2, 2, 1) and s["structure_acronyms"] == ["CA1", "VISp"]
    assert valid(t)

    touch(tmp_path / "301" / "lfp_probe_3012.nwb")
    full = build_tables(rows, targets, files=links, on_missing_file="error").tables["probes"]
    assert full["file_id"].tolist()[:2] == [file_id("ecephys_lfp_nwb", 3011), file_id("ecephys_lfp_nwb", 3012)]
    assert pd.isna(full["file_id"].iloc[2]) and pd.isna(full["file_path"].iloc[2])
    # a file id on a probe without LFP breaks the model
    bad = full.copy()
    bad.loc[2, "file_id"], bad.loc[2, "file_path"] = file_id("ecephys_lfp_nwb", 3013), str(lfp_a)
    assert not valid({**build_tables(rows, targets, files=links).tables, "probes": bad})
