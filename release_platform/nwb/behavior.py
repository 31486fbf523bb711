"""Behavior NWB: one file per behavior-only session, and the behavior content shared with ophys files.

Inputs: :class:`BehaviorNwbInputs` (JSON-friendly; :meth:`BehaviorNwbInputs.from_session` builds it from a
validated :class:`release_platform.inputs.BehaviorSessionInputs`). The file
``<output_dir>/behavior_session_<id>.nwb`` is written through
:func:`release_platform.nwb.protocol.write_nwb` (``.inprogress`` -> PyNWB validation + round trip -> rename;
``.error`` on failure) and holds:

* ``NWBFile``: deterministic identifier (uuid5 of the session id and a digest of the provenance record),
  ``file_create_date`` = session start, provenance JSON in ``source_script``, ``session_id`` = the
  behavior session id, institution, keywords; ``notes`` = a JSON object of the LIMS facts
  (``behavior_session_id``, ``session_type``, ``equipment_name``, ``project_code``; the ophys writer adds
  the experiment facts), read back by :func:`release_platform.nwb.readers.read_session_metadata`.
* ``Subject``: ``subject_id``, species, sex (M/F/U/O), age as an ISO 8601 duration ``P<days>D`` (from the
  date of birth and the session date), genotype; driver and reporter lines in ``description``.
* ``intervals/trials``: one row per trial, id = ``trials_id``; every column of the trials CSV.
* ``intervals/<stimulus>_presentations``: one ``TimeIntervals`` per stimulus (the ``stimulus_name`` column,
  or, for change-detection sessions without one, the image set named by the session type, e.g.
  ``images_A``); row ids are the presentation's row number in the source table, so the tables together
  give back the source table. Columns that are all missing for a stimulus are left out of its table.
* ``processing/running/running_speed``: ``TimeSeries`` (cm/s; ``starting_time`` + ``rate`` when the
  timestamps are regular, as in the ecephys writer).
* ``processing/licking/licks``: ``TimeSeries`` with one sample per lick (timestamps = lick times (s),
  data = the 60 Hz stimulus frame of the lick).
* ``processing/rewards``: ``TimeSeries`` ``volume`` (mL) and ``autorewarded`` (bool) at the reward times.

Table conventions (the same for every table written here): booleans stay booleans; a column of
booleans with missing values becomes float (1.0/0.0/NaN); strings are stored as UTF-8 with a missing
value as ``""`` (read back as NaN); integers and floats keep their dtype. The ``load_*`` functions read a
source CSV into exactly this canonical form, and the readers give it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pydantic

import release_platform
from release_platform.errors import InputError, validate_model
from release_platform.inputs import Subject
from release_platform.nwb.config import BackendConfiguration, DatasetIOConfiguration
from release_platform.nwb.protocol import (
    WriteResult,
    deterministic_identifier,
    provenance_json,
    provenance_record,
    regular_rate,
    write_nwb,
)

__all__ = [
    "INSTITUTION",
    "Compression",
    "backend_configuration",
    "BehaviorNwbInputs",
    "NwbOutput",
    "behavior_nwb_path",
    "load_table",
    "load_trials",
    "load_licks",
    "load_rewards",
    "load_running_speed",
    "load_stimulus_presentations",
    "stimulus_name_for_session_type",
    "build_behavior_nwbfile",
    "write_behavior_nwb",
    "add_trials",
    "add_licks",
    "add_rewards",
    "add_running_speed",
    "add_stimulus_presentations",
    "add_behavior_content",
    "BehaviorTables",
    "load_behavior_tables",
    "canonical_frame",
    "interval_table",
    "make_subject",
    "age_iso8601",
    "new_nwbfile",
    "aware_datetime",
    "quiet_codec_warnings",
]

INSTITUTION = "Allen Institute"

#: ``release``: gzip 4 + shuffle (readable everywhere); ``internal``: Blosc-zstd (needs hdf5plugin);
#: ``fast``: LZF + shuffle (built into h5py; about 3-5x faster to write than gzip, larger files).
Compression = Literal["release", "internal", "fast"]

_LZF = DatasetIOConfiguration(compression="lzf", compression_level=None, shuffle=True)


def backend_configuration(tier: Compression = "release") -> BackendConfiguration:
    """The backend configuration of a compression tier (see :data:`Compression`)."""
    if tier == "fast":
        return BackendConfiguration(tier="custom", default=_LZF)
    return BackendConfiguration.for_tier(tier)


@contextlib.contextmanager
def quiet_codec_warnings():
    """hdmf warns that LZF or Blosc "may not be available on all installations"; the fast and internal tiers
    choose them knowingly (the release tier is gzip)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compression may not be available on all installations.*")
        yield


