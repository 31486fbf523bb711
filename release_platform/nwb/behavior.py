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
  With a rig sync file (``sync_path``, LIMS ``RigSync``) the start/stop times are the display times of the
  rows' ``start_frame``/``end_frame`` (vsync + monitor delay measured on the photodiode line,
  :mod:`release_platform.sync`); without one, the table's own times.
* ``processing/running/running_speed``: ``TimeSeries`` (cm/s; ``starting_time`` + ``rate`` when the
  timestamps are regular, as in the ecephys writer).
* ``processing/licking/licks``: ``TimeSeries`` with one sample per lick (timestamps = lick times (s),
  data = the 60 Hz stimulus frame of the lick).
* ``processing/rewards``: ``TimeSeries`` ``volume`` (mL) and ``autorewarded`` (bool) at the reward times.

Tables follow the conventions of :mod:`release_platform.nwb.common` (booleans stay booleans, a missing
string is ``""``); the ``load_*`` functions read a source CSV into exactly this canonical form, and the
readers give it back. File creation, the subject and running speed come from :mod:`release_platform.nwb.common`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pydantic

from release_platform.errors import InputError, validate_model
from release_platform.inputs import Subject
from release_platform.nwb import allen_compat
from release_platform.nwb.common import (
    AwareDatetime,
    Compression,
    NwbOutput,
    add_running_speed,
    aware_datetime,
    backend_configuration,
    interval_table,
    load_running_speed,
    load_table,
    make_subject,
    new_nwbfile,
    require_session_facts,
    require_intervals,
    require_times,
    safe_name,
    write_nwb_from_inputs,
)
from release_platform.nwb.config import BackendConfiguration
from release_platform.nwb.protocol import provenance_record

__all__ = [
    "BehaviorNwbInputs",
    "behavior_nwb_path",
    "load_trials",
    "load_licks",
    "load_rewards",
    "load_stimulus_presentations",
    "stimulus_name_for_session_type",
    "build_behavior_nwbfile",
    "write_behavior_nwb",
    "add_trials",
    "add_licks",
    "add_rewards",
    "add_stimulus_presentations",
    "add_behavior_content",
    "BehaviorTables",
    "load_behavior_tables",
]


# ---------------------------------------------------------------------------------------------------------
# Inputs / outputs
# ---------------------------------------------------------------------------------------------------------


class BehaviorNwbInputs(pydantic.BaseModel):
    """Everything the behavior-session writer needs (input JSON of a standalone run). Unknown keys are rejected."""

    model_config = pydantic.ConfigDict(extra="forbid")

    behavior_session_id: int
    output_dir: str
    session_start_time: AwareDatetime
    session_type: str = ""
    equipment_name: Optional[str] = None
    project_code: Optional[str] = None
    subject: Subject
    trials_path: str
    licks_path: str
    rewards_path: str
    running_speed_path: Optional[str] = None
    stimulus_presentations_path: Optional[str] = None
    #: Rig sync file: when given, presentation times come from its vsync/photodiode lines and the
    #: presentations' start_frame/end_frame (release_platform.sync); otherwise from the table's times.
    sync_path: Optional[str] = None
    compression: Compression = "release"
    compat: allen_compat.Compat = "none"  # "allensdk": also the names AllenSDK's readers expect
    allen: allen_compat.AllenOptions = allen_compat.AllenOptions()


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
        require_session_facts(session, entity)
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
            sync_path=files.get("RigSync"),
            **overrides,
        )
        return validate_model(cls, raw, what="cannot build NWB writer inputs", entity=entity)


def behavior_nwb_path(output_dir: str | os.PathLike, behavior_session_id: int) -> Path:
    return Path(output_dir) / f"behavior_session_{int(behavior_session_id)}.nwb"


# ---------------------------------------------------------------------------------------------------------
# Source tables in canonical form
# ---------------------------------------------------------------------------------------------------------


