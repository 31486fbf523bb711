"""Write and read release tables: Parquet (canonical, typed) and CSV (AllenSDK-compatible), atomically.

Parquet keeps the model dtypes (nullable ``Int64``, ``string``, UTC datetimes); list columns come back from
pyarrow as numpy arrays and are turned back into Python lists by :func:`read_parquet`. The CSV is written
the way the AllenSDK writer did (``index=False``; lists as ``[1, 2]``; null as an empty cell).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from release_platform.errors import InputError
from release_platform.metadata.schemas import TABLES
from release_platform.storage import atomic_path


def _normalize_lists(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    spec = TABLES.get(table)
    if spec is None:
        return frame
    for col in spec.list_columns:
        if col in frame.columns:
            frame[col] = frame[col].map(_as_list)
    return frame


def _as_list(value):
    if isinstance(value, np.ndarray):
        return [v.item() if hasattr(v, "item") else v for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [v.item() if isinstance(v, np.generic) else v for v in value]
    return [] if value is None or (np.isscalar(value) and pd.isna(value)) else value


def write_parquet(table: str, frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
    return path


def read_parquet(table: str, path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_parquet` (InputError naming the file if it is missing or corrupt)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{table} Parquet file is missing", path=path)
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise InputError(f"{table} Parquet file is unreadable: {exc}", path=path) from None
    return _normalize_lists(table, frame)


def write_csv(table: str, frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path
