"""What every NWB writer shares: backend configuration, file creation, the subject, source tables, interval
tables, running speed and the write path through the protocol.

The behavior, behavior-ophys and ecephys writers (:mod:`release_platform.nwb.behavior`,
:mod:`release_platform.nwb.ophys`, :mod:`release_platform.nwb.ecephys`) build their files from these pieces:

* :func:`backend_configuration` (compression tiers) and :func:`quiet_codec_warnings`;
* :func:`new_nwbfile`: deterministic identifier (uuid5 of the ids and a digest of the provenance record),
  ``file_create_date`` = session start, provenance JSON in ``source_script``, optional JSON ``notes``;
* :func:`nwb_subject`: the one subject builder, with :func:`subject_id_of` and :func:`age_in_days` the one
  derivation of ``subject_id`` and age (``P<days>D``) from LIMS facts;
* :func:`read_csv` (the one source-CSV reader), :func:`canonical_frame` and :func:`load_table`;
* :func:`interval_table` (a ``TimeIntervals`` from a frame) and :func:`add_running_speed`;
* :func:`write_nwb_from_inputs`: write ``inputs.output_path`` through
  :func:`release_platform.nwb.protocol.write_nwb` and return an :class:`NwbOutput`.

Table conventions (the behavior and ophys files): booleans stay booleans; a column of booleans with missing
values becomes float (1.0/0.0/NaN); strings are stored as UTF-8 with a missing value as ``""`` (read back
as NaN); integers and floats keep their dtype. The ecephys files follow the AllenSDK ecephys convention
(booleans as float, a missing string as ``"N/A"``); :func:`interval_table` takes the convention as
arguments.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pydantic

import release_platform
from release_platform.errors import InputError
from release_platform.inputs import Subject
from release_platform.nwb.config import BackendConfiguration, DatasetIOConfiguration
from release_platform.nwb.protocol import WriteResult, deterministic_identifier, provenance_json, regular_rate, write_nwb

__all__ = [
    "INSTITUTION",
    "Compression",
    "NwbOutput",
    "backend_configuration",
    "quiet_codec_warnings",
    "aware_datetime",
    "AwareDatetime",
    "require_session_facts",
    "read_csv",
    "canonical_frame",
    "load_table",
    "require_times",
    "require_intervals",
    "load_running_speed",
    "nwb_sex",
    "subject_id_of",
    "age_in_days",
    "age_iso8601",
    "nwb_subject",
    "make_subject",
    "provenance_digest",
    "new_nwbfile",
    "safe_name",
    "interval_table",
    "timing",
    "add_running_speed",
    "write_nwb_from_inputs",
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


def aware_datetime(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """``value`` with UTC attached when it has no time zone (LIMS stores naive times)."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


#: A datetime field of a writer's inputs: naive values (LIMS) are taken as UTC.
AwareDatetime = Annotated[dt.datetime, pydantic.AfterValidator(aware_datetime)]


def require_session_facts(session: Any, entity: str) -> None:
    """One InputError when a LIMS session lacks what every NWB file needs: its acquisition date and subject."""
    if session.date_of_acquisition is None:
        raise InputError("session has no date_of_acquisition in LIMS", entity=entity)
    if session.subject is None:
        raise InputError("session has no subject (donor) in LIMS", entity=entity)


class NwbOutput(pydantic.BaseModel):
    """What a writer produced: the final path, its identifier, size and how many datasets were verified."""

    output_path: str
    identifier: str
    n_bytes: int
    n_datasets_checked: int
    compression: str


# ---------------------------------------------------------------------------------------------------------
# Source tables
# ---------------------------------------------------------------------------------------------------------


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def read_csv(path: str | os.PathLike, *, entity: str, what: str, required: Sequence[str] = ()) -> pd.DataFrame:
    """A source CSV as pandas reads it; a missing/unreadable file or a missing column is one InputError."""
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
    return frame


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
    """Read a source CSV in canonical form (:func:`read_csv` then :func:`canonical_frame`)."""
    return canonical_frame(read_csv(path, entity=entity, what=what, required=required))


def require_times(frame: pd.DataFrame, path: Any, entity: str, what: str, columns: Sequence[str]) -> None:
    """One InputError when a time column has a missing, non-numeric or infinite value."""
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any() or not np.isfinite(values.to_numpy(dtype=np.float64)).all():
            raise InputError(f"{what} column {col!r} has missing or non-numeric times", entity=entity, path=path)


