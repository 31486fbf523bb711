"""Eye tracking: areas and likely blinks against the synthetic truth, time alignment, NWB round trip."""

from __future__ import annotations

import datetime as dt

import h5py
import numpy as np
import pandas as pd
import pytest

from data_fixtures.eye_tracking import write_eye_tracking_file, write_rig_files
from release_platform.behavior.eye_tracking import (
    FIT_COLUMNS,
    align_camera_times,
    area_outliers,
    likely_blinks,
    load_ellipse_fits,
)
from release_platform.errors import InputError
from release_platform.nwb import readers as R
from release_platform.nwb.eye_tracking import add_eye_tracking, eye_tracking_table


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("eye")
    sync_path, eye_path = write_rig_files(root, duration_s=120.0, seed=9)
    with h5py.File(root / "eye_tracking_truth.h5", "r") as f:
        truth = {k: f[k][()] for k in f}
    return sync_path, eye_path, truth


def test_pupil_area_and_blinks_recovered(session):
    sync_path, eye_path, truth = session
    table = eye_tracking_table(eye_path, sync_path=sync_path, entity="ecephys_session 1")
    np.testing.assert_allclose(table["timestamps"], truth["timestamps"], rtol=0, atol=1e-12)
    blink = table["likely_blink"].to_numpy()
    assert truth["blink"].sum() >= 20
    assert blink[truth["blink"]].mean() >= 0.95
    assert blink[~truth["blink"]].mean() < 0.05  # dilation flags a few neighbours, not the session
    ok = ~blink
    rel = np.abs(table["pupil_area"].to_numpy()[ok] / truth["pupil_area"][ok] - 1.0)
    assert rel.max() < 0.01
    assert table["pupil_area"][blink].isna().all() and table["pupil_area_raw"].notna().sum() > ok.sum() - 1
    # AllenSDK's conventions: eye/CR areas pi*w*h of half-axes, pupil pi*max(w,h)^2
    fits = load_ellipse_fits(eye_path)
    np.testing.assert_allclose(table["eye_area_raw"], np.pi * fits["eye_width"] * fits["eye_height"])
    np.testing.assert_allclose(table["pupil_area_raw"], np.pi * np.fmax(fits["pupil_width"], fits["pupil_height"]) ** 2)


def test_dilation_rule_by_hand():
    eye = np.full(20, 100.0)
    eye[10] = 1.0  # one outlier
    pupil = np.full(20, 50.0)
    pupil[3] = np.nan  # one missing pupil
    out = area_outliers(np.column_stack([eye, pupil]), 3.0)
    assert np.flatnonzero(out).tolist() == [10]
    blinks = likely_blinks(eye, pupil, out, dilation_frames=2)
    assert np.flatnonzero(blinks).tolist() == [1, 2, 3, 4, 5, 8, 9, 10, 11, 12]
    assert np.flatnonzero(likely_blinks(eye, pupil, out, dilation_frames=0)).tolist() == [3, 10]


def test_camera_timestamps_alignment(session, tmp_path):
    sync_path, eye_path, _ = session
    fits = load_ellipse_fits(eye_path)
    times = np.arange(len(fits) + 10) / 60.0
    assert len(align_camera_times(len(fits), times)) == len(fits)  # up to 15 trailing pulses are trimmed
    short = tmp_path / "short.csv"
    fits.iloc[: len(fits) - 100].to_csv(short, index=False)
    with pytest.raises(InputError) as err:
        eye_tracking_table(short, sync_path=sync_path, entity="ophys_session 12")
    msg = str(err.value)
    assert msg.startswith(f"ophys_session 12: {short}: eye tracking file has {len(fits) - 100} frames, shorter than "
                          f"the {len(fits)} eye camera timestamps")
    with pytest.raises(InputError, match="no timestamps column and the session has no sync file"):
        eye_tracking_table(eye_path, entity="ophys_session 12")
    with pytest.raises(InputError, match="lacks the ellipse columns \\['cr_center_x'"):
        bad = tmp_path / "bad.csv"
        fits.drop(columns=["cr_center_x"]).to_csv(bad, index=False)
        load_ellipse_fits(bad, entity="s")


def test_timestamps_column_without_sync(tmp_path):
    times = 0.5 + np.arange(600) / 30.0
    path, truth_path = write_eye_tracking_file(tmp_path, times, seed=2)
    frame = pd.read_csv(path)
    frame.insert(0, "timestamps", times)
    frame.to_csv(path, index=False)
    table = eye_tracking_table(path)
    np.testing.assert_allclose(table["timestamps"], times)
    assert list(table.columns[-len(FIT_COLUMNS):]) == list(FIT_COLUMNS)


