"""Generate the data dictionary (``docs/data_dictionary.md``) from the pandera models.

    python -m release_platform.metadata.dictionary [--check] [path]

writes the file (default ``docs/data_dictionary.md`` under the current directory); ``--check`` only compares
and exits 1 when the committed file is out of date.
"""

from __future__ import annotations

import argparse
import inspect
import re
import os
import sys
from pathlib import Path

from release_platform.metadata import files as _files
from release_platform.metadata.schemas import TABLES

DEFAULT_PATH = Path("docs") / "data_dictionary.md"

_HEADER = """# Release metadata data dictionary

Generated from the pandera models in `release_platform/metadata/schemas.py` by
`python -m release_platform.metadata.dictionary`; do not edit by hand (a test fails when it is stale).

Every table is written as Parquet (typed) and CSV (AllenSDK-compatible: lists as `[1, 2]`, null as an empty
cell, UTC datetimes as `2026-09-01 09:30:00+00:00`). Columns appear in the order listed. dtypes: `Int64` is
pandas' nullable integer, `string` pandas' string dtype, `list` a Python list in an `object` column.

## File ids

{file_ids}
"""


def _dtype(col, table: str) -> str:
    dtype = str(col.dtype)
    if col.name in TABLES[table].list_columns:
        return "list"
    if dtype.startswith("string"):
        return "string"
    return dtype


def _checks(col) -> str:
    parts = []
    if col.unique:
        parts.append("unique")
    for check in col.checks:
        stats = getattr(check, "statistics", {}) or {}
        name = check.name
        if name == "isin":
            parts.append("one of " + ", ".join(f"`{v}`" for v in stats.get("allowed_values", [])))
        elif name == "str_matches":
            parts.append(f"matches `{stats.get('pattern')}`")
        elif name in ("greater_than", "greater_than_or_equal_to", "less_than_or_equal_to", "less_than"):
            sym = {"greater_than": ">", "greater_than_or_equal_to": "≥", "less_than": "<", "less_than_or_equal_to": "≤"}[name]
            value = next(iter(stats.values()), "")
            parts.append(f"{sym} {value}")
        elif name:
            parts.append(name.replace("_", " "))
    return "; ".join(parts)


def _file_id_text() -> str:
    doc = inspect.getdoc(_files) or ""
    start, end = doc.find("File id scheme"), doc.find("File kinds")
    text = doc[start:end if end > start else None]
    text = text.replace("File id scheme (version 1)\n--------------------------\n", "Scheme (version 1):\n\n").strip()
    text = re.sub(r":(?:func|class|mod):`~?([^`]+)`", r"`\1`", text)
    rows = "".join(
        f"| `{k.name}` | `{k.id_column}` | `{k.prefix}_<id>.nwb` | `{k.table}` |\n" for k in _files.FILE_KINDS.values()
    )
    return text + "\n\n| file kind | entity id column | file name | table |\n|---|---|---|---|\n" + rows


def render() -> str:
    """The data dictionary as Markdown."""
    out = [_HEADER.format(file_ids=_file_id_text()).rstrip() + "\n"]
    for name, spec in TABLES.items():
        schema = spec.model.to_schema()
        out.append(f"\n## `{name}`\n\n{inspect.getdoc(spec.model)}\n")
        out.append(f"\nId column: `{spec.id_column}`.")
        if spec.file_kind:
            out.append(f" Data file kind: `{spec.file_kind}`.")
        unique = getattr(schema, "unique", None)
        if unique:
            out.append(f" Unique together: {', '.join(f'`{c}`' for c in unique)}.")
        table_checks = [c.name for c in schema.checks if c.name]
        if table_checks:
            out.append(f" Table checks: {', '.join(f'`{c}`' for c in table_checks)}.")
        if spec.references:
            refs = "; ".join(
                f"({', '.join(f'`{c}`' for c in r.columns)}) → `{r.parent}`" for r in spec.references
            )
            out.append(f" References: {refs}.")
        out.append("\n\n| # | column | dtype | nullable | checks | description |\n|---|---|---|---|---|---|\n")
        for i, (cname, col) in enumerate(schema.columns.items(), 1):
            desc = (col.description or "").replace("|", "\\|")
            checks = _checks(col).replace("|", "\\|")
            out.append(f"| {i} | `{cname}` | {_dtype(col, name)} | {'yes' if col.nullable else 'no'} | {checks} | {desc} |\n")
    return "".join(out)


def write(path: str | os.PathLike = DEFAULT_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Generate the release metadata data dictionary.")
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH))
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        current = Path(args.path).read_text() if Path(args.path).is_file() else ""
        if current != render():
            print(f"{args.path} is out of date; run python -m release_platform.metadata.dictionary", file=sys.stderr)
            return 1
        return 0
    print(write(args.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
