"""NWB quality gates as plain functions: PyNWB (schema) validation and NWB Inspector with a config.

Both return plain data (dicts, lists of strings) so the Dagster asset checks, the standalone modules and
the tests can use them alike. Importance levels are NWB Inspector's: ``ERROR``, ``PYNWB_VALIDATION``,
``CRITICAL``, ``BEST_PRACTICE_VIOLATION``, ``BEST_PRACTICE_SUGGESTION``. Which of them block publication
is defined once, in :data:`release_platform.qc.BLOCKING`; the checks built on these functions are in
:mod:`release_platform.qc.nwb`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from release_platform.qc.registry import Importance

__all__ = ["IMPORTANCE_LEVELS", "InspectionReport", "inspect_nwb", "inspect_nwb_gate", "gate_threshold", "validate_nwb",
           "validate_open_nwb", "units_content_problems"]

#: NWB Inspector's importance levels, most severe first (the names of :class:`release_platform.qc.Importance`).
IMPORTANCE_LEVELS = tuple(level.name for level in Importance)
#: The Inspector's own threshold levels (it runs every check at or above the one given).
_INSPECTOR_THRESHOLDS = ("CRITICAL", "BEST_PRACTICE_VIOLATION", "BEST_PRACTICE_SUGGESTION")


@dataclasses.dataclass(frozen=True)
class InspectionReport:
    """NWB Inspector result: ``counts`` per importance level (every level present, 0 if none) and messages."""

    path: str
    config: Optional[str]
    counts: dict[str, int]
    messages: list[dict[str, Any]]
    #: The least severe importance whose checks ran (checks below it were not run, so their count is not known).
    importance_threshold: str = "BEST_PRACTICE_SUGGESTION"

    def at(self, *levels: str) -> list[dict[str, Any]]:
        """The messages of the given importance levels."""
        return [m for m in self.messages if m["importance"] in levels]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "config": self.config, "counts": dict(self.counts), "messages": list(self.messages)}


def _message_dict(msg) -> dict[str, Any]:
    importance = getattr(msg.importance, "name", str(msg.importance))
    severity = getattr(msg.severity, "name", str(msg.severity))
    return {
        "importance": importance,
        "severity": severity,
        "check_function_name": msg.check_function_name,
        "object_type": msg.object_type,
        "object_name": msg.object_name,
        "location": msg.location,
        "message": msg.message,
        "file_path": None if msg.file_path is None else os.fspath(msg.file_path),
    }


def inspect_nwb(
    path: str | os.PathLike,
    *,
    config: Optional[str] = "dandi",
    importance_threshold: str = "BEST_PRACTICE_SUGGESTION",
    skip_validate: bool = False,
) -> InspectionReport:
    """Run NWB Inspector on one file (``config="dandi"`` by default; ``None`` = the inspector defaults)."""
    from nwbinspector import Importance, inspect_nwbfile, load_config

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such NWB file")
    cfg = load_config(config) if config else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = [
            _message_dict(m)
            for m in inspect_nwbfile(
                nwbfile_path=path,
                config=cfg,
                importance_threshold=Importance[importance_threshold],
                skip_validate=skip_validate,
            )
            if m is not None
        ]
    from release_platform.nwb.allen_compat import note_required_timestamps

    messages = note_required_timestamps(path, messages)
    counts = {level: 0 for level in IMPORTANCE_LEVELS}
    for m in messages:
        counts[m["importance"]] = counts.get(m["importance"], 0) + 1
    messages.sort(key=lambda m: (IMPORTANCE_LEVELS.index(m["importance"]) if m["importance"] in IMPORTANCE_LEVELS else 99,
                                 m["check_function_name"], str(m["location"])))
    return InspectionReport(path=os.fspath(path), config=config, counts=counts, messages=messages,
                            importance_threshold=importance_threshold)


def gate_threshold() -> str:
    """The least severe Inspector threshold that still runs every check of a blocking importance
    (:data:`release_platform.qc.BLOCKING`): checks below it can never block publication."""
    from release_platform.qc.registry import is_blocking

    blocking = [level for level in _INSPECTOR_THRESHOLDS if is_blocking(level)]
    return blocking[-1] if blocking else _INSPECTOR_THRESHOLDS[0]


def warm_inspector(config: Optional[str] = "dandi") -> None:
    """Load ``config`` and select NWB Inspector's checks for :func:`inspect_nwb_gate` once (the first selection of
    a process validates the configuration against the Inspector's schema), so that a process forked from this
    one, e.g. a step process forked from the fork server, finds that work done. Reads the packaged
    configuration only; opens no NWB file."""
    from nwbinspector import Importance, available_checks, configure_checks, load_config

    configure_checks(checks=available_checks, config=load_config(config) if config else None,
                     importance_threshold=Importance[gate_threshold()])


def inspect_nwb_gate(path: str | os.PathLike, *, config: Optional[str] = "dandi") -> InspectionReport:
    """NWB Inspector as a publication gate: one pass over the file on the smallest configuration that keeps every
    blocking check, i.e. the checks at or above :func:`gate_threshold` and without the Inspector's own PyNWB
    validation (a file's schema validation is its own blocking check, :func:`validate_nwb`, on the same file).
    Suggestions are not inspected; :func:`inspect_nwb` gives the full report."""
    return inspect_nwb(path, config=config, importance_threshold=gate_threshold(), skip_validate=True)


def validate_nwb(path: str | os.PathLike) -> list[str]:
    """PyNWB schema validation of one file against its cached namespaces; the problems as strings ([] = valid).

    A file whose cached namespaces are all this process's own (every file the platform writes) is read through
    PyNWB's global type map and validated with the validators the write protocol builds once per process, against
    the namespaces :func:`pynwb.validate` would choose; any other file is validated by :func:`pynwb.validate`.
    """
    import pynwb

    from release_platform.nwb.protocol import _process_namespaces, _validator

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such NWB file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        namespaces = _process_namespaces(path)
        if namespaces is None:
            return _problems(pynwb.validate(path=os.fspath(path)))
        with pynwb.NWBHDF5IO(os.fspath(path), "r", manager=pynwb.get_manager(), load_namespaces=False) as io:
            builder = io.read_builder()
            return [str(e) for name in namespaces for e in _validator(name).validate(builder)]


def validate_open_nwb(io) -> list[str]:
    """PyNWB schema validation of a file already open in an ``NWBHDF5IO`` (read mode); the problems as strings."""
    import pynwb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _problems(pynwb.validate(io=io))


def _problems(result) -> list[str]:
    # pynwb < 3 returned (errors, status); newer versions return the list of errors.
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int):
        result = result[0]
    return [str(e) for e in (result or [])]


#: Ragged unit columns are read in blocks of this many values, so memory does not grow with the spike count.
CONTENT_CHECK_BLOCK = 1 << 22


def _count_blocks(ds, predicate) -> tuple[int, int]:
    """(how many values of ``ds`` satisfy ``predicate``, index of the first or -1), reading in blocks."""
    count, first = 0, -1
    for start in range(0, ds.shape[0], CONTENT_CHECK_BLOCK):
        hits = predicate(np.asarray(ds[start:start + CONTENT_CHECK_BLOCK]))
        n = int(np.count_nonzero(hits))
        if n and first < 0:
            first = start + int(np.flatnonzero(hits.reshape(hits.shape[0], -1).any(axis=1))[0])
        count += n
    return count, first


def units_content_problems(path: str | os.PathLike) -> list[str]:
    """Content check of an NWB file's units table; the problems as strings ([] = good, or no units table).

    Blocking problems: NaN or infinite spike times, NaN or infinite spike amplitudes, a unit with no spike,
    and ragged indices that do not match their data. Read with h5py in blocks (no PyNWB object tree).
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such NWB file")
    problems: list[str] = []
    with h5py.File(path, "r") as fh:
        units = fh.get("units")
        if not isinstance(units, h5py.Group):
            return problems
        ids = np.asarray(units["id"][()]) if "id" in units else np.zeros(0, dtype=np.int64)
        if "spike_times" not in units or "spike_times_index" not in units:
            if len(ids):
                problems.append(f"units: {len(ids)} units but no spike_times column")
            return problems
        times, index = units["spike_times"], np.asarray(units["spike_times_index"][()], dtype=np.int64)
        if index.shape[0] != ids.shape[0] or (index.size and (np.any(np.diff(index) < 0) or index[-1] != times.shape[0]
                                                               or index[0] < 0)):
            problems.append(f"units: spike_times_index ({index.shape[0]} rows, last {index[-1] if index.size else None}) "
                            f"does not index the {times.shape[0]} spike times of {ids.shape[0]} units")
            return problems
        n_spikes = np.diff(np.concatenate([[0], index]))
        empty = ids[n_spikes == 0]
        if empty.size:
            problems.append(f"units: {empty.size} units have no spike: ids {empty[:10].tolist()}"
                            + (" ..." if empty.size > 10 else ""))
        for column in ("spike_times", "spike_amplitudes"):
            if column not in units:
                continue
            ds = units[column]
            if not np.issubdtype(ds.dtype, np.number):
                problems.append(f"units: {column} has non-numeric dtype {ds.dtype}")
                continue
            n_bad, first = _count_blocks(ds, lambda a: ~np.isfinite(a))
            if n_bad:
                unit = ids[int(np.searchsorted(index, first, side="right"))]
                problems.append(f"units: {n_bad} NaN or infinite values in {column} (first in unit {int(unit)})")
            if column != "spike_times" and f"{column}_index" in units:
                own = np.asarray(units[f"{column}_index"][()], dtype=np.int64)
                if own.shape != index.shape or not np.array_equal(own, index):
                    problems.append(f"units: {column}_index differs from spike_times_index (one value per spike expected)")
    return problems
