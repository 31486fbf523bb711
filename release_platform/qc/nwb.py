"""Checks of written NWB files: PyNWB schema validation, NWB Inspector (DANDI config) and the units content.

Each takes file paths and returns one :class:`~release_platform.qc.registry.CheckResult` over all of them;
the description of a failure names each failing file and its first problem.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping

from release_platform.nwb.inspection import InspectionReport, inspect_nwb_gate, units_content_problems, validate_nwb
from release_platform.qc.registry import CheckResult, Importance, describe_failures, is_blocking, register

__all__ = ["check_pynwb_validation", "check_nwb_inspector", "inspector_result", "check_units_content"]

PYNWB_VALIDATION = "nwb.pynwb_validation"
NWB_INSPECTOR = "nwb.inspector"
UNITS_CONTENT = "nwb.units_content"


def _per_file(check_id: str, importance: Importance, what: str, problems_of: Callable[[str], list[str]],
              paths: Iterable[str | os.PathLike]) -> CheckResult:
    """Passes when ``problems_of`` finds no problem in any file; the problems per failing file in metadata."""
    problems = {str(p): problems_of(p) for p in paths}
    bad = {p: msgs for p, msgs in problems.items() if msgs}
    return CheckResult(check_id, importance, not bad, describe_failures(what, bad), {"files_checked": len(problems), "problems": bad})


@register(PYNWB_VALIDATION, Importance.PYNWB_VALIDATION, "PyNWB validation reports no problem.")
def check_pynwb_validation(paths: Iterable[str | os.PathLike]) -> CheckResult:
    """Passes when PyNWB validation reports no problem in any of ``paths``."""
    return _per_file(PYNWB_VALIDATION, Importance.PYNWB_VALIDATION, "PyNWB validation", validate_nwb, paths)


def inspector_result(reports: Mapping[str, InspectionReport]) -> CheckResult:
    """The NWB Inspector check over reports already made: passes when no message has a blocking importance
    (:data:`~release_platform.qc.registry.BLOCKING`). Suggestions never fail; their count is reported when every
    report inspected them (None otherwise)."""
    counts: dict[str, dict[str, int]] = {}
    blocking: dict[str, list[dict]] = {}
    suggestions: int | None = 0
    for path, report in reports.items():
        counts[str(path)] = report.counts
        if report.importance_threshold != "BEST_PRACTICE_SUGGESTION":
            suggestions = None
        elif suggestions is not None:
            suggestions += report.counts.get("BEST_PRACTICE_SUGGESTION", 0)
        found = [m for m in report.messages if is_blocking(m["importance"])]
        if found:
            blocking[str(path)] = [{k: m[k] for k in ("importance", "check_function_name", "message", "location")} for m in found]
    message = describe_failures("NWB Inspector", {p: [f"{m['importance']} {m['check_function_name']}: {m['message']}" for m in msgs]
                                                  for p, msgs in blocking.items()})
    return CheckResult(NWB_INSPECTOR, Importance.CRITICAL, not blocking, message,
                       {"counts": counts, "blocking_messages": blocking, "best_practice_suggestions": suggestions})


@register(NWB_INSPECTOR, Importance.CRITICAL,
          "NWB Inspector (dandi config): no message of a blocking importance (ERROR, PYNWB_VALIDATION, CRITICAL, "
          "BEST_PRACTICE_VIOLATION).")
def check_nwb_inspector(paths: Iterable[str | os.PathLike]) -> CheckResult:
    """Run NWB Inspector (dandi config) once on every path, on the smallest configuration that keeps its blocking
    checks (:func:`~release_platform.nwb.inspection.inspect_nwb_gate`); see :func:`inspector_result`."""
    return inspector_result({str(p): inspect_nwb_gate(p, config="dandi") for p in paths})


@register(UNITS_CONTENT, Importance.CRITICAL, "Units: spike times and amplitudes finite, every unit has at least one spike.")
def check_units_content(paths: Iterable[str | os.PathLike]) -> CheckResult:
    """Passes when no file's units table has NaN/infinite spike times or amplitudes, or a unit without spikes."""
    return _per_file(UNITS_CONTENT, Importance.CRITICAL, "units content check", units_content_problems, paths)
