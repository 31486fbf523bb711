"""``compat: allensdk``: the names AllenSDK's Visual Behavior readers expect, added to the behavior and
behavior-ophys files (:mod:`release_platform.nwb.behavior`, :mod:`release_platform.nwb.ophys`).

The platform's own layout stays as it is (every container, table and column); this mode adds, with the
types of the platform's extension (:mod:`release_platform.nwb.extension`):

* the NWB ``identifier`` = the session id (behavior files) or the ophys experiment id (ophys files);
* ``general/subject`` as ``BehaviorSubject`` (``driver_line``, ``reporter_line``, ``cre_line``,
  ``age_in_days``; age ``P<days>D``, genotype = full genotype);
* ``general/metadata`` (``BehaviorMetadata`` / ``OphysBehaviorMetadata``: ids, rig, stimulus frame rate,
  session type, project code, field of view, imaging depth, plane group) and ``general/task_parameters``
  (``BehaviorTaskParameters``, see :func:`task_parameters`);
* ``processing/stimulus/timestamps``: one time per stimulus monitor frame (:func:`stimulus_frame_times`);
* ``processing/running``: ``speed`` and ``speed_unfiltered`` (the source's running speed, explicit
  timestamps; data linked, not copied), ``dx`` (cm travelled per stimulus frame); ``acquisition/v_sig``
  and ``acquisition/v_in`` (wheel encoder voltages: from the running table's ``v_sig``/``v_in`` columns
  when it has them, else NaN: the source holds no voltages);
* ophys files, in ``processing/ophys``: ``dff/traces``, ``corrected_fluorescence/traces`` (+ ``r`` and
  ``RMSE`` per ROI), ``demixed_trace/traces`` and ``neuropil_trace/traces`` (all linking the data of the
  platform's series, with the frame times as explicit timestamps), ``event_detection``
  (``OphysEventDetection``) when an events record is given, and in ``images``: ``average_image`` and
  ``segmentation_mask_image`` (label image: 1 + the ROI's row where its mask is set);
* ``intervals/invalid_times`` when invalid intervals are given.

An events record (:class:`EventsRecord`) is the L0 event detector's per-plane output: ``events``
(ROIs x frames), ``lambdas``, ``noise_stds`` and ``roi_ids``; :func:`load_events` reads it from HDF5
(datasets ``events``, ``lambdas``, ``noise_stds``, ``roi_names``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pydantic

from release_platform.errors import InputError
from release_platform.nwb.common import age_in_days, nwb_sex, subject_id_of
from release_platform.nwb.protocol import regular_rate

__all__ = [
    "Compat",
    "AllenOptions",
    "InvalidInterval",
    "EventsRecord",
    "load_events",
    "cre_line_of",
    "allen_subject",
    "stimulus_frame_times",
    "task_parameters",
    "file_identifier",
    "add_behavior_session_compat",
    "add_behavior_ophys_compat",
    "provenance_parameters",
    "options_for",
    "has_event_detection",
    "TIMESTAMPED_SERIES",
    "is_allen_compat_file",
    "note_required_timestamps",
]

#: Series whose ``timestamps`` AllenSDK's readers read (``.timestamps[:]``), so they carry explicit timestamps even
#: when regular. NWB Inspector's ``check_regular_timestamps`` would suggest ``rate`` for them; on files of this
#: mode :func:`note_required_timestamps` reports that check at these locations as a suggestion.
TIMESTAMPED_SERIES = {
    "/processing/stimulus/timestamps": "timestamps",
    "/processing/running/speed": "speed",
    "/processing/running/speed_unfiltered": "speed_unfiltered",
    "/processing/running/dx": "dx",
    "/processing/ophys/dff/traces": "traces",
}

#: ``none``: the platform's layout only; ``allensdk``: plus the names AllenSDK's readers expect.
Compat = Literal["none", "allensdk"]

#: Visual Behavior change-detection defaults, used where the session's tables cannot give the value
#: (override per session with ``AllenOptions.task_parameters``).
TASK_DEFAULTS: dict[str, Any] = {
    "response_window_sec": [0.15, 0.75],
    "auto_reward_volume": 0.005,
    "stimulus_distribution": "geometric",
    "task": "change detection",
}


class InvalidInterval(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    start_time: float
    stop_time: float
    tags: list[str] = []


class AllenOptions(pydantic.BaseModel):
    """Facts only the ``allensdk`` mode writes (all optional)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    stimulus_frame_rate_hz: float = pydantic.Field(default=60.0, gt=0)
    ophys_container_id: Optional[int] = None
    targeted_imaging_depth_um: Optional[int] = None
    plane_group_count: Optional[int] = None
    behavior_session_uuid: Optional[str] = None
    #: session type of the task (the linked behavior session's, e.g. OPHYS_1_images_A) when the ophys session's differs
    task_session_type: Optional[str] = None
    task_parameters: dict[str, Any] = {}
    events_path: Optional[str] = None
    invalid_times: list[InvalidInterval] = []


