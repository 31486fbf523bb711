"""Behavior-ophys and behavior NWB assets (thin wiring around :mod:`release_platform.nwb.ophys` and
:mod:`release_platform.nwb.behavior`, the same writers the ``write_ophys_nwb`` module runs).

* ``behavior_ophys_nwb`` (``ophys_session`` partition): one ``behavior_ophys_experiment_<id>.nwb`` per imaging
  plane under ``<storage>/behavior_ophys_nwb/<session>/``, from the validated inputs, the trace assets and,
  when LIMS links one, the behavior session recorded with it (trials, licks, rewards), which the input asset carries.
* ``behavior_nwb`` (``behavior_session`` partition): ``behavior_session_<id>.nwb`` under
  ``<storage>/behavior_nwb/<session>/``.

Each returns the files it wrote as a :class:`~release_platform.metadata.files.DataFiles` (``{entity id: path}``),
which the metadata assets of the same partition link in their tables. Each produced file is registered in LIMS (``BehaviorOphysNwb`` on the ophys experiment, ``BehaviorNwb`` on the
behavior session, through :mod:`release_platform.assets.lims_registration`) once every file of the partition is
written and verified by the write protocol. Blocking, partitioned checks per asset: PyNWB validation, and NWB
Inspector with the dandi config, once per file on the checks that can block (zero CRITICAL, zero
BEST_PRACTICE_VIOLATION; suggestions are not part of the gate).
"""

import time
from typing import TYPE_CHECKING, Literal

import dagster as dg

from release_platform.assets.checks import nwb_file_checks
from release_platform.assets.failures import partition_failure
from release_platform.assets.lims_registration import register_produced_files
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.inputs import BehaviorSessionInputs, OphysSessionInputs
from release_platform.lims.resource import LimsResource
from release_platform.metadata.files import DataFiles

if TYPE_CHECKING:  # the writers (pynwb, hdmf, pandas) are imported by the steps that write
    from release_platform.nwb.ophys_sources import PlaneOutputs

OPHYS = PARTITIONS_BY_KIND["ophys_session"]
BEHAVIOR = PARTITIONS_BY_KIND["behavior_session"]


class NwbConfig(dg.Config):
    """``compression``: ``release`` (gzip, default), ``fast`` (LZF) or ``internal`` (Blosc-zstd; needs hdf5plugin).
    ``compat``: ``allensdk`` (default, for the default ``allen`` release layout: also the names AllenSDK's readers
    expect, :mod:`release_platform.nwb.allen_compat`) or ``none`` (the platform's layout only)."""

    compression: Literal["release", "internal", "fast"] = "release"
    compat: Literal["none", "allensdk"] = "allensdk"


def _plane_outputs(roi: dict, neuropil: dict, demixed: dict, corrected: dict, dff: dict) -> "PlaneOutputs":
    """One plane's records of the trace assets as the writer's typed :class:`PlaneOutputs`."""
    from release_platform.nwb.ophys_sources import PlaneOutputs

    return PlaneOutputs(
        roi_traces=roi["file"], neuropil_traces=neuropil["file"], demixed_traces=demixed["file"],
        neuropil_corrected_traces=corrected["file"], dff_traces=dff["file"],
        extraction_labels=roi.get("exclusion_labels") or {},
        demix_excluded_roi_ids=demixed.get("excluded_roi_ids") or [],
        negative_baseline_roi_ids=demixed.get("negative_baseline_roi_ids") or [],
        dff_invalid_roi_ids=dff.get("invalid_roi_ids") or [], dff_valid_roi_ids=dff.get("valid_roi_ids"),
        dff_method=dff.get("method", "unknown"), dff_parameters=dict(dff.get("parameters") or {}),
    )


