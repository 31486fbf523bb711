"""Validate release tables with their pandera models and summarize failures for people and for Dagster.

:func:`validate_table` runs one table's model lazily (every problem is collected, not just the first),
optionally with its cross-table references (:data:`~release_platform.metadata.schemas.REFERENCES` via the
parent frames) and the on-disk file check, and returns a :class:`ValidationReport` whose ``failures`` list
groups pandera's ``failure_cases`` by (column, check) with the offending row ids and values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import pandas as pd
import pandera.pandas as pa

from release_platform.errors import InputError
from release_platform.metadata.files import check_file_id_collisions
from release_platform.metadata.schemas import TABLES, Reference, file_exists_check

MAX_LISTED = 20


def _reference_check(ref: Reference, parent: pd.DataFrame) -> pa.Check:
    if len(ref.columns) == 1:
        allowed = pd.Index(parent[ref.parent_columns[0]].dropna().astype("int64").unique())
        col = ref.columns[0]

        def single(df: pd.DataFrame) -> pd.Series:
            s = df[col]
            return (s.isna() | s.isin(allowed)).astype(bool)

        fn = single
    else:
        keys = pd.MultiIndex.from_frame(parent[list(ref.parent_columns)].dropna().astype("int64")).unique()
        cols = list(ref.columns)

        def composite(df: pd.DataFrame) -> pd.Series:
            sub = df[cols]
            has_null = sub.isna().any(axis=1)
            ok = pd.Series(True, index=df.index)
            full = ~has_null
            if full.any():
                probe = pd.MultiIndex.from_frame(sub.loc[full].astype("int64"))
                ok.loc[full] = probe.isin(keys)
            return ok.astype(bool)

        fn = composite
    return pa.Check(fn, name=ref.name)


def table_schema(
    table: str,
    *,
    parents: Optional[Mapping[str, pd.DataFrame]] = None,
    check_files: bool = False,
) -> pa.DataFrameSchema:
    """The table's pandera schema, plus reference checks for each parent given and the file-exists check."""
    spec = TABLES[table]
    schema = copy.deepcopy(spec.model.to_schema())
    extra = []
    for ref in spec.references:
        if parents is not None and ref.parent in parents:
            extra.append(_reference_check(ref, parents[ref.parent]))
    if check_files and spec.file_kind:
        extra.append(file_exists_check(spec.file_kind))
    if extra:
        schema.checks = list(schema.checks) + extra
    return schema


@dataclass
class ValidationReport:
    table: str
    rows: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    missing_parents: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures and not self.missing_parents

    def summary(self) -> str:
        if self.passed:
            return f"{self.table}: {self.rows} rows valid"
        parts = [f"{f['column']} fails {f['check']} in {f['n_rows']} row(s) (ids {f['row_ids'][:5]})" for f in self.failures]
        parts += [f"parent table {p} is not available" for p in self.missing_parents]
        return f"{self.table}: " + "; ".join(parts)

    def metadata(self) -> dict[str, Any]:
        """JSON-friendly description for asset-check metadata."""
        return {
            "table": self.table,
            "rows": self.rows,
            "passed": self.passed,
            "failures": self.failures,
            "missing_parents": self.missing_parents,
        }

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise InputError(f"invalid release table {self.summary()}")


def _scalar(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


def _check_columns(check: str) -> list[str]:
    """The columns a table-level check is about (reported as its failure values)."""
    if check.startswith("references_") and ":" in check:
        return check.split(":", 1)[1].split(",")
    if check.startswith("file_"):
        return ["file_id", "file_path"]
    return []


def summarize_failures(frame: pd.DataFrame, failure_cases: pd.DataFrame, id_column: str) -> list[dict[str, Any]]:
    """Group pandera failure cases by (column, check): how many rows, which row ids, which values."""
    out = []
    fc = failure_cases.copy()
    # A table-level check reports each failing row once per column: collapse those to one entry per row.
    table_level = fc["schema_context"].astype(str).eq("DataFrameSchema") & fc["index"].notna()
    fc.loc[table_level | fc["column"].isna(), "column"] = "<table>"
    fc["check"] = fc["check"].astype(str)
    fc = fc.drop_duplicates(subset=["column", "check", "index"]) if table_level.any() else fc
    for (column, check), group in fc.groupby(["column", "check"], sort=False, dropna=False):
        idx = [i for i in group["index"].tolist() if i is not None and not (isinstance(i, float) and pd.isna(i))]
        ids: list[Any] = []
        present = [i for i in idx if i in frame.index]
        if id_column in frame.columns and present:
            ids = [_scalar(v) for v in frame.loc[present, id_column].tolist()]
        if column == "<table>" and present:
            cols = [c for c in _check_columns(check) if c in frame.columns]
            values = [{c: _scalar(frame.at[i, c]) for c in cols} for i in present]
        else:
            values = [_scalar(v) for v in group["failure_case"].tolist()]
        out.append(
            {
                "column": str(column),
                "check": str(check),
                "n_rows": int(len(idx) or len(group)),
                "row_ids": ids[:MAX_LISTED],
                "failure_values": values[:MAX_LISTED],
            }
        )
    return out


def validate_table(
    table: str,
    frame: pd.DataFrame,
    *,
    parents: Optional[Mapping[str, Optional[pd.DataFrame]]] = None,
    check_files: bool = False,
    require_parents: bool = False,
) -> ValidationReport:
    """Validate one table lazily; never raises for bad data (see :meth:`ValidationReport.raise_if_failed`).

    ``parents`` maps parent table names to frames (None = not available). With ``require_parents`` a
    reference whose parent is unavailable fails the report instead of being skipped.
    """
    spec = TABLES[table]
    available = {k: v for k, v in (parents or {}).items() if v is not None}
    missing = sorted({r.parent for r in spec.references if r.parent not in available}) if require_parents else []
    schema = table_schema(table, parents=available, check_files=check_files)
    report = ValidationReport(table, len(frame), missing_parents=missing)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        report.failures = summarize_failures(frame, exc.failure_cases, spec.id_column)
    except pa.errors.SchemaError as exc:  # pragma: no cover - lazy mode collects; kept for safety
        report.failures = [{"column": str(getattr(exc, "column_name", "<table>")), "check": str(exc.check), "n_rows": 0,
                            "row_ids": [], "failure_values": [str(exc)]}]
    return report


def validate_tables(
    tables: Mapping[str, pd.DataFrame],
    *,
    check_files: bool = False,
    require_parents: bool = False,
) -> dict[str, ValidationReport]:
    """Validate a set of tables with the references among them, plus file-id collisions across them."""
    reports = {
        name: validate_table(name, frame, parents=tables, check_files=check_files, require_parents=require_parents)
        for name, frame in tables.items()
    }
    try:
        check_file_id_collisions(tables)
    except InputError as exc:
        first = next(iter(reports.values()), None)
        if first is not None:
            first.failures.append({"column": "file_id", "check": "no_collisions_across_tables", "n_rows": 0,
                                   "row_ids": [], "failure_values": [str(exc)]})
    return reports


def warm_validation(table: str = "behavior_session_table") -> None:
    """Validate a zero-row frame of ``table``: pandera registers its pandas backends and checks on the first
    validation of a process (0.1-0.3 s), so a process that calls this once, e.g. a fork server before it forks step
    processes, passes them on. Reads no file (the frame has no row) and writes nothing."""
    from release_platform.metadata.schemas import empty_table

    validate_table(table, empty_table(table), check_files=True)