def require_intervals(frame: pd.DataFrame, path: Any, entity: str, what: str) -> None:
    """Finite ``start_time``/``stop_time`` with every stop at or after its start."""
    require_times(frame, path, entity, what, ("start_time", "stop_time"))
    bad = ~(frame["stop_time"].to_numpy(np.float64) >= frame["start_time"].to_numpy(np.float64))
    if bad.any():
        raise InputError(f"{int(bad.sum())} {what} rows stop before they start", entity=entity, path=path)


def load_running_speed(path: str | os.PathLike, *, entity: str) -> pd.DataFrame:
    """``timestamps`` (s, strictly increasing) and ``speed`` (cm/s)."""
    frame = load_table(path, entity=entity, what="running speed table", required=("timestamps", "speed"))
    require_times(frame, path, entity, "running speed table", ("timestamps",))
    ts = frame["timestamps"].to_numpy(np.float64)
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise InputError("running speed timestamps are not strictly increasing", entity=entity, path=path)
    return pd.DataFrame({"timestamps": ts, "speed": frame["speed"].to_numpy(np.float64)})


# ---------------------------------------------------------------------------------------------------------
# Subject and file
# ---------------------------------------------------------------------------------------------------------


def nwb_sex(value: Optional[str]) -> str:
    """M/F/O, or U when unknown."""
    v = (value or "").strip().lower()
    return {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}.get(v, "U")


def subject_id_of(value: Any) -> str:
    """The NWB ``subject_id`` of a LIMS donor id or specimen name ("/" is not allowed in NWB names)."""
    return str(value if value is not None else "").strip().replace("/", "_")


def age_in_days(date_of_birth: Optional[dt.datetime], session_start: dt.datetime) -> Optional[int]:
    """Whole days from the date of birth to the session start (naive times are UTC); None when unknown."""
    if date_of_birth is None:
        return None
    return (aware_datetime(session_start) - aware_datetime(date_of_birth)).days


def age_iso8601(date_of_birth: Optional[dt.datetime], session_start: dt.datetime) -> Optional[str]:
    """``P<days>D`` from the date of birth to the session start (None when unknown or negative)."""
    days = age_in_days(date_of_birth, session_start)
    return f"P{days}D" if days is not None and days >= 0 else None


def nwb_subject(
    *,
    subject_id: str,
    sex: Optional[str],
    species: str,
    description: str,
    age_days: Optional[float] = None,
    date_of_birth: Optional[dt.datetime] = None,
    genotype: Optional[str] = None,
    strain: Optional[str] = None,
):
    """The one builder of the NWB ``Subject``: age as ``P<days>D`` when ``age_days`` is known (else the date of
    birth), sex as M/F/O/U; empty fields are left out."""
    from pynwb.file import Subject as NwbSubject

    kwargs: dict[str, Any] = dict(subject_id=subject_id, description=description, genotype=genotype or None,
                                  sex=nwb_sex(sex), species=species, strain=strain or None)
    if age_days is not None and np.isfinite(age_days):
        kwargs["age"] = f"P{int(round(age_days))}D"
    elif date_of_birth is not None:
        kwargs["date_of_birth"] = aware_datetime(date_of_birth)
    return NwbSubject(**{k: v for k, v in kwargs.items() if v is not None})


def make_subject(subject: Subject, session_start: dt.datetime, *, entity: str):
    """The NWB ``Subject`` of a LIMS donor at a session (behavior and ophys files): the age is required; the
    driver and reporter lines go in ``description``."""
    sid = subject_id_of(subject.subject_id)
    if not sid:
        raise InputError("subject has no subject_id", entity=entity)
    days = age_in_days(subject.date_of_birth, session_start)
    if days is None or days < 0:
        raise InputError(f"cannot give the subject's age: date_of_birth {subject.date_of_birth} is missing or after the session",
                         entity=entity)
    lines = []
    if subject.driver_line:
        lines.append("driver line: " + ", ".join(subject.driver_line))
    if subject.reporter_line:
        lines.append("reporter line: " + ", ".join(subject.reporter_line))
    return nwb_subject(subject_id=sid, sex=subject.sex, species=subject.species or "Mus musculus", age_days=days,
                       genotype=subject.full_genotype, description="; ".join(lines) or f"donor {str(subject.subject_id).strip()}")


