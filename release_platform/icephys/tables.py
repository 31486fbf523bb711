"""Per-cell tables of an extraction (sweeps, cell QC, cell features) and their pandera models.

The models are the blocking checks of the icephys assets and of the release's ``icephys_cells_table``.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from release_platform.icephys.extract import CellExtraction

__all__ = [
    "CELL_QC_COLUMNS",
    "CELL_FEATURE_COLUMNS",
    "IcephysSweepTable",
    "IcephysCellQc",
    "IcephysCellFeatures",
    "sweep_table_frame",
    "cell_qc_frame",
    "cell_features_frame",
    "icephys_cells_rows",
]

CELL_QC_COLUMNS = [
    "icephys_cell_id", "blowout_mv", "electrode_0_pa", "seal_gohm", "input_resistance_mohm",
    "initial_access_resistance_mohm", "input_access_resistance_ratio", "sampling_rate", "recording_date", "layout",
    "passed", "cell_tags", "fail_reasons",
]
CELL_FEATURE_COLUMNS = [
    "icephys_cell_id", "n_sweeps", "n_sweeps_passed", "n_long_square_sweeps", "n_spikes", "vrest_mv", "rheobase_pa",
    "rheobase_sweep_number", "input_resistance_mohm", "tau_ms", "sag", "fi_slope_hz_per_pa", "first_spike_latency_s",
    "threshold_v_mv", "peak_v_mv", "upstroke_v_per_s", "downstroke_v_per_s", "width_ms", "hero_sweep_number",
    "adaptation_index", "mean_isi_s", "hero_rate_hz", "n_short_square_sweeps", "short_square_threshold_pa",
    "short_square_threshold_sweep_number", "short_square_max_subthreshold_pa", "n_ramp_sweeps", "ramp_sweep_number",
    "ramp_rheobase_pa", "ramp_first_spike_latency_s",
]
_INT_FEATURES = ("icephys_cell_id", "n_sweeps", "n_sweeps_passed", "n_long_square_sweeps", "n_spikes", "n_short_square_sweeps",
                 "n_ramp_sweeps")
_NULLABLE_INT_FEATURES = ("rheobase_sweep_number", "hero_sweep_number", "short_square_threshold_sweep_number", "ramp_sweep_number")


class IcephysSweepTable(pa.DataFrameModel):
    """One row per sweep of one cell."""

    icephys_cell_id: Series[int] = pa.Field(gt=0)
    sweep_number: Series[int] = pa.Field(ge=0, unique=True)
    stimulus_name: Series[str]
    stimulus_type: Series[str] = pa.Field(nullable=True)
    clamp_mode: Series[str] = pa.Field(isin=["current", "voltage", "izero"])
    stimulus_units: Series[str] = pa.Field(isin=["pA", "mV"])
    sampling_rate: Series[float] = pa.Field(gt=0)
    starting_time: Series[float] = pa.Field(ge=0)
    n_samples: Series[int] = pa.Field(gt=0)
    truncated: Series[bool]
    stimulus_start_time: Series[float] = pa.Field(ge=0, nullable=True)
    stimulus_amplitude: Series[float] = pa.Field(nullable=True)
    stimulus_duration: Series[float] = pa.Field(ge=0, nullable=True)
    stimulus_interval: Series[float] = pa.Field(gt=0, nullable=True)
    pre_noise_rms_mv: Series[float] = pa.Field(ge=0, nullable=True)
    post_noise_rms_mv: Series[float] = pa.Field(ge=0, nullable=True)
    slow_vm_mv: Series[float] = pa.Field(nullable=True)
    slow_noise_rms_mv: Series[float] = pa.Field(ge=0, nullable=True)
    pre_vm_mv: Series[float] = pa.Field(nullable=True)
    post_vm_mv: Series[float] = pa.Field(nullable=True)
    vm_delta_mv: Series[float] = pa.Field(ge=0, nullable=True)
    bridge_balance_mohm: Series[float] = pa.Field(nullable=True)
    leak_pa: Series[float] = pa.Field(nullable=True)
    spike_count: Series[int] = pa.Field(ge=0)
    passed: Series[bool]
    fail_reasons: Series[str]

    @pa.dataframe_check
    def failed_sweeps_say_why(cls, df: pd.DataFrame) -> Series[bool]:
        return df["passed"] | (df["fail_reasons"].str.len() > 0)

    class Config:
        strict = True
        coerce = False


class IcephysCellQc(pa.DataFrameModel):
    """One row per cell: the test-pulse QC values, pass state, tags and reasons."""

    icephys_cell_id: Series[int] = pa.Field(gt=0, unique=True)
    blowout_mv: Series[float] = pa.Field(nullable=True)
    electrode_0_pa: Series[float] = pa.Field(nullable=True)
    seal_gohm: Series[float] = pa.Field(gt=0, nullable=True)
    input_resistance_mohm: Series[float] = pa.Field(gt=0, nullable=True)
    initial_access_resistance_mohm: Series[float] = pa.Field(gt=0, nullable=True)
    input_access_resistance_ratio: Series[float] = pa.Field(gt=0, nullable=True)
    sampling_rate: Series[float] = pa.Field(gt=0)
    recording_date: Series[str] = pa.Field(nullable=True)
    layout: Series[str] = pa.Field(isin=["icephys_tables", "sweep_table", "series_attributes"])
    passed: Series[bool]
    cell_tags: Series[str]
    fail_reasons: Series[str]

    @pa.dataframe_check
    def failed_cells_say_why(cls, df: pd.DataFrame) -> Series[bool]:
        return df["passed"] | (df["fail_reasons"].str.len() > 0)

    class Config:
        strict = True
        coerce = False


class IcephysCellFeatures(pa.DataFrameModel):
    """One row per cell: long-square, short-square, ramp and spike features (null where the cell has no suitable sweep)."""

    icephys_cell_id: Series[int] = pa.Field(gt=0, unique=True)
    n_sweeps: Series[int] = pa.Field(gt=0)
    n_sweeps_passed: Series[int] = pa.Field(ge=0)
    n_long_square_sweeps: Series[int] = pa.Field(ge=0)
    n_spikes: Series[int] = pa.Field(ge=0)
    vrest_mv: Series[float] = pa.Field(nullable=True, in_range={"min_value": -120, "max_value": 20})
    rheobase_pa: Series[float] = pa.Field(nullable=True)
    rheobase_sweep_number: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    input_resistance_mohm: Series[float] = pa.Field(gt=0, nullable=True)
    tau_ms: Series[float] = pa.Field(gt=0, nullable=True)
    sag: Series[float] = pa.Field(nullable=True)
    fi_slope_hz_per_pa: Series[float] = pa.Field(nullable=True)
    first_spike_latency_s: Series[float] = pa.Field(ge=0, nullable=True)
    threshold_v_mv: Series[float] = pa.Field(nullable=True)
    peak_v_mv: Series[float] = pa.Field(nullable=True)
    upstroke_v_per_s: Series[float] = pa.Field(gt=0, nullable=True)
    downstroke_v_per_s: Series[float] = pa.Field(lt=0, nullable=True)
    width_ms: Series[float] = pa.Field(gt=0, nullable=True)
    hero_sweep_number: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    adaptation_index: Series[float] = pa.Field(nullable=True, in_range={"min_value": -1, "max_value": 1})
    mean_isi_s: Series[float] = pa.Field(gt=0, nullable=True)
    hero_rate_hz: Series[float] = pa.Field(ge=0, nullable=True)
    n_short_square_sweeps: Series[int] = pa.Field(ge=0)
    short_square_threshold_pa: Series[float] = pa.Field(gt=0, nullable=True)
    short_square_threshold_sweep_number: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    short_square_max_subthreshold_pa: Series[float] = pa.Field(gt=0, nullable=True)
    n_ramp_sweeps: Series[int] = pa.Field(ge=0)
    ramp_sweep_number: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    ramp_rheobase_pa: Series[float] = pa.Field(nullable=True)
    ramp_first_spike_latency_s: Series[float] = pa.Field(ge=0, nullable=True)

    class Config:
        strict = True
        coerce = False


def sweep_table_frame(result: CellExtraction, icephys_cell_id: int) -> pd.DataFrame:
    frame = result.sweep_table()
    frame.insert(0, "icephys_cell_id", int(icephys_cell_id))
    frame["icephys_cell_id"] = frame["icephys_cell_id"].astype("int64")
    frame["stimulus_type"] = frame["stimulus_type"].astype(object)
    return frame


def _joined(values) -> str:
    return "; ".join(values or [])


def cell_qc_frame(result: CellExtraction, icephys_cell_id: int) -> pd.DataFrame:
    e = result.experiment_data
    row = {c: e.get(c) for c in CELL_QC_COLUMNS}
    row.update(icephys_cell_id=int(icephys_cell_id), cell_tags=_joined(e["cell_tags"]), fail_reasons=_joined(e["fail_reasons"]),
               passed=bool(e["passed"]))
    frame = pd.DataFrame([row], columns=CELL_QC_COLUMNS)
    for col in ("blowout_mv", "electrode_0_pa", "seal_gohm", "input_resistance_mohm", "initial_access_resistance_mohm",
                "input_access_resistance_ratio", "sampling_rate"):
        frame[col] = pd.to_numeric(frame[col]).astype("float64")
    frame["icephys_cell_id"] = frame["icephys_cell_id"].astype("int64")
    frame["recording_date"] = frame["recording_date"].astype(object)
    return frame


def cell_features_frame(result: CellExtraction, icephys_cell_id: int) -> pd.DataFrame:
    f = dict(result.cell_features)
    f["icephys_cell_id"] = int(icephys_cell_id)
    frame = pd.DataFrame([{c: f.get(c) for c in CELL_FEATURE_COLUMNS}], columns=CELL_FEATURE_COLUMNS)
    for col in CELL_FEATURE_COLUMNS:
        if col in _INT_FEATURES:
            frame[col] = frame[col].astype("int64")
        elif col in _NULLABLE_INT_FEATURES:
            frame[col] = pd.array([None if v is None else int(v) for v in frame[col]], dtype="Int64")
        else:
            frame[col] = pd.to_numeric(frame[col]).astype("float64")
    return frame


def icephys_cells_rows(
    qc: pd.DataFrame,
    features: pd.DataFrame,
    *,
    subject: Optional[dict] = None,
    project_code: Optional[str] = None,
) -> pd.DataFrame:
    """The release ``icephys_cells_table`` rows of cells (one row each) from their QC and feature tables and
    LIMS subject fields (``subject_id``, ``sex``, ``full_genotype``), with the model's column order and
    dtypes; ``file_id``/``file_path`` are left null (the release attaches them)."""
    from release_platform.metadata.schemas import TABLES

    merged = qc.merge(features, on="icephys_cell_id", how="inner", suffixes=("_qc", ""))
    subject = subject or {}
    merged = merged.assign(
        mouse_id=subject.get("subject_id"), sex=subject.get("sex") or "unknown", full_genotype=subject.get("full_genotype"),
        project_code=project_code, cell_qc_passed=merged["passed"], initial_input_resistance_mohm=merged["input_resistance_mohm_qc"],
    )
    schema = TABLES["icephys_cells_table"].model.to_schema()
    out = {}
    for name, col in schema.columns.items():
        values = merged[name] if name in merged.columns else pd.Series([None] * len(merged), index=merged.index, dtype=object)
        dtype = str(col.dtype)
        if dtype == "Int64":
            out[name] = pd.array([None if pd.isna(v) else int(v) for v in values], dtype="Int64")
        elif dtype.startswith("string"):
            out[name] = values.astype("string")
        elif dtype == "bool":
            out[name] = values.astype(bool).to_numpy()
        else:
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    return pd.DataFrame(out)


def validate(model: type[pa.DataFrameModel], frame: pd.DataFrame) -> Optional[str]:
    """None when ``frame`` satisfies ``model``, else every failure on one line."""
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return "; ".join(f"{r.column}: {r.check} ({r.failure_case})" for r in cases.head(20).itertuples())
    return None