@dg.asset(
    partitions_def=OPHYS,
    group_name="ophys_session",
    kinds={"nwb"},
    description="One NWB file per imaging plane (behavior_ophys_experiment_<id>.nwb): ROIs, all trace sets, dF/F, "
                "projections, motion correction, detected events, stimulus, running and the linked behavior session's trials, "
                "licks, rewards.",
)
def behavior_ophys_nwb(
    context: dg.AssetExecutionContext,
    config: NwbConfig,
    ophys_session_inputs: OphysSessionInputs,
    roi_traces: dict,
    neuropil_traces: dict,
    demixed_traces: dict,
    neuropil_corrected_traces: dict,
    dff_traces: dict,
    stimulus_responses: dict,
    ophys_events: dict,
    lims: LimsResource,
    storage: StorageResource,
) -> DataFiles:
    from release_platform.nwb import allen_compat, ophys as ophys_nwb_writer

    started = time.monotonic()
    key = context.partition_key
    out_dir = storage.dir_for("behavior_ophys_nwb", key)
    written: dict[str, dict] = {}
    try:
        if "behavior_session" not in ophys_session_inputs.__dict__:
            raise InputError("ophys_session_inputs was materialized before it carried the linked behavior session; "
                             "re-materialize ophys_session_inputs")
        behavior = ophys_session_inputs.behavior_session
        behavior_id = None if behavior is None else behavior.session_id
        for plane in ophys_session_inputs.planes:
            pid = str(plane.ophys_experiment_id)
            outputs = _plane_outputs(roi_traces[pid], neuropil_traces[pid], demixed_traces[pid],
                                     neuropil_corrected_traces[pid], dff_traces[pid])
            inputs = ophys_nwb_writer.OphysNwbInputs.from_session(
                ophys_session_inputs, plane, output_dir=out_dir, outputs=outputs, behavior_session=behavior,
                compression=config.compression, cell_metrics_path=stimulus_responses[pid]["metrics_file"],
                compat=config.compat, allen=allen_compat.options_for(behavior, events=ophys_events.get(pid)),
            )
            result = ophys_nwb_writer.write_behavior_ophys_nwb(inputs)
            written[pid] = {"path": result.output_path, "identifier": result.identifier, "n_bytes": result.n_bytes,
                            "n_datasets_checked": result.n_datasets_checked}
    except InputError as exc:
        raise partition_failure(context, exc, "ophys_session") from None
    register_produced_files(lims, "behavior_ophys_nwb", {pid: rec["path"] for pid, rec in written.items()})
    context.add_output_metadata(
        {
            "files": dg.MetadataValue.json({pid: rec["path"] for pid, rec in written.items()}),
            "size_bytes": sum(rec["n_bytes"] for rec in written.values()),
            "datasets_verified": sum(rec["n_datasets_checked"] for rec in written.values()),
            "behavior_session_id": -1 if behavior_id is None else int(behavior_id),
            "compression": config.compression,
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return DataFiles("behavior_ophys_nwb", {int(pid): rec["path"] for pid, rec in written.items()})


@dg.asset(
    partitions_def=BEHAVIOR,
    group_name="behavior_session",
    kinds={"nwb"},
    description="The behavior session's NWB file (behavior_session_<id>.nwb): trials, licks, rewards, running, "
                "stimulus presentations.",
)
def behavior_nwb(
    context: dg.AssetExecutionContext,
    config: NwbConfig,
    behavior_session_inputs: BehaviorSessionInputs,
    lims: LimsResource,
    storage: StorageResource,
) -> DataFiles:
    from release_platform.nwb import behavior as behavior_nwb_writer

    started = time.monotonic()
    key = context.partition_key
    try:
        inputs = behavior_nwb_writer.BehaviorNwbInputs.from_session(
            behavior_session_inputs, output_dir=storage.dir_for("behavior_nwb", key), compression=config.compression,
            compat=config.compat,
        )
        result = behavior_nwb_writer.write_behavior_nwb(inputs)
    except InputError as exc:
        raise partition_failure(context, exc, "behavior_session") from None
    register_produced_files(lims, "behavior_nwb", {key: result.output_path})
    context.add_output_metadata(
        {
            "path": result.output_path,
            "size_bytes": result.n_bytes,
            "datasets_verified": result.n_datasets_checked,
            "compression": config.compression,
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return DataFiles("behavior_nwb", {int(key): result.output_path})


behavior_ophys_nwb_pynwb_valid, behavior_ophys_nwb_inspector = nwb_file_checks(behavior_ophys_nwb, OPHYS, "plane's file")
behavior_nwb_pynwb_valid, behavior_nwb_inspector = nwb_file_checks(behavior_nwb, BEHAVIOR)


NWB_OPHYS_ASSETS = [behavior_ophys_nwb, behavior_nwb]
NWB_OPHYS_CHECKS = [behavior_ophys_nwb_pynwb_valid, behavior_ophys_nwb_inspector, behavior_nwb_pynwb_valid, behavior_nwb_inspector]
