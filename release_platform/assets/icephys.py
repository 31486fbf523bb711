"""Icephys assets per ``icephys_cell`` partition: sweep table, cell QC and cell features; and for the release the
cell's NWB file (``icephys_cell_nwb``), its ``icephys_cells_table`` row (``icephys_cell_metadata``) and the
release-level ``icephys_cells_table``.

One extraction (:func:`release_platform.icephys.extract_cell`, the code behind the ``extract_nwb_data``
module) writes three Parquet tables under ``<storage>/<asset>/<cell>/<asset>.parquet`` plus the module's
output JSON (``icephys_cell_qc/<cell>/extract_nwb_data.json``), and writes the cell QC values back to LIMS
(``icephys_cell_qc_results``). Each table is validated by its pandera model in a blocking check.
"""

import warnings
from typing import Optional

import dagster as dg

from release_platform.assets.failures import asset_failure
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.inputs import IcephysCellInputs
from release_platform.lims.resource import LimsResource

# Extraction, tables, pandera models and Parquet I/O (numpy, scipy, pandas, pandera, h5py) are imported by the
# steps that use them, so loading the code location does not pay for them.

ICEPHYS = PARTITIONS_BY_KIND["icephys_cell"]
GROUP = "icephys_cell"
RELEASE_GROUP = "release_metadata"  # built by release_metadata_job with the other release tables
CELLS_TABLE = "icephys_cells_table"


class IcephysExtractionConfig(dg.Config):
    """Manual fallbacks for test-pulse values that cannot be measured (AllenSDK's manual_* inputs)."""

    manual_seal_gohm: Optional[float] = None
    manual_initial_access_resistance_mohm: Optional[float] = None
    manual_initial_input_mohm: Optional[float] = None


@dg.multi_asset(
    outs={
        "icephys_sweep_table": dg.AssetOut(description="One row per sweep: stimulus descriptors, sweep QC values, spike count, pass/fail and reasons.", kinds={"parquet"}),
        "icephys_cell_qc": dg.AssetOut(description="Cell QC from the test-pulse sweeps (seal, access, input resistance, electrode offset, blow-out), pass/fail, tags.", kinds={"parquet"}),
        "icephys_cell_features": dg.AssetOut(description="Cell features: rheobase, input resistance, tau, sag, f-I slope, latency, adaptation, first-spike shape.", kinds={"parquet"}),
    },
    partitions_def=ICEPHYS,
    group_name=GROUP,
)
def icephys_extraction(
    context: dg.AssetExecutionContext,
    config: IcephysExtractionConfig,
    icephys_cell_inputs: IcephysCellInputs,
    storage: StorageResource,
    lims: LimsResource,
):
    from release_platform.icephys import extract_cell
    from release_platform.icephys.tables import cell_features_frame, cell_qc_frame, sweep_table_frame
    from release_platform.jsonio import write_output_json
    from release_platform.metadata.io import write_parquet

    cell = context.partition_key
    try:
        result = extract_cell(
            icephys_cell_inputs.nwb_path,
            manual_seal_gohm=config.manual_seal_gohm,
            manual_initial_access_resistance_mohm=config.manual_initial_access_resistance_mohm,
            manual_initial_input_mohm=config.manual_initial_input_mohm,
            entity=f"icephys_cell {cell}",
        )
    except InputError as exc:
        raise asset_failure(context, exc) from None
    cell_id = int(cell)
    paths = {}
    for name, frame in (
        ("icephys_sweep_table", sweep_table_frame(result, cell_id)),
        ("icephys_cell_qc", cell_qc_frame(result, cell_id)),
        ("icephys_cell_features", cell_features_frame(result, cell_id)),
    ):
        paths[name] = str(write_parquet(name, frame, storage.dir_for(name, cell) / f"{name}.parquet"))
    output_json = storage.dir_for("icephys_cell_qc", cell) / "extract_nwb_data.json"
    write_output_json(output_json, {"input_nwb": icephys_cell_inputs.nwb_path, **result.output_json()})
    lims.get_client().write_icephys_cell_qc(cell_id, result.experiment_data)

    e, f = result.experiment_data, result.cell_features
    failed = {str(n): r["fail_reasons"] for n, r in result.sweep_data.items() if not r["passed"]}
    for tag in e["cell_tags"]:
        context.log.warning(f"icephys_cell {cell}: {tag}")
    yield dg.Output(
        {"file": paths["icephys_sweep_table"], "n_sweeps": len(result.sweep_data)},
        output_name="icephys_sweep_table",
        metadata={"sweeps": len(result.sweep_data), "sweeps_failed": dg.MetadataValue.json(failed), "layout": result.layout,
                  "file": paths["icephys_sweep_table"]},
    )
    yield dg.Output(
        {"file": paths["icephys_cell_qc"], "output_json": str(output_json), "passed": bool(e["passed"])},
        output_name="icephys_cell_qc",
        metadata={"passed": bool(e["passed"]), "seal_gohm": e["seal_gohm"], "input_resistance_mohm": e["input_resistance_mohm"],
                  "initial_access_resistance_mohm": e["initial_access_resistance_mohm"], "cell_tags": dg.MetadataValue.json(e["cell_tags"]),
                  "fail_reasons": dg.MetadataValue.json(e["fail_reasons"]), "file": paths["icephys_cell_qc"]},
    )
    yield dg.Output(
        {"file": paths["icephys_cell_features"]},
        output_name="icephys_cell_features",
        metadata={k: f[k] for k in ("rheobase_pa", "input_resistance_mohm", "tau_ms", "fi_slope_hz_per_pa", "n_spikes")}
        | {"file": paths["icephys_cell_features"]},
    )