def provenance_digest(record: Mapping[str, Any]) -> str:
    """A short digest of a provenance record (part of the deterministic file identifier)."""
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
    subject: Any,
    provenance: dict,
    writer: str,
    stimulus_notes: Optional[str],
    notes: Optional[Mapping[str, Any]] = None,
    identifier: Optional[str] = None,
):
    """A new ``NWBFile`` with the platform's file-level fields; ``subject`` is built by :func:`nwb_subject`.
    ``identifier`` replaces the deterministic identifier (the ``allensdk`` mode uses the session id)."""
    from pynwb import NWBFile

    start = aware_datetime(session_start_time)
    kwargs: dict[str, Any] = {}
    if notes is not None:
        kwargs["notes"] = json.dumps({k: notes[k] for k in sorted(notes)}, sort_keys=True)
    return NWBFile(
        session_description=description,
        identifier=identifier or deterministic_identifier(kind, *ids, provenance_digest(provenance)),
        session_start_time=start,
        file_create_date=start,
        session_id=str(session_id),
        institution=INSTITUTION,
        experiment_description=experiment_description,
        keywords=list(keywords),
        stimulus_notes=stimulus_notes or None,
        source_script=provenance_json(provenance),
        source_script_file_name=writer,
        was_generated_by=[["release_platform", release_platform.__version__]],
        subject=subject,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------------
# Tables and series
# ---------------------------------------------------------------------------------------------------------


def safe_name(name: str) -> str:
    """``name`` usable as an NWB object name ("/", ":" and "\\" become "_")."""
    return re.sub(r"[/:\\]", "_", str(name))


def _column_data(series: pd.Series, *, missing_text: str, bools_as_float: bool):
    if series.dtype == bool:
        return series.to_numpy(dtype=np.float64 if bools_as_float else bool)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64)
    return [missing_text if _is_missing(v) else str(v) for v in series]


def interval_table(name: str, description: str, frame: pd.DataFrame, descriptions: Mapping[str, str] | None = None,
                   *, drop_empty: bool = True, missing_text: str = "", bools_as_float: bool = False):
    """A ``TimeIntervals`` from a canonical frame (ids = the frame's index; start/stop first).

    Columns that are all missing are left out when ``drop_empty``; a missing string is stored as
    ``missing_text``; boolean columns are stored as float when ``bools_as_float`` (the ecephys convention).
    """
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
        data = (s.to_numpy(np.float64) if col in ("start_time", "stop_time")
                else _column_data(s, missing_text=missing_text, bools_as_float=bools_as_float))
        cols.append(VectorData(name=str(col), description=descriptions.get(col) or f"{col} of each interval", data=data))
    return TimeIntervals(name=name, description=description, id=frame.index.to_numpy(dtype=np.int64), columns=cols)


def timing(timestamps: np.ndarray) -> dict[str, Any]:
    """``starting_time`` + ``rate`` when the timestamps are regular, else the timestamps."""
    regular = regular_rate(timestamps)
    return dict(starting_time=float(regular[0]), rate=float(regular[1])) if regular else dict(timestamps=timestamps)


RUNNING_SPEED_DESCRIPTION = "Running speed of the mouse on the wheel (linear speed at the wheel's rim)"


def add_running_speed(nwbfile, running: pd.DataFrame, *, description: str = RUNNING_SPEED_DESCRIPTION) -> None:
    """``processing/running/running_speed`` (cm/s) from ``timestamps`` and ``speed`` columns."""
    from pynwb import TimeSeries

    module = nwbfile.create_processing_module("running", "Running speed of the mouse on the wheel")
    module.add(
        TimeSeries(
            name="running_speed",
            description=description,
            data=running["speed"].to_numpy(np.float64),
            unit="cm/s",
            **timing(running["timestamps"].to_numpy(np.float64)),
        )
    )


# ---------------------------------------------------------------------------------------------------------
# The write path
# ---------------------------------------------------------------------------------------------------------


def write_nwb_from_inputs(inputs, build: Callable[..., Any], *, config: BackendConfiguration | None = None,
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
