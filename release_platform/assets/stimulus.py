"""Stimulus analysis assets per ``ophys_session`` partition (imaging planes inside).

``stimulus_responses`` runs the ``observatory_analysis`` module on each plane (its corrected
fluorescence and dF/F, the session's stimulus table, running speed at the imaging frames) and writes
``analysis.h5`` and ``analysis_metrics.parquet`` under ``<storage>/stimulus_responses/<session>/<plane>/``;
``cell_metrics`` joins every plane's metrics with the ROI ids into
``<storage>/cell_metrics/<session>/cell_metrics.parquet``, validated by the pandera model (blocking), and a
warning check on the fraction of responsive ROIs. ``cell_metrics_table`` (release metadata group) assembles every
materialized partition into ``<storage>/cell_metrics_table/cell_metrics.parquet`` and ``.csv``.
"""


import time
from typing import Optional

import dagster as dg

from release_platform.assets.failures import asset_failure
from release_platform.assets.checks import asset_check_result
from release_platform.assets.metadata import RELEASE_GROUP
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.inputs import OphysSessionInputs
from release_platform.storage import atomic_path

OPHYS = PARTITIONS_BY_KIND["ophys_session"]
GROUP = "ophys_session"


class StimulusConfig(dg.Config):
    # release_platform.stimulus.lsn.DEFAULT_SHUFFLES, written out so that loading the code location does not import
    # the analysis (scipy); a test keeps the two equal.
    n_shuffles: int = 10_000
    seed: int = 1
    stimuli: Optional[list[str]] = None


def _running_csv(session: OphysSessionInputs, plane, n_frames: int, target) -> Optional[str]:
    import pandas as pd

    from release_platform.stimulus.running import speed_per_frame

    path = session.files.get("RunningSpeed")
    if not path:
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"running speed is unreadable: {exc}", path=path) from None
    if not {"timestamps", "speed"} <= set(table.columns):
        raise InputError(f"running speed needs columns timestamps and speed (has {list(table.columns)})", path=path)
    speed = speed_per_frame(table["timestamps"].to_numpy(), table["speed"].to_numpy(), n_frames, plane.frame_rate_hz)
    with atomic_path(target) as tmp:
        pd.DataFrame({"speed": speed}).to_csv(tmp, index=False)
    return str(target)


@dg.asset(partitions_def=OPHYS, group_name=GROUP, kinds={"hdf5", "parquet"},
          description="Observatory analysis per plane: sweep responses, condition tuning, receptive fields, metrics per ROI.")
def stimulus_responses(context: dg.AssetExecutionContext, config: StimulusConfig, ophys_session_inputs: OphysSessionInputs,
                       neuropil_corrected_traces: dict, dff_traces: dict, storage: StorageResource) -> dict:
    from release_platform.stimulus.files import analyze_plane_files

    started = time.monotonic()
    out = {}
    table = ophys_session_inputs.files.get("StimulusTable")
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        entity = f"ophys_session {context.partition_key} (ophys_experiment {pid})"
        directory = storage.dir_for("stimulus_responses", context.partition_key) / pid
        try:
            if not table:
                raise InputError("no StimulusTable file registered for the session")
            running = _running_csv(ophys_session_inputs, plane, plane.movie_shape[0], directory / "running_speed.csv")
            result = analyze_plane_files(
                neuropil_corrected_traces[pid]["file"], dff_traces[pid]["file"], table, plane.frame_rate_hz,
                directory / "analysis.h5", running_speed_file=running, stimuli=config.stimuli,
                n_shuffles=config.n_shuffles, seed=config.seed,
            )
        except InputError as exc:
            raise asset_failure(context, exc, entity) from None
        for msg in result["messages"]:
            context.log.warning(f"ophys_experiment {pid}: {msg}")
        out[pid] = {"file": str(result["output_file"]), "metrics_file": str(result["metrics_file"]), "stimuli": result["stimuli"],
                    "mean_running_speed": result["mean_running_speed"], "messages": result["messages"]}
    context.add_output_metadata({
        "stimuli": dg.MetadataValue.json({k: v["stimuli"] for k, v in out.items()}),
        "messages": dg.MetadataValue.json({k: v["messages"] for k, v in out.items()}),
        "runtime_s": round(time.monotonic() - started, 3),
    })
    return out


@dg.asset(partitions_def=OPHYS, group_name=GROUP, kinds={"parquet"},
          description="One row per ROI per plane: ids and the stimulus-response metrics of the session.")
def cell_metrics(context: dg.AssetExecutionContext, ophys_session_inputs: OphysSessionInputs, stimulus_responses: dict,
                 dff_traces: dict, storage: StorageResource) -> dict:
    import pandas as pd

    frames = []
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        metrics = pd.read_parquet(stimulus_responses[pid]["metrics_file"])
        rois = {str(r.id): r for r in plane.rois}
        valid = set(dff_traces[pid]["valid_roi_ids"])
        ids = pd.DataFrame({
            "ophys_experiment_id": pd.array([plane.ophys_experiment_id] * len(metrics), dtype="Int64"),
            "cell_roi_id": pd.array([int(i) for i in metrics["roi_id"]], dtype="Int64"),
            "cell_specimen_id": pd.array([rois[str(i)].cell_specimen_id if str(i) in rois else None for i in metrics["roi_id"]],
                                         dtype="Int64"),
            "valid_roi": [str(i) in valid for i in metrics["roi_id"]],
        })
        frames.append(pd.concat([ids, metrics.drop(columns="roi_id").astype(float)], axis=1))
    table = pd.concat(frames, ignore_index=True)
    target = storage.dir_for("cell_metrics", context.partition_key) / "cell_metrics.parquet"
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=False)
    context.add_output_metadata({"rows": len(table), "columns": len(table.columns), "file": str(target)})
    return {"file": str(target), "rows": len(table)}


