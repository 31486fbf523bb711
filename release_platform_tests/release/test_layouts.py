"""Layouts: allen project-cache paths; DANDI paths built from table rows and checked by the DANDI rules."""

from __future__ import annotations

import pytest

from release_platform.errors import InputError
from release_platform.release.layouts import (
    LAYOUTS,
    ReleaseItem,
    check_project_name,
    dandi_label,
    dandi_path_problems,
    detect_layout,
    get_layout,
)

EXP = ReleaseItem(7, "ophys_experiment_table", "/s/x.nwb", {"ophys_experiment_id": 1011, "ophys_session_id": 101, "mouse_id": "m1"})
BEH = ReleaseItem(8, "behavior_session_table", "/s/y.nwb", {"behavior_session_id": 1, "mouse_id": "m1"})
ECE = ReleaseItem(9, "ecephys_session_table", "/s/z.nwb", {"ecephys_session_id": 301, "mouse_id": "m 2"})
LFP = ReleaseItem(10, "probes", "/s/lfp.nwb", {"ecephys_probe_id": 3011, "ecephys_session_id": 301})


def test_allen_paths():
    allen = get_layout("allen")
    assert allen.data_path("vbo", EXP) == "vbo/behavior_ophys_experiments/1011/behavior_ophys_experiment_1011.nwb"
    assert allen.data_path("vbo", BEH) == "vbo/behavior_sessions/1/behavior_session_1.nwb"
    assert allen.data_path("vbn", ECE) == "vbn/ecephys_sessions/301/ecephys_session_301.nwb"
    assert allen.data_path("vbn", LFP) == "vbn/ecephys_sessions/301/lfp_probe_3011.nwb"
    other = ReleaseItem(11, "mystery_table", "/s/q/file.nwb", {})
    assert allen.data_path("p", other) == "p/mystery_table/11/file.nwb"
    assert allen.metadata_path("p", "units") == "p/project_metadata/units.csv"
    assert allen.manifest_path("p", "1.2.3") == "p/manifests/p_manifest_v1.2.3.json"


def test_dandi_paths_follow_the_rules():
    dandi = get_layout("dandi")
    paths = [dandi.data_path("ds", EXP), dandi.data_path("ds", BEH), dandi.data_path("ds", ECE), dandi.data_path("ds", LFP, "m 2")]
    assert paths == [
        "ds/sub-m1/sub-m1_ses-101_desc-exp1011_behavior+ophys.nwb",
        "ds/sub-m1/sub-m1_ses-1_behavior.nwb",
        "ds/sub-m-2/sub-m-2_ses-301_behavior+ecephys.nwb",
        "ds/sub-m-2/sub-m-2_ses-301_probe-3011_ecephys.nwb",
    ]
    assert all(dandi.path_problems("ds", p) == [] for p in paths)
    with pytest.raises(InputError, match="mouse_id"):
        dandi.data_path("ds", LFP)  # no subject and none looked up
    with pytest.raises(InputError, match="does not know"):
        dandi.data_path("ds", ReleaseItem(11, "mystery_table", "/s/q.nwb", {}))


@pytest.mark.parametrize("path", [
    "sub-1/sub-1.nwb", "sub-1/sub-1_ses-2_ecephys.nwb", "sub-a-b/sub-a-b_ses-x_desc-raw_probe-3_behavior+ecephys.nwb",
    "sub-1/sub-1_ses-1_tis-2_slice-3_cell-4_desc-d_probe-p_obj-5_icephys.nwb",
])
def test_valid_dandi_paths(path):
    assert dandi_path_problems(path) == []


@pytest.mark.parametrize("path, rule", [
    ("sub-1.nwb", "NON_DANDI_FOLDERNAME"),  # no folder
    ("a/sub-1/sub-1.nwb", "NON_DANDI_FOLDERNAME"),  # two levels
    ("subject-1/sub-1.nwb", "NON_DANDI_FOLDERNAME"),
    ("sub-1/sub-2_ses-1.nwb", "NON_DANDI_FILENAME"),  # subject differs from folder
    ("sub-1/sub-1_ses-a.b.nwb", "NON_DANDI_FILENAME"),  # '.' in a label
    ("sub-1/sub-1_ses-a@b.nwb", "NON_DANDI_FILENAME"),
    ("sub-1/sub-1_ses-a b.nwb", "NON_DANDI_FILENAME"),
    ("sub-1/sub-1_desc-x_ses-1.nwb", "NON_DANDI_FILENAME"),  # order
    ("sub-1/sub-1_ses-1_Ecephys.nwb", "NON_DANDI_FILENAME"),  # modality case
    ("sub-1/sub-1_ses-1.h5", "NON_DANDI_FILENAME"),
    ("sub-1/sub-_ses-1.nwb", "NON_DANDI_FILENAME"),  # empty label
])
def test_invalid_dandi_paths(path, rule):
    problems = dandi_path_problems(path)
    assert problems and all(p.startswith("DANDI.") for p in problems) and any(rule in p for p in problems)


def test_labels_and_project_names():
    assert dandi_label(" 12.5 ") == "12-5" and dandi_label("a_b*c") == "a-b-c" and dandi_label(4.0) == "4"
    with pytest.raises(InputError):
        dandi_label("..")
    for bad in ("", "a/b", "..", ".hidden", "a b"):
        with pytest.raises(InputError):
            check_project_name(bad)
    assert check_project_name("visual-behavior-ophys") == "visual-behavior-ophys"
    with pytest.raises(InputError, match="unknown layout"):
        get_layout("flat")


def test_layout_detection():
    assert detect_layout("p", ["p/sub-1/sub-1.nwb"]) is LAYOUTS["dandi"]
    assert detect_layout("p", ["p/behavior_sessions/1/behavior_session_1.nwb"]) is LAYOUTS["allen"]
