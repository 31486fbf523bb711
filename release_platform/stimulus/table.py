"""The session's stimulus table: validation, blocks per stimulus and their geometry.

Columns (as ``data_fixtures/stimulus.py`` writes them): ``stimulus_name``, ``start_frame``,
``end_frame`` (imaging frames, end exclusive), ``orientation``, ``temporal_frequency``,
``spatial_frequency``, ``phase``, ``frame``; extra columns are ignored. A condition column a stimulus
does not use may be absent or NaN. Geometry (the directions, frequencies, phases, images, movie
repeats, noise frames) is read from the rows, never assumed.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from release_platform.errors import InputError

__all__ = [
    "REQUIRED_COLUMNS",
    "CONDITION_COLUMNS",
    "DRIFTING_GRATINGS",
    "STATIC_GRATINGS",
    "NATURAL_SCENES",
    "NATURAL_MOVIES",
    "LSN_STIMULI",
    "SPONTANEOUS",
    "KNOWN_STIMULI",
    "read_stimulus_table",
    "validate_stimulus_table",
    "stimulus_block",
    "select_stimuli",
]

REQUIRED_COLUMNS = ("stimulus_name", "start_frame", "end_frame")
CONDITION_COLUMNS = ("orientation", "temporal_frequency", "spatial_frequency", "phase", "frame")
DRIFTING_GRATINGS = "drifting_gratings"
STATIC_GRATINGS = "static_gratings"
NATURAL_SCENES = "natural_scenes"
NATURAL_MOVIES = {"natural_movie_one": "nm1", "natural_movie_two": "nm2", "natural_movie_three": "nm3"}
LSN_STIMULI = ("locally_sparse_noise", "locally_sparse_noise_4deg", "locally_sparse_noise_8deg")
SPONTANEOUS = "spontaneous"
KNOWN_STIMULI = (DRIFTING_GRATINGS, STATIC_GRATINGS, NATURAL_SCENES, *NATURAL_MOVIES, *LSN_STIMULI)


def read_stimulus_table(path: str | os.PathLike, *, entity: str | None = None) -> pd.DataFrame:
    """Read and validate a stimulus-table CSV (see :func:`validate_stimulus_table`)."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError("stimulus table not found", entity=entity, path=path) from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"stimulus table is unreadable: {exc}", entity=entity, path=path) from None
    return validate_stimulus_table(table, entity=entity, path=path)


def validate_stimulus_table(
    table: pd.DataFrame, *, n_frames: int | None = None, entity: str | None = None, path: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Check columns and frame bounds; return a copy with integer frames and float condition columns.

    Raises one :class:`InputError` listing missing columns, or the rows whose frames are missing,
    non-integer, reversed or (with ``n_frames``) beyond the recording.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"stimulus table lacks column(s) {missing}", entity=entity, path=path)
    t = table.copy()
    for c in CONDITION_COLUMNS:
        t[c] = pd.to_numeric(t[c], errors="coerce").astype(float) if c in t.columns else np.nan
    t["stimulus_name"] = t["stimulus_name"].astype(str)
    problems = []
    frames = {}
    for c in ("start_frame", "end_frame"):
        v = pd.to_numeric(t[c], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v != np.round(v))
        if bad.any():
            problems.append(f"{c} missing or not an integer in rows {np.flatnonzero(bad)[:10].tolist()}")
        frames[c] = np.where(np.isfinite(v), v, 0).astype(np.int64)
    if not problems:
        rev = np.flatnonzero((frames["end_frame"] < frames["start_frame"]) | (frames["start_frame"] < 0))
        if len(rev):
            problems.append(f"start_frame negative or after end_frame in rows {rev[:10].tolist()}")
        if n_frames is not None:
            beyond = np.flatnonzero(frames["end_frame"] > n_frames)
            if len(beyond):
                problems.append(f"end_frame beyond the {n_frames} recorded frames in rows {beyond[:10].tolist()}")
    if problems:
        raise InputError("stimulus table: " + "; ".join(problems), entity=entity, path=path)
    t["start_frame"], t["end_frame"] = frames["start_frame"], frames["end_frame"]
    return t


def stimulus_block(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of one stimulus, in onset order, with the original row number in ``table_row``."""
    rows = table[table["stimulus_name"] == name]
    return rows.assign(table_row=rows.index.to_numpy()).sort_values("start_frame", kind="stable").reset_index(drop=True)


def select_stimuli(table: pd.DataFrame, requested: list[str] | None, *, entity: str | None = None,
                   path: str | os.PathLike | None = None) -> list[str]:
    """The analysable stimuli present, or the requested subset; a requested stimulus that is absent or
    unknown is an error naming what the table holds."""
    present = [s for s in KNOWN_STIMULI if (table["stimulus_name"] == s).any()]
    if requested is None:
        return present
    unknown = [s for s in requested if s not in KNOWN_STIMULI]
    absent = [s for s in requested if s in KNOWN_STIMULI and s not in present]
    problems = []
    if unknown:
        problems.append(f"unknown stimulus name(s) {unknown} (known: {list(KNOWN_STIMULI)})")
    if absent:
        problems.append(f"stimulus {absent} requested but not in the stimulus table (present: {present})")
    if problems:
        raise InputError("; ".join(problems), entity=entity, path=path)
    return [s for s in KNOWN_STIMULI if s in requested]
