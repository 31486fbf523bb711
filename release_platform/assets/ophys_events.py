"""``ophys_events``: L0 event detection per imaging plane of an ``ophys_session`` partition, after dF/F.

Calls :func:`release_platform.ophys.events.events_plane` (the same function the standalone module
``python -m release_platform.modules.event_detection`` calls) on each plane's ``dff.h5`` for the ROIs the dF/F
asset lists as valid, with the decay constant of the session's indicator (looked up from the subject's
full genotype), writes ``<storage>/ophys_events/<session>/<ophys_experiment_id>/events.h5`` and registers it
in LIMS as the experiment's ``OphysEventTraceFile``.
"""

import time
from typing import Optional

import dagster as dg

from release_platform.assets.lims_registration import register_produced_files
from release_platform.assets.ophys import GROUP, OPHYS, _stage
from release_platform.assets.resources import StorageResource
from release_platform.inputs import OphysSessionInputs
from release_platform.lims.resource import LimsResource
from release_platform.ophys.events import events_plane
from release_platform.ophys.events_l0 import parameters_for_session
from release_platform.ophys.io import EVENTS_FILE


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


OPHYS_EVENTS_ASSETS = [ophys_events]
