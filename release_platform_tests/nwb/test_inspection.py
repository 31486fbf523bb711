"""The units content check: NaN spike times or amplitudes and units without spikes block publication."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pytest

from release_platform.assets.nwb_ecephys import ecephys_session_nwb_units_content
from release_platform.metadata import DataFiles
from release_platform.nwb.inspection import units_content_problems


def _write(path, trains, amplitudes=None, *, units=True):
    """A small NWB file whose units table holds ``trains`` (one array per unit) and per-spike ``amplitudes``."""
    from pynwb import NWBHDF5IO, NWBFile

    nwbfile = NWBFile(session_description="units", identifier=path.stem,
                      session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    if units:
        if amplitudes is not None:
            nwbfile.add_unit_column("spike_amplitudes", "amplitude (V) of each spike", index=True)
        for i, train in enumerate(trains):
            extra = {"spike_amplitudes": list(amplitudes[i])} if amplitudes is not None else {}
            nwbfile.add_unit(id=100 + i, spike_times=list(train), **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
    return path


TRAINS = [np.array([0.1, 0.5, 0.9]), np.array([0.2]), np.array([0.3, 0.4])]
AMPS = [np.array([1e-5, 2e-5, 3e-5]), np.array([4e-5]), np.array([5e-5, 6e-5])]


def test_a_good_units_table_has_no_problem(tmp_path):
    path = _write(tmp_path / "good.nwb", TRAINS, AMPS)
    assert units_content_problems(path) == []
    assert ecephys_session_nwb_units_content(DataFiles("ecephys_nwb", {1: str(path)})).passed is True
    assert units_content_problems(_write(tmp_path / "none.nwb", [], units=False)) == []


def test_nan_amplitudes_are_found_and_named(tmp_path):
    amps = [a.copy() for a in AMPS]
    amps[1][0] = np.nan
    amps[2][1] = np.inf
    path = _write(tmp_path / "nan_amps.nwb", TRAINS, amps)
    assert units_content_problems(path) == ["units: 2 NaN or infinite values in spike_amplitudes (first in unit 101)"]
    result = ecephys_session_nwb_units_content(DataFiles("ecephys_nwb", {1: str(path)}))
    assert result.passed is False
    assert result.description == (f"units content check failed for {path}: 1 problem(s); "
                                  f"first: units: 2 NaN or infinite values in spike_amplitudes (first in unit 101)")


def test_nan_spike_times_and_silent_units_are_found(tmp_path):
    trains = [t.copy() for t in TRAINS] + [np.array([])]
    trains[2][1] = np.nan
    path = _write(tmp_path / "bad_times.nwb", trains)
    assert units_content_problems(path) == ["units: 1 units have no spike: ids [103]",
                                            "units: 1 NaN or infinite values in spike_times (first in unit 102)"]
    assert ecephys_session_nwb_units_content(DataFiles("ecephys_nwb", {1: str(path)})).passed is False


def test_values_are_read_in_blocks(tmp_path, monkeypatch):
    from release_platform.nwb import inspection

    monkeypatch.setattr(inspection, "CONTENT_CHECK_BLOCK", 2)
    trains = [np.arange(5) / 10.0, np.arange(4) / 10.0]
    trains[1][3] = np.nan  # in the fifth block
    path = _write(tmp_path / "blocks.nwb", trains)
    assert units_content_problems(path) == ["units: 1 NaN or infinite values in spike_times (first in unit 101)"]


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such NWB file"):
        units_content_problems(tmp_path / "absent.nwb")


# -- every PyNWB / Inspector asset check fails on a broken file (a check hard-coded to pass fails these) --------
def _checks():
    from release_platform.assets import nwb_ecephys as E
    from release_platform.assets import nwb_ophys as O

    def files(kind):
        return lambda path: DataFiles(kind, {1: str(path)})

    return {
        "behavior_nwb": (O.behavior_nwb_pynwb_valid, O.behavior_nwb_inspector, files("behavior_nwb")),
        "behavior_ophys_nwb": (O.behavior_ophys_nwb_pynwb_valid, O.behavior_ophys_nwb_inspector, files("behavior_ophys_nwb")),
        "ecephys_session_nwb": (E.ecephys_session_nwb_pynwb_valid, E.ecephys_session_nwb_inspector, files("ecephys_nwb")),
        "ecephys_probe_lfp_nwb": (E.ecephys_probe_lfp_nwb_pynwb_valid, E.ecephys_probe_lfp_nwb_inspector, files("ecephys_lfp_nwb")),
    }


def _with_subject(path):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject

    nwbfile = NWBFile(session_description="a session", identifier=path.stem, institution="Allen Institute",
                      experiment_description="checks", experimenter=["Doe, Jane"], keywords=["test"],
                      session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                      subject=Subject(subject_id="1", species="Mus musculus", sex="M", age="P90D"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def nwb_files(tmp_path_factory):
    import h5py
    import shutil

    root = tmp_path_factory.mktemp("nwb_checks")
    good = _with_subject(root / "good.nwb")
    invalid = root / "invalid.nwb"
    shutil.copy(good, invalid)
    with h5py.File(invalid, "a") as fh:
        del fh["session_start_time"]  # a required dataset
    no_age = root / "no_age.nwb"
    shutil.copy(good, no_age)
    with h5py.File(no_age, "a") as fh:
        del fh["general/subject/age"]  # CRITICAL under the DANDI config
    return good, invalid, no_age


@pytest.mark.parametrize("asset", ["behavior_nwb", "behavior_ophys_nwb", "ecephys_session_nwb", "ecephys_probe_lfp_nwb"])
def test_nwb_asset_checks_pass_a_good_file_and_fail_a_broken_one(nwb_files, asset):
    good, invalid, no_age = nwb_files
    pynwb_check, inspector_check, record = _checks()[asset]
    assert pynwb_check(record(good)).passed is True
    assert inspector_check(record(good)).passed is True
    failed = pynwb_check(record(invalid))
    assert failed.passed is False and "session_start_time" in failed.description
    failed = inspector_check(record(no_age))
    assert failed.passed is False and "CRITICAL check_subject_age" in failed.description
