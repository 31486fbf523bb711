"""NWB quality gates as plain functions: PyNWB (schema) validation and NWB Inspector with a config.

Both return plain data (dicts, lists of strings) so the Dagster asset checks, the standalone modules and
the tests can use them alike. Importance levels are NWB Inspector's: ``ERROR``, ``PYNWB_VALIDATION``,
``CRITICAL``, ``BEST_PRACTICE_VIOLATION``, ``BEST_PRACTICE_SUGGESTION``. With the DANDI config,
``ERROR``/``PYNWB_VALIDATION``/``CRITICAL`` block publication, ``BEST_PRACTICE_VIOLATION`` warns.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Optional

__all__ = ["IMPORTANCE_LEVELS", "BLOCKING_LEVELS", "InspectionReport", "inspect_nwb", "validate_nwb", "validate_open_nwb"]

IMPORTANCE_LEVELS = ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION", "BEST_PRACTICE_SUGGESTION")
#: Levels that DANDI treats as errors (block upload).
BLOCKING_LEVELS = ("ERROR", "PYNWB_VALIDATION", "CRITICAL")


@dataclasses.dataclass(frozen=True)
class InspectionReport:
    """NWB Inspector result: ``counts`` per importance level (every level present, 0 if none) and messages."""

    path: str
    config: Optional[str]
    counts: dict[str, int]
    messages: list[dict[str, Any]]

    @property
    def n_blocking(self) -> int:
        return sum(self.counts[level] for level in BLOCKING_LEVELS)

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
    counts = {level: 0 for level in IMPORTANCE_LEVELS}
    for m in messages:
        counts[m["importance"]] = counts.get(m["importance"], 0) + 1
    messages.sort(key=lambda m: (IMPORTANCE_LEVELS.index(m["importance"]) if m["importance"] in IMPORTANCE_LEVELS else 99,
                                 m["check_function_name"], str(m["location"])))
    return InspectionReport(path=os.fspath(path), config=config, counts=counts, messages=messages)


def validate_nwb(path: str | os.PathLike) -> list[str]:
    """PyNWB schema validation of one file against its cached namespaces; the problems as strings ([] = valid)."""
    import pynwb

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such NWB file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pynwb.validate(path=os.fspath(path))
    return _problems(result)


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