def load_trials(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    """Trials indexed by ``trials_id`` (the row number when the CSV has no such column)."""
    frame = load_table(path, entity=entity, what="trials table", required=("start_time", "stop_time"))
    require_intervals(frame, path, entity, "trials")
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
    require_times(frame, path, entity, "licks table", ("timestamps",))
    if "frame" not in frame.columns:
        frame["frame"] = np.full(len(frame), -1, dtype=np.int64)
    return frame[["timestamps", "frame"]].reset_index(drop=True)


def load_rewards(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    frame = load_table(path, entity=entity, what="rewards table", required=("timestamps", "volume"))
    require_times(frame, path, entity, "rewards table", ("timestamps",))
    if "auto_rewarded" not in frame.columns:
        frame["auto_rewarded"] = False
    frame["auto_rewarded"] = frame["auto_rewarded"].astype(bool)
    frame["volume"] = frame["volume"].astype(np.float64)
    return frame[["timestamps", "volume", "auto_rewarded"]].reset_index(drop=True)


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
    require_intervals(frame, path, entity, "stimulus presentations")
    frame.index = pd.RangeIndex(len(frame), name="stimulus_presentations_id")
    return frame


# ---------------------------------------------------------------------------------------------------------
# Behavior content (shared with the ophys writer)
# ---------------------------------------------------------------------------------------------------------


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


def add_stimulus_presentations(nwbfile, frame: pd.DataFrame, *, default_stimulus_name: Optional[str] = None) -> list[str]:
    """One ``TimeIntervals`` per stimulus (``<stimulus>_presentations``); returns the table names."""
    if "stimulus_name" in frame.columns:
        names = frame["stimulus_name"].fillna("N/A").astype(str)
    else:
        names = pd.Series(default_stimulus_name or "stimulus", index=frame.index)
    out = []
    for stim in sorted(names.unique()):
        group = frame[names == stim].sort_values("start_time", kind="stable")
        table_name = f"{safe_name(stim)}_presentations"
        nwbfile.add_time_intervals(
            interval_table(table_name, f"Presentation times and stimulus details for '{stim}' stimuli "
                                       "(id = row of the session's stimulus table)", group, STIMULUS_COLUMNS)
        )
        out.append(table_name)
    return out


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
    tables = BehaviorTables(
        trials=load_trials(inputs.trials_path, entity=entity),
        licks=load_licks(inputs.licks_path, entity=entity),
        rewards=load_rewards(inputs.rewards_path, entity=entity),
        running=None if not inputs.running_speed_path else load_running_speed(inputs.running_speed_path, entity=entity),
        stimulus_presentations=None if not inputs.stimulus_presentations_path else load_stimulus_presentations(
            inputs.stimulus_presentations_path, entity=entity,
            default_stimulus_name=stimulus_name_for_session_type(inputs.session_type)),
    )
    if inputs.sync_path and tables.stimulus_presentations is not None:
        from release_platform.sync import presentations_from_sync

        tables.stimulus_presentations, _ = presentations_from_sync(
            tables.stimulus_presentations, inputs.sync_path, entity=entity, table_path=inputs.stimulus_presentations_path)
    return tables


def _behavior_provenance(inputs: BehaviorNwbInputs, config: BackendConfiguration) -> dict:
    files = {
        "trials": inputs.trials_path,
        "licks": inputs.licks_path,
        "rewards": inputs.rewards_path,
        "running_speed": inputs.running_speed_path,
        "stimulus_presentations": inputs.stimulus_presentations_path,
    }
    if inputs.sync_path:
        files["sync"] = inputs.sync_path
    params = {
        "behavior_session_id": inputs.behavior_session_id,
        "session_start_time": aware_datetime(inputs.session_start_time),
        "session_type": inputs.session_type,
        "equipment_name": inputs.equipment_name,
        "project_code": inputs.project_code,
        "subject": inputs.subject.model_dump(mode="json"),
        "compression": inputs.compression,
        "backend": config.model_dump(mode="json"),
        **allen_compat.provenance_parameters(inputs),
    }
    return provenance_record(writer="release_platform.nwb.behavior.write_behavior_nwb", parameters=params, inputs=files)


def build_behavior_nwbfile(inputs: BehaviorNwbInputs, *, config: BackendConfiguration | None = None):
    """The in-memory behavior-session ``NWBFile`` (see the module docstring)."""
    config = config or backend_configuration(inputs.compression)
    tables = load_behavior_tables(inputs)
    allen = inputs.compat == "allensdk"
    nwbfile = new_nwbfile(
        kind="behavior_session",
        ids=[inputs.behavior_session_id],
        session_id=inputs.behavior_session_id,
        session_start_time=inputs.session_start_time,
        description=f"Behavior session {inputs.behavior_session_id}: change-detection task ({inputs.session_type or 'unknown type'})",
        experiment_description="Visual change-detection task: head-fixed mice lick when a flashed image changes",
        keywords=["behavior", "change detection", "visual", "mouse"],
        subject=(allen_compat.allen_subject if allen else make_subject)(inputs.subject, inputs.session_start_time, entity=inputs.entity),
        identifier=allen_compat.file_identifier(inputs.compat, inputs.behavior_session_id),
        provenance=_behavior_provenance(inputs, config),
        writer="release_platform.nwb.behavior",
        notes={"behavior_session_id": inputs.behavior_session_id, "session_type": inputs.session_type,
               "equipment_name": inputs.equipment_name, "project_code": inputs.project_code},
        stimulus_notes=inputs.session_type,
    )
    add_behavior_content(nwbfile, tables)
    if tables.stimulus_presentations is not None:
        add_stimulus_presentations(nwbfile, tables.stimulus_presentations,
                                   default_stimulus_name=stimulus_name_for_session_type(inputs.session_type))
    if tables.running is not None:
        add_running_speed(nwbfile, tables.running)
    if allen:
        allen_compat.add_behavior_session_compat(nwbfile, inputs, tables)
    return nwbfile


def add_behavior_content(nwbfile, tables: BehaviorTables) -> None:
    """Trials, licks and rewards (the part an ophys file shares with its linked behavior session)."""
    add_trials(nwbfile, tables.trials)
    add_licks(nwbfile, tables.licks)
    add_rewards(nwbfile, tables.rewards)


def write_behavior_nwb(inputs: BehaviorNwbInputs, *, config: BackendConfiguration | None = None,
                       round_trip: bool = True) -> NwbOutput:
    """Write ``behavior_session_<id>.nwb`` through the write protocol; raises ``NwbWriteError`` on failure."""
    return write_nwb_from_inputs(inputs, build_behavior_nwbfile, config=config, round_trip=round_trip)
