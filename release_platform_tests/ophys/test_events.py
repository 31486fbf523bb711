"""Event-detection extension point: registry and result validation (``l0`` ships; tested in test_events_l0)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from release_platform.errors import InputError
from release_platform.ophys.events import (
    EventResult,
    detect_events,
    event_detectors,
    register_event_detector,
    unregister_event_detector,
)


@dataclass
class ThresholdDetector:
    """A minimal detector for exercising the registry: events where dF/F crosses k * sigma upward."""

    name: str = "test_threshold"
    broken: bool = False

    def detect(self, dff, frame_rate_hz, *, sigma_dff=None, k=3.0):
        sigma = np.nanstd(dff, axis=1) if sigma_dff is None else sigma_dff
        above = dff > k * sigma[:, None]
        onsets = above & ~np.concatenate([np.zeros((dff.shape[0], 1), bool), above[:, :-1]], axis=1)
        events = np.where(onsets, dff, 0.0)
        if self.broken:
            events = events[:, 1:]
        return EventResult(events=events, noise_std=sigma, parameters={"k": k})


@pytest.fixture
def detector():
    det = register_event_detector(ThresholdDetector())
    yield det
    unregister_event_detector(det.name)


def test_a_registered_detector_runs_by_name(detector):
    dff = np.zeros((2, 50))
    dff[0, 10:13] = 1.0
    result = detect_events(dff, 30.0, "test_threshold", sigma_dff=np.array([0.1, 0.1]), k=2.0)
    assert "test_threshold" in event_detectors()
    assert list(np.flatnonzero(result.events[0])) == [10] and not result.events[1].any()
    assert result.parameters == {"k": 2.0}


def test_registry_errors(detector):
    with pytest.raises(ValueError, match="already registered"):
        register_event_detector(ThresholdDetector())
    register_event_detector(ThresholdDetector(), replace=True)
    with pytest.raises(TypeError, match="needs a str 'name'"):
        register_event_detector(object())
    with pytest.raises(InputError, match="unknown event detector 'oasis'; available: l0, test_threshold"):
        detect_events(np.zeros((1, 5)), 30.0, "oasis")


def test_inputs_and_outputs_are_validated(detector):
    with pytest.raises(InputError, match="frame rate"):
        detect_events(np.zeros((1, 5)), None, "test_threshold")
    with pytest.raises(InputError, match="numeric N x T"):
        detect_events(np.zeros(5), 30.0, "test_threshold")
    with pytest.raises(InputError, match=r"sigma_dff has shape \(2,\), expected \(1,\)"):
        detect_events(np.zeros((1, 5)), 30.0, "test_threshold", sigma_dff=np.ones(2))
    register_event_detector(ThresholdDetector(broken=True), replace=True)
    with pytest.raises(ValueError, match="returned events of shape"):
        detect_events(np.zeros((1, 5)), 30.0, "test_threshold")


def test_l0_is_the_detector_registered_by_default():
    assert event_detectors() == ("l0",)
    with pytest.raises(InputError, match="available: l0"):
        detect_events(np.zeros((1, 5)), 30.0, "threshold")