def _schema_check(asset_name: str, model_name: str) -> dg.AssetChecksDefinition:
    """Blocking check validating the asset's Parquet file with the pandera model ``model_name`` of
    :mod:`release_platform.icephys.tables`."""

    def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        from release_platform.icephys import tables
        from release_platform.metadata.io import read_parquet

        model = getattr(tables, model_name)
        try:
            frame = read_parquet(asset_name, storage.dir_for(asset_name, context.partition_key) / f"{asset_name}.parquet")
        except InputError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(exc)})
        problem = tables.validate(model, frame)
        return dg.AssetCheckResult(passed=problem is None, metadata={"rows": len(frame), "problems": problem or ""})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _partitioned_check(
            asset=dg.AssetKey(asset_name), name=f"{asset_name}_schema",
            description=f"Validate the cell's {asset_name} Parquet file with the {model_name} pandera model.",
        )(_check)


# --- release: the cell's NWB file and its icephys_cells_table row ------------------------------------------------


@dg.asset(
    partitions_def=ICEPHYS,
    group_name=GROUP,
    kinds={"nwb"},
    description="The cell's icephys NWB file copied under the storage root as icephys_cell_<id>.nwb (verified copy), for release.",
)
def icephys_cell_nwb(context: dg.AssetExecutionContext, icephys_cell_inputs: IcephysCellInputs, storage: StorageResource) -> dict:
    from release_platform.icephys.io import copy_verified
    from release_platform.metadata.files import FILE_KINDS

    cell = context.partition_key
    target = storage.dir_for("icephys_cell_nwb", cell) / FILE_KINDS["icephys_nwb"].filename(int(cell))
    try:
        digest = copy_verified(icephys_cell_inputs.nwb_path, target)
    except InputError as exc:
        raise asset_failure(context, exc, f"icephys_cell {cell}") from None
    context.add_output_metadata({"path": str(target), "sha256": digest, "bytes": target.stat().st_size})
    return {"file": str(target), "sha256": digest}


@dg.asset(
    partitions_def=ICEPHYS,
    group_name=GROUP,
    deps=["icephys_cell_qc", "icephys_cell_features", "icephys_cell_nwb"],
    kinds={"pandas", "parquet"},
    description="This cell's row of icephys_cells_table (QC, features, subject, NWB file id and path) as Parquet.",
)
def icephys_cell_metadata(context: dg.AssetExecutionContext, icephys_cell_inputs: IcephysCellInputs, storage: StorageResource) -> dg.MaterializeResult:
    from release_platform.icephys.tables import icephys_cells_rows
    from release_platform.metadata.files import FILE_KINDS, FileLinks, attach_files
    from release_platform.metadata.io import read_parquet, write_parquet

    cell = context.partition_key
    try:
        qc = read_parquet("icephys_cell_qc", storage.dir_for("icephys_cell_qc", cell) / "icephys_cell_qc.parquet")
        features = read_parquet("icephys_cell_features", storage.dir_for("icephys_cell_features", cell) / "icephys_cell_features.parquet")
        subject = icephys_cell_inputs.subject.model_dump() if icephys_cell_inputs.subject else None
        rows = icephys_cells_rows(qc, features, subject=subject, project_code=icephys_cell_inputs.project_code)
        nwb = storage.dir_for("icephys_cell_nwb", cell) / FILE_KINDS["icephys_nwb"].filename(int(cell))
        links = FileLinks(paths={"icephys_nwb": {int(cell): str(nwb)}})
        rows = attach_files(rows, "icephys_nwb", links, "error").frame
    except InputError as exc:
        raise asset_failure(context, exc, f"icephys_cell {cell}") from None
    path = write_parquet(CELLS_TABLE, rows, storage.dir_for("icephys_cell_metadata", cell) / f"{CELLS_TABLE}.parquet")
    return dg.MaterializeResult(metadata={"path": str(path), "dagster/row_count": len(rows)})