def test_nwb_round_trip_inspector_and_plain_pynwb(session, tmp_path):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject

    from release_platform.nwb.inspection import inspect_nwb

    sync_path, eye_path, _ = session
    table = eye_tracking_table(eye_path, sync_path=sync_path)
    nwbfile = NWBFile(session_description="eye tracking test session", identifier="eye-1",
                      session_start_time=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), session_id="1",
                      experiment_description="eye", institution="lab", keywords=["eye"],
                      subject=Subject(subject_id="1", species="Mus musculus", sex="M", age="P90D"))
    add_eye_tracking(nwbfile, table)
    path = tmp_path / "eye.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    back = R.read_eye_tracking(path)
    pd.testing.assert_frame_equal(back, table[back.columns], check_exact=False, rtol=0, atol=0)
    assert set(back.columns) == set(table.columns)
    report = inspect_nwb(path, config="dandi")
    assert report.at("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION") == []
    with NWBHDF5IO(path, "r", load_namespaces=True) as io:
        f = io.read()
        module = f.processing["eye_tracking"]
        area = module["pupil_tracking"]["pupil_area"]
        np.testing.assert_array_equal(area.timestamps[:], table["timestamps"].to_numpy())
        assert module["ellipse_centers"]["pupil_center"].data.shape == (len(table), 2)
        assert module["eye_and_corneal_reflection"]["likely_blink"].data.dtype == bool


GEOMETRY = {"rig_geometry": {"camera_position_mm": [102.8, 74.7, 31.6], "camera_rotation_deg": [0.0, 0.0, 2.8],
                             "equipment": "CAM2P.3", "led_position": [246.0, 92.3, 52.6],
                             "monitor_position_mm": [118.6, 86.2, 31.6], "monitor_rotation_deg": [0.0, 0.0, 0.0]}}


def test_gaze_on_monitor_recovers_known_gaze_points(tmp_path):
    from release_platform.behavior.gaze import RigGeometry, gaze_on_monitor, screen_to_camera_offsets

    geometry = RigGeometry.from_record(GEOMETRY)
    rng = np.random.default_rng(4)
    truth = np.column_stack([rng.uniform(-25, 25, 300), rng.uniform(-15, 15, 300)])
    offsets = screen_to_camera_offsets(truth, geometry)
    assert np.isfinite(offsets).all()
    cr = np.column_stack([rng.uniform(250, 350, 300), rng.uniform(200, 280, 300)])
    cm, deg = gaze_on_monitor(cr + offsets, cr, geometry)
    np.testing.assert_allclose(cm, truth, rtol=0, atol=1e-9)
    distance = np.linalg.norm(np.asarray(GEOMETRY["rig_geometry"]["monitor_position_mm"])) / 10.0
    np.testing.assert_allclose(deg[:, 0], np.degrees(np.arctan(truth[:, 0] / distance)), atol=1e-9)
    # an offset that leaves the eye sphere has no gaze
    far, _ = gaze_on_monitor(np.array([[300.0 + 1e4, 300.0]]), np.array([[300.0, 300.0]]), geometry)
    assert np.isnan(far).all()


def test_gaze_columns_in_the_table_and_the_nwb_file(session, tmp_path):
    from pynwb import NWBHDF5IO, NWBFile

    from release_platform.nwb.eye_tracking import GAZE_COLUMNS

    sync_path, eye_path, _ = session
    table = eye_tracking_table(eye_path, sync_path=sync_path, rig_geometry=GEOMETRY)
    assert table.loc[table["likely_blink"], list(GAZE_COLUMNS)].isna().all().all()
    assert table.loc[~table["likely_blink"], "gaze_x_cm"].notna().mean() > 0.99
    nwbfile = NWBFile(session_description="gaze", identifier="gaze-1",
                      session_start_time=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    add_eye_tracking(nwbfile, table)
    path = tmp_path / "gaze.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    back = R.read_eye_tracking(path)
    pd.testing.assert_frame_equal(back[list(GAZE_COLUMNS)], table[list(GAZE_COLUMNS)], check_exact=True)
    with pytest.raises(InputError, match="invalid eye tracking rig geometry"):
        eye_tracking_table(eye_path, sync_path=sync_path, rig_geometry={"monitor_position_mm": [1, 2]})
