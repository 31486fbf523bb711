"""Blocking NWB checks shared by every NWB asset: PyNWB validation, NWB Inspector (dandi config) and the
units content check. A failed check's description names each failing file and its first problem."""

from typing import Iterable

import dagster as dg

from release_platform.nwb.inspection import inspect_nwb, units_content_problems, validate_nwb

BLOCKING_IMPORTANCE = ("CRITICAL", "BEST_PRACTICE_VIOLATION")


def _describe(what: str, bad: dict[str, list[str]]):
    """``None`` when nothing failed, else one line per failing file: its path, problem count and first problem."""
    if not bad:
        return None
    return "\n".join(f"{what} failed for {path}: {len(msgs)} problem(s); first: {msgs[0]}" for path, msgs in bad.items())


def pynwb_validation_result(paths: Iterable[str]) -> dg.AssetCheckResult:
    """Passes when PyNWB validation reports no problem in any of ``paths``."""
    problems = {str(p): validate_nwb(p) for p in paths}
    bad = {p: msgs for p, msgs in problems.items() if msgs}
    return dg.AssetCheckResult(
        passed=not bad,
        description=_describe("PyNWB validation", bad),
        metadata={"files_checked": len(problems), "problems": dg.MetadataValue.json(bad)},
    )


def inspector_result(paths: Iterable[str]) -> dg.AssetCheckResult:
    """Passes when NWB Inspector (dandi config) reports zero CRITICAL and zero BEST_PRACTICE_VIOLATION.

    Suggestions do not fail the check; their count is reported (goal: zero).
    """
    counts: dict[str, dict[str, int]] = {}
    blocking: dict[str, list[dict]] = {}
    suggestions = 0
    for path in paths:
        report = inspect_nwb(path, config="dandi")
        counts[str(path)] = report.counts
        suggestions += report.counts.get("BEST_PRACTICE_SUGGESTION", 0)
        found = report.at(*BLOCKING_IMPORTANCE)
        if found:
            blocking[str(path)] = [{k: m[k] for k in ("importance", "check_function_name", "message", "location")} for m in found]
    return dg.AssetCheckResult(
        passed=not blocking,
        description=_describe("NWB Inspector", {p: [f"{m['importance']} {m['check_function_name']}: {m['message']}"
                                                    for m in msgs] for p, msgs in blocking.items()}),
        metadata={
            "counts": dg.MetadataValue.json(counts),
            "blocking_messages": dg.MetadataValue.json(blocking),
            "best_practice_suggestions": suggestions,
        },
    )


def units_content_result(paths: Iterable[str]) -> dg.AssetCheckResult:
    """Passes when no file's units table has NaN/infinite spike times or amplitudes, or a unit without spikes."""
    problems = {str(p): units_content_problems(p) for p in paths}
    bad = {p: msgs for p, msgs in problems.items() if msgs}
    return dg.AssetCheckResult(
        passed=not bad,
        description=_describe("units content check", bad),
        metadata={"files_checked": len(problems), "problems": dg.MetadataValue.json(bad)},
    )