def _partitioned_check(**kwargs):
    """``dg.asset_check`` on an icephys_cell-partitioned asset (Dagster marks partitions_def on checks as
    preview; we rely on it knowingly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.asset_check(partitions_def=ICEPHYS, blocking=True, **kwargs)


def _cell_metadata_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    path = storage.dir_for("icephys_cell_metadata", context.partition_key) / f"{CELLS_TABLE}.parquet"
    return _table_check(path, check_files=True)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    icephys_cell_metadata_schema = _partitioned_check(
        asset=icephys_cell_metadata, name="icephys_cell_metadata_schema",
        description="Validate this cell's icephys_cells_table row with the pandera model; its NWB file must exist.",
    )(_cell_metadata_schema)


@dg.asset(
    name=CELLS_TABLE,
    deps=[icephys_cell_metadata],
    group_name=RELEASE_GROUP,
    kinds={"pandas", "parquet", "csv"},
    description="The release's icephys_cells_table: every materialized icephys_cell partition's row (Parquet + CSV).",
)
def icephys_cells_table(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    import pandas as pd

    from release_platform.metadata.io import read_parquet, write_csv, write_parquet
    from release_platform.metadata.schemas import empty_table

    key = dg.AssetKey("icephys_cell_metadata")
    current = set(context.instance.get_dynamic_partitions(ICEPHYS.name))
    partitions = sorted(set(context.instance.get_materialized_partitions(key)) & current, key=int)
    frames = []
    for pk in partitions:
        try:
            frames.append(read_parquet(CELLS_TABLE, storage.dir_for("icephys_cell_metadata", pk) / f"{CELLS_TABLE}.parquet"))
        except InputError as exc:
            raise asset_failure(context, f"{CELLS_TABLE}: icephys_cell {pk}: {exc}") from None
    frame = pd.concat(frames, ignore_index=True) if frames else empty_table(CELLS_TABLE)
    frame = frame.sort_values("icephys_cell_id", kind="stable").reset_index(drop=True)
    root = storage.root_path() / CELLS_TABLE
    parquet = write_parquet(CELLS_TABLE, frame, root / f"{CELLS_TABLE}.parquet")
    csv = write_csv(CELLS_TABLE, frame, root / f"{CELLS_TABLE}.csv")
    return dg.MaterializeResult(metadata={"dagster/row_count": len(frame), "partitions": len(partitions),
                                          "parquet_path": str(parquet), "csv_path": str(csv)})


@dg.asset_check(asset=icephys_cells_table, name="icephys_cells_table_valid", blocking=True,
                description="Validate the release's icephys_cells_table (pandera model, ids unique across the release, files exist).")
def icephys_cells_table_valid(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return _table_check(storage.root_path() / CELLS_TABLE / f"{CELLS_TABLE}.parquet", check_files=True)


def _table_check(path, *, check_files: bool) -> dg.AssetCheckResult:
    from release_platform.metadata.io import read_parquet
    from release_platform.metadata.validation import validate_table

    try:
        frame = read_parquet(CELLS_TABLE, path)
    except InputError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"problem": str(exc)})
    report = validate_table(CELLS_TABLE, frame, check_files=check_files)
    return dg.AssetCheckResult(passed=report.passed, description=report.summary()[:1000],
                               metadata={"rows": report.rows, "failures": dg.MetadataValue.json(report.failures)})


#: release table -> (release-level asset, per-cell asset), for the release manifest
ICEPHYS_RELEASE_TABLES = {CELLS_TABLE: (CELLS_TABLE, "icephys_cell_metadata")}

ICEPHYS_ASSETS = [icephys_extraction, icephys_cell_nwb, icephys_cell_metadata, icephys_cells_table]
ICEPHYS_CHECKS = [
    _schema_check("icephys_sweep_table", "IcephysSweepTable"),
    _schema_check("icephys_cell_qc", "IcephysCellQc"),
    _schema_check("icephys_cell_features", "IcephysCellFeatures"),
    icephys_cell_metadata_schema,
    icephys_cells_table_valid,
]
