"""Compare what an NWB reader returns with the raw source table, read with pandas alone."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_matches_raw_csv(read: pd.DataFrame, raw_path, *, index: str | None = None, atol: float = 0.0,
                           skip: tuple[str, ...] = ()) -> None:
    """Every column of the raw CSV (read with pandas alone, not the writer's loaders) equals the reader's.

    Numbers are compared as float64 (NaN equal to NaN); other values as strings, a missing value equal to
    NaN/None. ``index``: the raw column that became the reader's index; ``skip``: raw columns not compared.
    """
    raw = pd.read_csv(raw_path).drop(columns=list(skip))
    assert len(read) == len(raw), raw_path
    if index is not None:
        assert list(read.index) == raw[index].tolist() and read.index.name == index
        raw = raw.drop(columns=[index])
    for name in raw.columns:
        assert name in read.columns, (raw_path, name)
        want, got = raw[name], read[name]
        if pd.api.types.is_numeric_dtype(want) and not pd.api.types.is_bool_dtype(want):
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want.to_numpy(np.float64), rtol=0, atol=atol,
                                       equal_nan=True, err_msg=f"{raw_path}: {name}")
        else:
            def norm(values):
                return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]
            assert norm(got) == norm(want), (raw_path, name)


def assert_sync_timed(read: pd.DataFrame, sync_path) -> None:
    """Presentation times equal the synthetic truth's display times of their frames within one sync sample."""
    import h5py
    from pathlib import Path

    with h5py.File(Path(sync_path).parent / "sync_truth.h5", "r") as f:
        display, fs = f["display_times"][()], float(f.attrs["sample_freq_hz"])
    interval = float(np.median(np.diff(display)))
    extended = np.r_[display, display[-1] + interval]
    np.testing.assert_allclose(read["start_time"].to_numpy(np.float64), display[read["start_frame"].to_numpy(np.int64)],
                               rtol=0, atol=1.0 / fs)
    inside = read["end_frame"].to_numpy(np.int64) < len(display)
    np.testing.assert_allclose(read["stop_time"].to_numpy(np.float64)[inside],
                               extended[read["end_frame"].to_numpy(np.int64)][inside], rtol=0, atol=1.0 / fs)
