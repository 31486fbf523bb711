"""The event-detection module through ``main_for``: known spikes in, events.h5 out; malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from release_platform.modules import event_detection
from release_platform.modules._harness import main_for
from release_platform.ophys.io import read_events_file, write_traces


def run_module(inputs: dict, tmp_path, capsys):
    in_json, out_json = tmp_path / "in.json", tmp_path / "out.json"
    in_json.write_text(json.dumps(inputs, default=str))
    code = main_for(event_detection.Inputs, event_detection.run, "event_detection",
                    argv=["--input_json", str(in_json), "--output_json", str(out_json)])
    err = capsys.readouterr().err
    return code, (json.loads(out_json.read_text()) if out_json.exists() else None), err


@pytest.fixture
def dff_file(tmp_path):
    """3 ROIs x 600 frames at 31 Hz: ROI 11 has spikes at frames 100, 300, 450 (AR(1), decay 0.347 s)."""
    rng = np.random.default_rng(2)
    gamma = np.exp(-1 / (0.347 * 31.0))
    dff = rng.normal(0, 0.03, (3, 600))
    for t0 in (100, 300, 450):
        dff[0, t0:] += 0.6 * gamma ** np.arange(600 - t0)
    return write_traces(tmp_path / "dff.h5", dff, [11, 12, 13])


def test_event_detection_module(tmp_path, capsys, dff_file):
    inputs = {"ophysdfftracefile": str(dff_file), "output_event_file": str(tmp_path / "events.h5"),
              "movie_frame_rate_hz": 31.0, "valid_roi_ids": [13, 11],
              "full_genotype": "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"}
    code, out, err = run_module(inputs, tmp_path, capsys)
    assert code == 0, err
    assert out["roi_ids"] == ["11", "13"] and out["parameters"]["decay_time_s"] == 0.347
    events = read_events_file(out["output_event_file"])
    assert events.roi_ids == ["11", "13"] and events.events.shape == (2, 600) and events.method == "l0"
    assert list(np.flatnonzero(events.events[0])) == [100, 300, 450]
    np.testing.assert_allclose(events.events[0][[100, 300, 450]], 0.6, atol=0.1)
    assert out["event_counts"][0] == 3 and events.parameters["noise_multiplier"] == 2.0
    np.testing.assert_allclose(events.noise_stds, 0.03, rtol=0.2)


@pytest.mark.parametrize(
    "overrides, code, message",
    [
        ({"valid_roi_ids": [99]}, 1, "valid ROI ids not in the dF/F file: ['99']"),
        ({"movie_frame_rate_hz": 60.0}, 1, "give noise_multiplier explicitly"),
        ({"decay_time": -1}, 2, "decay_time: Input should be greater than 0"),
        ({"valid_roi_ids": None}, 2, "valid_roi_ids: Input should be a valid list"),
    ],
)
def test_event_detection_module_bad_input(tmp_path, capsys, dff_file, overrides, code, message):
    inputs = {"ophysdfftracefile": str(dff_file), "output_event_file": str(tmp_path / "events.h5"),
              "movie_frame_rate_hz": 31.0, "valid_roi_ids": [11]}
    inputs.update(overrides)
    got, out, err = run_module(inputs, tmp_path, capsys)
    assert got == code and out is None, err
    assert message in err and "Traceback" not in err
    if code == 1:
        assert str(dff_file) in err
    assert not (tmp_path / "events.h5").exists()
