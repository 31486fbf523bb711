"""Column rules as pure functions (reference §7.3), checked against hand-worked values."""

from __future__ import annotations

import pandas as pd
import pytest

from release_platform.metadata import derivations as d


def S(*values, dtype=None):
    return pd.Series(list(values), dtype=dtype)


def test_cre_line_is_the_cre_part_without_its_allele():
    out = d.parse_cre_line(S("Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt", "Camk2a-tTA/wt;Vip-IRES-Cre/wt", "wt/wt", None))
    assert out.tolist()[:3] == ["Slc17a7-IRES2-Cre", "Vip-IRES-Cre", pd.NA] and pd.isna(out[3])


def test_reporter_and_indicator():
    rep = d.normalize_reporter_line(S(["Ai93(TITL-GCaMP6f)"], ["Ai148(TIT2L-GC6f-ICL-tTA2)"], [], ["b", "a"], ["Ai32(RCL-ChR2(H134R)_EYFP)"]))
    assert rep.tolist()[:2] == ["Ai93(TITL-GCaMP6f)", "Ai148(TIT2L-GC6f-ICL-tTA2)"]
    assert pd.isna(rep[2]) and rep[3] == "a;b"
    ind = d.parse_indicator(rep)
    assert ind[0] == "GCaMP6f" and ind[1] == "GCaMP6f" and pd.isna(ind[2]) and pd.isna(ind[4])
    assert d.parse_indicator(S("Ai162(TIT2L-GC6s-ICL-tTA2)", "x-jGCaMP7s")).tolist() == ["GCaMP6s", "GCaMP7s"]


def test_session_number_image_set_behavior_type_passive():
    types = S("OPHYS_1_images_A", "OPHYS_5_images_B_passive", "TRAINING_1_gratings", "OPHYS_0_images_A_habituation",
              "EPHYS_1_images_G_3uL_reward", "three_session_A")
    num = d.session_number(types)
    assert str(num.dtype) == "Int64"
    assert num.tolist()[:2] == [1, 5] and pd.isna(num[2]) and num[3] == 0 and num[4] == 1 and pd.isna(num[5])
    iset = d.image_set(types)
    assert iset.tolist()[:5] == ["images_A", "images_B", "gratings", "images_A", "images_G"] and pd.isna(iset[5])
    assert d.behavior_type(types).tolist() == ["active_behavior", "passive_viewing", "active_behavior", "active_behavior",
                                               "active_behavior", "active_behavior"]
    assert d.passive(num).tolist() == [False, True, False, False, False, False]


def test_experience_level_rules():
    types = S("TRAINING_3_images_A", "OPHYS_0_images_A_habituation", "OPHYS_3_images_A", "OPHYS_4_images_B",
              "OPHYS_6_images_B", "OPHYS_7_x", "other")
    num = d.session_number(types)
    prior = S(3, 4, 5, 0, 2, None, None, dtype="Int64")
    assert d.experience_level(types, num, prior).tolist() == ["Training", "Familiar", "Familiar", "Novel 1", "Novel >1", "None", "None"]
    assert d.ecephys_experience_level(S("images_G", "images_G", "gratings", None), S(0, 1, 0, None, dtype="Int64")).tolist() == [
        "Novel", "Familiar", "None", "None"]


def test_omissions_rule():
    types = S("OPHYS_1_images_A", "OPHYS_0_images_A_habituation", "OPHYS_0_images_A_habituation",
              "OPHYS_0_images_A_habituation", "TRAINING_5_images_A_handoff_ready", "EPHYS_1_images_G")
    observed = S(None, True, False, None, True, None, dtype="boolean")
    assert d.has_omissions(types, observed).tolist() == [True, True, False, False, False, True]


def test_prior_exposures_count_earlier_sessions_of_the_same_mouse_in_date_order():
    t = pd.to_datetime(["2026-01-03", "2026-01-01", "2026-01-02", "2026-01-04", "2026-01-01", "2026-01-04"], utc=True)
    h = pd.DataFrame({
        "mouse_id": ["a", "a", "a", "a", "b", "a"],
        "date_of_acquisition": t,
        "order_key": [3, 1, 2, 4, 5, 6],
        "session_type": ["OPHYS_1_images_A", "TRAINING_4_images_A", "OPHYS_1_images_A", "OPHYS_4_images_B", "OPHYS_1_images_A", "OPHYS_1_images_A"],
    })
    h["image_set"] = d.image_set(h["session_type"])
    h["has_omissions"] = d.has_omissions(h["session_type"])
    out = d.prior_exposures(h)
    # mouse a, in order: TRAINING_4_A (idx1), OPHYS_1_A (idx2), OPHYS_1_A (idx0), OPHYS_4_B (idx3), OPHYS_1_A (idx5, same day as idx3, later key)
    assert out["prior_exposures_to_session_type"].tolist() == [1, 0, 0, 0, 0, 2]
    assert out["prior_exposures_to_image_set"].tolist() == [2, 0, 1, 0, 0, 3]
    assert out["prior_exposures_to_omissions"].tolist() == [1, 0, 0, 2, 0, 3]
    assert all(str(t) == "Int64" for t in out.dtypes)


def test_prior_image_set_exposures_are_null_without_an_image_set():
    h = pd.DataFrame({"mouse_id": ["a", "a"], "date_of_acquisition": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
                      "order_key": [1, 2], "session_type": ["TRAINING_1_gratings", "TRAINING_1_gratings"]})
    h["image_set"] = d.image_set(h["session_type"])
    h["has_omissions"] = False
    out = d.prior_exposures(h)
    assert out["prior_exposures_to_image_set"].isna().all()
    assert out["prior_exposures_to_session_type"].tolist() == [0, 1]


def test_age_in_days_and_utc():
    acq = S(pd.Timestamp("2026-09-01 09:30"), pd.Timestamp("2026-03-01 00:00"))
    dob = S(pd.Timestamp("2026-03-01"), pd.Timestamp("2026-03-01"))
    assert d.age_in_days(acq, dob).tolist() == [184, 0]
    assert str(d.to_utc(acq).dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    "project, structures, depths, expected",
    [("VisualBehaviorMultiscope", 3, 1, (2, 4)), ("VisualBehavior", 5, 5, (1, 1)),
     ("VisualBehaviorMultiscope4areasx2d", None, None, (4, 2)), ("SomethingNew", 3, 2, (3, 2))],
)
def test_project_layout(project, structures, depths, expected):
    out = d.project_layout(S(project), S(structures, dtype="Int64"), S(depths, dtype="Int64"))
    assert (out["num_targeted_structures"][0], out["num_depths_per_area"][0]) == expected
