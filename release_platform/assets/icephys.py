"""Icephys assets per ``icephys_cell`` partition: sweep table, cell QC and cell features.

One extraction (:func:`release_platform.icephys.extract_cell`, the code behind the ``extract_nwb_data``
module) writes three Parquet tables under ``<storage>/<asset>/<cell>/<asset>.parquet`` plus the module's
output JSON (``icephys_cell_qc/<cell>/extract_nwb_data.json``), and writes the cell QC values back to LIMS
(``icephys_cell_qc_results``). Each table is validated by its pandera model in a blocking check.
"""

from typing import Optional

import dagster as dg

from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.icephys import extract_cell
from release_platform.icephys.tables import (
    IcephysCellFeatures,
    IcephysCellQc,
    IcephysSweepTable,
    cell_features_frame,
    cell_qc_frame,
    sweep_table_frame,
    validate,
)
from release_platform.inputs import IcephysCellInputs
from release_platform.lims.resource import LimsResource
from release_platform.metadata.io import read_parquet, write_parquet
from release_platform.modules._harness import write_output_json

ICEPHYS = PARTITIONS_BY_KIND["icephys_cell"]
GROUP = "icephys_cell"


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
        context.log.error(str(exc))
        raise dg.Failure(description=str(exc), allow_retries=False) from None
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


def _schema_check(asset_name: str, model) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(asset_name),
        name=f"{asset_name}_schema",
        blocking=True,
        partitions_def=ICEPHYS,
        description=f"Validate the cell's {asset_name} Parquet file with the {model.__name__} pandera model.",
    )
    def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        try:
            frame = read_parquet(asset_name, storage.dir_for(asset_name, context.partition_key) / f"{asset_name}.parquet")
        except InputError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(exc)})
        problem = validate(model, frame)
        return dg.AssetCheckResult(passed=problem is None, metadata={"rows": len(frame), "problems": problem or ""})

    return _check


ICEPHYS_ASSETS = [icephys_extraction]
ICEPHYS_CHECKS = [
    _schema_check("icephys_sweep_table", IcephysSweepTable),
    _schema_check("icephys_cell_qc", IcephysCellQc),
    _schema_check("icephys_cell_features", IcephysCellFeatures),
]