def options_for(behavior_session: Any = None, *, events: Optional[Mapping[str, Any]] = None, **overrides: Any) -> dict[str, Any]:
    """The ``allen`` options of a plane's writer inputs: the task session type of the linked behavior session
    (AllenSDK parses the image set from it) and the events file (``events["file"]``, the event detector's
    per-plane record) when given."""
    out: dict[str, Any] = {}
    if behavior_session is not None and getattr(behavior_session, "session_type", None):
        out["task_session_type"] = behavior_session.session_type
    if events is not None and events.get("file"):
        out["events_path"] = str(events["file"])
    out.update(overrides)
    return out


# ---------------------------------------------------------------------------------------------------------
# Events record
# ---------------------------------------------------------------------------------------------------------


class EventsRecord(pydantic.BaseModel):
    """Detected events of one plane: ``events`` (ROIs x frames), per-ROI ``lambdas``/``noise_stds``."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    roi_ids: np.ndarray
    events: np.ndarray
    lambdas: np.ndarray
    noise_stds: np.ndarray

    @pydantic.model_validator(mode="after")
    def _shapes(self) -> "EventsRecord":
        n = len(self.roi_ids)
        if self.events.ndim != 2 or self.events.shape[0] != n:
            raise ValueError(f"events must be ROIs x frames with {n} rows; got shape {self.events.shape}")
        for name in ("lambdas", "noise_stds"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"{name} must hold one value per ROI ({n}); got shape {np.shape(getattr(self, name))}")
        if len(set(np.asarray(self.roi_ids).tolist())) != n:
            raise ValueError("events roi ids are not unique")
        return self


def load_events(path: str | os.PathLike, *, entity: str) -> EventsRecord:
    """The events record of an ``events.h5`` file (layout owned by :func:`release_platform.ophys.io.read_events_file`)."""
    from release_platform.ophys.io import read_events_file

    f = read_events_file(path, entity=entity)
    try:
        roi_ids = np.array([int(n) for n in f.roi_ids], dtype=np.int64)
    except ValueError:
        raise InputError("events file holds ROI names that are not LIMS ids", entity=entity, path=path) from None
    try:
        return EventsRecord(roi_ids=roi_ids, events=np.asarray(f.events, dtype=np.float64), lambdas=f.lambdas,
                            noise_stds=f.noise_stds)
    except pydantic.ValidationError as exc:
        raise InputError(f"events file is inconsistent: {exc.errors()[0]['msg']}", entity=entity, path=path) from None


# ---------------------------------------------------------------------------------------------------------
# File-level pieces
# ---------------------------------------------------------------------------------------------------------


def file_identifier(compat: Compat, entity_id: int) -> Optional[str]:
    """The NWB identifier the mode fixes (the session / experiment id), or None (the platform's own)."""
    return str(int(entity_id)) if compat == "allensdk" else None


def cre_line_of(driver_lines: Sequence[str], full_genotype: str = "") -> str:
    """The Cre driver line (e.g. ``Slc17a7-IRES2-Cre``) among the driver lines or in the genotype; "" if none."""
    for line in driver_lines:
        if "cre" in line.lower():
            return line
    m = re.search(r"([A-Za-z0-9_-]*-Cre)\b", full_genotype or "")
    return m.group(1) if m else ""


def allen_subject(subject: Any, session_start, *, entity: str):
    """``BehaviorSubject`` of a LIMS donor at a session (the same ids, age and genotype as the platform's)."""
    from release_platform.nwb.extension import BehaviorSubject

    sid = subject_id_of(subject.subject_id)
    days = age_in_days(subject.date_of_birth, session_start)
    if not sid:
        raise InputError("subject has no subject_id", entity=entity)
    if days is None or days < 0:
        raise InputError(f"cannot give the subject's age: date_of_birth {subject.date_of_birth} is missing or after the session",
                         entity=entity)
    kwargs: dict[str, Any] = dict(
        subject_id=sid,
        description=f"Mouse {sid} (LabTracks id); driver lines {list(subject.driver_line)}, reporter line "
                    f"{', '.join(subject.reporter_line) or 'none'}",
        age=f"P{days}D",
        age_in_days=int(days),
        sex=nwb_sex(subject.sex),
        species=subject.species or "Mus musculus",
        reporter_line=", ".join(subject.reporter_line) if subject.reporter_line else "None",
        cre_line=cre_line_of(subject.driver_line, subject.full_genotype),
    )
    if subject.full_genotype:
        kwargs["genotype"] = subject.full_genotype
    if subject.driver_line:
        kwargs["driver_line"] = list(subject.driver_line)
    return BehaviorSubject(**kwargs)


def stimulus_frame_times(*, running: Optional[pd.DataFrame], presentations: Optional[pd.DataFrame], rate_hz: float,
                         entity: str) -> Optional[np.ndarray]:
    """One time per stimulus monitor frame.

    The running speed is sampled once per stimulus frame (the Visual Behavior convention), so its timestamps
    are the frame times when they are at the monitor rate and cover every presented frame; otherwise the
    frame times follow the presentations' ``start_frame``/``start_time`` (least-squares line, frames
    0 .. max ``end_frame``). None when neither table can give them.
    """
    n_needed = 0
    if presentations is not None and "end_frame" in presentations.columns and len(presentations):
        n_needed = int(pd.to_numeric(presentations["end_frame"], errors="coerce").max()) + 1
    if running is not None and len(running) > 1:
        ts = running["timestamps"].to_numpy(np.float64)
        rate = 1.0 / float(np.median(np.diff(ts)))
        if abs(rate - rate_hz) <= 0.01 * rate_hz and len(ts) >= n_needed:
            return ts
    if presentations is not None and {"start_frame", "start_time"} <= set(presentations.columns) and len(presentations) > 1:
        frames = pd.to_numeric(presentations["start_frame"], errors="coerce").to_numpy(np.float64)
        times = presentations["start_time"].to_numpy(np.float64)
        ok = np.isfinite(frames) & np.isfinite(times)
        if ok.sum() >= 2 and np.ptp(frames[ok]) > 0:
            slope, offset = np.polyfit(frames[ok], times[ok], 1)
            if slope <= 0:
                raise InputError("stimulus presentations' start_time does not increase with start_frame", entity=entity)
            return offset + slope * np.arange(max(n_needed, int(frames[ok].max()) + 1), dtype=np.float64)
    return None


def _median_or_nan(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def task_parameters(*, session_type: str, presentations: Optional[pd.DataFrame], rewards: Optional[pd.DataFrame],
                    n_stimulus_frames: int, overrides: Mapping[str, Any] | None = None,
                    frame_rate_hz: float = 60.0) -> dict[str, Any]:
    """The task parameters of a session, from its tables where they tell (else :data:`TASK_DEFAULTS`).

    ``stimulus_duration_sec``: median duration of the shown (not omitted) presentations;
    ``blank_duration_sec``: median gap between consecutive presentations (both bounds);
    both are the task's nominal values, so they are rounded to whole monitor frames (``frame_rate_hz``): times
    measured on the rig's sync line carry the display's jitter;
    ``omitted_flash_fraction``: share of omitted presentations (NaN when the table has no ``omitted``);
    ``reward_volume`` / ``auto_reward_volume``: median volume of earned / automatic rewards;
    ``stimulus``: ``gratings`` for grating sessions, else ``images``; ``stimulus_name``: the image set.
    """
    from release_platform.nwb.behavior import stimulus_name_for_session_type

    out: dict[str, Any] = dict(TASK_DEFAULTS)
    out["session_type"] = session_type or ""
    out["stimulus_name"] = stimulus_name_for_session_type(session_type)
    out["stimulus"] = "gratings" if "gratings" in (session_type or "") else "images"
    out["n_stimulus_frames"] = int(n_stimulus_frames)
    duration, blank, omitted = float("nan"), float("nan"), float("nan")
    if presentations is not None and len(presentations):
        p = presentations.sort_values("start_time", kind="stable")
        shown = p
        if "omitted" in p.columns:
            flags = p["omitted"].fillna(False).astype(bool).to_numpy()
            omitted = float(flags.mean())
            shown = p[~flags]
        duration = _median_or_nan(shown["stop_time"].to_numpy(np.float64) - shown["start_time"].to_numpy(np.float64))
        if len(shown) > 1:
            blank = _median_or_nan(shown["start_time"].to_numpy(np.float64)[1:] - shown["stop_time"].to_numpy(np.float64)[:-1])
    duration, blank = (round(v * frame_rate_hz) / frame_rate_hz if np.isfinite(v) else v for v in (duration, blank))
    out["stimulus_duration_sec"] = duration
    out["blank_duration_sec"] = [blank, blank]
    out["omitted_flash_fraction"] = omitted
    reward, auto = float("nan"), float("nan")
    if rewards is not None and len(rewards):
        auto_flags = rewards["auto_rewarded"].astype(bool).to_numpy()
        reward = _median_or_nan(rewards["volume"].to_numpy(np.float64)[~auto_flags])
        auto = _median_or_nan(rewards["volume"].to_numpy(np.float64)[auto_flags])
    out["reward_volume"] = reward
    if np.isfinite(auto):
        out["auto_reward_volume"] = auto
    out.update(dict(overrides or {}))
    return out


def _task_parameters_object(params: Mapping[str, Any]):
    from release_platform.nwb.extension import BehaviorTaskParameters

    p = dict(params)
    return BehaviorTaskParameters(
        name="task_parameters",
        blank_duration_sec=np.asarray(p["blank_duration_sec"], dtype=np.float64),
        stimulus_duration_sec=float(p["stimulus_duration_sec"]),
        omitted_flash_fraction=float(p["omitted_flash_fraction"]),
        response_window_sec=np.asarray(p["response_window_sec"], dtype=np.float64),
        reward_volume=float(p["reward_volume"]),
        auto_reward_volume=float(p["auto_reward_volume"]),
        session_type=str(p["session_type"]),
        stimulus=str(p["stimulus"]),
        stimulus_distribution=str(p["stimulus_distribution"]),
        task=str(p["task"]),
        n_stimulus_frames=int(p["n_stimulus_frames"]),
        stimulus_name=str(p["stimulus_name"]),
    )


def _add_stimulus_timestamps(nwbfile, frame_times: np.ndarray):
    from pynwb import TimeSeries

    module = nwbfile.create_processing_module("stimulus", "Times of the stimulus monitor frames")
    series = TimeSeries(name="timestamps", description="One sample per stimulus monitor frame: data = frame index, "
                        "timestamps = the frame's time (s)", data=np.arange(len(frame_times), dtype=np.int64),
                        timestamps=np.asarray(frame_times, dtype=np.float64), unit="frame index")
    module.add(series)
    return series


def _add_running_compat(nwbfile, running: pd.DataFrame, frame_series) -> None:
    from pynwb import TimeSeries

    module = nwbfile.processing["running"]
    ours = module["running_speed"]
    ts = running["timestamps"].to_numpy(np.float64)
    same_times = frame_series is not None and len(frame_series.timestamps) == len(ts) and np.array_equal(frame_series.timestamps, ts)
    times = frame_series if same_times else ts
    speed = TimeSeries(name="speed", description="Running speed (cm/s): the data of running_speed, with explicit timestamps",
                       data=ours, timestamps=times, unit="cm/s")
    module.add(speed)
    module.add(TimeSeries(name="speed_unfiltered", description="Running speed (cm/s) as recorded; the source gives one "
                          "running speed, so this is the data of running_speed", data=ours, timestamps=speed, unit="cm/s"))
    speed_values = running["speed"].to_numpy(np.float64)
    if "dx" in running.columns:
        dx, dx_doc = running["dx"].to_numpy(np.float64), "Wheel travel per sample, as recorded (cm)"
    else:
        dt = np.diff(ts, prepend=ts[0] - (ts[1] - ts[0] if len(ts) > 1 else 0.0))
        dx, dx_doc = speed_values * dt, "Distance run since the previous sample (cm): speed x sample interval"
    module.add(TimeSeries(name="dx", description=dx_doc, data=dx, timestamps=speed, unit="cm"))
    for name, doc in (("v_sig", "Voltage signal of the running wheel encoder"),
                      ("v_in", "Supply voltage of the running wheel encoder (the voltage at which the signal wraps)")):
        if name in running.columns:
            data, note = running[name].to_numpy(np.float64), ""
        else:
            data, note = np.full(len(ts), np.nan), "; not recorded by the source: NaN"
        nwbfile.add_acquisition(TimeSeries(name=name, description=doc + note, data=data, unit="V", **_timing_like(speed, ts)))


def _add_invalid_times(nwbfile, intervals: Sequence[InvalidInterval]) -> None:
    if not intervals:
        return
    for iv in sorted(intervals, key=lambda i: (i.start_time, i.stop_time)):
        nwbfile.add_invalid_time_interval(start_time=float(iv.start_time), stop_time=float(iv.stop_time),
                                          tags=list(iv.tags) or ["invalid"])


def _behavior_metadata(kind: str, **fields):
    from release_platform.nwb.extension import BehaviorMetadata, OphysBehaviorMetadata

    cls = OphysBehaviorMetadata if kind == "ophys" else BehaviorMetadata
    return cls(name="metadata", **fields)


def _common_metadata(*, behavior_session_id: Optional[int], options: AllenOptions, session_type: str,
                     equipment_name: Optional[str], project_code: Optional[str]) -> dict[str, Any]:
    return dict(
        behavior_session_id=int(behavior_session_id) if behavior_session_id is not None else -1,
        behavior_session_uuid=str(options.behavior_session_uuid) if options.behavior_session_uuid else "None",
        stimulus_frame_rate=float(options.stimulus_frame_rate_hz),
        session_type=session_type or "",
        equipment_name=equipment_name or "",
        project_code=project_code or "",
    )


def _add_image_names(nwbfile) -> None:
    """``image_name`` and ``omitted`` on every ``*_presentations`` table that lacks them (AllenSDK derives image
    changes from them): ``gratings_<orientation>`` for grating rows, else the table's stimulus name; omitted =
    whether ``image_name`` is ``omitted``."""
    for name, table in list(nwbfile.intervals.items()):
        if not name.endswith("_presentations"):
            continue
        if "omitted" not in table.colnames and "image_name" in table.colnames:
            table.add_column(name="omitted", description="whether the flash was omitted",
                             data=np.array([str(v) == "omitted" for v in table["image_name"].data], dtype=bool))
        if "image_name" in table.colnames:
            continue
        n = len(table.id.data)
        stimulus = name[: -len("_presentations")]
        if "orientation" in table.colnames:
            ori = np.asarray(table["orientation"].data, dtype=np.float64)
            names = [f"gratings_{o}" if np.isfinite(o) else stimulus for o in ori]
        else:
            names = [stimulus] * n
        table.add_column(name="image_name", data=names,
                         description="image shown; gratings_<orientation> for gratings, else the stimulus name")
        if "omitted" not in table.colnames:
            table.add_column(name="omitted", description="whether the flash was omitted (never, for this stimulus)",
                             data=np.zeros(n, dtype=bool))


def _behavior_part(nwbfile, *, tables: Any, session_type: str, options: AllenOptions, entity: str) -> None:
    _add_image_names(nwbfile)
    running = getattr(tables, "running", None)
    presentations = getattr(tables, "stimulus_presentations", None)
    frames = stimulus_frame_times(running=running, presentations=presentations, rate_hz=options.stimulus_frame_rate_hz,
                                  entity=entity)
    frame_series = _add_stimulus_timestamps(nwbfile, frames) if frames is not None else None
    if running is not None and "running" in nwbfile.processing:
        _add_running_compat(nwbfile, running, frame_series)
    nwbfile.add_lab_meta_data(_task_parameters_object(task_parameters(
        session_type=session_type, presentations=presentations, rewards=getattr(tables, "rewards", None),
        n_stimulus_frames=0 if frames is None else len(frames), overrides=options.task_parameters,
        frame_rate_hz=options.stimulus_frame_rate_hz)))
    _add_invalid_times(nwbfile, options.invalid_times)


def add_behavior_session_compat(nwbfile, inputs: Any, tables: Any) -> None:
    """The ``allensdk`` additions of a behavior-session file (:class:`~release_platform.nwb.behavior.BehaviorNwbInputs`)."""
    options = inputs.allen
    nwbfile.add_lab_meta_data(_behavior_metadata("behavior", **_common_metadata(
        behavior_session_id=inputs.behavior_session_id, options=options, session_type=inputs.session_type,
        equipment_name=inputs.equipment_name, project_code=inputs.project_code)))
    _behavior_part(nwbfile, tables=tables, session_type=inputs.session_type, options=options, entity=inputs.entity)


# ---------------------------------------------------------------------------------------------------------
# Behavior-ophys files
# ---------------------------------------------------------------------------------------------------------


class _OphysTables:
    def __init__(self, src: Any):
        behavior = getattr(src, "behavior", None)
        self.running = getattr(src, "running", None)
        self.stimulus_presentations = getattr(src, "stimulus", None)
        self.rewards = None if behavior is None else behavior.rewards


def _timing_like(reference, timestamps: np.ndarray) -> dict[str, Any]:
    """``starting_time`` + ``rate`` when regular (readers take only the data), else a link to ``reference``'s timestamps."""
    regular = regular_rate(timestamps)
    return dict(starting_time=float(regular[0]), rate=float(regular[1])) if regular else dict(timestamps=reference)


def _linked(series, source):
    """``series`` with its data a link to ``source``'s dataset (written once). RoiResponseSeries' argument checks
    resolve a series given as data to its (streamed) array, which would be written twice; the link is restored."""
    series.fields["data"] = source
    return series


def _region(table, n: int, description: str):
    return table.create_roi_table_region(description=description, region=list(range(n)))


def add_behavior_ophys_compat(nwbfile, inputs: Any, src: Any, *, table, series: Mapping[str, Any], images) -> None:
    """The ``allensdk`` additions of a behavior-ophys file (:class:`~release_platform.nwb.ophys.OphysNwbInputs`).

    ``table`` is the ROI table, ``series`` the platform's trace series by name, ``images`` the ``Images``
    container of the projections; ``src`` the loaded sources (per-ROI r and RMSE, timestamps, tables).
    """
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    options: AllenOptions = inputs.allen
    entity = inputs.entity
    _, height, width = inputs.movie_shape
    behavior_id = None if inputs.behavior is None else inputs.behavior.behavior_session_id
    depth = -1 if inputs.imaging_depth_um is None else int(inputs.imaging_depth_um)
    multiplane = inputs.plane_group is not None
    nwbfile.add_lab_meta_data(_behavior_metadata(
        "ophys",
        **_common_metadata(behavior_session_id=behavior_id, options=options, session_type=inputs.session_type,
                           equipment_name=inputs.equipment_name, project_code=inputs.project_code),
        targeted_structure=inputs.targeted_structure,
        ophys_experiment_id=int(inputs.ophys_experiment_id),
        ophys_session_id=int(inputs.ophys_session_id),
        ophys_container_id=-1 if options.ophys_container_id is None else int(options.ophys_container_id),
        field_of_view_width=int(width),
        field_of_view_height=int(height),
        imaging_depth=depth,
        targeted_imaging_depth=depth if options.targeted_imaging_depth_um is None else int(options.targeted_imaging_depth_um),
        imaging_plane_group=int(inputs.plane_group) if multiplane else -1,
        imaging_plane_group_count=(int(options.plane_group_count) if options.plane_group_count is not None
                                   else (int(inputs.plane_group) + 1 if multiplane else 0)),
    ))
    _behavior_part(nwbfile, tables=_OphysTables(src), session_type=options.task_session_type or inputs.session_type,
                   options=options, entity=entity)

    ophys = nwbfile.processing["ophys"]
    n = len(inputs.rois)
    timestamps = np.asarray(src.timestamps, dtype=np.float64)
    dff = series["dff"]
    traces = _linked(RoiResponseSeries(name="traces", data=dff, unit="NA", timestamps=timestamps,
                                       rois=_region(table, n, "all rows of cell_specimen_table"),
                                       description="dF/F (time x ROIs): the data of dff/dff, with the frame times"), dff)
    ophys["dff"].add_roi_response_series(traces)

    def fluorescence(name: str, source: str, description: str) -> Fluorescence:
        container = Fluorescence(name=name)
        container.add_roi_response_series(_linked(RoiResponseSeries(
            name="traces", data=series[source], unit="NA", **_timing_like(traces, timestamps), description=description,
            rois=_region(table, n, "all rows of cell_specimen_table")), series[source]))
        ophys.add(container)
        return container

    corrected = fluorescence("corrected_fluorescence", "neuropil_corrected",
                             "neuropil-corrected fluorescence (time x ROIs): the data of fluorescence/neuropil_corrected")
    for name, doc in (("r", "neuropil contamination ratio of each ROI (one value per ROI; as the cell_specimen_table column r)"),
                      ("RMSE", "error of each ROI's neuropil fit (one value per ROI; as the cell_specimen_table column RMSE)")):
        corrected.add_roi_response_series(RoiResponseSeries(
            name=name, data=np.asarray(src.per_roi[name], dtype=np.float64), unit="NA", starting_time=0.0, rate=1.0,
            description=doc + "; the time axis is the ROI index", rois=_region(table, n, "all rows of cell_specimen_table")))
    fluorescence("demixed_trace", "demixed", "demixed fluorescence (time x ROIs): the data of fluorescence/demixed")
    fluorescence("neuropil_trace", "neuropil", "neuropil fluorescence (time x ROIs): the data of fluorescence/neuropil")

    if options.events_path:
        add_event_detection(nwbfile, load_events(options.events_path, entity=entity), table=table, frame_times=timestamps,
                            reference=traces, entity=entity)

    resolution = 1e4 / inputs.pixel_size_um
    images.add_image(GrayscaleImage(name="average_image", data=np.asarray(src.average_projection), resolution=resolution,
                                    description="mean over frames of the motion-corrected movie (as average_projection)"))
    labels = np.zeros((height, width), dtype=np.uint32)
    for k, roi in enumerate(inputs.rois):
        mask = roi.mask_array()
        view = labels[roi.y: roi.y + roi.height, roi.x: roi.x + roi.width]
        view[mask & (view == 0)] = k + 1
    images.add_image(GrayscaleImage(name="segmentation_mask_image", data=labels, resolution=resolution,
                                    description="ROI label image: 1 + the ROI's row of cell_specimen_table where its mask "
                                                "is set (the first ROI wins where masks overlap), 0 elsewhere"))


def add_event_detection(nwbfile, record: EventsRecord, *, table, frame_times: np.ndarray, reference=None, entity: str) -> None:
    """``processing/ophys/event_detection`` (``OphysEventDetection``, time x ROIs) for the record's ROIs; timing as
    :func:`_timing_like` (``reference``: the series whose timestamps are linked when the frame times are irregular)."""
    from release_platform.nwb.extension import OphysEventDetection

    row_of = {int(v): k for k, v in enumerate(np.asarray(table.id.data).tolist())}
    unknown = [int(r) for r in record.roi_ids if int(r) not in row_of]
    if unknown:
        raise InputError(f"events name ROIs that are not in the ROI table: {unknown[:10]}", entity=entity)
    n_times = len(frame_times)
    if record.events.shape[1] != n_times:
        raise InputError(f"events have {record.events.shape[1]} frames but the plane has {n_times} frame times", entity=entity)
    rows = [row_of[int(r)] for r in record.roi_ids]
    nwbfile.processing["ophys"].add(OphysEventDetection(
        data=np.ascontiguousarray(record.events.T), unit="N/A",
        **_timing_like(reference if reference is not None else np.asarray(frame_times), np.asarray(frame_times)),
        lambdas=np.asarray(record.lambdas, dtype=np.float64), noise_stds=np.asarray(record.noise_stds, dtype=np.float64),
        rois=table.create_roi_table_region(description="ROIs with detected events", region=rows),
        description="L0 events detected in the dF/F traces (time x ROIs; event magnitude, 0 where none)",
    ))


def provenance_parameters(inputs: Any) -> dict[str, Any]:
    """What the mode adds to the provenance record (nothing when it is off, so those files are unchanged)."""
    if getattr(inputs, "compat", "none") == "none":
        return {}
    return {"compat": inputs.compat, "allen": inputs.allen.model_dump(mode="json")}


def is_allen_compat_file(path: str | os.PathLike) -> bool:
    """Whether an NWB file was written in this mode (its ``general/metadata`` is of the platform's extension)."""
    import h5py

    from release_platform.nwb.extension import NAMESPACE

    try:
        with h5py.File(path, "r") as fh:
            meta = fh.get("general/metadata")
            ns = None if meta is None else meta.attrs.get("namespace")
    except OSError:
        return False
    return (ns.decode() if isinstance(ns, bytes) else ns) == NAMESPACE


def note_required_timestamps(path: str | os.PathLike, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inspector messages with ``check_regular_timestamps`` on :data:`TIMESTAMPED_SERIES` of a file of this mode
    reported as ``BEST_PRACTICE_SUGGESTION`` (the timestamps are kept because AllenSDK reads them)."""
    if not any(m["check_function_name"] == "check_regular_timestamps" for m in messages) or not is_allen_compat_file(path):
        return messages
    names = set(TIMESTAMPED_SERIES.values())
    out = []
    for m in messages:
        if m["check_function_name"] == "check_regular_timestamps" and (
                m["location"] in TIMESTAMPED_SERIES or (m["object_name"] in names and (
                    m["location"] is None or str(m["location"]).startswith("/processing/ophys/dff/")))):
            m = dict(m, importance="BEST_PRACTICE_SUGGESTION",
                     message=m["message"] + " (explicit timestamps kept: AllenSDK reads them)")
        out.append(m)
    return out


def has_event_detection(path: str | os.PathLike) -> bool:
    """Whether a behavior-ophys file holds ``processing/ophys/event_detection`` (AllenSDK's experiment reader needs it)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return "processing/ophys/event_detection" in fh
    except OSError:
        return False
