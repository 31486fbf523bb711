"""Ophys processing assets per ``ophys_session`` partition (imaging planes inside).

roi_traces + neuropil_traces -> demixed_traces -> neuropil_corrected_traces -> dff_traces -> ophys_events. Each step
calls the plane function of :mod:`release_platform.ophys.pipeline` (the same one the standalone module
``python -m release_platform.modules.<stage>`` calls), writes HDF5 under
``<storage>/<asset>/<session>/<ophys_experiment_id>/`` and returns a small record per plane (file paths
and QC lists) through the IO manager. The demixed, neuropil-corrected and dF/F files are registered in LIMS
(``DemixedTracesFile``, ``NeuropilCorrection``, ``OphysDffTraceFile``, ``OphysEventTraceFile`` on the ophys
experiment) once every plane's file is written. ``ophys_events`` runs the configured event detector (L0 by default)
on the valid ROIs' dF/F with the decay constant of the session's indicator.
"""

import time
from typing import Any, Callable, Literal, Optional

import dagster as dg

from release_platform.assets.failures import asset_failure
from release_platform.assets.lims_registration import register_produced_files
from release_platform.assets.checks import asset_check_result
from release_platform.assets.partitions import HEAVY_POOL, PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError
from release_platform.inputs import OphysPlane, OphysSessionInputs
from release_platform.lims.resource import LimsResource

OPHYS = PARTITIONS_BY_KIND["ophys_session"]
GROUP = "ophys_session"


def _stage(context, plane: OphysPlane, fn: Callable[[], Any]) -> Any:
    """Run one plane's stage; bad input becomes one clear Failure naming session, plane and file."""
    try:
        return fn()
    except InputError as exc:
        entity = f"ophys_session {context.partition_key} (ophys_experiment {plane.ophys_experiment_id})"
        raise asset_failure(context, exc, entity) from None


def _roi_records(plane: OphysPlane, labels: Optional[dict[str, list[str]]] = None) -> list[dict[str, Any]]:
    records = []
    for roi in plane.rois:
        extra = (labels or {}).get(str(roi.id), [])
        records.append(
            {
                "id": roi.id, "x": roi.x, "y": roi.y, "width": roi.width, "height": roi.height, "mask": roi.mask,
                "valid": roi.valid, "exclusion_labels": sorted(set(roi.exclusion_labels) | set(extra)),
            }
        )
    return records


@dg.multi_asset(
    outs={
        "roi_traces": dg.AssetOut(description="Mean fluorescence over each ROI mask per frame (N x T, a.u.).", kinds={"hdf5"}),
        "neuropil_traces": dg.AssetOut(description="Mean fluorescence over each ROI's neuropil annulus (N x T, a.u.).", kinds={"hdf5"}),
    },
    partitions_def=OPHYS,
    group_name=GROUP,
    pool=HEAVY_POOL,
)
def extracted_traces(context: dg.AssetExecutionContext, ophys_session_inputs: OphysSessionInputs, storage: StorageResource):
    from release_platform.ophys import pipeline

    started = time.monotonic()
    roi_out, neuropil_out, excluded = {}, {}, {}
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        directory = storage.dir_for("roi_traces", context.partition_key) / pid
        result = _stage(
            context, plane,
            lambda: pipeline.extract_plane(plane.movie_path, _roi_records(plane), plane.motion_border, directory),
        )
        labels = {str(k): list(v) for k, v in result.exclusion_labels.items()}
        roi_out[pid] = {"file": str(result.roi_traces), "exclusion_labels": labels, "overlap_file": str(result.overlap_sums)}
        neuropil_out[pid] = {"file": str(result.neuropil_traces), "mask_file": str(result.neuropil_masks)}
        excluded[pid] = sorted(k for k, v in labels.items() if v)
    meta = {
        "rois": sum(len(p.rois) for p in ophys_session_inputs.planes),
        "excluded_rois": dg.MetadataValue.json(excluded),
        "runtime_s": round(time.monotonic() - started, 3),
    }
    yield dg.Output(roi_out, output_name="roi_traces", metadata=meta)
    yield dg.Output(neuropil_out, output_name="neuropil_traces", metadata={"files": dg.MetadataValue.json({k: v["file"] for k, v in neuropil_out.items()})})


