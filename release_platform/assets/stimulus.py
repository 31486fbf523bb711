"""Stimulus analysis assets per ``ophys_session`` partition (imaging planes inside).

``stimulus_responses`` runs the ``observatory_analysis`` module on each plane (its corrected
fluorescence and dF/F, the session's stimulus table, running speed at the imaging frames) and writes
``analysis.h5`` and ``analysis_metrics.parquet`` under ``<storage>/stimulus_responses/<session>/<plane>/``;
``cell_metrics`` joins every plane's metrics with the ROI ids into
``<storage>/cell_metrics/<session>/cell_metrics.parquet``, validated by the pandera model (blocking), and a
warning check on the fraction of responsive ROIs.
"""


import time
from typing import Optional

import dagster as dg
import pandas as pd

from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.inputs import OphysSessionInputs
from release_platform.modules import observatory_analysis
from release_platform.stimulus.lsn import DEFAULT_SHUFFLES
from release_platform.stimulus.running import speed_per_frame
from release_platform.stimulus.schema import CellMetricsTable, check_responsive_fraction
from release_platform.storage import atomic_path

OPHYS = PARTITIONS_BY_KIND["ophys_session"]
GROUP = "ophys_session"


class StimulusConfig(dg.Config):
    n_shuffles: int = DEFAULT_SHUFFLES
    seed: int = 1
    stimuli: Optional[list[str]] = None


def _fail(context, message: str):
    context.log.error(message)
    raise dg.Failure(description=message, allow_retries=False)


def _running_csv(session: OphysSessionInputs, plane, n_frames: int, target) -> Optional[str]:
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
            result = observatory_analysis.run(observatory_analysis.Inputs(
                corrected_fluorescence_file=neuropil_corrected_traces[pid]["file"], dff_file=dff_traces[pid]["file"],
                stimulus_table_file=table, running_speed_file=running, frame_rate_hz=plane.frame_rate_hz,
                stimuli=config.stimuli, n_shuffles=config.n_shuffles, seed=config.seed, output_file=directory / "analysis.h5",
            ))
        except InputError as exc:
            _fail(context, str(exc.with_entity(entity)))
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
    result = check_responsive_fraction(pd.read_parquet(cell_metrics["file"]))
    return dg.AssetCheckResult(
        passed=result.passed, severity=dg.AssetCheckSeverity.WARN, description=result.message,
        metadata={"fraction": result.fraction, "cells": result.n_cells, "check_id": result.id},
    )


STIMULUS_ASSETS = [stimulus_responses, cell_metrics]
STIMULUS_CHECKS = [cell_metrics_schema, responsive_fraction]