@dg.asset_check(asset=cell_metrics, partitions_def=OPHYS, blocking=True,
                description="Validate the session's cell_metrics rows with the pandera model (ids, dtypes, value ranges).")
def cell_metrics_schema(context: dg.AssetCheckExecutionContext, cell_metrics: dict) -> dg.AssetCheckResult:
    import pandas as pd

    from release_platform.stimulus.schema import CellMetricsTable

    import pandera.errors as pae

    frame = pd.read_parquet(cell_metrics["file"])
    try:
        CellMetricsTable.validate(frame, lazy=True)
    except pae.SchemaErrors as exc:
        cases = exc.failure_cases[["column", "check", "failure_case"]].astype(str).head(20).to_dict("records")
        return dg.AssetCheckResult(passed=False, metadata={"failures": dg.MetadataValue.json(cases), "rows": len(frame)})
    return dg.AssetCheckResult(passed=True, metadata={"rows": len(frame)})


@dg.asset_check(asset=cell_metrics, partitions_def=OPHYS, blocking=False,
                description="Warn when the fraction of valid ROIs responsive to gratings or scenes (p < 0.05) is outside 5-95%.")
def responsive_fraction(context: dg.AssetCheckExecutionContext, cell_metrics: dict) -> dg.AssetCheckResult:
    import pandas as pd

    from release_platform.qc.stimulus import check_responsive_fraction

    return asset_check_result(check_responsive_fraction(pd.read_parquet(cell_metrics["file"])))


# --- release-level table ---------------------------------------------------------------------------------------

RELEASE_TABLE = "cell_metrics"
RELEASE_ASSET = "cell_metrics_table"
#: release table -> (asset writing <asset>/<table>.parquet, per-session source asset), read by ``release_manifest``
STIMULUS_RELEASE_TABLES = {RELEASE_TABLE: (RELEASE_ASSET, "cell_metrics")}


def _release_file(storage: StorageResource, suffix: str):
    return storage.root_path() / RELEASE_ASSET / f"{RELEASE_TABLE}.{suffix}"


@dg.asset(name=RELEASE_ASSET, deps=[cell_metrics], group_name=RELEASE_GROUP, kinds={"pandas", "parquet", "csv"},
          description="The release's cell_metrics table: every materialized ophys_session partition's rows, one per ROI "
                      "per plane, keyed by cell_specimen_id and cell_roi_id (joins ophys_cells_table).")
def cell_metrics_table(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    import pandas as pd

    from release_platform.stimulus.schema import ID_COLUMNS

    current = set(context.instance.get_dynamic_partitions(OPHYS.name))
    partitions = sorted(set(context.instance.get_materialized_partitions(cell_metrics.key)) & current, key=int)
    frames, missing = [], []
    for pk in partitions:
        path = storage.dir_for("cell_metrics", pk) / "cell_metrics.parquet"
        if path.is_file():
            frames.append(pd.read_parquet(path))
        else:
            missing.append(f"ophys_session {pk}: {path}")
    if missing:
        raise asset_failure(context, f"cell_metrics: rows of materialized partitions are missing on disk: {'; '.join(missing[:10])}")
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else pd.DataFrame(
        {"ophys_experiment_id": pd.array([], dtype="Int64"), "cell_roi_id": pd.array([], dtype="Int64"),
         "cell_specimen_id": pd.array([], dtype="Int64"), "valid_roi": pd.array([], dtype=bool)})
    ids = list(ID_COLUMNS)
    frame = frame[ids + sorted(c for c in frame.columns if c not in ids)]
    frame = frame.sort_values(["cell_specimen_id", "cell_roi_id"], kind="stable", na_position="last").reset_index(drop=True)
    parquet, csv = _release_file(storage, "parquet"), _release_file(storage, "csv")
    with atomic_path(parquet) as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    return dg.MaterializeResult(metadata={"dagster/row_count": len(frame), "partitions": len(partitions),
                                          "parquet_path": str(parquet), "csv_path": str(csv)})


@dg.asset_check(asset=cell_metrics_table, name="cell_metrics_table_valid", blocking=True,
                description="Validate the release cell_metrics table with the pandera model; every valid ROI's "
                            "cell_roi_id is in ophys_cells_table (when that table is built).")
def cell_metrics_table_valid(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    import pandas as pd

    from release_platform.stimulus.schema import CellMetricsTable

    import pandera.errors as pae

    frame = pd.read_parquet(_release_file(storage, "parquet"))
    meta: dict = {"rows": len(frame)}
    passed = True
    try:
        CellMetricsTable.validate(frame, lazy=True)
    except pae.SchemaErrors as exc:
        passed = False
        meta["failures"] = dg.MetadataValue.json(exc.failure_cases[["column", "check", "failure_case"]].astype(str).head(20).to_dict("records"))
    cells = storage.root_path() / "ophys_cells_table" / "ophys_cells_table.parquet"
    if cells.is_file():
        known = set(pd.read_parquet(cells)["cell_roi_id"].dropna().astype(int))
        orphans = sorted(set(frame.loc[frame["valid_roi"], "cell_roi_id"].astype(int)) - known)
        meta["valid_rois_not_in_ophys_cells_table"] = dg.MetadataValue.json(orphans[:20])
        passed = passed and not orphans
    return dg.AssetCheckResult(passed=passed, metadata=meta)


STIMULUS_ASSETS = [stimulus_responses, cell_metrics, cell_metrics_table]
STIMULUS_CHECKS = [cell_metrics_schema, responsive_fraction, cell_metrics_table_valid]