@dg.asset(partitions_def=OPHYS, group_name=GROUP, pool=HEAVY_POOL, kinds={"hdf5"},
          description="ROI traces with overlapping ROIs demixed frame by frame; flagged ROIs are NaN rows.")
def demixed_traces(context: dg.AssetExecutionContext, ophys_session_inputs: OphysSessionInputs, roi_traces: dict,
                   lims: LimsResource, storage: StorageResource) -> dict:
    from release_platform.ophys import pipeline
    from release_platform.ophys.io import DEMIXED_TRACES_FILE

    started = time.monotonic()
    out = {}
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        upstream = roi_traces[pid]
        target = storage.dir_for("demixed_traces", context.partition_key) / pid / DEMIXED_TRACES_FILE
        result = _stage(
            context, plane,
            lambda: pipeline.demix_plane(
                plane.movie_path, upstream["file"], _roi_records(plane, upstream["exclusion_labels"]), target,
                overlap_sums=upstream.get("overlap_file"),
            ),
        )
        out[pid] = {
            "file": str(result.demixed_traces),
            "negative_transient_roi_ids": [str(i) for i in result.negative_transient_roi_ids],
            "negative_baseline_roi_ids": [str(i) for i in result.negative_baseline_roi_ids],
            "excluded_roi_ids": [str(i) for i in result.excluded_roi_ids],
            "dropped_frame_count": int(result.dropped_frame_count),
        }
    register_produced_files(lims, "demixed_traces", {pid: rec["file"] for pid, rec in out.items()})
    context.add_output_metadata(
        {
            "flagged_rois": dg.MetadataValue.json({k: v["negative_baseline_roi_ids"] for k, v in out.items()}),
            "negative_transient_rois": dg.MetadataValue.json({k: v["negative_transient_roi_ids"] for k, v in out.items()}),
            "dropped_frames": sum(v["dropped_frame_count"] for v in out.values()),
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return out


class NeuropilConfig(dg.Config):
    method: Literal["fit", "fixed"] = "fit"
    fixed_r: float = 0.7


@dg.asset(partitions_def=OPHYS, group_name=GROUP, kinds={"hdf5"},
          description="Neuropil-corrected fluorescence FC = F_demixed - r * F_neuropil, with r and RMSE per ROI.")
def neuropil_corrected_traces(context: dg.AssetExecutionContext, config: NeuropilConfig, ophys_session_inputs: OphysSessionInputs,
                              demixed_traces: dict, neuropil_traces: dict, lims: LimsResource, storage: StorageResource) -> dict:
    from release_platform.ophys import pipeline, qc
    from release_platform.ophys.io import read_ratio_status

    started = time.monotonic()
    out, summaries = {}, {}
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        directory = storage.dir_for("neuropil_corrected_traces", context.partition_key) / pid
        result = _stage(
            context, plane,
            lambda: pipeline.correct_plane(
                demixed_traces[pid]["file"], neuropil_traces[pid]["file"], directory,
                method=config.method, fixed_r=config.fixed_r,
            ),
        )
        path = str(result.neuropil_corrected)
        summary = qc.summarize_ratios(*_stage(context, plane, lambda: read_ratio_status(path)))
        out[pid] = {
            "file": path,
            "fallback_r": result.fallback_r,
            "unconverged_roi_ids": [str(i) for i in result.unconverged_roi_ids],
            "skipped_roi_ids": [str(i) for i in result.skipped_roi_ids],
        }
        summaries[pid] = summary.__dict__
    register_produced_files(lims, "neuropil_corrected_traces", {pid: rec["file"] for pid, rec in out.items()})
    context.add_output_metadata(
        {
            "r_summary": dg.MetadataValue.json(summaries),
            "method": config.method,
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return out


class DffConfig(dg.Config):
    method: str = "allen_inactive"
    long_baseline_filter_s: Optional[float] = None
    short_filter_s: Optional[float] = None


@dg.asset(partitions_def=OPHYS, group_name=GROUP, kinds={"hdf5"},
          description="dF/F per ROI with its noise sigma and small-baseline frame count; estimator by name.")
def dff_traces(context: dg.AssetExecutionContext, config: DffConfig, ophys_session_inputs: OphysSessionInputs,
               neuropil_corrected_traces: dict, demixed_traces: dict, lims: LimsResource, storage: StorageResource) -> dict:
    from release_platform.ophys import pipeline
    from release_platform.ophys.dff import fit_long_window
    from release_platform.ophys.io import DFF_FILE

    started = time.monotonic()
    out = {}
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        target = storage.dir_for("dff_traces", context.partition_key) / pid / DFF_FILE
        window_s, clipped = _stage(
            context, plane,
            lambda: fit_long_window(config.method, plane.frame_rate_hz, plane.movie_shape[0], config.long_baseline_filter_s),
        )
        if clipped:
            context.log.warning(
                f"ophys_experiment {pid}: {plane.movie_shape[0]} frames are shorter than the {config.method} baseline "
                f"window; using {window_s:.3f} s"
            )
        parameters = {"long_baseline_filter_s": window_s, "short_filter_s": config.short_filter_s}
        result = _stage(
            context, plane,
            lambda: pipeline.dff_plane(
                neuropil_corrected_traces[pid]["file"], target, plane.frame_rate_hz, method=config.method,
                parameters={k: v for k, v in parameters.items() if v is not None},
            ),
        )
        unusable = set(demixed_traces[pid]["excluded_roi_ids"]) | set(demixed_traces[pid]["negative_baseline_roi_ids"])
        valid_ids = [str(r.id) for r in plane.rois if r.valid and str(r.id) not in unusable]
        out[pid] = {
            "file": str(result.dff),
            "method": result.method,
            "parameters": result.parameters,
            "valid_roi_ids": valid_ids,
            "invalid_roi_ids": [str(i) for i in result.invalid_roi_ids],
            "baseline_window_clipped": clipped,
        }
    register_produced_files(lims, "dff_traces", {pid: rec["file"] for pid, rec in out.items()})
    first = next(iter(out.values()))
    context.add_output_metadata(
        {
            "method": first["method"],
            "parameters": dg.MetadataValue.json(first["parameters"]),
            "valid_rois": dg.MetadataValue.json({k: len(v["valid_roi_ids"]) for k, v in out.items()}),
            "baseline_window_clipped": any(v["baseline_window_clipped"] for v in out.values()),
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return out


# -- checks -------------------------------------------------------------------------------------------------
def _plane_entity(context, pid: str) -> str:
    """``ophys_session <key> (ophys_experiment <pid>)``; the plane alone when invoked outside a partitioned run."""
    plane = f"ophys_experiment {pid}"
    return f"ophys_session {context.partition_key} ({plane})" if context.has_partition_key else plane


# release_platform.qc.ophys.MAX_UNCONVERGED_FRACTION, written out so that loading the code location does not import
# the QC (numpy); a test keeps the two equal.
MAX_UNCONVERGED_FRACTION = 0.10


@dg.asset_check(asset=neuropil_corrected_traces, partitions_def=OPHYS, blocking=False,
                description=f"Warn when more than {MAX_UNCONVERGED_FRACTION:.0%} of a plane's ROIs have an unconverged r.")
def neuropil_r_distribution(context: dg.AssetCheckExecutionContext, neuropil_corrected_traces: dict) -> dg.AssetCheckResult:
    from release_platform.ophys.io import read_ratio_status
    from release_platform.qc import ophys as qc_ophys

    planes = {}
    for pid, rec in neuropil_corrected_traces.items():
        r, status = read_ratio_status(rec["file"], entity=_plane_entity(context, pid))
        planes[pid] = qc_ophys.PlaneRatios(_plane_entity(context, pid), r, status)
    return asset_check_result(qc_ophys.check_neuropil_r_distribution(planes, MAX_UNCONVERGED_FRACTION))


@dg.asset_check(asset=dff_traces, partitions_def=OPHYS, blocking=True,
                description="Every valid ROI (valid in LIMS, not excluded or flagged upstream) has finite dF/F at every frame.")
def dff_finite_for_valid_rois(context: dg.AssetCheckExecutionContext, dff_traces: dict) -> dg.AssetCheckResult:
    from release_platform.ophys.io import read_traces
    from release_platform.qc import ophys as qc_ophys

    planes = {}
    for pid, rec in dff_traces.items():
        traces = read_traces(rec["file"])
        planes[pid] = qc_ophys.PlaneDff(_plane_entity(context, pid), rec["file"], traces.traces, [str(i) for i in traces.roi_ids],
                                        rec["valid_roi_ids"])
    return asset_check_result(qc_ophys.check_dff_finite(planes))


# --- events -------------------------------------------------------------------------------------------------


class EventsConfig(dg.Config):
    method: str = "l0"
    #: Overrides of the genotype lookup and the frame-rate default (None = derived).
    decay_time_s: Optional[float] = None
    noise_multiplier: Optional[float] = None


@dg.asset(partitions_def=OPHYS, group_name=GROUP, kinds={"hdf5"},
          description="Events per valid ROI (L0 deconvolution of dF/F, AR(1) decay from the indicator): "
                      "magnitudes N x T, penalty and noise per ROI.")
def ophys_events(context: dg.AssetExecutionContext, config: EventsConfig, ophys_session_inputs: OphysSessionInputs,
                 dff_traces: dict, lims: LimsResource, storage: StorageResource) -> dict:
    from release_platform.ophys.events import events_plane
    from release_platform.ophys.events_l0 import parameters_for_session
    from release_platform.ophys.io import EVENTS_FILE

    started = time.monotonic()
    subject = ophys_session_inputs.subject
    parameters = parameters_for_session(
        subject.full_genotype if subject else None,
        {"decay_time_s": config.decay_time_s, "noise_multiplier": config.noise_multiplier},
    )
    out = {}
    for plane in ophys_session_inputs.planes:
        pid = str(plane.ophys_experiment_id)
        target = storage.dir_for("ophys_events", context.partition_key) / pid / EVENTS_FILE
        result = _stage(
            context, plane,
            lambda: events_plane(dff_traces[pid]["file"], target, plane.frame_rate_hz, method=config.method,
                                 valid_roi_ids=dff_traces[pid]["valid_roi_ids"], parameters=parameters),
        )
        out[pid] = {
            "file": str(result.events),
            "method": result.method,
            "parameters": result.parameters,
            "roi_ids": result.roi_ids,
            "event_counts": result.event_counts,
        }
    register_produced_files(lims, "ophys_events", {pid: rec["file"] for pid, rec in out.items()})
    first = next(iter(out.values()))
    context.add_output_metadata(
        {
            "method": first["method"],
            "parameters": dg.MetadataValue.json(first["parameters"]),
            "events": dg.MetadataValue.json({k: sum(v["event_counts"]) for k, v in out.items()}),
            "runtime_s": round(time.monotonic() - started, 3),
        }
    )
    return out


OPHYS_ASSETS = [extracted_traces, demixed_traces, neuropil_corrected_traces, dff_traces, ophys_events]
OPHYS_CHECKS = [neuropil_r_distribution, dff_finite_for_valid_rois]