# ---------------------------------------------------------------------------------------------------------
# Inputs / outputs
# ---------------------------------------------------------------------------------------------------------


def aware_datetime(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """``value`` with UTC attached when it has no time zone (LIMS stores naive times)."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


class BehaviorNwbInputs(pydantic.BaseModel):
    """Everything the behavior-session writer needs (input JSON of a standalone run). Unknown keys are rejected."""

    model_config = pydantic.ConfigDict(extra="forbid")

    behavior_session_id: int
    output_dir: str
    session_start_time: dt.datetime
    session_type: str = ""
    equipment_name: Optional[str] = None
    project_code: Optional[str] = None
    subject: Subject
    trials_path: str
    licks_path: str
    rewards_path: str
    running_speed_path: Optional[str] = None
    stimulus_presentations_path: Optional[str] = None
    compression: Compression = "release"

    @pydantic.field_validator("session_start_time")
    @classmethod
    def _aware_start(cls, value: dt.datetime) -> dt.datetime:
        return aware_datetime(value)

    @property
    def entity(self) -> str:
        return f"behavior_session {self.behavior_session_id}"

    @property
    def output_path(self) -> Path:
        return behavior_nwb_path(self.output_dir, self.behavior_session_id)

    @classmethod
    def from_session(cls, session: Any, *, output_dir: str | os.PathLike, **overrides: Any) -> "BehaviorNwbInputs":
        """Inputs from a validated :class:`~release_platform.inputs.BehaviorSessionInputs` (LIMS files)."""
        entity = f"behavior_session {session.session_id}"
        if session.date_of_acquisition is None:
            raise InputError("session has no date_of_acquisition in LIMS", entity=entity)
        if session.subject is None:
            raise InputError("session has no subject (donor) in LIMS", entity=entity)
        files = session.files
        for key in ("BehaviorTrials", "BehaviorLicks", "BehaviorRewards"):
            if key not in files:
                raise InputError(f"no {key} file registered in LIMS", entity=entity)
        raw = dict(
            behavior_session_id=session.session_id,
            output_dir=os.fspath(output_dir),
            session_start_time=session.date_of_acquisition,
            session_type=session.session_type or "",
            equipment_name=session.equipment_name,
            project_code=session.project_code,
            subject=session.subject.model_dump(),
            trials_path=files["BehaviorTrials"],
            licks_path=files["BehaviorLicks"],
            rewards_path=files["BehaviorRewards"],
            running_speed_path=files.get("RunningSpeed"),
            stimulus_presentations_path=files.get("StimulusPresentations"),
            **overrides,
        )
        return validate_model(cls, raw, what="cannot build NWB writer inputs", entity=entity)


class NwbOutput(pydantic.BaseModel):
    """What a writer produced: the final path, its identifier, size and how many datasets were verified."""

    output_path: str
    identifier: str
    n_bytes: int
    n_datasets_checked: int
    compression: str


def behavior_nwb_path(output_dir: str | os.PathLike, behavior_session_id: int) -> Path:
    return Path(output_dir) / f"behavior_session_{int(behavior_session_id)}.nwb"


# ---------------------------------------------------------------------------------------------------------
# Source tables in canonical form
# ---------------------------------------------------------------------------------------------------------


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def canonical_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as the NWB writers store it (see the module docstring): bool columns with gaps -> float."""
    out = {}
    for name in frame.columns:
        s = frame[name]
        if s.dtype == object:
            present = [v for v in s if not _is_missing(v)]
            if present and all(isinstance(v, (bool, np.bool_)) for v in present):
                s = pd.Series([np.nan if _is_missing(v) else float(v) for v in s], index=s.index, dtype=np.float64)
            elif present and all(isinstance(v, str) for v in present):
                s = pd.Series([np.nan if _is_missing(v) else v for v in s], index=s.index, dtype=object)
            else:
                s = pd.Series([np.nan if _is_missing(v) else str(v) for v in s], index=s.index, dtype=object)
        elif pd.api.types.is_integer_dtype(s.dtype):
            s = s.astype(np.int64)
        elif pd.api.types.is_float_dtype(s.dtype):
            s = s.astype(np.float64)
        out[str(name)] = s
    return pd.DataFrame(out, index=frame.index)


def load_table(path: str | os.PathLike, *, entity: str, what: str, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read a source CSV in canonical form; a missing/unreadable file or a missing column is one InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} is missing", entity=entity, path=path)
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"unreadable {what}: {exc}", entity=entity, path=path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{what} lacks required columns {missing}", entity=entity, path=path)
    return canonical_frame(frame)


def _require_times(frame: pd.DataFrame, path: Any, entity: str, what: str, columns: Sequence[str]) -> None:
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any() or not np.isfinite(values.to_numpy(dtype=np.float64)).all():
            raise InputError(f"{what} column {col!r} has missing or non-numeric times", entity=entity, path=path)


def _require_intervals(frame: pd.DataFrame, path: Any, entity: str, what: str) -> None:
    _require_times(frame, path, entity, what, ("start_time", "stop_time"))
    bad = ~(frame["stop_time"].to_numpy(np.float64) >= frame["start_time"].to_numpy(np.float64))
    if bad.any():
        raise InputError(f"{int(bad.sum())} {what} rows stop before they start", entity=entity, path=path)


def load_trials(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    """Trials indexed by ``trials_id`` (the row number when the CSV has no such column)."""
    frame = load_table(path, entity=entity, what="trials table", required=("start_time", "stop_time"))
    _require_intervals(frame, path, entity, "trials")
    if "trials_id" in frame.columns:
        ids = frame.pop("trials_id")
        if ids.duplicated().any():
            raise InputError("trials_id values are not unique", entity=entity, path=path)
        frame.index = pd.Index(ids.to_numpy(np.int64), name="trials_id")
    else:
        frame.index = pd.RangeIndex(len(frame), name="trials_id")
    return frame


def load_licks(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    frame = load_table(path, entity=entity, what="licks table", required=("timestamps",))
    _require_times(frame, path, entity, "licks table", ("timestamps",))
    if "frame" not in frame.columns:
        frame["frame"] = np.full(len(frame), -1, dtype=np.int64)
    return frame[["timestamps", "frame"]].reset_index(drop=True)


def load_rewards(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    frame = load_table(path, entity=entity, what="rewards table", required=("timestamps", "volume"))
    _require_times(frame, path, entity, "rewards table", ("timestamps",))
    if "auto_rewarded" not in frame.columns:
        frame["auto_rewarded"] = False
    frame["auto_rewarded"] = frame["auto_rewarded"].astype(bool)
    frame["volume"] = frame["volume"].astype(np.float64)
    return frame[["timestamps", "volume", "auto_rewarded"]].reset_index(drop=True)


def load_running_speed(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    frame = load_table(path, entity=entity, what="running speed table", required=("timestamps", "speed"))
    _require_times(frame, path, entity, "running speed table", ("timestamps",))
    ts = frame["timestamps"].to_numpy(np.float64)
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise InputError("running speed timestamps are not strictly increasing", entity=entity, path=path)
    return pd.DataFrame({"timestamps": ts, "speed": frame["speed"].to_numpy(np.float64)})


def stimulus_name_for_session_type(session_type: str) -> str:
    """The stimulus of a change-detection session: ``images_<set>``, ``gratings`` or ``change_detection``."""
    m = re.search(r"_images_([A-Za-z0-9]+?)(?:_|$)", session_type or "")
    if m:
        return f"images_{m.group(1)}"
    if "gratings" in (session_type or ""):
        return "gratings"
    return "change_detection"


def load_stimulus_presentations(path: str | os.PathLike, *, entity: str, default_stimulus_name: Optional[str] = None) -> pd.DataFrame:
    """Presentations indexed by ``stimulus_presentations_id`` (row number). ``Start``/``End`` are accepted.

    Without a ``stimulus_name`` column every row belongs to ``default_stimulus_name`` (the column is not
    added; the writer uses the name for the table only).
    """
    frame = load_table(path, entity=entity, what="stimulus table")
    frame = frame.rename(columns={"Start": "start_time", "End": "stop_time"})
    missing = [c for c in ("start_time", "stop_time") if c not in frame.columns]
    if missing:
        raise InputError(f"stimulus table lacks required columns {missing}", entity=entity, path=path)
    if "stimulus_name" not in frame.columns and default_stimulus_name is None:
        raise InputError("stimulus table lacks required columns ['stimulus_name']", entity=entity, path=path)
    _require_intervals(frame, path, entity, "stimulus presentations")
    frame.index = pd.RangeIndex(len(frame), name="stimulus_presentations_id")
    return frame


# ---------------------------------------------------------------------------------------------------------
# Building blocks (shared with the ophys writer)
# ---------------------------------------------------------------------------------------------------------


def _sex(value: str) -> str:
    v = (value or "").strip().lower()
    return {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}.get(v, "U")


def age_iso8601(date_of_birth: Optional[dt.datetime], session_start: dt.datetime) -> Optional[str]:
    """``P<days>D`` from the date of birth to the session start (None when unknown or negative)."""
    if date_of_birth is None:
        return None
    days = (aware_datetime(session_start) - aware_datetime(date_of_birth)).days
    return f"P{days}D" if days >= 0 else None


def make_subject(subject: Subject, session_start: dt.datetime, *, entity: str):
    from pynwb.file import Subject as NwbSubject

    sid = str(subject.subject_id or "").strip()
    if not sid:
        raise InputError("subject has no subject_id", entity=entity)
    age = age_iso8601(subject.date_of_birth, session_start)
    if age is None:
        raise InputError(f"cannot give the subject's age: date_of_birth {subject.date_of_birth} is missing or after the session",
                         entity=entity)
    lines = []
    if subject.driver_line:
        lines.append("driver line: " + ", ".join(subject.driver_line))
    if subject.reporter_line:
        lines.append("reporter line: " + ", ".join(subject.reporter_line))
    return NwbSubject(
        subject_id=sid.replace("/", "_"),
        species=subject.species or "Mus musculus",
        sex=_sex(subject.sex),
        age=age,
        genotype=subject.full_genotype or None,
        description=("; ".join(lines) or f"donor {sid}"),
    )


def _digest_of(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(provenance_json(record).encode()).hexdigest()[:16]


def new_nwbfile(
    *,
    kind: str,
    ids: Sequence[Any],
    session_id: int,
    session_start_time: dt.datetime,
    description: str,
    experiment_description: str,
    keywords: Sequence[str],
    subject: Subject,
    provenance: dict,
    writer: str,
    notes: Mapping[str, Any],
    stimulus_notes: Optional[str],
    entity: str,
):
    from pynwb import NWBFile

    start = aware_datetime(session_start_time)
    return NWBFile(
        session_description=description,
        identifier=deterministic_identifier(kind, *ids, _digest_of(provenance)),
        session_start_time=start,
        file_create_date=start,
        session_id=str(session_id),
        institution=INSTITUTION,
        experiment_description=experiment_description,
        keywords=list(keywords),
        stimulus_notes=stimulus_notes or None,
        notes=json.dumps({k: notes[k] for k in sorted(notes)}, sort_keys=True),
        source_script=provenance_json(provenance),
        source_script_file_name=writer,
        was_generated_by=[["release_platform", release_platform.__version__]],
        subject=make_subject(subject, start, entity=entity),
    )


def _column_data(series: pd.Series):
    if series.dtype == bool:
        return series.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64)
    return ["" if _is_missing(v) else str(v) for v in series]


def interval_table(name: str, description: str, frame: pd.DataFrame, descriptions: Mapping[str, str] | None = None,
                   *, drop_empty: bool = True):
    """A ``TimeIntervals`` from a canonical frame (ids = the frame's index; start/stop first)."""
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    descriptions = {"start_time": "start time of the interval (s)", "stop_time": "stop time of the interval (s)",
                    **(descriptions or {})}
    names = ["start_time", "stop_time"] + [c for c in frame.columns if c not in ("start_time", "stop_time")]
    cols = []
    for col in names:
        s = frame[col]
        if drop_empty and col not in ("start_time", "stop_time") and s.isna().all():
            continue
        data = s.to_numpy(np.float64) if col in ("start_time", "stop_time") else _column_data(s)
        cols.append(VectorData(name=str(col), description=descriptions.get(col) or f"{col} of each interval", data=data))
    return TimeIntervals(name=name, description=description, id=frame.index.to_numpy(dtype=np.int64), columns=cols)


TRIAL_COLUMNS = {
    "change_time": "time (s) of the image change (the sham change on catch trials; empty on aborted trials)",
    "is_change": "whether the image changed on this trial",
    "go": "go trial: the image changed and a lick in the response window is rewarded",
    "catch": "catch trial: a sham change (same image)",
    "aborted": "the mouse licked before the change; the trial ended early",
    "hit": "go trial with a lick in the response window",
    "miss": "go trial without a lick in the response window",
    "false_alarm": "catch trial with a lick in the response window",
    "correct_reject": "catch trial without a lick in the response window",
    "auto_rewarded": "a reward was delivered at the change without a lick",
    "initial_image_name": "image shown before the change",
    "change_image_name": "image shown after the change",
    "response_latency": "first lick after the change minus change_time (s)",
    "response_time": "time (s) of the first lick after the trial start",
    "reward_time": "time (s) of the reward",
    "reward_volume": "reward volume (mL)",
}

STIMULUS_COLUMNS = {
    "stimulus_name": "name of the stimulus",
    "duration": "duration of the presentation (s)",
    "image_name": "name of the image shown ('omitted' for an omitted flash)",
    "image_index": "index of the image in the image set",
    "is_change": "whether this presentation is an image change",
    "omitted": "whether the flash was omitted",
    "flashes_since_change": "presentations since the last change (0 on a change)",
    "start_frame": "first stimulus frame of the presentation",
    "end_frame": "stimulus frame after the last one of the presentation",
    "trials_id": "trial the presentation belongs to (-1: none)",
    "orientation": "grating orientation (degrees)",
    "temporal_frequency": "grating temporal frequency (Hz)",
    "spatial_frequency": "grating spatial frequency (cycles/degree)",
    "phase": "grating phase",
    "frame": "image or movie frame index shown",
}


def add_trials(nwbfile, trials: pd.DataFrame) -> None:
    nwbfile.trials = interval_table("trials", "Change-detection trials: one row per trial (id = trials_id)", trials,
                                    TRIAL_COLUMNS, drop_empty=False)


def _safe_name(name: str) -> str:
    return re.sub(r"[/:\\]", "_", str(name))


def add_stimulus_presentations(nwbfile, frame: pd.DataFrame, *, default_stimulus_name: Optional[str] = None) -> list[str]:
    """One ``TimeIntervals`` per stimulus (``<stimulus>_presentations``); returns the table names."""
    if "stimulus_name" in frame.columns:
        names = frame["stimulus_name"].fillna("N/A").astype(str)
    else:
        names = pd.Series(default_stimulus_name or "stimulus", index=frame.index)
    out = []
    for stim in sorted(names.unique()):
        group = frame[names == stim].sort_values("start_time", kind="stable")
        table_name = f"{_safe_name(stim)}_presentations"
        nwbfile.add_time_intervals(
            interval_table(table_name, f"Presentation times and stimulus details for '{stim}' stimuli "
                                       "(id = row of the session's stimulus table)", group, STIMULUS_COLUMNS)
        )
        out.append(table_name)
    return out


def _timing(timestamps: np.ndarray) -> dict[str, Any]:
    regular = regular_rate(timestamps)
    return dict(starting_time=float(regular[0]), rate=float(regular[1])) if regular else dict(timestamps=timestamps)


def add_running_speed(nwbfile, running: pd.DataFrame) -> None:
    from pynwb import TimeSeries

    module = nwbfile.create_processing_module("running", "Running speed of the mouse on the wheel")
    module.add(
        TimeSeries(
            name="running_speed",
            description="Running speed of the mouse on the wheel (linear speed at the wheel's rim)",
            data=running["speed"].to_numpy(np.float64),
            unit="cm/s",
            **_timing(running["timestamps"].to_numpy(np.float64)),
        )
    )


def add_licks(nwbfile, licks: pd.DataFrame) -> None:
    from pynwb import TimeSeries

    if not len(licks):
        return
    module = nwbfile.create_processing_module("licking", "Licks of the lick spout")
    module.add(
        TimeSeries(
            name="licks",
            description="One sample per lick: timestamps = lick times (s); data = the 60 Hz stimulus frame of the lick",
            data=licks["frame"].to_numpy(np.int64),
            timestamps=licks["timestamps"].to_numpy(np.float64),
            unit="frame index",
            continuity="instantaneous",
        )
    )


def add_rewards(nwbfile, rewards: pd.DataFrame) -> None:
    from pynwb import TimeSeries

    if not len(rewards):
        return
    module = nwbfile.create_processing_module("rewards", "Water rewards delivered to the mouse")
    ts = rewards["timestamps"].to_numpy(np.float64)
    volume = TimeSeries(name="volume", description="Volume of each water reward", data=rewards["volume"].to_numpy(np.float64),
                        timestamps=ts, unit="mL", continuity="instantaneous")
    module.add(volume)
    module.add(
        TimeSeries(name="autorewarded", description="Whether the reward was delivered without a lick (auto reward)",
                   data=rewards["auto_rewarded"].to_numpy(bool), timestamps=volume, unit="n/a", continuity="instantaneous")
    )


# ---------------------------------------------------------------------------------------------------------
# The behavior session file
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BehaviorTables:
    trials: pd.DataFrame
    licks: pd.DataFrame
    rewards: pd.DataFrame
    running: Optional[pd.DataFrame]
    stimulus_presentations: Optional[pd.DataFrame]


def load_behavior_tables(inputs: BehaviorNwbInputs) -> BehaviorTables:
    entity = inputs.entity
    return BehaviorTables(
        trials=load_trials(inputs.trials_path, entity=entity),
        licks=load_licks(inputs.licks_path, entity=entity),
        rewards=load_rewards(inputs.rewards_path, entity=entity),
        running=None if not inputs.running_speed_path else load_running_speed(inputs.running_speed_path, entity=entity),
        stimulus_presentations=None if not inputs.stimulus_presentations_path else load_stimulus_presentations(
            inputs.stimulus_presentations_path, entity=entity,
            default_stimulus_name=stimulus_name_for_session_type(inputs.session_type)),
    )


def _behavior_provenance(inputs: BehaviorNwbInputs, config: BackendConfiguration) -> dict:
    files = {
        "trials": inputs.trials_path,
        "licks": inputs.licks_path,
        "rewards": inputs.rewards_path,
        "running_speed": inputs.running_speed_path,
        "stimulus_presentations": inputs.stimulus_presentations_path,
    }
    params = {
        "behavior_session_id": inputs.behavior_session_id,
        "session_start_time": aware_datetime(inputs.session_start_time),
        "session_type": inputs.session_type,
        "equipment_name": inputs.equipment_name,
        "project_code": inputs.project_code,
        "subject": inputs.subject.model_dump(mode="json"),
        "compression": inputs.compression,
        "backend": config.model_dump(mode="json"),
    }
    return provenance_record(writer="release_platform.nwb.behavior.write_behavior_nwb", parameters=params, inputs=files)


def build_behavior_nwbfile(inputs: BehaviorNwbInputs, *, config: BackendConfiguration | None = None):
    """The in-memory behavior-session ``NWBFile`` (see the module docstring)."""
    config = config or backend_configuration(inputs.compression)
    tables = load_behavior_tables(inputs)
    nwbfile = new_nwbfile(
        kind="behavior_session",
        ids=[inputs.behavior_session_id],
        session_id=inputs.behavior_session_id,
        session_start_time=inputs.session_start_time,
        description=f"Behavior session {inputs.behavior_session_id}: change-detection task ({inputs.session_type or 'unknown type'})",
        experiment_description="Visual change-detection task: head-fixed mice lick when a flashed image changes",
        keywords=["behavior", "change detection", "visual", "mouse"],
        subject=inputs.subject,
        provenance=_behavior_provenance(inputs, config),
        writer="release_platform.nwb.behavior",
        notes={"behavior_session_id": inputs.behavior_session_id, "session_type": inputs.session_type,
               "equipment_name": inputs.equipment_name, "project_code": inputs.project_code},
        stimulus_notes=inputs.session_type,
        entity=inputs.entity,
    )
    add_behavior_content(nwbfile, tables)
    if tables.stimulus_presentations is not None:
        add_stimulus_presentations(nwbfile, tables.stimulus_presentations,
                                   default_stimulus_name=stimulus_name_for_session_type(inputs.session_type))
    if tables.running is not None:
        add_running_speed(nwbfile, tables.running)
    return nwbfile


def add_behavior_content(nwbfile, tables: BehaviorTables) -> None:
    """Trials, licks and rewards (the part an ophys file shares with its linked behavior session)."""
    add_trials(nwbfile, tables.trials)
    add_licks(nwbfile, tables.licks)
    add_rewards(nwbfile, tables.rewards)


def write_through_protocol(inputs, build, *, config: BackendConfiguration | None = None,
                           round_trip: bool = True) -> NwbOutput:
    """Write ``inputs.output_path`` from ``build(inputs, config=...)`` through the write protocol.

    ``inputs`` carries ``output_path``, ``entity`` and ``compression`` (the tier); raises ``NwbWriteError``.
    """
    config = config or backend_configuration(inputs.compression)
    with quiet_codec_warnings():
        result: WriteResult = write_nwb(
            inputs.output_path,
            lambda: build(inputs, config=config),
            entity=inputs.entity,
            config=config,
            round_trip=round_trip,
        )
    return NwbOutput(output_path=os.fspath(result.path), identifier=result.identifier, n_bytes=result.n_bytes,
                     n_datasets_checked=result.n_datasets_checked, compression=inputs.compression)


def write_behavior_nwb(inputs: BehaviorNwbInputs, *, config: BackendConfiguration | None = None,
                       round_trip: bool = True) -> NwbOutput:
    """Write ``behavior_session_<id>.nwb`` through the write protocol; raises ``NwbWriteError`` on failure."""
    return write_through_protocol(inputs, build_behavior_nwbfile, config=config, round_trip=round_trip)
