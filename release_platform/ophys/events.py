"""Extension point for event detection on dF/F traces.

The platform ships ``l0`` (:mod:`release_platform.ophys.events_l0`: noise-scaled L0 deconvolution with
an AR(1) indicator model, the Allen ``event_detection`` semantics). A detector is any object with a ``name`` and a ``detect``
method following :class:`EventDetector`; it becomes available by name through
:func:`register_event_detector`, and :func:`detect_events` runs it with validated inputs and checks
its output, so a pipeline stage can select a detector from configuration (e.g. an L0 deconvolution
or a threshold detector) without knowing its implementation.

Conventions: ``dff`` is N x T (dimensionless dF/F, NaN rows allowed), ``frame_rate_hz`` the movie
frame rate, ``sigma_dff`` the per-ROI noise from :mod:`release_platform.ophys.dff`. ``events`` in the
result is N x T: the event magnitude (in dF/F units) at the frame of each event, 0 where there is
none, NaN for rows the detector could not process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from release_platform.errors import InputError
from release_platform.ophys.dff import check_frame_rate


@dataclass(frozen=True)
class EventResult:
    """``events`` N x T (magnitude at event frames, 0 elsewhere, NaN rows = not processed),
    ``noise_std`` N (the noise level the detector used), ``parameters`` (resolved settings), ``lambdas``
    N (the per-ROI penalty of penalised detectors, else None)."""

    events: np.ndarray
    noise_std: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)
    lambdas: np.ndarray | None = None


@runtime_checkable
class EventDetector(Protocol):
    """What an event detector implements."""

    name: str

    def detect(
        self, dff: np.ndarray, frame_rate_hz: float, *, sigma_dff: np.ndarray | None = None, **parameters: Any
    ) -> EventResult: ...


_DETECTORS: dict[str, EventDetector] = {}


def register_event_detector(detector: EventDetector, *, replace: bool = False) -> EventDetector:
    """Make ``detector`` available under ``detector.name``; a taken name needs ``replace=True``."""
    if not isinstance(detector, EventDetector) or not isinstance(getattr(detector, "name", None), str):
        raise TypeError("an event detector needs a str 'name' and a 'detect' method")
    if detector.name in _DETECTORS and not replace:
        raise ValueError(f"an event detector named {detector.name!r} is already registered")
    _DETECTORS[detector.name] = detector
    return detector


def unregister_event_detector(name: str) -> None:
    """Remove a detector (no error if absent)."""
    _DETECTORS.pop(name, None)


def event_detectors() -> tuple[str, ...]:
    """Names of the registered detectors."""
    return tuple(sorted(_DETECTORS))


def get_event_detector(name: str) -> EventDetector:
    if name not in _DETECTORS:
        available = ", ".join(event_detectors()) or "none is registered"
        raise InputError(f"unknown event detector {name!r}; available: {available}")
    return _DETECTORS[name]


def detect_events(
    dff: np.ndarray,
    frame_rate_hz: Any,
    method: str,
    *,
    sigma_dff: np.ndarray | None = None,
    **parameters: Any,
) -> EventResult:
    """Run the registered detector ``method`` and validate what it returns.

    Bad inputs (non-2-D dF/F, bad frame rate, ``sigma_dff`` of the wrong length, unknown method)
    raise InputError; a detector returning arrays of the wrong shape raises ValueError.
    """
    detector = get_event_detector(method)
    rate = check_frame_rate(frame_rate_hz)
    values = np.asarray(dff)
    if values.ndim != 2 or values.dtype.kind not in "biuf":
        raise InputError(f"dF/F must be a numeric N x T array, got shape {values.shape} and dtype {values.dtype}")
    values = values.astype(np.float64)
    if sigma_dff is not None:
        sigma_dff = np.asarray(sigma_dff, dtype=np.float64)
        if sigma_dff.shape != (values.shape[0],):
            raise InputError(f"sigma_dff has shape {sigma_dff.shape}, expected ({values.shape[0]},)")
    result = detector.detect(values, rate, sigma_dff=sigma_dff, **parameters)
    if not isinstance(result, EventResult):
        raise ValueError(f"event detector {method!r} returned {type(result).__name__}, expected EventResult")
    if np.shape(result.events) != values.shape:
        raise ValueError(f"event detector {method!r} returned events of shape {np.shape(result.events)}, expected {values.shape}")
    if np.shape(result.noise_std) != (values.shape[0],):
        raise ValueError(f"event detector {method!r} returned noise_std of shape {np.shape(result.noise_std)}")
    if result.lambdas is not None and np.shape(result.lambdas) != (values.shape[0],):
        raise ValueError(f"event detector {method!r} returned lambdas of shape {np.shape(result.lambdas)}")
    return result


@dataclass(frozen=True)
class EventsPlane:
    """One plane's event detection: the written ``events.h5``, the method and resolved parameters, the ROIs
    processed and the number of events per ROI."""

    events: Path
    method: str
    parameters: dict[str, Any]
    roi_ids: list[str]
    event_counts: list[int]


def events_plane(
    dff_file: str | os.PathLike,
    output_file: str | os.PathLike,
    frame_rate_hz: float,
    *,
    method: str = "l0",
    valid_roi_ids: Optional[Sequence[Any]] = None,
    parameters: Optional[Mapping[str, Any]] = None,
) -> EventsPlane:
    """Detect events on the dF/F of ``dff_file`` (``dff.h5``) for the ROIs in ``valid_roi_ids`` (all when None;
    ids missing from the file are an InputError) and write ``output_file`` (``events.h5``) with those ROIs only,
    as the Allen event-detection stage does."""
    from release_platform.ophys import io

    traces = io.read_dff(dff_file)
    ids = [str(i) for i in traces.roi_ids]
    if valid_roi_ids is None:
        keep = list(range(len(ids)))
    else:
        wanted = [str(i) for i in valid_roi_ids]
        missing = sorted(set(wanted) - set(ids))
        if missing:
            raise InputError(f"valid ROI ids not in the dF/F file: {missing[:10]}", path=dff_file)
        wanted_set = set(wanted)
        keep = [row for row, roi in enumerate(ids) if roi in wanted_set]
    dff = traces.traces[keep]
    try:
        result = detect_events(dff, frame_rate_hz, method, **dict(parameters or {}))
    except InputError as exc:
        if exc.path is None:
            raise InputError(exc.problem, entity=exc.entity, path=dff_file) from None
        raise
    lambdas = result.lambdas if result.lambdas is not None else np.full(len(keep), np.nan)
    kept_ids = [ids[row] for row in keep]
    out = io.write_events_file(output_file, events=result.events, lambdas=lambdas, noise_stds=result.noise_std,
                               roi_ids=kept_ids, method=method, parameters=result.parameters)
    counts = [int(np.count_nonzero(row > 0)) for row in result.events]
    return EventsPlane(events=out, method=method, parameters=dict(result.parameters), roi_ids=kept_ids,
                       event_counts=counts)


# the detectors that ship with the platform register themselves on import
from release_platform.ophys import events_l0 as _events_l0  # noqa: E402,F401
