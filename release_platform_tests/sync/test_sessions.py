"""Session NWB files from LIMS: sync-timed presentations and eye tracking in the ecephys session file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from release_platform.inputs import resolve_session
from release_platform.lims import LimsClient
from release_platform.nwb import ecephys as E
from release_platform.nwb import readers as R
from release_platform.nwb.inspection import inspect_nwb
from release_platform_tests.nwb.raw_tables import assert_sync_timed


@pytest.fixture(scope="module")
def ecephys_file(seeded_demo, tmp_path_factory):
    client = LimsClient(f"sqlite:///{seeded_demo / 'lims.sqlite'}")
    try:
        session = resolve_session(client, "ecephys_session", 4001)
        inputs = E.EcephysNwbInputs.from_session(session, client.ecephys_probes(4001),
                                                 output_path=tmp_path_factory.mktemp("ecephys_sync") / "session.nwb")
    finally:
        client.dispose()
    result, _ = E.write_session_nwb(inputs)
    return inputs, Path(result.path)


def test_ecephys_presentations_come_from_sync(ecephys_file):
    inputs, path = ecephys_file
    assert inputs.session_sync_path and inputs.eye_dlc_ellipses_path
    raw = pd.read_csv(inputs.stimulus_table_path)
    with h5py.File(path, "r") as f:
        # the session's own stimulus tables (the linked behavior session's change-detection block has its own)
        names = [n for n in f["intervals"] if n.endswith("_presentations")
                 and n[: -len("_presentations")] in set(raw["stimulus_name"])]
    assert len(names) == raw["stimulus_name"].nunique()
    n = 0
    for name in names:
        table = R.read_intervals(path, name)
        assert_sync_timed(table, inputs.session_sync_path)
        n += len(table)
        # times moved by the monitor delay (about 21 ms) plus jitter, not more
        nominal = table["start_frame"].to_numpy() / 60.0
        assert np.all(np.abs(table["start_time"].to_numpy() - nominal - 0.0214) < 0.002)
    assert n == len(raw)


def test_ecephys_eye_tracking_recovers_the_truth(ecephys_file):
    inputs, path = ecephys_file
    table = R.read_eye_tracking(path)
    with h5py.File(Path(inputs.eye_dlc_ellipses_path).parent / "eye_tracking_truth.h5", "r") as f:
        area, blink, times = f["pupil_area"][()], f["blink"][()], f["timestamps"][()]
    np.testing.assert_allclose(table["timestamps"], times, rtol=0, atol=1e-12)
    detected = table["likely_blink"].to_numpy()
    assert detected[blink].mean() >= 0.95
    ok = ~detected
    assert np.max(np.abs(table["pupil_area"].to_numpy()[ok] / area[ok] - 1)) < 0.01
    report = inspect_nwb(path, config="dandi")
    assert report.at("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION") == []
